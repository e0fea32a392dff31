//! The session hub: one event long-poll per [`Client`] for all of its live
//! sessions, instead of one per session (issue 17: ten thousand sessions
//! on one client would be ten thousand long-polls, far above a node's cap
//! on requests in flight per connection).
//!
//! A session joins the hub when it opens and leaves when it expires or is
//! closed. The hub long-polls `observe` with
//! [`EventFilter::sessions`] listing its members, served by any node, and
//! hands each event to the session(s) it names
//! ([`Event::named_sessions`]), which act on it as described in
//! [`events`](super::events). A change of membership re-issues the
//! long-poll, at most once per [`COALESCE`], so that opening many sessions
//! at once does not restart it for each.
//!
//! Where each member's events start: events are numbered by revision and a
//! session's id is the revision that opened it, so no event about session
//! S precedes revision S. Each member has its own position (`after`: every
//! event about it up to there was handed over); a session joins with
//! `after = S - 1`. The hub polls from the smallest position of its
//! members and hands an event to a member only if the event is past that
//! member's position. So a session that joins while the hub's cursor is
//! already past S - 1 gets the events between S - 1 and the cursor from
//! the next poll, and the others do not see them twice. This costs one
//! re-read of a short stretch (a session usually joins a few revisions
//! behind the cursor) and needs no second, catch-up poll.
//!
//! The guarantees of [`events`](super::events) hold: a truncated batch
//! wakes every waiter of every member polled; events only wake, reads
//! confirm. A member whose session the cluster ended (closed, expired,
//! revoked) makes the node refuse the whole poll until the session leaves
//! the hub; it leaves as soon as the library sees the end (the end's own
//! event, a failed keepalive, local expiry, `close`), and the hub retries
//! after a backoff meanwhile.
//!
//! A client with more than [`MAX_OBSERVE_SESSIONS`] live sessions gets
//! one more shard (poll) per that many.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use driftlock_proto::limits::MAX_OBSERVE_SESSIONS;
use driftlock_proto::{EventFilter, SessionId};
use tokio::sync::watch;

use super::SessionInner;
use crate::client::Client;
use crate::sync::lock;

/// Shortest time between two re-issues of the long-poll for membership
/// changes.
const COALESCE: Duration = Duration::from_millis(30);

/// The sessions of one client and their event polls.
#[derive(Default)]
pub(crate) struct Hub {
    shards: Mutex<Vec<Arc<Shard>>>,
}

/// One long-poll and the (at most [`MAX_OBSERVE_SESSIONS`]) sessions it
/// serves.
struct Shard {
    members: Mutex<Members>,
    /// Bumped on every join and leave: the poll is re-issued.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Members {
    /// Members by id, with the position after which their events are
    /// still to be handed over.
    sessions: BTreeMap<SessionId, Member>,
    /// Whether the shard's poll task runs (it stops when the shard has no
    /// member left).
    running: bool,
}

struct Member {
    session: Weak<SessionInner>,
    /// Every event about the session up to this revision was handed over.
    after: u64,
}

impl Hub {
    /// Adds the session to the hub; its events start after revision
    /// `id - 1` (nothing about it precedes the entry that opened it).
    pub(crate) fn join(&self, session: &Arc<SessionInner>) {
        let shard = {
            let mut shards = lock(&self.shards);
            let free = shards
                .iter()
                .find(|s| lock(&s.members).sessions.len() < MAX_OBSERVE_SESSIONS)
                .cloned();
            match free {
                Some(shard) => shard,
                None => {
                    let shard = Arc::new(Shard {
                        members: Mutex::new(Members::default()),
                        changed: watch::channel(0).0,
                    });
                    shards.push(shard.clone());
                    shard
                }
            }
        };
        let start = {
            let mut m = lock(&shard.members);
            m.sessions.insert(
                session.id,
                Member {
                    session: Arc::downgrade(session),
                    after: session.id.saturating_sub(1),
                },
            );
            !std::mem::replace(&mut m.running, true)
        };
        shard.changed.send_modify(|n| *n = n.wrapping_add(1));
        if start {
            tokio::spawn(run(shard, session.client.clone()));
        }
    }

