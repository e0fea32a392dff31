//! Lock options and the guard of a held lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_proto::{Fence, LockMode, SessionId, SessionOp};

use crate::clock::client_clock_us;
use crate::error::Result;
use crate::session::{ResourceKey, SessionInner};

/// How to take a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOptions {
    /// Exclusive (one holder) or shared (any number of shared holders).
    pub mode: LockMode,
    /// How long to wait in the lock's FIFO queue; zero = try once.
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
        debug_assert!(token > 0, "fencing tokens are log indexes, never 0");
        LockGuard {
            session,
            name,
            mode,
            token,
            released: false,
        }
    }

    /// The grant's fencing token: the log index of the granting entry,
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

    /// The session holding it.
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
            client_clock_us: Some(client_clock_us()),
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
        let client_clock = client_clock_us();
        rt.spawn(async move {
            let _permit = match permit {
                Some(p) => p,
                None => resource.lock_owned().await,
            };
            let op = SessionOp::Release {
                name: name.clone(),
                client_clock_us: Some(client_clock),
            };
            if let Err(e) = session.op(op, true).await {
                tracing::debug!(lock = %name, error = %e, "background release failed");
            }
        });
    }
}
