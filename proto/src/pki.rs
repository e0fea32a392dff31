//! Making the cluster's certificates (feature `pki`): a CA, node
//! certificates and client certificates, as PEM files, so that nobody needs
//! an `openssl` command. `driftlock cert …` and `driftlock dev` use it.
//!
//! The subjects follow [`crate::tls`]: node `N` is CN `node-N`, OU `node`,
//! with DNS names [`NODE_SERVER_NAME`] and `node-N.driftlock.internal`
//! (plus any extra hosts asked for); a client is CN `<name>`, OU `client` or
//! `admin`. Keys are ECDSA P-256. Certificates are valid from an hour ago
//! (clock skew between hosts) for `valid_days`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::tls::{node_server_name, NODE_SERVER_NAME, OU_ADMIN, OU_CLIENT, OU_NODE};

/// Default validity of a certificate `driftlock cert` makes, days.
pub const DEFAULT_VALID_DAYS: u32 = 365;

/// Default validity of the CA, days.
pub const DEFAULT_CA_VALID_DAYS: u32 = 3650;

/// What went wrong making or writing a certificate; the message names the
/// file or the step.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{}: {detail}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        detail: String,
    },
    /// A file exists already and would be overwritten.
    #[error("{} exists already; remove it first, or pick another directory", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// rcgen refused (a bad host name, a CA that is not one, …).
    #[error("{what}: {detail}")]
    Cert {
        /// The step.
        what: String,
        /// What rcgen said.
        detail: String,
    },
}

fn cert_err(what: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Cert {
        what: what.to_owned(),
        detail: e.to_string(),
    }
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    if path.exists() {
        return Err(PkiError::Exists { path: path.into() });
    }
    let io = |e: std::io::Error| PkiError::Io {
        path: path.into(),
        detail: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, contents.as_bytes()).map_err(io)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|e| PkiError::Io {
        path: path.into(),
        detail: e.to_string(),
    })
}

/// The files written for one party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Its certificate.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
}

/// Makes a CA in `dir`: `ca.pem` and `ca.key` (refuses to overwrite).
pub fn create_ca(dir: &Path, cluster_name: &str, valid_days: u32) -> Result<Written, PkiError> {
    let key = KeyPair::generate().map_err(cert_err("generate the CA key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("driftlock CA {cluster_name}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, valid_days);
    let cert = params.self_signed(&key).map_err(cert_err("sign the CA"))?;
    let written = Written {
        cert: dir.join("ca.pem"),
        key: dir.join("ca.key"),
    };
    write_new(&written.key, &key.serialize_pem(), true)?;
    write_new(&written.cert, &cert.pem(), false)?;
    Ok(written)
}

/// What to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Node `id`, reachable also under these extra host names or IPs
    /// (clients and peers verify nodes by the fixed DNS names, so these
    /// are only for other tools).
    Node {
        /// Raft id.
        id: u64,
        /// Extra DNS names or IP addresses.
        hosts: Vec<String>,
    },
    /// A client principal.
    Client {
        /// The principal's name (the certificate's CN).
        name: String,
        /// Issue with the administrator role.
        admin: bool,
    },
}

impl Subject {
    /// The file stem `driftlock cert` uses: `node-<id>` or the client name.
    pub fn file_stem(&self) -> String {
        match self {
            Subject::Node { id, .. } => format!("node-{id}"),
            Subject::Client { name, .. } => name.clone(),
        }
    }
}

/// Issues a certificate for `subject`, signed by the CA in `ca_dir`
/// (`ca.pem`, `ca.key`), written as `<stem>.pem` and `<stem>.key` in
/// `out_dir` (refuses to overwrite).
pub fn issue(ca_dir: &Path, out_dir: &Path, subject: &Subject, valid_days: u32) -> Result<Written, PkiError> {
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join("ca.key"))?).map_err(cert_err("read ca.key"))?;
    let issuer = Issuer::from_ca_cert_pem(&read(&ca_dir.join("ca.pem"))?, ca_key).map_err(cert_err("read ca.pem"))?;
    let key = KeyPair::generate().map_err(cert_err("generate a key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    match subject {
        Subject::Node { id, hosts } => {
            if *id == 0 {
                return Err(PkiError::Cert {
                    what: "node certificate".into(),
                    detail: "node ids start at 1".into(),
                });
            }
            dn.push(DnType::CommonName, format!("node-{id}"));
            dn.push(DnType::OrganizationalUnitName, OU_NODE);
            let mut names = vec![NODE_SERVER_NAME.to_owned(), node_server_name(*id)];
            names.extend(hosts.iter().cloned());
            params.subject_alt_names = names
                .into_iter()
                .map(|h| match h.parse::<std::net::IpAddr>() {
                    Ok(ip) => Ok(SanType::IpAddress(ip)),
                    Err(_) => h
                        .clone()
                        .try_into()
                        .map(SanType::DnsName)
                        .map_err(cert_err(&format!("host name '{h}'"))),
                })
                .collect::<Result<_, _>>()?;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        }
        Subject::Client { name, admin } => {
            if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == '/') {
                return Err(PkiError::Cert {
                    what: "client certificate".into(),
                    detail: format!("'{name}' is not a principal name (1–64 printable characters, no '/')"),
                });
            }
            dn.push(DnType::CommonName, name.clone());
            dn.push(
                DnType::OrganizationalUnitName,
                if *admin { OU_ADMIN } else { OU_CLIENT },
            );
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, valid_days);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(cert_err("sign the certificate"))?;
    let stem = subject.file_stem();
    let written = Written {
        cert: out_dir.join(format!("{stem}.pem")),
        key: out_dir.join(format!("{stem}.key")),
    };
    write_new(&written.key, &key.serialize_pem(), true)?;
    write_new(&written.cert, &cert.pem(), false)?;
    Ok(written)
}

