//! `driftlock-bench`: the same lock workloads against a 3-node driftlock
//! cluster and a 3-node etcd cluster on this machine; measurements of a
//! driftlock cluster alone (memory per held lock, fill rate and restart
//! with a large state, lock latency while snapshots of it are taken,
//! cluster-time rate); and the soak run, a check that a long steady load
//! with a leader failover loses no session.
//!
//! ```text
//! cargo run --release -p driftlock-benches --bin driftlock-bench -- compare-etcd [--quick]
//! cargo run --release -p driftlock-benches --bin driftlock-bench -- held-locks-memory --locks 1000000 \
//!     --out benches/results/held-locks-memory-1m.json
//! cargo run --release -p driftlock-benches --bin driftlock-bench -- held-locks-memory --locks 30000 --report-every 10000
//! cargo run --release -p driftlock-benches --bin driftlock-bench -- snapshot-latency \
//!     --out benches/results/snapshot-latency-1m.json
//! cargo run --release -p driftlock-benches --bin driftlock-bench -- snapshot-latency --locks 20000 \
//!     --baseline-locks 2000 --seconds 10
//! cargo run --release -p driftlock-benches --bin driftlock-bench -- cluster-rate --label after
//! cargo run --release -p driftlock-benches --bin driftlock-bench -- soak [--quick]
//! cargo run --release -p driftlock-benches --bin driftlock-bench -- soak-table benches/results/soak.json
//! ```

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use driftlock_benches::cluster::{ClusterError, DriftlockCluster, EtcdCluster};
use driftlock_benches::memory;
use driftlock_benches::rate;
use driftlock_benches::report::{self, Machine, Row};
use driftlock_benches::snapshot_latency;
use driftlock_benches::soak::{self, SoakOptions};
use driftlock_benches::workload::{self, Fault, Measured, System, Target, Timing};

