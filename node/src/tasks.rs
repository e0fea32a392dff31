//! The node's supervised tasks: servers and background loops in one
//! [`JoinSet`]. None of them should ever end while the node runs, so the
//! first one that does (returning or panicking) is reported by
//! [`Tasks::ended`] and the node shuts down rather than run half-alive. At
//! shutdown the tasks stop in [`Stop`] order and are all joined.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{AbortHandle, Id, JoinError, JoinSet};

/// When a task is stopped during shutdown (see `app::run`), earliest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// With the request path: before in-flight requests are drained.
    WithRequests,
    /// After the drain, before Raft shuts down (loops that propose or read
    /// Raft state).
    BeforeRaft,
    /// After Raft has shut down (the Raft port, which peers may still call
    /// while it does, and the event pump).
    AfterRaft,
}

/// A supervised task that ended although nothing asked it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnded {
    /// The name it was spawned with.
    pub task: &'static str,
    /// "returned", or "panicked: " and the panic message.
    pub how: String,
}

impl std::fmt::Display for TaskEnded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task '{}' {}", self.task, self.how)
    }
}

/// The node's tasks, each with a name and a [`Stop`] stage.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<()>,
    /// Name and stage of every task spawned, by tokio task id.
    spawned: HashMap<Id, (&'static str, Stop, AbortHandle)>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.spawned.values().map(|(name, _, _)| *name).collect();
        names.sort_unstable();
        f.debug_struct("Tasks").field("running", &names).finish()
    }
}

impl Tasks {
    /// Runs `task` under supervision.
    pub fn spawn(&mut self, name: &'static str, stop: Stop, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.spawned.insert(handle.id(), (name, stop, handle));
    }

    /// Waits for the first task to end and says which and how. Never
    /// returns while no task has ended (nor if there are none).
    pub async fn ended(&mut self) -> TaskEnded {
        match self.set.join_next_with_id().await {
            Some(Ok((id, ()))) => TaskEnded {
                task: self.forget(id),
                how: "returned".to_owned(),
            },
            Some(Err(e)) => {
                let task = self.forget(e.id());
                TaskEnded { task, how: describe(e) }
            }
            None => std::future::pending().await,
        }
    }

    /// Aborts the tasks of stage `stop` (they finish at their next await).
    pub fn stop(&mut self, stop: Stop) {
        for (_, at, handle) in self.spawned.values() {
            if *at == stop {
                handle.abort();
            }
        }
    }

    /// Aborts every task left and waits until all have finished; a panic
    /// found on the way is logged.
    pub async fn shutdown(&mut self) {
        self.set.abort_all();
        while let Some(result) = self.set.join_next_with_id().await {
            match result {
                Ok((id, ())) => {
                    self.forget(id);
                }
                Err(e) if e.is_cancelled() => {
                    self.forget(e.id());
                }
                Err(e) => {
                    let task = self.forget(e.id());
                    tracing::warn!("while stopping, task '{task}' {}", describe(e));
                }
            }
        }
    }

    fn forget(&mut self, id: Id) -> &'static str {
        self.spawned.remove(&id).map_or("(unknown)", |(name, _, _)| name)
    }
}

fn describe(e: JoinError) -> String {
    if e.is_cancelled() {
        return "was cancelled".to_owned();
    }
    let panic = e.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    format!("panicked: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_task_that_returns_is_reported_by_name() {
        let mut tasks = Tasks::default();
        tasks.spawn("forever", Stop::BeforeRaft, std::future::pending());
        tasks.spawn("short", Stop::BeforeRaft, async {});
        let ended = tasks.ended().await;
        assert_eq!(
            ended,
            TaskEnded {
                task: "short",
                how: "returned".into()
            }
        );
        tasks.shutdown().await;
        assert!(tasks.spawned.is_empty());
    }

    #[tokio::test]
    async fn a_panic_is_reported_with_its_message() {
        let mut tasks = Tasks::default();
        tasks.spawn("forever", Stop::AfterRaft, std::future::pending());
        tasks.spawn("broken", Stop::AfterRaft, async { panic!("state lost") });
        let ended = tasks.ended().await;
        assert_eq!(ended.task, "broken");
        assert_eq!(ended.how, "panicked: state lost");
        assert_eq!(ended.to_string(), "task 'broken' panicked: state lost");
        tasks.shutdown().await;
    }

    /// Sets its flag when dropped, i.e. when its task is aborted.
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn task_with_flag(flag: &Arc<AtomicBool>) -> impl Future<Output = ()> + Send + 'static {
        let guard = DropFlag(flag.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        }
    }

    #[tokio::test]
    async fn stop_aborts_one_stage_and_shutdown_the_rest() {
        let (early, late) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let mut tasks = Tasks::default();
        tasks.spawn("early", Stop::WithRequests, task_with_flag(&early));
        tasks.spawn("late", Stop::AfterRaft, task_with_flag(&late));
        tasks.stop(Stop::WithRequests);
        // The aborted task is joined (as cancelled) before the other, which
        // would never end.
        let ended = tasks.ended().await;
        assert_eq!(ended.task, "early");
        assert_eq!(ended.how, "was cancelled");
        assert!(early.load(Ordering::SeqCst) && !late.load(Ordering::SeqCst));
        tasks.shutdown().await;
        assert!(late.load(Ordering::SeqCst), "shutdown aborts and joins the rest");
        assert!(tasks.spawned.is_empty());
    }
}
