//! The user and operator commands of the `driftlock` binary: `lock`,
//! `elect`, `kv`, `watch`, `status`, `cluster`, `snapshot` (backup and
//! restore) and `auth` (the access policy). Each lives in its own module
//! and speaks the client protocol, through the client library except where
//! it must address nodes one by one (`status`, `watch`, `cluster init`);
//! `snapshot restore` and `snapshot inspect` work on files and data
//! directories only. The server commands (`serve`, `dev`) are the node
//! crate's; its `main` puts both under one binary.

#![forbid(unsafe_code)]

mod auth;
mod cert;
mod cluster;
mod config;
mod elect;
mod fence;
mod kv;
mod lock;
pub mod output;
mod snapshot;
mod status;
mod watch;

use std::process::ExitCode;

use clap::{Args, Subcommand};
use driftlock_client::{Client, ClientConfig};

pub use auth::AuthCmd;
pub use cert::CertCmd;
pub use cluster::ClusterCmd;
pub use config::{ConfigCmd, Setting};
pub use elect::{ElectArgs, ElectCmd};
pub use kv::KvCmd;
pub use lock::LockArgs;
pub use snapshot::SnapshotCmd;
pub use status::StatusArgs;
pub use watch::WatchArgs;

/// The user and operator commands; the node crate's `main` flattens them into
/// the `driftlock` binary beside `serve` and `dev`.
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Initialize a cluster, change its membership, move Raft leadership,
    /// read and change the replicated configuration.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Back the cluster up to a file (`save`), seed a new cluster's data
    /// directories from one (`restore`), check one (`inspect`).
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Show and change the access policy: who may lock, read, write and
    /// campaign under which prefixes, and who is an administrator.
    #[command(subcommand)]
    Auth(AuthCmd),
    /// Make the cluster's certificates: a CA, node and client certificates.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Run a command while holding a lock.
    ///
    /// The command runs with DRIFTLOCK_FENCING_TOKEN (the grant's fencing
    /// token), DRIFTLOCK_LOCK (NAME), DRIFTLOCK_SESSION (the session holding
    /// the lock) and DRIFTLOCK_LOCK_SOCKET in its environment. Through that
    /// socket (private to this user, removed when the lock ends) the command
    /// makes fenced writes in the lock's own session: `driftlock kv
    /// put|cas|del ... --fence NAME:$DRIFTLOCK_FENCING_TOKEN`, which the
    /// cluster applies only while the grant is the lock's newest and held.
    #[command(after_help = output::LOCK_EXIT_CODES)]
    Lock(LockArgs),
    /// Campaign in an election and report mastership until Ctrl-C.
    #[command(after_help = output::EXIT_CODES)]
    Elect(ElectArgs),
    /// Read and write the KV store; `put`, `cas` and `del` with `--fence`
    /// write under a lock, from a command run by `driftlock lock`.
    #[command(subcommand, after_help = output::KV_EXIT_CODES)]
    Kv(KvCmd),
    /// Show every node's role, term, indexes and lag.
    #[command(after_help = output::EXIT_CODES)]
    Status(StatusArgs),
    /// Print KV changes under a prefix until Ctrl-C.
    #[command(after_help = output::EXIT_CODES)]
    Watch(WatchArgs),
}

/// Runs one command; the exit code is what the process should exit with.
pub async fn run(command: UserCommand) -> ExitCode {
    match command {
        UserCommand::Cluster(cmd) => report(cluster::cluster(cmd).await),
        UserCommand::Snapshot(cmd) => report(snapshot::snapshot(cmd).await),
        UserCommand::Auth(cmd) => report(auth::auth(cmd).await),
        UserCommand::Cert(cmd) => report(cert::cert(cmd)),
        UserCommand::Lock(args) => lock::lock(args).await,
        UserCommand::Elect(args) => report(elect::elect(args).await),
        UserCommand::Kv(cmd) => kv::kv(cmd).await,
        UserCommand::Status(args) => report(status::status(args).await),
        UserCommand::Watch(args) => report(watch::watch(args).await),
    }
}