#[derive(Parser, Debug)]
#[command(name = "driftlock-bench", about = "driftlock vs etcd load generator")]
struct Cli {
    /// Run the driftlock nodes on plain TCP instead of mutual TLS (the
    /// default, as in production): to measure what TLS costs.
    #[arg(long, global = true)]
    plain_tcp: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs every workload against driftlock and etcd (twice: clients
    /// pinned round-robin to the members, and pinned to the leader), in
    /// rotating order, and writes benches/results/latest.json, machine.json,
    /// the plots and the BENCHMARKS.md table.
    CompareEtcd {
        /// One short run of each workload; its files get a `quick-` prefix
        /// (quick-latest.json, quick-machine.json, …) and BENCHMARKS.md is
        /// left alone.
        #[arg(long)]
        quick: bool,
        /// Keepalive workload: sessions (etcd: leases) to keep alive, e.g.
        /// 10000 or 50000.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Keepalive workload: clients (each its own connections) the
        /// sessions are spread over evenly.
        #[arg(long, default_value_t = 100)]
        keepalive_clients: usize,
        /// Runs per workload and system (default 3; 1 with --quick).
        #[arg(long)]
        runs: Option<usize>,
        /// Only these workloads (comma-separated: uncontended, contended,
        /// keepalive, failover-sigkill, failover-planned, failover-pause,
        /// regrant).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Where to write the results (default: benches/results of the source tree).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Do not touch BENCHMARKS.md.
        #[arg(long)]
        no_markdown: bool,
        /// Extra `driftlock serve` flags for every node (after `--`), e.g.
        /// `-- --heartbeat-ms 50` to try other Raft timings.
        #[arg(last = true)]
        serve_args: Vec<String>,
    },
    /// Bytes per held lock: node RSS growth while a client holds N locks;
    /// the fill rate per window of locks; then the restart of a follower
    /// holding them (SIGKILL, start on its data): until it answers, serves
    /// (`/readyz`) and has caught up. Prints the JSON report.
    HeldLocksMemory {
        /// Locks to take and hold.
        #[arg(long, default_value_t = 1_000_000)]
        locks: usize,
        /// Sessions holding them.
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// Acquires in flight at once while taking the locks.
        #[arg(long, default_value_t = 256)]
        in_flight: usize,
        /// Size of a fill window, locks: the rate of each is reported (and
        /// printed as it closes); the last full one against the first is
        /// `last_over_first`.
        #[arg(long, default_value_t = 100_000)]
        report_every: usize,
        /// After the fill, SIGKILL a follower and time its restart
        /// (`--restart false` to skip).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        restart: bool,
        /// Also write the JSON report here (pretty, with the command, date,
        /// git revision and the node binary's SHA-256).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Extra `driftlock serve` flags (after `--`).
        #[arg(last = true)]
        serve_args: Vec<String>,
    },
    /// Lock latency of a steady 16-client load while a fresh snapshot is
    /// forced on the leader every few seconds, at N held locks and at a
    /// small baseline (each on a fresh 3-node cluster with defaults);
    /// p50/p99/p99.9/max, the p99.9 ratio, the longest gap between lock
    /// completions and the leader's snapshot and stall metrics. Prints the
    /// JSON report.
    SnapshotLatency {
        /// Held locks of the measured phase.
        #[arg(long, default_value_t = 1_000_000)]
        locks: usize,
        /// Held locks of the baseline phase (0: none).
        #[arg(long, default_value_t = 10_000)]
        baseline_locks: usize,
        /// Seconds of each load window.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Load windows per phase, one after the other on the same cluster;
        /// the phase's percentiles are their medians (≥ 1).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
        windows: u64,
        /// Seconds between forced snapshots on the leader, the first half
        /// that into each window (0: none).
        #[arg(long, default_value_t = 10)]
        snapshot_every_s: u64,
        /// Load clients, each its own client and session, looping
        /// lock("lat/<i>") + release.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Sessions holding the filled locks.
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// Acquires in flight at once while filling.
        #[arg(long, default_value_t = 256)]
        in_flight: usize,
        /// Size of a fill window, locks.
        #[arg(long, default_value_t = 100_000)]
        report_every: usize,
        /// Also write the JSON report here (pretty, with the command, date,
        /// git revision and the node binary's SHA-256).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Extra `driftlock serve` flags for every node (after `--`).
        #[arg(last = true)]
        serve_args: Vec<String>,
    },
    /// A long steady load on a 3-node cluster with default settings: worker
    /// sessions lock, write fenced and unlock in a loop while idle sessions
    /// keep themselves alive; the leader is SIGKILLed and restarted in the
    /// middle. Prints a row every minute, writes benches/results/soak.json
    /// and a Markdown table; exits with status 2 if any session was lost or
    /// any clock-skew event raised (1 if the run itself failed).
    Soak {
        /// A short try: 2 minutes, 200 idle sessions, failover after minute
        /// 1, result in the temporary directory (each overridable).
        #[arg(long)]
        quick: bool,
        /// Minutes of load (default 20; 2 with --quick).
        #[arg(long)]
        minutes: Option<u32>,
        /// Minute of load at whose end the leader is SIGKILLed and, after
        /// --restart-after-ms, started again on its data (default: the
        /// middle; 1 with --quick; 0 = no failover).
        #[arg(long)]
        failover_at_minute: Option<u32>,
        /// Sessions that only keep themselves alive (default 1000; 200
        /// with --quick).
        #[arg(long)]
        idle_sessions: Option<usize>,
        /// Clients (each its own connections) the idle sessions are spread
        /// over.
        #[arg(long, default_value_t = 8)]
        idle_clients: usize,
        /// Worker sessions, each with its own client, looping lock
        /// `soak/w<i>` → fenced put `soak/w<i>/value` → unlock.
        #[arg(long, default_value_t = 16)]
        workers: usize,
        /// TTL every session asks for, ms.
        #[arg(long, default_value_t = 10_000)]
        ttl_ms: u64,
        /// How long the killed leader stays down, ms.
        #[arg(long, default_value_t = 5_000)]
        restart_after_ms: u64,
        /// Where to write the JSON report (default
        /// benches/results/soak.json of the source tree; with --quick,
        /// driftlock-soak-quick.json in the temporary directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to keep the node logs and the client log (default
        /// target/soak-logs/<UTC start> of the source tree).
        #[arg(long)]
        logs_dir: Option<PathBuf>,
        /// Extra `driftlock serve` flags for every node (after `--`).
        #[arg(last = true)]
        serve_args: Vec<String>,
    },
    /// Prints the Markdown table of a stored soak report (e.g.
    /// benches/results/soak.json), as the run printed it.
    SoakTable {
        /// The JSON report `soak` wrote.
        report: PathBuf,
    },
    /// Cluster time against real time on a 3-node cluster, idle and under
    /// one client's sequential lock/unlock loop; writes
    /// benches/results/cluster-rate-<label>.json.
    ClusterRate {
        /// Seconds each phase runs.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Names the result file (e.g. `before`, `after`).
        #[arg(long, default_value = "latest")]
        label: String,
        /// Where to write the result (default: benches/results of the source tree).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Extra `driftlock serve` flags for every node (after `--`).
        #[arg(last = true)]
        serve_args: Vec<String>,
    },
    /// (Internal) Takes a lock and holds it until killed; prints `held`.
    HoldLock {
        /// `driftlock`, `etcd-rr` (or `etcd`) or `etcd-leader`.
        #[arg(long)]
        system: String,
        /// Comma-separated endpoints.
        #[arg(long, value_delimiter = ',')]
        endpoints: Vec<String>,
        /// Lock to take and hold until this process is killed.
        #[arg(long)]
        name: String,
        /// Session / lease TTL, ms.
        #[arg(long)]
        ttl_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `RUST_LOG` (e.g. `driftlock_client=debug`) traces the benchmark's own
    // clients to stderr, with times to set beside the node logs; `soak`
    // otherwise sets up its own log file.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    driftlock_benches::cluster::set_plain_tcp(cli.plain_tcp);
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Soak {
                quick,
                minutes,
                failover_at_minute,
                idle_sessions,
                idle_clients,
                workers,
                ttl_ms,
                restart_after_ms,
                out,
                logs_dir,
                serve_args,
            } => {
                let minutes = minutes.unwrap_or(if quick { 2 } else { 20 }).max(1);
                let failover_at_minute = match failover_at_minute.unwrap_or(if quick { 1 } else { minutes / 2 }) {
                    0 => None,
                    m if m >= minutes => {
                        return Err(ClusterError::Client(format!(
                            "--failover-at-minute {m} must be below --minutes {minutes} (0: no failover)"
                        )))
                    }
                    m => Some(m),
                };
                let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
                let workspace = source.parent().map(PathBuf::from).unwrap_or_else(|| source.join(".."));
                let out = out.unwrap_or_else(|| {
                    if quick {
                        std::env::temp_dir().join("driftlock-soak-quick.json")
                    } else {
                        source.join("results").join("soak.json")
                    }
                });
                let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string()
                    .replace(':', "-");
                let logs_dir = logs_dir.unwrap_or_else(|| workspace.join("target").join("soak-logs").join(stamp));
                let opts = SoakOptions {
                    minutes,
                    workers,
                    idle_sessions: idle_sessions.unwrap_or(if quick { 200 } else { 1_000 }),
                    idle_clients,
                    ttl: Duration::from_millis(ttl_ms),
                    failover_at_minute,
                    restart_after: Duration::from_millis(restart_after_ms),
                    serve_args,
                    logs_dir,
                    command: command_line(),
                    source_dir: workspace,
                };
                run_soak(&opts, &out).await
            }
            Cmd::CompareEtcd {
                quick,
                sessions,
                keepalive_clients,
                runs,
                only,
                out_dir,
                no_markdown,
                serve_args,
            } => {
                let opts = CompareOptions {
                    quick,
                    sessions,
                    keepalive_clients,
                    runs,
                    only,
                    out_dir,
                    no_markdown,
                    serve_args,
                };
                compare(opts).await.map(|()| ExitCode::SUCCESS)
            }
            Cmd::SoakTable { report } => {
                let text = std::fs::read_to_string(&report)
                    .map_err(|e| ClusterError::Io(format!("{}: {e}", report.display())))?;
                let r: soak::record::SoakReport = serde_json::from_str(&text)
                    .map_err(|e| ClusterError::Io(format!("{}: not a soak report: {e}", report.display())))?;
                print!("{}", r.markdown());
                Ok(ExitCode::SUCCESS)
            }
            Cmd::HeldLocksMemory {
                locks,
                sessions,
                in_flight,
                report_every,
                restart,
                out,
                serve_args,
            } => {
                let opts = memory::MemoryOptions {
                    locks,
                    sessions,
                    in_flight,
                    report_every,
                    restart,
                    serve_args,
                };
                let r = memory::held_locks(&opts, report::RunInfo::collect(command_line())).await?;
                print_and_store(&r, out.as_deref())
            }
            Cmd::SnapshotLatency {
                locks,
                baseline_locks,
                seconds,
                windows,
                snapshot_every_s,
                clients,
                sessions,
                in_flight,
                report_every,
                out,
                serve_args,
            } => {
                let opts = snapshot_latency::LatencyOptions {
                    locks,
                    baseline_locks,
                    seconds,
                    windows: usize::try_from(windows).unwrap_or(usize::MAX),
                    snapshot_every_s,
                    clients,
                    sessions,
                    in_flight,
                    report_every,
                    serve_args,
                };
                let r = snapshot_latency::run(&opts, report::RunInfo::collect(command_line())).await?;
                print_and_store(&r, out.as_deref())
            }
            Cmd::ClusterRate {
                seconds,
                label,
                out_dir,
                serve_args,
            } => cluster_rate(seconds, label, out_dir, serve_args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Cmd::HoldLock {
                system,
                endpoints,
                name,
                ttl_ms,
            } => {
                let Some(system) = System::from_name(&system) else {
                    return Err(ClusterError::Client(format!("unknown system {system}")));
                };
                workload::hold_lock(system, endpoints, name, Duration::from_millis(ttl_ms))
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
        }
    });
    // Child processes die with their Cluster handles; leave quickly.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("driftlock-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status of a soak run that lost a session or raised a skew event.
const SOAK_FAILED: u8 = 2;

/// ` --plain-tcp` when given, for the command lines in the reports.
fn plain_tcp_flag() -> &'static str {
    if driftlock_benches::cluster::plain_tcp() {
        " --plain-tcp"
    } else {
        ""
    }
}

/// The command line as typed, for the reports.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("driftlock-bench {}", args.join(" "))
}

