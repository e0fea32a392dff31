//! One node's process: start, signals, exit, readiness and its log.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::Duration;

use driftlock_proto::{NodeStatus, Security};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::{LaunchError, NodeSpec, STATUS_CALL_TIMEOUT};

/// How often a waiting loop polls the process or the node.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Lines of a node's log that error messages carry.
pub(crate) const ERROR_TAIL_LINES: usize = 20;

/// A node process (or the slot of one not running), started from one
/// binary with one [`NodeSpec`]. The spec may be changed between runs (e.g.
/// another wrapper for the next restart); the data directory is kept.
///
/// Dropping the handle SIGKILLs a running process.
#[derive(Debug)]
pub struct NodeProcess {
    exe: PathBuf,
    /// What the process is (re)started with.
    pub spec: NodeSpec,
    /// How status calls reach the node: with the cluster's admin
    /// certificate once [`Cluster::secure`](crate::Cluster::secure) ran.
    pub security: Security,
    child: Option<Child>,
    paused: bool,
    last_exit: Option<ExitStatus>,
}

impl NodeProcess {
    /// A slot for a node started from the binary `exe`; nothing runs yet.
    pub fn new(exe: impl Into<PathBuf>, spec: NodeSpec) -> NodeProcess {
        NodeProcess {
            exe: exe.into(),
            spec,
            security: Security::Insecure,
            child: None,
            paused: false,
            last_exit: None,
        }
    }

    /// The `driftlock` binary this node runs.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Raft id of the node.
    pub fn id(&self) -> u64 {
        self.spec.id
    }

