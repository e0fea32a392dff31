//! The full structural check of the state: lock tables against their
//! holders' and waiters' sessions, sessions against the nonce index and
//! their timers, elections against their masters and handovers, the
//! derived lock counts against the table, and no timer overdue. It walks
//! everything, so it runs in tests and on snapshot restore, never on the
//! apply path; the apply path keeps these invariants by construction and
//! guards the cheap ones with `assert!`/`debug_assert!` where they change.

use driftlock_proto::LockMode;

use crate::entities::LockCounts;
use crate::timers::Timer;
use crate::StateMachine;

impl StateMachine {
    /// Checks every structural invariant of the state. Walks everything:
    /// for tests and snapshot restore, not for the apply path.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_revisions()?;
        let counted = LockCounts::of(&self.locks, &self.sessions);
        if counted != self.counts {
            return Err(format!("counts {:?} but the tables hold {counted:?}", self.counts));
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
            for w in lock.waiters.iter() {
                if !self.sessions.get(&w.session).is_some_and(|s| s.waiting.contains(name)) {
                    return Err(format!("lock {name}: waiter {} does not list it", w.session));
                }
                if !self
                    .timers
                    .contains(&(w.deadline_us, Timer::Waiter(name.to_string(), w.session)))
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
            // A delay timer belongs to the delay in force: a stale one would
            // end a newer delay early when it fires (rule 6).
            match timer {
                Timer::LockDelay(name)
                    if self.locks.get(name.as_str()).map(|l| l.lock_delay_until_us) != Some(*deadline) =>
                {
                    return Err(format!(
                        "lock {name}: lock-delay timer at {deadline} is not the delay in force"
                    ));
                }
                Timer::ElectionDelay(name) if self.elections.get(name).map(|e| e.delay_until_us) != Some(*deadline) => {
                    return Err(format!(
                        "election {name}: succession-delay timer at {deadline} is not the delay in force"
                    ));
                }
                _ => {}
            }
        }
        for (name, lock) in &self.locks {
            let until = lock.lock_delay_until_us;
            if until > self.ts_eff_us && !self.timers.contains(&(until, Timer::LockDelay(name.to_string()))) {
                return Err(format!("lock {name}: lock-delay until {until} has no timer"));
            }
        }
        for (name, e) in &self.elections {
            let until = e.delay_until_us;
            if until > self.ts_eff_us && !self.timers.contains(&(until, Timer::ElectionDelay(name.clone()))) {
                return Err(format!("election {name}: succession delay until {until} has no timer"));
            }
        }
        Ok(())
    }

    /// Every number handed out is at most the last revision, and the last
    /// revision at least the last applied index: otherwise the next
    /// command could hand out a token, id or epoch that was already used.
    fn check_revisions(&self) -> Result<(), String> {
        let last = self.last_revision;
        if last < self.last_index {
            return Err(format!(
                "last revision {last} is below the last applied index {}",
                self.last_index
            ));
        }
        let handed_out = self
            .sessions
            .keys()
            .copied()
            .chain(self.locks.values().map(|l| l.latest_token))
            .chain(self.kv.values().map(|e| e.mod_revision.max(e.create_revision)))
            .chain(self.elections.values().map(|e| e.epoch))
            .chain([self.config_revision, self.policy_revision]);
        for n in handed_out {
            if n > last {
                return Err(format!("revision {n} was handed out beyond the last revision {last}"));
            }
        }
        Ok(())
    }
}