/// Prints `report` as pretty JSON to stdout and, with `out`, writes it
/// there too.
fn print_and_store<T: serde::Serialize>(report: &T, out: Option<&std::path::Path>) -> Result<ExitCode, ClusterError> {
    let json = serde_json::to_string_pretty(report).map_err(|e| ClusterError::Io(e.to_string()))?;
    println!("{json}");
    if let Some(out) = out {
        report::write_json(out, report).map_err(|e| ClusterError::Io(format!("{}: {e}", out.display())))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the soak with the client library's log in the logs directory,
/// writes the JSON report to `out`, prints the Markdown table, and returns
/// [`SOAK_FAILED`] if a session was lost or a skew event raised.
async fn run_soak(opts: &SoakOptions, out: &std::path::Path) -> Result<ExitCode, ClusterError> {
    std::fs::create_dir_all(&opts.logs_dir)
        .map_err(|e| ClusterError::Io(format!("{}: {e}", opts.logs_dir.display())))?;
    let client_log = opts.logs_dir.join("client.log");
    let file =
        std::fs::File::create(&client_log).map_err(|e| ClusterError::Io(format!("{}: {e}", client_log.display())))?;
    // The library's keepalive failures and expiries, and the run's own
    // findings, with times to set beside the node logs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,driftlock_client=info,driftlock_benches=info",
        ))
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .try_init();
    let report = soak::run(opts).await?;
    let json = report.to_json().map_err(|e| ClusterError::Io(e.to_string()))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ClusterError::Io(format!("{}: {e}", dir.display())))?;
    }
    std::fs::write(out, json).map_err(|e| ClusterError::Io(format!("{}: {e}", out.display())))?;
    print!("{}", report.markdown());
    eprintln!("wrote {}; logs in {}", out.display(), opts.logs_dir.display());
    let failures = report.failures();
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for l in &report.lost_sessions {
            eprintln!(
                "lost: session {} ({}) at {:.1} s ({}), noticed by {}, cause {:?}, last states {:?}",
                l.session,
                l.role,
                l.detected_at_s,
                l.detected_utc,
                l.sources.join("+"),
                l.cause,
                l.state_changes
            );
        }
        eprintln!("driftlock-bench soak: {}", failures.join("; "));
        Ok(ExitCode::from(SOAK_FAILED))
    }
}

