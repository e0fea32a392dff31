//! A session's operations on one named lock or election: serialized per
//! resource, and undone in the background when their outcome is lost.
//!
//! An acquire or campaign that fails after it may have reached the cluster
//! (or whose future is dropped) leaves the session holding or queued for
//! something nobody knows about; an [`Undo`] sends the release or
//! resignation. The per-resource operation lock makes such a background
//! undo — and a guard's background release — finish before the session's
//! next operation on the same name, so it can never free a later grant.

use std::sync::Arc;

use driftlock_proto::SessionOp;
use tokio::sync::OwnedMutexGuard;

use super::SessionInner;
use crate::sync::lock;

/// A resource a session operates on, by name: the key of its operation
/// lock and of its wake-up channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ResourceKey {
    /// A lock (`Acquire`, `Release`).
    Lock(String),
    /// An election (`Campaign`, `Resign`).
    Election(String),
}

impl SessionInner {
    /// The lock serializing this session's operations on one resource.
    pub(crate) fn resource_lock(&self, key: &ResourceKey) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.resource_locks).entry(key.clone()).or_default().clone()
    }
}

/// An operation to send in the background unless disarmed: undoes an
/// acquire or campaign whose outcome the caller will not learn (failure,
/// expiry, cancellation). Holds the resource's operation lock until the
/// undo is done, so a later operation on the same resource waits for it.
pub(crate) struct Undo {
    session: Arc<SessionInner>,
    /// The undoing operation; `None` once disarmed.
    op: Option<SessionOp>,
    /// The resource's operation lock, released after the undo is sent.
    permit: Option<OwnedMutexGuard<()>>,
}

impl Undo {
    /// Arms `op` (sent as a cleanup operation) for the resource whose
    /// operation lock `permit` holds.
    pub(crate) fn new(session: Arc<SessionInner>, op: SessionOp, permit: OwnedMutexGuard<()>) -> Self {
        Undo {
            session,
            op: Some(op),
            permit: Some(permit),
        }
    }

    /// The operation is not needed: the caller learned the outcome (a
    /// grant it hands out, or a refusal that changed nothing). Releases
    /// the resource's operation lock at once.
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
