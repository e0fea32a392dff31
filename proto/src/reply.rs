//! What the state machine answers: a [`Reply`] on success, a
//! [`Rejection`] (which changed nothing) otherwise.

use serde::{Deserialize, Serialize};

use crate::auth::{Action, Denied};
use crate::types::{LeaseDecision, SessionId};

/// A successful result.
///
/// Durations in a reply (`validity_us`) count from the cluster time of the
/// entry that first produced it. A retry returns the cached reply unchanged,
/// so a client measures them from the moment it *first* sent the request
/// (docs/design.md "Time", rule 5), never from a retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The command took effect and has nothing else to report (close,
    /// release, resign, proclaim, handover steps, probe answers, reports,
    /// ticks, configuration).
    Done,
    /// A session was opened (or a retried open with the same nonce found
    /// it).
    SessionOpened {
        /// The new session's id: the revision of the command that opened it.
        session: SessionId,
        /// Granted validity, µs, counted from this entry's cluster time (for
        /// a retried open: what is left of it). The client counts it from
        /// when it first sent the open (docs/design.md "Time", rule 5).
        validity_us: u64,
        /// How the validity was computed (a new session has no health
        /// report yet, so only the clamp applies).
        lease: LeaseDecision,
    },
    /// The session was renewed by a keepalive.
    KeptAlive {
        /// Remaining validity, µs, counted from this entry's cluster time.
        /// Never less than what an earlier grant promised: a keepalive can
        /// lengthen a session's deadline, never shorten it.
        validity_us: u64,
        /// How this renewal's validity was computed (the deadline may rest
        /// on an earlier, longer grant).
        lease: LeaseDecision,
        /// Effective cluster time of this entry, µs. The entry was stamped
        /// between the keepalive's send and its reply, so the client uses it
        /// to estimate its own rate against cluster time.
        cluster_ts_us: u64,
        /// Drift bound the client must apply to itself at least
        /// (docs/design.md "Time", rule 5), ppm: its committed estimate's
        /// bound or `time.max_drift_ppm`, plus any widening after a
        /// detected clock skew.
        client_rho_ppm: u64,
    },
    /// The lock is held. A lock is held as long as the session is: there
    /// is no separate lock lease.
    Granted {
        /// Fencing token: the revision of the granting command, strictly
        /// increasing per lock.
        token: u64,
        /// Remaining session validity at this entry, µs.
        validity_us: u64,
    },
    /// The lock was busy (or in lock-delay); the request waits in the FIFO
    /// queue. The grant arrives later as `Event::LockGranted`, in the entry
    /// that frees the lock; a timeout as `Event::WaitTimedOut`.
    Queued {
        /// 0-based position in the wait queue.
        position: u32,
        /// Cluster time at which the wait gives up, µs.
        wait_deadline_us: u64,
    },
    /// A KV write was applied.
    KvWritten {
        /// The key's new modification revision: the revision of the
        /// writing command (for a delete: the deleting command's).
        revision: u64,
    },
    /// Campaign (or lease transfer) result: the session is master now.
    Elected {
        /// The mastership epoch: the revision of the command that made this
        /// master, strictly increasing per election.
        epoch: u64,
    },
    /// Campaign result: waiting behind the master and earlier candidates.
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
    /// The sequence number is older than the dedupe window still remembers:
    /// its reply is gone, so a retry cannot be answered safely.
    StaleSequence {
        /// The sequence number sent.
        seq: u64,
        /// Highest sequence number whose reply was already forgotten.
        forgotten_through: u64,
    },
    /// A name or key is empty.
    EmptyName,
    /// A name or key (or client name) is longer than the replicated limit.
    NameTooLong {
        /// Length of the refused name, bytes (UTF-8).
        len: usize,
        /// The limit in force, bytes (`limits.max_name_bytes` or
        /// `limits.max_client_name_bytes`).
        max: usize,
    },
    /// A value or handover chunk is larger than allowed.
    ValueTooLarge {
        /// Size of the refused value or chunk, bytes.
        len: usize,
        /// The limit in force, bytes (`limits.max_value_bytes`, or
        /// [`MAX_VALUE_BYTES_CEILING`](crate::limits::MAX_VALUE_BYTES_CEILING)
        /// for a handover chunk).
        max: usize,
    },
    /// A replicated count or size limit is reached.
    LimitReached {
        /// The limit that is full: which count or size of
        /// `limits.*` stopped the command.
        limit: LimitKind,
        /// Its configured value (a count, or bytes for
        /// [`LimitKind::HandoverBytes`]).
        max: u64,
    },
    /// A requested TTL outside `lease.min_ttl_us ..= lease.max_ttl_us`.
    TtlOutOfRange {
        /// The TTL requested, µs.
        requested_us: u64,
        /// The smallest allowed, µs.
        min_us: u64,
        /// The largest allowed, µs.
        max_us: u64,
    },
    /// Try-lock found the lock busy (or in lock-delay).
    LockBusy {
        /// When the lock-delay ends, µs of cluster time, if that is why;
        /// `None` when the lock is held or has waiters.
        lock_delay_until_us: Option<u64>,
    },
    /// The session already holds or waits for this lock.
    AlreadyHeld,
    /// Release by a session that neither holds nor waits for the lock.
    NotHolder,
    /// The fencing token is older than the lock's newest grant.
    StaleFencingToken {
        /// The token given.
        token: u64,
        /// The newest grant's token.
        latest: u64,
    },
    /// The fencing token is not held by anyone now (released, expired, or
    /// never issued), or the lock does not exist.
    FenceNotHeld {
        /// The token given.
        token: u64,
    },
    /// A fenced write from a session that does not hold the fence's grant:
    /// the token is held, by another session (tokens are published by
    /// reads and events, so holding one proves nothing).
    FenceNotHolder {
        /// The token given.
        token: u64,
    },
    /// A compare-and-set found another modification revision.
    RevisionMismatch {
        /// The revision the write expected (0 = key absent).
        expected: u64,
        /// The key's actual `mod_revision` (0 = key absent).
        actual: u64,
    },
    /// A KV delete of a key that does not exist.
    KeyNotFound,
    /// The election does not exist (nobody campaigns in it).
    UnknownElection,
    /// The session is not a candidate in this election, or a handover names
    /// a candidate that is not waiting in it.
    NotCandidate,
    /// The session already campaigns in this election.
    AlreadyCandidate,
    /// The operation needs the master at the given epoch, and the session
    /// is not (or the epoch is old).
    NotMaster {
        /// The election's current epoch.
        epoch: u64,
    },
    /// A handover command does not fit the handover in progress (none, a
    /// different epoch, wrong sender, chunk out of order, acknowledgement
    /// before the last chunk or with other counts).
    HandoverMismatch {
        /// What was wrong, for logs and error messages.
        detail: String,
    },
    /// A handover chunk's crc32 does not match its data.
    ChunkChecksum {
        /// The chunk's number.
        chunk_seq: u32,
    },
    /// A `SetConfig` failed [`Config::validate`](crate::Config::validate).
    InvalidConfig {
        /// What was wrong, naming the field.
        detail: String,
    },
    /// A health or clock report about a session that does not exist, or
    /// with values outside their ranges (a permille above 1000).
    InvalidReport {
        /// What was wrong, naming the field.
        detail: String,
    },
    /// The command's proposer may not do this under the policy in force
    /// when the entry was applied (docs/security.md, "Policy model"), or
    /// is not the owner of the session it names.
    PermissionDenied {
        /// Who proposed it, as [`Principal`](crate::Principal)'s display
        /// form.
        principal: String,
        /// What was refused.
        action: Action,
        /// The lock, key, election or session refused.
        name: String,
    },
    /// A session operation arrived under a sequence number the session
    /// already used for a different operation: the dedupe cache answers a
    /// retry only when it is the same request. Nothing changed; the
    /// client's sequence numbers are broken.
    SequenceReused {
        /// The sequence number sent.
        seq: u64,
    },
    /// A `SetPolicy` whose policy fails
    /// [`AccessPolicy::validate`](crate::AccessPolicy::validate).
    InvalidPolicy {
        /// What was wrong.
        detail: String,
    },
    /// A batch entry held another batch. Only a faulty leader builds one
    /// (clients cannot propose entries); the inner batch changes nothing.
    NestedBatch,
}