const ALL: [&str; 7] = [
    "uncontended",
    "contended",
    "keepalive",
    "failover-sigkill",
    "failover-planned",
    "failover-pause",
    "regrant",
];

async fn run_one(
    target: &mut Target<'_>,
    workload: &str,
    clients: usize,
    timing: &Timing,
    run: usize,
) -> Result<Measured, ClusterError> {
    match workload {
        "uncontended" => workload::uncontended(target, clients, timing.window, run).await,
        "contended" => workload::contended(target, clients, timing.window, run).await,
        "keepalive" => workload::keepalive(target, timing).await,
        "failover-sigkill" => workload::failover(target, Fault::KillLeader, timing, run).await,
        "failover-planned" => workload::failover(target, Fault::Planned, timing, run).await,
        "failover-pause" => workload::failover(target, Fault::PauseLeader, timing, run).await,
        "regrant" => workload::regrant(target, run).await,
        other => Err(ClusterError::Client(format!("unknown workload {other}"))),
    }
}

/// What `compare-etcd` was asked to do.
struct CompareOptions {
    quick: bool,
    sessions: usize,
    keepalive_clients: usize,
    runs: Option<usize>,
    only: Vec<String>,
    out_dir: Option<PathBuf>,
    no_markdown: bool,
    serve_args: Vec<String>,
}

