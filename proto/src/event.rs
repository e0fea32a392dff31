//! What applying an entry announces ([`Event`]), identical on every
//! replica, and how observers select and receive them.

use serde::{Deserialize, Serialize};

use crate::types::{LockMode, SessionId};

/// What happened while applying an entry. Observers (the client library's
/// `observe` long-poll) see these with the revision of the command that
/// produced them (docs/design.md "Batched proposals"); every replica
/// produces the same events, so any node can serve them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A session was opened.
    SessionOpened {
        /// The new session (the revision of the command that opened it).
        session: SessionId,
    },
    /// A session ended; its locks, waits and candidacies ended with it (each
    /// with its own event).
    SessionEnded {
        /// The session that ended.
        session: SessionId,
        /// Closed by the client, expired, or revoked.
        cause: EndCause,
    },
    /// A lock was granted (immediately or from the wait queue, in the entry
    /// that freed it).
    LockGranted {
        /// The lock granted.
        name: String,
        /// The new holder's session.
        session: SessionId,
        /// The mode granted: exclusive, or shared with any other shared holders.
        mode: LockMode,
        /// Fencing token: the revision of the granting command.
        token: u64,
        /// Remaining validity of the holder's session at this entry, µs.
        validity_us: u64,
    },
    /// A holder let go of a lock or lost it.
    LockReleased {
        /// The lock let go.
        name: String,
        /// The former holder's session.
        session: SessionId,
        /// The fencing token of the grant that ended.
        token: u64,
        /// Released (by `Release` or `Close`), expired, or revoked.
        cause: EndCause,
        /// Cluster time until which the lock stays in lock-delay, µs
        /// (docs/design.md "Time", rule 6); `None` for an explicit release
        /// or when no delay is left.
        lock_delay_until_us: Option<u64>,
    },
    /// A waiter left the queue without the lock: its wait deadline passed,
    /// it cancelled (`Release` while waiting), or its session ended.
    WaitTimedOut {
        /// The lock the waiter was queued on.
        name: String,
        /// The waiter's session.
        session: SessionId,
    },
    /// A KV key was written or deleted.
    KvChanged {
        /// The key written or deleted.
        key: String,
        /// Its new modification revision (the writing command's); 0 = the
        /// key was deleted.
        revision: u64,
    },
    /// An election's master or proclaimed value changed.
    MasterChanged {
        /// The election whose master changed.
        election: String,
        /// The master's session; `None` = no master now (it left; a
        /// successor may wait out a succession delay).
        master: Option<SessionId>,
        /// The master's epoch (with `None`: the epoch that just ended).
        epoch: u64,
        /// The master's proclaimed value (empty with `None`).
        value: Vec<u8>,
    },
    /// A warm handover started: the master should send its state.
    HandoverBegun {
        /// The election being handed over.
        election: String,
        /// The master handing over.
        from: SessionId,
        /// The candidate taking over.
        to: SessionId,
        /// The master's epoch, which names the handover.
        epoch: u64,
    },
    /// A chunk of handover state was committed; the candidate collects
    /// them in order.
    HandoverChunk {
        /// The election being handed over.
        election: String,
        /// The master's epoch (the handover's).
        epoch: u64,
        /// 0-based chunk number.
        chunk_seq: u32,
        /// The chunk's bytes (checked against its crc32 before commit).
        data: Vec<u8>,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// The candidate acknowledged the whole state. The master's library
    /// now ends its mastership (its `Leadership` loss signal fires) and
    /// then commits `SessionOp::Relinquish`, which makes the candidate
    /// master; until then the old master is the only master.
    HandoverAcked {
        /// The election being handed over.
        election: String,
        /// The master's epoch (the handover's).
        epoch: u64,
    },
    /// Mastership moved by handover: the old master relinquished it
    /// (`SessionOp::Relinquish`, this entry) and left the election.
    LeaseTransferred {
        /// The election whose master moved.
        election: String,
        /// The old master; it is no longer in the election.
        from: SessionId,
        /// The new master.
        to: SessionId,
        /// The new epoch: the revision of the command that made it.
        epoch: u64,
    },
    /// A handover was abandoned; the master keeps its role.
    HandoverAborted {
        /// The election whose handover ended.
        election: String,
        /// The master's epoch (the handover's).
        epoch: u64,
        /// Why: the acknowledgement deadline passed, a party left, or an
        /// operator's `HandoverAbort` reason.
        reason: String,
    },
    /// A session is suspected of failing (docs/design.md "Predictive failure
    /// analysis"); it must answer with `ProbeAnswer` before the deadline or
    /// be revoked.
    Probe {
        /// The suspected session.
        session: SessionId,
        /// The failure predictor's combined score, permille.
        score_permille: u32,
        /// Cluster time by which the answer must be committed, µs.
        deadline_us: u64,
    },
    /// A client's clock was shown, by several renewals in a row, to run
    /// slower than cluster time by more than the drift bound it was
    /// applying (docs/design.md "Clock drift"): its bound was widened.
    /// Raised when the widening grows and when it crosses the alert
    /// threshold, not on every renewal.
    ClockSkewDetected {
        /// The client's session.
        session: SessionId,
        /// How much slower than cluster time the client's clock was shown
        /// to run, ppm: the smallest lower bound of its last renewals (each
        /// a bound that delay cannot inflate).
        slow_ppm: u64,
        /// The drift bound the session's client must now apply (rule 5)
        /// and its lock-delay uses (rule 6), ppm: `slow_ppm`, capped at
        /// `time.max_client_rho_ppm`.
        client_rho_ppm: u64,
        /// `slow_ppm` is beyond `time.alert_drift_ppm`: the client's clock
        /// is flagged as broken (raised once per upward crossing).
        alert: bool,
    },
    /// A node's committed drift estimate crossed `time.alert_drift_ppm`
    /// (raised once per crossing, upwards).
    NodeClockAlert {
        /// The node's Raft id.
        node: u64,
        /// Its estimated drift, ppb (positive = fast).
        drift_ppb: i64,
        /// σ of the estimate, ppb.
        drift_sigma_ppb: u64,
        /// The threshold in force, ppm.
        alert_drift_ppm: u64,
    },
    /// A `SetConfig` replaced the replicated configuration.
    ConfigChanged {
        /// The new configuration's revision: its `SetConfig`'s revision.
        revision: u64,
        /// Every setting that changed, old and new value, in
        /// [`Config::KEYS`](crate::Config::KEYS) order (empty when the
        /// new configuration equals the old one).
        changes: Vec<crate::ConfigChange>,
    },
    /// A `SetPolicy` put a new access policy in force.
    PolicyChanged {
        /// The new policy's revision: its `SetPolicy`'s revision.
        revision: u64,
    },
}