/// Where the cluster is, and the certificate to show it. The TLS
/// arguments have ids of their own (`tls_key`, …) so that they cannot clash
/// with a subcommand's positional arguments (`kv put KEY VALUE`).
#[derive(Args, Debug, Clone)]
pub struct Endpoints {
    /// Client addresses of the nodes, comma-separated (host:port,…).
    #[arg(long, env = "DRIFTLOCK_ENDPOINTS", value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// The cluster CA's certificate (PEM); with --tls-cert and --tls-key,
    /// talk TLS.
    /// `driftlock dev` prints all three.
    #[arg(long = "tls-ca", env = "DRIFTLOCK_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), issued by the cluster CA
    /// (`driftlock cert create-client NAME`).
    #[arg(long = "tls-cert", env = "DRIFTLOCK_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long = "tls-key", env = "DRIFTLOCK_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// Set once a command talks plain TCP, so a failure can say why it may
/// have failed.
static PLAIN_TCP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Endpoints {
    /// The TLS files, if all three were given (an error for one or two).
    pub fn tls(&self) -> Result<Option<driftlock_proto::tls::TlsFiles>, String> {
        let tls = match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => None,
            (Some(ca), Some(cert), Some(key)) => Some(driftlock_proto::tls::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => return Err(
                "give all of --tls-ca, --tls-cert and --tls-key (DRIFTLOCK_CA, DRIFTLOCK_CERT, DRIFTLOCK_KEY), or none"
                    .into(),
            ),
        };
        if tls.is_none() {
            PLAIN_TCP.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(tls)
    }

    /// How to reach the nodes: mutual TLS with the files given, plain TCP
    /// without any.
    pub fn security(&self) -> Result<driftlock_proto::Security, String> {
        driftlock_proto::Security::from_files(self.tls()?.as_ref()).map_err(|e| e.to_string())
    }
}

/// A command's failure, printed on stderr.
pub type CmdResult = Result<(), String>;

/// Exit code and message for a command's result.
pub fn report(result: CmdResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("driftlock: {e}");
            if PLAIN_TCP.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!(
                    "driftlock: (no certificates were given, so this talked plain TCP; a cluster that runs TLS, as \
                     `driftlock dev` does, refuses that: set DRIFTLOCK_CA, DRIFTLOCK_CERT and DRIFTLOCK_KEY as dev \
                     printed them)"
                );
            }
            ExitCode::from(1)
        }
    }
}

async fn connect(endpoints: &Endpoints) -> Result<Client, String> {
    let config = ClientConfig {
        client_name: cli_name(),
        tls: endpoints.tls()?,
        ..ClientConfig::new(endpoints.endpoints.clone())
    };
    Client::connect_with(config).await.map_err(|e| e.to_string())
}

