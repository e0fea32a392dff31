//! `driftlock dev`: a local cluster of child `driftlock serve` processes on
//! loopback, data under one directory, initialized on first start, stopped
//! cleanly on Ctrl-C. It runs with mutual TLS like any cluster: the first
//! start makes a CA, node certificates and an administrator certificate
//! under `<data-dir>/certs`, and the banner prints the environment lines
//! that point the CLI and the client library at them. The processes are started and watched through
//! `driftlock-launcher`, as the tests and the jepsen suite start theirs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use driftlock_launcher::{Cluster, LaunchError, NodeSpec};
use driftlock_proto::ApiError;

/// `driftlock dev` flags.
#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// Directory for the nodes' data (`node1`, `node2`, … inside it) and logs.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Number of nodes (3 or 5 make sense).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Client port of node 1; node n uses base + n − 1, and Raft ports are
    /// base + 100 + n − 1.
    #[arg(long, default_value_t = 7301)]
    pub base_port: u16,
}

/// Why `driftlock dev` stopped with an error; the binary prints it after
/// `driftlock dev: ` and exits with status 1.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Something outside went wrong (I/O, spawn, ports).
    #[error("{0}")]
    Io(String),
    /// The cluster did not come up in time.
    #[error("{0}")]
    Timeout(String),
    /// A node process failed in a way the messages above do not cover.
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

/// How long the nodes have to answer, initialize and elect a leader.
const BRING_UP_TIMEOUT: Duration = Duration::from_secs(45);

/// How long the nodes have to exit after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(8);

/// Runs the dev cluster until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> Result<(), DevError> {
    if !(1..=9).contains(&args.nodes) {
        return Err(DevError::Io(format!(
            "--nodes must be between 1 and 9, got {}",
            args.nodes
        )));
    }
    if u32::from(args.base_port) + 100 + 9 > u32::from(u16::MAX) {
        return Err(DevError::Io(format!(
            "--base-port {} leaves no room for the Raft ports",
            args.base_port
        )));
    }
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| DevError::Io(format!("cannot create {}: {e}", args.data_dir.display())))?;
    let exe = std::env::current_exe().map_err(|e| DevError::Io(format!("cannot find own executable: {e}")))?;
    let mut specs = Vec::new();
    for id in 1..=args.nodes {
        let client_addr = format!("127.0.0.1:{}", args.base_port + id as u16 - 1);
        let raft_addr = format!("127.0.0.1:{}", args.base_port + 100 + id as u16 - 1);
        for addr in [&client_addr, &raft_addr] {
            if std::net::TcpListener::bind(addr).is_err() {
                return Err(DevError::Io(format!(
                    "{addr} is in use: is another driftlock dev running? Stop it, or pass --base-port"
                )));
            }
        }
        let mut spec = NodeSpec::new(
            id,
            raft_addr,
            client_addr,
            args.data_dir.join(format!("node{id}")),
            args.data_dir.join(format!("node{id}.log")),
        );
        // The nodes take their settings from these flags only.
        spec.env_remove.push("DRIFTLOCK_CONFIG".into());
        specs.push(spec);
    }
    let mut cluster = Cluster::new(exe, specs);
    let certs = absolute(&args.data_dir.join("certs"));
    cluster.secure(&certs)?;
    if let Err(e) = cluster.bring_up(BRING_UP_TIMEOUT).await {
        cluster.terminate_all(STOP_GRACE).await;
        return Err(bring_up_error(e));
    }
    print_banner(&cluster, &args.data_dir, &certs);
    wait_for_stop(&mut cluster).await;
    cluster.terminate_all(STOP_GRACE).await;
    println!(
        "driftlock dev: all nodes stopped; data kept in {}",
        args.data_dir.display()
    );
    Ok(())
}

/// The message of a failed bring-up, in dev's words.
fn bring_up_error(e: LaunchError) -> DevError {
    match e {
        LaunchError::NotUp {
            id, addr, last_error, ..
        } => DevError::Timeout(format!(
            "node {id} at {addr} did not start: {last_error} (see its log in the data directory)"
        )),
        LaunchError::Exited { id, status, tail, .. } => DevError::Io(format!(
            "node {id} exited while starting ({status}); the end of node{id}.log:\n{tail}"
        )),
        LaunchError::Init { source, .. } => DevError::Io(format!("cluster init failed: {source}")),
        LaunchError::NoLeader { timeout, .. } => {
            DevError::Timeout(format!("no leader was elected within {} s", timeout.as_secs()))
        }
        other => DevError::Launch(other),
    }
}

/// `path` made absolute against the current directory, so the printed
/// certificate paths work from anywhere.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn print_banner(cluster: &Cluster, data_dir: &Path, certs: &Path) {
    let endpoints = cluster.endpoints().join(",");
    let tls = driftlock_proto::tls::TlsFiles::in_dir(certs, driftlock_launcher::ADMIN_CERT);
    let settings = [
        format!("DRIFTLOCK_ENDPOINTS={endpoints}"),
        format!("DRIFTLOCK_CA={}", tls.ca.display()),
        format!("DRIFTLOCK_CERT={}", tls.cert.display()),
        format!("DRIFTLOCK_KEY={}", tls.key.display()),
    ];
    println!(
        "driftlock dev: {} nodes up with mutual TLS, data in {}, certificates in {}",
        cluster.nodes.len(),
        data_dir.display(),
        certs.display()
    );
    for line in &settings {
        println!("{line}");
    }
    println!();
    let exe = invocation();
    println!("In another terminal (from this directory):");
    println!("  export {}", settings.join(" "));
    println!("  {exe} status");
    println!("  {exe} lock demo -- sh -c 'echo holding with token $DRIFTLOCK_FENCING_TOKEN; sleep 2'");
    println!("  {exe} kv put greeting hello");
    println!("  {exe} kv get greeting");
    println!("  {exe} elect service-a --value node-a");
    println!("  {exe} watch greeting");
    println!(
        "The certificate is an administrator's; `{exe} cert create-client NAME --dir {}` makes others.",
        certs.display()
    );
    println!("Ctrl-C stops the cluster.");
}

/// How to invoke this binary from the current directory, so the printed
/// examples work verbatim: `./target/release/driftlock` when run from the
/// source tree, the absolute path otherwise, plain `driftlock` as a last resort.
fn invocation() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "driftlock".to_string();
    };
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(&cwd).ok().map(Path::to_path_buf));
    match relative {
        Some(rel) => format!("./{}", rel.display()),
        None => exe.display().to_string(),
    }
}

/// Waits for Ctrl-C or SIGTERM, saying so when a node exits meanwhile.
async fn wait_for_stop(cluster: &mut Cluster) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("driftlock dev: cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = poll.tick() => {
                for n in cluster.nodes.iter_mut() {
                    let id = n.id();
                    match n.poll_exit() {
                        Ok(Some(status)) => eprintln!("driftlock dev: node {id} exited ({status}); see node{id}.log"),
                        Ok(None) => {}
                        Err(e) => eprintln!("driftlock dev: {e}"),
                    }
                }
            }
        }
    }
}

impl From<ApiError> for DevError {
    fn from(e: ApiError) -> Self {
        DevError::Io(e.to_string())
    }
}
