//! How this node's two ports authenticate (docs/security.md): mutual TLS
//! with the node's certificate, re-read on SIGHUP, or plain TCP under
//! `--insecure`. The same certificate serves both ports and is the client
//! certificate this node presents when it dials a peer or a leader.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use driftlock_proto::service::BoxedIo;
use driftlock_proto::tls::{self, Principal, TlsFiles};
use driftlock_proto::Security;

use crate::config::NodeConfig;

/// Why the node's TLS set-up cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// Neither certificates nor `--insecure` were given.
    #[error(
        "no certificates: give --tls-ca, --tls-cert and --tls-key (make them with `driftlock cert create-ca` and \
         `driftlock cert create-node {id}`), or --insecure for a test cluster without TLS"
    )]
    NoCertificates {
        /// This node's id, for the command suggested.
        id: u64,
    },
    /// A file is missing or unusable.
    #[error(transparent)]
    Files(#[from] tls::TlsError),
    /// The certificate is not this node's.
    #[error("{path} is {found}'s certificate, not node {id}'s (issue one with `driftlock cert create-node {id}`)")]
    WrongIdentity {
        /// The certificate file.
        path: String,
        /// Who it names.
        found: Principal,
        /// This node's id.
        id: u64,
    },
}

/// Whether and how this node's ports are secured.
#[derive(Clone)]
pub enum NodeSecurity {
    /// Plain TCP: every connection is [`Principal::Anonymous`] (tests only).
    Insecure,
    /// Mutual TLS with this node's certificate.
    Tls(Arc<NodeTls>),
}

/// Why an accepted connection is not served.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The peer closed the connection (or reset it) before sending a
    /// byte: not a failed handshake, and not counted as one.
    #[error("closed before the TLS handshake began")]
    ClosedBeforeHello,
    /// The handshake failed or did not finish in time.
    #[error("{0}")]
    Failed(String),
}

impl NodeSecurity {
    /// The set-up `[tls]` asks for, with the files read and checked.
    pub fn from_config(config: &NodeConfig) -> Result<NodeSecurity, TlsSetupError> {
        let t = &config.tls;
        if t.insecure {
            tracing::warn!(
                "INSECURE: --insecure: both ports run plain TCP without authentication; anyone who reaches them \
                 can take any lock and change the membership"
            );
            return Ok(NodeSecurity::Insecure);
        }
        let id = config.node.id;
        let (Some(ca), Some(cert), Some(key)) = (&t.ca, &t.cert, &t.key) else {
            return Err(TlsSetupError::NoCertificates { id });
        };
        let files = TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        };
        Ok(NodeSecurity::Tls(Arc::new(NodeTls::load(id, files)?)))
    }

    /// Runs the server side of a new connection: the TLS handshake within
    /// `timeout`, giving the stream and who is on the other end.
    pub async fn accept(
        &self,
        stream: tokio::net::TcpStream,
        timeout: Duration,
    ) -> Result<(BoxedIo, Principal), AcceptError> {
        // Replies are small and latency-bound, like requests.
        let _ = stream.set_nodelay(true);
        match self {
            NodeSecurity::Insecure => Ok((Box::new(stream), Principal::Anonymous)),
            NodeSecurity::Tls(node) => {
                let config = node.current().server;
                let handshake = async {
                    // A connection closed before its first byte is no
                    // handshake at all: a peer checking that the port lives
                    // (`failover.rs`), a load balancer's TCP check.
                    let mut first = [0u8; 1];
                    match stream.peek(&mut first).await {
                        Ok(0) => return Err(AcceptError::ClosedBeforeHello),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                            return Err(AcceptError::ClosedBeforeHello)
                        }
                        Ok(_) | Err(_) => {}
                    }
                    tls::accept(config, stream)
                        .await
                        .map_err(|e| AcceptError::Failed(e.to_string()))
                };
                match tokio::time::timeout(timeout, handshake).await {
                    Ok(accepted) => accepted,
                    Err(_) => Err(AcceptError::Failed(format!(
                        "TLS handshake not done within {} ms",
                        timeout.as_millis()
                    ))),
                }
            }
        }
    }

    /// How this node dials a peer's Raft port or a leader's client port:
    /// with its own certificate.
    pub fn dialer(&self) -> Security {
        match self {
            NodeSecurity::Insecure => Security::Insecure,
            NodeSecurity::Tls(node) => Security::Tls(node.current().client),
        }
    }

    /// The server name to verify node `id` by when dialing its Raft port.
    pub fn peer_name(id: u64) -> String {
        tls::node_server_name(id)
    }

    /// Seconds until this node's certificate expires (negative once it
    /// has), `None` under `--insecure`.
    pub fn expires_in_s(&self) -> Option<i64> {
        match self {
            NodeSecurity::Insecure => None,
            NodeSecurity::Tls(node) => Some(node.current().not_after_unix_s - unix_now_s()),
        }
    }
}

