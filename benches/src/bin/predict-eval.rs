//! `predict-eval`: evaluates predictive failure analysis against a real
//! three-node cluster (laid out as `driftlock dev` does, started through
//! `driftlock-testkit`'s launcher, the `driftlock` binary from its locator).
//! Not a timed test: it prints a Markdown table for BENCHMARKS.md.
//!
//! Each run starts a lock holder as a separate process (this program's
//! `holder` mode: a session, one lock, fenced compare-and-set increments of
//! a counter), lets the leader profile it, then applies a scenario:
//!
//! - `killed`: SIGKILL;
//! - `stopped`: SIGSTOP; SIGCONT once the lock has passed on, after which the
//!   old holder's fenced writes must be rejected;
//! - `slowing`: SIGSTOP/SIGCONT cycles whose pauses grow step by step until
//!   the lock passes on;
//! - `bursty`: a healthy holder writing in bursts with idle gaps;
//! - `pauses`: a healthy holder frozen for 40 % of its TTL every few seconds
//!   (shorter than its validity).
//!
//! Measured per run: the detection lead time (validity the holder still had
//! when the cluster's `Probe` for it was seen), suspicions and revocations of
//! the holder's session, the time from the fault to the waiter's grant, and
//! whether the fenced counter equals the number of acknowledged increments.
//! Every scenario runs with prediction on and off (plain TTL expiry, same
//! TTL).
//!
//! Usage: `predict-eval [--ttl-ms 6000] [--reps 3] [--dir /tmp/predict-eval] [--base-port 7600]`

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftlock_benches::cluster;
use driftlock_client::{Client, ClientError, Fence, LockOptions, Session};
use driftlock_proto::{Consistency, EventFilter, Query, QueryResult};
use driftlock_proto::{EndCause, Event, Rejection, SessionId};
use driftlock_testkit::NodeSpec;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Killed,
    Stopped,
    Slowing,
    Bursty,
    Pauses,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Killed => "client SIGKILLed",
            Scenario::Stopped => "client SIGSTOPped",
            Scenario::Slowing => "client slowing down step by step",
            Scenario::Bursty => "healthy, bursty",
            Scenario::Pauses => "healthy, pauses of 40 % TTL",
        }
    }

    fn healthy(self) -> bool {
        matches!(self, Scenario::Bursty | Scenario::Pauses)
    }
}

#[derive(Debug, Default, Clone)]
struct RunResult {
    /// Validity the holder still had when its probe was seen, ms.
    lead_ms: Option<f64>,
    suspicions: u32,
    revocations: u32,
    /// Fault (or the start of the final pause) to the waiter's grant, ms.
    regrant_ms: Option<f64>,
    counter_ok: bool,
    stale_rejected: u32,
    stale_accepted: u32,
    /// Validity the holder's session still had at the fault, ms.
    left_at_fault_ms: Option<f64>,
    /// The holder's last granted validity (adaptive lease), ms.
    granted_ms: Option<f64>,
    note: String,
}

