//! Sessions: local validity (docs/design.md "Time", rule 5), keepalives, the
//! Chubby-style states, the per-session event loop, and the deduplicated
//! session operations that locks, fenced KV writes and elections use.
//!
//! # Background tasks
//!
//! Each session runs two tasks until it is expired, closed or dropped:
//!
//! - **Keepalive.** A keepalive is sent `V/3` after the send time of the
//!   last successful one (`V` = the validity it granted). The send instant
//!   is taken before the request leaves, and the reply's validity counts
//!   from it: `local_expiry = t_send + V × (1 − ρ) − ε`, never moved
//!   backwards. A failed keepalive puts the session in
//!   [`SessionState::Jeopardy`] and is retried every `keepalive_retry_ms`
//!   until one succeeds (back to `Valid`) or local validity ends
//!   ([`SessionState::Expired`]). Each keepalive attempt carries a fresh
//!   sequence number and its own send instant: keepalives are idempotent in
//!   effect, and a fresh send instant lets the new validity count from the
//!   latest attempt rather than from the first one of a long outage.
//! - **Events.** A long-poll of `observe` filtered on this session, served
//!   by any node. The session id is the log index of the entry that opened
//!   it, so no event about the session can precede it: the loop starts right
//!   before that index and needs no deduplication. It answers renewal
//!   probes on its own (`ProbeAnswer`), marks the session expired when the
//!   cluster reports its end, and wakes waiting acquires and campaigns.
//!   Events only *wake* waiters; a waiter then confirms with a linearizable
//!   read (and reads every `poll_interval_ms` anyway), so a missed, stale or
//!   truncated event stream can delay a grant's discovery but never forge
//!   one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftlock_proto::{Event, Fence, LockMode, Rejection, Reply, SessionId, SessionOp};
use tokio::sync::{watch, OwnedMutexGuard};
use tokio::task::JoinHandle;

use crate::client::{revision_of, unexpected, Client};
use crate::clock::{client_clock_us, local_expiry};
use crate::election::Election;
use crate::error::{ClientError, Result};
use crate::handover::StateProvider;
use crate::lock::{LockGuard, LockOptions};
use crate::transport::{lock, CallSpec, Delivery, Route};
use driftlock_proto::{Consistency, EventFilter, Query, QueryResult};

/// Shortest keepalive interval, whatever the granted validity.
const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(10);
/// Shortest per-attempt deadline of a keepalive.
const MIN_KEEPALIVE_ATTEMPT: Duration = Duration::from_millis(200);

/// A session's state as the application sees it (Chubby's model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// The last keepalive succeeded and local validity is not over.
    Valid,
    /// The last keepalive failed; local validity is not over yet. Locks are
    /// still held, but new critical work should wait.
    Jeopardy,
    /// Local validity is over, the cluster ended the session, or it was
    /// closed. Terminal: every lock taken in it must be treated as lost.
    Expired,
}

/// A session: a lease on the cluster that locks and candidacies hang off.
/// Cheap to clone; the session lives until [`close`](Self::close) or until
/// the last clone is dropped (then its background tasks stop and a
/// best-effort close is sent).
///
/// ```no_run
/// # async fn demo(client: driftlock_client::Client) -> Result<(), driftlock_client::ClientError> {
/// use std::time::Duration;
///
/// let session = client.open_session(Duration::from_secs(10)).await?;
/// let guard = session.lock("reports/daily").await?;
/// tokio::select! {
///     _ = async { /* critical work, fenced with guard.fencing_token() */ } => {}
///     _ = session.lost() => eprintln!("session expired: stop working on the lock"),
/// }
/// guard.release().await?;
/// session.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    handle: Arc<SessionHandle>,
}

/// The owner of a session's background tasks: its drop ends them.
struct SessionHandle {
    inner: Arc<SessionInner>,
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let was_live = self.inner.state() != SessionState::Expired;
        self.inner.shutdown("session handle dropped");
        if was_live {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let inner = self.inner.clone();
                rt.spawn(async move {
                    let _ = inner.op(SessionOp::Close, true).await;
                });
            }
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id())
            .field("state", &self.state())
            .finish()
    }
}

/// Key of a per-resource wake-up channel and of the per-resource operation
/// lock.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ResourceKey {
    Lock(String),
    Election(String),
}

