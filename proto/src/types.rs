//! The vocabulary shared by every message: identifiers, lock modes, fences,
//! and the health and clock measurements that nodes and clients report.
//!
//! Every type here is serde-serializable and uses only ordered collections,
//! so the same value always encodes to the same bytes.

use serde::{Deserialize, Serialize};

/// A session's identifier: the revision of the command that opened it
/// (docs/design.md "Batched proposals"). Unique for the life of the
/// cluster because revisions are.
pub type SessionId = u64;

/// How a lock is held (a readers–writer lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockMode {
    /// One holder at a time.
    Exclusive,
    /// Any number of shared holders, never together with an exclusive one.
    Shared,
}

/// Who a health or clock report describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Subject {
    /// A cluster node, by its Raft node id. Node reports are committed by
    /// the leader from what the node measured of itself.
    Node(u64),
    /// A client, by its session. The state machine refuses a report about
    /// a session that does not exist.
    Session(SessionId),
}

/// A fencing check attached to a KV write: the write is accepted only if
/// `token` is the newest grant of `lock` and that grant is still held
/// (otherwise `Rejection::StaleFencingToken` or `Rejection::FenceNotHeld`,
/// and nothing changes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// Name of the lock whose grant guards the write; at most the
    /// replicated `limits.max_name_bytes`.
    pub lock: String,
    /// Fencing token the writer received with its grant: the revision of
    /// the granting command.
    pub token: u64,
}

/// Health measurements of a node or client host, as its monitor sampled
/// them. All fractions are in permille (0 ..= 1000; the state machine
/// refuses a report with a fraction above 1000) so that the formula in the
/// state machine is integer-only and identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSample {
    /// CPU load, permille of all cores busy since the previous sample.
    pub cpu_load_permille: u32,
    /// Memory in use, permille of the host's total.
    pub mem_used_permille: u32,
    /// CPU time spent waiting for disk I/O since the previous sample,
    /// permille (read from Linux `/proc/stat`; 0 where that is missing).
    pub io_wait_permille: u32,
    /// Mean of the sampler's recent round trips to the cluster, µs (a
    /// client: its keepalives; a node: its clock probes to peers); 0 when
    /// none was measured yet. Feeds the NHI's latency score.
    pub rtt_mean_us: u64,
    /// Standard deviation of those round trips, µs; feeds the lease's
    /// network stability factor.
    pub rtt_stddev_us: u64,
    /// Failures in the last 5 minutes: a client's failed keepalives, a
    /// node's restart on existing data. Each costs
    /// `lease.failure_penalty_permille` of the NHI's failure score.
    pub recent_failures: u32,
    /// The holder's own load, permille (e.g. how full its work queue is),
    /// which feeds the lease's load factor above `lease.load_knee_permille`;
    /// 0 when the application does not report one.
    pub load_permille: u32,
}

/// A clock estimate (offset and drift with their standard deviations) of a
/// node or client, as its Kalman filter produced it. The state machine uses
/// `|drift| + k·σ` (docs/design.md "Clock drift") only when the estimate is
/// usable: at least `time.min_estimate_samples` samples and a drift σ at
/// most `time.max_usable_drift_sigma_ppb`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockEstimate {
    /// Offset from the reference, µs; positive = this clock is ahead. The
    /// reference is true time (NTP) or, for an estimate from peers alone,
    /// the cluster's median clock (then 0). Reported, not used in margins.
    pub offset_us: i64,
    /// σ of the offset, µs.
    pub offset_sigma_us: u64,
    /// Rate error, parts per billion (1 ppm = 1000 ppb); positive = fast.
    pub drift_ppb: i64,
    /// σ of the rate error, ppb. An estimate from peers alone arrives
    /// already widened so that `|drift| + k·σ` is at least the node's
    /// configured worst case.
    pub drift_sigma_ppb: u64,
    /// Samples the estimate rests on (the most any of its sources has).
    pub samples: u32,
}

/// Tier of the Node Health Index, from the thresholds in
/// [`LeaseConfig`](crate::LeaseConfig); each tier has its lease factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HealthTier {
    /// NHI at or above `excellent_min_permille` (default 850).
    Excellent,
    /// NHI at or above `good_min_permille` (default 650).
    Good,
    /// NHI at or above `warning_min_permille` (default 400).
    Warning,
    /// NHI below `warning_min_permille`.
    Critical,
}

/// How a validity was computed: the base, every factor and the result, so
/// that grants, status and metrics can show why a lease has its length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDecision {
    /// The session's requested TTL, the formula's base, µs.
    pub base_us: u64,
    /// Node Health Index of the holder's committed health sample, permille
    /// (1000 = perfectly healthy); `None` when the holder never reported
    /// health.
    pub nhi_permille: Option<u32>,
    /// Tier of that index; `None` when no report exists (then every factor
    /// below is 0).
    pub tier: Option<HealthTier>,
    /// The tier's factor, permille of the base, signed (default −100 for
    /// Excellent up to +300 for Critical).
    pub nhi_factor_permille: i32,
    /// Network stability factor from the holder's RTT standard deviation,
    /// permille of the base, 0 ..= `lease.stability_max_permille`.
    pub stability_factor_permille: i32,
    /// Load factor from the holder's own load, permille of the base,
    /// 0 ..= `lease.load_max_permille`.
    pub load_factor_permille: i32,
    /// Scale applied because the session is suspected, permille of the
    /// adjusted value (`lease.suspicion_scale_permille`; 1000 = not
    /// suspected).
    pub suspicion_scale_permille: u32,
    /// Whether the result was clamped to `lease.min_validity_us` or
    /// `lease.max_validity_us`.
    pub clamped: bool,
    /// The validity this decision grants, µs. A keepalive never shortens a
    /// deadline already granted, so the session may hold more than this.
    pub validity_us: u64,
}

/// A client's clock around one of its renewals: when it sent the keepalive
/// and when the reply arrived, on its raw monotonic clock (µs since an
/// origin of its own), and the cluster time of the entry that renewed it
/// (the reply's `cluster_ts_us`). That entry was stamped between the two
/// readings, so two samples bound, on the client's clock, the cluster time
/// that passed between their entries; network delay only widens the
/// bounds, never moves them (docs/design.md "Clock drift").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSample {
    /// The client's raw clock when it sent the keepalive, µs.
    pub sent_us: u64,
    /// The client's raw clock when the reply arrived, µs; not before
    /// `sent_us`.
    pub received_us: u64,
    /// Cluster time of the entry that answered it, µs (from the reply).
    pub cluster_ts_us: u64,
}
