//! Mutual TLS for both ports (docs/security.md): loading the PEM files,
//! building rustls configurations, and telling who is on the other end.
//!
//! Every certificate is issued by the cluster's own CA (`driftlock cert`,
//! [`crate::pki`]). A certificate's subject says who holds it:
//!
//! - a **node** certificate has CN `node-<id>` and OU `node`, and names
//!   [`NODE_SERVER_NAME`] and `node-<id>.driftlock.internal` as DNS names:
//!   clients verify a node by the first, Raft peers verify each other by
//!   the second, so a client certificate can never pose as a node;
//! - a **client** certificate has CN `<principal>` and OU `client`, or OU
//!   `admin` for an administrator.
//!
//! Nothing here trusts anything but the CA: a certificate from another CA,
//! or no certificate, fails the handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The TLS library the configurations are built with, for callers that
/// hold them.
pub use rustls;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The DNS name every node certificate carries and every client verifies.
pub const NODE_SERVER_NAME: &str = "node.driftlock.internal";

/// The DNS name only node `id`'s certificate carries: what a Raft peer
/// verifies when it dials node `id`.
pub fn node_server_name(id: u64) -> String {
    format!("node-{id}.driftlock.internal")
}

/// The organizational unit of a node certificate.
pub const OU_NODE: &str = "node";
/// The organizational unit of an ordinary client certificate.
pub const OU_CLIENT: &str = "client";
/// The organizational unit of an administrator's client certificate.
pub const OU_ADMIN: &str = "admin";

/// The three PEM files of one party: the cluster CA's certificate, this
/// party's certificate (chain) and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate: the only trust root.
    pub ca: PathBuf,
    /// This party's certificate, leaf first.
    pub cert: PathBuf,
    /// This party's private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `<name>.pem` and `<name>.key` in `dir`, as `driftlock
    /// cert` writes them.
    pub fn in_dir(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// A TLS file or configuration that cannot be used; the message names the
/// file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {detail}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS or the PEM parser said.
        detail: String,
    },
    /// A certificate file holds no certificate.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The certificates or key do not make a usable configuration (wrong
    /// key for the certificate, a CA certificate rustls refuses, …).
    #[error("TLS configuration from {what}: {detail}")]
    Config {
        /// The files involved.
        what: String,
        /// What rustls said.
        detail: String,
    },
    /// A peer's certificate does not name a driftlock party.
    #[error("peer certificate: {0}")]
    Identity(String),
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |detail: String| TlsError::Read {
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn roots(files: &TlsFiles) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(&files.ca)? {
        roots.add(ca).map_err(|e| TlsError::Config {
            what: files.ca.display().to_string(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(files: &TlsFiles, e: impl std::fmt::Display) -> TlsError {
    TlsError::Config {
        what: format!("{}, {}", files.cert.display(), files.key.display()),
        detail: e.to_string(),
    }
}

/// The configuration a node's listeners accept with: its own certificate,
/// and a client certificate from the cluster CA required of every peer.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(files)?), provider())
        .build()
        .map_err(|e| config_error(files, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(files, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| config_error(files, e))?;
    Ok(Arc::new(config))
}

/// The configuration a client (or a node dialing a peer) connects with:
/// the cluster CA as the only root, and its own certificate for the server
/// to check.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(files, e))?
        .with_root_certificates(roots(files)?)
        .with_client_auth_cert(certs(&files.cert)?, key(&files.key)?)
        .map_err(|e| config_error(files, e))?;
    Ok(Arc::new(config))
}

/// `name` as the server name to verify a node's certificate by:
/// [`NODE_SERVER_NAME`] for clients, [`node_server_name`] for Raft peers.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|e| TlsError::Identity(format!("'{name}' is no server name: {e}")))
}

/// Who holds a certificate: declared in [`crate::auth`] (the state
/// machine, which links no TLS, records it as a command's proposer).
pub use crate::auth::Principal;

/// The principal a verified peer certificate names: its CN and OU.
pub fn principal_of(cert: &CertificateDer<'_>) -> Result<Principal, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| TlsError::Identity(format!("does not parse: {e}")))?;
    let subject = parsed.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_owned)
    };
    let cn = first(&mut subject.iter_common_name()).ok_or_else(|| TlsError::Identity("no common name".into()))?;
    let ou = first(&mut subject.iter_organizational_unit()).unwrap_or_default();
    match ou.as_str() {
        OU_NODE => {
            let id = cn
                .strip_prefix("node-")
                .and_then(|id| id.parse::<u64>().ok())
                .filter(|id| *id > 0)
                .ok_or_else(|| TlsError::Identity(format!("node certificate with common name '{cn}'")))?;
            Ok(Principal::Node(id))
        }
        OU_CLIENT | OU_ADMIN if !cn.is_empty() => Ok(Principal::Client {
            name: cn,
            admin: ou == OU_ADMIN,
        }),
        other => Err(TlsError::Identity(format!(
            "organizational unit '{other}' is not node, client or admin"
        ))),
    }
}

/// What a certificate file says about its holder: who, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The principal the leaf certificate names.
    pub principal: Principal,
    /// End of the leaf certificate's validity, seconds since the Unix epoch.
    pub not_after_unix_s: i64,
}

/// Reads the leaf (first) certificate of a PEM file.
pub fn certificate_info(path: &Path) -> Result<CertificateInfo, TlsError> {
    let leaf = certs(path)?.into_iter().next().ok_or_else(|| TlsError::NoCertificate {
        path: path.to_path_buf(),
    })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        detail: format!("certificate does not parse: {e}"),
    })?;
    let not_after_unix_s = parsed.validity().not_after.timestamp();
    let principal = principal_of(&leaf).map_err(|e| TlsError::Read {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(CertificateInfo {
        principal,
        not_after_unix_s,
    })
}

/// The principal of the other end of a server-side TLS connection: its
/// verified client certificate's subject.
pub fn peer_principal(conn: &rustls::ServerConnection) -> Result<Principal, TlsError> {
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| TlsError::Identity("no client certificate".into()))?;
    principal_of(cert)
}

