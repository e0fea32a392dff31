//! What a session does with the events about it, and the wake-ups it
//! gives to waiters.
//!
//! The client's session hub ([`hub`](super::hub)) long-polls `observe` for
//! all of the client's sessions at once and hands each session the events
//! that name it, each once and in revision order, starting right after
//! the revision that opened it (no event about a session precedes it). A
//! session answers renewal probes on its own (`ProbeAnswer`, see
//! [`probe`](crate::probe)), marks itself expired when the cluster reports
//! its end, starts its side of a warm handover (see
//! [`handover`](crate::handover)), and wakes waiting acquires and
//! campaigns through their [`Hint`]s.
//!
//! Events only *wake* waiters; a waiter then confirms with a linearizable
//! read (and reads every `poll_interval_ms` anyway), so a missed, stale or
//! truncated event stream can delay a grant's discovery but never forge
//! one. A truncated batch (the node's event buffer no longer holds
//! everything after the hub's position) therefore wakes every waiter, so
//! that each re-reads.

use std::sync::Arc;

use driftlock_proto::Event;
use tokio::sync::watch;

use super::{ResourceKey, SessionInner};
use crate::election::LeadershipLoss;
use crate::sync::lock;

/// A subscription to wake-ups about one resource, taken by a waiting
/// acquire or campaign before it sends the request whose outcome the
/// events announce. Dropping the last subscription to a resource removes
/// its channel.
pub(crate) struct Hint {
    session: Arc<SessionInner>,
    key: ResourceKey,
    pub(super) rx: watch::Receiver<u64>,
}

impl Hint {
    /// Resolves at the next wake-up (at once if one came since the last).
    pub(crate) async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // No sender: no wake-ups will come; the caller's poll remains.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Hint {
    fn drop(&mut self) {
        let mut hints = lock(&self.session.hints);
        if hints.get(&self.key).is_some_and(|tx| tx.receiver_count() <= 1) {
            hints.remove(&self.key);
        }
    }
}

impl SessionInner {
    /// A wake-up channel for events about `key`; subscribe before sending
    /// the request whose outcome the events announce.
    pub(crate) fn subscribe(self: &Arc<Self>, key: ResourceKey) -> Hint {
        let rx = lock(&self.hints)
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Hint {
            session: self.clone(),
            key,
            rx,
        }
    }

