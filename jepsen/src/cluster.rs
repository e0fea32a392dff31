//! The cluster under test: real `driftlock serve` processes.
//!
//! With root and a working `ip netns`, every node runs in its own network
//! namespace (`dljN`) with its own address `10.77.0.(10+N)` on a bridge
//! (`dljbr0`, the harness at `10.77.0.1`), joined by veth pairs; partitions
//! are iptables rules and delay/loss is `tc netem` inside the namespaces.
//! Without them the nodes listen on `127.0.0.(10+N)` and the namespace-only
//! faults are skipped (the nemesis says why).
//!
//! Every node logs to `<run dir>/n<N>.log` and keeps its data in
//! `<run dir>/n<N>-data`.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use driftlock_client::{Client, ClientConfig};
use driftlock_proto::{AdminRequest, MemberAddr, Role};

/// Bridge joining the namespaces.
const BRIDGE: &str = "dljbr0";
/// Prefix of namespace and veth names.
const NS_PREFIX: &str = "dlj";
/// The harness's address on the bridge.
const HOST_IP: &str = "10.77.0.1";
/// Raft port of every node (each has its own address).
const RAFT_PORT: u16 = 7400;
/// Client API port of every node.
const CLIENT_PORT: u16 = 7300;

/// Errors of setting up and driving the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A process could not be started.
    #[error("cannot run {what}: {source}")]
    Spawn {
        /// The command.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A setup command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command.
        what: String,
        /// Its stderr or exit status.
        detail: String,
    },
    /// The cluster did not reach the expected state in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A client request failed.
    #[error("client: {0}")]
    Client(String),
    /// A file could not be created.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Runs a command and fails on a non-zero exit.
pub fn run_cmd(program: &str, args: &[&str]) -> Result<(), ClusterError> {
    let what = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ClusterError::Spawn {
            what: what.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Command {
            what,
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        })
    }
}

/// Whether network namespaces can be used here (root, `ip netns`,
/// `iptables` and `tc` present); the reason if not.
pub fn netns_available() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("not running as root".into());
    }
    let probe = format!("{NS_PREFIX}probe");
    let _ = run_cmd("ip", &["netns", "del", &probe]);
    run_cmd("ip", &["netns", "add", &probe]).map_err(|e| format!("ip netns does not work: {e}"))?;
    let iptables = run_cmd("ip", &["netns", "exec", &probe, "iptables", "-L", "INPUT", "-n"]);
    let tc = run_cmd("ip", &["netns", "exec", &probe, "tc", "qdisc", "show"]);
    let _ = run_cmd("ip", &["netns", "del", &probe]);
    iptables.map_err(|e| format!("iptables does not work in a namespace: {e}"))?;
    tc.map_err(|e| format!("tc does not work in a namespace: {e}"))?;
    Ok(())
}

/// Whether `tc netem` works here (the kernel needs `sch_netem`); why not.
pub fn netem_available() -> Result<(), String> {
    let probe = format!("{NS_PREFIX}netem");
    let _ = run_cmd("ip", &["netns", "del", &probe]);
    run_cmd("ip", &["netns", "add", &probe]).map_err(|e| e.to_string())?;
    let r = run_cmd(
        "ip",
        &[
            "netns", "exec", &probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ],
    );
    let _ = run_cmd("ip", &["netns", "del", &probe]);
    r.map_err(|e| format!("tc netem does not work (no sch_netem in this kernel?): {e}"))
}

/// Path of libfaketime's preload library, if installed.
pub fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// One node process slot.
#[derive(Debug)]
pub struct Node {
    /// Raft id (1-based).
    pub id: u64,
    /// Its address.
    pub ip: String,
    /// Raft address.
    pub raft_addr: String,
    /// Client API address.
    pub client_addr: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log file.
    pub log: PathBuf,
    /// The running process.
    pub child: Option<Child>,
    /// SIGSTOPped by the nemesis.
    pub paused: bool,
    /// `FAKETIME` spec it runs under, if any.
    pub faketime: Option<String>,
}

