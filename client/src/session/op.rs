//! Sending one session operation: a fresh sequence number, kept across
//! every retry so the cluster applies the operation once however often it
//! is resent, and the two answers about the `(session, seq)` pair itself —
//! the cluster no longer knows the session (it is expired), or the sequence
//! number fell out of its dedupe window (the outcome is unknown).

use driftlock_proto::{Rejection, Reply, SessionOp};
use std::sync::atomic::Ordering;

use super::SessionInner;
use crate::error::{ClientError, Result};
use crate::transport::{CallSpec, Delivery, Route};

impl SessionInner {
    /// The next sequence number of this session (from 1; every operation
    /// and every keepalive attempt takes its own).
    pub(super) fn next_seq(&self) -> u64 {
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

    /// Runs `op` as sequence number `seq` within the budget of `spec`; an
    /// `UnknownSession` answer expires the session.
    pub(super) async fn op_with(&self, seq: u64, op: SessionOp, spec: CallSpec) -> Result<Reply> {
        debug_assert!(seq >= 1, "sequence numbers start at 1");
        let id = self.id;
        let secret = &self.secret;
        let result = self
            .client
            .inner
            .transport
            .call(spec, |api, ctx| {
                let op = op.clone();
                let secret = secret.clone();
                async move { api.session_op(ctx, id, secret, seq, op).await }
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
}