struct Opts {
    ttl: Duration,
    reps: usize,
    dir: PathBuf,
    base_port: u16,
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn parse_num<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, BoxError> {
    match arg_value(args, name) {
        Some(v) => v.parse().map_err(|_| format!("{name}: '{v}' is not a number").into()),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = if args.get(1).map(String::as_str) == Some("holder") {
        holder_main(&args).await
    } else {
        eval_main(&args).await
    };
    if let Err(e) = result {
        eprintln!("predict-eval: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- holder

/// Holder mode: open a session, take the lock, increment the fenced counter
/// until `--run-ms` passes (0 = until killed), printing one line per event.
async fn holder_main(args: &[String]) -> Result<(), BoxError> {
    let endpoints: Vec<String> = arg_value(args, "--endpoints")
        .ok_or("--endpoints missing")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let ttl = Duration::from_millis(parse_num(args, "--ttl-ms", 6000u64)?);
    let lock = arg_value(args, "--lock").ok_or("--lock missing")?;
    let counter = arg_value(args, "--counter").ok_or("--counter missing")?;
    let bursty = arg_value(args, "--pattern").as_deref() == Some("bursty");
    let run = Duration::from_millis(parse_num(args, "--run-ms", 0u64)?);
    let client = Client::connect_with(cluster::client_config(&endpoints)).await?;
    let session = client.open_session(ttl).await?;
    say(format!("SESSION {}", session.id()));
    let guard = session
        .lock_with(
            &lock,
            LockOptions {
                wait: Duration::from_secs(60),
                ..LockOptions::default()
            },
        )
        .await?;
    let fence = Fence::from(&guard);
    say(format!("LOCKED {}", guard.fencing_token()));
    let started = Instant::now();
    let mut rng = u64::from(std::process::id()) | 1;
    let mut n = 0u64;
    while run.is_zero() || started.elapsed() < run {
        match increment(&client, &session, &counter, &fence).await {
            Ok(v) => say(format!("INC {v}")),
            Err(e) => {
                say(format!("ERROR {e}"));
                // The session is gone: once the lock has passed on, try the
                // old token from a fresh session; the fence must refuse it.
                wait_until_not_holder(&client, &lock, session.id(), ttl * 3).await;
                stale_write_attempt(&client, ttl, &counter, &fence).await;
                return Ok(());
            }
        }
        n += 1;
        let pause_ms = if bursty {
            if n % 10 == 0 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % 2000
            } else {
                5
            }
        } else {
            200
        };
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    }
    guard.release().await?;
    session.close().await?;
    say(format!(
        "DONE probes_answered={}",
        driftlock_client::probe::answered_total()
    ));
    Ok(())
}

fn say(line: String) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn increment(client: &Client, session: &Session, counter: &str, fence: &Fence) -> Result<u64, ClientError> {
    let (value, revision) = match client.kv_get(counter).await? {
        Some(v) => (parse_counter(&v.value), v.mod_revision),
        None => (0, 0),
    };
    session
        .kv_cas_fenced(counter, revision, (value + 1).to_string().into_bytes(), fence.clone())
        .await?;
    Ok(value + 1)
}

fn parse_counter(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn wait_until_not_holder(client: &Client, lock: &str, me: SessionId, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let r = client
            .read(Query::Lock { name: lock.to_owned() }, Consistency::Linearizable)
            .await;
        if let Ok(r) = r {
            let held_by_me = match r.result {
                QueryResult::Lock(Some(v)) => v.holders.iter().any(|h| h.session == me),
                _ => false,
            };
            if !held_by_me {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stale_write_attempt(client: &Client, ttl: Duration, counter: &str, fence: &Fence) {
    let Ok(fresh) = client.open_session(ttl).await else {
        say("STALE_UNTESTED no session".into());
        return;
    };
    let revision = match client.kv_get(counter).await {
        Ok(Some(v)) => v.mod_revision,
        _ => 0,
    };
    match fresh
        .kv_cas_fenced(counter, revision, b"stale".to_vec(), fence.clone())
        .await
    {
        Ok(_) => say("STALE_ACCEPTED".into()),
        // Only the fence's own refusals count as a stale token rejected; a
        // timeout, a lost connection or a changed revision says nothing
        // about fencing.
        Err(e @ ClientError::Rejected(Rejection::StaleFencingToken { .. } | Rejection::FenceNotHeld { .. })) => {
            say(format!("STALE_REJECTED {e}"))
        }
        Err(e) => say(format!("STALE_UNTESTED {e}")),
    }
    let _ = fresh.close().await;
}

// ---------------------------------------------------------------- cluster

struct Cluster {
    nodes: driftlock_testkit::Cluster,
    endpoints: Vec<String>,
}

/// Three nodes on 127.0.0.1 as `driftlock dev` lays them out (client ports
/// from `base_port`, Raft ports 100 above), data and logs under `dir`.
async fn start_cluster(bin: &Path, dir: &Path, base_port: u16, predict: bool) -> Result<Cluster, BoxError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let specs = (1..=3u16).map(|id| {
        let mut spec = NodeSpec::new(
            u64::from(id),
            format!("127.0.0.1:{}", base_port + 100 + id - 1),
            format!("127.0.0.1:{}", base_port + id - 1),
            dir.join(format!("node{id}")),
            dir.join(format!("node{id}.log")),
        );
        spec.serve_args = vec!["--predict-enabled".into(), predict.to_string()];
        spec.env = vec![("RUST_LOG".into(), "info".into())];
        spec.env_remove = vec!["DRIFTLOCK_CONFIG".into()];
        spec
    });
    let mut nodes = driftlock_testkit::Cluster::new(bin, specs);
    cluster::secure(&mut nodes, &dir.join("certs"))?;
    nodes.bring_up(Duration::from_secs(60)).await?;
    let endpoints = nodes.endpoints();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "cluster did not serve sessions within 60 s; logs:\n{}",
                nodes.log_tails(8)
            )
            .into());
        }
        if let Ok(client) = Client::connect_with(cluster::client_config(&endpoints)).await {
            if let Ok(s) = client.open_session(Duration::from_secs(5)).await {
                let _ = s.close().await;
                return Ok(Cluster { nodes, endpoints });
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn stop_cluster(mut c: Cluster) {
    for outcome in c.nodes.terminate_all(Duration::from_secs(10)).await {
        if let Err(e) = outcome {
            eprintln!("stopping the cluster: {e}");
        }
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
        eprintln!("signal {sig} to {pid}: {e}");
    }
}

// ---------------------------------------------------------------- one run

struct Holder {
    child: Child,
    pid: u32,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Holder {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn count(&self, prefix: &str) -> u32 {
        self.lines().iter().filter(|l| l.starts_with(prefix)).count() as u32
    }

    async fn wait_line(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.lines().into_iter().find(|l| l.starts_with(prefix)) {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

async fn spawn_holder(
    endpoints: &[String],
    ttl: Duration,
    lock: &str,
    counter: &str,
    bursty: bool,
    run: Duration,
) -> Result<Holder, BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .envs(cluster::tls_env())
        .arg("holder")
        .args(["--endpoints", &endpoints.join(",")])
        .args(["--ttl-ms", &ttl.as_millis().to_string()])
        .args(["--lock", lock, "--counter", counter])
        .args(["--pattern", if bursty { "bursty" } else { "steady" }])
        .args(["--run-ms", &run.as_millis().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("holder exited at once")?;
    let stdout = child.stdout.take().ok_or("no holder stdout")?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let Ok(mut l) = sink.lock() {
                l.push(line);
            }
        }
    });
    Ok(Holder { child, pid, lines })
}

#[derive(Default)]
struct Observed {
    probes: Vec<(Instant, f64)>,
    revoked: bool,
    ended: bool,
}

/// Follows the holder session's events: probes (with the validity the
/// session still had when the probe was seen) and its end.
fn observe_holder(
    client: Client,
    session: SessionId,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Arc<Mutex<Observed>> {
    let seen = Arc::new(Mutex::new(Observed::default()));
    let out = seen.clone();
    tokio::spawn(async move {
        let filter = EventFilter {
            session: Some(session),
            ..EventFilter::default()
        };
        let mut after = session.saturating_sub(1);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(batch) = client.observe(after, filter.clone(), Duration::from_millis(500)).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            for (_, e) in batch.events {
                match e {
                    Event::Probe { session: s, .. } if s == session => {
                        let at = Instant::now();
                        let remaining_ms =
                            match client.read(Query::Session { session }, Consistency::Linearizable).await {
                                Ok(r) => match r.result {
                                    QueryResult::Session(Some(v)) => v.remaining_us as f64 / 1e3,
                                    _ => 0.0,
                                },
                                Err(_) => 0.0,
                            };
                        if let Ok(mut o) = out.lock() {
                            o.probes.push((at, remaining_ms));
                        }
                    }
                    Event::SessionEnded { session: s, cause } if s == session => {
                        if let Ok(mut o) = out.lock() {
                            o.ended = true;
                            o.revoked = matches!(cause, EndCause::Revoked { .. });
                        }
                    }
                    _ => {}
                }
            }
            after = after.max(batch.next_after_index);
        }
    });
    seen
}

async fn run_one(endpoints: &[String], ttl: Duration, scenario: Scenario, tag: &str) -> Result<RunResult, BoxError> {
    let lock = format!("eval/{tag}");
    let counter = format!("eval/{tag}/counter");
    let healthy_run = Duration::from_secs(30);
    let run = if scenario.healthy() {
        healthy_run
    } else {
        Duration::ZERO
    };
    let holder = spawn_holder(endpoints, ttl, &lock, &counter, scenario == Scenario::Bursty, run).await?;
    let line = holder
        .wait_line("SESSION ", Duration::from_secs(20))
        .await
        .ok_or("holder opened no session")?;
    let holder_session: SessionId = line.trim_start_matches("SESSION ").parse()?;
    holder
        .wait_line("LOCKED ", Duration::from_secs(20))
        .await
        .ok_or("holder got no lock")?;
    let client = Client::connect_with(cluster::client_config(endpoints)).await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observed = observe_holder(client.clone(), holder_session, stop.clone());

    // The waiter queues behind the holder.
    let waiter = client.open_session(Duration::from_secs(20)).await?;
    let waiter_lock = lock.clone();
    let waiter_counter = counter.clone();
    let waiter_client = client.clone();
    let waiter_task = tokio::spawn(async move {
        let guard = waiter
            .lock_with(
                &waiter_lock,
                LockOptions {
                    wait: Duration::from_secs(120),
                    ..LockOptions::default()
                },
            )
            .await;
        // A grant time only for a lock actually granted: a waiter that gave
        // up or failed has no re-grant time.
        let granted = guard.is_ok().then(Instant::now);
        let mut incs = 0u32;
        if let Ok(g) = &guard {
            let fence = Fence::from(g);
            for _ in 0..3 {
                if increment(&waiter_client, &waiter, &waiter_counter, &fence)
                    .await
                    .is_ok()
                {
                    incs += 1;
                }
            }
        }
        if let Ok(g) = guard {
            let _ = g.release().await;
        }
        let _ = waiter.close().await;
        (granted, incs)
    });

    // Warm-up: the leader profiles the holder.
    let warmup = ttl * 2 + Duration::from_secs(2);
    tokio::time::sleep(warmup).await;
    let mut result = RunResult::default();
    let fault_at;
    let (left, granted) = validity_of(&client, holder_session).await;
    result.left_at_fault_ms = left;
    result.granted_ms = granted;
    match scenario {
        Scenario::Killed => {
            fault_at = Instant::now();
            signal(holder.pid, nix::sys::signal::Signal::SIGKILL);
        }
        Scenario::Stopped => {
            fault_at = Instant::now();
            signal(holder.pid, nix::sys::signal::Signal::SIGSTOP);
        }
        Scenario::Slowing => {
            let mut k = 1u32;
            loop {
                let pause = ttl.mul_f64(0.15 * f64::from(k));
                let (left, granted) = validity_of(&client, holder_session).await;
                result.left_at_fault_ms = left;
                result.granted_ms = granted;
                let start = Instant::now();
                signal(holder.pid, nix::sys::signal::Signal::SIGSTOP);
                tokio::time::sleep(pause).await;
                if waiter_task.is_finished() || k >= 12 {
                    fault_at = start;
                    break;
                }
                signal(holder.pid, nix::sys::signal::Signal::SIGCONT);
                tokio::time::sleep(Duration::from_secs(1)).await;
                if waiter_task.is_finished() {
                    fault_at = start;
                    break;
                }
                k += 1;
            }
            result.note = format!("{k} pause steps");
        }
        Scenario::Bursty => fault_at = Instant::now(),
        Scenario::Pauses => {
            fault_at = Instant::now();
            let pause = ttl.mul_f64(0.4);
            while fault_at.elapsed() + pause + ttl / 2 < healthy_run - warmup {
                signal(holder.pid, nix::sys::signal::Signal::SIGSTOP);
                tokio::time::sleep(pause).await;
                signal(holder.pid, nix::sys::signal::Signal::SIGCONT);
                tokio::time::sleep(ttl / 2).await;
            }
        }
    }
    let waited = tokio::time::timeout(ttl * 4 + Duration::from_secs(40), waiter_task).await;
    let (granted_at, waiter_incs) = match waited {
        Ok(Ok(v)) => v,
        _ => return Err(format!("{tag}: the waiter never got the lock").into()),
    };
    if !scenario.healthy() {
        match granted_at {
            Some(at) => result.regrant_ms = Some(at.saturating_duration_since(fault_at).as_secs_f64() * 1e3),
            None => return Err(format!("{tag}: the waiter's lock failed").into()),
        }
    }
    if scenario == Scenario::Stopped || scenario == Scenario::Slowing {
        signal(holder.pid, nix::sys::signal::Signal::SIGCONT);
        let _ = holder
            .wait_line("STALE_", Duration::from_secs(ttl.as_secs() + 10))
            .await;
    }
    let mut holder = holder;
    if !scenario.healthy() {
        let _ = holder.child.kill().await;
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(10), holder.child.wait()).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(600)).await;

    let acked = holder.count("INC ") + waiter_incs;
    let value = match client.kv_get(&counter).await? {
        Some(v) => parse_counter(&v.value),
        None => 0,
    };
    // A killed holder may have had one increment applied but not printed.
    result.counter_ok = u64::from(acked) == value || (scenario == Scenario::Killed && u64::from(acked) + 1 == value);
    result.stale_rejected = holder.count("STALE_REJECTED");
    result.stale_accepted = holder.count("STALE_ACCEPTED");
    if result.stale_accepted > 0 {
        result.counter_ok = false;
    }
    let untested = holder.count("STALE_UNTESTED");
    if untested > 0 {
        result.note.push_str(&format!(
            " {untested} stale write(s) failed otherwise (not counted as rejected)"
        ));
    }
    let o = observed.lock().map_err(|_| "observer poisoned")?;
    result.suspicions = o.probes.len() as u32;
    result.revocations = u32::from(o.revoked);
    result.lead_ms = o
        .probes
        .iter()
        .find(|(at, _)| *at >= fault_at)
        .map(|(_, remaining)| *remaining);
    let early = o.probes.iter().filter(|(at, _)| *at < fault_at).count();
    if early > 0 && !scenario.healthy() {
        result.note.push_str(&format!(" {early} suspicion(s) before the fault"));
    }
    if !result.counter_ok {
        result
            .note
            .push_str(&format!(" counter {value} vs {acked} acknowledged"));
    }
    Ok(result)
}

/// The holder session's remaining validity and last granted validity, ms.
async fn validity_of(client: &Client, session: SessionId) -> (Option<f64>, Option<f64>) {
    match client.read(Query::Session { session }, Consistency::Linearizable).await {
        Ok(r) => match r.result {
            QueryResult::Session(Some(v)) => (
                Some(v.remaining_us as f64 / 1e3),
                Some(v.lease.validity_us as f64 / 1e3),
            ),
            _ => (None, None),
        },
        Err(_) => (None, None),
    }
}

// ---------------------------------------------------------------- report

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.0}"))
}

async fn eval_main(args: &[String]) -> Result<(), BoxError> {
    let opts = Opts {
        ttl: Duration::from_millis(parse_num(args, "--ttl-ms", 6000u64)?),
        reps: parse_num(args, "--reps", 3usize)?,
        dir: PathBuf::from(arg_value(args, "--dir").unwrap_or_else(|| "/tmp/predict-eval".into())),
        base_port: parse_num(args, "--base-port", 7600u16)?,
    };
    let only: Option<Vec<String>> = arg_value(args, "--only").map(|s| s.split(',').map(str::to_owned).collect());
    let bin = driftlock_testkit::driftlock_exe()?;
    let scenarios = [
        Scenario::Killed,
        Scenario::Stopped,
        Scenario::Slowing,
        Scenario::Bursty,
        Scenario::Pauses,
    ];
    let mut rows: Vec<(Scenario, bool, Vec<RunResult>)> = Vec::new();
    for (mode_i, predict) in [true, false].into_iter().enumerate() {
        let dir = opts.dir.join(if predict { "on" } else { "off" });
        let port = opts.base_port + 20 * mode_i as u16;
        eprintln!(
            "starting a 3-node cluster in {} (prediction {})",
            dir.display(),
            if predict { "on" } else { "off" }
        );
        let cluster = start_cluster(&bin, &dir, port, predict).await?;
        for scenario in scenarios {
            if let Some(o) = &only {
                if !o.iter().any(|n| format!("{scenario:?}").eq_ignore_ascii_case(n)) {
                    continue;
                }
            }
            let reps = if scenario.healthy() { 1 } else { opts.reps };
            let mut results = Vec::new();
            for rep in 0..reps {
                let tag = format!("{scenario:?}-{}-{rep}", if predict { "on" } else { "off" }).to_lowercase();
                match run_one(&cluster.endpoints, opts.ttl, scenario, &tag).await {
                    Ok(r) => {
                        eprintln!("{tag}: {r:?}");
                        results.push(r);
                    }
                    Err(e) => {
                        eprintln!("{tag}: failed: {e}");
                        results.push(RunResult {
                            note: format!("failed: {e}"),
                            ..RunResult::default()
                        });
                    }
                }
            }
            rows.push((scenario, predict, results));
        }
        stop_cluster(cluster).await;
    }
    let ttl_ms = opts.ttl.as_secs_f64() * 1e3;
    println!("TTL {ttl_ms:.0} ms, 3 nodes on loopback, holder in its own process; lead = validity left when the probe was seen.");
    println!();
    println!("| scenario | prediction | runs | median lead (ms) | suspicions | revocations | median validity left at fault (ms) | median granted validity (ms) | median re-grant (ms) | re-grant / TTL | fenced counter | stale writes rejected | notes |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (scenario, predict, results) in &rows {
        let lead = median(results.iter().filter_map(|r| r.lead_ms).collect());
        let regrant = median(results.iter().filter_map(|r| r.regrant_ms).collect());
        let sus: u32 = results.iter().map(|r| r.suspicions).sum();
        let rev: u32 = results.iter().map(|r| r.revocations).sum();
        let ok = results.iter().filter(|r| r.counter_ok).count();
        let rejected: u32 = results.iter().map(|r| r.stale_rejected).sum();
        let accepted: u32 = results.iter().map(|r| r.stale_accepted).sum();
        let notes: Vec<&str> = results
            .iter()
            .map(|r| r.note.trim())
            .filter(|n| !n.is_empty())
            .collect();
        let left = median(results.iter().filter_map(|r| r.left_at_fault_ms).collect());
        let granted = median(results.iter().filter_map(|r| r.granted_ms).collect());
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} correct | {} (accepted {}) | {} |",
            scenario.name(),
            if *predict { "on" } else { "off (plain TTL)" },
            results.len(),
            fmt_ms(lead),
            sus,
            rev,
            fmt_ms(left),
            fmt_ms(granted),
            fmt_ms(regrant),
            regrant.map_or("–".into(), |r| format!("{:.0} %", 100.0 * r / ttl_ms)),
            ok,
            results.len(),
            rejected,
            accepted,
            notes.join("; ")
        );
    }
    Ok(())
}
