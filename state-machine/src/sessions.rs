//! Sessions: open, keepalive, suspicion and probes, and the end of a session
//! (close, expiry, revocation) with everything it held.

use std::collections::BTreeMap;

use imbl::OrdSet;

use crate::lease;
use driftlock_proto::*;

use crate::apply::Ctx;
use crate::command::Response;
use crate::entities::{ClientClock, Session, Suspicion};
use crate::timers::Timer;
use crate::validate::permille_out_of_range;
use crate::StateMachine;

impl StateMachine {
    pub(crate) fn open_session(
        &mut self,
        nonce: u128,
        client_name: String,
        requested_ttl_us: u64,
        owner: Principal,
        secret_sha256: [u8; 32],
        ctx: &mut Ctx,
    ) -> Response {
        // A retried open finds the session it already opened; an open that
        // reuses the nonce from another principal or with another secret is
        // not that retry, and gets nothing of the session.
        if let Some(&id) = self.session_by_nonce.get(&nonce) {
            if let Some(s) = self.sessions.get(&id) {
                if !s.owner.same_party(&owner) || s.secret_sha256 != secret_sha256 {
                    return Err(Denied::new(&owner, Action::UseSession, &id.to_string()).into());
                }
                return Ok(Reply::SessionOpened {
                    session: id,
                    validity_us: s.deadline_us.saturating_sub(ctx.now_us),
                    lease: s.lease.clone(),
                });
            }
        }
        let limits = &self.config.limits;
        if client_name.len() > limits.max_client_name_bytes {
            return Err(Rejection::NameTooLong {
                len: client_name.len(),
                max: limits.max_client_name_bytes,
            });
        }
        if self.sessions.len() as u64 >= limits.max_sessions {
            return Err(Rejection::LimitReached {
                limit: LimitKind::Sessions,
                max: limits.max_sessions,
            });
        }
        let l = &self.config.lease;
        if requested_ttl_us < l.min_ttl_us || requested_ttl_us > l.max_ttl_us {
            return Err(Rejection::TtlOutOfRange {
                requested_us: requested_ttl_us,
                min_us: l.min_ttl_us,
                max_us: l.max_ttl_us,
            });
        }
        let decision = lease::decide(requested_ttl_us, None, false, l);
        let id = ctx.revision;
        let deadline_us = ctx.now_us.saturating_add(decision.validity_us);
        let session = Session {
            nonce,
            owner,
            secret_sha256,
            client_name,
            requested_ttl_us,
            deadline_us,
            validity_us: decision.validity_us,
            lease: decision.clone(),
            health: None,
            clock: None,
            client_clock: ClientClock::default(),
            suspicion: None,
            held: OrdSet::new(),
            waiting: OrdSet::new(),
            campaigns: OrdSet::new(),
            responses: BTreeMap::new(),
            forgotten_through: 0,
        };
        assert!(self.sessions.insert(id, session).is_none(), "session id {id} reused");
        self.session_by_nonce.insert(nonce, id);
        self.timers.insert((deadline_us, Timer::Session(id)));
        ctx.events.push(Event::SessionOpened { session: id });
        Ok(Reply::SessionOpened {
            session: id,
            validity_us: decision.validity_us,
            lease: decision,
        })
    }

    pub(crate) fn keepalive(
        &mut self,
        id: SessionId,
        health: Option<HealthSample>,
        clock: Option<ClockSample>,
        ctx: &mut Ctx,
    ) -> Response {
        if health.as_ref().and_then(permille_out_of_range).is_some() {
            return Err(Rejection::InvalidReport {
                detail: "a permille field exceeds 1000".into(),
            });
        }
        if let Some(sample) = &clock {
            check_clock_sample(sample, ctx.now_us)?;
        }
        let cfg = self.config.lease.clone();
        let Some(s) = self.sessions.get_mut(&id) else {
            return Err(Rejection::UnknownSession { session: id });
        };
        if health.is_some() {
            s.health = health;
        }
        let decision = lease::decide(s.requested_ttl_us, s.health.as_ref(), s.suspicion.is_some(), &cfg);
        let old_deadline = s.deadline_us;
        // Never shorten a validity already granted: the client may act on it.
        let new_deadline = old_deadline.max(ctx.now_us.saturating_add(decision.validity_us));
        s.deadline_us = new_deadline;
        s.validity_us = decision.validity_us;
        s.lease = decision.clone();
        if new_deadline != old_deadline {
            let removed = self.timers.remove(&(old_deadline, Timer::Session(id)));
            assert!(removed.is_some(), "session {id} had no expiry timer");
            self.timers.insert((new_deadline, Timer::Session(id)));
        }
        if let Some(sample) = clock {
            self.observe_client_clock(id, sample, ctx);
        }
        let Some(s) = self.sessions.get(&id) else {
            return Err(Rejection::UnknownSession { session: id });
        };
        Ok(Reply::KeptAlive {
            validity_us: new_deadline - ctx.now_us,
            lease: decision,
            cluster_ts_us: ctx.now_us,
            client_rho_ppm: self.client_rho_ppm(s),
        })
    }

