//! Waiting for a condition in tests.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] and [`eventually_async`] re-check.
const RECHECK_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `cond` every 20 ms until it holds (`true`) or `timeout` passes
/// (`false`).
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(RECHECK_INTERVAL).await;
    }
}

/// [`eventually`] for a condition that must itself wait (e.g. read from a
/// node).
pub async fn eventually_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(RECHECK_INTERVAL).await;
    }
}