/// The session's lease as this host measures it.
struct Lease {
    /// End of local validity (rule 5).
    local_expiry: Instant,
    /// Validity granted by the last successful open/keepalive, µs.
    validity_us: u64,
    /// Send instant of that open/keepalive.
    last_send: Instant,
}

/// Shared state of a session, also held by its guards and elections.
pub(crate) struct SessionInner {
    pub(crate) client: Client,
    pub(crate) id: SessionId,
    next_seq: AtomicU64,
    state_tx: watch::Sender<SessionState>,
    lease: Mutex<Lease>,
    /// Wake-up channels of waiting acquires and campaigns.
    hints: Mutex<HashMap<ResourceKey, watch::Sender<u64>>>,
    /// Serializes this session's operations on one lock or election, so a
    /// cleanup release sent in the background cannot overtake a later
    /// acquire of the same name (and release it).
    resource_locks: Mutex<HashMap<ResourceKey, Arc<tokio::sync::Mutex<()>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// State providers for warm handover, by election.
    pub(crate) handover_providers: Mutex<HashMap<String, StateProvider>>,
    /// State received and acknowledged in a handover, by election, with the
    /// epoch of the master that handed it over.
    pub(crate) handover_received: Mutex<HashMap<String, (u64, Vec<u8>)>>,
}

