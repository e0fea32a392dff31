//! The timer index and its firing: every deadline the state machine keeps
//! (session expiry, probe deadlines, waiter timeouts, lock-delay ends,
//! election succession delays, handover deadlines) is one
//! `(deadline_us, Timer)` entry of [`crate::StateMachine`]'s ordered set.
//!
//! Before each command, [`crate::StateMachine::apply`] fires every entry
//! whose deadline is at or before the entry's effective cluster time, in
//! `(deadline, timer)` order, so replicas fire the same timers in the same
//! order and nothing ever scans all sessions or locks. Whoever sets a
//! deadline on a record inserts its timer and whoever clears it removes the
//! timer, so each firing finds its record in the state the timer describes.

use driftlock_proto::{EndCause, SessionId};
use serde::{Deserialize, Serialize};

use crate::apply::Ctx;
use crate::StateMachine;

/// A pending deadline. Ordered, so the timer index pops in a deterministic
/// order when deadlines tie. Part of the snapshot encoding: variants are
/// never reordered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Timer {
    /// A session's validity ends.
    Session(SessionId),
    /// A suspected session's probe deadline.
    Probe(SessionId),
    /// A waiter gives up.
    Waiter(String, SessionId),
    /// A lock's lock-delay ends.
    LockDelay(String),
    /// An election's succession delay ends.
    ElectionDelay(String),
    /// A handover's deadline: by then the candidate must have acknowledged
    /// and the master relinquished, or the handover is aborted.
    Handover(String),
}

impl StateMachine {
    /// Pops every timer due at `ctx.now_us`, in deadline order.
    pub(crate) fn run_timers(&mut self, ctx: &mut Ctx) {
        while let Some((deadline, _)) = self.timers.get_min() {
            if *deadline > ctx.now_us {
                break;
            }
            let Some((deadline, timer)) = self.timers.remove_min() else {
                break;
            };
            debug_assert!(deadline <= ctx.now_us);
            match timer {
                Timer::Session(id) => {
                    debug_assert_eq!(self.sessions.get(&id).map(|s| s.deadline_us), Some(deadline));
                    self.end_session(id, EndCause::Expired, ctx);
                }
                Timer::Probe(id) => {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        debug_assert_eq!(s.suspicion.as_ref().map(|p| p.probe_deadline_us), Some(deadline));
                        if s.suspicion.take().is_some() {
                            self.counts.suspected_sessions = self.counts.suspected_sessions.saturating_sub(1);
                        }
                    }
                    self.end_session(
                        id,
                        EndCause::Revoked {
                            reason: "no answer to renewal probe".into(),
                        },
                        ctx,
                    );
                }
                Timer::Waiter(name, id) => self.waiter_timed_out(&name, id, ctx),
                Timer::LockDelay(name) => {
                    if let Some(lock) = self.locks.get_mut(name.as_str()) {
                        // Only the timer of the delay in force ends it; a
                        // stale one (never left behind since snapshot
                        // format 2, but possible in older state) must not.
                        debug_assert_eq!(lock.lock_delay_until_us, deadline, "stale lock-delay timer");
                        if lock.lock_delay_until_us > deadline {
                            continue;
                        }
                        lock.lock_delay_until_us = 0;
                    }
                    self.pump_lock(&name, ctx);
                }
                Timer::ElectionDelay(name) => {
                    if let Some(e) = self.elections.get_mut(&name) {
                        debug_assert_eq!(e.delay_until_us, deadline, "stale succession-delay timer");
                        if e.delay_until_us > deadline {
                            continue;
                        }
                        e.delay_until_us = 0;
                    }
                    self.succeed(&name, ctx);
                }
                Timer::Handover(name) => {
                    let handover = self.elections.get(&name).and_then(|e| e.handover.as_ref());
                    debug_assert_eq!(handover.map(|h| h.deadline_us), Some(deadline));
                    // An acknowledged handover waits for the old master to
                    // relinquish; without that it keeps its mastership.
                    let reason = if handover.is_some_and(|h| h.acked) {
                        "master did not relinquish in time"
                    } else {
                        "candidate did not acknowledge in time"
                    };
                    self.abort_handover(&name, reason.into(), ctx);
                }
            }
        }
    }
}