/// Makes whatever is missing of a cluster's certificate directory: the CA
/// (when `ca.pem` is absent) and a certificate for each subject whose
/// `<stem>.pem` and `<stem>.key` are both absent. What exists is kept, so
/// a development or test cluster restarts on the certificates it made
/// first; a half-present pair is an error naming the file.
pub fn ensure(dir: &Path, cluster_name: &str, subjects: &[Subject], valid_days: u32) -> Result<(), PkiError> {
    if !dir.join("ca.pem").exists() {
        create_ca(dir, cluster_name, valid_days.max(DEFAULT_CA_VALID_DAYS))?;
    }
    for subject in subjects {
        let stem = subject.file_stem();
        let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
        match (cert.exists(), key.exists()) {
            (true, true) => {}
            (false, false) => {
                issue(dir, dir, subject, valid_days)?;
            }
            (true, false) => {
                return Err(PkiError::Io {
                    path: key,
                    detail: "missing beside its certificate".into(),
                })
            }
            (false, true) => {
                return Err(PkiError::Io {
                    path: cert,
                    detail: "missing beside its key".into(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{principal_of, Principal};

    #[test]
    fn ensure_makes_what_is_missing_and_keeps_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let subjects = [
            Subject::Node { id: 1, hosts: vec![] },
            Subject::Client {
                name: "admin".into(),
                admin: true,
            },
        ];
        ensure(d, "test", &subjects, 30).unwrap();
        let ca_before = std::fs::read(d.join("ca.pem")).unwrap();
        let node_before = std::fs::read(d.join("node-1.pem")).unwrap();
        let more = [subjects[0].clone(), Subject::Node { id: 2, hosts: vec![] }];
        ensure(d, "test", &more, 30).unwrap();
        assert_eq!(std::fs::read(d.join("ca.pem")).unwrap(), ca_before);
        assert_eq!(std::fs::read(d.join("node-1.pem")).unwrap(), node_before);
        assert_eq!(principal(&d.join("node-2.pem")), Principal::Node(2));
        std::fs::remove_file(d.join("node-2.key")).unwrap();
        let err = ensure(d, "test", &more, 30).unwrap_err().to_string();
        assert!(err.contains("node-2.key"), "{err}");
    }
    use rustls::pki_types::pem::PemObject;

    fn principal(path: &Path) -> Principal {
        let der = rustls::pki_types::CertificateDer::from_pem_file(path).unwrap();
        principal_of(&der).unwrap()
    }

    #[test]
    fn issued_certificates_name_their_principals() {
        let dir = tempfile::tempdir().unwrap();
        create_ca(dir.path(), "test", 30).unwrap();
        let node = issue(
            dir.path(),
            dir.path(),
            &Subject::Node {
                id: 3,
                hosts: vec!["127.0.0.1".into(), "db.example".into()],
            },
            30,
        )
        .unwrap();
        assert_eq!(principal(&node.cert), Principal::Node(3));
        let admin = issue(
            dir.path(),
            dir.path(),
            &Subject::Client {
                name: "ops".into(),
                admin: true,
            },
            30,
        )
        .unwrap();
        assert_eq!(
            principal(&admin.cert),
            Principal::Client {
                name: "ops".into(),
                admin: true
            }
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&admin.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "private keys are private");
        }
        // Files are never overwritten.
        assert!(matches!(
            create_ca(dir.path(), "again", 30),
            Err(PkiError::Exists { .. })
        ));
        assert!(matches!(
            issue(
                dir.path(),
                dir.path(),
                &Subject::Client {
                    name: "a/b".into(),
                    admin: false
                },
                30
            ),
            Err(PkiError::Cert { .. })
        ));
    }
}
