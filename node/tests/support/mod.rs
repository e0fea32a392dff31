//! A cluster of real `driftlock serve` processes on loopback, for tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use driftlock_proto::{AdminRequest, MemberAddr, NodeStatus, Role};

/// One node process.
pub struct Proc {
    pub id: u64,
    pub raft_addr: String,
    pub client_addr: String,
    pub metrics_addr: String,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    /// Extra `serve` flags of this node.
    pub extra_args: Vec<String>,
    /// A command the node runs under (e.g. `faketime -f "+0 x1.002"`);
    /// empty = none.
    pub wrapper: Vec<String>,
}

/// Real node processes with their data in a temporary directory.
pub struct Cluster {
    pub nodes: Vec<Proc>,
    pub dir: tempfile::TempDir,
}

/// A free loopback address `127.A.B.C:port` for one listener.
///
/// Each call uses its own loopback IP (derived from the process id and a
/// counter), so concurrent test processes and the outgoing connections of
/// other tests (which take their ephemeral source ports on 127.0.0.1) cannot
/// grab the port between this probe and the node's bind.
pub fn free_addr() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let ip = format!("127.{}.{}.{}", 1 + pid % 250, 1 + (n / 250) % 250, 1 + n % 250);
    let l = std::net::TcpListener::bind(format!("{ip}:0")).expect("bind an ephemeral port");
    let port = l.local_addr().expect("local addr").port();
    format!("{ip}:{port}")
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

pub mod counter;

pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_driftlock")
}

impl Cluster {
    /// Starts `n` nodes and initializes them as one cluster.
    pub async fn start(n: u64) -> Cluster {
        Cluster::start_with(n, |_| Vec::new()).await
    }

    /// Starts `n` nodes, node `id` with the extra `serve` flags `args(id)`.
    pub async fn start_with(n: u64, args: impl Fn(u64) -> Vec<String>) -> Cluster {
        Cluster::start_wrapped(n, args, |_| Vec::new()).await
    }

    /// Starts `n` nodes, node `id` with the extra `serve` flags `args(id)`,
    /// run under the command `wrapper(id)` (empty: directly).
    pub async fn start_wrapped(
        n: u64,
        args: impl Fn(u64) -> Vec<String>,
        wrapper: impl Fn(u64) -> Vec<String>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(Proc {
                id,
                raft_addr: free_addr(),
                client_addr: free_addr(),
                metrics_addr: free_addr(),
                data_dir: dir.path().join(format!("node{id}")),
                child: None,
                extra_args: args(id),
                wrapper: wrapper(id),
            });
        }
        let mut cluster = Cluster { nodes, dir };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_up(i).await;
        }
        let members = cluster
            .nodes
            .iter()
            .map(|p| MemberAddr {
                id: p.id,
                raft_addr: p.raft_addr.clone(),
                client_addr: p.client_addr.clone(),
            })
            .collect();
        driftlock_proto::admin(
            &cluster.nodes[0].client_addr,
            AdminRequest::Init { members },
            Duration::from_secs(10),
        )
        .await
        .expect("init");
        cluster.wait_leader(Duration::from_secs(30)).await;
        cluster
    }

    /// Adds a process slot (not started, not a member).
    pub fn add_slot(&mut self) -> usize {
        let id = self.nodes.len() as u64 + 1;
        self.nodes.push(Proc {
            id,
            raft_addr: free_addr(),
            client_addr: free_addr(),
            metrics_addr: free_addr(),
            data_dir: self.dir.path().join(format!("node{id}")),
            child: None,
            extra_args: Vec::new(),
            wrapper: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Starts (or restarts) node `i` on its data directory.
    pub fn spawn(&mut self, i: usize) {
        let p = &mut self.nodes[i];
        let log = std::fs::File::create(self.dir.path().join(format!("node{}.log", p.id))).expect("log file");
        let log_err = log.try_clone().expect("log file");
        let mut cmd = match p.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(exe());
                c
            }
            None => Command::new(exe()),
        };
        let child = cmd
            .args([
                "serve",
                "--id",
                &p.id.to_string(),
                "--raft-addr",
                &p.raft_addr,
                "--client-addr",
                &p.client_addr,
            ])
            .arg("--data-dir")
            .arg(&p.data_dir)
            .args(["--metrics-addr", &p.metrics_addr])
            .args([
                "--heartbeat-ms",
                "50",
                "--election-timeout-min-ms",
                "300",
                "--election-timeout-max-ms",
                "600",
            ])
            .args(&p.extra_args)
            .arg("--exit-with-parent")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn driftlock serve");
        p.child = Some(child);
    }

    /// Waits until node `i` answers status.
    pub async fn wait_up(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if driftlock_proto::status(&self.nodes[i].client_addr, Duration::from_millis(500))
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not come up; log:\n{}",
                self.nodes[i].id,
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a leader among the running nodes; returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            for (i, p) in self.nodes.iter().enumerate() {
                if p.child.is_none() {
                    continue;
                }
                if let Ok(s) = driftlock_proto::status(&p.client_addr, Duration::from_millis(300)).await {
                    if s.role == Role::Leader {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn status(&self, i: usize) -> Option<NodeStatus> {
        driftlock_proto::status(&self.nodes[i].client_addr, Duration::from_secs(1))
            .await
            .ok()
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs node `i` and returns its exit status.
    pub fn terminate(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let mut c = self.nodes[i].child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|p| p.client_addr.clone()).collect()
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{}.log", self.nodes[i].id))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