impl Node {
    /// The member record of this node.
    pub fn member(&self) -> MemberAddr {
        MemberAddr {
            id: self.id,
            raft_addr: self.raft_addr.clone(),
            client_addr: self.client_addr.clone(),
        }
    }

    fn pid(&self) -> Option<nix::unistd::Pid> {
        let id = self.child.as_ref()?.id();
        i32::try_from(id).ok().map(nix::unistd::Pid::from_raw)
    }
}

/// How to start the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes (3 or 5 normally).
    pub nodes: usize,
    /// The `driftlock` binary.
    pub binary: PathBuf,
    /// Run directory (logs, data).
    pub run_dir: PathBuf,
    /// Use network namespaces.
    pub netns: bool,
    /// Extra `serve` flags for every node.
    pub extra_args: Vec<String>,
}

/// The running cluster.
pub struct Cluster {
    /// Node slots, index = id - 1.
    pub nodes: Vec<Node>,
    /// Whether the nodes live in namespaces.
    pub netns: bool,
    opts: ClusterOptions,
    admin: Client,
}

fn ns_name(id: u64) -> String {
    format!("{NS_PREFIX}{id}")
}

/// Removes namespaces, veths and the bridge of an earlier run.
pub fn cleanup_netns(max_nodes: u64) {
    for id in 1..=max_nodes {
        let _ = run_cmd("ip", &["netns", "del", &ns_name(id)]);
        let _ = run_cmd("ip", &["link", "del", &format!("{NS_PREFIX}v{id}")]);
    }
    let _ = run_cmd("ip", &["link", "del", BRIDGE]);
}

