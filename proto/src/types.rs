//! The vocabulary shared by every message: identifiers, lock modes, fences,
//! and the health and clock measurements that nodes and clients report.
//!
//! Every type here is serde-serializable and uses only ordered collections,
//! so the same value always encodes to the same bytes.

use serde::{Deserialize, Serialize};

/// A session's identifier: the log index of the entry that opened it.
/// Unique for the life of the cluster because log indexes are.
pub type SessionId = u64;

/// Lock mode.
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
    /// A cluster node, by Raft node id.
    Node(u64),
    /// A client, by its session.
    Session(SessionId),
}

/// A fencing check attached to a KV write: the write is accepted only if
/// `token` is the newest grant of `lock` and that grant is still held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// Lock name.
    pub lock: String,
    /// Fencing token the writer received with its grant.
    pub token: u64,
}

/// Health measurements of a node or client host, as its monitor sampled
/// them. All fractions are in permille (0 ..= 1000) so that the formula in
/// the state machine is integer-only and identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSample {
    /// CPU load, permille of all cores busy.
    pub cpu_load_permille: u32,
    /// Memory in use, permille of total.
    pub mem_used_permille: u32,
    /// Time spent waiting for disk I/O, permille.
    pub io_wait_permille: u32,
    /// Mean round-trip time to the cluster, µs.
    pub rtt_mean_us: u64,
    /// Standard deviation of the round-trip time over the sampling window, µs.
    pub rtt_stddev_us: u64,
    /// Recent failures (restarts, missed keepalives) in the sampling window.
    pub recent_failures: u32,
    /// The holder's own load, permille (e.g. work queue fullness).
    pub load_permille: u32,
}

/// A clock estimate (offset and drift with their standard deviations) of a
/// node or client, as its Kalman filter produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockEstimate {
    /// Offset from the reference, µs.
    pub offset_us: i64,
    /// σ of the offset, µs.
    pub offset_sigma_us: u64,
    /// Rate error, parts per billion (1 ppm = 1000 ppb); positive = fast.
    pub drift_ppb: i64,
    /// σ of the rate error, ppb.
    pub drift_sigma_ppb: u64,
    /// Number of samples the estimate rests on.
    pub samples: u32,
}

/// Tier of the Node Health Index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HealthTier {
    /// NHI at or above the Excellent threshold.
    Excellent,
    /// NHI at or above the Good threshold.
    Good,
    /// NHI at or above the Warning threshold.
    Warning,
    /// Below the Warning threshold.
    Critical,
}

/// How a validity was computed: the base, every factor and the result, so
/// that grants, status and metrics can show why a lease has its length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDecision {
    /// Requested (base) duration, µs.
    pub base_us: u64,
    /// Node Health Index used, permille; `None` when no report exists.
    pub nhi_permille: Option<u32>,
    /// Tier used; `None` when no report exists (no health factor).
    pub tier: Option<HealthTier>,
    /// Health factor, permille (signed).
    pub nhi_factor_permille: i32,
    /// Network stability factor, permille.
    pub stability_factor_permille: i32,
    /// Load factor, permille.
    pub load_factor_permille: i32,
    /// Factor applied because the session is suspected, permille of the
    /// adjusted value (1000 = none).
    pub suspicion_scale_permille: u32,
    /// Whether the result was clamped to the configured minimum or maximum.
    pub clamped: bool,
    /// The granted validity, µs.
    pub validity_us: u64,
}
