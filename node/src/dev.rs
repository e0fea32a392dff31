//! `driftlock dev`: a local cluster of child `driftlock serve` processes on
//! loopback, data under one directory, initialized on first start, stopped
//! cleanly on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use driftlock_proto::{AdminRequest, ApiError, MemberAddr, Role};
use tokio::process::{Child, Command};

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

/// Errors of the dev launcher.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Something outside went wrong (I/O, spawn, ports).
    #[error("{0}")]
    Io(String),
    /// The cluster did not come up in time.
    #[error("{0}")]
    Timeout(String),
}

struct DevNode {
    id: u64,
    client_addr: String,
    raft_addr: String,
    child: Child,
}

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
    let mut nodes = Vec::new();
    for id in 1..=args.nodes {
        let client_addr = format!("127.0.0.1:{}", args.base_port + id as u16 - 1);
        let raft_addr = format!("127.0.0.1:{}", args.base_port + 100 + id as u16 - 1);
        for addr in [&client_addr, &raft_addr] {
            if std::net::TcpListener::bind(addr).is_err() {
                stop_all(&mut nodes).await;
                return Err(DevError::Io(format!(
                    "{addr} is in use: is another driftlock dev running? Stop it, or pass --base-port"
                )));
            }
        }
        let child = spawn_node(&exe, &args.data_dir, id, &client_addr, &raft_addr)?;
        nodes.push(DevNode {
            id,
            client_addr,
            raft_addr,
            child,
        });
    }
    let result = bring_up(&nodes).await;
    if let Err(e) = result {
        stop_all(&mut nodes).await;
        return Err(e);
    }
    print_banner(&nodes, &args.data_dir);
    wait_for_stop(&mut nodes).await;
    stop_all(&mut nodes).await;
    println!(
        "driftlock dev: all nodes stopped; data kept in {}",
        args.data_dir.display()
    );
    Ok(())
}

fn spawn_node(exe: &Path, data_dir: &Path, id: u64, client_addr: &str, raft_addr: &str) -> Result<Child, DevError> {
    let log_path = data_dir.join(format!("node{id}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| DevError::Io(format!("cannot open {}: {e}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| DevError::Io(format!("cannot open {}: {e}", log_path.display())))?;
    Command::new(exe)
        .arg("serve")
        .arg("--id")
        .arg(id.to_string())
        .arg("--client-addr")
        .arg(client_addr)
        .arg("--raft-addr")
        .arg(raft_addr)
        .arg("--data-dir")
        .arg(data_dir.join(format!("node{id}")))
        .arg("--exit-with-parent")
        .env_remove("DRIFTLOCK_CONFIG")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| DevError::Io(format!("cannot start node {id}: {e}")))
}

/// Waits for every node to answer, initializes the cluster if it is new,
/// and waits for a leader.
async fn bring_up(nodes: &[DevNode]) -> Result<(), DevError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    let mut initialized = false;
    for n in nodes {
        loop {
            match driftlock_proto::status(&n.client_addr, Duration::from_millis(500)).await {
                Ok(s) => {
                    initialized |= !s.voters.is_empty();
                    break;
                }
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => {
                    return Err(DevError::Timeout(format!(
                        "node {} at {} did not start: {e} (see its log in the data directory)",
                        n.id, n.client_addr
                    )))
                }
            }
        }
    }
    if !initialized {
        let members = nodes
            .iter()
            .map(|n| MemberAddr {
                id: n.id,
                raft_addr: n.raft_addr.clone(),
                client_addr: n.client_addr.clone(),
            })
            .collect();
        match driftlock_proto::admin(
            &nodes[0].client_addr,
            AdminRequest::Init { members },
            Duration::from_secs(10),
        )
        .await
        {
            Ok(_) => {}
            Err(e) => return Err(DevError::Io(format!("cluster init failed: {e}"))),
        }
    }
    loop {
        for n in nodes {
            if let Ok(s) = driftlock_proto::status(&n.client_addr, Duration::from_millis(500)).await {
                if s.role == Role::Leader && s.applied_index > 0 {
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DevError::Timeout("no leader was elected within 45 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_banner(nodes: &[DevNode], data_dir: &Path) {
    let endpoints = nodes
        .iter()
        .map(|n| n.client_addr.as_str())
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "driftlock dev: {} nodes up, data in {}",
        nodes.len(),
        data_dir.display()
    );
    println!("DRIFTLOCK_ENDPOINTS={endpoints}");
    println!();
    let exe = invocation();
    println!("In another terminal (from this directory):");
    println!("  export DRIFTLOCK_ENDPOINTS={endpoints}");
    println!("  {exe} status");
    println!("  {exe} lock demo -- sh -c 'echo holding with token $DRIFTLOCK_FENCING_TOKEN; sleep 2'");
    println!("  {exe} kv put greeting hello");
    println!("  {exe} kv get greeting");
    println!("  {exe} elect service-a --value node-a");
    println!("  {exe} watch greeting");
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

async fn wait_for_stop(nodes: &mut [DevNode]) {
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
                for n in nodes.iter_mut() {
                    if let Ok(Some(status)) = n.child.try_wait() {
                        eprintln!("driftlock dev: node {} exited ({status}); see node{}.log", n.id, n.id);
                    }
                }
            }
        }
    }
}

/// Sends SIGTERM to every child, waits up to 8 s, then kills what is left.
async fn stop_all(nodes: &mut [DevNode]) {
    for n in nodes.iter_mut() {
        if let Some(pid) = n.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SIGTERM lets the node flush and exit cleanly.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
    }
    for n in nodes.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(8), n.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                let _ = n.child.kill().await;
            }
        }
    }
}

impl From<ApiError> for DevError {
    fn from(e: ApiError) -> Self {
        DevError::Io(e.to_string())
    }
}
