//! One test run: start the cluster, run the workloads under the nemeses,
//! heal, restart every node, read back, check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::checkers::{check_all, CheckConfig, VerdictTable};
use crate::cluster::{netns_available, Cluster, ClusterOptions};
use crate::history::{export_porcupine, pair, Function, History, OpKind, Value, FINAL_PHASE};
use crate::nemesis::{usable, Nemesis, NemesisCtx, NemesisStats};
use crate::workload::{self, WorkerArgs};

/// Which workloads run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Workloads {
    /// KV register read/write/cas.
    pub register: bool,
    /// Lock + fenced counter (worker processes).
    pub lock: bool,
    /// Election campaign/resign/observe.
    pub election: bool,
}

impl Workloads {
    /// Parses `all` or a comma-separated list of `register`, `lock`
    /// (also `counter`), `election`.
    pub fn parse(s: &str) -> Result<Workloads, String> {
        let mut w = Workloads::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => {
                    w = Workloads {
                        register: true,
                        lock: true,
                        election: true,
                    }
                }
                "register" | "kv" => w.register = true,
                "lock" | "counter" | "lock-intervals" => w.lock = true,
                "election" => w.election = true,
                p => return Err(format!("unknown workload '{p}' (known: register, lock, election, all)")),
            }
        }
        Ok(w)
    }
}

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Number of nodes started (3 or 5 normally).
    pub nodes: usize,
    /// Length of the faulty phase.
    pub duration: Duration,
    /// Faults to schedule.
    pub nemeses: Vec<Nemesis>,
    /// Which workloads run alongside the faults.
    pub workloads: Workloads,
    /// Seed of every random choice.
    pub seed: u64,
    /// The `driftlock` binary the nodes run (`--driftlock`, or the one of this
    /// build's cargo profile).
    pub driftlock: PathBuf,
    /// The runner binary (spawned as `worker`).
    pub worker_exe: PathBuf,
    /// Parent of run directories.
    pub store: PathBuf,
    /// Forbid network namespaces even when available.
    pub no_netns: bool,
    /// Extra `serve` flags for every node.
    pub node_args: Vec<String>,
    /// Session TTL of the lock and election clients, ms.
    pub session_ttl_ms: u64,
    /// Number of lock workload processes; each is a separate client the pause
    /// nemesis can SIGSTOP.
    pub lock_workers: u64,
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The run directory (kept).
    pub run_dir: PathBuf,
    /// One verdict per checker; [`VerdictTable::passed`] decides the exit code.
    pub table: VerdictTable,
    /// What each nemesis did.
    pub nemesis_stats: BTreeMap<Nemesis, NemesisStats>,
    /// Per nemesis: ops completing `fail` / `info` while it was active.
    pub failed_ops: BTreeMap<String, (u64, u64)>,
    /// Ops by completion kind over the run.
    pub op_counts: BTreeMap<String, u64>,
    /// Whether network namespaces were used.
    pub netns: bool,
}

