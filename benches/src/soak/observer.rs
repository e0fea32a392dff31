//! The soak run's observer: one `Client::observe` long-poll with no filter,
//! from the cluster's first entry to the end of the run, following
//! `next_after_index`. It counts `ClockSkewDetected`, `Probe` and
//! `NodeClockAlert` events, hands every `SessionEnded` to the
//! [`Registry`], and on a truncated batch (a gap: events it will never see)
//! records the gap and asks for a read of every owned session, so that a
//! loss inside the gap is still found.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use driftlock_client::proto::{Consistency, Event, EventFilter, Query, QueryResult, SessionId};
use driftlock_client::Client;
use futures::StreamExt;
use tokio::sync::{watch, Notify};

use super::record::{ObserveGap, SkewEvent};
use super::sessions::Registry;
use super::RunClock;

/// How long one observe long-poll waits on the node.
const OBSERVE_WAIT: Duration = Duration::from_secs(5);
/// Pause after a failed observe call.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Session reads in flight at once during a cross-check.
const READS_IN_FLIGHT: usize = 16;

#[derive(Default)]
struct Seen {
    /// Skew events by (log index, session): a batch served again by a node
    /// that is behind must not count one twice.
    skew: BTreeMap<(u64, SessionId), SkewEvent>,
    /// Probe events by (log index, session).
    probes: BTreeMap<(u64, SessionId), u32>,
    /// Node clock alerts by (log index, node): drift ppb.
    node_alerts: BTreeMap<(u64, u64), i64>,
    /// Truncated batches.
    gaps: Vec<ObserveGap>,
    /// Batches whose `next_after_index` was behind the position (a node
    /// behind the one that served before); the position is kept.
    regressions: u64,
    /// The last failure of an observe call.
    last_error: Option<String>,
}

/// What the observer has seen; shared with the run.
pub struct Observer {
    seen: Mutex<Seen>,
    /// The observer's position: the `after_index` of its next call.
    position: AtomicU64,
    /// Failed observe calls.
    errors: AtomicU64,
    /// Session reads done by cross-checks.
    reads: AtomicU64,
    /// Signalled at each gap, for the cross-check task.
    gap: Notify,
}

impl Observer {
    /// An observer that has seen nothing yet.
    pub fn new() -> Arc<Observer> {
        Arc::new(Observer {
            seen: Mutex::new(Seen::default()),
            position: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            gap: Notify::new(),
        })
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index up to which every event has been handled.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Relaxed)
    }

    /// Skew events so far, in log order.
    pub fn skew_events(&self) -> Vec<SkewEvent> {
        self.seen().skew.values().cloned().collect()
    }

    /// Skew events so far.
    pub fn skew_count(&self) -> u64 {
        self.seen().skew.len() as u64
    }

    /// Probe events so far.
    pub fn probe_count(&self) -> u64 {
        self.seen().probes.len() as u64
    }

    /// Probe events so far by session.
    pub fn probes_by_session(&self) -> BTreeMap<SessionId, u64> {
        let mut by = BTreeMap::new();
        for (_, session) in self.seen().probes.keys() {
            *by.entry(*session).or_insert(0) += 1;
        }
        by
    }

    /// Node clock alerts so far.
    pub fn node_alert_count(&self) -> u64 {
        self.seen().node_alerts.len() as u64
    }

    /// Gaps so far.
    pub fn gaps(&self) -> Vec<ObserveGap> {
        self.seen().gaps.clone()
    }

    /// Failed observe calls so far.
    pub fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The last failure of an observe call, if any.
    pub fn last_error(&self) -> Option<String> {
        self.seen().last_error.clone()
    }

    /// Batches that went backwards.
    pub fn regressions(&self) -> u64 {
        self.seen().regressions
    }

    /// Session reads done so far.
    pub fn read_count(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn handle(&self, registry: &Registry, clock: &RunClock, index: u64, event: Event) {
        match event {
            Event::SessionEnded { session, cause } => registry.cluster_ended(session, &cause, index),
            Event::ClockSkewDetected {
                session,
                slow_ppm,
                client_rho_ppm,
                alert,
            } => {
                let owned = registry.is_owned(session);
                tracing::warn!(
                    session,
                    index,
                    slow_ppm,
                    client_rho_ppm,
                    alert,
                    "soak: clock skew event"
                );
                self.seen().skew.entry((index, session)).or_insert(SkewEvent {
                    index,
                    seen_at_s: clock.now_s(),
                    session,
                    owned,
                    slow_ppm,
                    client_rho_ppm,
                    alert,
                });
            }
            Event::Probe {
                session,
                score_permille,
                ..
            } => {
                tracing::info!(session, index, score_permille, "soak: probe event");
                self.seen().probes.insert((index, session), score_permille);
            }
            Event::NodeClockAlert { node, drift_ppb, .. } => {
                tracing::warn!(node, index, drift_ppb, "soak: node clock alert");
                self.seen().node_alerts.insert((index, node), drift_ppb);
            }
            _ => {}
        }
    }
}

/// Follows every event from the cluster's first entry until `stop` turns
/// true.
pub async fn run(
    client: Client,
    registry: Arc<Registry>,
    observer: Arc<Observer>,
    clock: RunClock,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let after = observer.position();
        let batch = tokio::select! {
            r = client.observe(after, EventFilter::default(), OBSERVE_WAIT) => r,
            _ = stop.changed() => return,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                observer.errors.fetch_add(1, Ordering::Relaxed);
                observer.seen().last_error = Some(format!("{:.1} s: {e}", clock.now_s()));
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        if batch.truncated {
            tracing::warn!(after, next = batch.next_after_index, "soak: gap in the event stream");
            observer.seen().gaps.push(ObserveGap {
                at_s: clock.now_s(),
                after_index: after,
                next_after_index: batch.next_after_index,
            });
            observer.gap.notify_one();
        }
        for (index, event) in batch.events {
            observer.handle(&registry, &clock, index, event);
        }
        if batch.next_after_index < after {
            observer.seen().regressions += 1;
        } else {
            observer.position.store(batch.next_after_index, Ordering::Relaxed);
        }
    }
}

/// Reads every live owned session (linearizable); records a loss for each
/// the cluster no longer has. A read that fails proves nothing and is
/// skipped. Returns the number of reads that answered.
pub async fn cross_check(client: &Client, registry: &Registry, observer: &Observer) -> u64 {
    let ids = registry.live_ids();
    let reads = futures::stream::iter(ids)
        .map(|id| async move {
            let r = client
                .read(Query::Session { session: id }, Consistency::Linearizable)
                .await;
            (id, r)
        })
        .buffer_unordered(READS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let mut answered = 0;
    for (id, r) in reads {
        match r {
            Ok(reply) => {
                answered += 1;
                if matches!(reply.result, QueryResult::Session(None)) {
                    registry.read_absent(id);
                }
            }
            Err(e) => tracing::info!(session = id, error = %e, "soak: session read failed"),
        }
    }
    observer.reads.fetch_add(answered, Ordering::Relaxed);
    answered
}

/// Cross-checks every owned session after each gap the observer reports,
/// until `stop` turns true.
pub async fn check_gaps(
    client: Client,
    registry: Arc<Registry>,
    observer: Arc<Observer>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = observer.gap.notified() => {
                cross_check(&client, &registry, &observer).await;
            }
            _ = stop.changed() => return,
        }
    }
}
