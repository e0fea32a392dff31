//! Renewal probes (docs/design.md "Predictive failure analysis"): when the
//! leader suspects a session, it commits `Suspect` and the session's event
//! stream carries a `Probe`. The library answers on its own, off the event
//! loop, with a deduplicated `ProbeAnswer`; the application never sees it.
//! An unanswered probe gets the session revoked at its deadline, so a live
//! client only needs its event loop and one request to get through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use driftlock_proto::{SessionId, SessionOp};

use crate::session::SessionInner;

static ANSWERED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// Probes this process answered successfully, over all sessions.
pub fn answered_total() -> u64 {
    ANSWERED.load(Ordering::Relaxed)
}

/// Probe answers that failed (the session may then be revoked).
pub fn failed_total() -> u64 {
    FAILED.load(Ordering::Relaxed)
}

/// Answers a probe for `session` in the background.
pub(crate) fn answer(inner: Arc<SessionInner>, session: SessionId, index: u64, score_permille: u32, deadline_us: u64) {
    tracing::info!(
        session,
        index,
        score_permille,
        deadline_us,
        "the cluster suspects this session; answering its renewal probe"
    );
    tokio::spawn(async move {
        match inner.op(SessionOp::ProbeAnswer, false).await {
            Ok(_) => {
                ANSWERED.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                FAILED.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(session, error = %e, "renewal probe answer failed");
            }
        }
    });
}
