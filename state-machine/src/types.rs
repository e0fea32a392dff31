//! Wire and log types: what enters the state machine ([`Command`]), what it
//! answers ([`Reply`] / [`Rejection`]) and what it announces ([`Event`]).
//!
//! Every type here is serde-serializable and uses only ordered collections,
//! so the same value always encodes to the same bytes.

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// A session's identifier: the log index of the entry that opened it.
/// Unique for the life of the cluster because log indexes are.
pub type SessionId = u64;

/// Position and cluster time of the entry being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// Raft log index of the entry; strictly increasing across applies.
    pub index: u64,
    /// Cluster time the leader stamped on the entry, µs (DESIGN.md "Time"
    /// rule 2). The state machine uses `max(previous, ts_us)`.
    pub ts_us: u64,
}

/// A command as the leader proposes it: the command plus the cluster time
/// stamped on it. This is the Raft log's application payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StampedCommand {
    /// Cluster time at stamping, µs.
    pub ts_us: u64,
    /// What to apply.
    pub command: Command,
}

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

/// An operation a client performs inside its session. Carried in
/// [`Command::Session`] with a sequence number for deduplication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOp {
    /// Renew the session's validity (and report health with it).
    Keepalive {
        /// Optional health sample of the client's host.
        health: Option<HealthSample>,
    },
    /// End the session: releases its locks at once (no lock-delay) and
    /// withdraws its candidacies.
    Close,
    /// Acquire a lock.
    Acquire {
        /// Lock name.
        name: String,
        /// Exclusive or shared.
        mode: LockMode,
        /// How long to wait in the queue, µs of cluster time; 0 = try-lock.
        wait_us: u64,
        /// The client's own clock when it sent the request, µs (for clock
        /// validation, DESIGN.md "Clock drift module").
        client_clock_us: Option<u64>,
        /// The client's predicted release time on its own clock, µs.
        predicted_release_client_us: Option<u64>,
    },
    /// Release a held lock, or leave its wait queue.
    Release {
        /// Lock name.
        name: String,
        /// The client's own clock at release, µs.
        client_clock_us: Option<u64>,
    },
    /// Put a key, optionally fenced.
    KvPut {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Fencing check.
        fence: Option<Fence>,
    },
    /// Compare-and-set on the key's modification revision (0 = must not exist).
    KvCas {
        /// Key.
        key: String,
        /// Expected `mod_revision`; 0 means "the key must not exist".
        expected_revision: u64,
        /// New value.
        value: Vec<u8>,
        /// Fencing check.
        fence: Option<Fence>,
    },
    /// Delete a key, optionally fenced.
    KvDelete {
        /// Key.
        key: String,
        /// Fencing check.
        fence: Option<Fence>,
    },
    /// Join an election's candidate queue.
    Campaign {
        /// Election name.
        election: String,
        /// The value this candidate proclaims when master.
        value: Vec<u8>,
    },
    /// Leave an election (mastership passes to the next candidate).
    Resign {
        /// Election name.
        election: String,
    },
    /// As master, replace the proclaimed value.
    Proclaim {
        /// Election name.
        election: String,
        /// Epoch the master believes it holds.
        epoch: u64,
        /// New value.
        value: Vec<u8>,
    },
    /// As master, send one chunk of state to the handover candidate.
    HandoverState {
        /// Election name.
        election: String,
        /// Epoch of the master handing over.
        epoch: u64,
        /// 0-based chunk number; chunks must arrive in order.
        chunk_seq: u32,
        /// Chunk payload.
        data: Vec<u8>,
        /// crc32 of `data`, computed by the sender.
        crc32: u32,
        /// Whether this is the final chunk.
        last: bool,
    },
    /// As handover candidate, acknowledge that every chunk was received.
    HandoverAck {
        /// Election name.
        election: String,
        /// Epoch of the master handing over.
        epoch: u64,
        /// Number of chunks received.
        chunks: u32,
        /// crc32 over all chunk payloads in order.
        total_crc32: u32,
    },
    /// Answer a renewal probe (predictive failure analysis).
    ProbeAnswer,
}

