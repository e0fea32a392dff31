//! `driftlock-bench soak`: a long run of a steady workload on a 3-node
//! cluster with default settings, checking that no session is lost and no
//! clock-skew event is raised — with one leader failover in the middle.
//!
//! - `workers` sessions (one `Client` each) loop: lock `soak/w<i>`, put
//!   `soak/w<i>/value` fenced by the grant, unlock; every operation's
//!   latency and outcome is recorded.
//! - `idle_sessions` sessions spread over `idle_clients` `Client`s only keep
//!   themselves alive (the library's keepalives).
//! - An observer follows every event of the cluster from its first entry
//!   ([`observer`]); the [`sessions`] registry turns what the observer, the
//!   library and session reads say into lost sessions.
//! - Every minute a [`MinuteRow`] is printed and kept: cycles/s, cycle and
//!   lock percentiles, errors, each node's RSS and disk use, sessions lost
//!   and skew events so far, the leader.
//! - At the end of minute `failover_at_minute` the leader is SIGKILLed and
//!   started again on its data `restart_after` later.
//!
//! The result is a [`SoakReport`] (`benches/results/soak.json`) whose
//! [`failures`](SoakReport::failures) make the command a check. Every
//! `*_at_s` in it is seconds since the run started (the observer's start);
//! the load starts `load_started_s` later, once every session is open.

mod observer;
pub mod record;
mod sessions;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use driftlock_client::{Client, ClientConfig, ClientError, Session};
use futures::StreamExt;
use tokio::sync::watch;

use crate::cluster::{dir_bytes, rss_bytes, ClusterError, DriftlockCluster};
use crate::report::git_revision;
use observer::Observer;
use record::{fmt_clock, Failover, MachineLoad, MinuteRow, ProbedSession, Settings, SoakReport, Totals, Window};
use sessions::Registry;

/// What `driftlock-bench soak` is asked to do.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// Minutes of load.
    pub minutes: u32,
    /// Worker sessions (one `Client` each).
    pub workers: usize,
    /// Idle sessions.
    pub idle_sessions: usize,
    /// `Client`s the idle sessions are spread over (at least 1).
    pub idle_clients: usize,
    /// TTL every session asks for.
    pub ttl: Duration,
    /// Minute of load at whose end the leader is SIGKILLed; `None`: never.
    pub failover_at_minute: Option<u32>,
    /// How long the killed leader stays down.
    pub restart_after: Duration,
    /// Extra `driftlock serve` flags of every node.
    pub serve_args: Vec<String>,
    /// Where the node logs go (the client log is written there by the
    /// caller's subscriber).
    pub logs_dir: PathBuf,
    /// The command line, for the report.
    pub command: String,
    /// The source tree, for the git revision.
    pub source_dir: PathBuf,
}

/// The run's time base: a monotonic start and the wall-clock time it
/// corresponds to.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    t0: Instant,
    wall0: SystemTime,
}

impl RunClock {
    /// A clock starting now.
    pub fn start() -> RunClock {
        RunClock {
            t0: Instant::now(),
            wall0: SystemTime::now(),
        }
    }

    /// Seconds since the start.
    pub fn now_s(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// The UTC time `at_s` seconds after the start, RFC 3339 with ms.
    pub fn utc(&self, at_s: f64) -> String {
        let at = Duration::try_from_secs_f64(at_s.max(0.0)).unwrap_or_default();
        humantime::format_rfc3339_millis(self.wall0 + at).to_string()
    }
}

/// Bytes of the value each fenced put writes.
const VALUE_BYTES: usize = 128;
/// Pause of a worker after a failed operation (other than an expired
/// session), so that an outage is not a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Attempts at opening each session at the start.
const OPEN_ATTEMPTS: u32 = 5;
/// Sessions opened at once at the start.
const OPENS_IN_FLIGHT: usize = 32;
/// How long the per-minute sampling waits for a leader.
const SAMPLE_LEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the failover waits for a new leader.
const NEW_LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the end of the run waits for the observer to reach the
/// leader's applied index.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the end of the run waits for the workers to finish their
/// cycle.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(90);

fn client_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Client(e.to_string())
}

fn config(endpoints: &[String], name: String) -> ClientConfig {
    ClientConfig {
        client_name: name,
        ..crate::cluster::client_config(endpoints)
    }
}

/// 1, 5 and 15-minute load averages (`/proc/loadavg`); zeros if unreadable.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut v = text.split_whitespace().map(|w| w.parse::<f64>().unwrap_or(0.0));
    [
        v.next().unwrap_or(0.0),
        v.next().unwrap_or(0.0),
        v.next().unwrap_or(0.0),
    ]
}

