//! Read-only views of the state, as reads answer them. Reads that depend on
//! expiry are answered as of a given cluster time (docs/design.md "Time",
//! rule 8): a session past its deadline is gone from a view even before its
//! expiry entry is applied.

use serde::{Deserialize, Serialize};

use crate::types::{HealthSample, LeaseDecision, LockMode, SessionId};

/// A lock holder as seen by a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderView {
    /// Holder session.
    pub session: SessionId,
    /// Mode.
    pub mode: LockMode,
    /// Fencing token of the grant.
    pub token: u64,
    /// Cluster time of the grant, µs.
    pub granted_ts_us: u64,
    /// Remaining validity of the holder's session at the read time, µs.
    pub validity_us: u64,
}

/// A lock as seen by a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    /// Current holders (sessions past their deadline are left out).
    pub holders: Vec<HolderView>,
    /// Waiting sessions in queue order.
    pub waiters: Vec<(SessionId, LockMode)>,
    /// Token of the newest grant.
    pub latest_token: u64,
    /// End of the lock-delay, µs of cluster time (0 = none).
    pub lock_delay_until_us: u64,
}

/// A session as seen by a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// Session id.
    pub session: SessionId,
    /// Client name.
    pub client_name: String,
    /// Deadline, µs of cluster time.
    pub deadline_us: u64,
    /// Remaining validity at the read time, µs.
    pub remaining_us: u64,
    /// The last lease decision.
    pub lease: LeaseDecision,
    /// Suspicion score, if suspected.
    pub suspicion_permille: Option<u32>,
    /// Drift bound the client should apply, ppm.
    pub client_rho_ppm: u64,
    /// Locks held.
    pub held: Vec<String>,
    /// The client's last committed health sample, if it reported one.
    pub health: Option<HealthSample>,
}

/// A KV entry as seen by a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvView {
    /// Value.
    pub value: Vec<u8>,
    /// Revision that created the key.
    pub create_revision: u64,
    /// Revision of the last write.
    pub mod_revision: u64,
    /// Number of writes since creation.
    pub version: u64,
}

/// An election as seen by a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionView {
    /// Master session and its value, if the master is alive at the read time.
    pub master: Option<(SessionId, Vec<u8>)>,
    /// Current epoch.
    pub epoch: u64,
    /// Waiting candidates in order.
    pub candidates: Vec<SessionId>,
    /// Handover in progress: (from, to, acknowledged).
    pub handover: Option<(SessionId, SessionId, bool)>,
}

/// Counts for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Open sessions.
    pub sessions: u64,
    /// Locks with at least one holder.
    pub held_locks: u64,
    /// Waiters across all locks.
    pub waiters: u64,
    /// KV keys.
    pub keys: u64,
    /// Elections.
    pub elections: u64,
    /// Suspected sessions.
    pub suspected_sessions: u64,
    /// Sessions whose drift bound was widened after a detected clock skew.
    pub skewed_sessions: u64,
    /// Cluster drift bound in use, ppm.
    pub cluster_rho_ppm: u64,
    /// The node clock alert threshold in force, ppm.
    pub alert_drift_ppm: u64,
}