/// Runs a whole test; errors only when the cluster cannot be set up.
pub async fn run(opts: RunOptions) -> Result<RunOutcome, String> {
    let run_id = format!(
        "{}-s{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        opts.seed
    );
    let run_dir = opts.store.join(run_id);
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let history = History::create(&run_dir).map_err(|e| e.to_string())?;
    let netns = if opts.no_netns {
        println!("network namespaces: off (--no-netns)");
        false
    } else {
        match netns_available() {
            Ok(()) => true,
            Err(why) => {
                println!("network namespaces: unavailable ({why}); nodes on 127.0.0.x");
                false
            }
        }
    };
    println!("run dir: {}", run_dir.display());
    let cluster = Cluster::start(ClusterOptions {
        nodes: opts.nodes,
        binary: opts.driftlock.clone(),
        run_dir: run_dir.clone(),
        netns,
        extra_args: {
            let mut args = opts.node_args.clone();
            if opts.nemeses.contains(&Nemesis::Snapshot) {
                args.extend(crate::nemesis::SNAPSHOT_NODE_ARGS.iter().map(|a| a.to_string()));
            }
            args
        },
    })
    .await
    .map_err(|e| format!("cluster setup: {e}"))?;
    let endpoints = cluster.endpoints();
    println!(
        "cluster up: {} nodes ({})",
        opts.nodes,
        if netns { "namespaces" } else { "loopback" }
    );
    let cluster = Arc::new(Mutex::new(cluster));
    let stop = Arc::new(AtomicBool::new(false));

    // Workloads.
    let mut tasks = Vec::new();
    if opts.workloads.register {
        tasks.push(tokio::spawn(workload::run_register(
            endpoints.clone(),
            history.clone(),
            4,
            0,
            opts.seed,
            stop.clone(),
        )));
    }
    let switches: workload::CutSwitches = Arc::default();
    if opts.workloads.election {
        tasks.push(tokio::spawn(workload::run_election(
            endpoints.clone(),
            history.clone(),
            3,
            100_000,
            Duration::from_millis(opts.session_ttl_ms),
            opts.seed,
            switches.clone(),
            stop.clone(),
        )));
    }
    let mut workers = Vec::new();
    if opts.workloads.lock {
        for w in 0..opts.lock_workers {
            let args = WorkerArgs {
                endpoints: endpoints.clone(),
                session_ttl_ms: opts.session_ttl_ms,
                seed: opts.seed.wrapping_add(w),
            };
            workers.push(workload::spawn_worker(
                &opts.worker_exe,
                &args,
                w,
                200_000,
                history.clone(),
                &run_dir,
            )?);
        }
    }

    // Nemeses.
    let enabled = usable(&opts.nemeses, netns);
    let nemesis = Arc::new(NemesisCtx {
        cluster: cluster.clone(),
        history: history.clone(),
        workers: workers.iter().filter_map(|w| w.pid).collect(),
        active: std::sync::Mutex::new(None),
        stats: std::sync::Mutex::new(BTreeMap::new()),
        election_switches: switches.clone(),
    });
    let nemesis_stop = Arc::new(AtomicBool::new(false));
    let nemesis_task = tokio::spawn(nemesis.clone().run(enabled, opts.seed, nemesis_stop.clone()));

    let started = Instant::now();
    while started.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = history.flush();
    }
    println!("faulty phase over after {:?}: healing", started.elapsed());
    nemesis_stop.store(true, Ordering::Relaxed);
    let _ = nemesis_task.await;
    nemesis.heal_all().await;
    // Let the workloads see a healthy cluster for a moment, then stop them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for mut w in workers {
        if let Some(mut stdin) = w.child.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        drop(w.child.stdin.take());
        match tokio::time::timeout(Duration::from_secs(15), w.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                println!("worker {} did not stop: killed", w.index);
                let _ = w.child.kill().await;
            }
        }
        let _ = w.reader.await;
    }
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(20), t).await.is_err() {
            println!("a workload task did not stop in time");
        }
    }

    // Durability: kill every node, restart all, read everything back.
    {
        let mut c = cluster.lock().await;
        for i in 0..c.nodes.len() {
            c.kill(i);
        }
        for i in 0..c.nodes.len() {
            c.spawn(i).map_err(|e| format!("final restart: {e}"))?;
        }
        if let Err(e) = c.wait_leader(Duration::from_secs(60)).await {
            println!("final phase: {e}");
        }
    }
    history.mark_phase(NEMESIS_FINAL_PROCESS, FINAL_PHASE);
    workload::final_reads(endpoints, &history, 300_000, Duration::from_secs(60)).await;
    history.flush().map_err(|e| e.to_string())?;
    cluster.lock().await.shutdown();

    let ops = history.ops();
    let pairs = pair(&ops).map_err(|e| e.to_string())?;
    if let Err(e) = export_porcupine(&pairs, &run_dir) {
        println!("porcupine export failed: {e}");
    }
    let table = check_all(&ops, &CheckConfig::default()).map_err(|e| e.to_string())?;
    let (failed_ops, op_counts) = op_summary(&history);
    let nemesis_stats = nemesis.stats.lock().map(|s| s.clone()).unwrap_or_default();
    let outcome = RunOutcome {
        run_dir,
        table,
        nemesis_stats,
        failed_ops,
        op_counts,
        netns,
    };
    write_report(&outcome, &opts).map_err(|e| e.to_string())?;
    Ok(outcome)
}

