//! The node processes of one cluster together: bring-up, leader lookups,
//! stopping all.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use driftlock_proto::pki::{self, Subject};
use driftlock_proto::tls::TlsFiles;
use driftlock_proto::{AdminRequest, MemberAddr, NodeStatus, Role, Security};
use tokio::time::Instant;

use crate::process::ERROR_TAIL_LINES;
use crate::{LaunchError, NodeProcess, NodeSpec, INIT_TIMEOUT, STATUS_CALL_TIMEOUT};

/// How often leader waits poll the nodes.
const LEADER_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Lines per node in the log tails of a failed leader wait.
const LEADER_TAIL_LINES: usize = 8;

/// What [`Cluster::bring_up`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BringUp {
    /// Whether this bring-up initialized the cluster (no node had a
    /// membership yet); `false` when the nodes restarted on existing data.
    pub initialized: bool,
    /// Index (in [`Cluster::nodes`]) of the leader found.
    pub leader: usize,
}

/// The node processes of one cluster, all started from one `driftlock`
/// binary. Nodes are addressed by their index in [`nodes`](Self::nodes),
/// in the order they were added (node ids are whatever the specs say).
///
/// Dropping the cluster SIGKILLs every running node; call
/// [`terminate_all`](Self::terminate_all) first for a clean stop.
#[derive(Debug)]
pub struct Cluster {
    exe: PathBuf,
    /// The nodes, running or not.
    pub nodes: Vec<NodeProcess>,
    /// Where [`secure`](Self::secure) keeps the certificates, once it ran.
    certs: Option<PathBuf>,
    /// How this launcher reaches the nodes.
    security: Security,
}

/// The name of the administrator certificate [`Cluster::secure`] makes.
pub const ADMIN_CERT: &str = "admin";

/// Validity of the certificates [`Cluster::secure`] makes, days.
const CERT_VALID_DAYS: u32 = 365;

impl Cluster {
    /// A cluster of these nodes, none started yet.
    pub fn new(exe: impl Into<PathBuf>, specs: impl IntoIterator<Item = NodeSpec>) -> Cluster {
        let exe = exe.into();
        let nodes = specs.into_iter().map(|s| NodeProcess::new(exe.clone(), s)).collect();
        Cluster {
            exe,
            nodes,
            certs: None,
            security: Security::Insecure,
        }
    }

    /// Runs every node, present and added later, with mutual TLS: makes
    /// what is missing in `certs_dir` (a CA, a certificate per node, an
    /// administrator client certificate [`ADMIN_CERT`]; existing files are
    /// kept, so a restarted cluster keeps its CA) and talks to the nodes
    /// with the administrator certificate.
    pub fn secure(&mut self, certs_dir: &Path) -> Result<(), LaunchError> {
        let admin = Subject::Client {
            name: ADMIN_CERT.into(),
            admin: true,
        };
        let pki_error = |source: pki::PkiError| LaunchError::Certificates {
            dir: certs_dir.to_path_buf(),
            message: source.to_string(),
        };
        pki::ensure(certs_dir, "driftlock", &[admin], CERT_VALID_DAYS).map_err(pki_error)?;
        let files = TlsFiles::in_dir(certs_dir, ADMIN_CERT);
        self.security = Security::from_files(Some(&files)).map_err(|e| LaunchError::Certificates {
            dir: certs_dir.to_path_buf(),
            message: e.to_string(),
        })?;
        self.certs = Some(certs_dir.to_path_buf());
        for i in 0..self.nodes.len() {
            self.secure_node(i)?;
        }
        Ok(())
    }

    /// Gives node `i` its certificate (made if missing) and the launcher's
    /// security, when the cluster is [`secure`](Self::secure).
    fn secure_node(&mut self, i: usize) -> Result<(), LaunchError> {
        let Some(dir) = &self.certs else {
            return Ok(());
        };
        let node = &mut self.nodes[i];
        let subject = Subject::Node {
            id: node.spec.id,
            hosts: Vec::new(),
        };
        pki::ensure(dir, "driftlock", std::slice::from_ref(&subject), CERT_VALID_DAYS).map_err(|e| {
            LaunchError::Certificates {
                dir: dir.clone(),
                message: e.to_string(),
            }
        })?;
        node.spec.tls = Some(TlsFiles::in_dir(dir, &subject.file_stem()));
        node.security = self.security.clone();
        Ok(())
    }

    /// How this launcher reaches the nodes (plain TCP until
    /// [`secure`](Self::secure)).
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// The directory of the cluster's certificates, once
    /// [`secure`](Self::secure) ran.
    pub fn certs_dir(&self) -> Option<&Path> {
        self.certs.as_deref()
    }

    /// The `driftlock` binary the nodes run.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Adds a node slot (not started, not a member), with its certificate
    /// when the cluster is [`secure`](Self::secure); returns its index.
    pub fn add(&mut self, spec: NodeSpec) -> Result<usize, LaunchError> {
        self.nodes.push(NodeProcess::new(self.exe.clone(), spec));
        let i = self.nodes.len() - 1;
        if let Err(e) = self.secure_node(i) {
            self.nodes.pop();
            return Err(e);
        }
        Ok(i)
    }

    /// The member records of every node, for `Init`.
    pub fn members(&self) -> Vec<MemberAddr> {
        self.nodes.iter().map(|n| n.spec.member()).collect()
    }