/// Every entry the state machine applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Open a session; the granted validity follows the adaptive formula.
    OpenSession {
        /// Client-chosen random nonce; a retried open with the same nonce
        /// returns the same session instead of opening a second one.
        nonce: u128,
        /// Human-readable client name (for status), limited in length.
        client_name: String,
        /// Requested time-to-live, µs.
        requested_ttl_us: u64,
    },
    /// A deduplicated operation inside a session.
    Session {
        /// Session.
        session: SessionId,
        /// Client sequence number, strictly increasing per session.
        seq: u64,
        /// The operation.
        op: SessionOp,
    },
    /// A KV write outside any session (not deduplicated; for operators).
    KvPut {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// A KV delete outside any session.
    KvDelete {
        /// Key.
        key: String,
    },
    /// A KV compare-and-set outside any session.
    KvCas {
        /// Key.
        key: String,
        /// Expected `mod_revision`; 0 means "must not exist".
        expected_revision: u64,
        /// New value.
        value: Vec<u8>,
    },
    /// Start a warm handover of `election` from its master to `to`.
    HandoverBegin {
        /// Election name.
        election: String,
        /// The current master's session.
        from: SessionId,
        /// The candidate's session.
        to: SessionId,
        /// The master's current epoch.
        epoch: u64,
        /// Time allowed for state transfer and acknowledgement, µs.
        ack_timeout_us: u64,
    },
    /// Complete an acknowledged handover: `to` becomes master at `epoch + 1`.
    LeaseTransfer {
        /// Election name.
        election: String,
        /// The candidate that acknowledged.
        to: SessionId,
        /// The epoch being handed over (the new master gets `epoch + 1`).
        epoch: u64,
    },
    /// Abandon a handover; the standard election continues.
    HandoverAbort {
        /// Election name.
        election: String,
        /// Epoch of the handover.
        epoch: u64,
        /// Why, for events and logs.
        reason: String,
    },
    /// A health sample of a node or client, measured outside the state
    /// machine.
    HealthReport {
        /// Whose health.
        subject: Subject,
        /// The sample.
        sample: HealthSample,
    },
    /// A clock estimate of a node or client.
    ClockReport {
        /// Whose clock.
        subject: Subject,
        /// The estimate.
        estimate: ClockEstimate,
    },
    /// The failure predictor suspects this session: its next grants are
    /// shorter and it must answer a renewal probe.
    Suspect {
        /// Session.
        session: SessionId,
        /// Combined anomaly score, permille.
        score_permille: u32,
        /// How long the session has to answer the probe, µs.
        probe_timeout_us: u64,
    },
    /// End a session for cause; its locks free under lock-delay.
    Revoke {
        /// Session.
        session: SessionId,
        /// Why, for events and logs.
        reason: String,
    },
    /// Advance cluster time without other effect (expiries run).
    Tick,
    /// Replace the replicated configuration.
    SetConfig(Config),
}

/// A successful result.
///
/// Durations in a reply (`validity_us`) count from the cluster time of the
/// entry that first produced it. A retry returns the cached reply unchanged,
/// so a client measures them from the moment it *first* sent the request
/// (DESIGN.md "Time" rule 5), never from a retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Nothing to report.
    Done,
    /// A session was opened (or the retried open found it).
    SessionOpened {
        /// Session id.
        session: SessionId,
        /// Granted validity, µs, counted from this entry's cluster time.
        validity_us: u64,
        /// How the validity was computed.
        lease: LeaseDecision,
    },
    /// The session was renewed.
    KeptAlive {
        /// Remaining validity, µs, counted from this entry's cluster time.
        /// Never less than what an earlier grant promised.
        validity_us: u64,
        /// How the new validity was computed.
        lease: LeaseDecision,
        /// Cluster time of this entry, µs (for client rate estimation).
        cluster_ts_us: u64,
        /// Drift bound the client should apply to itself (DESIGN.md "Time"
        /// rule 5), ppm: widened after a detected clock skew.
        client_rho_ppm: u64,
    },
    /// The lock is held.
    Granted {
        /// Fencing token: the log index of the granting entry.
        token: u64,
        /// Remaining session validity at this entry, µs.
        validity_us: u64,
    },
    /// The lock was busy; the request waits in the queue.
    Queued {
        /// 0-based position in the wait queue.
        position: u32,
        /// Cluster time at which the wait gives up, µs.
        wait_deadline_us: u64,
    },
    /// A KV write was applied.
    KvWritten {
        /// The key's new modification revision (the entry's log index).
        revision: u64,
    },
    /// Campaign result: master now.
    Elected {
        /// The mastership epoch.
        epoch: u64,
    },
    /// Campaign result: waiting behind others.
    Candidate {
        /// 0-based position among the waiting candidates.
        position: u32,
    },
}