/// Why a session, lock or candidacy ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndCause {
    /// The holder released it or closed its session: no lock-delay.
    Released,
    /// The session's validity ran out: lock-delay applies.
    Expired,
    /// The session was revoked for cause (an unanswered renewal probe, or a
    /// committed `Revoke`): lock-delay applies.
    Revoked {
        /// Why, for logs and events ("no answer to renewal probe" for a
        /// probe deadline).
        reason: String,
    },
}

/// Which events an observer wants. An event matches if any given criterion
/// matches; with none given, every event matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventFilter {
    /// Events naming this session: its opening and end, its grants,
    /// releases and timed-out waits, probes, clock-skew findings,
    /// masterships, and the begin and transfer of handovers it takes part
    /// in (chunks and acknowledgements name no session: use `election`).
    pub session: Option<SessionId>,
    /// KV changes of keys starting with this prefix (empty: every key).
    pub key_prefix: Option<String>,
    /// Every event of this election (masters, handover steps).
    pub election: Option<String>,
    /// Events naming any of these sessions, "naming" as for `session`:
    /// one long-poll for all the sessions of a client (the client
    /// library's session hub). Sorted ascending without duplicates, at
    /// most [`MAX_OBSERVE_SESSIONS`](crate::limits::MAX_OBSERVE_SESSIONS)
    /// (the node refuses anything else as an invalid request); empty = not
    /// given.
    #[serde(default)]
    pub sessions: Vec<SessionId>,
}

/// Events returned by `DriftlockApi::observe`. A batch never splits the
/// events of one entry, and stops before
/// [`MAX_BATCH_BYTES`](crate::limits::MAX_BATCH_BYTES) of encoded events or
/// [`MAX_BATCH_EVENTS`](crate::limits::MAX_BATCH_EVENTS) events, except
/// that its first entry is always included whole (by count) or as far as
/// its events fit the byte budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Matching events with the revision of the command that produced
    /// them, in apply order.
    pub events: Vec<(u64, Event)>,
    /// Pass this as `after_index` next time: the last revision this batch
    /// covered (all of whose matching events were considered), or the
    /// newest revision the node knows when the batch is not full.
    pub next_after_index: u64,
    /// Some events after the requested revision are missing from this batch:
    /// the node's buffer dropped them (overflow, snapshot install, a lagging
    /// pump), or one command's events alone passed the byte budget and only
    /// those that fit were kept. The observer must re-read the state it
    /// cares about.
    pub truncated: bool,
}