    /// Removes the session from the hub (no-op if it is not a member).
    pub(crate) fn leave(&self, id: SessionId) {
        for shard in lock(&self.shards).iter() {
            if lock(&shard.members).sessions.remove(&id).is_some() {
                shard.changed.send_modify(|n| *n = n.wrapping_add(1));
                return;
            }
        }
    }

    /// How many sessions the hub serves (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.shards).iter().map(|s| lock(&s.members).sessions.len()).sum()
    }
}

/// What one poll asks for.
struct Poll {
    /// The members polled, sorted.
    ids: Vec<SessionId>,
    /// The smallest position among them.
    after: u64,
}

impl Shard {
    /// The next poll, or `None` (and the task marked stopped) when the
    /// shard has no member left.
    fn next_poll(&self) -> Option<Poll> {
        let mut m = lock(&self.members);
        if m.sessions.is_empty() {
            m.running = false;
            return None;
        }
        let ids: Vec<SessionId> = m.sessions.keys().copied().collect();
        let after = m.sessions.values().map(|s| s.after).min().unwrap_or(0);
        Some(Poll { ids, after })
    }

    /// Hands the batch's events to the members they name (each only past
    /// its position) and moves the polled members' positions to
    /// `next_after`. Sessions act outside the lock (an event that ends a
    /// session makes it leave the hub).
    fn dispatch(&self, poll: &Poll, batch: driftlock_proto::EventBatch) {
        let polled = |id: &SessionId| poll.ids.binary_search(id).is_ok();
        let mut deliveries = Vec::new();
        let mut woken = Vec::new();
        {
            let mut m = lock(&self.members);
            if batch.truncated {
                woken.extend(
                    m.sessions
                        .iter()
                        .filter(|(id, _)| polled(id))
                        .filter_map(|(_, s)| s.session.upgrade()),
                );
            }
            for (index, event) in batch.events {
                debug_assert!(
                    index > poll.after || batch.truncated,
                    "event {index} not after {}",
                    poll.after
                );
                let mut named = event.named_sessions().into_iter().flatten().collect::<Vec<_>>();
                named.dedup();
                for id in named {
                    if let Some(member) = m.sessions.get(&id).filter(|s| index > s.after && polled(&id)) {
                        if let Some(session) = member.session.upgrade() {
                            deliveries.push((session, index, event.clone()));
                        }
                    }
                }
            }
            for (id, member) in m.sessions.iter_mut() {
                if polled(id) {
                    member.after = member.after.max(batch.next_after_index);
                }
            }
        }
        for session in woken {
            tracing::debug!(
                session = session.id,
                after = poll.after,
                "event stream truncated; waiters re-read"
            );
            session.wake_all();
        }
        for (session, index, event) in deliveries {
            session.handle_event(index, event);
        }
    }
}