impl Session {
    pub(crate) async fn open(client: Client, ttl: Duration) -> Result<Session> {
        let ttl_us = u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX);
        if ttl_us == 0 {
            return Err(ClientError::InvalidRequest("session TTL must be > 0".into()));
        }
        let config = client.config().clone();
        // One nonce for every attempt: a retried open finds the session the
        // first attempt may have opened.
        let nonce: u128 = rand::random();
        let name = config.client_name.clone();
        let t_send = Instant::now();
        let spec = client.spec("open_session", Route::Leader, Delivery::Idempotent);
        let reply = client
            .inner
            .transport
            .call(spec, |api, ctx| {
                let name = name.clone();
                async move { api.open_session(ctx, nonce, name, ttl_us).await }
            })
            .await?;
        let Reply::SessionOpened {
            session, validity_us, ..
        } = reply
        else {
            return Err(ClientError::UnexpectedReply(format!("{reply:?} to open_session")));
        };
        let expiry = local_expiry(t_send, validity_us, config.default_drift_ppm, config.local_margin_us);
        let (state_tx, _) = watch::channel(SessionState::Valid);
        let inner = Arc::new(SessionInner {
            client,
            id: session,
            next_seq: AtomicU64::new(1),
            state_tx,
            lease: Mutex::new(Lease {
                local_expiry: expiry,
                validity_us,
                last_send: t_send,
            }),
            hints: Mutex::new(HashMap::new()),
            resource_locks: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            handover_providers: Mutex::new(HashMap::new()),
            handover_received: Mutex::new(HashMap::new()),
        });
        let handle = Arc::new(SessionHandle { inner: inner.clone() });
        if Instant::now() >= expiry {
            // Granted, but the answer took longer than the validity: the
            // handle's drop closes it.
            return Err(ClientError::SessionExpired);
        }
        tracing::debug!(session, validity_us, "session opened");
        let keepalive = tokio::spawn(keepalive_loop(inner.clone()));
        let events = tokio::spawn(event_loop(inner.clone()));
        lock(&inner.tasks).extend([keepalive, events]);
        Ok(Session { handle })
    }

    pub(crate) fn inner(&self) -> &Arc<SessionInner> {
        &self.handle.inner
    }

    /// The session id (the log index of the entry that opened it).
    pub fn id(&self) -> SessionId {
        self.inner().id
    }

    /// The client this session belongs to.
    pub fn client(&self) -> &Client {
        &self.inner().client
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.inner().state()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<SessionState> {
        self.inner().state_tx.subscribe()
    }

    /// End of local validity on this host's monotonic clock. Moves forward
    /// with each successful keepalive; never backwards.
    pub fn valid_until(&self) -> Instant {
        self.inner().valid_until()
    }

    /// Whether the session is not expired and its local validity not over.
    pub fn is_valid(&self) -> bool {
        self.inner().is_valid()
    }

    /// Resolves when the session is [`SessionState::Expired`] (at once if it
    /// already is). Owns what it needs, so it can be moved into a task.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.inner().lost()
    }

    /// Ends the session: its locks are released at once (no lock-delay) and
    /// its candidacies withdrawn. Stops the background tasks and puts the
    /// session in [`SessionState::Expired`] whatever the outcome. Closing a
    /// session the cluster has already ended is not an error.
    pub async fn close(&self) -> Result<()> {
        let result = self.inner().op(SessionOp::Close, true).await;
        self.inner().shutdown("closed");
        match result {
            Ok(_) | Err(ClientError::SessionExpired) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Takes an exclusive lock, waiting up to 60 s (see
    /// [`lock_with`](Self::lock_with)).
    pub async fn lock(&self, name: &str) -> Result<LockGuard> {
        self.lock_with(name, LockOptions::default()).await
    }

    /// Takes a lock in the given mode, waiting in the cluster's FIFO queue
    /// up to `opts.wait`.
    ///
    /// # Errors
    /// [`ClientError::WaitTimedOut`] when the wait ends without a grant;
    /// [`ClientError::SessionExpired`] the moment the session expires while
    /// waiting; `Rejected(LockBusy)` for a zero wait on a busy lock;
    /// `Rejected(AlreadyHeld)` if this session holds or awaits it already.
    /// When an acquire fails after it may have reached the cluster (or its
    /// future is dropped), a release is sent in the background so that the
    /// session does not hold or queue for a lock nobody knows about.
    ///
    /// ```no_run
    /// # async fn demo(session: driftlock_client::Session) -> Result<(), driftlock_client::ClientError> {
    /// use std::time::Duration;
    /// use driftlock_client::{LockMode, LockOptions};
    ///
    /// let opts = LockOptions { mode: LockMode::Shared, wait: Duration::from_secs(5) };
    /// let guard = session.lock_with("catalog", opts).await?;
    /// println!("reading catalog under token {}", guard.fencing_token());
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock_with(&self, name: &str, opts: LockOptions) -> Result<LockGuard> {
        match self.inner().acquire(name, opts).await? {
            Some(guard) => Ok(guard),
            // Only a zero wait answers "busy" without an error.
            None => Err(ClientError::Rejected(Rejection::LockBusy {
                lock_delay_until_us: None,
            })),
        }
    }

    /// Takes an exclusive lock only if it is free now: `Ok(None)` if it is
    /// held (or in lock-delay).
    ///
    /// ```no_run
    /// # async fn demo(session: driftlock_client::Session) -> Result<(), driftlock_client::ClientError> {
    /// match session.try_lock("compaction").await? {
    ///     Some(guard) => {
    ///         // ... compact ...
    ///         guard.release().await?;
    ///     }
    ///     None => println!("someone else is compacting"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_lock(&self, name: &str) -> Result<Option<LockGuard>> {
        self.try_lock_with(name, LockMode::Exclusive).await
    }

    /// [`try_lock`](Self::try_lock) in the given mode.
    pub async fn try_lock_with(&self, name: &str, mode: LockMode) -> Result<Option<LockGuard>> {
        let opts = LockOptions {
            mode,
            wait: Duration::ZERO,
        };
        self.inner().acquire(name, opts).await
    }

    /// Puts a key, accepted only while `fence` (usually `&guard`) is the
    /// newest grant of its lock and still held; returns the new revision.
    /// Deduplicated: retries never write twice.
    ///
    /// ```no_run
    /// # async fn demo(session: driftlock_client::Session) -> Result<(), driftlock_client::ClientError> {
    /// let guard = session.lock("ledger").await?;
    /// let revision = session.kv_put_fenced("ledger/balance", b"42".to_vec(), &guard).await?;
    /// println!("written at revision {revision} under token {}", guard.fencing_token());
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn kv_put_fenced(&self, key: &str, value: Vec<u8>, fence: impl Into<Fence>) -> Result<u64> {
        let op = SessionOp::KvPut {
            key: key.to_owned(),
            value,
            fence: Some(fence.into()),
        };
        revision_of(self.inner().op(op, false).await?)
    }

    /// Fenced compare-and-set on the key's modification revision (0: the
    /// key must not exist); returns the new revision.
    pub async fn kv_cas_fenced(
        &self,
        key: &str,
        expected_revision: u64,
        value: Vec<u8>,
        fence: impl Into<Fence>,
    ) -> Result<u64> {
        let op = SessionOp::KvCas {
            key: key.to_owned(),
            expected_revision,
            value,
            fence: Some(fence.into()),
        };
        revision_of(self.inner().op(op, false).await?)
    }

    /// Fenced delete; returns the revision of the delete.
    pub async fn kv_delete_fenced(&self, key: &str, fence: impl Into<Fence>) -> Result<u64> {
        let op = SessionOp::KvDelete {
            key: key.to_owned(),
            fence: Some(fence.into()),
        };
        revision_of(self.inner().op(op, false).await?)
    }

    /// Unfenced put inside the session: unlike [`Client::kv_put`] it is
    /// deduplicated, so it is retried safely and applied exactly once.
    pub async fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        let op = SessionOp::KvPut {
            key: key.to_owned(),
            value,
            fence: None,
        };
        revision_of(self.inner().op(op, false).await?)
    }

    /// A handle on an election, to campaign in it as this session.
    ///
    /// ```no_run
    /// # async fn demo(session: driftlock_client::Session) -> Result<(), driftlock_client::ClientError> {
    /// let election = session.election("scheduler");
    /// let leadership = election.campaign(b"node-a:8080".to_vec()).await?;
    /// println!("master at epoch {}", leadership.epoch());
    /// session.lost().await; // act as master until the session is lost
    /// # Ok(()) }
    /// ```
    pub fn election(&self, name: &str) -> Election {
        Election::new(self.inner().clone(), name.to_owned())
    }
}

