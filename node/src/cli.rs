//! The user and operator commands. Everything goes through the client
//! library, except `status` and `watch`, which address nodes one by one.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use driftlock_client::proto::{AdminRequest, Consistency, EventFilter, MemberAddr, Query, QueryResult, Role};
use driftlock_client::{Client, ClientConfig, LockOptions};
use driftlock_node::rpc;
use driftlock_state_machine::{Event, LockMode};

/// Where the cluster is.
#[derive(Args, Debug, Clone)]
pub struct Endpoints {
    /// Client addresses of the nodes, comma-separated (host:port,…).
    #[arg(long, env = "DRIFTLOCK_ENDPOINTS", value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
}

/// `driftlock status [--session ID]`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Also show one session: its validity and how its lease was computed.
    #[arg(long)]
    session: Option<u64>,
}

/// `driftlock cluster …`.
#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Initialize a new cluster. Run once, against one of the members.
    Init {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Members as ID=RAFT_ADDR/CLIENT_ADDR, comma-separated, e.g.
        /// 1=127.0.0.1:7401/127.0.0.1:7301.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Add a node as a non-voting learner (waits until it caught up).
    AddLearner {
        #[command(flatten)]
        endpoints: Endpoints,
        /// New node: ID=RAFT_ADDR/CLIENT_ADDR.
        member: String,
    },
    /// Make a learner a voter (joint consensus).
    Promote {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Node id.
        id: u64,
    },
    /// Remove a node from the voters and the cluster.
    Remove {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Node id.
        id: u64,
    },
    /// Hand Raft leadership to a voter.
    TransferLeader {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Node id.
        id: u64,
    },
}

/// `driftlock lock NAME -- CMD…`.
#[derive(Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Lock name.
    name: String,
    /// Session TTL (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// How long to wait for the lock.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Take the lock in shared mode.
    #[arg(long)]
    shared: bool,
    /// The command to run while holding the lock.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `driftlock elect ELECTION --value V`, or `driftlock elect handover …`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ElectArgs {
    #[command(subcommand)]
    action: Option<ElectCmd>,
    #[command(flatten)]
    endpoints: Endpoints,
    /// Election name.
    #[arg(required = true)]
    election: Option<String>,
    /// Value to proclaim as master.
    #[arg(long, required = true)]
    value: Option<String>,
    /// Session TTL.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// State handed to the next master if the cluster moves mastership away
    /// from this one (warm handover).
    #[arg(long, default_value = "")]
    state: String,
}

/// `driftlock elect` subcommands.
#[derive(Subcommand, Debug)]
pub enum ElectCmd {
    /// Ask the cluster to hand ELECTION's mastership over to a candidate
    /// (the healthiest one unless --to names a session).
    Handover {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Election name.
        election: String,
        /// Candidate session id.
        #[arg(long)]
        to: Option<u64>,
    },
}

/// `driftlock kv …`.
#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Print a key's value.
    Get {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Key.
        key: String,
    },
    /// Set a key.
    Put {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Set a key if its revision is EXPECTED (0: only if absent).
    Cas {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Key.
        key: String,
        /// Expected modification revision.
        expected: u64,
        /// New value.
        value: String,
    },
    /// Delete a key.
    Del {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Key.
        key: String,
    },
    /// List keys under a prefix.
    List {
        #[command(flatten)]
        endpoints: Endpoints,
        /// Prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
}

/// `driftlock watch PREFIX`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Key prefix.
    #[arg(default_value = "")]
    prefix: String,
}

/// A command's failure, printed on stderr.
pub type CmdResult = Result<(), String>;

/// Exit code and message for a command's result.
pub fn report(result: CmdResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("driftlock: {e}");
            ExitCode::from(1)
        }
    }
}

async fn connect(endpoints: &Endpoints) -> Result<Client, String> {
    let config = ClientConfig {
        client_name: cli_name(),
        ..ClientConfig::new(endpoints.endpoints.clone())
    };
    Client::connect_with(config).await.map_err(|e| e.to_string())
}

fn cli_name() -> String {
    format!("driftlock-cli/{}", std::process::id())
}

