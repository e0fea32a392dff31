//! Reads of the state as of a given cluster time (docs/design.md "Time",
//! rule 8: a read that depends on expiry uses the leader's current cluster
//! time, not the last applied entry's), and the counts for status and
//! metrics. Nothing here changes the state.

use driftlock_proto::limits;
use driftlock_proto::*;

use crate::StateMachine;

impl StateMachine {
    /// A lock's state at cluster time `now_us`.
    pub fn lock_view(&self, name: &str, now_us: u64) -> Option<LockView> {
        let lock = self.locks.get(name)?;
        let holders = lock
            .holders
            .iter()
            .filter_map(|(id, h)| {
                let s = self.sessions.get(id)?;
                (s.deadline_us > now_us).then(|| HolderView {
                    session: *id,
                    mode: h.mode,
                    token: h.token,
                    granted_ts_us: h.granted_ts_us,
                    validity_us: s.deadline_us - now_us,
                })
            })
            .collect();
        Some(LockView {
            holders,
            waiters: lock.waiters.iter().map(|w| (w.session, w.mode)).collect(),
            latest_token: lock.latest_token,
            lock_delay_until_us: lock.lock_delay_until_us,
        })
    }

    /// A session's state at cluster time `now_us`; `None` if it does not
    /// exist or its deadline has passed.
    pub fn session_view(&self, session: SessionId, now_us: u64) -> Option<SessionView> {
        let s = self.sessions.get(&session)?;
        if s.deadline_us <= now_us {
            return None;
        }
        Some(SessionView {
            session,
            client_name: s.client_name.clone(),
            deadline_us: s.deadline_us,
            remaining_us: s.deadline_us - now_us,
            lease: s.lease.clone(),
            suspicion_permille: s.suspicion.as_ref().map(|p| p.score_permille),
            client_rho_ppm: self.client_rho_ppm(s),
            held: s.held.iter().map(|name| name.to_string()).collect(),
            health: s.health.clone(),
        })
    }

    /// Whether the state machine would answer `(session, seq)` from the
    /// session's dedupe cache, without looking at the operation. A node
    /// checks a request against the limits before proposing it only when
    /// this is false: a retry must get its first answer even if the limits
    /// shrank since.
    pub fn remembers_op(&self, session: SessionId, seq: u64) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.responses.contains_key(&seq))
    }

    /// Whether an open with `nonce` would return the session it already
    /// opened, without looking at the rest of the request (see
    /// [`remembers_op`](Self::remembers_op)).
    pub fn remembers_open(&self, nonce: u128) -> bool {
        self.session_by_nonce
            .get(&nonce)
            .is_some_and(|id| self.sessions.contains_key(id))
    }

    /// The value and revisions of `key`, or `None` if it does not exist. KV
    /// entries never expire, so unlike the other views this needs no cluster
    /// time.
    pub fn kv_get(&self, key: &str) -> Option<KvView> {
        self.kv.get(key).map(|e| KvView {
            value: e.value.clone(),
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
            version: e.version,
        })
    }

    /// One page of the keys starting with `prefix` and after `start_after`,
    /// in key order: at most `limit` keys and, past the first, no more than
    /// `max_bytes` of keys, values and [`limits::KV_ENTRY_OVERHEAD_BYTES`]
    /// each. The flag says whether more keys match after the page.
    pub fn kv_range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> (Vec<(String, KvView)>, bool) {
        use std::ops::Bound;
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for (key, entry) in self.kv.range((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                return (entries, false);
            }
            let size = key.len() + entry.value.len() + limits::KV_ENTRY_OVERHEAD_BYTES;
            if entries.len() >= limit || (!entries.is_empty() && bytes + size > max_bytes) {
                return (entries, true);
            }
            bytes += size;
            if let Some(view) = self.kv_get(key) {
                entries.push((key.clone(), view));
            }
        }
        (entries, false)
    }

    /// An election's state at cluster time `now_us`.
    pub fn election_view(&self, name: &str, now_us: u64) -> Option<ElectionView> {
        let e = self.elections.get(name)?;
        let master = e
            .master
            .as_ref()
            .filter(|m| self.session_alive_at(m.session, now_us))
            .map(|m| (m.session, m.value.clone()));
        Some(ElectionView {
            master,
            epoch: e.epoch,
            candidates: e.candidates.iter().map(|c| c.session).collect(),
            handover: e.handover.as_ref().map(|h| (h.from, h.to, h.acked)),
        })
    }

    /// Names of the elections that exist, in order, starting after `after`
    /// (exclusive; `None` = from the first), at most `limit`.
    pub fn election_names(&self, after: Option<&str>, limit: usize) -> Vec<String> {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(a.to_owned()),
            None => Bound::Unbounded,
        };
        self.elections
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Committed health sample of a node.
    pub fn node_health(&self, node: u64) -> Option<&HealthSample> {
        self.node_health.get(&node)
    }

    /// Committed clock estimate of a node.
    pub fn node_clock(&self, node: u64) -> Option<&ClockEstimate> {
        self.node_clocks.get(&node)
    }

    /// Counts for status and metrics: table sizes and counts kept as the
    /// records change (`LockCounts`); nothing here walks a table.
    pub fn stats(&self) -> Stats {
        Stats {
            sessions: self.sessions.len() as u64,
            held_locks: self.counts.held_locks,
            waiters: self.counts.waiters,
            keys: self.kv.len() as u64,
            elections: self.elections.len() as u64,
            suspected_sessions: self.counts.suspected_sessions,
            skewed_sessions: self.counts.skewed_sessions,
            cluster_rho_ppm: self.cluster_rho_ppm(),
            alert_drift_ppm: self.config.time.alert_drift_ppm,
        }
    }
}
