//! A cluster of real `driftlock serve` processes on loopback for one test,
//! with its data, logs and certificates in a temporary directory.
//!
//! Nodes run mutual TLS as in production (a CA, node certificates and an
//! administrator certificate under `certs/`); the test talks to them with
//! [`TestCluster::security`] and [`TestCluster::client_config`], and
//! through [`TestCluster::proxy`] when it needs a [`FaultProxy`].
//! [`TestCluster::new_insecure`] runs plain TCP instead.
//!
//! Nodes get their own loopback addresses ([`crate::free_addr`]), a
//! metrics listener, `RUST_LOG=info` and fast Raft timing
//! ([`TEST_TIMING_ARGS`]) so elections take a fraction of a second. The
//! fallible operations have a `try_` form returning errors; the short forms
//! panic with the reason and the end of the node logs, which is what a test
//! wants. Dropping the cluster SIGKILLs its nodes, then removes the
//! directory.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use driftlock_launcher::{BringUp, Cluster, LaunchError, NodeSpec, Wrapper, ADMIN_CERT};
use driftlock_proto::pki::{self, Subject};
use driftlock_proto::tls::TlsFiles;
use driftlock_proto::{NodeStatus, Security};

use crate::exe::ExeError;
use crate::proxy::{FaultProxy, ProxyTls};

/// Fast Raft timing for tests: 50 ms heartbeats, elections after 300–600 ms.
pub const TEST_TIMING_ARGS: [&str; 6] = [
    "--heartbeat-ms",
    "50",
    "--election-timeout-min-ms",
    "300",
    "--election-timeout-max-ms",
    "600",
];

/// How long [`TestCluster::start`] waits for the nodes, `Init` and a leader.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`TestCluster::wait_up`] waits for one node.
pub const UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`TestCluster::terminate`] gives a node to exit after SIGTERM.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(15);