/// Runs the server side of the TLS handshake on an accepted connection and
/// returns the stream with the verified peer's principal. The caller bounds
/// it with a timeout: a peer that stops sending mid-handshake would hold it
/// forever otherwise.
pub async fn accept(
    config: Arc<rustls::ServerConfig>,
    stream: tokio::net::TcpStream,
) -> Result<(crate::service::BoxedIo, Principal), TlsError> {
    let tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(stream)
        .await
        .map_err(|e| TlsError::Identity(format!("TLS handshake: {e}")))?;
    let principal = peer_principal(tls.get_ref().1)?;
    Ok((Box::new(tls), principal))
}

#[cfg(test)]
#[cfg(feature = "pki")]
mod tests {
    use super::*;
    use crate::pki::{create_ca, issue, Subject};
    use crate::service::Security;
    use std::time::Duration;

    /// A CA with one node and one client, in a temporary directory.
    fn pki(dir: &Path) -> (TlsFiles, TlsFiles) {
        create_ca(dir, "test", 30).unwrap();
        issue(dir, dir, &Subject::Node { id: 1, hosts: vec![] }, 30).unwrap();
        issue(
            dir,
            dir,
            &Subject::Client {
                name: "alice".into(),
                admin: false,
            },
            30,
        )
        .unwrap();
        (TlsFiles::in_dir(dir, "node-1"), TlsFiles::in_dir(dir, "alice"))
    }

    /// Accepts one connection with `server` and returns the principal of
    /// the client's certificate, or the handshake error.
    async fn accept_one(
        listener: tokio::net::TcpListener,
        server: Arc<rustls::ServerConfig>,
    ) -> Result<Principal, String> {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        accept(server, stream)
            .await
            .map(|(_, principal)| principal)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn certificate_info_names_the_holder_and_the_end_of_validity() {
        let dir = tempfile::tempdir().unwrap();
        let (node, alice) = pki(dir.path());
        let info = certificate_info(&node.cert).unwrap();
        assert_eq!(info.principal, Principal::Node(1));
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let days = (info.not_after_unix_s - now_s) / 86_400;
        assert!((29..=30).contains(&days), "valid for {days} days, issued for 30");
        assert!(matches!(
            certificate_info(&alice.cert).unwrap().principal,
            Principal::Client { ref name, admin: false } if name == "alice"
        ));
        let err = certificate_info(&alice.key).unwrap_err().to_string();
        assert!(err.contains("alice.key"), "{err}");
    }

    #[tokio::test]
    async fn only_a_certificate_of_the_cluster_ca_gets_through() {
        let dir = tempfile::tempdir().unwrap();
        let (node, alice) = pki(dir.path());
        let other = tempfile::tempdir().unwrap();
        let (_, mallory) = pki(other.path());
        let server = server_config(&node).unwrap();
        for (client, expect_ok) in [(&alice, true), (&mallory, false)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let accepted = tokio::spawn(accept_one(listener, server.clone()));
            let security = Security::Tls(client_config(client).unwrap());
            let opened = security.open(&addr, NODE_SERVER_NAME, Duration::from_secs(5)).await;
            let accepted = accepted.await.unwrap();
            if expect_ok {
                assert!(opened.is_ok(), "{:?}", opened.err());
                assert_eq!(
                    accepted,
                    Ok(Principal::Client {
                        name: "alice".into(),
                        admin: false
                    })
                );
            } else {
                // The other CA's client does not trust our node either.
                assert!(opened.is_err(), "a foreign CA's client got through");
                assert!(accepted.is_err());
            }
        }
        // No client certificate at all: the server refuses.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = tokio::spawn(accept_one(listener, server.clone()));
        let mut roots = rustls::RootCertStore::empty();
        for ca in certs(&node.ca).unwrap() {
            roots.add(ca).unwrap();
        }
        let anonymous = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let _ = Security::Tls(Arc::new(anonymous))
            .open(&addr, NODE_SERVER_NAME, Duration::from_secs(5))
            .await;
        assert!(
            accepted.await.unwrap().is_err(),
            "a client without a certificate got through"
        );
        // A client verifying a specific node refuses another node.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _accepted = tokio::spawn(accept_one(listener, server));
        let wrong = Security::Tls(client_config(&alice).unwrap())
            .open(&addr, &node_server_name(2), Duration::from_secs(5))
            .await;
        assert!(wrong.is_err(), "node 1's certificate passed for node 2");
    }
}
