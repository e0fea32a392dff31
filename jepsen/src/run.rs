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
use crate::progress::Progress;
use crate::verdict::{
    counts_by_type, counts_table, judge, FaultRecord, Invalid, KindCounts, Minimums, RunFacts, WorkloadCounts,
};
use crate::workload::{self, WorkerArgs};

pub use crate::verdict::Workloads;

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
    /// Nemeses of `nemeses` that are dropped with a note, instead of making
    /// the run invalid, when this machine cannot run them (netem under
    /// `--nemesis all` on a kernel without `sch_netem`).
    pub optional_nemeses: Vec<Nemesis>,
    /// The least each requested workload must do for a valid run.
    pub minimums: Minimums,
    /// Accept `Unknown` checker results (`--allow-unknown`).
    pub allow_unknown: bool,
    /// Draw the in-place status line ([`crate::progress::live_default`]).
    pub live_progress: bool,
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The run directory (kept).
    pub run_dir: PathBuf,
    /// One verdict per checker.
    pub table: VerdictTable,
    /// Everything besides the checkers that decides whether the run is
    /// valid: requested workloads and nemeses, ok counts, faults with
    /// their start and end, workload errors, the final restart and reads.
    pub facts: RunFacts,
    /// Why the run is invalid ([`crate::verdict::judge`]); empty for a
    /// valid run.
    pub invalid: Vec<Invalid>,
    /// ok / fail / info per op type.
    pub by_type: BTreeMap<&'static str, KindCounts>,
    /// What each nemesis did.
    pub nemesis_stats: BTreeMap<Nemesis, NemesisStats>,
    /// Per nemesis: ops completing `fail` / `info` while it was active.
    pub failed_ops: BTreeMap<String, (u64, u64)>,
    /// Ops by completion kind over the run.
    pub op_counts: BTreeMap<String, u64>,
    /// Whether network namespaces were used.
    pub netns: bool,
}

impl RunOutcome {
    /// Whether the run is a valid pass: no violation, and every requested
    /// checker passed on enough data ([`crate::verdict`]).
    pub fn valid(&self) -> bool {
        self.invalid.is_empty()
    }
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
    // The slow-disk shim is compiled now; without a C compiler the nemesis
    // cannot run (which makes the run invalid if it was requested).
    let (slow_disk_shim, slow_disk_unavailable) = if opts.nemeses.contains(&Nemesis::SlowDisk) {
        match crate::slowdisk::build(&run_dir) {
            Ok(lib) => (Some(lib), None),
            Err(why) => (None, Some(why)),
        }
    } else {
        (None, None)
    };
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
        live_clocks: opts.nemeses.iter().any(|n| n.needs_live_clocks()),
        slow_disk_shim,
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

    // Nemeses this machine cannot run: optional ones are dropped with a
    // note, the others make the run invalid.
    let (mut enabled, mut unavailable) = usable(&opts.nemeses, netns);
    if let Some(why) = slow_disk_unavailable {
        enabled.retain(|n| *n != Nemesis::SlowDisk);
        unavailable.insert(Nemesis::SlowDisk, why);
    }
    let mut requested = opts.nemeses.clone();
    for n in &opts.optional_nemeses {
        if let Some(why) = unavailable.remove(n) {
            println!("nemesis {n}: not run ({why}); optional under `all`");
            requested.retain(|r| r != n);
        }
    }
    for (n, why) in &unavailable {
        println!("nemesis {n}: cannot run here: {why} (the run will be invalid)");
    }

    // With the delay nemesis, every workload client goes through a
    // delaying proxy per node.
    let delay_proxies = Arc::new(if opts.nemeses.contains(&Nemesis::Delay) {
        workload::delay_proxies(&endpoints).await?
    } else {
        Vec::new()
    });
    let final_endpoints = endpoints.clone();
    let endpoints = if delay_proxies.is_empty() {
        endpoints
    } else {
        delay_proxies.iter().map(driftlock_testkit::FaultProxy::addr).collect()
    };