/// Why a test cluster could not be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The `driftlock` binary could not be found or built.
    #[error(transparent)]
    Exe(#[from] ExeError),
    /// A node process failed.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The temporary directory or an address could not be had.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Real node processes with their data in a temporary directory.
pub struct TestCluster {
    // Declared before `dir`: the nodes die before their directory goes.
    cluster: Cluster,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// `n` node slots (ids 1..=n) with test settings, nothing started: to
    /// adjust specs with [`spec_mut`](Self::spec_mut) before
    /// [`try_bring_up`](Self::try_bring_up), or to run nodes that are never
    /// initialized.
    pub fn new(n: u64) -> Result<TestCluster, TestkitError> {
        TestCluster::new_with_tls(n, true)
    }

    /// [`new`](Self::new) with nodes on plain TCP (`--insecure`), for the
    /// tests of that mode itself.
    pub fn new_insecure(n: u64) -> Result<TestCluster, TestkitError> {
        TestCluster::new_with_tls(n, false)
    }

    fn new_with_tls(n: u64, tls: bool) -> Result<TestCluster, TestkitError> {
        let exe = crate::driftlock_exe()?;
        let dir = tempfile::tempdir().map_err(|source| TestkitError::Io {
            what: "create a temporary directory",
            source,
        })?;
        let mut cluster = TestCluster {
            cluster: Cluster::new(exe, Vec::new()),
            dir,
        };
        if tls {
            let certs = cluster.dir.path().join("certs");
            cluster.cluster.secure(&certs)?;
        }
        for _ in 0..n {
            cluster.try_add_slot()?;
        }
        Ok(cluster)
    }

    /// Starts `n` nodes and initializes them as one cluster.
    pub async fn start(n: u64) -> TestCluster {
        TestCluster::start_with(n, |_| Vec::new()).await
    }

    /// Starts `n` nodes, node `id` with the extra `serve` flags `args(id)`.
    pub async fn start_with(n: u64, args: impl Fn(u64) -> Vec<String>) -> TestCluster {
        TestCluster::start_wrapped(n, args, |_| Wrapper::none()).await
    }

    /// Starts `n` nodes, node `id` with the extra `serve` flags `args(id)`,
    /// run under `wrapper(id)`.
    pub async fn start_wrapped(
        n: u64,
        args: impl Fn(u64) -> Vec<String>,
        wrapper: impl Fn(u64) -> Wrapper,
    ) -> TestCluster {
        match TestCluster::try_start_wrapped(n, args, wrapper).await {
            Ok(c) => c,
            Err(e) => panic!("test cluster of {n} nodes did not start: {e}"),
        }
    }

    /// [`start_wrapped`](Self::start_wrapped) returning the failure.
    pub async fn try_start_wrapped(
        n: u64,
        args: impl Fn(u64) -> Vec<String>,
        wrapper: impl Fn(u64) -> Wrapper,
    ) -> Result<TestCluster, TestkitError> {
        let mut cluster = TestCluster::new(n)?;
        for i in 0..cluster.len() {
            let id = cluster.id(i);
            let spec = cluster.spec_mut(i);
            spec.serve_args.extend(args(id));
            spec.wrapper = wrapper(id);
        }
        cluster.try_bring_up().await?;
        Ok(cluster)
    }

    /// Starts every node not running, initializes the cluster if it is new
    /// and waits for a leader (see [`Cluster::bring_up`]).
    pub async fn try_bring_up(&mut self) -> Result<BringUp, TestkitError> {
        Ok(self.cluster.bring_up(START_TIMEOUT).await?)
    }

    /// Adds a node slot (next id, not started, not a member); returns its
    /// index.
    pub fn try_add_slot(&mut self) -> Result<usize, TestkitError> {
        let id = self.cluster.nodes.len() as u64 + 1;
        let addr = || {
            crate::try_free_addr().map_err(|source| TestkitError::Io {
                what: "bind an ephemeral loopback port",
                source,
            })
        };
        let mut spec = NodeSpec::new(
            id,
            addr()?,
            addr()?,
            self.dir.path().join(format!("node{id}")),
            self.dir.path().join(format!("node{id}.log")),
        );
        spec.metrics_addr = Some(addr()?);
        spec.serve_args = TEST_TIMING_ARGS.iter().map(|a| a.to_string()).collect();
        spec.env = vec![("RUST_LOG".into(), "info".into())];
        Ok(self.cluster.add(spec)?)
    }

    /// [`try_add_slot`](Self::try_add_slot), panicking on failure.
    pub fn add_slot(&mut self) -> usize {
        self.try_add_slot()
            .unwrap_or_else(|e| panic!("cannot add a node slot: {e}"))
    }

    /// The launcher's cluster, for anything not wrapped here.
    pub fn launcher(&self) -> &Cluster {
        &self.cluster
    }

    /// The launcher's cluster, mutable.
    pub fn launcher_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }

    /// The temporary directory holding data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How the test reaches the nodes: with the administrator's certificate
    /// (plain TCP for an insecure cluster).
    pub fn security(&self) -> Security {
        self.cluster.security().clone()
    }

    /// The administrator's certificate files, `None` for an insecure
    /// cluster.
    pub fn admin_tls(&self) -> Option<TlsFiles> {
        self.cluster.certs_dir().map(|d| TlsFiles::in_dir(d, ADMIN_CERT))
    }

    /// Certificate files of the client principal `name` (made on first
    /// use; `admin` gives it the administrator role). Panics for an
    /// insecure cluster, which has no CA.
    pub fn client_tls(&self, name: &str, admin: bool) -> TlsFiles {
        let Some(dir) = self.cluster.certs_dir() else {
            panic!("an insecure test cluster has no certificates");
        };
        let subject = Subject::Client {
            name: name.into(),
            admin,
        };
        if let Err(e) = pki::ensure(dir, "driftlock", std::slice::from_ref(&subject), 30) {
            panic!("cannot make a certificate for {name}: {e}");
        }
        TlsFiles::in_dir(dir, &subject.file_stem())
    }

    /// The `DRIFTLOCK_CA/CERT/KEY` variables that let a `driftlock`
    /// command (or any client-library process) reach the cluster as its
    /// administrator; empty for an insecure cluster.
    pub fn cli_env(&self) -> Vec<(&'static str, std::path::PathBuf)> {
        self.admin_tls().map(|t| crate::cli::tls_env(&t)).unwrap_or_default()
    }

    /// The client library's defaults for `endpoints`, with the
    /// administrator's certificate.
    pub fn client_config(&self, endpoints: Vec<String>) -> driftlock_client::ClientConfig {
        driftlock_client::ClientConfig {
            tls: self.admin_tls(),
            ..driftlock_client::ClientConfig::new(endpoints)
        }
    }

    /// A fault proxy in front of node `i`'s client port; for a TLS cluster
    /// it terminates TLS, shows clients node `i`'s certificate and dials
    /// the node as the administrator.
    pub async fn proxy(&self, i: usize) -> FaultProxy {
        let tls = self
            .spec(i)
            .tls
            .as_ref()
            .zip(self.admin_tls())
            .map(|(node, admin)| ProxyTls::new(node, &admin).unwrap_or_else(|e| panic!("proxy certificates: {e}")));
        match FaultProxy::start_tls(self.client_addr(i), tls).await {
            Ok(p) => p,
            Err(e) => panic!("cannot start a proxy to node {}: {e}", self.id(i)),
        }
    }

    /// Number of node slots.
    pub fn len(&self) -> usize {
        self.cluster.nodes.len()
    }

    /// Whether there are no node slots.
    pub fn is_empty(&self) -> bool {
        self.cluster.nodes.is_empty()
    }

    /// What node `i` is started with.
    pub fn spec(&self, i: usize) -> &NodeSpec {
        &self.cluster.nodes[i].spec
    }

    /// What node `i` is started with, to change before its next start.
    pub fn spec_mut(&mut self, i: usize) -> &mut NodeSpec {
        &mut self.cluster.nodes[i].spec
    }

    /// Raft id of node `i` (`i + 1`).
    pub fn id(&self, i: usize) -> u64 {
        self.spec(i).id
    }

    /// Client API address of node `i`.
    pub fn client_addr(&self, i: usize) -> &str {
        &self.spec(i).client_addr
    }

    /// Raft address of node `i`.
    pub fn raft_addr(&self, i: usize) -> &str {
        &self.spec(i).raft_addr
    }

    /// Prometheus address of node `i`.
    pub fn metrics_addr(&self, i: usize) -> &str {
        match &self.spec(i).metrics_addr {
            Some(a) => a,
            None => panic!("node {} has no metrics address", self.id(i)),
        }
    }

    /// Client API addresses of every node.
    pub fn endpoints(&self) -> Vec<String> {
        self.cluster.endpoints()
    }

    /// Starts (or restarts) node `i` on its data directory.
    pub fn spawn(&mut self, i: usize) {
        if let Err(e) = self.cluster.nodes[i].spawn() {
            panic!("{e}");
        }
    }

    /// SIGKILLs node `i` (no-op if it is not running).
    pub fn kill(&mut self, i: usize) -> Option<ExitStatus> {
        self.cluster.nodes[i].kill()
    }

    /// SIGTERMs node `i`, waits for its exit (SIGKILL after
    /// [`TERMINATE_GRACE`]) and returns its exit status.
    pub async fn terminate(&mut self, i: usize) -> Option<ExitStatus> {
        match self.cluster.nodes[i].terminate(TERMINATE_GRACE).await {
            Ok(status) => status,
            Err(e) => panic!("{e}"),
        }
    }

    /// SIGSTOPs node `i`.
    pub fn pause(&mut self, i: usize) {
        if let Err(e) = self.cluster.nodes[i].pause() {
            panic!("{e}");
        }
    }

    /// SIGCONTs node `i`.
    pub fn resume(&mut self, i: usize) {
        if let Err(e) = self.cluster.nodes[i].resume() {
            panic!("{e}");
        }
    }

    /// Waits until node `i` answers status.
    pub async fn wait_up(&mut self, i: usize) -> NodeStatus {
        match self.cluster.nodes[i].wait_up(UP_TIMEOUT).await {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Waits for a leader among the running nodes; returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        match self.cluster.wait_leader(timeout).await {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        }
    }

    /// Hands Raft leadership to node `to` and returns once it leads. Asks
    /// whichever node leads, again while the answer is `Unavailable` (the
    /// target has not caught up yet: just restarted, say) or `NotLeader`
    /// (an election moved leadership meanwhile), for at most `timeout`;
    /// panics with the last answer after that.
    pub async fn transfer_leader(&self, to: usize, timeout: Duration) {
        use driftlock_proto::{AdminRequest, ApiError, RpcError};
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let leader = self.wait_leader(left).await;
            if leader == to {
                return;
            }
            let request = AdminRequest::TransferLeader { to: self.id(to) };
            let r = driftlock_proto::admin(self.client_addr(leader), request, left, &self.security()).await;
            match r {
                Ok(_) => return,
                Err(RpcError::Api(ApiError::Unavailable(_) | ApiError::NotLeader { .. }))
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("leadership did not move to node {}: {e}", self.id(to)),
            }
        }
    }

    /// Node `i`'s status, `None` if it does not answer within a second.
    pub async fn status(&self, i: usize) -> Option<NodeStatus> {
        self.cluster.nodes[i].status(Duration::from_secs(1)).await.ok()
    }

    /// The whole log of node `i`.
    pub fn log(&self, i: usize) -> String {
        self.cluster.nodes[i].log()
    }
}