impl EventFilter {
    /// Whether `event` passes this filter.
    pub fn matches(&self, event: &Event) -> bool {
        if self.is_unfiltered() {
            return true;
        }
        if let Some(s) = self.session {
            if event.names_session(s) {
                return true;
            }
        }
        if !self.sessions.is_empty()
            && event
                .named_sessions()
                .into_iter()
                .flatten()
                .any(|s| self.sessions.binary_search(&s).is_ok())
        {
            return true;
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

    /// Whether no criterion is given (every event matches).
    pub fn is_unfiltered(&self) -> bool {
        self.session.is_none() && self.key_prefix.is_none() && self.election.is_none() && self.sessions.is_empty()
    }

    /// Every session the filter names: `session` and `sessions`.
    pub fn all_sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.session.into_iter().chain(self.sessions.iter().copied())
    }

    /// Checks the shape of `sessions`: sorted ascending, no duplicates, at
    /// most [`MAX_OBSERVE_SESSIONS`](crate::limits::MAX_OBSERVE_SESSIONS).
    /// The error says what is wrong.
    pub fn check_sessions(&self) -> Result<(), String> {
        let max = crate::limits::MAX_OBSERVE_SESSIONS;
        if self.sessions.len() > max {
            return Err(format!(
                "the filter lists {} sessions, limit is {max}",
                self.sessions.len()
            ));
        }
        if let Some(w) = self.sessions.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!(
                "the filter's sessions must be sorted ascending without duplicates ({} before {})",
                w[0], w[1]
            ));
        }
        Ok(())
    }
}

impl Event {
    /// The sessions this event names (at most two): its opening and end,
    /// its grants, releases and timed-out waits, probes, clock-skew
    /// findings, the master of a `MasterChanged`, and both parties of a
    /// handover's begin and transfer. Chunks and acknowledgements name no
    /// session. This is what [`EventFilter::session`] and
    /// [`EventFilter::sessions`] select on.
    pub fn named_sessions(&self) -> [Option<SessionId>; 2] {
        match self {
            Event::SessionOpened { session }
            | Event::SessionEnded { session, .. }
            | Event::LockGranted { session, .. }
            | Event::LockReleased { session, .. }
            | Event::WaitTimedOut { session, .. }
            | Event::Probe { session, .. }
            | Event::ClockSkewDetected { session, .. } => [Some(*session), None],
            Event::MasterChanged { master, .. } => [*master, None],
            Event::HandoverBegun { from, to, .. } | Event::LeaseTransferred { from, to, .. } => {
                [Some(*from), Some(*to)]
            }
            _ => [None, None],
        }
    }

    /// Whether this event names session `s` (see
    /// [`named_sessions`](Self::named_sessions)).
    pub fn names_session(&self, s: SessionId) -> bool {
        self.named_sessions().contains(&Some(s))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(session: SessionId) -> Event {
        Event::LockGranted {
            name: "l".into(),
            session,
            mode: LockMode::Exclusive,
            token: 9,
            validity_us: 1,
        }
    }

    #[test]
    fn a_session_list_matches_what_the_single_session_matches() {
        let list = EventFilter {
            sessions: vec![3, 7, 11],
            ..EventFilter::default()
        };
        let events = [
            granted(7),
            granted(8),
            Event::HandoverBegun {
                election: "e".into(),
                from: 2,
                to: 11,
                epoch: 2,
            },
            Event::MasterChanged {
                election: "e".into(),
                master: None,
                epoch: 4,
                value: Vec::new(),
            },
            Event::HandoverAcked {
                election: "e".into(),
                epoch: 2,
            },
            Event::KvChanged {
                key: "k".into(),
                revision: 3,
            },
        ];
        for event in &events {
            let single = [3, 7, 11].iter().any(|&s| {
                EventFilter {
                    session: Some(s),
                    ..EventFilter::default()
                }
                .matches(event)
            });
            assert_eq!(list.matches(event), single, "{event:?}");
        }
        assert!(list.matches(&granted(3)));
        assert!(!list.matches(&granted(4)));
        assert!(!list.is_unfiltered());
        assert!(EventFilter::default().is_unfiltered());
    }

    #[test]
    fn a_session_list_must_be_sorted_unique_and_bounded() {
        let with = |sessions: Vec<SessionId>| EventFilter {
            sessions,
            ..EventFilter::default()
        };
        assert!(with(vec![1, 2, 5]).check_sessions().is_ok());
        assert!(with(Vec::new()).check_sessions().is_ok());
        assert!(with(vec![2, 1]).check_sessions().unwrap_err().contains("sorted"));
        assert!(with(vec![1, 1]).check_sessions().is_err());
        let too_many = with((1..=crate::limits::MAX_OBSERVE_SESSIONS as u64 + 1).collect());
        assert!(too_many.check_sessions().unwrap_err().contains("limit"));
        let largest = with((1..=crate::limits::MAX_OBSERVE_SESSIONS as u64).collect());
        assert!(largest.check_sessions().is_ok());
    }
}