/// Process id of the final phase marker.
const NEMESIS_FINAL_PROCESS: u64 = 999_998;

/// Per nemesis window (from a nemesis op to the next heal), the ops that
/// completed `fail` and `info` in it; and op counts by kind.
fn op_summary(history: &History) -> (BTreeMap<String, (u64, u64)>, BTreeMap<String, u64>) {
    let mut per: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut active: Option<String> = None;
    for op in history.ops() {
        if let Function::Nemesis { action } = &op.f {
            if op.kind == OpKind::Invoke {
                let a = action.as_str();
                if a.starts_with("heal")
                    || a.starts_with("SIGCONT")
                    || a.starts_with("restart n")
                    || a.contains("voter again")
                {
                    active = None;
                } else if !a.starts_with("leader ") {
                    let kind = a.split_whitespace().next().unwrap_or("").to_owned();
                    let name = match kind.as_str() {
                        "kill" => "kill",
                        "SIGSTOP" => "pause",
                        "partition" => "partition",
                        "netem" => "netem",
                        "restart" => "clock",
                        "leader-transfer" => "transfer",
                        "remove" => "membership",
                        _ => "other",
                    };
                    active = Some(name.to_owned());
                }
            }
            continue;
        }
        if matches!(op.f, Function::Phase { .. }) || op.kind == OpKind::Invoke {
            continue;
        }
        // A cas whose comparison failed is the register working, not a fault.
        if matches!(&op.value, Value::Error(e) if e == workload::CAS_MISMATCH) {
            *counts.entry("cas-mismatch".into()).or_default() += 1;
            continue;
        }
        *counts.entry(format!("{:?}", op.kind).to_lowercase()).or_default() += 1;
        if let Some(a) = &active {
            let e = per.entry(a.clone()).or_default();
            match op.kind {
                OpKind::Fail => e.0 += 1,
                OpKind::Info => e.1 += 1,
                _ => {}
            }
        }
    }
    (per, counts)
}

/// Formats the nemesis summary table.
pub fn nemesis_table(outcome: &RunOutcome) -> String {
    let mut s = format!(
        "{:<11} {:>7} {:>7} {:>9} {:>14} {:>10} {:>10}\n",
        "nemesis", "faults", "errors", "active_s", "leader_changes", "fail_ops", "info_ops"
    );
    let mut names: Vec<String> = outcome.nemesis_stats.keys().map(|n| n.name().to_owned()).collect();
    for k in outcome.failed_ops.keys() {
        if !names.contains(k) {
            names.push(k.clone());
        }
    }
    for name in names {
        let st = outcome
            .nemesis_stats
            .iter()
            .find(|(n, _)| n.name() == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        let (fail, info) = outcome.failed_ops.get(&name).copied().unwrap_or_default();
        s.push_str(&format!(
            "{:<11} {:>7} {:>7} {:>9.1} {:>14} {:>10} {:>10}\n",
            name,
            st.started,
            st.errors,
            st.active_ms as f64 / 1000.0,
            st.leader_changes,
            fail,
            info
        ));
    }
    s
}

fn write_report(outcome: &RunOutcome, opts: &RunOptions) -> std::io::Result<()> {
    let mut text = format!(
        "nodes={} time={:?} seed={} nemeses={:?} workloads={:?} netns={}\n\n",
        opts.nodes, opts.duration, opts.seed, opts.nemeses, opts.workloads, outcome.netns
    );
    text.push_str(&outcome.table.to_string());
    text.push('\n');
    text.push_str(&nemesis_table(outcome));
    text.push_str(&format!("\nops by completion: {:?}\n", outcome.op_counts));
    std::fs::write(outcome.run_dir.join("verdict.txt"), text)?;
    let json = serde_json::to_string_pretty(&outcome.table).unwrap_or_default();
    std::fs::write(outcome.run_dir.join("verdict.json"), json)
}
