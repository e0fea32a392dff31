//! What the state machine answers: a [`Reply`] on success, a
//! [`Rejection`] (which changed nothing) otherwise.

use serde::{Deserialize, Serialize};

use crate::types::{LeaseDecision, SessionId};

/// A successful result.
///
/// Durations in a reply (`validity_us`) count from the cluster time of the
/// entry that first produced it. A retry returns the cached reply unchanged,
/// so a client measures them from the moment it *first* sent the request
/// (docs/design.md "Time", rule 5), never from a retry.
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
        /// Drift bound the client should apply to itself (docs/design.md "Time"
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