/// Why the state machine refused a command. A rejected command changes no
/// state (besides the dedupe cache entry of a session command).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// The session does not exist (never opened, closed, expired or revoked).
    UnknownSession {
        /// The session named.
        session: SessionId,
    },
    /// The sequence number is older than the dedupe window still remembers.
    StaleSequence {
        /// Sequence sent.
        seq: u64,
        /// Highest sequence already forgotten.
        forgotten_through: u64,
    },
    /// A name or key is empty.
    EmptyName,
    /// A name or key is longer than the configured limit.
    NameTooLong {
        /// Bytes given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A value or chunk is larger than the configured limit.
    ValueTooLarge {
        /// Bytes given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A configured count limit is reached.
    LimitReached {
        /// Which limit.
        limit: LimitKind,
        /// Its value.
        max: u64,
    },
    /// A requested TTL outside the configured bounds.
    TtlOutOfRange {
        /// Requested, µs.
        requested_us: u64,
        /// Minimum, µs.
        min_us: u64,
        /// Maximum, µs.
        max_us: u64,
    },
    /// Try-lock found the lock busy (or in lock-delay).
    LockBusy {
        /// When the lock-delay ends, if that is why, µs of cluster time.
        lock_delay_until_us: Option<u64>,
    },
    /// The session already holds or waits for this lock.
    AlreadyHeld,
    /// Release by a session that neither holds nor waits for the lock.
    NotHolder,
    /// The fencing token is older than the lock's newest grant.
    StaleFencingToken {
        /// Token given.
        token: u64,
        /// Newest grant's token.
        latest: u64,
    },
    /// The fencing token is not held by anyone now (released, expired, or
    /// never issued).
    FenceNotHeld {
        /// Token given.
        token: u64,
    },
    /// CAS revision mismatch.
    RevisionMismatch {
        /// Expected.
        expected: u64,
        /// Actual (0 = key absent).
        actual: u64,
    },
    /// KV delete/get of a key that does not exist.
    KeyNotFound,
    /// The election does not exist.
    UnknownElection,
    /// The session is not a candidate in this election.
    NotCandidate,
    /// The session already campaigns in this election.
    AlreadyCandidate,
    /// The operation needs the master at the given epoch.
    NotMaster {
        /// The election's current epoch.
        epoch: u64,
    },
    /// A handover command does not fit the handover state.
    HandoverMismatch {
        /// What was wrong.
        detail: String,
    },
    /// A handover chunk's crc32 does not match its data.
    ChunkChecksum {
        /// Chunk number.
        chunk_seq: u32,
    },
    /// A configuration failed validation.
    InvalidConfig {
        /// What was wrong.
        detail: String,
    },
    /// A health or clock report about a session that does not exist, or
    /// with values outside their ranges.
    InvalidReport {
        /// What was wrong.
        detail: String,
    },
}

/// Names of configured limits, for [`Rejection::LimitReached`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitKind {
    /// Open sessions in the cluster.
    Sessions,
    /// Locks held or awaited by one session.
    LocksPerSession,
    /// Waiters queued on one lock.
    WaitersPerLock,
    /// KV keys in the cluster.
    Keys,
    /// Candidates in one election.
    CandidatesPerElection,
    /// Total bytes of one handover's state.
    HandoverBytes,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::UnknownSession { session } => write!(f, "unknown or expired session {session}"),
            Rejection::StaleSequence { seq, forgotten_through } => write!(
                f,
                "sequence {seq} is too old (responses through {forgotten_through} are forgotten)"
            ),
            Rejection::EmptyName => write!(f, "name must not be empty"),
            Rejection::NameTooLong { len, max } => write!(f, "name is {len} bytes, limit is {max}"),
            Rejection::ValueTooLarge { len, max } => write!(f, "value is {len} bytes, limit is {max}"),
            Rejection::LimitReached { limit, max } => write!(f, "limit reached: {limit:?} (max {max})"),
            Rejection::TtlOutOfRange {
                requested_us,
                min_us,
                max_us,
            } => write!(f, "requested TTL {requested_us} µs is outside [{min_us}, {max_us}] µs"),
            Rejection::LockBusy {
                lock_delay_until_us: Some(t),
            } => {
                write!(f, "lock is in lock-delay until cluster time {t} µs")
            }
            Rejection::LockBusy {
                lock_delay_until_us: None,
            } => write!(f, "lock is held by another session"),
            Rejection::AlreadyHeld => write!(f, "this session already holds or awaits the lock"),
            Rejection::NotHolder => write!(f, "this session does not hold or await the lock"),
            Rejection::StaleFencingToken { token, latest } => {
                write!(f, "fencing token {token} is stale (newest grant is {latest})")
            }
            Rejection::FenceNotHeld { token } => write!(f, "fencing token {token} is not held now"),
            Rejection::RevisionMismatch { expected, actual } => {
                write!(f, "revision mismatch: expected {expected}, found {actual}")
            }
            Rejection::KeyNotFound => write!(f, "key not found"),
            Rejection::UnknownElection => write!(f, "unknown election"),
            Rejection::NotCandidate => write!(f, "session is not a candidate in this election"),
            Rejection::AlreadyCandidate => write!(f, "session already campaigns in this election"),
            Rejection::NotMaster { epoch } => write!(f, "not the master (current epoch {epoch})"),
            Rejection::HandoverMismatch { detail } => write!(f, "handover: {detail}"),
            Rejection::ChunkChecksum { chunk_seq } => write!(f, "handover chunk {chunk_seq} failed its crc32 check"),
            Rejection::InvalidConfig { detail } => write!(f, "invalid configuration: {detail}"),
            Rejection::InvalidReport { detail } => write!(f, "invalid report: {detail}"),
        }
    }
}

