//! The sessions a soak run owns and the losses among them.
//!
//! A session is *lost* when it ends without the run closing it. Three
//! independent views can notice, and each is recorded as a source of the
//! loss: the observer's `SessionEnded` event with cause `Expired` or
//! `Revoked` (`event`), the client library turning the session `Expired`
//! or `is_valid()` going false (`library`), and a linearizable session read
//! finding it absent (`read`, done every minute and after every gap in the
//! event stream). Every owned session has a monitor task that records its
//! state changes, so a loss comes with the session's last moves between
//! `Valid`, `Jeopardy` and `Expired` and the local validity it had left at
//! each.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use driftlock_client::proto::{EndCause, SessionId};
use driftlock_client::{Session, SessionState};

use super::record::LostSession;
use super::RunClock;

/// State changes kept per session (the most recent ones).
const STATE_CHANGES_KEPT: usize = 16;

/// Where a loss was noticed (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The observer's `SessionEnded` event.
    Event,
    /// The client library's `Expired` state or `is_valid()`.
    Library,
    /// A session read found the session absent.
    Read,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Event => "event",
            Source::Library => "library",
            Source::Read => "read",
        }
    }
}

struct Owned {
    /// `idle <k>` or `worker <i>`.
    role: String,
    /// When it was opened, seconds since the run started.
    opened_at_s: f64,
    /// The run is closing it: its end is not a loss.
    closing: bool,
    /// A handle, for validity sweeps and the final close.
    session: Session,
    /// Its recent state changes: seconds, state, local validity left (ms).
    changes: VecDeque<(f64, String, i64)>,
    /// The loss, once noticed.
    loss: Option<LostSession>,
}

#[derive(Default)]
struct Inner {
    owned: HashMap<SessionId, Owned>,
    /// `SessionEnded` events of sessions not registered (yet): an end seen
    /// before the open returned is applied at registration.
    early_ends: HashMap<SessionId, (f64, u64, String, bool)>,
    /// Sessions registered so far.
    opened: u64,
}

/// The run's sessions.
pub struct Registry {
    inner: Mutex<Inner>,
    clock: RunClock,
    jeopardy: AtomicU64,
}

/// The library's state as a word.
fn state_name(s: SessionState) -> &'static str {
    match s {
        SessionState::Valid => "Valid",
        SessionState::Jeopardy => "Jeopardy",
        SessionState::Expired => "Expired",
    }
}