impl SessionInner {
    pub(crate) fn state(&self) -> SessionState {
        *self.state_tx.borrow()
    }

    pub(crate) fn valid_until(&self) -> Instant {
        lock(&self.lease).local_expiry
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.state() != SessionState::Expired && Instant::now() < self.valid_until()
    }

    pub(crate) fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.state_tx.subscribe();
        async move {
            // An error means the session is gone altogether: lost as well.
            let _ = rx.wait_for(|s| *s == SessionState::Expired).await;
        }
    }

    /// Moves to `state`; `Expired` is terminal.
    fn set_state(&self, state: SessionState) {
        let changed = self.state_tx.send_if_modified(|cur| {
            if *cur == SessionState::Expired || *cur == state {
                return false;
            }
            *cur = state;
            true
        });
        if changed {
            tracing::debug!(session = self.id, ?state, "session state");
        }
    }

    pub(crate) fn expire(&self, why: &str) {
        if self.state() != SessionState::Expired {
            tracing::info!(session = self.id, why, "session expired");
        }
        self.set_state(SessionState::Expired);
    }

    /// Expires the session and stops its background tasks.
    fn shutdown(&self, why: &str) {
        self.expire(why);
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    /// `Err(SessionExpired)` if the session can no longer be used.
    pub(crate) fn check_usable(&self) -> Result<()> {
        if self.state() == SessionState::Expired {
            Err(ClientError::SessionExpired)
        } else {
            Ok(())
        }
    }

    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::SeqCst)
    }

    /// Runs one session operation with a fresh sequence number, retried with
    /// that number until the retry budget is spent. `cleanup` operations
    /// (release, resign, close) are sent even when the session is locally
    /// expired: the cluster may still hold what they free.
    pub(crate) async fn op(&self, op: SessionOp, cleanup: bool) -> Result<Reply> {
        if !cleanup {
            self.check_usable()?;
        }
        let spec = self.client.spec("session_op", Route::Leader, Delivery::Idempotent);
        self.op_with(self.next_seq(), op, spec).await
    }

    async fn op_with(&self, seq: u64, op: SessionOp, spec: CallSpec) -> Result<Reply> {
        debug_assert!(seq >= 1, "sequence numbers start at 1");
        let id = self.id;
        let result = self
            .client
            .inner
            .transport
            .call(spec, |api, ctx| {
                let op = op.clone();
                async move { api.session_op(ctx, id, seq, op).await }
            })
            .await;
        match result {
            Err(ClientError::Rejected(Rejection::UnknownSession { session })) if session == id => {
                self.expire("the cluster does not know the session");
                Err(ClientError::SessionExpired)
            }
            Err(ClientError::Rejected(Rejection::StaleSequence { seq, forgotten_through })) => {
                Err(ClientError::Indeterminate(format!(
                    "sequence {seq} fell out of the dedupe window (through {forgotten_through}): too many operations in flight"
                )))
            }
            other => other,
        }
    }

    /// The lock serializing this session's operations on one resource.
    pub(crate) fn resource_lock(&self, key: &ResourceKey) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.resource_locks).entry(key.clone()).or_default().clone()
    }

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

    fn wake(&self, key: &ResourceKey) {
        if let Some(tx) = lock(&self.hints).get(key) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn wake_all(&self) {
        for tx in lock(&self.hints).values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Takes a lock (see [`Session::lock_with`]); `Ok(None)` only for a
    /// zero wait on a busy lock.
    pub(crate) async fn acquire(self: &Arc<Self>, name: &str, opts: LockOptions) -> Result<Option<LockGuard>> {
        self.check_usable()?;
        let wait_us = u64::try_from(opts.wait.as_micros()).unwrap_or(u64::MAX);
        if wait_us > driftlock_proto::limits::MAX_WAIT_US {
            return Err(ClientError::InvalidRequest("lock wait above one hour".into()));
        }
        let key = ResourceKey::Lock(name.to_owned());
        let permit = self.resource_lock(&key).lock_owned().await;
        let mut hint = self.subscribe(key);
        let undo = Undo::new(
            self.clone(),
            SessionOp::Release {
                name: name.to_owned(),
                client_clock_us: None,
            },
            permit,
        );
        let t_send = Instant::now();
        let op = SessionOp::Acquire {
            name: name.to_owned(),
            mode: opts.mode,
            wait_us,
            client_clock_us: Some(client_clock_us()),
        };
        let reply = tokio::select! {
            r = self.op(op, false) => r,
            () = self.lost() => Err(ClientError::SessionExpired),
        };
        let token = match reply {
            Ok(Reply::Granted { token, .. }) => token,
            Ok(Reply::Queued { .. }) => {
                let c = self.client.config();
                let grace = Duration::from_millis(2 * c.poll_interval_ms + c.request_timeout_ms);
                let give_up = t_send + opts.wait + grace;
                let waited = tokio::select! {
                    r = self.await_grant(name, &mut hint) => r,
                    () = self.lost() => Err(ClientError::SessionExpired),
                    () = tokio::time::sleep_until(give_up.into()) => Err(ClientError::WaitTimedOut { name: name.to_owned() }),
                };
                match waited {
                    Ok(Some(token)) => token,
                    Ok(None) => {
                        // The cluster already dropped the wait: nothing to undo.
                        undo.disarm();
                        return Err(if self.state() == SessionState::Expired {
                            ClientError::SessionExpired
                        } else {
                            ClientError::WaitTimedOut { name: name.to_owned() }
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(other) => return Err(ClientError::UnexpectedReply(format!("{other:?} to an acquire"))),
            Err(ClientError::Rejected(Rejection::LockBusy { .. })) if wait_us == 0 => {
                undo.disarm();
                return Ok(None);
            }
            Err(e @ (ClientError::Rejected(_) | ClientError::InvalidRequest(_))) => {
                // Refused: nothing changed on the cluster.
                undo.disarm();
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        // The grant is only handed out while the session is usable; the
        // undo releases it otherwise.
        self.check_usable()?;
        undo.disarm();
        Ok(Some(LockGuard::new(self.clone(), name.to_owned(), opts.mode, token)))
    }

    /// Waits for a queued acquire's outcome: `Some(token)` once the session
    /// holds the lock, `None` once it neither holds nor awaits it.
    async fn await_grant(&self, name: &str, hint: &mut Hint) -> Result<Option<u64>> {
        let poll = Duration::from_millis(self.client.config().poll_interval_ms);
        loop {
            tokio::select! {
                () = hint.changed() => {}
                () = tokio::time::sleep(poll) => {}
            }
            match self.lock_status(name).await {
                Ok(LockStatus::Holder(token)) => return Ok(Some(token)),
                Ok(LockStatus::Neither) => return Ok(None),
                Ok(LockStatus::Waiting) => {}
                Err(e) => tracing::debug!(session = self.id, lock = name, error = %e, "lock poll failed"),
            }
        }
    }

    /// This session's standing on a lock, by linearizable read.
    async fn lock_status(&self, name: &str) -> Result<LockStatus> {
        let reply = self
            .client
            .read(Query::Lock { name: name.to_owned() }, Consistency::Linearizable)
            .await?;
        let view = match reply.result {
            QueryResult::Lock(v) => v,
            other => return Err(unexpected("Lock", &other)),
        };
        let Some(view) = view else {
            return Ok(LockStatus::Neither);
        };
        if let Some(h) = view.holders.iter().find(|h| h.session == self.id) {
            return Ok(LockStatus::Holder(h.token));
        }
        if view.waiters.iter().any(|(s, _)| *s == self.id) {
            return Ok(LockStatus::Waiting);
        }
        Ok(LockStatus::Neither)
    }

    /// Applies the outcome of one keepalive or open sent at `t_send`.
    fn renewed(&self, t_send: Instant, validity_us: u64, rho_ppm: u64) {
        let c = self.client.config();
        let expiry = local_expiry(t_send, validity_us, rho_ppm, c.local_margin_us);
        let mut lease = lock(&self.lease);
        if expiry > lease.local_expiry {
            lease.local_expiry = expiry;
        }
        if t_send >= lease.last_send {
            lease.last_send = t_send;
            lease.validity_us = validity_us;
        }
        drop(lease);
        self.set_state(SessionState::Valid);
    }

    fn handle_event(self: &Arc<Self>, index: u64, event: Event) {
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
                    tokio::spawn(crate::handover::send_state(self.clone(), election.clone(), epoch));
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
            Event::LeaseTransferred { election, from, .. } if from == me => {
                tracing::info!(session = me, %election, "mastership handed over; this session is now passive");
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

/// A session's standing on one lock.
enum LockStatus {
    Holder(u64),
    Waiting,
    Neither,
}

/// A subscription to wake-ups about one resource.
pub(crate) struct Hint {
    session: Arc<SessionInner>,
    key: ResourceKey,
    rx: watch::Receiver<u64>,
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

/// An operation to send in the background unless disarmed: undoes an
/// acquire or campaign whose outcome the caller will not learn (failure,
/// expiry, cancellation). Holds the resource's operation lock until the
/// undo is done, so a later operation on the same resource waits for it.
pub(crate) struct Undo {
    session: Arc<SessionInner>,
    op: Option<SessionOp>,
    permit: Option<OwnedMutexGuard<()>>,
}

impl Undo {
    pub(crate) fn new(session: Arc<SessionInner>, op: SessionOp, permit: OwnedMutexGuard<()>) -> Self {
        Undo {
            session,
            op: Some(op),
            permit: Some(permit),
        }
    }

    /// The operation is not needed.
    pub(crate) fn disarm(mut self) {
        self.op = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let permit = self.permit.take();
        let Some(op) = self.op.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let session = self.session.clone();
                rt.spawn(async move {
                    let _permit = permit;
                    if let Err(e) = session.op(op, true).await {
                        tracing::debug!(session = session.id, error = %e, "background undo failed");
                    }
                });
            }
            Err(_) => tracing::warn!(session = self.session.id, "no runtime to undo an abandoned operation"),
        }
    }
}

/// Keeps the session alive until it expires or is shut down.
async fn keepalive_loop(inner: Arc<SessionInner>) {
    let mut state_rx = inner.state_tx.subscribe();
    let c = inner.client.config().clone();
    let retry_pause = Duration::from_millis(c.keepalive_retry_ms.clamp(c.backoff_min_ms, c.backoff_max_ms));
    let request_timeout = Duration::from_millis(c.request_timeout_ms);
    let mut retry_at: Option<Instant> = None;
    let health_every = (c.health_report_interval_ms > 0).then(|| Duration::from_millis(c.health_report_interval_ms));
    let mut last_health: Option<Instant> = None;
    loop {
        let (expiry, next_at, validity_us) = {
            let l = lock(&inner.lease);
            let interval = (Duration::from_micros(l.validity_us) / 3).max(MIN_KEEPALIVE_INTERVAL);
            (
                l.local_expiry,
                retry_at.unwrap_or(l.last_send + interval),
                l.validity_us,
            )
        };
        tokio::select! {
            () = tokio::time::sleep_until(next_at.min(expiry).into()) => {}
            _ = state_rx.wait_for(|s| *s == SessionState::Expired) => return,
        }
        let now = Instant::now();
        if now >= expiry {
            inner.expire("local validity ended");
            return;
        }
        if now < next_at {
            continue;
        }
        // A fresh sequence number and send instant per attempt (see the
        // module documentation).
        let t_send = Instant::now();
        let attempt_timeout = (Duration::from_micros(validity_us) / 3).clamp(MIN_KEEPALIVE_ATTEMPT, request_timeout);
        let spec = CallSpec {
            what: "keepalive",
            route: Route::Leader,
            delivery: Delivery::Idempotent,
            deadline: (t_send + attempt_timeout).min(expiry),
            attempt_timeout,
        };
        // A health sample rides along at most every `health_report_interval_ms`.
        let health = match health_every {
            Some(every) if last_health.is_none_or(|t| t_send.saturating_duration_since(t) >= every) => {
                last_health = Some(t_send);
                Some(lock(&inner.client.inner.health).sample(t_send))
            }
            _ => None,
        };
        let op = SessionOp::Keepalive { health };
        let result = tokio::select! {
            r = inner.op_with(inner.next_seq(), op, spec) => r,
            () = tokio::time::sleep_until(expiry.into()) => {
                inner.expire("local validity ended during a keepalive");
                return;
            }
            _ = state_rx.wait_for(|s| *s == SessionState::Expired) => return,
        };
        match result {
            Ok(Reply::KeptAlive {
                validity_us,
                client_rho_ppm,
                cluster_ts_us,
                ..
            }) => {
                let t_recv = Instant::now();
                let rho_ppm = {
                    let mut rate = lock(&inner.client.inner.rate);
                    rate.observe(t_send, t_recv, cluster_ts_us);
                    rate.rho_ppm(client_rho_ppm)
                };
                inner.renewed(t_send, validity_us, rho_ppm);
                let rtt_us = u64::try_from(t_recv.saturating_duration_since(t_send).as_micros()).unwrap_or(u64::MAX);
                lock(&inner.client.inner.health).record_rtt_us(rtt_us);
                retry_at = None;
            }
            Err(ClientError::SessionExpired) => return,
            other => {
                let why = match other {
                    Ok(reply) => format!("unexpected reply {reply:?}"),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(session = inner.id, error = %why, "keepalive failed");
                lock(&inner.client.inner.health).record_failure(Instant::now());
                inner.set_state(SessionState::Jeopardy);
                retry_at = Some(Instant::now() + retry_pause);
            }
        }
    }
}

/// Follows the session's events until it expires or is shut down.
async fn event_loop(inner: Arc<SessionInner>) {
    let mut state_rx = inner.state_tx.subscribe();
    let wait = Duration::from_millis(inner.client.config().observe_wait_ms);
    let filter = EventFilter {
        session: Some(inner.id),
        ..EventFilter::default()
    };
    // Nothing about the session precedes the entry that opened it.
    let mut after = inner.id.saturating_sub(1);
    let mut failures = 0u32;
    loop {
        let batch = tokio::select! {
            r = inner.client.observe(after, filter.clone(), wait) => r,
            _ = state_rx.wait_for(|s| *s == SessionState::Expired) => return,
        };
        match batch {
            Ok(batch) => {
                failures = 0;
                if batch.truncated {
                    tracing::debug!(session = inner.id, after, "event stream truncated; waiters re-read");
                    inner.wake_all();
                }
                for (index, event) in batch.events {
                    debug_assert!(index > after || batch.truncated, "event {index} not after {after}");
                    inner.handle_event(index, event);
                }
                after = after.max(batch.next_after_index);
            }
            Err(e) => {
                failures += 1;
                tracing::debug!(session = inner.id, error = %e, "observe failed");
                let pause = inner.client.inner.transport.backoff(failures);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = state_rx.wait_for(|s| *s == SessionState::Expired) => return,
                }
            }
        }
    }
}
