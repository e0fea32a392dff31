//! Reads of the state as of a given cluster time (docs/design.md "Time",
//! rule 8: a read that depends on expiry uses the leader's current cluster
//! time, not the last applied entry's), and the full invariant check used by
//! tests and snapshot restore.

use driftlock_proto::limits;
use driftlock_proto::*;

use crate::{StateMachine, Timer};

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
            held: s.held.iter().cloned().collect(),
            health: s.health.clone(),
        })
    }

    /// A KV entry.
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

    /// Counts for status and metrics. Lock and waiter counts are kept as they
    /// change; the session counts walk the sessions (not for hot paths).
    pub fn stats(&self) -> Stats {
        Stats {
            sessions: self.sessions.len() as u64,
            held_locks: self.counts.held_locks,
            waiters: self.counts.waiters,
            keys: self.kv.len() as u64,
            elections: self.elections.len() as u64,
            suspected_sessions: self.sessions.values().filter(|s| s.suspicion.is_some()).count() as u64,
            skewed_sessions: self.sessions.values().filter(|s| s.rho_extra_ppm > 0).count() as u64,
            cluster_rho_ppm: self.cluster_rho_ppm(),
            alert_drift_ppm: self.config.time.alert_drift_ppm,
        }
    }

    /// Checks every structural invariant of the state. Walks everything:
    /// for tests and snapshot restore, not for the apply path.
    pub fn check_invariants(&self) -> Result<(), String> {
        let counted = crate::LockCounts::of(&self.locks);
        if counted != self.counts {
            return Err(format!("lock counts {:?} but the table holds {counted:?}", self.counts));
        }
        for (name, lock) in &self.locks {
            let exclusive = lock.holders.values().filter(|h| h.mode == LockMode::Exclusive).count();
            if exclusive > 1 {
                return Err(format!("lock {name}: {exclusive} exclusive holders"));
            }
            if exclusive == 1 && lock.holders.len() > 1 {
                return Err(format!("lock {name}: exclusive and shared holders together"));
            }
            if lock.holders.values().any(|h| h.token > lock.latest_token) {
                return Err(format!("lock {name}: a holder's token exceeds the latest token"));
            }
            for id in lock.holders.keys() {
                if !self.sessions.get(id).is_some_and(|s| s.held.contains(name)) {
                    return Err(format!("lock {name}: holder {id} does not list it"));
                }
            }
            for w in &lock.waiters {
                if !self.sessions.get(&w.session).is_some_and(|s| s.waiting.contains(name)) {
                    return Err(format!("lock {name}: waiter {} does not list it", w.session));
                }
                if !self
                    .timers
                    .contains(&(w.deadline_us, Timer::Waiter(name.clone(), w.session)))
                {
                    return Err(format!("lock {name}: waiter {} has no timer", w.session));
                }
            }
            if lock.holders.is_empty() && lock.waiters.is_empty() && lock.lock_delay_until_us <= self.ts_eff_us {
                return Err(format!("lock {name}: free but not removed"));
            }
        }
        for (id, s) in &self.sessions {
            if !self.timers.contains(&(s.deadline_us, Timer::Session(*id))) {
                return Err(format!("session {id}: no expiry timer"));
            }
            if s.deadline_us <= self.ts_eff_us {
                return Err(format!("session {id}: alive past its deadline"));
            }
            if self.session_by_nonce.get(&s.nonce) != Some(id) {
                return Err(format!("session {id}: nonce index mismatch"));
            }
            for name in &s.held {
                if !self.locks.get(name).is_some_and(|l| l.holders.contains_key(id)) {
                    return Err(format!("session {id}: lists {name} as held but is not a holder"));
                }
            }
            for name in &s.campaigns {
                let e = self.elections.get(name);
                let listed = e.is_some_and(|e| {
                    e.master.as_ref().is_some_and(|m| m.session == *id) || e.candidates.iter().any(|c| c.session == *id)
                });
                if !listed {
                    return Err(format!("session {id}: campaigns in {name} but is not listed"));
                }
            }
            if s.responses.len() as u64 > self.config.limits.dedupe_window {
                return Err(format!("session {id}: dedupe cache over its window"));
            }
        }
        if self.session_by_nonce.len() != self.sessions.len() {
            return Err("nonce index and sessions differ in size".into());
        }
        for (name, e) in &self.elections {
            if let Some(m) = &e.master {
                if e.candidates.iter().any(|c| c.session == m.session) {
                    return Err(format!("election {name}: master also waiting"));
                }
                if e.epoch == 0 {
                    return Err(format!("election {name}: master at epoch 0"));
                }
            }
            if let Some(h) = &e.handover {
                if e.master.as_ref().map(|m| m.session) != Some(h.from) || h.epoch != e.epoch {
                    return Err(format!("election {name}: handover from a non-master"));
                }
            }
        }
        for (deadline, timer) in &self.timers {
            if *deadline <= self.ts_eff_us {
                return Err(format!("timer {timer:?} at {deadline} is overdue"));
            }
        }
        Ok(())
    }
}