fn parse_member(spec: &str) -> Result<MemberAddr, String> {
    let bad = || format!("'{spec}' is not ID=RAFT_ADDR/CLIENT_ADDR");
    let (id, addrs) = spec.split_once('=').ok_or_else(bad)?;
    let (raft_addr, client_addr) = addrs.split_once('/').ok_or_else(bad)?;
    Ok(MemberAddr {
        id: id.trim().parse().map_err(|_| bad())?,
        raft_addr: raft_addr.into(),
        client_addr: client_addr.into(),
    })
}

/// `driftlock cluster …`.
pub async fn cluster(cmd: ClusterCmd) -> CmdResult {
    let timeout = Duration::from_secs(30);
    match cmd {
        ClusterCmd::Init { endpoints, members } => {
            let members = members.iter().map(|m| parse_member(m)).collect::<Result<Vec<_>, _>>()?;
            let first = endpoints.endpoints.first().ok_or("no endpoint given")?;
            rpc::admin(first, AdminRequest::Init { members }, timeout)
                .await
                .map_err(|e| e.to_string())?;
            println!("cluster initialized");
        }
        ClusterCmd::AddLearner { endpoints, member } => {
            let member = parse_member(&member)?;
            let id = member.id;
            connect(&endpoints)
                .await?
                .admin(AdminRequest::AddLearner { member })
                .await
                .map_err(|e| e.to_string())?;
            println!("node {id} added as learner and caught up");
        }
        ClusterCmd::Promote { endpoints, id } => {
            let client = connect(&endpoints).await?;
            let mut voters = current_voters(&client).await?;
            if !voters.contains(&id) {
                voters.push(id);
            }
            client
                .admin(AdminRequest::ChangeVoters { voters })
                .await
                .map_err(|e| e.to_string())?;
            println!("node {id} is a voter");
        }
        ClusterCmd::Remove { endpoints, id } => {
            let client = connect(&endpoints).await?;
            let voters: Vec<u64> = current_voters(&client)
                .await?
                .into_iter()
                .filter(|v| *v != id)
                .collect();
            client
                .admin(AdminRequest::ChangeVoters { voters })
                .await
                .map_err(|e| e.to_string())?;
            println!("node {id} removed");
        }
        ClusterCmd::TransferLeader { endpoints, id } => {
            connect(&endpoints)
                .await?
                .admin(AdminRequest::TransferLeader { to: id })
                .await
                .map_err(|e| e.to_string())?;
            println!("leadership handed to node {id}");
        }
    }
    Ok(())
}

async fn current_voters(client: &Client) -> Result<Vec<u64>, String> {
    for ep in client.endpoints() {
        if let Ok(s) = rpc::status(&ep, Duration::from_secs(2)).await {
            if s.role == Role::Leader {
                return Ok(s.voters.into_iter().map(|(id, _)| id).collect());
            }
        }
    }
    Err("no leader found among the endpoints".into())
}

/// `driftlock lock NAME -- CMD…`: exit code is the command's.
pub async fn lock(args: LockArgs) -> ExitCode {
    match lock_inner(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("driftlock lock: {e}");
            ExitCode::from(1)
        }
    }
}