/// Local validity left at `now`, ms; negative once over.
fn left_ms(session: &Session, now: Instant) -> i64 {
    let until = session.valid_until();
    if until >= now {
        i64::try_from(until.duration_since(now).as_millis()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from(now.duration_since(until).as_millis()).unwrap_or(i64::MAX)
    }
}

/// How an event's cause reads in a loss record. Every cause is a loss for
/// a session the run is not closing, even a `Released` end the run did not
/// ask for.
fn cause_text(cause: &EndCause) -> String {
    match cause {
        EndCause::Released => "Released (not by the run)".into(),
        EndCause::Expired => "Expired".into(),
        EndCause::Revoked { reason } => format!("Revoked: {reason}"),
    }
}

impl Registry {
    /// An empty registry timing its records with `clock`.
    pub fn new(clock: RunClock) -> Arc<Registry> {
        Arc::new(Registry {
            inner: Mutex::new(Inner::default()),
            clock,
            jeopardy: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session the run just opened and starts its monitor.
    pub fn register(self: &Arc<Self>, session: Session, role: String) {
        let id = session.id();
        let now = self.clock.now_s();
        let early = {
            let mut inner = self.lock();
            inner.opened += 1;
            inner.owned.insert(
                id,
                Owned {
                    role,
                    opened_at_s: now,
                    closing: false,
                    session: session.clone(),
                    changes: VecDeque::new(),
                    loss: None,
                },
            );
            inner.early_ends.remove(&id)
        };
        if let Some((at_s, index, cause, _)) = early {
            self.record_loss_at(id, Source::Event, Some(cause), Some(index), at_s);
        }
        tokio::spawn(monitor(self.clone(), session));
    }

    /// The role of `id` (`idle <k>`, `worker <i>`), if it is the run's.
    pub fn role(&self, id: SessionId) -> Option<String> {
        self.lock().owned.get(&id).map(|o| o.role.clone())
    }

    /// Whether `id` is one of the run's sessions.
    pub fn is_owned(&self, id: SessionId) -> bool {
        self.lock().owned.contains_key(&id)
    }

    /// The observer saw `SessionEnded` for `id` at log index `index`.
    pub fn cluster_ended(&self, id: SessionId, cause: &EndCause, index: u64) {
        let now = self.clock.now_s();
        {
            let mut inner = self.lock();
            match inner.owned.get(&id) {
                Some(o) if o.closing => return,
                Some(_) => {}
                None => {
                    let by_client = *cause == EndCause::Released;
                    inner.early_ends.insert(id, (now, index, cause_text(cause), by_client));
                    return;
                }
            }
        }
        self.record_loss_at(id, Source::Event, Some(cause_text(cause)), Some(index), now);
    }

    /// The library says `id` is over (or its validity is).
    pub fn library_lost(&self, id: SessionId) {
        self.record_loss_at(id, Source::Library, None, None, self.clock.now_s());
    }

    /// A session read found `id` absent from the cluster's state.
    pub fn read_absent(&self, id: SessionId) {
        self.record_loss_at(
            id,
            Source::Read,
            Some("absent from the cluster's state".into()),
            None,
            self.clock.now_s(),
        );
    }

    fn record_loss_at(&self, id: SessionId, source: Source, cause: Option<String>, index: Option<u64>, at_s: f64) {
        let utc = self.clock.utc(at_s);
        let mut inner = self.lock();
        let Some(o) = inner.owned.get_mut(&id) else { return };
        if o.closing {
            return;
        }
        let changes: Vec<(f64, String, i64)> = o.changes.iter().cloned().collect();
        let loss = o.loss.get_or_insert_with(|| {
            tracing::warn!(session = id, source = source.name(), ?cause, "soak: session lost");
            LostSession {
                session: id,
                role: o.role.clone(),
                opened_at_s: o.opened_at_s,
                detected_at_s: at_s,
                detected_utc: utc,
                sources: Vec::new(),
                cause: None,
                event_index: None,
                state_changes: Vec::new(),
            }
        });
        if !loss.sources.iter().any(|s| s == source.name()) {
            loss.sources.push(source.name().into());
        }
        // The cluster's own word on the cause wins over a read's finding.
        match cause {
            Some(c) if source == Source::Event || loss.cause.is_none() => loss.cause = Some(c),
            _ => {}
        }
        if loss.event_index.is_none() {
            loss.event_index = index;
        }
        loss.state_changes = changes;
    }

    /// Records a state change of `id` (from its monitor).
    fn state_change(&self, id: SessionId, state: SessionState, left_ms: i64) {
        if state == SessionState::Jeopardy {
            self.jeopardy.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.clock.now_s();
        let mut inner = self.lock();
        if let Some(o) = inner.owned.get_mut(&id) {
            if o.changes.len() == STATE_CHANGES_KEPT {
                o.changes.pop_front();
            }
            o.changes.push_back((now, state_name(state).into(), left_ms));
            if let Some(loss) = &mut o.loss {
                loss.state_changes = o.changes.iter().cloned().collect();
            }
        }
    }

    /// Moves of owned sessions into `Jeopardy` so far.
    pub fn jeopardy_total(&self) -> u64 {
        self.jeopardy.load(Ordering::Relaxed)
    }

    /// Sessions registered so far.
    pub fn opened(&self) -> u64 {
        self.lock().opened
    }

    /// Sessions lost so far.
    pub fn lost_count(&self) -> u64 {
        self.lock().owned.values().filter(|o| o.loss.is_some()).count() as u64
    }

    /// Sessions neither lost nor being closed: those a read should find.
    pub fn live_ids(&self) -> Vec<SessionId> {
        let inner = self.lock();
        let mut ids: Vec<SessionId> = inner
            .owned
            .iter()
            .filter(|(_, o)| !o.closing && o.loss.is_none())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Records a library loss for every live session whose `is_valid()` is
    /// false now.
    pub fn sweep_validity(&self) {
        let invalid: Vec<SessionId> = {
            let inner = self.lock();
            inner
                .owned
                .iter()
                .filter(|(_, o)| !o.closing && o.loss.is_none() && !o.session.is_valid())
                .map(|(id, _)| *id)
                .collect()
        };
        for id in invalid {
            self.library_lost(id);
        }
    }

    /// Marks every session as being closed by the run and returns their
    /// handles, to close.
    pub fn close_all(&self) -> Vec<Session> {
        let mut inner = self.lock();
        inner
            .owned
            .values_mut()
            .map(|o| {
                o.closing = true;
                o.session.clone()
            })
            .collect()
    }

    /// Every loss, in the order noticed.
    pub fn losses(&self) -> Vec<LostSession> {
        let inner = self.lock();
        let mut v: Vec<LostSession> = inner.owned.values().filter_map(|o| o.loss.clone()).collect();
        v.sort_by(|a, b| a.detected_at_s.total_cmp(&b.detected_at_s));
        v
    }

    /// How many losses each source noticed.
    pub fn lost_by_source(&self) -> BTreeMap<String, u64> {
        let mut by = BTreeMap::new();
        for l in self.losses() {
            for s in l.sources {
                *by.entry(s).or_insert(0) += 1;
            }
        }
        by
    }

    /// Sessions the run never registered that ended other than by a clean
    /// close, with the cause: not counted as losses, but reported.
    pub fn foreign_ends(&self) -> Vec<(SessionId, String)> {
        let inner = self.lock();
        let mut v: Vec<(SessionId, String)> = inner
            .early_ends
            .iter()
            .filter(|(_, (_, _, _, by_client))| !by_client)
            .map(|(id, (_, _, cause, _))| (*id, cause.clone()))
            .collect();
        v.sort_unstable();
        v
    }
}

/// Follows one session's state until it is `Expired`: records every
/// change, and a library loss if the run was not closing it.
async fn monitor(registry: Arc<Registry>, session: Session) {
    let id = session.id();
    let mut rx = session.watch_state();
    if *rx.borrow_and_update() == SessionState::Expired {
        registry.state_change(id, SessionState::Expired, left_ms(&session, Instant::now()));
        registry.library_lost(id);
        return;
    }
    while rx.changed().await.is_ok() {
        let state = *rx.borrow_and_update();
        registry.state_change(id, state, left_ms(&session, Instant::now()));
        if state == SessionState::Expired {
            registry.library_lost(id);
            return;
        }
    }
}