/// A short name for an operation's failure, to count by.
fn error_kind(op: &str, e: &ClientError) -> String {
    let kind = match e {
        ClientError::Rejected(r) => {
            let debug = format!("{r:?}");
            let variant: String = debug.chars().take_while(|c| c.is_alphanumeric()).collect();
            format!("rejected {variant}")
        }
        ClientError::Unavailable(_) => "unavailable".into(),
        ClientError::Indeterminate(_) => "indeterminate".into(),
        ClientError::SessionExpired => "session expired".into(),
        ClientError::WaitTimedOut { .. } => "wait timed out".into(),
        ClientError::UnexpectedReply(_) => "unexpected reply".into(),
        ClientError::InvalidRequest(_) => "invalid request".into(),
        other => other.to_string(),
    };
    format!("{op}: {kind}")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Opens a session of `ttl` on `client` and registers it as `role`,
/// trying [`OPEN_ATTEMPTS`] times.
async fn open_registered(
    client: &Client,
    ttl: Duration,
    registry: &Arc<Registry>,
    role: String,
) -> Result<Session, ClusterError> {
    let mut last = String::new();
    for attempt in 0..OPEN_ATTEMPTS {
        match client.open_session(ttl).await {
            Ok(s) => {
                registry.register(s.clone(), role);
                return Ok(s);
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200) * (attempt + 1)).await;
    }
    Err(ClusterError::Client(format!(
        "cannot open the session of {role}: {last}"
    )))
}

/// What a worker shares with the run.
struct WorkerCtx {
    index: usize,
    client: Client,
    ttl: Duration,
    registry: Arc<Registry>,
    window: Arc<Mutex<Window>>,
    stop: Arc<AtomicBool>,
    clock: RunClock,
}

impl WorkerCtx {
    fn error(&self, op: &str, e: &ClientError) {
        let at = self.clock.now_s();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        w.error(at, error_kind(op, e), format!("worker {} {op}: {e}", self.index));
    }
}

/// One worker: lock → fenced put → unlock on its own lock until told to
/// stop. A lost session is replaced by a new one (the loss is recorded by
/// the registry).
async fn worker(ctx: WorkerCtx, mut session: Session) {
    let name = format!("soak/w{}", ctx.index);
    let key = format!("soak/w{}/value", ctx.index);
    let mut n = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        if !session.is_valid() {
            ctx.registry.library_lost(session.id());
            let role = format!("worker {} (reopened)", ctx.index);
            loop {
                if ctx.stop.load(Ordering::Relaxed) {
                    return;
                }
                match open_registered(&ctx.client, ctx.ttl, &ctx.registry, role.clone()).await {
                    Ok(s) => {
                        session = s;
                        break;
                    }
                    Err(e) => eprintln!("worker {}: {e}", ctx.index),
                }
            }
            continue;
        }
        n += 1;
        let mut value = format!("worker {} cycle {n} ", ctx.index).into_bytes();
        value.resize(VALUE_BYTES, b'.');
        let t0 = Instant::now();
        let guard = match session.lock(&name).await {
            Ok(g) => g,
            Err(e) => {
                ctx.error("lock", &e);
                if e != ClientError::SessionExpired {
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
                continue;
            }
        };
        let lock_us = micros(t0.elapsed());
        let t1 = Instant::now();
        let put = session.kv_put_fenced(&key, value, &guard).await;
        let put_us = micros(t1.elapsed());
        let t2 = Instant::now();
        let unlock = guard.release().await;
        let unlock_us = micros(t2.elapsed());
        let cycle_us = micros(t0.elapsed());
        if let Err(e) = &put {
            ctx.error("put", e);
        }
        if let Err(e) = &unlock {
            ctx.error("unlock", e);
        }
        let mut w = ctx.window.lock().unwrap_or_else(|p| p.into_inner());
        w.lock_us.push(lock_us);
        if put.is_ok() {
            w.put_us.push(put_us);
        }
        if unlock.is_ok() {
            w.unlock_us.push(unlock_us);
        }
        if put.is_ok() && unlock.is_ok() {
            w.cycle_us.push(cycle_us);
        }
    }
}

/// The cluster's state at the end of a minute.
struct NodeSample {
    leader: Option<u64>,
    term: Option<u64>,
    cluster_sessions: Option<u64>,
    applied_index: Option<u64>,
    rss_bytes: Vec<Option<u64>>,
    disk_bytes: Vec<Option<u64>>,
}

async fn sample_nodes(cluster: &DriftlockCluster, admin: &Client) -> NodeSample {
    let leader = cluster.wait_leader(SAMPLE_LEADER_TIMEOUT).await.ok();
    let status = match leader {
        Some(i) => admin.status_of(&cluster.endpoints[i]).await.ok(),
        None => None,
    };
    NodeSample {
        leader: leader.map(|i| cluster.node_id(i)),
        term: status.as_ref().map(|s| s.term),
        cluster_sessions: status.as_ref().map(|s| s.stats.sessions),
        applied_index: status.as_ref().map(|s| s.applied_index),
        rss_bytes: (0..cluster.len()).map(|i| cluster.pid(i).and_then(rss_bytes)).collect(),
        disk_bytes: (0..cluster.len())
            .map(|i| dir_bytes(cluster.data_dir(i)).ok())
            .collect(),
    }
}

/// SIGKILLs the leader, waits for the next one, and starts the killed node
/// again on its data `restart_after` after the kill.
async fn failover(
    cluster: &mut DriftlockCluster,
    clock: &RunClock,
    restart_after: Duration,
) -> Result<Failover, ClusterError> {
    let leader = cluster.wait_leader(NEW_LEADER_TIMEOUT).await?;
    let killed_node = cluster.node_id(leader);
    let killed_at_s = clock.now_s();
    let t_kill = Instant::now();
    cluster.kill(leader);
    eprintln!("failover: SIGKILLed the leader, node {killed_node}");
    let next = cluster.wait_leader(NEW_LEADER_TIMEOUT).await.ok();
    let new_leader_after_ms = next.map(|_| u64::try_from(t_kill.elapsed().as_millis()).unwrap_or(u64::MAX));
    let new_leader = next.map(|i| cluster.node_id(i));
    match (new_leader, new_leader_after_ms) {
        (Some(l), Some(ms)) => eprintln!("failover: node {l} leads, {ms} ms after the kill"),
        _ => eprintln!("failover: no new leader within {NEW_LEADER_TIMEOUT:?}"),
    }
    tokio::time::sleep(restart_after.saturating_sub(t_kill.elapsed())).await;
    cluster.spawn(leader)?;
    let restarted_at_s = clock.now_s();
    eprintln!("failover: node {killed_node} started again on its data");
    Ok(Failover {
        killed_node,
        killed_at_s,
        killed_utc: clock.utc(killed_at_s),
        new_leader,
        new_leader_after_ms,
        restarted_at_s,
    })
}

/// Opens `n` idle sessions spread over `clients`.
async fn open_idle(clients: &[Client], n: usize, ttl: Duration, registry: &Arc<Registry>) -> Result<(), ClusterError> {
    let opens = futures::stream::iter(0..n)
        .map(|k| {
            let client = &clients[k % clients.len()];
            async move { open_registered(client, ttl, registry, format!("idle {k}")).await }
        })
        .buffer_unordered(OPENS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    for r in opens {
        r?;
    }
    Ok(())
}

/// Runs the soak and returns its report (the caller writes and prints it).
pub async fn run(opts: &SoakOptions) -> Result<SoakReport, ClusterError> {
    // Taken first: the tree may be edited while a long run goes on.
    let git_revision = git_revision(&opts.source_dir);
    let load_before = loadavg();
    let probe_dir = tempfile::tempdir().map_err(|e| ClusterError::Io(e.to_string()))?;
    let (fs50, fs99) =
        crate::report::fdatasync_latency(probe_dir.path(), 200).map_err(|e| ClusterError::Io(e.to_string()))?;
    drop(probe_dir);
    std::fs::create_dir_all(&opts.logs_dir)
        .map_err(|e| ClusterError::Io(format!("{}: {e}", opts.logs_dir.display())))?;
    eprintln!(
        "starting a 3-node driftlock cluster; node logs in {}",
        opts.logs_dir.display()
    );
    let mut cluster = DriftlockCluster::start_logging_to(&opts.serve_args, Some(&opts.logs_dir)).await?;
    let endpoints = cluster.endpoints.clone();
    let admin = cluster.admin_client().await?;

    let clock = RunClock::start();
    let registry = Registry::new(clock);
    let observer = Observer::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let obs_client = Client::connect_with(config(&endpoints, "soak-observer".into()))
        .await
        .map_err(client_err)?;
    let obs_task = tokio::spawn(observer::run(
        obs_client.clone(),
        registry.clone(),
        observer.clone(),
        clock,
        stop_rx.clone(),
    ));
    let gap_task = tokio::spawn(observer::check_gaps(
        obs_client.clone(),
        registry.clone(),
        observer.clone(),
        stop_rx,
    ));

    eprintln!(
        "opening {} idle sessions over {} clients and {} worker sessions (TTL {:?})",
        opts.idle_sessions, opts.idle_clients, opts.workers, opts.ttl
    );
    let mut idle_clients = Vec::new();
    for k in 0..opts.idle_clients.max(1) {
        idle_clients.push(
            Client::connect_with(config(&endpoints, format!("soak-idle-{k}")))
                .await
                .map_err(client_err)?,
        );
    }
    open_idle(&idle_clients, opts.idle_sessions, opts.ttl, &registry).await?;
    let window = Arc::new(Mutex::new(Window::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..opts.workers {
        let client = Client::connect_with(config(&endpoints, format!("soak-worker-{i}")))
            .await
            .map_err(client_err)?;
        let session = open_registered(&client, opts.ttl, &registry, format!("worker {i}")).await?;
        workers.push((
            WorkerCtx {
                index: i,
                client,
                ttl: opts.ttl,
                registry: registry.clone(),
                window: window.clone(),
                stop: stop.clone(),
                clock,
            },
            session,
        ));
    }
    let term_at_start = sample_nodes(&cluster, &admin).await.term;
    let load_started_s = clock.now_s();
    let load_t0 = Instant::now();
    let started_utc = clock.utc(load_started_s);
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|(ctx, s)| tokio::spawn(worker(ctx, s)))
        .collect();
    eprintln!(
        "load started at {started_utc} ({} sessions open, {:.1} s after the observer)",
        registry.opened(),
        load_started_s
    );

    let mut rows: Vec<MinuteRow> = Vec::new();
    let mut total = Window::default();
    let mut last_tick = Instant::now();
    let mut last_jeopardy = 0;
    let mut done_failover: Option<Failover> = None;
    let mut note = String::new();
    for minute in 1..=opts.minutes {
        tokio::time::sleep_until((load_t0 + Duration::from_secs(60 * u64::from(minute))).into()).await;
        let w = std::mem::take(&mut *window.lock().unwrap_or_else(|p| p.into_inner()));
        let window_s = last_tick.elapsed().as_secs_f64();
        last_tick = Instant::now();
        total.absorb(&w);
        registry.sweep_validity();
        observer::cross_check(&obs_client, &registry, &observer).await;
        let sample = sample_nodes(&cluster, &admin).await;
        let jeopardy = registry.jeopardy_total();
        let row = MinuteRow {
            minute,
            window_s,
            latencies: w.latencies(window_s),
            rss_bytes: sample.rss_bytes,
            disk_bytes: sample.disk_bytes,
            sessions_lost: registry.lost_count(),
            skew_events: observer.skew_count(),
            probes: observer.probe_count(),
            jeopardy: jeopardy - last_jeopardy,
            leader: sample.leader,
            term: sample.term,
            cluster_sessions: sample.cluster_sessions,
            applied_index: sample.applied_index,
            load1: loadavg()[0],
            note: std::mem::take(&mut note),
        };
        last_jeopardy = jeopardy;
        let mb = |v: &[Option<u64>]| {
            let parts: Vec<String> = v
                .iter()
                .map(|b| b.map(|b| (b >> 20).to_string()).unwrap_or_else(|| "-".into()))
                .collect();
            parts.join("/")
        };
        let or_dash = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        eprintln!(
            "minute {minute}: {:.0} cycles/s, cycle p99 {:.1} ms, lock p99 {:.1} ms, {} errors, RSS {} MB, \
             disk {} MB, lost {}, skew {}, probes {}, jeopardy {}, leader {}, cluster sessions {}, load {:.1}",
            row.latencies.ops_per_sec,
            row.latencies.cycle_p99_us as f64 / 1000.0,
            row.latencies.lock_p99_us as f64 / 1000.0,
            row.latencies.errors,
            mb(&row.rss_bytes),
            mb(&row.disk_bytes),
            row.sessions_lost,
            row.skew_events,
            row.probes,
            row.jeopardy,
            or_dash(row.leader),
            or_dash(row.cluster_sessions),
            row.load1,
        );
        rows.push(row);
        if opts.failover_at_minute == Some(minute) && minute < opts.minutes {
            let f = failover(&mut cluster, &clock, opts.restart_after).await?;
            note = format!(
                "leader {} SIGKILLed at {}, new leader {} after {} ms, restarted at {}",
                f.killed_node,
                fmt_clock(f.killed_at_s - load_started_s),
                f.new_leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into()),
                f.new_leader_after_ms
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "–".into()),
                fmt_clock(f.restarted_at_s - load_started_s),
            );
            done_failover = Some(f);
        }
    }

    eprintln!("stopping the workers");
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(WORKER_STOP_TIMEOUT, t).await.is_err() {
            eprintln!("a worker did not stop within {WORKER_STOP_TIMEOUT:?}: aborted");
            abort.abort();
        }
    }
    let duration_s = load_t0.elapsed().as_secs_f64();
    total.absorb(&std::mem::take(&mut *window.lock().unwrap_or_else(|p| p.into_inner())));

    // Let the observer see everything up to now, then check once more.
    if let Ok(i) = cluster.wait_leader(SAMPLE_LEADER_TIMEOUT).await {
        if let Ok(s) = admin.status_of(&cluster.endpoints[i]).await {
            let deadline = Instant::now() + CATCH_UP_TIMEOUT;
            // The observer's position is an event revision.
            while observer.position() < s.applied_revision && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if observer.position() < s.applied_revision {
                eprintln!(
                    "the observer is at revision {} of {} after {CATCH_UP_TIMEOUT:?}",
                    observer.position(),
                    s.applied_revision
                );
            }
        }
    }
    registry.sweep_validity();
    observer::cross_check(&obs_client, &registry, &observer).await;

    eprintln!("closing every session");
    let sessions = registry.close_all();
    let closes = futures::stream::iter(sessions)
        .map(|s| async move { s.close().await })
        .buffer_unordered(OPENS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    let close_errors = closes.iter().filter(|r| r.is_err()).count() as u64;
    let _ = stop_tx.send(true);
    let _ = obs_task.await;
    let _ = gap_task.await;

    for (id, cause) in registry.foreign_ends() {
        eprintln!("note: session {id}, not one the run registered, ended: {cause}");
    }
    if observer.regressions() > 0 {
        eprintln!(
            "note: {} observe batches were behind the observer's position (served by a lagging node)",
            observer.regressions()
        );
    }
    if let Some(e) = observer.last_error() {
        eprintln!("note: {} observe calls failed; the last at {e}", observer.error_count());
    }
    let lost_sessions = registry.losses();
    let skew_events = observer.skew_events();
    let mut probed_sessions: Vec<ProbedSession> = observer
        .probes_by_session()
        .into_iter()
        .map(|(session, probes)| ProbedSession {
            session,
            role: registry.role(session).unwrap_or_default(),
            probes,
        })
        .collect();
    probed_sessions.sort_by(|a, b| b.probes.cmp(&a.probes).then(a.session.cmp(&b.session)));
    let observe_gaps = observer.gaps();
    let totals = Totals {
        duration_s,
        latencies: total.latencies(duration_s),
        errors_by_kind: total.errors.clone(),
        error_samples: total.error_samples.clone(),
        sessions_opened: registry.opened(),
        sessions_lost: lost_sessions.len() as u64,
        lost_by_source: registry.lost_by_source(),
        skew_events: skew_events.len() as u64,
        probes: observer.probe_count(),
        node_clock_alerts: observer.node_alert_count(),
        jeopardy: registry.jeopardy_total(),
        observe_gaps: observe_gaps.len() as u64,
        observe_errors: observer.error_count(),
        session_reads: observer.read_count(),
        close_errors,
        term_changes: match (term_at_start, rows.iter().rev().find_map(|r| r.term)) {
            (Some(start), Some(end)) => Some(end.saturating_sub(start)),
            _ => None,
        },
    };
    let mut report = SoakReport {
        command: opts.command.clone(),
        git_revision,
        started_utc,
        load_started_s,
        settings: Settings {
            minutes: opts.minutes,
            workers: opts.workers,
            idle_sessions: opts.idle_sessions,
            idle_clients: opts.idle_clients.max(1),
            ttl_ms: u64::try_from(opts.ttl.as_millis()).unwrap_or(u64::MAX),
            failover_at_minute: opts.failover_at_minute,
            restart_after_ms: u64::try_from(opts.restart_after.as_millis()).unwrap_or(u64::MAX),
            serve_args: opts.serve_args.clone(),
        },
        machine: MachineLoad {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            fdatasync_p50_us: fs50,
            fdatasync_p99_us: fs99,
            load_before,
            load_after: loadavg(),
        },
        minutes: rows,
        totals,
        failover: done_failover,
        lost_sessions,
        skew_events,
        probed_sessions,
        observe_gaps,
        logs_dir: opts.logs_dir.display().to_string(),
        passed: false,
    };
    report.passed = report.failures().is_empty();
    Ok(report)
}