fn cli_name() -> String {
    format!("driftlock-cli/{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    /// The binary's command line as `driftlock`'s main builds it.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: super::UserCommand,
    }

    #[test]
    fn every_command_line_is_well_formed() {
        // clap checks argument ids only when a command is built: a clash
        // (a TLS `key` argument against `kv put KEY`) panics here, not in
        // use.
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "driftlock",
            "kv",
            "put",
            "--endpoints",
            "127.0.0.1:1",
            "--tls-key",
            "client.key",
            "config/mode",
            "active",
        ])
        .unwrap();
        let super::UserCommand::Kv(super::KvCmd::Put {
            endpoints, key, value, ..
        }) = cli.command
        else {
            panic!("{cli:?}")
        };
        assert_eq!((key.as_str(), value.as_str()), ("config/mode", "active"));
        assert_eq!(endpoints.tls_key, Some(std::path::PathBuf::from("client.key")));
    }

    fn parse(args: &[&str]) -> Result<super::UserCommand, String> {
        let mut line = vec!["driftlock"];
        line.extend_from_slice(args);
        Cli::try_parse_from(line).map(|c| c.command).map_err(|e| e.to_string())
    }

    #[test]
    fn fenced_kv_writes_need_no_endpoints_and_a_well_formed_fence() {
        use super::{KvCmd, UserCommand};
        let fence = |lock: &str, token| {
            Some(driftlock_proto::Fence {
                lock: lock.into(),
                token,
            })
        };
        let cmd = parse(&["kv", "put", "k", "v", "--fence", "jobs/a:17"]).unwrap();
        let UserCommand::Kv(KvCmd::Put {
            fence: f, endpoints, ..
        }) = cmd
        else {
            panic!("{cmd:?}")
        };
        assert_eq!(f, fence("jobs/a", 17));
        assert!(endpoints.endpoints.is_empty());
        let cmd = parse(&["kv", "cas", "k", "3", "v", "--fence", "j:1"]).unwrap();
        assert!(matches!(
            cmd,
            UserCommand::Kv(KvCmd::Cas {
                expected: 3,
                fence: Some(_),
                ..
            })
        ));
        let cmd = parse(&["kv", "del", "--fence", "j:1", "k"]).unwrap();
        assert!(matches!(cmd, UserCommand::Kv(KvCmd::Del { fence: Some(_), .. })));
        // A malformed fence is a command-line error, naming what is wrong.
        let e = parse(&["kv", "put", "k", "v", "--fence", "job"]).unwrap_err();
        assert!(e.contains("is not NAME:TOKEN"), "{e}");
        let e = parse(&["kv", "put", "k", "v", "--fence", "job:abc"]).unwrap_err();
        assert!(e.contains("is not a fencing token"), "{e}");
        // Without --fence the endpoints are still required (unless the
        // environment gives them).
        if std::env::var_os("DRIFTLOCK_ENDPOINTS").is_none() {
            let e = parse(&["kv", "put", "k", "v"]).unwrap_err();
            assert!(e.contains("--endpoints"), "{e}");
        }
    }

    #[test]
    fn cluster_config_command_lines_parse() {
        use super::{ClusterCmd, ConfigCmd, Setting, UserCommand};
        let cmd = parse(&[
            "cluster",
            "config",
            "set",
            "--endpoints",
            "127.0.0.1:1",
            "lease.max_ttl_us=60000000",
            "limits.max_keys=10",
        ])
        .unwrap();
        let UserCommand::Cluster(ClusterCmd::Config(ConfigCmd::Set { settings, file, .. })) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(file, None);
        assert_eq!(
            settings,
            [
                Setting {
                    key: "lease.max_ttl_us".into(),
                    value: "60000000".into()
                },
                Setting {
                    key: "limits.max_keys".into(),
                    value: "10".into()
                }
            ]
        );
        // An unknown key or a value of the wrong type fails at parse time,
        // naming it.
        let e = parse(&["cluster", "config", "set", "--endpoints", "a:1", "lease.max_ttl=1"]).unwrap_err();
        assert!(e.contains("unknown config key 'lease.max_ttl'"), "{e}");
        let e = parse(&["cluster", "config", "set", "--endpoints", "a:1", "lease.weight_cpu=-1"]).unwrap_err();
        assert!(e.contains("'-1' is not an unsigned integer (u32)"), "{e}");
        // `set` needs a setting or a file.
        assert!(parse(&["cluster", "config", "set", "--endpoints", "a:1"]).is_err());
        let cmd = parse(&["cluster", "config", "set", "--endpoints", "a:1", "--file", "c.toml"]).unwrap();
        assert!(matches!(
            cmd,
            UserCommand::Cluster(ClusterCmd::Config(ConfigCmd::Set { file: Some(_), .. }))
        ));
        let cmd = parse(&["cluster", "config", "diff", "--endpoints", "a:1", "c.toml"]).unwrap();
        assert!(matches!(
            cmd,
            UserCommand::Cluster(ClusterCmd::Config(ConfigCmd::Diff { .. }))
        ));
        let cmd = parse(&["cluster", "config", "get", "--endpoints", "a:1", "--serializable"]).unwrap();
        assert!(matches!(
            cmd,
            UserCommand::Cluster(ClusterCmd::Config(ConfigCmd::Get { serializable: true, .. }))
        ));
    }
}
