//! The two clusters under test, as child processes on loopback with their
//! data in a temporary directory: three `driftlock serve` nodes and three
//! `etcd` members, each with its default timing and fsync settings. The
//! driftlock nodes are started and found through `driftlock-testkit` (its
//! launcher and binary locator), like every other harness's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use driftlock_client::proto::tls::TlsFiles;
use driftlock_client::proto::Security;
use driftlock_client::{Client, ClientConfig};
use driftlock_testkit::{ExeError, LaunchError, NodeSpec};

use crate::etcd::{Budget, EtcdConn};

/// Errors while setting up or driving a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A process could not be started or a file written.
    #[error("{0}")]
    Io(String),
    /// The cluster did not reach the wanted state in time.
    #[error("{0}")]
    Timeout(String),
    /// A client call failed.
    #[error("{0}")]
    Client(String),
    /// A driftlock node process failed.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The driftlock binary could not be found or built.
    #[error(transparent)]
    Exe(#[from] ExeError),
}

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16, ClusterError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| ClusterError::Io(format!("bind: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| ClusterError::Io(format!("local addr: {e}")))
}

/// CPU time (user + system) a process has used, in clock ticks (1/100 s on
/// Linux), from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of a process, bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// The largest resident set size a process has had, bytes (`VmHWM`).
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:").map(|kib| kib * 1024)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Proc {
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self, program: &Path) -> Result<(), ClusterError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| ClusterError::Io(format!("{}: {e}", self.log.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| ClusterError::Io(format!("{}: {e}", self.log.display())))?;
        let mut cmd = Command::new(program);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl, which is async-signal-safe.
        #[allow(unsafe_code)]
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                // Die with the benchmark, even if it is killed.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| ClusterError::Io(format!("cannot start {}: {e}", program.display())))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// Whether driftlock clusters started from now on run plain TCP instead of
/// mutual TLS (`driftlock-bench … --plain-tcp`, to measure what TLS costs).
static PLAIN_TCP: AtomicBool = AtomicBool::new(false);

/// The client certificate of the secure cluster in use, if any.
static CLIENT_TLS: RwLock<Option<TlsFiles>> = RwLock::new(None);

/// Runs the driftlock clusters started from now on with plain TCP
/// (`true`) or mutual TLS (`false`, the default, as in production).
pub fn set_plain_tcp(plain: bool) {
    PLAIN_TCP.store(plain, Ordering::SeqCst);
}

/// Whether the clusters run plain TCP; for the reports.
pub fn plain_tcp() -> bool {
    PLAIN_TCP.load(Ordering::SeqCst)
}

/// How the nodes are reached, for the reports: `mutual TLS` or `plain
/// TCP`.
pub fn transport() -> &'static str {
    if plain_tcp() {
        "plain TCP"
    } else {
        "mutual TLS"
    }
}

/// Secures `nodes` with a CA and certificates in `certs_dir` (unless
/// [`plain_tcp`]) and makes [`client_config`] use the administrator's
/// certificate from then on.
pub fn secure(nodes: &mut driftlock_testkit::Cluster, certs_dir: &Path) -> Result<(), ClusterError> {
    if plain_tcp() {
        *CLIENT_TLS.write().unwrap_or_else(PoisonError::into_inner) = None;
        return Ok(());
    }
    nodes.secure(certs_dir)?;
    let files = TlsFiles::in_dir(certs_dir, driftlock_testkit::launcher::ADMIN_CERT);
    *CLIENT_TLS.write().unwrap_or_else(PoisonError::into_inner) = Some(files);
    Ok(())
}

