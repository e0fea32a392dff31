//! Sessions: a lease on the cluster that locks and candidacies hang off.
//! This file holds the public [`Session`] API, the [`SessionState`] an
//! application sees, and the state every handle of a session shares; the
//! rest of a session lives beside it:
//!
//! - [`keepalive`]: renewals, local validity (docs/design.md "Time",
//!   rule 5) and the move from `Valid` to `Jeopardy` to `Expired`;
//! - [`events`]: what a session does with its events, its wake-ups to
//!   waiting acquires and campaigns, and the gap (truncation) handling;
//! - [`hub`]: the client's one event long-poll for all of its sessions,
//!   which hands each session its events;
//! - [`op`]: one deduplicated `(session, seq)` operation;
//! - [`resource`]: per-resource ordering of operations and the undo of an
//!   abandoned acquire or campaign.
//!
//! Lock acquisition lives beside the lock guard in [`crate::lock`], the
//! campaign beside [`Election`].
//!
//! Each session runs one background task, the keepalive, and is a member
//! of its client's session hub, until it is expired, closed or dropped.

mod events;
mod hub;
mod keepalive;
mod op;
mod resource;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftlock_sensors::clock::RawInstant;

use driftlock_proto::{Fence, LockMode, Rejection, Reply, SessionId, SessionOp, SessionSecret};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{revision_of, Client};
use crate::election::{Election, Mastership};
use crate::error::{ClientError, Result};
use crate::handover::StateProvider;
use crate::lock::{LockGuard, LockOptions};
use crate::sync::lock;
use crate::transport::{Delivery, Route};
pub(crate) use events::Hint;
pub(crate) use hub::Hub;
use keepalive::Lease;
pub(crate) use resource::{ResourceKey, Undo};

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

/// Shared state of a session, also held by its guards and elections.
pub(crate) struct SessionInner {
    /// The client whose transport carries the session's operations.
    pub(crate) client: Client,
    /// The session id: the revision of the command that opened it.
    pub(crate) id: SessionId,
    /// The secret drawn at open, sent with every operation; never logged
    /// (its `Debug` is redacted).
    pub(crate) secret: SessionSecret,
    /// The next operation's sequence number (see [`op`]).
    next_seq: AtomicU64,
    /// The session's state; every change is sent to the watchers.
    state_tx: watch::Sender<SessionState>,
    /// Local validity (see [`keepalive`]).
    lease: Mutex<Lease>,
    /// Wake-up channels of waiting acquires and campaigns (see [`events`]).
    hints: Mutex<HashMap<ResourceKey, watch::Sender<u64>>>,
    /// Serializes this session's operations on one lock or election, so a
    /// cleanup release sent in the background cannot overtake a later
    /// acquire of the same name (and release it).
    resource_locks: Mutex<HashMap<ResourceKey, Arc<tokio::sync::Mutex<()>>>>,
    /// The keepalive task, aborted at shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// State providers for warm handover, by election.
    pub(crate) handover_providers: Mutex<HashMap<String, StateProvider>>,
    /// State received and acknowledged in a handover, by election, with the
    /// epoch of the master that handed it over.
    pub(crate) handover_received: Mutex<HashMap<String, (u64, Vec<u8>)>>,
    /// The masterships this session's library believes it holds, by
    /// election: each ends, firing its `Leadership`'s loss signal, when the
    /// library stops believing (see `election::leadership`).
    pub(crate) masterships: Mutex<HashMap<String, Arc<Mastership>>>,
}

