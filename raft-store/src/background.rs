//! Work that must not compete with serving: a thread of its own at a lower
//! scheduling priority.
//!
//! Encoding a snapshot of a million held locks takes 0.5–0.9 s of CPU and
//! every node of a cluster does it. On a blocking-pool thread at the
//! runtime's priority it shared the cores equally with the runtime's
//! workers, so a worker woken by a client's request could wait a whole
//! scheduler slice behind it: the client tail latency under snapshots
//! (BENCHMARKS.md "Large state"). At nice [`BACKGROUND_NICE`] the kernel
//! runs a woken worker first, and the encode still gets the idle CPU and
//! about a tenth of a busy core, so it finishes even under full load.

use std::io;

use tokio::sync::oneshot;

/// The nice value of background threads: Linux weighs a nice-10 thread at
/// 110 against 1 024 for nice 0. Not 19: the encode must keep a share of a
/// saturated machine, or the Raft log it lets us purge grows meanwhile.
pub const BACKGROUND_NICE: u8 = 10;

/// Runs `work` on a new thread named `name` at nice [`BACKGROUND_NICE`] and
/// returns its result. A thread that cannot lower its priority (a platform
/// without per-thread nice) runs the work anyway at the normal one.
pub async fn run<T, F>(name: &str, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new().name(name.to_string()).spawn(move || {
        lower_priority();
        // The caller dropped the receiver: nobody needs the result.
        let _ = tx.send(work());
    })?;
    rx.await
        .map_err(|_| io::Error::other("the background thread ended without a result (it panicked)"))
}

/// Lowers the calling thread's priority to nice [`BACKGROUND_NICE`]
/// (Linux keeps nice per thread, so only this thread changes).
fn lower_priority() {
    use thread_priority::{set_current_thread_priority, ThreadPriority, ThreadPriorityValue};
    // The crate's portable scale, 0 (lowest) to 99, maps onto nice -20..19
    // on Linux: 22 is nice 10 (the test below reads it back from /proc).
    const PORTABLE_PRIORITY: u8 = 22;
    let result = ThreadPriorityValue::try_from(PORTABLE_PRIORITY)
        .map_err(|e| e.to_string())
        .and_then(|p| set_current_thread_priority(ThreadPriority::Crossplatform(p)).map_err(|e| format!("{e:?}")));
    if let Err(e) = result {
        tracing::debug!(error = %e, "background thread keeps the normal priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_and_its_result_comes_back() {
        let name = run("background-test", || std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("background-test"));
    }

    /// The nice value of the calling thread (Linux: field 19 of
    /// `/proc/thread-self/stat`, counted after the parenthesised name,
    /// which may hold spaces).
    #[cfg(target_os = "linux")]
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_thread_runs_at_the_background_nice_value() {
        let caller = own_nice();
        let nice = run("background-test", own_nice).await.unwrap();
        if caller <= i32::from(BACKGROUND_NICE) {
            assert_eq!(nice, i32::from(BACKGROUND_NICE), "the caller runs at nice {caller}");
        } else {
            // Already lower than the background value: never raised.
            assert!(nice >= i32::from(BACKGROUND_NICE), "nice {nice}, the caller's {caller}");
        }
    }

    #[tokio::test]
    async fn a_panic_is_an_error_not_a_hang() {
        let result = run("background-test", || -> u32 { panic!("on purpose") }).await;
        assert!(result.is_err());
    }
}
