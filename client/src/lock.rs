//! A lock from acquire to release: how to take it ([`LockOptions`]), the
//! acquire itself, and the [`LockGuard`] of a held lock with its fencing
//! token.
//!
//! An acquire is one deduplicated `Acquire` operation. Granted at once, it
//! returns a guard. Queued, it waits in the lock's FIFO queue: the
//! session's event stream wakes it, but only a linearizable read of the
//! lock confirms the grant (and the read is repeated every
//! `poll_interval_ms` anyway), so a missed or stale event can delay a grant
//! but never forge one. An acquire that fails after it may have reached the
//! cluster, or whose future is dropped, releases in the background (an
//! [`Undo`]), under the lock's per-session operation lock so the release
//! cannot overtake the session's next operation on the same name.

use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_proto::{Consistency, Query, QueryResult};
use driftlock_proto::{Fence, LockMode, Rejection, Reply, SessionId, SessionOp};

use crate::client::unexpected;
use crate::error::{ClientError, Result};
use crate::session::{Hint, ResourceKey, SessionInner, SessionState, Undo};

/// How to take a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOptions {
    /// Exclusive (one holder) or shared (any number of shared holders).
    pub mode: LockMode,
    /// How long to wait in the lock's FIFO queue; zero = try once. At most
    /// one hour ([`MAX_WAIT_US`](driftlock_proto::limits::MAX_WAIT_US)):
    /// a longer wait is refused as [`ClientError::InvalidRequest`].
    pub wait: Duration,
}

impl Default for LockOptions {
    /// Exclusive, waiting up to 60 s.
    fn default() -> Self {
        LockOptions {
            mode: LockMode::Exclusive,
            wait: Duration::from_secs(60),
        }
    }
}