async fn compare(opts: CompareOptions) -> Result<(), ClusterError> {
    let CompareOptions {
        quick,
        sessions,
        keepalive_clients,
        runs,
        only,
        out_dir,
        no_markdown,
        serve_args,
    } = opts;
    let runs = runs.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let timing = if quick {
        Timing {
            window: Duration::from_secs(2),
            before_fault: Duration::from_secs(1),
            after_fault: Duration::from_secs(3),
            keepalive_sessions: sessions,
            keepalive_clients,
            cpu_window: Duration::from_secs(4),
        }
    } else {
        Timing {
            window: Duration::from_secs(5),
            before_fault: Duration::from_secs(2),
            after_fault: Duration::from_secs(5),
            keepalive_sessions: sessions,
            keepalive_clients,
            cpu_window: Duration::from_secs(10),
        }
    };
    let workloads: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|w| only.is_empty() || only.iter().any(|o| o == w))
        .collect();
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let workspace = source.parent().map(PathBuf::from).unwrap_or_else(|| source.join(".."));
    let out_dir = out_dir.unwrap_or_else(|| source.join("results"));
    std::fs::create_dir_all(&out_dir).map_err(|e| ClusterError::Io(format!("{}: {e}", out_dir.display())))?;
    // Quick runs keep their files beside the full run's, never over them.
    let prefix = if quick { "quick-" } else { "" };
    let out_file = |name: &str| out_dir.join(format!("{prefix}{name}"));

    eprintln!("starting a 3-node driftlock cluster and a 3-node etcd cluster");
    let mut dl = DriftlockCluster::start(&serve_args).await?;
    let mut et = EtcdCluster::start().await?;
    let probe_dir = tempfile::tempdir().map_err(|e| ClusterError::Io(e.to_string()))?;
    let (fs50, fs99) = report::fdatasync_latency(probe_dir.path(), 200).map_err(|e| ClusterError::Io(e.to_string()))?;
    let (rtt50, _) = report::loopback_rtt(2_000).map_err(|e| ClusterError::Io(format!("loopback RTT: {e}")))?;
    let driftlock_sha256 = driftlock_testkit::driftlock_exe()
        .ok()
        .and_then(|exe| report::sha256_file(&exe).ok())
        .unwrap_or_default();
    let machine = Machine {
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        fdatasync_p50_us: fs50,
        fdatasync_p99_us: fs99,
        etcd_version: etcd_version(),
        driftlock_transport: driftlock_benches::cluster::transport().into(),
        loopback_rtt_p50_us: rtt50,
        git_revision: report::git_revision(&workspace),
        driftlock_sha256,
        build_profile: if cfg!(debug_assertions) { "debug" } else { "release" }.into(),
    };
    eprintln!("machine: {machine:?}");

    // (workload, clients, system) → runs.
    let mut results: BTreeMap<(usize, usize, usize), Vec<Measured>> = BTreeMap::new();
    let systems = System::ALL;
    for run in 0..runs {
        for (wi, w) in workloads.iter().enumerate() {
            let client_counts: &[usize] = match *w {
                "uncontended" => &[1, 16, 64],
                "contended" | "failover-sigkill" | "failover-planned" | "failover-pause" => &[16],
                "keepalive" => &[timing.keepalive_sessions],
                _ => &[1],
            };
            for &clients in client_counts {
                // Rotate which system goes first.
                for k in 0..systems.len() {
                    let si = (k + run + wi) % systems.len();
                    let system = systems[si];
                    let mut target = match system.routing() {
                        None => Target::Driftlock(&mut dl),
                        Some(routing) => Target::Etcd(&mut et, routing),
                    };
                    eprintln!("run {}/{runs}: {w} {clients} clients on {}", run + 1, system.name());
                    match run_one(&mut target, w, clients, &timing, run).await {
                        Ok(m) => {
                            eprintln!(
                                "  {:.0} ops/s p50 {} µs p99 {} µs max {} µs failed {} first-ok {:?} terms +{:?} \
                                 leader cpu {:?} % cpu/pair {:?} µs cpu/renewal {:?} µs",
                                m.ops_per_sec,
                                m.p50_us,
                                m.p99_us,
                                m.max_us,
                                m.failed_ops,
                                m.first_ok_after_fault_us,
                                m.term_changes,
                                m.leader_cpu_pct,
                                m.cpu_us_per_op,
                                m.leader_cpu_us_per_renewal
                            );
                            results.entry((wi, clients, si)).or_default().push(m);
                        }
                        Err(e) => eprintln!("  failed: {e}"),
                    }
                    report::settle(Duration::from_millis(500)).await;
                }
            }
        }
    }

    let mut rows: Vec<Row> = Vec::new();
    let mut cdf16: Vec<(String, Vec<u64>)> = Vec::new();
    let mut cdf_contended: Vec<(String, Vec<u64>)> = Vec::new();
    for ((wi, clients, si), ms) in &results {
        rows.push(report::median_row(workloads[*wi], *clients, systems[*si], ms));
        let pooled: Vec<u64> = ms.iter().flat_map(|m| m.lock_latencies_us.iter().copied()).collect();
        if workloads[*wi] == "uncontended" && *clients == 16 {
            cdf16.push((systems[*si].name().to_string(), pooled));
        } else if workloads[*wi] == "contended" {
            cdf_contended.push((systems[*si].name().to_string(), pooled));
        }
    }
    let json = serde_json::to_string_pretty(&rows).map_err(|e| ClusterError::Io(e.to_string()))?;
    let json_path = out_file("latest.json");
    std::fs::write(&json_path, json + "\n").map_err(|e| ClusterError::Io(e.to_string()))?;
    let machine_json = serde_json::to_string_pretty(&machine).map_err(|e| ClusterError::Io(e.to_string()))?;
    let machine_path = out_file("machine.json");
    std::fs::write(&machine_path, machine_json + "\n")
        .map_err(|e| ClusterError::Io(format!("{}: {e}", machine_path.display())))?;
    for (name, r) in [
        (
            "throughput.png",
            report::plot_throughput(&rows, &out_file("throughput.png")),
        ),
        (
            "latency-cdf-16.png",
            report::plot_cdf(
                "Lock latency CDF, 16 clients, own locks",
                &cdf16,
                &out_file("latency-cdf-16.png"),
            ),
        ),
        (
            "latency-cdf-contended.png",
            report::plot_cdf(
                "Lock latency CDF, 16 clients, one lock",
                &cdf_contended,
                &out_file("latency-cdf-contended.png"),
            ),
        ),
    ] {
        if let Err(e) = r {
            eprintln!("plot {name} failed: {e}");
        }
    }
    let command = format!(
        "driftlock-bench{} compare-etcd{}{}{}{}",
        plain_tcp_flag(),
        if quick { " --quick" } else { "" },
        if only.is_empty() {
            String::new()
        } else {
            format!(" --only {}", only.join(","))
        },
        if sessions != 10_000 {
            format!(" --sessions {sessions}")
        } else {
            String::new()
        },
        if runs != if quick { 1 } else { 3 } {
            format!(" --runs {runs}")
        } else {
            String::new()
        }
    );
    let when = utc_now();
    let md = report::markdown(&rows, &machine, &command, &when);
    print!("{md}");
    if !no_markdown && !quick {
        let path = source.join("..").join("BENCHMARKS.md");
        report::splice_markdown(&path, &md).map_err(|e| ClusterError::Io(format!("{}: {e}", path.display())))?;
    }
    eprintln!("wrote {}", json_path.display());
    Ok(())
}