/// The client certificate of the secure cluster in use, if any.
pub fn client_tls() -> Option<TlsFiles> {
    CLIENT_TLS.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Client settings for the cluster in use: [`ClientConfig::new`] with the
/// cluster's certificate (in a child process, with the certificate its
/// parent passed through [`tls_env`]).
pub fn client_config(endpoints: &[String]) -> ClientConfig {
    let mut c = ClientConfig::new(endpoints.to_vec());
    if let Some(files) = client_tls() {
        c.tls = Some(files);
    }
    c
}

/// How one-shot protocol calls reach the cluster in use.
pub fn security() -> Result<Security, ClusterError> {
    Security::from_files(client_tls().as_ref()).map_err(|e| ClusterError::Client(format!("tls: {e}")))
}

/// The `DRIFTLOCK_CA/CERT/KEY` variables a child process (a lock holder)
/// needs to reach the cluster in use; empty for plain TCP.
pub fn tls_env() -> Vec<(&'static str, PathBuf)> {
    match client_tls() {
        Some(t) => vec![
            (driftlock_client::CA_ENV, t.ca),
            (driftlock_client::CERT_ENV, t.cert),
            (driftlock_client::KEY_ENV, t.key),
        ],
        None => Vec::new(),
    }
}

/// A 3-node driftlock cluster.
pub struct DriftlockCluster {
    nodes: driftlock_testkit::Cluster,
    /// Client API addresses, node 1 first.
    pub endpoints: Vec<String>,
    // Declared last: the nodes die before their directory goes.
    _dir: tempfile::TempDir,
}

/// How long the driftlock cluster has to come up and elect a leader.
const DRIFTLOCK_START_TIMEOUT: Duration = Duration::from_secs(60);

impl DriftlockCluster {
    /// Starts three nodes with default settings plus `extra_args` and
    /// initializes them; their logs go beside their data, in the temporary
    /// directory.
    pub async fn start(extra_args: &[String]) -> Result<DriftlockCluster, ClusterError> {
        DriftlockCluster::start_logging_to(extra_args, None).await
    }

    /// [`start`](Self::start), with the node logs (`node<id>.log`) in
    /// `log_dir` when given, so that they outlive the cluster.
    pub async fn start_logging_to(
        extra_args: &[String],
        log_dir: Option<&Path>,
    ) -> Result<DriftlockCluster, ClusterError> {
        DriftlockCluster::start_with(extra_args, log_dir, false).await
    }

    /// [`start`](Self::start), every node also serving its HTTP endpoint
    /// (`--metrics-addr` on a free loopback port: `/metrics`, `/readyz`),
    /// found with [`metrics_addr`](Self::metrics_addr).
    pub async fn start_with_metrics(extra_args: &[String]) -> Result<DriftlockCluster, ClusterError> {
        DriftlockCluster::start_with(extra_args, None, true).await
    }

    async fn start_with(
        extra_args: &[String],
        log_dir: Option<&Path>,
        metrics: bool,
    ) -> Result<DriftlockCluster, ClusterError> {
        let exe = driftlock_testkit::driftlock_exe()?;
        let dir = tempfile::tempdir().map_err(|e| ClusterError::Io(format!("tempdir: {e}")))?;
        let log_dir = log_dir.unwrap_or(dir.path()).to_path_buf();
        let mut specs = Vec::new();
        for id in 1..=3u64 {
            let addr = || driftlock_testkit::try_free_addr().map_err(|e| ClusterError::Io(format!("bind: {e}")));
            let mut spec = NodeSpec::new(
                id,
                addr()?,
                addr()?,
                dir.path().join(format!("node{id}")),
                log_dir.join(format!("node{id}.log")),
            );
            if metrics {
                spec.metrics_addr = Some(addr()?);
            }
            spec.serve_args = extra_args.to_vec();
            specs.push(spec);
        }
        let mut nodes = driftlock_testkit::Cluster::new(exe, specs);
        secure(&mut nodes, &dir.path().join("certs"))?;
        nodes.bring_up(DRIFTLOCK_START_TIMEOUT).await?;
        Ok(DriftlockCluster {
            endpoints: nodes.endpoints(),
            nodes,
            _dir: dir,
        })
    }

    /// The last lines of every node's log.
    pub fn log_tails(&self) -> String {
        self.nodes.log_tails(8)
    }

    /// (Re)starts node `i` (0-based) on its data directory.
    pub fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        self.nodes.nodes[i].spawn()?;
        Ok(())
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes.nodes[i].kill();
    }

    /// Process id of node `i`, if running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes.nodes[i].pid()
    }

    /// Whether node `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes.nodes[i].is_running()
    }

    /// A client for administration and status.
    pub async fn admin_client(&self) -> Result<Client, ClusterError> {
        Client::connect_with(client_config(&self.endpoints))
            .await
            .map_err(|e| ClusterError::Client(e.to_string()))
    }

    /// Index of the node that says it leads, waiting up to `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize, ClusterError> {
        Ok(self.nodes.wait_leader(timeout).await?)
    }

    /// Waits until every running node has applied what the leader has.
    pub async fn wait_caught_up(&self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        let status_timeout = Duration::from_secs(2);
        loop {
            let leader = self.wait_leader(timeout).await?;
            let target = self.nodes.nodes[leader].status(status_timeout).await?.applied_index;
            let mut all = true;
            for n in self.nodes.nodes.iter().filter(|n| n.is_running()) {
                match n.status(status_timeout).await {
                    Ok(s) if s.applied_index >= target => {}
                    _ => all = false,
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout("driftlock nodes did not catch up".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Node `i`'s own status, one call of at most `timeout`.
    pub async fn status(&self, i: usize, timeout: Duration) -> Result<driftlock_proto::NodeStatus, ClusterError> {
        Ok(self.nodes.nodes[i].status(timeout).await?)
    }

    /// HTTP endpoint (`/metrics`, `/readyz`) of node `i`, `host:port`;
    /// `None` unless the cluster was started
    /// [`with metrics`](Self::start_with_metrics).
    pub fn metrics_addr(&self, i: usize) -> Option<&str> {
        self.nodes.nodes[i].spec.metrics_addr.as_deref()
    }

    /// Raft id of node `i`.
    pub fn node_id(&self, i: usize) -> u64 {
        self.nodes.nodes[i].id()
    }

    /// Data directory of node `i` (kept across restarts).
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes.nodes[i].spec.data_dir
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.nodes.len()
    }

    /// Whether the cluster has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.nodes.is_empty()
    }
}

/// Disk space allocated to the files under `path` (512-byte blocks, as
/// `du` counts), bytes. Files that vanish during the walk (a store
/// rotating its segments) count as 0.
pub fn dir_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.blocks() * 512);
    }
    let mut total = meta.blocks() * 512;
    for entry in std::fs::read_dir(path)? {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match dir_bytes(&entry.path()) {
            Ok(b) => total += b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// A 3-member etcd cluster.
pub struct EtcdCluster {
    exe: PathBuf,
    procs: Vec<Proc>,
    /// Client addresses (`host:port`), member 1 first.
    pub endpoints: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Finds `etcd`, installing Debian's `etcd-server` with apt-get when it is
/// missing.
pub fn etcd_exe() -> Result<PathBuf, ClusterError> {
    let candidates = ["/usr/bin/etcd", "/usr/local/bin/etcd"];
    if let Some(p) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Ok(p);
    }
    eprintln!("etcd not found: installing Debian's etcd-server with apt-get");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-q", "etcd-server"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        // The package lists may be missing on a fresh machine.
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "etcd-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| ClusterError::Io("etcd is not installed and `apt-get install etcd-server` failed".into()))
}

impl EtcdCluster {
    /// Starts three members with default timing and fsync.
    pub async fn start() -> Result<EtcdCluster, ClusterError> {
        let exe = etcd_exe()?;
        let dir = tempfile::tempdir().map_err(|e| ClusterError::Io(format!("tempdir: {e}")))?;
        let mut peers = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..3 {
            peers.push(format!("127.0.0.1:{}", free_port()?));
            clients.push(format!("127.0.0.1:{}", free_port()?));
        }
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{}=http://{p}", i + 1))
            .collect();
        let initial = initial.join(",");
        let mut procs = Vec::new();
        for i in 0..3 {
            let args: Vec<String> = vec![
                "--name".into(),
                format!("e{}", i + 1),
                "--data-dir".into(),
                dir.path().join(format!("e{}", i + 1)).display().to_string(),
                "--listen-client-urls".into(),
                format!("http://{}", clients[i]),
                "--advertise-client-urls".into(),
                format!("http://{}", clients[i]),
                "--listen-peer-urls".into(),
                format!("http://{}", peers[i]),
                "--initial-advertise-peer-urls".into(),
                format!("http://{}", peers[i]),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                "driftlock-bench".into(),
                "--logger".into(),
                "zap".into(),
                "--log-level".into(),
                "warn".into(),
            ];
            procs.push(Proc {
                args,
                log: dir.path().join(format!("e{}.log", i + 1)),
                child: None,
            });
        }
        let mut cluster = EtcdCluster {
            exe,
            procs,
            endpoints: clients,
            _dir: dir,
        };
        for i in 0..3 {
            cluster.spawn(i)?;
        }
        cluster.wait_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// (Re)starts member `i`.
    pub fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        self.procs[i].spawn(&self.exe)
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.procs[i].kill();
    }

    /// Process id of member `i`, if running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].pid()
    }

    /// Whether member `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.procs[i].child.is_some()
    }

    /// Member ids by index (from each member's status).
    pub async fn member_ids(&self) -> Result<Vec<u64>, ClusterError> {
        let mut ids = Vec::new();
        for i in 0..self.endpoints.len() {
            let mut c = EtcdConn::new(&self.endpoints[i..=i], 0, Budget::single(Duration::from_secs(2)))
                .map_err(|e| ClusterError::Client(e.to_string()))?;
            let s = c.status().await.map_err(|e| ClusterError::Client(e.to_string()))?;
            ids.push(s.header.map(|h| h.member_id).unwrap_or(0));
        }
        Ok(ids)
    }

    /// Index of the leader, waiting up to `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize, ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            for i in 0..self.endpoints.len() {
                if !self.is_running(i) {
                    continue;
                }
                let Ok(mut c) = EtcdConn::new(&self.endpoints[i..=i], 0, Budget::single(Duration::from_millis(500)))
                else {
                    continue;
                };
                if let Ok(s) = c.status().await {
                    let me = s.header.map(|h| h.member_id).unwrap_or(0);
                    if s.leader != 0 && s.leader == me {
                        return Ok(i);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout("no etcd leader".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
    }
}
