//! Read-only views of the state, as reads answer them. Reads that depend on
//! expiry are answered as of a given cluster time (docs/design.md "Time",
//! rule 8): a session past its deadline is gone from a view even before its
//! expiry entry is applied.

use serde::{Deserialize, Serialize};

use crate::types::{HealthSample, LeaseDecision, LockMode, SessionId};

/// A lock holder as seen by a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderView {
    /// The holder's session.
    pub session: SessionId,
    /// The mode it was granted: exclusive or shared.
    pub mode: LockMode,
    /// Fencing token of the grant (the granting command's revision).
    pub token: u64,
    /// Cluster time of the granting entry, µs.
    pub granted_ts_us: u64,
    /// Remaining validity of the holder's session at the read's cluster
    /// time, µs (always > 0: expired holders are left out).
    pub validity_us: u64,
}

/// A lock as seen by a read. A lock with no holder, no waiter and no
/// lock-delay does not exist (the read answers `None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    /// Current holders, by session id; sessions past their deadline at the
    /// read's cluster time are left out even before their expiry entry.
    pub holders: Vec<HolderView>,
    /// Waiting sessions and the mode they asked for, in FIFO order.
    pub waiters: Vec<(SessionId, LockMode)>,
    /// Token of the newest grant (a fenced write must carry at least this).
    pub latest_token: u64,
    /// End of the lock-delay, µs of cluster time; 0 = none. A value at or
    /// before the read's cluster time has ended; only the entry that
    /// applies its timer has not come yet.
    pub lock_delay_until_us: u64,
}

/// A session as seen by a read (`None` once its deadline has passed at the
/// read's cluster time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// The session's id (the revision of the command that opened it).
    pub session: SessionId,
    /// The name the client gave when it opened the session (for status).
    pub client_name: String,
    /// End of the longest validity ever granted to it, µs of cluster time.
    pub deadline_us: u64,
    /// `deadline_us` minus the read's cluster time, µs (> 0).
    pub remaining_us: u64,
    /// The last lease decision (open or keepalive), with its factors.
    pub lease: LeaseDecision,
    /// The failure predictor's score while the session is suspected (a
    /// probe is pending); `None` otherwise.
    pub suspicion_permille: Option<u32>,
    /// Drift bound the client must apply to itself at least, ppm
    /// (docs/design.md "Time", rule 5).
    pub client_rho_ppm: u64,
    /// Names of the locks it holds, in order.
    pub held: Vec<String>,
    /// The client's last committed health sample, if it reported one.
    pub health: Option<HealthSample>,
}

/// A KV entry as seen by a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvView {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Revision of the write that created the key; a key
    /// deleted and written again gets a new one.
    pub create_revision: u64,
    /// Revision of the last write: what a compare-and-set
    /// compares against.
    pub mod_revision: u64,
    /// Number of writes since creation (1 after the first).
    pub version: u64,
}

/// An election as seen by a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionView {
    /// Master session and its proclaimed value, if the master is alive at
    /// the read's cluster time.
    pub master: Option<(SessionId, Vec<u8>)>,
    /// Epoch of the current (or last) master: the revision of the command
    /// that made it master.
    pub epoch: u64,
    /// Waiting candidates in FIFO order (a master that handed over is not
    /// among them: it left the election when it relinquished).
    pub candidates: Vec<SessionId>,
    /// Handover in progress: (from master, to candidate, acknowledged yet).
    pub handover: Option<(SessionId, SessionId, bool)>,
}

/// Counts for status and metrics, from one node's applied state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Open sessions (including any past their deadline whose expiry entry
    /// has not been applied yet).
    pub sessions: u64,
    /// Locks with at least one holder.
    pub held_locks: u64,
    /// Waiters across all locks.
    pub waiters: u64,
    /// KV keys.
    pub keys: u64,
    /// Elections that exist (a master, candidates, a handover or a
    /// succession delay).
    pub elections: u64,
    /// Sessions with a pending renewal probe.
    pub suspected_sessions: u64,
    /// Sessions whose drift bound was widened after a detected clock skew.
    pub skewed_sessions: u64,
    /// `ρ_cluster`, the drift bound the state machine's margins use, ppm
    /// (docs/design.md "Time", rule 6).
    pub cluster_rho_ppm: u64,
    /// The node clock alert threshold in force (`time.alert_drift_ppm`),
    /// ppm.
    pub alert_drift_ppm: u64,
}