fn etcd_version() -> String {
    driftlock_benches::cluster::etcd_exe()
        .ok()
        .and_then(|exe| std::process::Command::new(exe).arg("--version").output().ok())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "etcd version unknown".into())
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

async fn cluster_rate(
    seconds: u64,
    label: String,
    out_dir: Option<PathBuf>,
    serve_args: Vec<String>,
) -> Result<(), ClusterError> {
    let out_dir = out_dir.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"));
    std::fs::create_dir_all(&out_dir).map_err(|e| ClusterError::Io(format!("{}: {e}", out_dir.display())))?;
    let probe_dir = tempfile::tempdir().map_err(|e| ClusterError::Io(e.to_string()))?;
    let fdatasync = report::fdatasync_latency(probe_dir.path(), 200).map_err(|e| ClusterError::Io(e.to_string()))?;
    let mut command = format!(
        "driftlock-bench{} cluster-rate --seconds {seconds} --label {label}",
        plain_tcp_flag()
    );
    if !serve_args.is_empty() {
        command.push_str(" -- ");
        command.push_str(&serve_args.join(" "));
    }
    let r = rate::cluster_rate(&label, &command, &utc_now(), seconds, fdatasync, &serve_args).await?;
    for p in [&r.idle, &r.sequential] {
        println!(
            "{:<10} real {:>7.3} s  cluster {:>7.3} s  rate {:.4} ({:>7.0} ppm slow, ρ_hi {} ppm)  {} entries  {:.0} pairs/s  {} failed",
            p.name, p.real_s, p.cluster_s, p.rate, p.slow_ppm, p.rho_hi_ppm, p.entries, p.pairs_per_sec, p.failed_ops
        );
    }
    let json = serde_json::to_string_pretty(&r).map_err(|e| ClusterError::Io(e.to_string()))?;
    let path = out_dir.join(format!("cluster-rate-{label}.json"));
    std::fs::write(&path, json + "\n").map_err(|e| ClusterError::Io(format!("{}: {e}", path.display())))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