fn setup_netns(nodes: u64) -> Result<(), ClusterError> {
    cleanup_netns(nodes.max(9));
    run_cmd("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run_cmd("ip", &["addr", "add", &format!("{HOST_IP}/24"), "dev", BRIDGE])?;
    run_cmd("ip", &["link", "set", BRIDGE, "up"])?;
    for id in 1..=nodes {
        let ns = ns_name(id);
        let host_end = format!("{NS_PREFIX}v{id}");
        let ns_end = format!("{NS_PREFIX}p{id}");
        run_cmd("ip", &["netns", "add", &ns])?;
        run_cmd(
            "ip",
            &["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end],
        )?;
        run_cmd("ip", &["link", "set", &host_end, "master", BRIDGE])?;
        run_cmd("ip", &["link", "set", &host_end, "up"])?;
        run_cmd("ip", &["link", "set", &ns_end, "netns", &ns])?;
        run_cmd(
            "ip",
            &["netns", "exec", &ns, "ip", "link", "set", &ns_end, "name", "eth0"],
        )?;
        run_cmd(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("10.77.0.{}/24", 10 + id),
                "dev",
                "eth0",
            ],
        )?;
        run_cmd("ip", &["netns", "exec", &ns, "ip", "link", "set", "eth0", "up"])?;
        run_cmd("ip", &["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// A free port on `ip` (bound and released).
fn free_port(ip: &str) -> Result<u16, ClusterError> {
    let l = std::net::TcpListener::bind((ip, 0)).map_err(|source| ClusterError::Io {
        path: PathBuf::from(format!("{ip}:0")),
        source,
    })?;
    l.local_addr().map(|a| a.port()).map_err(|source| ClusterError::Io {
        path: PathBuf::from(format!("{ip}:0")),
        source,
    })
}

/// A client for the harness with short timeouts.
pub async fn harness_client(endpoints: Vec<String>, name: &str) -> Result<Client, ClusterError> {
    let config = ClientConfig {
        client_name: name.to_owned(),
        request_timeout_ms: 1_000,
        op_deadline_ms: 5_000,
        health_report_interval_ms: 0,
        ..ClientConfig::new(endpoints)
    };
    Client::connect_with(config)
        .await
        .map_err(|e| ClusterError::Client(e.to_string()))
}

/// Starts one node process.
fn spawn_node(opts: &ClusterOptions, node: &Node) -> Result<Child, ClusterError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .map_err(|source| ClusterError::Io {
            path: node.log.clone(),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| ClusterError::Io {
        path: node.log.clone(),
        source,
    })?;
    let mut cmd = if opts.netns {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns_name(node.id)]).arg(&opts.binary);
        c
    } else {
        Command::new(&opts.binary)
    };
    cmd.args(["serve", "--id", &node.id.to_string()])
        .args(["--raft-addr", &node.raft_addr, "--client-addr", &node.client_addr])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .args(["--heartbeat-ms", "50", "--election-timeout-min-ms", "300"])
        .args(["--election-timeout-max-ms", "600", "--health-interval-ms", "1000"])
        .args(&opts.extra_args)
        .arg("--exit-with-parent")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if let Some(spec) = &node.faketime {
        if let Some(lib) = libfaketime() {
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME", spec)
                .env("FAKETIME_NO_CACHE", "1");
        }
    }
    cmd.spawn().map_err(|source| ClusterError::Spawn {
        what: format!("{} serve", opts.binary.display()),
        source,
    })
}

impl Cluster {
    /// Creates the namespaces (if asked), starts every node and initializes
    /// the cluster; returns once a leader is elected.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        let n = opts.nodes as u64;
        if opts.netns {
            setup_netns(n)?;
        }
        let mut nodes = Vec::new();
        for id in 1..=n {
            let (ip, raft_addr, client_addr) = if opts.netns {
                let ip = format!("10.77.0.{}", 10 + id);
                (ip.clone(), format!("{ip}:{RAFT_PORT}"), format!("{ip}:{CLIENT_PORT}"))
            } else {
                let ip = format!("127.0.0.{}", 10 + id);
                let raft = format!("{ip}:{}", free_port(&ip)?);
                let client = format!("{ip}:{}", free_port(&ip)?);
                (ip, raft, client)
            };
            nodes.push(Node {
                id,
                ip,
                raft_addr,
                client_addr,
                data_dir: opts.run_dir.join(format!("n{id}-data")),
                log: opts.run_dir.join(format!("n{id}.log")),
                child: None,
                paused: false,
                faketime: None,
            });
        }
        for node in &mut nodes {
            node.child = Some(spawn_node(&opts, node)?);
        }
        let kill_all = |nodes: &mut Vec<Node>| {
            for n in nodes.iter_mut() {
                if let Some(mut c) = n.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            if opts.netns {
                cleanup_netns(opts.nodes as u64);
            }
        };
        // The client library needs a reachable endpoint to connect.
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            while tokio::net::TcpStream::connect(&node.client_addr).await.is_err() {
                if Instant::now() > deadline {
                    let msg = format!("node {} did not listen (see {})", node.id, node.log.display());
                    kill_all(&mut nodes);
                    return Err(ClusterError::Timeout(msg));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let endpoints = nodes.iter().map(|n| n.client_addr.clone()).collect();
        let admin = match harness_client(endpoints, "jepsen-admin").await {
            Ok(a) => a,
            Err(e) => {
                kill_all(&mut nodes);
                return Err(e);
            }
        };
        let cluster = Cluster {
            nodes,
            netns: opts.netns,
            opts,
            admin,
        };
        let members = cluster.nodes.iter().map(Node::member).collect();
        let first = cluster.nodes[0].client_addr.clone();
        cluster
            .admin
            .admin_at(&first, AdminRequest::Init { members })
            .await
            .map_err(|e| ClusterError::Client(format!("init: {e}")))?;
        cluster.wait_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Client API addresses of all nodes.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client_addr.clone()).collect()
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.opts.run_dir
    }

    /// Starts (or restarts) node `i` on its data directory, under its
    /// `faketime` spec if it has one.
    pub fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        let child = spawn_node(&self.opts, &self.nodes[i])?;
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
        Ok(())
    }

    /// Waits until node `i` answers status.
    pub async fn wait_up(&self, i: usize, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.admin.status_of(&self.nodes[i].client_addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout(format!(
                    "node {} did not come up (see {})",
                    self.nodes[i].id,
                    self.nodes[i].log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader's index as some running node reports it.
    pub async fn leader(&self) -> Option<usize> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_none() || n.paused {
                continue;
            }
            if let Ok(s) = self.admin.status_of(&n.client_addr).await {
                if s.role == Role::Leader {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Waits for a leader; returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize, ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader().await {
                return Ok(i);
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout(format!("no leader within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs node `i` (resuming it first if paused, so it dies at once).
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        node.paused = false;
    }

    /// SIGSTOP (`stop = true`) or SIGCONT node `i`.
    pub fn pause(&mut self, i: usize, stop: bool) {
        let node = &mut self.nodes[i];
        if let Some(pid) = node.pid() {
            let sig = if stop {
                nix::sys::signal::Signal::SIGSTOP
            } else {
                nix::sys::signal::Signal::SIGCONT
            };
            let _ = nix::sys::signal::kill(pid, sig);
            node.paused = stop;
        }
    }

    /// Commands `iptables` in node `i`'s namespace.
    fn ns_cmd(&self, i: usize, args: &[&str]) -> Result<(), ClusterError> {
        let ns = ns_name(self.nodes[i].id);
        let mut full = vec!["netns", "exec", ns.as_str()];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// Cuts the links `(a, b)` (both directions) by dropping, inside each
    /// namespace, what comes from the other node. Namespaces only.
    pub fn block(&self, pairs: &[(usize, usize)]) -> Result<(), ClusterError> {
        for &(a, b) in pairs {
            for (x, y) in [(a, b), (b, a)] {
                self.ns_cmd(x, &["iptables", "-A", "INPUT", "-s", &self.nodes[y].ip, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal_partitions(&self) {
        if !self.netns {
            return;
        }
        for i in 0..self.nodes.len() {
            let _ = self.ns_cmd(i, &["iptables", "-F", "INPUT"]);
        }
    }

    /// Adds delay and loss to every node's interface (`tc netem`).
    pub fn netem(&self, delay_ms: u64, jitter_ms: u64, loss_pct: u64) -> Result<(), ClusterError> {
        for i in 0..self.nodes.len() {
            self.ns_cmd(
                i,
                &[
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    "eth0",
                    "root",
                    "netem",
                    "delay",
                    &format!("{delay_ms}ms"),
                    &format!("{jitter_ms}ms"),
                    "loss",
                    &format!("{loss_pct}%"),
                ],
            )?;
        }
        Ok(())
    }

    /// Removes the netem qdiscs.
    pub fn heal_netem(&self) {
        if !self.netns {
            return;
        }
        for i in 0..self.nodes.len() {
            let _ = self.ns_cmd(i, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
        }
    }

    /// Hands Raft leadership to node index `to`.
    pub async fn transfer_leader(&self, to: usize) -> Result<(), ClusterError> {
        self.admin
            .admin(AdminRequest::TransferLeader { to: self.nodes[to].id })
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Client(e.to_string()))
    }

    /// Makes these node indexes the voters.
    pub async fn set_voters(&self, voters: &[usize]) -> Result<(), ClusterError> {
        let voters = voters.iter().map(|&i| self.nodes[i].id).collect();
        self.admin
            .admin(AdminRequest::ChangeVoters { voters })
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Client(e.to_string()))
    }

    /// Adds node index `i` as a learner (waits for it to catch up).
    pub async fn add_learner(&self, i: usize) -> Result<(), ClusterError> {
        self.admin
            .admin(AdminRequest::AddLearner {
                member: self.nodes[i].member(),
            })
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Client(e.to_string()))
    }

    /// The voter ids some node reports.
    pub async fn voters(&self) -> Option<Vec<u64>> {
        for n in &self.nodes {
            if n.child.is_none() || n.paused {
                continue;
            }
            if let Ok(s) = self.admin.status_of(&n.client_addr).await {
                return Some(s.voters.iter().map(|(id, _)| *id).collect());
            }
        }
        None
    }

    /// Stops every node and removes the namespaces.
    pub fn shutdown(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if self.netns {
            cleanup_netns(self.nodes.len() as u64);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
