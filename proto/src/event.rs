//! What applying an entry announces ([`Event`]), identical on every
//! replica, and how observers select and receive them.

use serde::{Deserialize, Serialize};

use crate::types::{LockMode, SessionId};

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

/// Which events an observer wants. An event matches if any given criterion
/// matches; with none given, every event matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventFilter {
    /// Events about this session (grants, releases, probes, its end,
    /// handovers it takes part in).
    pub session: Option<SessionId>,
    /// KV changes under this prefix.
    pub key_prefix: Option<String>,
    /// Events of this election.
    pub election: Option<String>,
}

/// Events returned by [`DriftlockApi::observe`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Matching events with the log index of the entry that produced them,
    /// in log order.
    pub events: Vec<(u64, Event)>,
    /// Pass this as `after_index` next time.
    pub next_after_index: u64,
    /// Events after the requested index were dropped from this node's
    /// buffer: the observer must re-read the state it cares about.
    pub truncated: bool,
}

impl EventFilter {
    /// Whether `event` passes this filter.
    pub fn matches(&self, event: &Event) -> bool {
        if self.session.is_none() && self.key_prefix.is_none() && self.election.is_none() {
            return true;
        }
        if let Some(s) = self.session {
            if event_session_matches(event, s) {
                return true;
            }
        }
        if let (Some(prefix), Event::KvChanged { key, .. }) = (&self.key_prefix, event) {
            if key.starts_with(prefix.as_str()) {
                return true;
            }
        }
        if let (Some(want), Some(election)) = (&self.election, event_election(event)) {
            if want == election {
                return true;
            }
        }
        false
    }
}

/// Whether an event concerns session `s`.
fn event_session_matches(event: &Event, s: SessionId) -> bool {
    match event {
        Event::SessionOpened { session }
        | Event::SessionEnded { session, .. }
        | Event::LockGranted { session, .. }
        | Event::LockReleased { session, .. }
        | Event::WaitTimedOut { session, .. }
        | Event::Probe { session, .. }
        | Event::ClockSkewDetected { session, .. } => *session == s,
        Event::MasterChanged { master, .. } => *master == Some(s),
        Event::HandoverBegun { from, to, .. } | Event::LeaseTransferred { from, to, .. } => *from == s || *to == s,
        _ => false,
    }
}

/// The election an event belongs to, if any.
fn event_election(event: &Event) -> Option<&str> {
    match event {
        Event::MasterChanged { election, .. }
        | Event::HandoverBegun { election, .. }
        | Event::HandoverChunk { election, .. }
        | Event::HandoverAcked { election, .. }
        | Event::LeaseTransferred { election, .. }
        | Event::HandoverAborted { election, .. } => Some(election),
        _ => None,
    }
}
