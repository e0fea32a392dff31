//! Locks: exclusive and shared grants with fencing tokens (docs/design.md
//! "Time", rule 7), FIFO waiters with direct handoff, and lock-delay after
//! expiry or revocation (its length is computed in `time.rs`). A release
//! that carries the client's clock is checked against cluster time there
//! too.

use driftlock_proto::*;

use crate::apply::Ctx;
use crate::command::Response;
use crate::entities::{Holder, Lock, LockName, Waiter};
use crate::timers::Timer;
use crate::StateMachine;

impl StateMachine {
    pub(crate) fn acquire(
        &mut self,
        session: SessionId,
        name: String,
        mode: LockMode,
        wait_us: u64,
        ctx: &mut Ctx,
    ) -> Response {
        self.check_name(&name)?;
        let limits = &self.config.limits;
        let Some(s) = self.sessions.get(&session) else {
            return Err(Rejection::UnknownSession { session });
        };
        if s.held.contains(name.as_str()) || s.waiting.contains(name.as_str()) {
            return Err(Rejection::AlreadyHeld);
        }
        if s.resource_count() >= limits.max_locks_per_session {
            return Err(Rejection::LimitReached {
                limit: LimitKind::LocksPerSession,
                max: limits.max_locks_per_session,
            });
        }
        let max_waiters = limits.max_waiters_per_lock;
        let (grantable, delay) = match self.locks.get(name.as_str()) {
            None => (true, None),
            Some(lock) => {
                let delayed = lock.lock_delay_until_us > ctx.now_us;
                let compatible = lock.waiters.is_empty() && compatible(lock, mode);
                (!delayed && compatible, delayed.then_some(lock.lock_delay_until_us))
            }
        };
        if grantable {
            let validity_us = self.grant(&name, session, mode, ctx);
            return Ok(Reply::Granted {
                token: ctx.revision,
                validity_us,
            });
        }
        if wait_us == 0 {
            return Err(Rejection::LockBusy {
                lock_delay_until_us: delay,
            });
        }
        let waiting = self.locks.get(name.as_str()).map_or(0, |l| l.waiters.len() as u64);
        if waiting >= max_waiters {
            return Err(Rejection::LimitReached {
                limit: LimitKind::WaitersPerLock,
                max: max_waiters,
            });
        }
        let deadline_us = ctx.now_us.saturating_add(wait_us);
        let key = self.lock_name(&name);
        let lock = self.locks.entry(LockName::clone(&key)).or_default();
        lock.waiters.push_back(Waiter {
            session,
            mode,
            deadline_us,
        });
        self.counts.waiters += 1;
        let position = (lock.waiters.len() - 1) as u32;
        self.timers.insert((deadline_us, Timer::Waiter(name.clone(), session)));
        if let Some(s) = self.sessions.get_mut(&session) {
            s.waiting.insert(key);
        }
        Ok(Reply::Queued {
            position,
            wait_deadline_us: deadline_us,
        })
    }

    /// The stored name of lock `name` if it is in the table (so that the
    /// table and the sessions share one allocation), a new one if not.
    fn lock_name(&self, name: &str) -> LockName {
        match self.locks.get_key_value(name) {
            Some((key, _)) => LockName::clone(key),
            None => LockName::from(name),
        }
    }

    /// Records a grant at this entry; returns the holder's remaining validity.
    fn grant(&mut self, name: &str, session: SessionId, mode: LockMode, ctx: &mut Ctx) -> u64 {
        let token = ctx.revision;
        let key = self.lock_name(name);
        let lock = self.locks.entry(LockName::clone(&key)).or_default();
        assert!(token >= lock.latest_token, "fencing token went backwards on {name}");
        debug_assert!(compatible(lock, mode));
        lock.latest_token = token;
        if lock.holders.is_empty() {
            self.counts.held_locks += 1;
        }
        lock.holders.insert(
            session,
            Holder {
                mode,
                token,
                granted_ts_us: ctx.now_us,
            },
        );
        let validity_us = match self.sessions.get_mut(&session) {
            Some(s) => {
                s.held.insert(key);
                s.deadline_us.saturating_sub(ctx.now_us)
            }
            None => 0,
        };
        debug_assert!(validity_us > 0, "granted {name} to a session past its deadline");
        ctx.events.push(Event::LockGranted {
            name: name.to_owned(),
            session,
            mode,
            token,
            validity_us,
        });
        validity_us
    }

    pub(crate) fn release(&mut self, session: SessionId, name: &str, ctx: &mut Ctx) -> Response {
        let Some(s) = self.sessions.get(&session) else {
            return Err(Rejection::UnknownSession { session });
        };
        if s.held.contains(name) {
            self.free_holder(name, session, EndCause::Released, None, ctx);
            Ok(Reply::Done)
        } else if s.waiting.contains(name) {
            self.remove_waiter(name, session, ctx);
            Ok(Reply::Done)
        } else {
            Err(Rejection::NotHolder)
        }
    }