    /// Starts the process on its data directory, its output appended to its
    /// log file. Fails if it runs already.
    pub fn spawn(&mut self) -> Result<u32, LaunchError> {
        let id = self.spec.id;
        if let Some(pid) = self.pid() {
            return Err(LaunchError::AlreadyRunning { id, pid });
        }
        let log_path = &self.spec.log_file;
        if let Some(dir) = log_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LaunchError::File {
                action: "create directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_log = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path)
                .map_err(|source| LaunchError::File {
                    action: "open log file",
                    path: log_path.clone(),
                    source,
                })
        };
        let (stdout, stderr) = (open_log()?, open_log()?);
        if self.spec.command_line(&self.exe).contains("faketime") {
            sweep_stale_faketime_shm(std::path::Path::new("/dev/shm"));
        }
        let child = self
            .spec
            .command(&self.exe)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                id,
                command: self.spec.command_line(&self.exe),
                source,
            })?;
        let pid = child.id();
        self.child = Some(child);
        self.paused = false;
        Ok(pid)
    }

    /// Whether a process was started and has not been stopped through this
    /// handle or seen to exit (see [`poll_exit`](Self::poll_exit)).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is SIGSTOPped through [`pause`](Self::pause).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Process id of the running process (the wrapper's, under a prefix
    /// that forks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How the last process of this node ended, if one did.
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    /// Reaps the process if it has exited on its own, returning how.
    pub fn poll_exit(&mut self) -> Result<Option<ExitStatus>, LaunchError> {
        let id = self.spec.id;
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                self.paused = false;
                self.last_exit = Some(status);
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(source) => Err(LaunchError::Wait { id, source }),
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> Result<(), LaunchError> {
        let id = self.spec.id;
        let pid = self.pid().ok_or(LaunchError::NotRunning { id })?;
        let raw = i32::try_from(pid).map_err(|_| LaunchError::Signal {
            id,
            pid,
            signal,
            source: nix::Error::ESRCH,
        })?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal).map_err(|source| LaunchError::Signal {
            id,
            pid,
            signal,
            source,
        })
    }

    /// SIGKILLs the process (a paused one too) and reaps it; returns how it
    /// ended, `None` if nothing ran.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        self.paused = false;
        // Fails only if it already exited; the wait below reaps it either way.
        let _ = child.kill();
        let status = child.wait().ok();
        self.last_exit = status.or(self.last_exit);
        status
    }

    /// SIGTERMs the process (resuming it first if paused, so it can act on
    /// the signal), waits up to `grace` for it to exit, then SIGKILLs it.
    /// Returns how it ended, `None` if nothing ran.
    pub async fn terminate(&mut self, grace: Duration) -> Result<Option<ExitStatus>, LaunchError> {
        if !self.begin_terminate()? {
            return Ok(None);
        }
        self.finish_terminate(Instant::now() + grace).await
    }

    /// The first half of [`terminate`](Self::terminate): SIGCONT if paused,
    /// then SIGTERM. Returns whether a process was running.
    pub(crate) fn begin_terminate(&mut self) -> Result<bool, LaunchError> {
        if self.poll_exit()?.is_some() || !self.is_running() {
            return Ok(false);
        }
        if self.paused {
            self.resume()?;
        }
        // The process may exit between the check and the signal; the wait
        // below tells.
        if let Err(e) = self.signal(Signal::SIGTERM) {
            if self.poll_exit()?.is_none() {
                return Err(e);
            }
        }
        Ok(true)
    }

    /// The second half of [`terminate`](Self::terminate): waits until
    /// `deadline` for the exit, then SIGKILLs.
    pub(crate) async fn finish_terminate(&mut self, deadline: Instant) -> Result<Option<ExitStatus>, LaunchError> {
        loop {
            if let Some(status) = self.poll_exit()? {
                return Ok(Some(status));
            }
            if !self.is_running() {
                return Ok(self.last_exit);
            }
            if Instant::now() >= deadline {
                return Ok(self.kill());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGSTOPs the process: it keeps its sockets but answers nothing.
    pub fn pause(&mut self) -> Result<(), LaunchError> {
        self.signal(Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONTs a paused process.
    pub fn resume(&mut self) -> Result<(), LaunchError> {
        self.signal(Signal::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    /// SIGKILLs the process if it runs and starts it again on the same data
    /// directory, with the spec as it is now.
    pub fn restart(&mut self) -> Result<u32, LaunchError> {
        self.kill();
        self.spawn()
    }

    /// The node's own status, one call of at most `timeout`.
    pub async fn status(&self, timeout: Duration) -> Result<NodeStatus, LaunchError> {
        driftlock_proto::status(&self.spec.client_addr, timeout, &self.security)
            .await
            .map_err(|source| LaunchError::Status {
                id: self.spec.id,
                addr: self.spec.client_addr.clone(),
                source,
            })
    }

    /// Waits until the node answers a status call, at most `timeout`.
    /// Fails at once, with the end of its log, if the process exits.
    pub async fn wait_up(&mut self, timeout: Duration) -> Result<NodeStatus, LaunchError> {
        self.wait_up_until(Instant::now() + timeout, timeout).await
    }

    pub(crate) async fn wait_up_until(
        &mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<NodeStatus, LaunchError> {
        let id = self.spec.id;
        loop {
            if let Some(status) = self.poll_exit()? {
                return Err(self.exited(status));
            }
            if !self.is_running() {
                return Err(LaunchError::NotRunning { id });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let last_error =
                match driftlock_proto::status(&self.spec.client_addr, left.min(STATUS_CALL_TIMEOUT), &self.security)
                    .await
                {
                    Ok(status) => return Ok(status),
                    Err(e) => e.to_string(),
                };
            if Instant::now() >= deadline {
                return Err(LaunchError::NotUp {
                    id,
                    addr: self.spec.client_addr.clone(),
                    timeout,
                    last_error,
                    log: self.spec.log_file.clone(),
                    tail: self.log_tail(ERROR_TAIL_LINES),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The error for a process that exited while it should serve.
    fn exited(&self, status: ExitStatus) -> LaunchError {
        LaunchError::Exited {
            id: self.spec.id,
            status,
            log: self.spec.log_file.clone(),
            tail: self.log_tail(ERROR_TAIL_LINES),
        }
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::log::tail(&self.spec.log_file, lines)
    }

    /// The whole log of the node (every run appended), empty if unreadable.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.spec.log_file).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `faketime` wrapper keeps a POSIX shared-memory segment and a
/// semaphore named after its pid (`faketime_shm_PID`,
/// `sem.faketime_sem_PID` in `/dev/shm`) and removes them when it exits. A
/// wrapper that is SIGKILLed — the fault tests and the jepsen kill nemesis
/// do that — leaves them behind, and a later wrapper that gets the same pid
/// refuses to start ("sem_open: File exists"). This removes the ones whose
/// process is gone; a live wrapper's are kept.
fn sweep_stale_faketime_shm(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let pid = name
            .strip_prefix("faketime_shm_")
            .or_else(|| name.strip_prefix("sem.faketime_sem_"))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// A "node" that is a shell script: the launcher's process handling does
    /// not care what the binary is.
    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake-node.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn node(dir: &Path, body: &str) -> NodeProcess {
        let exe = script(dir, body);
        // Port 9 on loopback: nothing answers there.
        let spec = NodeSpec::new(
            7,
            "127.0.0.1:9",
            "127.0.0.1:9",
            dir.join("data"),
            dir.join("logs/n7.log"),
        );
        NodeProcess::new(exe, spec)
    }

    #[tokio::test]
    async fn a_node_that_exits_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = node(dir.path(), "echo \"bad flag: $2\" >&2; exit 3");
        n.spawn().unwrap();
        let err = n.wait_up(Duration::from_secs(20)).await.unwrap_err();
        match &err {
            LaunchError::Exited { id, status, tail, .. } => {
                assert_eq!(*id, 7);
                assert_eq!(status.code(), Some(3));
                assert!(tail.contains("bad flag: --id"), "{tail}");
            }
            other => panic!("expected Exited, got {other}"),
        }
        assert!(!n.is_running());
        assert_eq!(n.last_exit().and_then(|s| s.code()), Some(3));
    }

    #[tokio::test]
    async fn a_silent_node_times_out_naming_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = node(dir.path(), "echo starting; exec sleep 30");
        n.spawn().unwrap();
        let err = n.wait_up(Duration::from_millis(300)).await.unwrap_err();
        match &err {
            LaunchError::NotUp { id, addr, tail, .. } => {
                assert_eq!((*id, addr.as_str()), (7, "127.0.0.1:9"));
                assert!(tail.contains("starting"), "{tail}");
            }
            other => panic!("expected NotUp, got {other}"),
        }
        assert_eq!(n.kill().map(|s| s.signal()), Some(Some(sigkill())));
    }

    fn sigkill() -> i32 {
        Signal::SIGKILL as i32
    }

    #[test]
    fn stale_faketime_segments_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let live = std::process::id();
        // A pid above the kernel's pid_max is never alive.
        let dead = 4_194_305;
        for name in [
            format!("faketime_shm_{live}"),
            format!("sem.faketime_sem_{live}"),
            format!("faketime_shm_{dead}"),
            format!("sem.faketime_sem_{dead}"),
            "other".to_owned(),
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        sweep_stale_faketime_shm(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                format!("faketime_shm_{live}"),
                "other".to_owned(),
                format!("sem.faketime_sem_{live}")
            ]
        );
    }

    #[tokio::test]
    async fn spawn_twice_is_refused_and_restart_replaces_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = node(dir.path(), "exec sleep 30");
        let first = n.spawn().unwrap();
        assert!(matches!(n.spawn(), Err(LaunchError::AlreadyRunning { id: 7, pid }) if pid == first));
        let second = n.restart().unwrap();
        assert_ne!(first, second);
        assert!(n.is_running());
    }

    #[tokio::test]
    async fn terminate_sends_sigterm_and_a_paused_process_still_exits() {
        let dir = tempfile::tempdir().unwrap();
        // Exits 0 on SIGTERM, like the node.
        let mut n = node(dir.path(), "trap 'exit 0' TERM; while :; do sleep 0.05; done");
        n.spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        n.pause().unwrap();
        assert!(n.is_paused());
        let status = n.terminate(Duration::from_secs(20)).await.unwrap().unwrap();
        assert!(status.success(), "{status:?}");
        assert!(!n.is_running() && !n.is_paused());
        assert_eq!(n.terminate(Duration::from_secs(1)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn terminate_kills_what_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = node(dir.path(), "trap '' TERM; while :; do sleep 0.05; done");
        n.spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = n.terminate(Duration::from_millis(300)).await.unwrap().unwrap();
        assert_eq!(status.signal(), Some(sigkill()));
    }

    #[test]
    fn signals_need_a_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = node(dir.path(), "exit 0");
        assert!(matches!(n.pause(), Err(LaunchError::NotRunning { id: 7 })));
        assert_eq!(n.kill(), None);
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error_with_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let spec = NodeSpec::new(
            1,
            "127.0.0.1:9",
            "127.0.0.1:9",
            dir.path().join("d"),
            dir.path().join("n.log"),
        );
        let mut n = NodeProcess::new(dir.path().join("no-such-binary"), spec);
        match n.spawn() {
            Err(LaunchError::Spawn { id: 1, command, .. }) => assert!(command.contains("no-such-binary serve --id 1")),
            other => panic!("expected Spawn, got {other:?}"),
        }
    }
}