async fn lock_inner(args: LockArgs) -> Result<ExitCode, String> {
    let client = connect(&args.endpoints).await?;
    let session = client.open_session(args.ttl).await.map_err(|e| e.to_string())?;
    let mode = if args.shared {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    let guard = session
        .lock_with(&args.name, LockOptions { mode, wait: args.wait })
        .await
        .map_err(|e| format!("cannot take lock '{}': {e}", args.name))?;
    let token = guard.fencing_token();
    eprintln!(
        "driftlock: holding '{}' with fencing token {token} (session {})",
        args.name,
        session.id()
    );
    let (program, rest) = args.command.split_first().ok_or("no command given")?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .env("DRIFTLOCK_FENCING_TOKEN", token.to_string())
        .env("DRIFTLOCK_LOCK", &args.name)
        .env("DRIFTLOCK_SESSION", session.id().to_string())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run '{program}': {e}"))?;
    let outcome = tokio::select! {
        status = child.wait() => Ok(status),
        _ = session.lost() => Err("the lock's session expired: the command was killed"),
        _ = tokio::signal::ctrl_c() => Err("interrupted: the command was killed"),
    };
    match outcome {
        Ok(status) => {
            let _ = guard.release().await;
            let _ = session.close().await;
            let status = status.map_err(|e| format!("waiting for the command: {e}"))?;
            // Like a shell: the command's own code, or 128 + the signal
            // that ended it.
            let code = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                (Some(c), _) => u8::try_from(c).unwrap_or(1),
                (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
                (None, None) => 1,
            };
            Ok(ExitCode::from(code))
        }
        Err(why) => {
            // The lease can no longer be trusted: stop the work at once.
            let _ = child.kill().await;
            let _ = guard.release().await;
            let _ = session.close().await;
            eprintln!("driftlock lock: {why}");
            Ok(ExitCode::from(if why.starts_with("interrupted") { 130 } else { 1 }))
        }
    }
}

/// `driftlock elect`.
pub async fn elect(args: ElectArgs) -> CmdResult {
    if let Some(ElectCmd::Handover {
        endpoints,
        election,
        to,
    }) = args.action
    {
        let client = connect(&endpoints).await?;
        client
            .admin(AdminRequest::Handover {
                election: election.clone(),
                to,
            })
            .await
            .map_err(|e| e.to_string())?;
        println!("handover of '{election}' started");
        return Ok(());
    }
    let (Some(name), Some(value)) = (args.election, args.value) else {
        return Err("elect needs ELECTION and --value".into());
    };
    let client = connect(&args.endpoints).await?;
    let session = client.open_session(args.ttl).await.map_err(|e| e.to_string())?;
    let election = session.election(&name);
    let state = args.state.into_bytes();
    election.on_handover(move || state.clone());
    println!(
        "campaigning in '{name}' as session {} with value '{value}'",
        session.id()
    );
    let campaign = election.campaign(value.clone().into_bytes());
    let leadership = tokio::select! {
        r = campaign => r.map_err(|e| e.to_string())?,
        _ = tokio::signal::ctrl_c() => {
            let _ = session.close().await;
            return Ok(());
        }
    };
    println!("master of '{name}' at epoch {}", leadership.epoch());
    if let Some(state) = leadership.handover_state() {
        println!(
            "took over by warm handover with {} bytes of state: {}",
            state.len(),
            String::from_utf8_lossy(state)
        );
    }
    // Report every change of mastership until Ctrl-C.
    let me = session.id();
    let mut watch = election.observe();
    let mut master = true;
    loop {
        tokio::select! {
            _ = session.lost() => {
                return Err("session expired: no longer master".into());
            }
            _ = tokio::signal::ctrl_c() => break,
            change = watch.next() => match change {
                Ok(c) if c.master == Some(me) && !master => {
                    master = true;
                    println!("master of '{name}' again at epoch {}", c.epoch);
                }
                Ok(c) if c.master != Some(me) && master => {
                    master = false;
                    match c.master {
                        Some(s) => println!("passive: session {s} is master of '{name}' at epoch {}", c.epoch),
                        None => println!("passive: '{name}' has no master"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "election watch failed"),
            },
        }
    }
    let _ = election.resign().await;
    let _ = session.close().await;
    println!("resigned");
    Ok(())
}

/// `driftlock kv …`.
pub async fn kv(cmd: KvCmd) -> CmdResult {
    match cmd {
        KvCmd::Get { endpoints, key } => {
            let client = connect(&endpoints).await?;
            match client.kv_get(&key).await.map_err(|e| e.to_string())? {
                Some(v) => println!("{}", String::from_utf8_lossy(&v.value)),
                None => return Err(format!("key '{key}' not found")),
            }
        }
        KvCmd::Put { endpoints, key, value } => {
            let rev = connect(&endpoints)
                .await?
                .kv_put(&key, value.into_bytes())
                .await
                .map_err(|e| e.to_string())?;
            println!("revision {rev}");
        }
        KvCmd::Cas {
            endpoints,
            key,
            expected,
            value,
        } => {
            let client = connect(&endpoints).await?;
            let rev = client
                .kv_cas(&key, expected, value.into_bytes())
                .await
                .map_err(|e| e.to_string())?;
            println!("revision {rev}");
        }
        KvCmd::Del { endpoints, key } => {
            connect(&endpoints)
                .await?
                .kv_delete(&key)
                .await
                .map_err(|e| e.to_string())?;
            println!("deleted");
        }
        KvCmd::List { endpoints, prefix } => {
            let entries = connect(&endpoints)
                .await?
                .kv_range(&prefix, 10_000)
                .await
                .map_err(|e| e.to_string())?;
            for (k, v) in entries {
                println!(
                    "{k}\t{}\t(revision {})",
                    String::from_utf8_lossy(&v.value),
                    v.mod_revision
                );
            }
        }
    }
    Ok(())
}

/// `driftlock status`: one row per node, and optionally one session.
pub async fn status(args: StatusArgs) -> CmdResult {
    let endpoints = args.endpoints;
    let mut rows = Vec::new();
    for ep in &endpoints.endpoints {
        rows.push((ep.clone(), rpc::status(ep, Duration::from_secs(2)).await));
    }
    let leader_last = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter(|s| s.role == Role::Leader)
        .map(|s| s.last_log_index)
        .max();
    println!(
        "{:<4} {:<22} {:<9} {:>6} {:>10} {:>10} {:>6} {:>9} {:>10} {:>8} {:>18} {:>5} {:<9}",
        "ID",
        "ADDRESS",
        "ROLE",
        "TERM",
        "LAST_LOG",
        "APPLIED",
        "LAG",
        "SESSIONS",
        "HELD_LOCKS",
        "RHO_PPM",
        "DRIFT_PPM(±σ)",
        "NHI",
        "TIER"
    );
    let mut reachable = 0;
    for (ep, r) in &rows {
        match r {
            Ok(s) => {
                reachable += 1;
                let lag = leader_last.map_or("?".to_owned(), |l| l.saturating_sub(s.applied_index).to_string());
                let drift = s.clock.as_ref().map_or("-".to_owned(), |c| {
                    let alert = if c.drift_ppb.unsigned_abs() > s.stats.alert_drift_ppm.saturating_mul(1_000) {
                        " !"
                    } else {
                        ""
                    };
                    format!(
                        "{:+.1}±{:.1}{alert}",
                        c.drift_ppb as f64 / 1000.0,
                        c.drift_sigma_ppb as f64 / 1000.0
                    )
                });
                println!(
                    "{:<4} {:<22} {:<9} {:>6} {:>10} {:>10} {:>6} {:>9} {:>10} {:>8} {:>18} {:>5} {:<9}",
                    s.id,
                    s.client_addr,
                    format!("{:?}", s.role).to_lowercase(),
                    s.term,
                    s.last_log_index,
                    s.applied_index,
                    lag,
                    s.stats.sessions,
                    s.stats.held_locks,
                    s.stats.cluster_rho_ppm,
                    drift,
                    s.nhi_permille.map_or("-".to_owned(), |n| n.to_string()),
                    s.health_tier
                        .map_or("-".to_owned(), |t| format!("{t:?}").to_lowercase()),
                );
            }
            Err(e) => println!("{:<4} {:<22} {:<9} {e}", "?", ep, "down"),
        }
    }
    if leader_last.is_none() {
        println!("no leader among the reachable nodes");
    }
    for (_, r) in &rows {
        let Ok(s) = r else { continue };
        if let Some(c) = &s.clock {
            if c.drift_ppb.unsigned_abs() > s.stats.alert_drift_ppm.saturating_mul(1_000) {
                println!(
                    "clock alert: node {} drifts {:+.1} ppm (±{:.1}), beyond alert_drift_ppm {}; it will not lead",
                    s.id,
                    c.drift_ppb as f64 / 1000.0,
                    c.drift_sigma_ppb as f64 / 1000.0,
                    s.stats.alert_drift_ppm
                );
            }
        }
    }
    if let Some(s) = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .find(|s| s.role == Role::Leader && s.stats.skewed_sessions > 0)
    {
        println!(
            "clock skew: {} session(s) measured hold times off cluster time; their drift bounds are widened",
            s.stats.skewed_sessions
        );
    }
    if let Some(leader) = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .find(|s| s.role == Role::Leader)
    {
        if !leader.hot_locks.is_empty() {
            let hot: Vec<String> = leader
                .hot_locks
                .iter()
                .map(|h| format!("{} ({:.1}/s)", h.name, h.rate_milli_per_s as f64 / 1000.0))
                .collect();
            println!("hot locks: {}", hot.join(", "));
        }
    }
    if reachable == 0 {
        return Err("no node answered".into());
    }
    if let Some(id) = args.session {
        session_status(&endpoints, id).await?;
    }
    Ok(())
}

/// Prints a session's lease: base, each factor and the result.
async fn session_status(endpoints: &Endpoints, id: u64) -> CmdResult {
    let client = connect(endpoints).await?;
    let reply = client
        .read(Query::Session { session: id }, Consistency::Linearizable)
        .await
        .map_err(|e| e.to_string())?;
    let view = match reply.result {
        QueryResult::Session(Some(v)) => v,
        QueryResult::Session(None) => return Err(format!("session {id} does not exist")),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let l = &view.lease;
    println!();
    println!(
        "session {id} ({}): {} ms of validity left",
        view.client_name,
        view.remaining_us / 1_000
    );
    println!(
        "  lease: base {} ms × (1 {:+}‰ health{} {:+}‰ stability {:+}‰ load) × {}‰ suspicion = {} ms{}",
        l.base_us / 1_000,
        l.nhi_factor_permille,
        match (l.nhi_permille, l.tier) {
            (Some(n), Some(t)) => format!(" [NHI {n}, {}]", format!("{t:?}").to_lowercase()),
            _ => " [no report]".to_owned(),
        },
        l.stability_factor_permille,
        l.load_factor_permille,
        l.suspicion_scale_permille,
        l.validity_us / 1_000,
        if l.clamped { " (clamped)" } else { "" },
    );
    println!("  client drift bound: {} ppm", view.client_rho_ppm);
    if let Some(score) = view.suspicion_permille {
        println!("  suspected: score {score}‰");
    }
    if !view.held.is_empty() {
        println!("  holds: {}", view.held.join(", "));
    }
    Ok(())
}

/// `driftlock watch PREFIX`: prints KV changes until Ctrl-C.
pub async fn watch(args: WatchArgs) -> CmdResult {
    let filter = EventFilter {
        key_prefix: Some(args.prefix.clone()),
        ..Default::default()
    };
    let mut after = 0u64;
    let mut endpoint = 0usize;
    let mut started = false;
    loop {
        let ep = &args.endpoints.endpoints[endpoint % args.endpoints.endpoints.len()];
        let client = match rpc::connect(ep, Duration::from_secs(2)).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("driftlock watch: {e}; trying the next node");
                endpoint += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if !started {
            // Start from now: the newest index this node has.
            after = client
                .status(rpc::context(Duration::from_secs(2)))
                .await
                .map(|s| s.applied_index)
                .unwrap_or(0);
            started = true;
            eprintln!("watching '{}' from index {after} (Ctrl-C stops)", args.prefix);
        }
        loop {
            let call = client.observe(rpc::context(Duration::from_secs(15)), after, filter.clone(), 10_000);
            let batch = tokio::select! {
                r = call => r,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match batch {
                Ok(Ok(batch)) => {
                    if batch.truncated {
                        eprintln!("driftlock watch: some changes were missed (node buffer overflow or snapshot)");
                    }
                    for (index, e) in batch.events {
                        if let Event::KvChanged { key, revision } = e {
                            if revision == 0 {
                                println!("{index}\tDELETE\t{key}");
                            } else {
                                println!("{index}\tPUT\t{key}");
                            }
                        }
                    }
                    after = batch.next_after_index.max(after);
                }
                _ => {
                    endpoint += 1;
                    break;
                }
            }
        }
    }
}
