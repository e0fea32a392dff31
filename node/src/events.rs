//! The node's buffer of applied events for `observe` long-polls. Every node
//! applies the same entries, so any node can serve observers; a follower's
//! buffer merely lags a little.
//!
//! Events are numbered by the revision of the command that produced them
//! (docs/design.md "Batched proposals"), not by log index: a batch entry
//! holds several commands, and a session id, a fencing token or a KV
//! revision is a revision too, so "no event about session S precedes
//! revision S" holds. The `observe` API's `after_index` and
//! `next_after_index` are these revisions.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use driftlock_proto::limits;
use driftlock_proto::Event;
use driftlock_proto::{EventBatch, EventFilter};
use tokio::sync::watch;

/// An event's encoded size, bytes (0 for one that does not encode: a
/// reply carrying it then fails as a whole, whatever its size).
fn encoded_bytes(event: &Event) -> usize {
    bincode::serialized_size(event).map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Estimated memory one buffered event holds, bytes: its slot in the
/// buffer plus its encoded size, a stand-in for the names and values it
/// owns on the heap.
pub fn event_bytes(event: &Event) -> usize {
    slot_bytes(encoded_bytes(event))
}

fn slot_bytes(encoded_bytes: usize) -> usize {
    std::mem::size_of::<Buffered>().saturating_add(encoded_bytes)
}

/// One buffered event, with its encoded size computed once, when pushed.
struct Buffered {
    revision: u64,
    encoded_bytes: usize,
    event: Event,
}

/// A bounded buffer of `(revision, event)` in apply order.
pub struct EventBuffer {
    inner: Mutex<Inner>,
    /// The newest revision whose events are in the buffer.
    newest_tx: watch::Sender<u64>,
}

struct Inner {
    events: VecDeque<Buffered>,
    capacity: usize,
    /// Bound on `bytes`.
    max_bytes: usize,
    /// Estimated memory of `events` ([`event_bytes`]).
    bytes: usize,
    /// Highest revision whose events were dropped for room (0 = none).
    dropped_through: u64,
}

impl EventBuffer {
    /// An empty buffer keeping at most `capacity` events, whatever their
    /// size.
    pub fn new(capacity: usize) -> Self {
        Self::with_limits(capacity, usize::MAX)
    }

    /// An empty buffer keeping at most `capacity` events and about
    /// `max_bytes` of memory for them ([`event_bytes`]): the oldest go
    /// first when either is exceeded. The newest command's events are kept
    /// even if they alone exceed `max_bytes`.
    pub fn with_limits(capacity: usize, max_bytes: usize) -> Self {
        assert!(capacity > 0, "event buffer capacity must be > 0");
        assert!(max_bytes > 0, "event buffer byte limit must be > 0");
        let (newest_tx, _) = watch::channel(0);
        EventBuffer {
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                capacity,
                max_bytes,
                bytes: 0,
                dropped_through: 0,
            }),
            newest_tx,
        }
    }

    /// Estimated memory the buffer's events hold now, bytes.
    pub fn bytes(&self) -> usize {
        self.inner.lock().map_or(0, |inner| inner.bytes)
    }

    /// An empty buffer for a node whose state was restored from a snapshot
    /// covering the commands up to revision `restored_through` (0: no
    /// snapshot). Their
    /// events were never published in this process, so an observer asking
    /// from before it is told it missed events, as after
    /// [`mark_gap`](Self::mark_gap).
    pub fn restored(capacity: usize, max_bytes: usize, restored_through: u64) -> Self {
        let buffer = EventBuffer::with_limits(capacity, max_bytes);
        buffer.mark_gap(restored_through);
        buffer
    }

    /// Records the events of the command at `revision` (commands arrive in
    /// revision order).
    pub fn push(&self, revision: u64, events: Vec<Event>) {
        self.push_tagged(events.into_iter().map(|e| (revision, e)).collect());
    }

    /// Records events each tagged with its command's revision, as an
    /// applied entry publishes them (revisions never decrease).
    pub fn push_tagged(&self, events: Vec<(u64, Event)>) {
        let Some(&(newest_revision, _)) = events.last() else {
            return;
        };
        if let Ok(mut inner) = self.inner.lock() {
            for (revision, event) in events {
                debug_assert!(inner.events.back().is_none_or(|b| b.revision <= revision));
                let encoded_bytes = encoded_bytes(&event);
                inner.bytes = inner.bytes.saturating_add(slot_bytes(encoded_bytes));
                inner.events.push_back(Buffered {
                    revision,
                    encoded_bytes,
                    event,
                });
            }
            while inner.events.len() > inner.capacity
                || (inner.bytes > inner.max_bytes && inner.events.front().is_some_and(|b| b.revision < newest_revision))
            {
                let Some(dropped) = inner.events.pop_front() else { break };
                inner.bytes = inner.bytes.saturating_sub(slot_bytes(dropped.encoded_bytes));
                inner.dropped_through = inner.dropped_through.max(dropped.revision);
            }
        }
        self.newest_tx.send_if_modified(|newest| {
            let changed = newest_revision > *newest;
            *newest = (*newest).max(newest_revision);
            changed
        });
    }

    /// Records that events up to revision `through_index` were not (or not
    /// all) seen by this buffer, e.g. after a snapshot was installed:
    /// observers asking from before it are told they missed events.
    pub fn mark_gap(&self, through_index: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.dropped_through = inner.dropped_through.max(through_index);
        }
        self.newest_tx.send_if_modified(|newest| {
            let changed = through_index > *newest;
            *newest = (*newest).max(through_index);
            changed
        });
    }

    /// Matching events after `after_index`, at once.
    pub fn fetch(&self, after_index: u64, filter: &EventFilter) -> EventBatch {
        let Ok(inner) = self.inner.lock() else {
            return EventBatch {
                events: Vec::new(),
                next_after_index: after_index,
                truncated: true,
            };
        };
        let mut truncated = after_index < inner.dropped_through;
        let start = inner.events.partition_point(|b| b.revision <= after_index);
        let mut events = Vec::new();
        let mut bytes = 0usize;
        // The newest revision all of whose events were considered.
        let mut done_through = after_index;
        let mut full = false;
        let mut rest = inner.events.range(start..).peekable();
        while let Some(index) = rest.peek().map(|b| b.revision) {
            // The matching events of one command (one revision): a reply
            // never splits a command's events. A command whose events
            // alone pass the byte budget keeps what fits and reports the
            // rest as dropped (`truncated`), so no reply outgrows a frame.
            let mut group = Vec::new();
            let mut group_bytes = 0usize;
            while let Some(b) = rest.next_if(|b| b.revision == index) {
                if !filter.matches(&b.event) {
                    continue;
                }
                if group_bytes + b.encoded_bytes > limits::MAX_BATCH_BYTES {
                    truncated = true;
                    continue;
                }
                group_bytes += b.encoded_bytes;
                group.push((b.revision, b.event.clone()));
            }
            let too_many = events.len() + group.len() > limits::MAX_BATCH_EVENTS;
            if !events.is_empty() && (too_many || bytes + group_bytes > limits::MAX_BATCH_BYTES) {
                full = true;
                break;
            }
            bytes += group_bytes;
            events.extend(group);
            done_through = index;
        }
        let next_after_index = if full {
            done_through
        } else {
            after_index.max(*self.newest_tx.borrow())
        };
        EventBatch {
            events,
            next_after_index,
            truncated,
        }
    }

    /// Like [`fetch`](Self::fetch), but waits up to `timeout` for new
    /// entries when there is nothing after `after_index` yet.
    pub async fn wait(&self, after_index: u64, filter: &EventFilter, timeout: Duration) -> EventBatch {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.newest_tx.subscribe();
        let mut seen = after_index;
        loop {
            let batch = self.fetch(seen, filter);
            if !batch.events.is_empty() || batch.truncated {
                return EventBatch {
                    truncated: batch.truncated,
                    ..batch
                };
            }
            seen = batch.next_after_index.max(seen);
            match tokio::time::timeout_at(deadline, rx.wait_for(|newest| *newest > seen)).await {
                Ok(Ok(_)) => continue,
                _ => {
                    return EventBatch {
                        events: Vec::new(),
                        next_after_index: seen,
                        truncated: false,
                    }
                }
            }
        }
    }

    /// The newest revision seen.
    pub fn newest_index(&self) -> u64 {
        *self.newest_tx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, revision: u64) -> Event {
        Event::KvChanged {
            key: key.into(),
            revision,
        }
    }

    #[test]
    fn fetch_filters_and_reports_truncation() {
        let buf = EventBuffer::new(3);
        buf.push(1, vec![kv("a/1", 1)]);
        buf.push(2, vec![kv("b/1", 2)]);
        buf.push(3, vec![kv("a/2", 3), kv("a/3", 3)]);
        let all = buf.fetch(0, &EventFilter::default());
        assert!(all.truncated, "entry 1 was dropped for room");
        assert_eq!(all.events.len(), 3);
        let a = buf.fetch(
            2,
            &EventFilter {
                key_prefix: Some("a/".into()),
                ..Default::default()
            },
        );
        assert!(!a.truncated);
        assert_eq!(a.events.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![3, 3]);
        assert_eq!(a.next_after_index, 3);
    }

    #[test]
    fn the_byte_limit_drops_the_oldest_events_but_never_the_newest_command() {
        let one = event_bytes(&kv("k/0000", 1));
        let buf = EventBuffer::with_limits(1_000, 3 * one);
        for r in 1..=5 {
            buf.push(r, vec![kv(&format!("k/{r:04}"), r)]);
        }
        assert!(buf.bytes() <= 3 * one, "{} bytes held, limit {}", buf.bytes(), 3 * one);
        let all = buf.fetch(0, &EventFilter::default());
        assert!(all.truncated, "the oldest were dropped for room");
        assert_eq!(all.events.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![3, 4, 5]);
        // One command whose events alone pass the limit keeps them all.
        buf.push(6, (0..10).map(|i| kv(&format!("k/6{i:03}"), 6)).collect());
        let newest = buf.fetch(5, &EventFilter::default());
        assert_eq!(newest.events.len(), 10);
        assert!(buf
            .fetch(0, &EventFilter::default())
            .events
            .iter()
            .all(|(r, _)| *r == 6));
    }

    fn master(election: &str, value_bytes: usize) -> Event {
        Event::MasterChanged {
            election: election.into(),
            master: Some(1),
            epoch: 1,
            value: vec![0; value_bytes],
        }
    }

    fn encoded_bytes(batch: &EventBatch) -> usize {
        bincode::serialized_size(batch).unwrap() as usize
    }

    #[test]
    fn batches_stop_at_the_byte_budget_on_entry_boundaries() {
        let buf = EventBuffer::new(1_000);
        let value = limits::MAX_BATCH_BYTES / 10;
        for index in 1..=30 {
            buf.push(index, vec![master("e", value)]);
        }
        let mut after = 0;
        let mut seen = Vec::new();
        while after < 30 {
            let batch = buf.fetch(after, &EventFilter::default());
            assert!(!batch.truncated);
            assert!(!batch.events.is_empty());
            assert!(encoded_bytes(&batch) <= limits::MAX_BATCH_BYTES + limits::MESSAGE_OVERHEAD_BYTES);
            assert_eq!(batch.next_after_index, batch.events.last().unwrap().0);
            seen.extend(batch.events.iter().map(|(i, _)| *i));
            after = batch.next_after_index;
        }
        assert_eq!(seen, (1..=30).collect::<Vec<_>>());
    }

    #[test]
    fn an_entry_whose_events_pass_the_budget_alone_keeps_what_fits_and_says_so() {
        let buf = EventBuffer::new(1_000);
        let value = limits::MAX_BATCH_BYTES / 3;
        buf.push(1, (0..5).map(|i| master(&format!("e{i}"), value)).collect());
        buf.push(2, vec![kv("after", 2)]);
        let batch = buf.fetch(0, &EventFilter::default());
        assert!(batch.truncated, "the dropped events must be reported");
        assert!(encoded_bytes(&batch) <= limits::MAX_BATCH_BYTES + limits::MESSAGE_OVERHEAD_BYTES);
        assert_eq!(batch.events.len(), 3, "what fits of entry 1, then entry 2 still fits");
        assert_eq!(batch.events.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 1, 2]);
    }

    #[test]
    fn many_small_events_of_one_entry_are_never_split() {
        let buf = EventBuffer::new(10_000);
        buf.push(1, vec![kv("a", 1)]);
        buf.push(2, (0..limits::MAX_BATCH_EVENTS + 10).map(|_| kv("b", 2)).collect());
        let first = buf.fetch(0, &EventFilter::default());
        assert_eq!(first.events.len(), 1, "entry 2 does not fit beside entry 1");
        assert_eq!(first.next_after_index, 1);
        let second = buf.fetch(1, &EventFilter::default());
        assert!(!second.truncated);
        assert_eq!(second.events.len(), limits::MAX_BATCH_EVENTS + 10);
    }

    #[test]
    fn a_restored_buffer_reports_the_entries_of_the_snapshot_as_missed() {
        let buf = EventBuffer::restored(100, usize::MAX, 40);
        buf.push(41, vec![kv("a", 41)]);
        let behind = buf.fetch(12, &EventFilter::default());
        assert!(behind.truncated, "entries 13..=40 were restored, never published");
        assert_eq!(behind.events, vec![(41, kv("a", 41))]);
        let caught_up = buf.fetch(40, &EventFilter::default());
        assert!(!caught_up.truncated);
        assert_eq!(caught_up.events.len(), 1);
        assert!(
            !EventBuffer::restored(100, usize::MAX, 0)
                .fetch(0, &EventFilter::default())
                .truncated
        );
    }

    #[tokio::test]
    async fn wait_returns_when_a_matching_event_arrives() {
        let buf = std::sync::Arc::new(EventBuffer::new(100));
        let b2 = buf.clone();
        let waiter = tokio::spawn(async move {
            b2.wait(
                0,
                &EventFilter {
                    key_prefix: Some("x".into()),
                    ..Default::default()
                },
                Duration::from_secs(30),
            )
            .await
        });
        buf.push(1, vec![kv("y", 1)]);
        buf.push(2, vec![kv("x", 2)]);
        let batch = waiter.await.expect("join");
        assert_eq!(batch.events, vec![(2, kv("x", 2))]);
    }

    #[tokio::test]
    async fn wait_times_out_empty() {
        let buf = EventBuffer::new(10);
        let batch = buf.wait(0, &EventFilter::default(), Duration::from_millis(20)).await;
        assert!(batch.events.is_empty());
        assert_eq!(batch.next_after_index, 0);
    }
}