impl Session {
    /// Opens a session on the cluster asking for `ttl` of validity per
    /// keepalive (see [`Client::open_session`]) and starts its keepalive
    /// and event tasks.
    pub(crate) async fn open(client: Client, ttl: Duration) -> Result<Session> {
        let ttl_us = u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX);
        if ttl_us == 0 {
            return Err(ClientError::InvalidRequest("session TTL must be > 0".into()));
        }
        let config = client.config().clone();
        // One nonce for every attempt: a retried open finds the session the
        // first attempt may have opened.
        let nonce: u128 = rand::random();
        // The session's secret: only this handle knows it, so only this
        // handle (over a connection with this client's certificate) can act
        // in the session; the cluster keeps only its SHA-256.
        let secret = SessionSecret(rand::random());
        let name = config.client_name.clone();
        let t_send = RawInstant::now();
        let spec = client.spec("open_session", Route::Leader, Delivery::Idempotent);
        let reply = client
            .inner
            .transport
            .call(spec, |api, ctx| {
                let name = name.clone();
                let secret = secret.clone();
                async move { api.open_session(ctx, nonce, name, ttl_us, secret).await }
            })
            .await?;
        let Reply::SessionOpened {
            session, validity_us, ..
        } = reply
        else {
            return Err(ClientError::UnexpectedReply(format!("{reply:?} to open_session")));
        };
        let lease = Lease::opened(t_send, validity_us, config.default_drift_ppm, config.local_margin_us);
        let expiry = lease.local_expiry();
        let inner = SessionInner::new(client, session, secret, lease);
        let handle = Arc::new(SessionHandle { inner: inner.clone() });
        if RawInstant::now() >= expiry {
            // Granted, but the answer took longer than the validity: the
            // handle's drop closes it.
            return Err(ClientError::SessionExpired);
        }
        tracing::debug!(session, validity_us, "session opened");
        let keepalive = tokio::spawn(keepalive::run(inner.clone()));
        lock(&inner.tasks).push(keepalive);
        inner.client.inner.hub.join(&inner);
        Ok(Session { handle })
    }

    pub(crate) fn inner(&self) -> &Arc<SessionInner> {
        &self.handle.inner
    }

    /// The session id (the revision of the command that opened it).
    pub fn id(&self) -> SessionId {
        self.inner().id
    }

    /// The client this session belongs to.
    pub fn client(&self) -> &Client {
        &self.inner().client
    }

    /// The current state. It turns `Expired` when the keepalive task sees
    /// local validity end, a moment after the fact;
    /// [`is_valid`](Self::is_valid) also checks the clock.
    pub fn state(&self) -> SessionState {
        self.inner().state()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<SessionState> {
        self.inner().state_tx.subscribe()
    }

    /// End of local validity, as an `Instant`. Moves forward with each
    /// successful keepalive; never backwards. The library measures validity
    /// on the raw monotonic clock (unslewed by NTP, docs/design.md "Time",
    /// rule 5) and converts at the moment of the call: compare it with
    /// `Instant::now()` soon after, or use [`is_valid`](Self::is_valid).
    pub fn valid_until(&self) -> Instant {
        crate::clock::to_instant(self.inner().valid_until_raw())
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
        match crate::lock::acquire(self.inner(), name, opts).await? {
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
        crate::lock::acquire(self.inner(), name, opts).await
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
    /// // Act as master until the mastership is lost: not only with the
    /// // session, but also by a warm handover or a resignation.
    /// let why = leadership.lost().await;
    /// println!("no longer master: {why}");
    /// # Ok(()) }
    /// ```
    pub fn election(&self, name: &str) -> Election {
        Election::new(self.inner().clone(), name.to_owned())
    }
}

impl SessionInner {
    /// The shared state of the session `id`, opened with `lease`: `Valid`,
    /// no background task yet.
    fn new(client: Client, id: SessionId, secret: SessionSecret, lease: Lease) -> Arc<SessionInner> {
        let (state_tx, _) = watch::channel(SessionState::Valid);
        Arc::new(SessionInner {
            client,
            id,
            secret,
            next_seq: AtomicU64::new(1),
            state_tx,
            lease: Mutex::new(lease),
            hints: Mutex::new(HashMap::new()),
            resource_locks: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            handover_providers: Mutex::new(HashMap::new()),
            handover_received: Mutex::new(HashMap::new()),
            masterships: Mutex::new(HashMap::new()),
        })
    }

    /// See [`Session::state`].
    pub(crate) fn state(&self) -> SessionState {
        *self.state_tx.borrow()
    }

    /// End of local validity on the raw clock (see [`Session::valid_until`]).
    pub(crate) fn valid_until_raw(&self) -> RawInstant {
        lock(&self.lease).local_expiry()
    }

    /// See [`Session::valid_until`].
    pub(crate) fn valid_until(&self) -> Instant {
        crate::clock::to_instant(self.valid_until_raw())
    }

    /// See [`Session::is_valid`].
    pub(crate) fn is_valid(&self) -> bool {
        self.state() != SessionState::Expired && RawInstant::now() < self.valid_until_raw()
    }

    /// See [`Session::lost`].
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

    /// Moves to `Expired` for the reason `why` (logged once). The
    /// background tasks see it and stop.
    fn expire(&self, why: &str) {
        if self.state() != SessionState::Expired {
            tracing::info!(session = self.id, why, "session expired");
        }
        // Masterships end first: a `Leadership` woken by the state change
        // then finds its loss recorded.
        self.end_all_masterships();
        self.set_state(SessionState::Expired);
        self.client.inner.hub.leave(self.id);
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
}