/// Takes a lock for `session` (see [`Session::lock_with`](crate::Session::lock_with));
/// `Ok(None)` only for a zero wait on a busy lock.
pub(crate) async fn acquire(session: &Arc<SessionInner>, name: &str, opts: LockOptions) -> Result<Option<LockGuard>> {
    session.check_usable()?;
    let wait_us = u64::try_from(opts.wait.as_micros()).unwrap_or(u64::MAX);
    if wait_us > driftlock_proto::limits::MAX_WAIT_US {
        return Err(ClientError::InvalidRequest("lock wait above one hour".into()));
    }
    let key = ResourceKey::Lock(name.to_owned());
    let permit = session.resource_lock(&key).lock_owned().await;
    let mut hint = session.subscribe(key);
    let undo = Undo::new(session.clone(), SessionOp::Release { name: name.to_owned() }, permit);
    let t_send = Instant::now();
    let op = SessionOp::Acquire {
        name: name.to_owned(),
        mode: opts.mode,
        wait_us,
    };
    let reply = tokio::select! {
        r = session.op(op, false) => r,
        () = session.lost() => Err(ClientError::SessionExpired),
    };
    let token = match reply {
        Ok(Reply::Granted { token, .. }) => token,
        Ok(Reply::Queued { .. }) => {
            let c = session.client.config();
            let grace = Duration::from_millis(2 * c.poll_interval_ms + c.request_timeout_ms);
            let give_up = t_send + opts.wait + grace;
            let waited = tokio::select! {
                r = await_grant(session, name, &mut hint) => r,
                () = session.lost() => Err(ClientError::SessionExpired),
                () = tokio::time::sleep_until(give_up.into()) => Err(ClientError::WaitTimedOut { name: name.to_owned() }),
            };
            match waited {
                Ok(Some(token)) => token,
                Ok(None) => {
                    // The cluster already dropped the wait: nothing to undo.
                    undo.disarm();
                    return Err(if session.state() == SessionState::Expired {
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
    session.check_usable()?;
    undo.disarm();
    Ok(Some(LockGuard::new(session.clone(), name.to_owned(), opts.mode, token)))
}

/// Waits for a queued acquire's outcome: `Some(token)` once the session
/// holds the lock, `None` once it neither holds nor awaits it.
async fn await_grant(session: &SessionInner, name: &str, hint: &mut Hint) -> Result<Option<u64>> {
    let poll = Duration::from_millis(session.client.config().poll_interval_ms);
    loop {
        tokio::select! {
            () = hint.changed() => {}
            () = tokio::time::sleep(poll) => {}
        }
        match lock_status(session, name).await {
            Ok(LockStatus::Holder(token)) => return Ok(Some(token)),
            Ok(LockStatus::Neither) => return Ok(None),
            Ok(LockStatus::Waiting) => {}
            Err(e) => tracing::debug!(session = session.id, lock = name, error = %e, "lock poll failed"),
        }
    }
}

/// This session's standing on a lock, by linearizable read.
async fn lock_status(session: &SessionInner, name: &str) -> Result<LockStatus> {
    let reply = session
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
    if let Some(h) = view.holders.iter().find(|h| h.session == session.id) {
        return Ok(LockStatus::Holder(h.token));
    }
    if view.waiters.iter().any(|(s, _)| *s == session.id) {
        return Ok(LockStatus::Waiting);
    }
    Ok(LockStatus::Neither)
}

/// A session's standing on one lock, as a linearizable read shows it.
enum LockStatus {
    /// The session holds the lock under this fencing token.
    Holder(u64),
    /// The session is in the lock's wait queue.
    Waiting,
    /// The session neither holds nor awaits the lock.
    Neither,
}

/// A held lock. Valid as long as its session is; carries the grant's
/// fencing token, which the protected resource should check (driftlock's
/// own KV does, through [`Session::kv_put_fenced`](crate::Session::kv_put_fenced)
/// and friends).
///
/// Release it with [`release`](Self::release). Dropping it without
/// releasing sends the release in the background (if a Tokio runtime is
/// running); either way the lock is also freed when the session ends.
#[must_use = "dropping a LockGuard releases the lock"]
pub struct LockGuard {
    session: Arc<SessionInner>,
    name: String,
    mode: LockMode,
    token: u64,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("token", &self.token)
            .field("session", &self.session.id)
            .finish()
    }
}

impl LockGuard {
    pub(crate) fn new(session: Arc<SessionInner>, name: String, mode: LockMode, token: u64) -> Self {
        debug_assert!(token > 0, "fencing tokens are revisions, never 0");
        LockGuard {
            session,
            name,
            mode,
            token,
            released: false,
        }
    }

    /// The grant's fencing token: the revision of the granting command,
    /// strictly increasing across grants of a lock.
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mode it is held in.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The id of the session holding it; the lock ends with that session.
    pub fn session_id(&self) -> SessionId {
        self.session.id
    }

    /// The fence to attach to writes made under this lock.
    pub fn fence(&self) -> Fence {
        Fence {
            lock: self.name.clone(),
            token: self.token,
        }
    }

    /// Until when the lock is surely held: the session's current local
    /// expiry (it moves forward with keepalives).
    pub fn valid_until(&self) -> Instant {
        self.session.valid_until()
    }

    /// Whether the lock can still be relied on: its session is not expired
    /// and its local validity not over.
    pub fn is_valid(&self) -> bool {
        self.session.is_valid()
    }

    /// Releases the lock (the next waiter is granted in the same entry).
    /// Sent even if the session has expired locally, since the cluster may
    /// still hold the lock; the error then says why it could not be.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        let key = ResourceKey::Lock(self.name.clone());
        let _permit = self.session.resource_lock(&key).lock_owned().await;
        let op = SessionOp::Release {
            name: self.name.clone(),
        };
        self.session.op(op, true).await.map(|_| ())
    }
}

impl From<&LockGuard> for Fence {
    fn from(guard: &LockGuard) -> Fence {
        guard.fence()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(lock = %self.name, "LockGuard dropped outside a runtime: released when the session ends");
            return;
        };
        let session = self.session.clone();
        let name = self.name.clone();
        let resource = session.resource_lock(&ResourceKey::Lock(name.clone()));
        // Taking the resource lock here, when possible, orders this release
        // before any later operation of the session on the same lock.
        let permit = resource.clone().try_lock_owned().ok();
        rt.spawn(async move {
            let _permit = match permit {
                Some(p) => p,
                None => resource.lock_owned().await,
            };
            let op = SessionOp::Release { name: name.clone() };
            if let Err(e) = session.op(op, true).await {
                tracing::debug!(lock = %name, error = %e, "background release failed");
            }
        });
    }
}
