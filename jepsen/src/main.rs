//! `driftlock-jepsen`: runs driftlock under faults and checks the history.
//!
//! ```text
//! cargo run --release -p driftlock-jepsen -- --nodes 5 --time 60 \
//!     --nemesis kill,pause,partition,clock --workload all --seed 7
//! cargo run --release -p driftlock-jepsen -- --short      # the CI run
//! ```
//!
//! Prints the verdict table, keeps the run directory under
//! `jepsen/store/<run-id>/` and exits 1 on any violation (2 on a setup
//! error).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use driftlock_jepsen::campaign::{Campaign, CampaignRow};
use driftlock_jepsen::nemesis::parse_list;
use driftlock_jepsen::nemesis::Nemesis;
use driftlock_jepsen::run::{report_text, run, RunOptions, Workloads};
use driftlock_jepsen::verdict::Minimums;
use driftlock_jepsen::workload::{worker_main, WorkerArgs};

/// Jepsen-style fault-injection run against real driftlock nodes.
#[derive(Parser, Debug)]
#[command(name = "driftlock-jepsen", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

/// The settings of one run (also of each run of a campaign).
#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Number of nodes (3 or 5).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Length of the faulty phase, seconds.
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Nemeses, comma-separated: kill, pause, partition, netem, loss, clock,
    /// transfer, membership, snapshot, handover-cut, all, none. Each one
    /// requested must run at least once or the run is invalid (netem is
    /// optional under `all`: kernels without `sch_netem` cannot run it).
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Workloads: register, lock, election, all.
    #[arg(long, default_value = "all")]
    workload: String,
    /// Seed of the schedule and the workloads (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// The CI configuration: 3 nodes, 75 s, all nemeses (each at least once
    /// where usable), all workloads.
    #[arg(long)]
    short: bool,
    /// Directory of run directories (default: jepsen/store in the source tree).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Never use network namespaces (loopback addresses only).
    #[arg(long)]
    no_netns: bool,
    /// Network set, 0–9: namespace names and the /24 the nodes use (0:
    /// `dlj*` on 10.77.0.0/24, K: `dl<K>j*` on 10.(77+K).0.0/24), so that
    /// two runs can share a host, e.g. a campaign beside CI's short run.
    #[arg(long, env = "DRIFTLOCK_JEPSEN_NET", default_value_t = 0)]
    net: u8,
    /// The driftlock binary (default: the one of this build's cargo
    /// profile, built when missing or when run under cargo; see
    /// `driftlock_testkit::driftlock_exe`).
    #[arg(long)]
    driftlock: Option<PathBuf>,
    /// Session TTL of lock and election clients, ms.
    #[arg(long, default_value_t = 2_000)]
    session_ttl_ms: u64,
    /// Number of lock workload client processes (separate processes, so the
    /// pause nemesis can stop one that holds the lock).
    #[arg(long, default_value_t = 3)]
    lock_workers: u64,
    /// Start the nodes in the deliberately broken mode
    /// (--unsafe-fast-cluster-time): the checkers must report violations.
    #[arg(long)]
    unsafe_nodes: bool,
    /// Accept `unknown` checker results (linearizability budget spent) as
    /// passes; without it they make the run invalid.
    #[arg(long)]
    allow_unknown: bool,
    /// Least register ops completed `ok` for a valid run (default 1000,
    /// 500 under --short).
    #[arg(long)]
    min_register_ops: Option<u64>,
    /// Least lock holds (acquires completed `ok`) for a valid run (default
    /// 60, 30 under --short).
    #[arg(long)]
    min_lock_holds: Option<u64>,
    /// Least masterships (campaigns completed `ok`) for a valid run
    /// (default 15, 8 under --short).
    #[arg(long)]
    min_masterships: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs `--runs` seeds in a row (from `--seed`, default from the clock),
    /// each on a fresh cluster, until the first run that is not valid; keeps
    /// every run's directory, prints a table (seed, faults, ops, verdict)
    /// and writes it as `campaign-<unix time>.json` into the store, with
    /// the git revision.
    Campaign {
        /// Number of runs.
        #[arg(long)]
        runs: u64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// (internal) a lock workload client process.
    #[command(hide = true)]
    Worker {
        #[arg(long, value_delimiter = ',')]
        endpoints: Vec<String>,
        #[arg(long)]
        session_ttl_ms: u64,
        #[arg(long)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Cmd::Campaign { runs, run }) = cli.cmd {
        return match rt.block_on(campaign(run, runs)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("driftlock-jepsen campaign: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Cmd::Worker {
        endpoints,
        session_ttl_ms,
        seed,
    }) = cli.cmd
    {
        let args = WorkerArgs {
            endpoints,
            session_ttl_ms,
            seed,
        };
        return match rt.block_on(worker_main(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: {e}");
                ExitCode::from(2)
            }
        };
    }
    match rt.block_on(main_run(cli.run)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("driftlock-jepsen: {e}");
            ExitCode::from(2)
        }
    }
}