    // Workloads.
    let mut tasks: Vec<(&str, tokio::task::JoinHandle<Result<(), String>>)> = Vec::new();
    if opts.workloads.register {
        tasks.push((
            "register",
            tokio::spawn(workload::run_register(
                endpoints.clone(),
                history.clone(),
                4,
                0,
                opts.seed,
                stop.clone(),
            )),
        ));
    }
    let switches: workload::CutSwitches = Arc::default();
    if opts.workloads.election {
        tasks.push((
            "election",
            tokio::spawn(workload::run_election(
                endpoints.clone(),
                history.clone(),
                3,
                100_000,
                Duration::from_millis(opts.session_ttl_ms),
                opts.seed,
                switches.clone(),
                stop.clone(),
            )),
        ));
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
    let progress = Arc::new(Progress::new(opts.duration, opts.live_progress));
    let nemesis = Arc::new(NemesisCtx {
        cluster: cluster.clone(),
        history: history.clone(),
        workers: workers.iter().filter_map(|w| w.pid).collect(),
        active: std::sync::Mutex::new(None),
        stats: std::sync::Mutex::new(BTreeMap::new()),
        election_switches: switches.clone(),
        progress: progress.clone(),
        delay_proxies: delay_proxies.clone(),
        faults: std::sync::Mutex::new(Vec::new()),
    });
    let nemesis_stop = Arc::new(AtomicBool::new(false));
    let nemesis_task = tokio::spawn(
        nemesis
            .clone()
            .run(enabled, opts.seed, nemesis_stop.clone(), opts.duration),
    );

    let started = Instant::now();
    while started.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = history.flush();
        progress.tick(u64::try_from(history.len() / 2).unwrap_or(u64::MAX));
    }
    progress.finish();
    println!("faulty phase over after {:?}: healing", started.elapsed());
    nemesis_stop.store(true, Ordering::Relaxed);
    let _ = nemesis_task.await;
    nemesis.heal_all().await;
    // Let the workloads see a healthy cluster for a moment, then stop them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut workload_errors = Vec::new();
    for mut w in workers {
        if let Some(mut stdin) = w.child.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        drop(w.child.stdin.take());
        match tokio::time::timeout(Duration::from_secs(15), w.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => workload_errors.push(format!(
                "lock worker {} exited with {status} (see worker{}.log)",
                w.index, w.index
            )),
            Ok(Err(e)) => workload_errors.push(format!("lock worker {}: cannot wait for it: {e}", w.index)),
            Err(_) => {
                workload_errors.push(format!("lock worker {} did not stop within 15 s: killed", w.index));
                let _ = w.child.kill().await;
            }
        }
        let _ = w.reader.await;
    }
    for (name, t) in tasks {
        match tokio::time::timeout(Duration::from_secs(20), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => workload_errors.push(format!("{name}: {e}")),
            Ok(Err(e)) => workload_errors.push(format!("{name}: task failed: {e}")),
            Err(_) => workload_errors.push(format!("{name}: did not stop within 20 s")),
        }
    }