/// A certificate that expires within this many days makes `status` warn.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The warning `status` shows about this node's certificate, if any.
pub fn expiry_warning(expires_in_s: Option<i64>) -> Option<String> {
    let left_s = expires_in_s?;
    let days = left_s.div_euclid(86_400);
    if left_s <= 0 {
        Some(
            "this node's TLS certificate has EXPIRED: peers and clients refuse it; issue a new one and send SIGHUP"
                .into(),
        )
    } else if days < EXPIRY_WARNING_DAYS {
        Some(format!(
            "this node's TLS certificate expires in {days} days: issue a new one and send SIGHUP"
        ))
    } else {
        None
    }
}

fn unix_now_s() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// This node's certificate, key and CA, loaded into rustls configurations
/// that a SIGHUP replaces.
pub struct NodeTls {
    id: u64,
    files: TlsFiles,
    current: RwLock<Loaded>,
}

/// One loading of the files.
#[derive(Clone)]
struct Loaded {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    not_after_unix_s: i64,
}

impl NodeTls {
    /// Reads the files and checks the certificate is node `id`'s.
    pub fn load(id: u64, files: TlsFiles) -> Result<NodeTls, TlsSetupError> {
        let loaded = Self::read(id, &files)?;
        Ok(NodeTls {
            id,
            files,
            current: RwLock::new(loaded),
        })
    }

    fn read(id: u64, files: &TlsFiles) -> Result<Loaded, TlsSetupError> {
        let info = tls::certificate_info(&files.cert)?;
        if info.principal != Principal::Node(id) {
            return Err(TlsSetupError::WrongIdentity {
                path: files.cert.display().to_string(),
                found: info.principal,
                id,
            });
        }
        Ok(Loaded {
            server: tls::server_config(files)?,
            client: tls::client_config(files)?,
            not_after_unix_s: info.not_after_unix_s,
        })
    }

    fn current(&self) -> Loaded {
        match self.current.read() {
            Ok(l) => l.clone(),
            // A panic while swapping cannot leave a half-written value: the
            // swap is one assignment.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the files (SIGHUP). New connections use them; open ones
    /// keep the session they made. On an error the old ones stay in use.
    pub fn reload(&self) -> Result<(), TlsSetupError> {
        let loaded = Self::read(self.id, &self.files)?;
        match self.current.write() {
            Ok(mut l) => *l = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
        Ok(())
    }

    /// The files this node reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// Re-reads the certificates on every SIGHUP, for the life of the node.
pub async fn reload_on_sighup(security: NodeSecurity) {
    let NodeSecurity::Tls(node) = security else {
        return std::future::pending().await;
    };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP, certificates will not be reloaded: {e}");
            return std::future::pending().await;
        }
    };
    while hup.recv().await.is_some() {
        match node.reload() {
            Ok(()) => tracing::info!(cert = %node.files().cert.display(), "SIGHUP: TLS certificates reloaded"),
            Err(e) => tracing::error!("SIGHUP: TLS certificates NOT reloaded, the old ones stay in use: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_warnings_start_thirty_days_ahead() {
        assert_eq!(expiry_warning(None), None);
        assert_eq!(expiry_warning(Some(31 * 86_400)), None);
        let soon = expiry_warning(Some(29 * 86_400 + 5)).unwrap_or_default();
        assert!(soon.contains("expires in 29 days"), "{soon}");
        let gone = expiry_warning(Some(-5)).unwrap_or_default();
        assert!(gone.contains("EXPIRED"), "{gone}");
    }

    #[test]
    fn a_certificate_of_another_node_or_a_client_is_refused() {
        use driftlock_proto::pki::{create_ca, issue, Subject};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        create_ca(d, "test", 30).unwrap();
        issue(d, d, &Subject::Node { id: 2, hosts: vec![] }, 30).unwrap();
        issue(
            d,
            d,
            &Subject::Client {
                name: "alice".into(),
                admin: true,
            },
            30,
        )
        .unwrap();
        assert!(NodeTls::load(2, TlsFiles::in_dir(d, "node-2")).is_ok());
        for name in ["node-2", "alice"] {
            let err = NodeTls::load(1, TlsFiles::in_dir(d, name)).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("not node 1's")),
                "{name}: {err:?}"
            );
        }
    }

    #[test]
    fn a_failed_reload_keeps_the_old_certificate() {
        use driftlock_proto::pki::{create_ca, issue, Subject};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        create_ca(d, "test", 30).unwrap();
        issue(d, d, &Subject::Node { id: 1, hosts: vec![] }, 10).unwrap();
        let node = NodeTls::load(1, TlsFiles::in_dir(d, "node-1")).unwrap();
        let before = node.current().not_after_unix_s;
        std::fs::write(d.join("node-1.pem"), "garbage").unwrap();
        assert!(node.reload().is_err());
        assert_eq!(node.current().not_after_unix_s, before);
        // A renewed certificate (longer validity) is picked up.
        std::fs::remove_file(d.join("node-1.pem")).unwrap();
        std::fs::remove_file(d.join("node-1.key")).unwrap();
        issue(d, d, &Subject::Node { id: 1, hosts: vec![] }, 60).unwrap();
        node.reload().unwrap();
        assert!(node.current().not_after_unix_s > before + 40 * 86_400);
    }
}