    /// The client addresses of every node, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.spec.client_addr.clone()).collect()
    }

    /// Starts every node that is not running.
    pub fn spawn_all(&mut self) -> Result<(), LaunchError> {
        for n in &mut self.nodes {
            if !n.is_running() {
                n.spawn()?;
            }
        }
        Ok(())
    }

    /// Waits until every running node answers status, all within one
    /// `timeout`; returns their statuses in node order.
    pub async fn wait_all_up(&mut self, timeout: Duration) -> Result<Vec<NodeStatus>, LaunchError> {
        let deadline = Instant::now() + timeout;
        let mut statuses = Vec::new();
        for n in &mut self.nodes {
            if n.is_running() {
                statuses.push(n.wait_up_until(deadline, timeout).await?);
            }
        }
        Ok(statuses)
    }

    /// Initializes a new cluster of all the nodes, through the first one.
    pub async fn init(&self, timeout: Duration) -> Result<(), LaunchError> {
        let first = self.nodes.first().ok_or(LaunchError::Empty)?;
        let members = self.members();
        driftlock_proto::admin(
            &first.spec.client_addr,
            AdminRequest::Init { members },
            timeout,
            &self.security,
        )
        .await
        .map(|_| ())
        .map_err(|source| LaunchError::Init {
            id: first.spec.id,
            addr: first.spec.client_addr.clone(),
            source,
        })
    }

    /// The index of the first running, unpaused node that says it leads.
    pub async fn leader(&self) -> Option<usize> {
        self.leader_where(|_| true).await
    }

    async fn leader_where(&self, also: impl Fn(&NodeStatus) -> bool) -> Option<usize> {
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.is_running() || n.is_paused() {
                continue;
            }
            if let Ok(s) = n.status(STATUS_CALL_TIMEOUT).await {
                if s.role == Role::Leader && also(&s) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Waits up to `timeout` for a leader; returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize, LaunchError> {
        self.wait_leader_where(timeout, "", |_| true).await
    }

    /// Waits up to `timeout` for a leader that has applied an entry (its
    /// term's first, at least): it can serve linearizable requests.
    pub async fn wait_leader_applied(&self, timeout: Duration) -> Result<usize, LaunchError> {
        self.wait_leader_where(timeout, " that has applied an entry", |s| s.applied_index > 0)
            .await
    }

    async fn wait_leader_where(
        &self,
        timeout: Duration,
        what: &'static str,
        also: impl Fn(&NodeStatus) -> bool,
    ) -> Result<usize, LaunchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader_where(&also).await {
                return Ok(i);
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::NoLeader {
                    what,
                    timeout,
                    tails: self.log_tails(LEADER_TAIL_LINES),
                });
            }
            tokio::time::sleep(LEADER_POLL_INTERVAL).await;
        }
    }

    /// Starts every node not running, waits until all answer, initializes
    /// the cluster if no node has a membership yet (a new cluster; a
    /// restart on existing data skips it), and waits for a leader that has
    /// applied an entry, all within `timeout`.
    pub async fn bring_up(&mut self, timeout: Duration) -> Result<BringUp, LaunchError> {
        let deadline = Instant::now() + timeout;
        self.spawn_all()?;
        let statuses = self.wait_all_up(timeout).await?;
        let initialized = statuses.iter().all(|s| s.voters.is_empty());
        if initialized {
            let left = deadline.saturating_duration_since(Instant::now());
            self.init(left.clamp(STATUS_CALL_TIMEOUT, INIT_TIMEOUT)).await?;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let leader = self.wait_leader_applied(left).await?;
        Ok(BringUp { initialized, leader })
    }

    /// SIGKILLs every running node.
    pub fn kill_all(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }

    /// SIGTERMs every running node at once, gives them `grace` together to
    /// exit, then SIGKILLs the rest. Returns each node's outcome in order
    /// (`Ok(None)` for a node that was not running).
    pub async fn terminate_all(&mut self, grace: Duration) -> Vec<Result<Option<ExitStatus>, LaunchError>> {
        let deadline = Instant::now() + grace;
        let begun: Vec<Result<bool, LaunchError>> = self.nodes.iter_mut().map(|n| n.begin_terminate()).collect();
        let mut outcomes = Vec::new();
        for (n, begun) in self.nodes.iter_mut().zip(begun) {
            outcomes.push(match begun {
                Ok(true) => n.finish_terminate(deadline).await,
                Ok(false) => Ok(None),
                Err(e) => {
                    n.kill();
                    Err(e)
                }
            });
        }
        outcomes
    }

    /// The last `lines` lines of every node's log, each under a header
    /// naming the node and the file.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("== node {} ({})\n", n.spec.id, n.spec.log_file.display()));
            out.push_str(&n.log_tail(lines));
            out.push('\n');
        }
        out
    }

    /// [`log_tails`](Self::log_tails) with the number of lines error
    /// messages use.
    pub fn error_tails(&self) -> String {
        self.log_tails(ERROR_TAIL_LINES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_cluster_cannot_be_initialized() {
        let c = Cluster::new("/nonexistent/driftlock", Vec::new());
        assert!(matches!(
            c.init(Duration::from_millis(10)).await,
            Err(LaunchError::Empty)
        ));
        assert_eq!(c.leader().await, None);
    }

    #[tokio::test]
    async fn a_leader_wait_without_nodes_times_out_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let spec = NodeSpec::new(
            1,
            "127.0.0.1:9",
            "127.0.0.1:9",
            dir.path().join("d"),
            dir.path().join("n1.log"),
        );
        let c = Cluster::new("/nonexistent/driftlock", vec![spec]);
        let err = c.wait_leader(Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(err, LaunchError::NoLeader { .. }));
        assert!(err.to_string().contains("== node 1"), "{err}");
        assert_eq!(c.endpoints(), vec!["127.0.0.1:9".to_string()]);
    }
}
