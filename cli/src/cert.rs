//! `driftlock cert create-ca | create-node ID | create-client NAME
//! [--admin]`: the cluster's certificates, without an `openssl` command
//! (docs/security.md).

use std::path::PathBuf;

use clap::Subcommand;
use driftlock_proto::pki::{self, Subject};

use crate::CmdResult;

/// `driftlock cert …`.
#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Make the cluster's CA: `ca.pem` (give it to every node and client)
    /// and `ca.key` (keep it offline; it signs every other certificate).
    CreateCa {
        /// Directory to write into (created if missing; files are never
        /// overwritten).
        #[arg(long, default_value = "./certs")]
        dir: PathBuf,
        /// A name for the cluster, in the CA's subject.
        #[arg(long, default_value = "cluster")]
        name: String,
        /// Validity, days.
        #[arg(long, default_value_t = pki::DEFAULT_CA_VALID_DAYS)]
        days: u32,
    },
    /// Make node ID's certificate, `node-ID.pem` and `node-ID.key`, signed
    /// by the CA in --dir: the node serves and dials peers with it.
    CreateNode {
        /// The node's Raft id (`serve --id`).
        id: u64,
        /// Directory holding `ca.pem` and `ca.key`; the files are written
        /// there too.
        #[arg(long, default_value = "./certs")]
        dir: PathBuf,
        /// Extra DNS names or IP addresses to put in the certificate, for
        /// other tools (driftlock itself verifies nodes by fixed names).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Validity, days.
        #[arg(long, default_value_t = pki::DEFAULT_VALID_DAYS)]
        days: u32,
    },
    /// Make a client certificate, `NAME.pem` and `NAME.key`, signed by the
    /// CA in --dir. NAME is the principal access policies refer to.
    CreateClient {
        /// The principal's name: 1–64 printable characters, no '/'.
        name: String,
        /// Give it the administrator role (membership, leader transfer,
        /// handover, configuration, access policy).
        #[arg(long)]
        admin: bool,
        /// Directory holding `ca.pem` and `ca.key`; the files are written
        /// there too.
        #[arg(long, default_value = "./certs")]
        dir: PathBuf,
        /// Validity, days.
        #[arg(long, default_value_t = pki::DEFAULT_VALID_DAYS)]
        days: u32,
    },
}

/// Runs one `cert` command, printing what it wrote.
pub(crate) fn cert(cmd: CertCmd) -> CmdResult {
    let (written, subject) = match cmd {
        CertCmd::CreateCa { dir, name, days } => {
            let w = pki::create_ca(&dir, &name, days).map_err(|e| e.to_string())?;
            println!("CA certificate: {}", w.cert.display());
            println!(
                "CA key:         {} (keep it safe: it signs every certificate)",
                w.key.display()
            );
            return Ok(());
        }
        CertCmd::CreateNode { id, dir, hosts, days } => {
            let subject = Subject::Node { id, hosts };
            (pki::issue(&dir, &dir, &subject, days), subject)
        }
        CertCmd::CreateClient { name, admin, dir, days } => {
            let subject = Subject::Client { name, admin };
            (pki::issue(&dir, &dir, &subject, days), subject)
        }
    };
    let w = written.map_err(|e| e.to_string())?;
    println!("certificate: {}", w.cert.display());
    println!("key:         {}", w.key.display());
    if let Subject::Client { .. } = subject {
        let dir = w.cert.parent().map(|d| d.display().to_string()).unwrap_or_default();
        println!("use it with:");
        println!("  export DRIFTLOCK_CA={dir}/ca.pem");
        println!("  export DRIFTLOCK_CERT={}", w.cert.display());
        println!("  export DRIFTLOCK_KEY={}", w.key.display());
    }
    Ok(())
}
