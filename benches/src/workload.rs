//! The workloads, each run the same way against either system through a
//! [`Target`] and [`Worker`]s: [`uncontended`] and [`contended`] lock
//! throughput, [`failover`] (the leader killed or asked to hand over midway),
//! [`keepalive`] (the leader's CPU for many idle sessions) and [`regrant`]
//! (from a holder's death to the next grant).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_client::{Client, ClientConfig, LockGuard, Session};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::cluster::{cpu_ticks, ClusterError, DriftlockCluster, EtcdCluster};
use crate::etcd::{EtcdConn, EtcdError};

/// The system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// driftlock, through `driftlock-client`.
    Driftlock,
    /// etcd 3.4, through its gRPC API.
    Etcd,
}

impl System {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            System::Driftlock => "driftlock",
            System::Etcd => "etcd",
        }
    }
}

/// One timed operation.
#[derive(Clone, Copy, Debug)]
pub struct Op {
    /// Start, µs after the run's start.
    pub start_us: u64,
    /// End, µs after the run's start.
    pub end_us: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// A lock (true) or an unlock (false).
    pub is_lock: bool,
}

impl Op {
    /// Its latency, µs.
    pub fn latency_us(&self) -> u64 {
        self.end_us.saturating_sub(self.start_us)
    }
}

/// What one run of a workload measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Measured {
    /// Completed lock+unlock pairs (or renewals) per second.
    pub ops_per_sec: f64,
    /// Lock latency percentiles and the largest latency of any op, µs.
    pub p50_us: u64,
    /// 99th percentile lock latency, µs.
    pub p99_us: u64,
    /// Largest latency of any operation, µs.
    pub max_us: u64,
    /// Operations that returned an error.
    pub failed_ops: u64,
    /// Failover workloads: from the fault to the first successful op
    /// started after it, µs. Re-grant: from the holder's death to the
    /// waiter's grant, µs.
    pub first_ok_after_fault_us: Option<u64>,
    /// Keepalive workload: the leader's CPU use, % of one core.
    pub leader_cpu_pct: Option<f64>,
    /// Lock latencies of the run, µs (for the CDF plot; not serialized).
    #[serde(skip)]
    pub lock_latencies_us: Vec<u64>,
}

/// How long each workload runs, and the keepalive workload's size;
/// `compare-etcd --quick` uses shorter ones.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Measured window of the throughput workloads.
    pub window: Duration,
    /// Load before the fault in the failover workloads.
    pub before_fault: Duration,
    /// Load after the fault.
    pub after_fault: Duration,
    /// Keepalive workload: sessions to keep alive.
    pub keepalive_sessions: usize,
    /// Keepalive workload: CPU measurement window.
    pub cpu_window: Duration,
}

/// Session / lease TTL of the lock workloads.
pub const TTL: Duration = Duration::from_secs(10);
/// TTL of the re-grant workload, for both systems.
pub const REGRANT_TTL: Duration = Duration::from_secs(3);

type BenchResult<T> = Result<T, ClusterError>;

fn client_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Client(e.to_string())
}

/// One load-generating client with its session or lease.
pub enum Worker {
    /// A driftlock client with one session.
    Driftlock {
        /// The session every lock of this worker is taken in; the client keeps
        /// it alive in the background.
        session: Session,
    },
    /// An etcd connection with a lease kept alive in the background.
    Etcd {
        /// The connection locks and unlocks go through.
        conn: EtcdConn,
        /// The lease id every lock of this worker is attached to.
        lease: i64,
        /// Renews the lease every TTL/3 until [`Worker::close`] aborts it.
        keepalive: tokio::task::JoinHandle<()>,
    },
}

/// A lock a [`Worker`] holds, to hand back to [`Worker::unlock`].
pub enum Held {
    /// driftlock's guard.
    Driftlock(LockGuard),
    /// etcd's lock key.
    Etcd(Vec<u8>),
}

/// Client settings: failover workloads use a 1 s attempt timeout.
pub fn driftlock_config(endpoints: &[String], failover: bool) -> ClientConfig {
    let mut c = crate::cluster::client_config(endpoints);
    c.client_name = "driftlock-bench".into();
    if failover {
        c.request_timeout_ms = 1_000;
    }
    c
}

fn etcd_op_timeout(failover: bool) -> Duration {
    if failover {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    }
}