/// Follows the events of the shard's members until it has none left.
async fn run(shard: Arc<Shard>, client: Client) {
    let wait = Duration::from_millis(client.config().observe_wait_ms);
    let mut changed = shard.changed.subscribe();
    let mut failures = 0u32;
    loop {
        changed.borrow_and_update();
        let Some(poll) = shard.next_poll() else {
            return;
        };
        let filter = EventFilter {
            sessions: poll.ids.clone(),
            ..EventFilter::default()
        };
        let outcome = tokio::select! {
            r = client.observe(poll.after, filter, wait) => Some(r),
            _ = changed.changed() => None,
        };
        match outcome {
            // Membership changed: re-issue the poll, after letting more
            // changes gather.
            None => tokio::time::sleep(COALESCE).await,
            Some(Ok(batch)) => {
                failures = 0;
                shard.dispatch(&poll, batch);
            }
            Some(Err(e)) => {
                failures += 1;
                tracing::debug!(sessions = poll.ids.len(), error = %e, "observe failed");
                let pause = client.inner.transport.backoff(failures);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use driftlock_proto::{Event, EventBatch, LockMode};

    use super::*;
    use crate::session::keepalive::Lease;
    use crate::session::ResourceKey;
    use crate::ClientConfig;

    fn session(client: &Client, id: SessionId) -> Arc<SessionInner> {
        SessionInner::new(
            client.clone(),
            id,
            driftlock_proto::SessionSecret([0; 32]),
            Lease::opened(driftlock_sensors::clock::RawInstant::now(), 10_000_000, 0, 0),
        )
    }

    fn granted(name: &str, session: SessionId, token: u64) -> (u64, Event) {
        (
            token,
            Event::LockGranted {
                name: name.into(),
                session,
                mode: LockMode::Exclusive,
                token,
                validity_us: 1_000_000,
            },
        )
    }

    fn shard_with(members: &[&Arc<SessionInner>]) -> Shard {
        let shard = Shard {
            members: Mutex::new(Members::default()),
            changed: watch::channel(0).0,
        };
        for s in members {
            lock(&shard.members).sessions.insert(
                s.id,
                Member {
                    session: Arc::downgrade(s),
                    after: s.id - 1,
                },
            );
        }
        shard
    }

    #[tokio::test]
    async fn a_late_member_gets_the_events_since_its_opening_and_no_one_gets_one_twice() {
        let client = Client::unconnected(
            ClientConfig::new(vec!["127.0.0.1:1".into()]),
            driftlock_proto::Security::Insecure,
        );
        let old = session(&client, 5);
        let shard = shard_with(&[&old]);
        let poll = shard.next_poll().unwrap();
        assert_eq!(poll.after, 4);
        shard.dispatch(
            &poll,
            EventBatch {
                events: vec![granted("a", 5, 8)],
                next_after_index: 20,
                truncated: false,
            },
        );
        // Session 10 joins with the cursor at 20: the next poll goes back
        // to 9 for it.
        let late = session(&client, 10);
        lock(&shard.members).sessions.insert(
            10,
            Member {
                session: Arc::downgrade(&late),
                after: 9,
            },
        );
        let poll = shard.next_poll().unwrap();
        assert_eq!(poll.after, 9);
        assert_eq!(poll.ids, vec![5, 10]);
        let old_a = old.subscribe(ResourceKey::Lock("a".into()));
        let old_b = old.subscribe(ResourceKey::Lock("b".into()));
        let late_c = late.subscribe(ResourceKey::Lock("c".into()));
        let late_d = late.subscribe(ResourceKey::Lock("d".into()));
        shard.dispatch(
            &poll,
            EventBatch {
                // 12 is before the old member's position: already handed
                // over; 14 is the late member's catch-up; 22 is new to both.
                events: vec![
                    granted("a", 5, 12),
                    granted("c", 10, 14),
                    granted("b", 5, 22),
                    granted("d", 10, 22),
                ],
                next_after_index: 22,
                truncated: false,
            },
        );
        assert!(!old_a.rx.has_changed().unwrap(), "an event handed over twice");
        assert!(old_b.rx.has_changed().unwrap());
        assert!(late_c.rx.has_changed().unwrap(), "the late member missed its catch-up");
        assert!(late_d.rx.has_changed().unwrap());
        let m = lock(&shard.members);
        assert!(m.sessions.values().all(|s| s.after == 22));
    }

    #[tokio::test]
    async fn a_truncated_batch_wakes_every_polled_member_and_an_ended_session_leaves() {
        let client = Client::unconnected(
            ClientConfig::new(vec!["127.0.0.1:1".into()]),
            driftlock_proto::Security::Insecure,
        );
        let a = session(&client, 3);
        let b = session(&client, 4);
        let shard = shard_with(&[&a, &b]);
        let poll = shard.next_poll().unwrap();
        let hint_a = a.subscribe(ResourceKey::Lock("x".into()));
        let hint_b = b.subscribe(ResourceKey::Election("e".into()));
        shard.dispatch(
            &poll,
            EventBatch {
                events: Vec::new(),
                next_after_index: 50,
                truncated: true,
            },
        );
        assert!(hint_a.rx.has_changed().unwrap());
        assert!(hint_b.rx.has_changed().unwrap());

        client.inner.hub.join(&a);
        client.inner.hub.join(&b);
        assert_eq!(client.inner.hub.len(), 2);
        a.handle_event(
            60,
            Event::SessionEnded {
                session: 3,
                cause: driftlock_proto::EndCause::Expired,
            },
        );
        assert_eq!(client.inner.hub.len(), 1, "the ended session left the hub");
        b.shutdown("test");
        assert_eq!(client.inner.hub.len(), 0);
    }
}