    // Durability: kill every node, restart all, read everything back.
    let final_restart = {
        let mut c = cluster.lock().await;
        for i in 0..c.nodes.len() {
            c.kill(i);
        }
        let mut problems = Vec::new();
        for i in 0..c.nodes.len() {
            if let Err(e) = c.spawn(i) {
                problems.push(format!("n{}: {e}", c.nodes[i].id));
            }
        }
        if let Err(e) = c.wait_leader(Duration::from_secs(60)).await {
            problems.push(format!("no leader: {e}"));
        }
        for i in 0..c.nodes.len() {
            if c.is_running(i) {
                if let Err(e) = c.wait_up(i, Duration::from_secs(30)).await {
                    problems.push(format!("n{} does not answer: {e}", c.nodes[i].id));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    };
    if let Err(e) = &final_restart {
        println!("final restart: {e}");
    }
    history.mark_phase(NEMESIS_FINAL_PROCESS, FINAL_PHASE);
    let final_reads = workload::final_reads(final_endpoints, &history, 300_000, Duration::from_secs(60)).await;
    history.flush().map_err(|e| e.to_string())?;
    cluster.lock().await.shutdown();

    let ops = history.ops();
    let pairs = pair(&ops).map_err(|e| e.to_string())?;
    if let Err(e) = export_porcupine(&pairs, &run_dir) {
        println!("porcupine export failed: {e}");
    }
    let table = check_all(&ops, &CheckConfig::default()).map_err(|e| e.to_string())?;
    if let Ok(faults) = nemesis.faults.lock() {
        if let Err(e) = crate::plots::write_plots(&pairs, &faults, &run_dir) {
            println!("plots failed: {e}");
        }
    }
    let faults = nemesis.faults.lock().map(|f| f.clone()).unwrap_or_default();
    let (failed_ops, op_counts) = op_summary(&history, &faults);
    let nemesis_stats = nemesis.stats.lock().map(|s| s.clone()).unwrap_or_default();
    let last_errors = nemesis_stats
        .iter()
        .filter_map(|(n, s)| s.last_error.clone().map(|e| (*n, e)))
        .collect();
    let facts = RunFacts {
        workloads: opts.workloads,
        nemeses: requested,
        counts: WorkloadCounts::from_pairs(&pairs),
        faults,
        unavailable,
        workload_errors,
        final_restart,
        final_reads,
    };
    let invalid = judge(&table, &facts, &opts.minimums, opts.allow_unknown, &last_errors);
    let outcome = RunOutcome {
        run_dir,
        table,
        facts,
        invalid,
        by_type: counts_by_type(&pairs),
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

/// Per nemesis, the ops that completed `fail` and `info` while one of its
/// faults was in force (from its start to the end of its heal); and op
/// counts by completion kind over the run (a cas whose comparison failed
/// counted apart, as `cas-mismatch`).
fn op_summary(history: &History, faults: &[FaultRecord]) -> (BTreeMap<String, (u64, u64)>, BTreeMap<String, u64>) {
    let mut per: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for op in history.ops() {
        if matches!(op.f, Function::Nemesis { .. } | Function::Phase { .. }) || op.kind == OpKind::Invoke {
            continue;
        }
        // A cas whose comparison failed is the register working, not a fault.
        if matches!(&op.value, Value::Error(e) if e == workload::CAS_MISMATCH) {
            *counts.entry("cas-mismatch".into()).or_default() += 1;
            continue;
        }
        *counts.entry(format!("{:?}", op.kind).to_lowercase()).or_default() += 1;
        let active = faults
            .iter()
            .find(|f| f.start_ns <= op.time_ns && op.time_ns <= f.end_ns.unwrap_or(u64::MAX));
        if let Some(f) = active {
            let e = per.entry(f.nemesis.name().to_owned()).or_default();
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

/// The end-of-run report: the verdict table, the per-nemesis table, ok /
/// fail / info per op type, what each workload did against its minimum,
/// and the verdict with every reason the run is invalid.
pub fn report_text(outcome: &RunOutcome, minimums: &Minimums) -> String {
    let mut s = String::new();
    s.push_str(&outcome.table.to_string());
    s.push('\n');
    s.push_str(&nemesis_table(outcome));
    s.push('\n');
    s.push_str(&counts_table(&outcome.by_type));
    let (c, w) = (&outcome.facts.counts, outcome.facts.workloads);
    let mut did = Vec::new();
    if w.register {
        did.push(format!("register {} (min {})", c.register_ok, minimums.register_ok));
    }
    if w.lock {
        did.push(format!("lock holds {} (min {})", c.lock_holds, minimums.lock_holds));
    }
    if w.election {
        did.push(format!("masterships {} (min {})", c.masterships, minimums.masterships));
    }
    s.push_str(&format!("\nok ops before the final phase: {}\n", did.join(", ")));
    s.push_str(&format!("ops by completion: {:?}\n", outcome.op_counts));
    s.push_str(&format!("faults applied: {}\n", outcome.facts.faults.len()));
    if outcome.invalid.is_empty() {
        s.push_str("valid: every requested checker passed on enough data\n");
    } else {
        s.push_str("INVALID:\n");
        for why in &outcome.invalid {
            s.push_str(&format!("  - {why}\n"));
        }
    }
    s
}

/// Everything of a run's outcome as JSON (`outcome.json` in its run
/// directory): verdicts, facts, the reasons it is invalid, op counts.
#[derive(serde::Serialize)]
struct OutcomeJson<'a> {
    valid: bool,
    invalid: Vec<String>,
    table: &'a VerdictTable,
    facts: &'a RunFacts,
    by_type: &'a BTreeMap<&'static str, KindCounts>,
    minimums: &'a Minimums,
}

fn write_report(outcome: &RunOutcome, opts: &RunOptions) -> std::io::Result<()> {
    let mut text = format!(
        "nodes={} time={:?} seed={} nemeses={:?} workloads={:?} netns={}\n\n",
        opts.nodes, opts.duration, opts.seed, opts.nemeses, opts.workloads, outcome.netns
    );
    text.push_str(&report_text(outcome, &opts.minimums));
    std::fs::write(outcome.run_dir.join("verdict.txt"), text)?;
    let json = serde_json::to_string_pretty(&outcome.table).unwrap_or_default();
    std::fs::write(outcome.run_dir.join("verdict.json"), json)?;
    let all = OutcomeJson {
        valid: outcome.valid(),
        invalid: outcome.invalid.iter().map(ToString::to_string).collect(),
        table: &outcome.table,
        facts: &outcome.facts,
        by_type: &outcome.by_type,
        minimums: &opts.minimums,
    };
    std::fs::write(
        outcome.run_dir.join("outcome.json"),
        serde_json::to_string_pretty(&all).unwrap_or_default(),
    )
}