    /// Removes `session` from the holders of `name`, applies lock-delay if
    /// given, and hands the lock to the next waiters.
    pub(crate) fn free_holder(
        &mut self,
        name: &str,
        session: SessionId,
        cause: EndCause,
        delay_until_us: Option<u64>,
        ctx: &mut Ctx,
    ) {
        let Some(lock) = self.locks.get_mut(name) else { return };
        let Some(holder) = lock.holders.remove(&session) else {
            return;
        };
        if lock.holders.is_empty() {
            debug_assert!(self.counts.held_locks > 0);
            self.counts.held_locks = self.counts.held_locks.saturating_sub(1);
        }
        let mut lock_delay_until_us = None;
        if let Some(until) = delay_until_us {
            if until > ctx.now_us && until > lock.lock_delay_until_us {
                // Replace the old delay's timer even when its deadline has
                // passed: it may not have fired yet in this entry, and if it
                // fired later it would end the new, longer delay (rule 6).
                if lock.lock_delay_until_us != 0 {
                    self.timers
                        .remove(&(lock.lock_delay_until_us, Timer::LockDelay(name.to_owned())));
                }
                lock.lock_delay_until_us = until;
                self.timers.insert((until, Timer::LockDelay(name.to_owned())));
            }
            if lock.lock_delay_until_us > ctx.now_us {
                lock_delay_until_us = Some(lock.lock_delay_until_us);
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.held.remove(name);
        }
        ctx.events.push(Event::LockReleased {
            name: name.to_owned(),
            session,
            token: holder.token,
            cause,
            lock_delay_until_us,
        });
        self.pump_lock(name, ctx);
    }

    /// Grants `name` to waiters at the head of its queue while they fit
    /// (direct handoff inside the freeing entry), then drops the lock if it
    /// is free.
    pub(crate) fn pump_lock(&mut self, name: &str, ctx: &mut Ctx) {
        loop {
            let Some(lock) = self.locks.get(name) else { return };
            if lock.lock_delay_until_us > ctx.now_us {
                return;
            }
            let Some(head) = lock.waiters.front() else { break };
            if !compatible(lock, head.mode) {
                break;
            }
            // A waiter whose session is due to expire in this same entry is
            // left for its expiry to remove; granting it would only start a
            // lock-delay for nothing.
            if !self.session_alive_at(head.session, ctx.now_us) {
                break;
            }
            let head = head.clone();
            if let Some(lock) = self.locks.get_mut(name) {
                if lock.waiters.pop_front().is_some() {
                    debug_assert!(self.counts.waiters > 0);
                    self.counts.waiters = self.counts.waiters.saturating_sub(1);
                }
            }
            self.timers
                .remove(&(head.deadline_us, Timer::Waiter(name.to_owned(), head.session)));
            if let Some(s) = self.sessions.get_mut(&head.session) {
                s.waiting.remove(name);
            }
            self.grant(name, head.session, head.mode, ctx);
        }
        self.gc_lock(name, ctx.now_us);
    }

    fn gc_lock(&mut self, name: &str, now_us: u64) {
        if let Some(lock) = self.locks.get(name) {
            if lock.holders.is_empty() && lock.waiters.is_empty() && lock.lock_delay_until_us <= now_us {
                self.locks.remove(name);
            }
        }
    }

    /// Removes a waiter (cancelled, timed out or its session ended).
    pub(crate) fn remove_waiter(&mut self, name: &str, session: SessionId, ctx: &mut Ctx) {
        let Some(lock) = self.locks.get_mut(name) else { return };
        let Some(pos) = lock.waiters.iter().position(|w| w.session == session) else {
            return;
        };
        let Some(w) = lock.waiters.remove(pos) else { return };
        debug_assert!(self.counts.waiters > 0);
        self.counts.waiters = self.counts.waiters.saturating_sub(1);
        self.timers
            .remove(&(w.deadline_us, Timer::Waiter(name.to_owned(), session)));
        if let Some(s) = self.sessions.get_mut(&session) {
            s.waiting.remove(name);
        }
        ctx.events.push(Event::WaitTimedOut {
            name: name.to_owned(),
            session,
        });
        // The head may have been blocking compatible waiters behind it.
        self.pump_lock(name, ctx);
    }

    pub(crate) fn waiter_timed_out(&mut self, name: &str, session: SessionId, ctx: &mut Ctx) {
        self.remove_waiter(name, session, ctx);
    }
}

/// Whether a new grant of `mode` fits the current holders.
fn compatible(lock: &Lock, mode: LockMode) -> bool {
    match mode {
        LockMode::Exclusive => lock.holders.is_empty(),
        LockMode::Shared => lock.holders.values().all(|h| h.mode == LockMode::Shared),
    }
}