    pub(crate) fn suspect(
        &mut self,
        id: SessionId,
        score_permille: u32,
        probe_timeout_us: u64,
        ctx: &mut Ctx,
    ) -> Response {
        let Some(s) = self.sessions.get_mut(&id) else {
            return Err(Rejection::UnknownSession { session: id });
        };
        let deadline_us = match &s.suspicion {
            // Suspecting again never postpones the pending probe's deadline.
            Some(p) => p.probe_deadline_us,
            None => {
                let d = ctx.now_us.saturating_add(probe_timeout_us);
                self.timers.insert((d, Timer::Probe(id)));
                d
            }
        };
        if s.suspicion.is_none() {
            self.counts.suspected_sessions += 1;
        }
        s.suspicion = Some(Suspicion {
            score_permille,
            probe_deadline_us: deadline_us,
        });
        ctx.events.push(Event::Probe {
            session: id,
            score_permille,
            deadline_us,
        });
        Ok(Reply::Done)
    }

    pub(crate) fn probe_answer(&mut self, id: SessionId) -> Response {
        let Some(s) = self.sessions.get_mut(&id) else {
            return Err(Rejection::UnknownSession { session: id });
        };
        if let Some(p) = s.suspicion.take() {
            self.timers.remove(&(p.probe_deadline_us, Timer::Probe(id)));
            debug_assert!(self.counts.suspected_sessions > 0);
            self.counts.suspected_sessions = self.counts.suspected_sessions.saturating_sub(1);
        }
        Ok(Reply::Done)
    }

    /// Whether a session is alive at `now_us` (its deadline not reached).
    pub(crate) fn session_alive_at(&self, session: SessionId, now_us: u64) -> bool {
        self.sessions.get(&session).is_some_and(|s| s.deadline_us > now_us)
    }

    /// Ends a session: frees its locks (under lock-delay unless released),
    /// drops its waits and candidacies.
    pub(crate) fn end_session(&mut self, id: SessionId, cause: EndCause, ctx: &mut Ctx) {
        let Some(s) = self.sessions.get(&id) else { return };
        let delay_until = match cause {
            EndCause::Released => None,
            _ => Some(self.lock_delay_until(s)),
        };
        let Some(s) = self.sessions.remove(&id) else { return };
        self.session_by_nonce.remove(&s.nonce);
        self.timers.remove(&(s.deadline_us, Timer::Session(id)));
        if let Some(p) = &s.suspicion {
            self.timers.remove(&(p.probe_deadline_us, Timer::Probe(id)));
            debug_assert!(self.counts.suspected_sessions > 0);
            self.counts.suspected_sessions = self.counts.suspected_sessions.saturating_sub(1);
        }
        if s.client_clock.widened_ppm > 0 {
            debug_assert!(self.counts.skewed_sessions > 0);
            self.counts.skewed_sessions = self.counts.skewed_sessions.saturating_sub(1);
        }
        for name in &s.waiting {
            self.remove_waiter(name, id, ctx);
        }
        for name in &s.held {
            self.free_holder(name, id, cause.clone(), delay_until, ctx);
        }
        for name in &s.campaigns {
            self.withdraw_candidate(name, id, delay_until, ctx);
        }
        ctx.events.push(Event::SessionEnded { session: id, cause });
    }
}

/// Refuses a clock sample that cannot be true whatever the client's clock:
/// a reply received before its request was sent, or a renewing entry later
/// than the entry being applied.
fn check_clock_sample(sample: &ClockSample, now_us: u64) -> Result<(), Rejection> {
    if sample.received_us < sample.sent_us {
        return Err(Rejection::InvalidReport {
            detail: format!(
                "clock sample received at {} µs, before it was sent at {} µs",
                sample.received_us, sample.sent_us
            ),
        });
    }
    if sample.cluster_ts_us > now_us {
        return Err(Rejection::InvalidReport {
            detail: format!(
                "clock sample names cluster time {} µs, after this entry's {now_us} µs",
                sample.cluster_ts_us
            ),
        });
    }
    Ok(())
}