impl From<Denied> for Rejection {
    fn from(d: Denied) -> Self {
        Rejection::PermissionDenied {
            principal: d.principal,
            action: d.action,
            name: d.name,
        }
    }
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
            Rejection::FenceNotHolder { token } => {
                write!(f, "fencing token {token} is held by another session, not the writer")
            }
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
            Rejection::PermissionDenied {
                principal,
                action,
                name,
            } => crate::auth::write_denied(f, principal, *action, name),
            Rejection::SequenceReused { seq } => write!(
                f,
                "sequence {seq} was already used for a different operation of this session"
            ),
            Rejection::InvalidPolicy { detail } => write!(f, "invalid access policy: {detail}"),
            Rejection::NestedBatch => write!(f, "a batch entry may not hold another batch"),
        }
    }
}

impl std::error::Error for Rejection {}

/// Which replicated limit (the fields of [`Limits`](crate::Limits)) a
/// [`Rejection::LimitReached`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitKind {
    /// Open sessions in the cluster (`limits.max_sessions`).
    Sessions,
    /// Locks held or awaited plus elections joined by one session
    /// (`limits.max_locks_per_session`).
    LocksPerSession,
    /// Waiters queued on one lock (`limits.max_waiters_per_lock`).
    WaitersPerLock,
    /// KV keys in the cluster (`limits.max_keys`); overwriting an existing
    /// key is always allowed.
    Keys,
    /// Master plus waiting candidates of one election
    /// (`limits.max_candidates_per_election`).
    CandidatesPerElection,
    /// Total bytes of one handover's state chunks
    /// (`limits.max_handover_bytes`).
    HandoverBytes,
}