    /// Wakes the waiters on `key`, if any.
    fn wake(&self, key: &ResourceKey) {
        if let Some(tx) = lock(&self.hints).get(key) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes every waiter of the session (its end, or a gap in the events).
    pub(super) fn wake_all(&self) {
        for tx in lock(&self.hints).values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Acts on one event of the command at revision `index`.
    pub(super) fn handle_event(self: &Arc<Self>, index: u64, event: Event) {
        let me = self.id;
        match event {
            Event::SessionEnded { session, cause } if session == me => {
                tracing::info!(session, index, ?cause, "the cluster ended the session");
                self.expire("ended by the cluster");
                self.wake_all();
            }
            Event::Probe {
                session,
                deadline_us,
                score_permille,
            } if session == me => crate::probe::answer(self.clone(), session, index, score_permille, deadline_us),
            Event::LockGranted { name, session, .. }
            | Event::LockReleased { name, session, .. }
            | Event::WaitTimedOut { name, session }
                if session == me =>
            {
                self.wake(&ResourceKey::Lock(name));
            }
            Event::HandoverBegun {
                election,
                from,
                to,
                epoch,
            } => {
                if from == me {
                    tokio::spawn(crate::handover::hand_over(
                        self.clone(),
                        election.clone(),
                        epoch,
                        to,
                        index,
                    ));
                } else if to == me {
                    tokio::spawn(crate::handover::receive_state(
                        self.clone(),
                        election.clone(),
                        epoch,
                        index,
                    ));
                }
                self.wake(&ResourceKey::Election(election));
            }
            Event::LeaseTransferred {
                election,
                from,
                to,
                epoch,
            } if from == me => {
                // This session's own relinquish committed; its mastership
                // ended before that was sent (a later one, won by a new
                // campaign, has a larger epoch and stays).
                self.end_mastership(&election, |e| e < epoch, LeadershipLoss::HandedOver { to });
                tracing::info!(session = me, %election, to, epoch, "mastership handed over; this session left the election");
                self.wake(&ResourceKey::Election(election));
            }
            Event::MasterChanged { election, .. } | Event::LeaseTransferred { election, .. } => {
                // The filter passes these only when they concern this session.
                self.wake(&ResourceKey::Election(election));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {

    use driftlock_proto::{EndCause, LockMode};

    use super::*;
    use crate::session::keepalive::Lease;
    use crate::session::SessionState;
    use crate::{Client, ClientConfig};

    const ME: u64 = 7;

    /// A session that was never opened: no task runs and nothing is sent.
    fn detached_session() -> Arc<SessionInner> {
        let client = Client::unconnected(
            ClientConfig::new(vec!["127.0.0.1:1".into()]),
            driftlock_proto::Security::Insecure,
        );
        SessionInner::new(
            client,
            ME,
            driftlock_proto::SessionSecret([0; 32]),
            Lease::opened(driftlock_sensors::clock::RawInstant::now(), 10_000_000, 0, 0),
        )
    }

    fn lock_key(name: &str) -> ResourceKey {
        ResourceKey::Lock(name.into())
    }

    fn woken(hint: &Hint) -> bool {
        hint.rx.has_changed().unwrap()
    }

    #[tokio::test]
    async fn a_wake_reaches_the_waiters_of_its_resource_only() {
        let s = detached_session();
        let mut a = s.subscribe(lock_key("a"));
        let b = s.subscribe(lock_key("b"));
        let election_a = s.subscribe(ResourceKey::Election("a".into()));
        s.wake(&lock_key("a"));
        assert!(woken(&a));
        assert!(!woken(&b));
        assert!(!woken(&election_a));
        // The wake-up came before the wait: it is not lost.
        a.changed().await;
        assert!(!woken(&a));
    }

    #[test]
    fn the_last_subscription_to_go_removes_the_channel() {
        let s = detached_session();
        let first = s.subscribe(lock_key("a"));
        let second = s.subscribe(lock_key("a"));
        drop(first);
        s.wake(&lock_key("a"));
        assert!(woken(&second), "a remaining waiter is still woken");
        drop(second);
        assert!(lock(&s.hints).is_empty());
    }

    #[test]
    fn events_about_this_session_wake_its_waiters_and_others_do_not() {
        let s = detached_session();
        let mine = s.subscribe(lock_key("a"));
        let election = s.subscribe(ResourceKey::Election("e".into()));
        s.handle_event(
            10,
            Event::LockGranted {
                name: "a".into(),
                session: ME + 1,
                mode: LockMode::Exclusive,
                token: 10,
                validity_us: 1_000_000,
            },
        );
        assert!(!woken(&mine), "another session's grant");
        s.handle_event(
            11,
            Event::WaitTimedOut {
                name: "a".into(),
                session: ME,
            },
        );
        assert!(woken(&mine));
        assert!(!woken(&election));
        s.handle_event(
            12,
            Event::MasterChanged {
                election: "e".into(),
                master: Some(ME),
                epoch: 12,
                value: Vec::new(),
            },
        );
        assert!(woken(&election));
        assert_eq!(s.state(), SessionState::Valid);
    }

    fn leadership(s: &Arc<SessionInner>, election: &str, epoch: u64) -> crate::Leadership {
        let m = s.begin_mastership(election, epoch);
        crate::Leadership::new(election.into(), s.clone(), m, None)
    }

    #[tokio::test]
    async fn the_relinquish_entry_ends_only_the_mastership_it_handed_over() {
        let s = detached_session();
        let old = leadership(&s, "e", 5);
        assert!(old.is_master());
        let lost = tokio::spawn(old.lost());
        s.handle_event(
            9,
            Event::LeaseTransferred {
                election: "e".into(),
                from: ME,
                to: ME + 1,
                epoch: 9,
            },
        );
        assert_eq!(lost.await.unwrap(), LeadershipLoss::HandedOver { to: ME + 1 });
        assert!(!old.is_master());
        assert!(old.lost_at().is_some());
        // A mastership won again later is not ended by a late copy of the
        // event that ended the earlier one.
        let again = leadership(&s, "e", 12);
        s.handle_event(
            9,
            Event::LeaseTransferred {
                election: "e".into(),
                from: ME,
                to: ME + 1,
                epoch: 9,
            },
        );
        assert!(again.is_master());
        assert_eq!(s.mastership_epoch("e"), Some(12));
    }

    #[tokio::test]
    async fn a_mastership_ends_once_and_the_first_reason_stays() {
        let s = detached_session();
        let l = leadership(&s, "e", 5);
        assert!(s.end_mastership("e", |_| true, LeadershipLoss::Resigned));
        assert!(!s.end_mastership("e", |_| true, LeadershipLoss::SessionEnded));
        assert_eq!(l.loss(), Some(LeadershipLoss::Resigned));
        assert_eq!(l.lost().await, LeadershipLoss::Resigned);
        assert_eq!(s.mastership_epoch("e"), None);
    }

    #[tokio::test]
    async fn the_sessions_end_ends_its_masterships() {
        let s = detached_session();
        let a = leadership(&s, "a", 5);
        let b = leadership(&s, "b", 6);
        s.handle_event(
            21,
            Event::SessionEnded {
                session: ME,
                cause: EndCause::Revoked { reason: "test".into() },
            },
        );
        assert_eq!(a.lost().await, LeadershipLoss::SessionEnded);
        assert_eq!(b.loss(), Some(LeadershipLoss::SessionEnded));
        assert!(!b.is_master());
    }

    #[tokio::test]
    async fn a_mastership_ends_with_the_local_validity_even_before_the_session_is_marked() {
        let client = Client::unconnected(
            ClientConfig::new(vec!["127.0.0.1:1".into()]),
            driftlock_proto::Security::Insecure,
        );
        // Local validity of 20 ms (no margin, no drift), never renewed.
        let s = SessionInner::new(
            client,
            ME,
            driftlock_proto::SessionSecret([0; 32]),
            Lease::opened(driftlock_sensors::clock::RawInstant::now(), 20_000, 0, 0),
        );
        let l = leadership(&s, "e", 5);
        assert_eq!(l.lost().await, LeadershipLoss::ValidityEnded);
        assert_eq!(s.state(), SessionState::Valid, "no task marked the session");
        assert!(l.lost_at().expect("lost") <= std::time::Instant::now());
    }

    #[test]
    fn the_sessions_end_expires_it_and_wakes_every_waiter() {
        let s = detached_session();
        let lock_a = s.subscribe(lock_key("a"));
        let election = s.subscribe(ResourceKey::Election("e".into()));
        s.handle_event(
            20,
            Event::SessionEnded {
                session: ME + 1,
                cause: EndCause::Expired,
            },
        );
        assert_eq!(s.state(), SessionState::Valid, "another session's end");
        assert!(!woken(&lock_a));
        s.handle_event(
            21,
            Event::SessionEnded {
                session: ME,
                cause: EndCause::Expired,
            },
        );
        assert_eq!(s.state(), SessionState::Expired);
        assert!(woken(&lock_a));
        assert!(woken(&election));
    }
}