impl std::error::Error for Rejection {}

/// The state machine's answer to one entry.
pub type Response = Result<Reply, Rejection>;

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

/// What happened while applying an entry. Observers (the client library's
/// `observe` long-poll) see these; they are identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A session was opened.
    SessionOpened {
        /// Session.
        session: SessionId,
    },
    /// A session ended.
    SessionEnded {
        /// Session.
        session: SessionId,
        /// Why.
        cause: EndCause,
    },
    /// A lock was granted (immediately or from the wait queue).
    LockGranted {
        /// Lock.
        name: String,
        /// Holder.
        session: SessionId,
        /// Mode.
        mode: LockMode,
        /// Fencing token.
        token: u64,
        /// Remaining validity of the holder's session, µs.
        validity_us: u64,
    },
    /// A lock was released or freed.
    LockReleased {
        /// Lock.
        name: String,
        /// Former holder.
        session: SessionId,
        /// The grant's token.
        token: u64,
        /// Why.
        cause: EndCause,
        /// Cluster time until which the lock stays in lock-delay, µs
        /// (`None` for an explicit release).
        lock_delay_until_us: Option<u64>,
    },
    /// A waiter gave up (its wait deadline passed or its session ended).
    WaitTimedOut {
        /// Lock.
        name: String,
        /// Waiter.
        session: SessionId,
    },
    /// A KV key changed.
    KvChanged {
        /// Key.
        key: String,
        /// New modification revision (0 = deleted).
        revision: u64,
    },
    /// An election has a new master (or none).
    MasterChanged {
        /// Election.
        election: String,
        /// New master's session, if any.
        master: Option<SessionId>,
        /// New epoch.
        epoch: u64,
        /// The master's proclaimed value.
        value: Vec<u8>,
    },
    /// A warm handover started.
    HandoverBegun {
        /// Election.
        election: String,
        /// Master.
        from: SessionId,
        /// Candidate.
        to: SessionId,
        /// Master's epoch.
        epoch: u64,
    },
    /// A chunk of handover state was committed.
    HandoverChunk {
        /// Election.
        election: String,
        /// Master's epoch.
        epoch: u64,
        /// Chunk number.
        chunk_seq: u32,
        /// Payload.
        data: Vec<u8>,
        /// Whether it is the last one.
        last: bool,
    },
    /// The candidate acknowledged the state.
    HandoverAcked {
        /// Election.
        election: String,
        /// Master's epoch.
        epoch: u64,
    },
    /// Mastership moved by handover; the old master is now passive.
    LeaseTransferred {
        /// Election.
        election: String,
        /// Old master (now passive).
        from: SessionId,
        /// New master.
        to: SessionId,
        /// New epoch.
        epoch: u64,
    },
    /// A handover was abandoned.
    HandoverAborted {
        /// Election.
        election: String,
        /// Master's epoch.
        epoch: u64,
        /// Why.
        reason: String,
    },
    /// A session is suspected; it must answer the probe before the deadline.
    Probe {
        /// Session.
        session: SessionId,
        /// Score, permille.
        score_permille: u32,
        /// Cluster time by which to answer, µs.
        deadline_us: u64,
    },
    /// A client's measured hold time disagrees with cluster time beyond the
    /// allowed deviation; its drift bound was widened.
    ClockSkewDetected {
        /// Session.
        session: SessionId,
        /// Lock whose hold was measured.
        name: String,
        /// Hold measured by the client, µs.
        client_hold_us: u64,
        /// Hold measured in cluster time, µs.
        cluster_hold_us: u64,
        /// The client's widened drift bound, ppm.
        widened_rho_ppm: u64,
    },
    /// A node's committed drift estimate crossed `time.alert_drift_ppm`
    /// (raised once per crossing, upwards).
    NodeClockAlert {
        /// Node.
        node: u64,
        /// Its estimated drift, ppb (positive = fast).
        drift_ppb: i64,
        /// σ of the estimate, ppb.
        drift_sigma_ppb: u64,
        /// The threshold in force, ppm.
        alert_drift_ppm: u64,
    },
    /// The replicated configuration changed.
    ConfigChanged,
}

/// Why a session, lock or candidacy ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndCause {
    /// The holder released or closed it.
    Released,
    /// Its validity ran out.
    Expired,
    /// It was revoked for cause (failure prediction or an operator).
    Revoked {
        /// Why.
        reason: String,
    },
}