/// The run options of `cli` with `seed`, and the minimums they use.
fn options(cli: &RunArgs, seed: u64) -> Result<RunOptions, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let (nodes, time, nemesis, workload) = if cli.short {
        (3, 75, "all".to_owned(), "all".to_owned())
    } else {
        (cli.nodes, cli.time, cli.nemesis.clone(), cli.workload.clone())
    };
    let driftlock = match &cli.driftlock {
        Some(p) => p.clone(),
        None => driftlock_testkit::driftlock_exe().map_err(|e| e.to_string())?,
    };
    let store = cli
        .store
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("store"));
    driftlock_jepsen::cluster::set_net_index(cli.net)?;
    let defaults = if cli.short { Minimums::SHORT } else { Minimums::FULL };
    Ok(RunOptions {
        nodes,
        duration: Duration::from_secs(time),
        nemeses: parse_list(&nemesis)?,
        workloads: Workloads::parse(&workload)?,
        seed,
        driftlock,
        worker_exe: exe,
        store,
        no_netns: cli.no_netns,
        node_args: if cli.unsafe_nodes {
            vec!["--unsafe-fast-cluster-time".to_owned()]
        } else {
            Vec::new()
        },
        session_ttl_ms: cli.session_ttl_ms,
        lock_workers: cli.lock_workers,
        optional_nemeses: optional_nemeses(&nemesis),
        minimums: Minimums {
            register_ok: cli.min_register_ops.unwrap_or(defaults.register_ok),
            lock_holds: cli.min_lock_holds.unwrap_or(defaults.lock_holds),
            masterships: cli.min_masterships.unwrap_or(defaults.masterships),
        },
        allow_unknown: cli.allow_unknown,
        live_progress: driftlock_jepsen::progress::live_default(),
    })
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
}

async fn main_run(cli: RunArgs) -> Result<ExitCode, String> {
    let seed = cli.seed.unwrap_or_else(clock_seed);
    let opts = options(&cli, seed)?;
    println!(
        "driftlock-jepsen: {} nodes, {} s, nemeses {:?}, seed {seed}, driftlock {}",
        opts.nodes,
        opts.duration.as_secs(),
        opts.nemeses.iter().map(|n| n.name()).collect::<Vec<_>>(),
        opts.driftlock.display()
    );
    let minimums = opts.minimums;
    let outcome = run(opts).await?;
    println!("\n{}", report_text(&outcome, &minimums));
    println!("run dir: {}", outcome.run_dir.display());
    if outcome.valid() {
        println!("verdict: VALID (seed {seed})");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("verdict: INVALID (seed {seed})");
        Ok(ExitCode::from(1))
    }
}

/// `campaign`: `runs` seeds from `--seed` on, each a fresh cluster, until
/// the first run that is not valid.
async fn campaign(cli: RunArgs, runs: u64) -> Result<ExitCode, String> {
    let first_seed = cli.seed.unwrap_or_else(clock_seed);
    let probe = options(&cli, first_seed)?;
    let mut c = Campaign::new(git_revision(), &probe, runs);
    println!(
        "campaign: {runs} runs from seed {first_seed}, {} nodes, {} s each, revision {}",
        probe.nodes,
        probe.duration.as_secs(),
        c.revision
    );
    let path = probe.store.join(format!("campaign-{}.json", clock_seed()));
    std::fs::create_dir_all(&probe.store).map_err(|e| format!("{}: {e}", probe.store.display()))?;
    for i in 0..runs {
        let seed = first_seed.wrapping_add(i);
        let opts = options(&cli, seed)?;
        println!("\n== campaign run {}/{runs}: seed {seed}", i + 1);
        let minimums = opts.minimums;
        let outcome = run(opts).await?;
        let row = CampaignRow::of(seed, &outcome);
        println!(
            "seed {seed}: {} ({} ops, {} faults)",
            row.verdict,
            row.ops,
            row.faults.values().sum::<u64>()
        );
        c.rows.push(row);
        // Written after every run: a campaign cut short keeps its table.
        c.write(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !outcome.valid() {
            println!("{}", report_text(&outcome, &minimums));
            break;
        }
    }
    println!("\n{}", c.table());
    println!("campaign table: {}", path.display());
    Ok(if c.all_valid() && c.rows.len() as u64 == runs {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `git rev-parse HEAD` of the source tree (with `-dirty` when it has
/// uncommitted changes), or `unknown`.
fn git_revision() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = |args: &[&str]| {
        std::process::Command::new("git")
            .args(["-C", dir])
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match out(&["rev-parse", "HEAD"]) {
        Some(rev) if !rev.is_empty() => match out(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(s) if !s.is_empty() => format!("{rev}-dirty"),
            _ => rev,
        },
        _ => "unknown".to_owned(),
    }
}

/// Nemeses implied by `all` that may be left out where this machine cannot
/// run them: netem (kernels without `sch_netem`; `loss` covers packet loss
/// there). Named explicitly, it is required.
fn optional_nemeses(spec: &str) -> Vec<Nemesis> {
    let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
    if parts.contains(&"all") && !parts.contains(&"netem") {
        vec![Nemesis::Netem]
    } else {
        Vec::new()
    }
}