impl Worker {
    /// Opens a client (its own connections) with a session or lease of `ttl`.
    /// etcd clients start at endpoint `index % 3`.
    pub async fn open(
        system: System,
        endpoints: &[String],
        index: usize,
        failover: bool,
        ttl: Duration,
    ) -> BenchResult<Worker> {
        match system {
            System::Driftlock => {
                let client = Client::connect_with(driftlock_config(endpoints, failover))
                    .await
                    .map_err(client_err)?;
                let session = client.open_session(ttl).await.map_err(client_err)?;
                Ok(Worker::Driftlock { session })
            }
            System::Etcd => {
                let mut conn = EtcdConn::new(endpoints, index, etcd_op_timeout(failover)).map_err(client_err)?;
                let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(10);
                let lease = grant_retrying(&mut conn, ttl_s).await?;
                let mut ka = conn.clone();
                ka.op_timeout = Duration::from_secs(1);
                let keepalive = tokio::spawn(async move {
                    let every = Duration::from_secs(ttl_s.max(1) as u64) / 3;
                    loop {
                        tokio::time::sleep(every).await;
                        // Retried quickly on failure, like a client library would.
                        for _ in 0..5 {
                            if ka.keepalive_batch(&[lease]).await.is_ok() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                });
                Ok(Worker::Etcd { conn, lease, keepalive })
            }
        }
    }

    /// Takes `name`.
    pub async fn lock(&mut self, name: &str) -> Result<Held, String> {
        match self {
            Worker::Driftlock { session } => session.lock(name).await.map(Held::Driftlock).map_err(|e| e.to_string()),
            Worker::Etcd { conn, lease, .. } => {
                conn.lock(name, *lease).await.map(Held::Etcd).map_err(|e| e.to_string())
            }
        }
    }

    /// Releases a held lock.
    pub async fn unlock(&mut self, held: Held) -> Result<(), String> {
        match (self, held) {
            (Worker::Driftlock { .. }, Held::Driftlock(g)) => g.release().await.map_err(|e| e.to_string()),
            (Worker::Etcd { conn, .. }, Held::Etcd(key)) => conn.unlock(key).await.map_err(|e| e.to_string()),
            _ => Err("lock of the other system".into()),
        }
    }

    /// Ends the session (driftlock) or stops renewing the lease (etcd).
    pub async fn close(self) {
        match self {
            Worker::Driftlock { session } => {
                let _ = session.close().await;
            }
            Worker::Etcd { keepalive, .. } => keepalive.abort(),
        }
    }
}

async fn grant_retrying(conn: &mut EtcdConn, ttl_s: i64) -> BenchResult<i64> {
    let mut last: Option<EtcdError> = None;
    for _ in 0..20 {
        match conn.lease_grant(ttl_s).await {
            Ok(id) => return Ok(id),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(client_err(format!("lease grant: {last:?}")))
}

async fn open_workers(
    system: System,
    endpoints: &[String],
    n: usize,
    failover: bool,
    ttl: Duration,
) -> BenchResult<Vec<Worker>> {
    let opens = (0..n).map(|i| Worker::open(system, endpoints, i, failover, ttl));
    futures::future::try_join_all(opens).await
}

/// Runs lock+unlock loops on `names[i]` for every worker until `stop`.
async fn run_loops(
    workers: Vec<Worker>,
    names: Vec<String>,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> (Vec<Worker>, Vec<Op>) {
    let mut tasks = Vec::new();
    for (mut w, name) in workers.into_iter().zip(names) {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut ops = Vec::new();
            let us = |t: Instant| u64::try_from(t.duration_since(t0).as_micros()).unwrap_or(u64::MAX);
            while !stop.load(Ordering::Relaxed) {
                let s = Instant::now();
                let r = w.lock(&name).await;
                let e = Instant::now();
                ops.push(Op {
                    start_us: us(s),
                    end_us: us(e),
                    ok: r.is_ok(),
                    is_lock: true,
                });
                let Ok(held) = r else { continue };
                let s = Instant::now();
                let r = w.unlock(held).await;
                ops.push(Op {
                    start_us: us(s),
                    end_us: us(Instant::now()),
                    ok: r.is_ok(),
                    is_lock: false,
                });
            }
            (w, ops)
        }));
    }
    let mut workers = Vec::new();
    let mut ops = Vec::new();
    for t in tasks {
        if let Ok((w, o)) = t.await {
            workers.push(w);
            ops.extend(o);
        }
    }
    (workers, ops)
}

/// Percentile (0–100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summarize(ops: &[Op], window: Duration) -> Measured {
    let mut lock_lat: Vec<u64> = ops
        .iter()
        .filter(|o| o.is_lock && o.ok)
        .map(|o| o.latency_us())
        .collect();
    lock_lat.sort_unstable();
    let pairs = ops.iter().filter(|o| !o.is_lock && o.ok).count();
    Measured {
        ops_per_sec: pairs as f64 / window.as_secs_f64(),
        p50_us: percentile(&lock_lat, 50.0),
        p99_us: percentile(&lock_lat, 99.0),
        max_us: ops.iter().map(|o| o.latency_us()).max().unwrap_or(0),
        failed_ops: ops.iter().filter(|o| !o.ok).count() as u64,
        lock_latencies_us: lock_lat,
        ..Measured::default()
    }
}

/// Either cluster, for the workloads that need to act on it.
pub enum Target<'a> {
    /// The driftlock cluster.
    Driftlock(&'a mut DriftlockCluster),
    /// The etcd cluster.
    Etcd(&'a mut EtcdCluster),
}

impl Target<'_> {
    /// The system the cluster runs.
    pub fn system(&self) -> System {
        match self {
            Target::Driftlock(_) => System::Driftlock,
            Target::Etcd(_) => System::Etcd,
        }
    }

    /// The nodes' client addresses (`host:port`), in node order.
    pub fn endpoints(&self) -> Vec<String> {
        match self {
            Target::Driftlock(c) => c.endpoints.clone(),
            Target::Etcd(c) => c.endpoints.clone(),
        }
    }

    async fn leader(&self) -> BenchResult<usize> {
        match self {
            Target::Driftlock(c) => c.wait_leader(Duration::from_secs(30)).await,
            Target::Etcd(c) => c.wait_leader(Duration::from_secs(30)).await,
        }
    }

    fn pid(&self, i: usize) -> Option<u32> {
        match self {
            Target::Driftlock(c) => c.pid(i),
            Target::Etcd(c) => c.pid(i),
        }
    }

    fn kill(&mut self, i: usize) {
        match self {
            Target::Driftlock(c) => c.kill(i),
            Target::Etcd(c) => c.kill(i),
        }
    }

    async fn restart(&mut self, i: usize) -> BenchResult<()> {
        match self {
            Target::Driftlock(c) => {
                c.spawn(i)?;
                c.wait_caught_up(Duration::from_secs(60)).await
            }
            Target::Etcd(c) => {
                c.spawn(i)?;
                // Wait until the member answers and there is a leader.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let mut conn =
                        EtcdConn::new(&c.endpoints[i..=i], 0, Duration::from_millis(500)).map_err(client_err)?;
                    if matches!(conn.status().await, Ok(s) if s.leader != 0) {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(ClusterError::Timeout("restarted etcd member did not rejoin".into()));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                c.wait_leader(Duration::from_secs(30)).await.map(|_| ())
            }
        }
    }

    /// How long after `since` a node other than `old` first says it leads
    /// (polled every 10 ms, for up to 10 s).
    async fn new_leader_after(&self, old: usize, since: Instant) -> Option<Duration> {
        let endpoints = self.endpoints();
        let dl = match self {
            Target::Driftlock(c) => c.admin_client().await.ok(),
            Target::Etcd(_) => None,
        };
        while since.elapsed() < Duration::from_secs(10) {
            for (i, ep) in endpoints.iter().enumerate() {
                if i == old {
                    continue;
                }
                let leads = match (self, &dl) {
                    (Target::Driftlock(_), Some(admin)) => matches!(
                        tokio::time::timeout(Duration::from_millis(50), admin.status_of(ep)).await,
                        Ok(Ok(s)) if s.role == driftlock_proto::Role::Leader
                    ),
                    (Target::Etcd(_), _) => {
                        let Ok(mut c) = EtcdConn::new(&endpoints[i..=i], 0, Duration::from_millis(50)) else {
                            continue;
                        };
                        matches!(c.status().await, Ok(s) if s.leader != 0 && Some(s.leader) == s.header.as_ref().map(|h| h.member_id))
                    }
                    _ => false,
                };
                if leads {
                    return Some(since.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// Planned leadership move from `from` to another node.
    async fn move_leader(&self, from: usize) -> Result<(), String> {
        let to = (from + 1) % 3;
        match self {
            Target::Driftlock(c) => {
                let admin = c.admin_client().await.map_err(|e| e.to_string())?;
                admin
                    .admin(driftlock_proto::AdminRequest::TransferLeader { to: c.node_id(to) })
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Target::Etcd(c) => {
                let ids = c.member_ids().await.map_err(|e| e.to_string())?;
                let mut conn =
                    EtcdConn::new(&c.endpoints[from..=from], 0, Duration::from_secs(5)).map_err(|e| e.to_string())?;
                conn.move_leader(ids[to]).await.map_err(|e| e.to_string())
            }
        }
    }
}

/// Uncontended lock+unlock pairs: `clients` clients, each its own lock.
pub async fn uncontended(target: &Target<'_>, clients: usize, window: Duration, run: usize) -> BenchResult<Measured> {
    let system = target.system();
    let workers = open_workers(system, &target.endpoints(), clients, false, TTL).await?;
    let names = (0..clients).map(|i| format!("bench/u/{run}/{clients}/{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handle = tokio::spawn(run_loops(workers, names, t0, stop.clone()));
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let (workers, ops) = handle.await.map_err(client_err)?;
    let elapsed = t0.elapsed();
    for w in workers {
        w.close().await;
    }
    Ok(summarize(&ops, elapsed))
}

/// One lock, `clients` clients taking and releasing it in turn.
pub async fn contended(target: &Target<'_>, clients: usize, window: Duration, run: usize) -> BenchResult<Measured> {
    let system = target.system();
    let workers = open_workers(system, &target.endpoints(), clients, false, TTL).await?;
    let names = (0..clients).map(|_| format!("bench/c/{run}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handle = tokio::spawn(run_loops(workers, names, t0, stop.clone()));
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let (workers, ops) = handle.await.map_err(client_err)?;
    let elapsed = t0.elapsed();
    for w in workers {
        w.close().await;
    }
    Ok(summarize(&ops, elapsed))
}

/// Which fault the failover workload injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of the leader.
    KillLeader,
    /// An operator's leadership transfer.
    Planned,
}

/// 16 clients lock and unlock their own locks; the leader is killed or
/// asked to hand over midway.
pub async fn failover(target: &mut Target<'_>, fault: Fault, timing: &Timing, run: usize) -> BenchResult<Measured> {
    let system = target.system();
    let clients = 16;
    let workers = open_workers(system, &target.endpoints(), clients, true, TTL).await?;
    let names = (0..clients).map(|i| format!("bench/f/{run}/{i}")).collect();
    let leader = target.leader().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handle = tokio::spawn(run_loops(workers, names, t0, stop.clone()));
    tokio::time::sleep(timing.before_fault).await;
    let fault_at = Instant::now();
    let mut fault_error = None;
    match fault {
        Fault::KillLeader => target.kill(leader),
        Fault::Planned => {
            if let Err(e) = target.move_leader(leader).await {
                fault_error = Some(e);
            }
        }
    }
    let elected = target.new_leader_after(leader, fault_at).await;
    if let Some(d) = elected {
        eprintln!(
            "  {}: a new leader answered status {} ms after the fault",
            system.name(),
            d.as_millis()
        );
    }
    tokio::time::sleep(timing.after_fault.saturating_sub(fault_at.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let (workers, ops) = handle.await.map_err(client_err)?;
    let elapsed = t0.elapsed();
    for w in workers {
        w.close().await;
    }
    if let Some(e) = fault_error {
        eprintln!("  {}: leadership move failed: {e}", system.name());
    }
    let fault_us = u64::try_from(fault_at.duration_since(t0).as_micros()).unwrap_or(u64::MAX);
    let mut m = summarize(&ops, elapsed);
    m.first_ok_after_fault_us = ops
        .iter()
        .filter(|o| o.ok && o.start_us >= fault_us)
        .map(|o| o.end_us - fault_us)
        .min();
    // The worst op overlapping the fault.
    if fault == Fault::KillLeader {
        target.restart(leader).await?;
    }
    Ok(m)
}

/// `sessions` sessions (etcd: leases) of `TTL` kept alive; the leader's CPU
/// use over `cpu_window` once they are all open.
pub async fn keepalive(target: &Target<'_>, timing: &Timing) -> BenchResult<Measured> {
    let n = timing.keepalive_sessions;
    let endpoints = target.endpoints();
    let leader = target.leader().await?;
    let pid = target
        .pid(leader)
        .ok_or_else(|| ClusterError::Io("leader has no process".into()))?;
    let renewals = Arc::new(AtomicU64::new(0));
    let cpu_pct;
    let mut ops_per_sec = 0.0;
    match target.system() {
        System::Driftlock => {
            let client = Client::connect_with(driftlock_config(&endpoints, false))
                .await
                .map_err(client_err)?;
            let mut sessions = Vec::with_capacity(n);
            let mut pending = futures::stream::FuturesUnordered::new();
            use futures::StreamExt;
            // Opens that fail (the cluster saturated) are counted, not fatal.
            let mut open_failures = 0u64;
            for _ in 0..n {
                pending.push(client.open_session(TTL));
                if pending.len() >= 64 {
                    match pending.next().await {
                        Some(Ok(s)) => sessions.push(s),
                        Some(Err(_)) => open_failures += 1,
                        None => {}
                    }
                }
            }
            while let Some(r) = pending.next().await {
                match r {
                    Ok(s) => sessions.push(s),
                    Err(_) => open_failures += 1,
                }
            }
            if open_failures > 0 {
                eprintln!("  {open_failures} of {n} sessions could not be opened");
            }
            // Let the opening burst settle into steady keepalives.
            tokio::time::sleep(TTL / 3).await;
            let admin = target_status_index(&endpoints, leader).await;
            let c0 = cpu_ticks(pid);
            let t0 = Instant::now();
            tokio::time::sleep(timing.cpu_window).await;
            let c1 = cpu_ticks(pid);
            let elapsed = t0.elapsed().as_secs_f64();
            let admin_after = target_status_index(&endpoints, leader).await;
            if let (Some(a), Some(b)) = (admin, admin_after) {
                ops_per_sec = (b.saturating_sub(a)) as f64 / elapsed;
            }
            cpu_pct = c0.zip(c1).map(|(a, b)| (b.saturating_sub(a)) as f64 / elapsed);
            let expired = sessions.iter().filter(|s| !s.is_valid()).count();
            let closes = sessions.iter().map(|s| s.close());
            futures::future::join_all(closes).await;
            let mut m = Measured {
                ops_per_sec,
                failed_ops: expired as u64 + open_failures,
                leader_cpu_pct: cpu_pct,
                ..Measured::default()
            };
            m.max_us = 0;
            Ok(m)
        }
        System::Etcd => {
            let mut conn = EtcdConn::new(&endpoints, 0, Duration::from_secs(10)).map_err(client_err)?;
            let ttl_s = TTL.as_secs() as i64;
            let mut leases = Vec::with_capacity(n);
            // Granted by 64 concurrent connections.
            let per = n.div_ceil(64);
            let mut grants = Vec::new();
            for g in 0..64 {
                let count = per.min(n.saturating_sub(g * per));
                let mut c = EtcdConn::new(&endpoints, g, Duration::from_secs(10)).map_err(client_err)?;
                grants.push(tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for _ in 0..count {
                        ids.push(grant_retrying(&mut c, ttl_s).await?);
                    }
                    Ok::<Vec<i64>, ClusterError>(ids)
                }));
            }
            for g in grants {
                leases.extend(g.await.map_err(client_err)??);
            }
            let _ = conn.status().await;
            // 16 keepalive loops, each renewing its share every TTL/3 in
            // batches of 50 spread over the interval.
            let stop = Arc::new(AtomicBool::new(false));
            let failed = Arc::new(AtomicU64::new(0));
            let mut loops = Vec::new();
            for (k, chunk) in leases.chunks(n.div_ceil(16).max(1)).enumerate() {
                let chunk = chunk.to_vec();
                let mut c = EtcdConn::new(&endpoints, k, Duration::from_secs(2)).map_err(client_err)?;
                let (stop, renewals, failed) = (stop.clone(), renewals.clone(), failed.clone());
                loops.push(tokio::spawn(async move {
                    let batches: Vec<&[i64]> = chunk.chunks(50).collect();
                    let pause = (TTL / 3) / batches.len().max(1) as u32;
                    while !stop.load(Ordering::Relaxed) {
                        for b in &batches {
                            match c.keepalive_batch(b).await {
                                Ok(k) => {
                                    renewals.fetch_add(k as u64, Ordering::Relaxed);
                                    failed.fetch_add((b.len() - k) as u64, Ordering::Relaxed);
                                }
                                Err(_) => {
                                    failed.fetch_add(b.len() as u64, Ordering::Relaxed);
                                }
                            }
                            tokio::time::sleep(pause).await;
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                    }
                }));
            }
            tokio::time::sleep(TTL / 3).await;
            let r0 = renewals.load(Ordering::Relaxed);
            let c0 = cpu_ticks(pid);
            let t0 = Instant::now();
            tokio::time::sleep(timing.cpu_window).await;
            let c1 = cpu_ticks(pid);
            let elapsed = t0.elapsed().as_secs_f64();
            let r1 = renewals.load(Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
            for l in loops {
                let _ = l.await;
            }
            cpu_pct = c0.zip(c1).map(|(a, b)| (b.saturating_sub(a)) as f64 / elapsed);
            ops_per_sec = (r1 - r0) as f64 / elapsed;
            Ok(Measured {
                ops_per_sec,
                failed_ops: failed.load(Ordering::Relaxed),
                leader_cpu_pct: cpu_pct,
                ..Measured::default()
            })
        }
    }
}

async fn target_status_index(endpoints: &[String], leader: usize) -> Option<u64> {
    let client = Client::connect_with(crate::cluster::client_config(endpoints))
        .await
        .ok()?;
    client.status_of(&endpoints[leader]).await.ok().map(|s| s.applied_index)
}

/// A holder process takes a lock and is SIGKILLed while another client
/// waits for the lock; measures from the kill to the waiter's grant.
pub async fn regrant(target: &Target<'_>, run: usize) -> BenchResult<Measured> {
    let system = target.system();
    let endpoints = target.endpoints();
    let name = format!("bench/r/{run}");
    let exe = std::env::current_exe().map_err(|e| ClusterError::Io(e.to_string()))?;
    let mut holder = tokio::process::Command::new(exe)
        .envs(crate::cluster::tls_env())
        .args([
            "hold-lock",
            "--system",
            system.name(),
            "--endpoints",
            &endpoints.join(","),
            "--name",
            &name,
            "--ttl-ms",
            &REGRANT_TTL.as_millis().to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ClusterError::Io(format!("cannot start the holder: {e}")))?;
    let stdout = holder
        .stdout
        .take()
        .ok_or_else(|| ClusterError::Io("holder has no stdout".into()))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| ClusterError::Timeout("holder did not take the lock".into()))?
        .map_err(|e| ClusterError::Io(e.to_string()))?;
    if line.as_deref() != Some("held") {
        return Err(ClusterError::Client(format!("holder said {line:?}")));
    }
    let mut waiter = Worker::open(system, &endpoints, 1, false, TTL).await?;
    let wait_name = name.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let r = waiter.lock(&wait_name).await;
        let at = Instant::now();
        let _ = tx.send(at);
        if let Ok(h) = r {
            let _ = waiter.unlock(h).await;
        }
        waiter.close().await;
    });
    // Let the waiter queue up, then kill the holder.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    let _ = holder.start_kill();
    let _ = holder.wait().await;
    let granted_at = tokio::time::timeout(REGRANT_TTL * 4 + Duration::from_secs(10), rx)
        .await
        .map_err(|_| ClusterError::Timeout("the waiter was never granted".into()))?
        .map_err(client_err)?;
    let _ = task.await;
    let us = u64::try_from(granted_at.duration_since(killed_at).as_micros()).unwrap_or(u64::MAX);
    Ok(Measured {
        p50_us: us,
        p99_us: us,
        max_us: us,
        first_ok_after_fault_us: Some(us),
        ..Measured::default()
    })
}

/// The holder process of [`regrant`]: takes the lock, prints `held`, and
/// keeps its session alive until killed.
pub async fn hold_lock(system: System, endpoints: Vec<String>, name: String, ttl: Duration) -> BenchResult<()> {
    let mut w = Worker::open(system, &endpoints, 0, false, ttl).await?;
    let held = w.lock(&name).await.map_err(client_err)?;
    println!("held");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        // Keep the guard alive for as long as the process lives.
        let _ = &held;
    }
}
