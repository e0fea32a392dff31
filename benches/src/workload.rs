//! The workloads, each run the same way against either system through a
//! [`Target`] and [`Worker`]s: [`uncontended`] and [`contended`] lock
//! throughput, [`failover`] (the leader killed or asked to hand over midway),
//! [`keepalive`] (many idle sessions over many clients: sessions kept, and
//! the leader's CPU per renewal) and [`regrant`] (from a holder's death to
//! the next grant). etcd runs in two [`Routing`]s, reported as two systems.
//!
//! Both systems get the same [`Budget`] per operation in every workload
//! ([`budget`]): 2 s per attempt and 10 s per operation (the driftlock
//! client's defaults), 1 s per attempt in the failover workloads; a lock's
//! queue wait ([`LOCK_WAIT`]) comes on top for both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use driftlock_client::{Client, ClientConfig, LockGuard, Session};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::cluster::{cpu_ticks, ClusterError, DriftlockCluster, EtcdCluster};
use crate::etcd::{Budget, EtcdConn, EtcdError, Routing};

/// The system under test; etcd once per routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum System {
    /// driftlock, through `driftlock-client`.
    #[serde(rename = "driftlock")]
    Driftlock,
    /// etcd 3.4 through its gRPC API, clients pinned round-robin to the
    /// members (etcd's client default; followers forward).
    #[serde(rename = "etcd-rr")]
    EtcdRr,
    /// etcd 3.4 through its gRPC API, every client pinned to the leader.
    #[serde(rename = "etcd-leader")]
    EtcdLeader,
}

impl System {
    /// Every system the comparison runs, in report order.
    pub const ALL: [System; 3] = [System::Driftlock, System::EtcdRr, System::EtcdLeader];

    /// The name rows and `hold-lock --system` use.
    pub fn name(self) -> &'static str {
        match self {
            System::Driftlock => "driftlock",
            System::EtcdRr => "etcd-rr",
            System::EtcdLeader => "etcd-leader",
        }
    }

    /// The system of a [`name`](Self::name); plain `etcd` is `etcd-rr`.
    pub fn from_name(name: &str) -> Option<System> {
        match name {
            "driftlock" => Some(System::Driftlock),
            "etcd" | "etcd-rr" => Some(System::EtcdRr),
            "etcd-leader" => Some(System::EtcdLeader),
            _ => None,
        }
    }

    /// How the etcd client routes its calls; `None` for driftlock.
    pub fn routing(self) -> Option<Routing> {
        match self {
            System::Driftlock => None,
            System::EtcdRr => Some(Routing::RoundRobin),
            System::EtcdLeader => Some(Routing::Leader),
        }
    }

    /// Whether this is one of the etcd variants.
    pub fn is_etcd(self) -> bool {
        self.routing().is_some()
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
    /// Failover workloads: the largest latency of the ops in flight at any
    /// moment of the [`FAULT_WINDOW`] from the fault on, µs: what the
    /// fault cost, apart from pauses elsewhere in the run (`max_us`).
    pub max_near_fault_us: Option<u64>,
    /// Failover workloads: how many times the cluster's Raft term moved
    /// from just before the fault to the end of the run (the highest term
    /// any node reports): 1 is one election; more after a pause is a storm.
    pub term_changes: Option<u64>,
    /// Keepalive workload: the leader's CPU use, % of one core.
    pub leader_cpu_pct: Option<f64>,
    /// Keepalive workload: the leader's CPU (user + system) per successful
    /// renewal in the measured window, µs.
    pub leader_cpu_us_per_renewal: Option<f64>,
    /// Keepalive workload: sessions (etcd: leases) opened and still alive
    /// at the end.
    pub sessions_kept: Option<u64>,
    /// Keepalive workload: sessions that could not be opened, expired or
    /// were ended by the cluster (0 is the goal).
    pub sessions_lost: Option<u64>,
    /// Uncontended workload: CPU (user + system) of all three nodes per
    /// completed lock+unlock pair, µs.
    pub cpu_us_per_op: Option<f64>,
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
    /// Keepalive workload: sessions (etcd: leases) to keep alive.
    pub keepalive_sessions: usize,
    /// Keepalive workload: clients (each with its own connections) the
    /// sessions are spread over evenly.
    pub keepalive_clients: usize,
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
        /// How long a `Lock` may wait for another holder on top of the
        /// budget ([`LOCK_WAIT`] unless [`Worker::expect_no_wait`]).
        lock_wait: Duration,
    },
}

/// A lock a [`Worker`] holds, to hand back to [`Worker::unlock`].
pub enum Held {
    /// driftlock's guard.
    Driftlock(LockGuard),
    /// etcd's lock key.
    Etcd(Vec<u8>),
}

/// How long a lock may wait in its queue, on top of the operation budget:
/// the driftlock client's default (`LockOptions::default().wait`), and the
/// same for an etcd `Lock`.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

/// The budget of one operation, the same for both systems: 2 s per attempt
/// and 10 s per operation (the driftlock client's defaults), 1 s per attempt
/// in the failover workloads.
pub fn budget(failover: bool) -> Budget {
    Budget {
        attempt: if failover {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(2)
        },
        op: Duration::from_secs(10),
    }
}

/// driftlock client settings with `budget`.
pub fn driftlock_config(endpoints: &[String], budget: Budget) -> ClientConfig {
    let mut c = crate::cluster::client_config(endpoints);
    c.client_name = "driftlock-bench".into();
    c.request_timeout_ms = u64::try_from(budget.attempt.as_millis()).unwrap_or(u64::MAX);
    c.op_deadline_ms = u64::try_from(budget.op.as_millis()).unwrap_or(u64::MAX);
    c
}

/// Keeps `lease` alive over one long-lived keepalive stream of `conn`,
/// renewing every TTL/3 (as etcd's client does), reopening the stream after
/// a failure; runs until aborted.
async fn keep_lease_alive(mut conn: EtcdConn, lease: i64, ttl_s: i64) {
    let every = Duration::from_secs(ttl_s.max(1) as u64) / 3;
    let mut stream = None;
    let mut next = tokio::time::Instant::now() + every;
    loop {
        tokio::time::sleep_until(next).await;
        // A fresh stream carries this renewal already.
        let sent = match stream {
            Some(_) => false,
            None => {
                stream = conn.keepalive_stream(lease).await.ok();
                true
            }
        };
        let renewed = match stream.as_mut() {
            Some(s) => {
                (sent || s.ids.send(lease).await.is_ok())
                    && matches!(
                        tokio::time::timeout(conn.budget.attempt, s.answers.message()).await,
                        Ok(Ok(Some(r))) if r.ttl_s > 0
                    )
            }
            None => false,
        };
        if renewed {
            next += every;
        } else {
            // Retried quickly on a fresh stream, as a client library would.
            stream = None;
            next = tokio::time::Instant::now() + Duration::from_millis(100);
        }
    }
}

impl Worker {
    /// Opens a client (its own connections) with a session or lease of `ttl`.
    /// etcd clients start at endpoint `index % 3` (round robin) or at the
    /// leader.
    pub async fn open(
        system: System,
        endpoints: &[String],
        index: usize,
        budget: Budget,
        ttl: Duration,
    ) -> BenchResult<Worker> {
        match system.routing() {
            None => {
                let client = Client::connect_with(driftlock_config(endpoints, budget))
                    .await
                    .map_err(client_err)?;
                let session = client.open_session(ttl).await.map_err(client_err)?;
                Ok(Worker::Driftlock { session })
            }
            Some(routing) => {
                let mut conn = EtcdConn::routed(endpoints, index, budget, routing)
                    .await
                    .map_err(client_err)?;
                let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(10);
                let lease = grant_retrying(&mut conn, ttl_s).await?;
                let keepalive = tokio::spawn(keep_lease_alive(conn.clone(), lease, ttl_s));
                Ok(Worker::Etcd {
                    conn,
                    lease,
                    keepalive,
                    lock_wait: LOCK_WAIT,
                })
            }
        }
    }

    /// For workloads where every worker takes its own lock, so no lock ever
    /// waits for another holder: an etcd `Lock` attempt then gets the plain
    /// attempt timeout, as the driftlock call that queues a lock does
    /// (otherwise the queue wait, which etcd's `Lock` includes, would
    /// stretch the attempt to a minute when a member hangs). No effect on
    /// driftlock, whose queue wait is separate from the attempt.
    pub fn expect_no_wait(&mut self) {
        if let Worker::Etcd { lock_wait, .. } = self {
            *lock_wait = Duration::ZERO;
        }
    }

    /// Takes `name`.
    pub async fn lock(&mut self, name: &str) -> Result<Held, String> {
        match self {
            Worker::Driftlock { session } => session.lock(name).await.map(Held::Driftlock).map_err(|e| e.to_string()),
            Worker::Etcd {
                conn, lease, lock_wait, ..
            } => conn
                .lock(name, *lease, *lock_wait)
                .await
                .map(Held::Etcd)
                .map_err(|e| e.to_string()),
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

/// Opens `n` workers of `system` at once (see [`Worker::open`]), with the
/// budget of [`budget`]`(failover)` and sessions (leases) of `ttl`.
pub async fn open_workers(
    system: System,
    endpoints: &[String],
    n: usize,
    failover: bool,
    ttl: Duration,
) -> BenchResult<Vec<Worker>> {
    let opens = (0..n).map(|i| Worker::open(system, endpoints, i, budget(failover), ttl));
    futures::future::try_join_all(opens).await
}

/// Runs lock+unlock loops on `names[i]` for every worker until `stop`;
/// returns the workers and every operation, timed from `t0`.
pub async fn run_loops(
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
    /// The etcd cluster, and how its clients route their calls.
    Etcd(&'a mut EtcdCluster, Routing),
}

impl Target<'_> {
    /// The system the cluster runs.
    pub fn system(&self) -> System {
        match self {
            Target::Driftlock(_) => System::Driftlock,
            Target::Etcd(_, Routing::RoundRobin) => System::EtcdRr,
            Target::Etcd(_, Routing::Leader) => System::EtcdLeader,
        }
    }

    /// The nodes' client addresses (`host:port`), in node order.
    pub fn endpoints(&self) -> Vec<String> {
        match self {
            Target::Driftlock(c) => c.endpoints.clone(),
            Target::Etcd(c, _) => c.endpoints.clone(),
        }
    }

    async fn leader(&self) -> BenchResult<usize> {
        match self {
            Target::Driftlock(c) => c.wait_leader(Duration::from_secs(30)).await,
            Target::Etcd(c, _) => c.wait_leader(Duration::from_secs(30)).await,
        }
    }

    /// Process ids of the running nodes.
    fn pids(&self) -> Vec<u32> {
        (0..3).filter_map(|i| self.pid(i)).collect()
    }

    fn pid(&self, i: usize) -> Option<u32> {
        match self {
            Target::Driftlock(c) => c.pid(i),
            Target::Etcd(c, _) => c.pid(i),
        }
    }

    fn kill(&mut self, i: usize) {
        match self {
            Target::Driftlock(c) => c.kill(i),
            Target::Etcd(c, _) => c.kill(i),
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) node `i`'s process.
    fn signal(&self, i: usize, signal: nix::sys::signal::Signal) -> Result<(), String> {
        let pid = self.pid(i).ok_or_else(|| format!("node {i} does not run"))?;
        let pid = i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .map_err(|e| format!("{signal} to node {i}: {e}"))
    }

    /// The highest Raft term any reachable node reports, `None` if none
    /// answered.
    async fn max_term(&self) -> Option<u64> {
        let endpoints = self.endpoints();
        let mut max = None;
        match self {
            Target::Driftlock(c) => {
                let admin = c.admin_client().await.ok()?;
                for ep in &endpoints {
                    if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(500), admin.status_of(ep)).await {
                        max = max.max(Some(s.term));
                    }
                }
            }
            Target::Etcd(..) => {
                for i in 0..endpoints.len() {
                    let Ok(mut c) = EtcdConn::new(&endpoints[i..=i], 0, Budget::single(Duration::from_millis(500)))
                    else {
                        continue;
                    };
                    if let Ok(s) = c.status().await {
                        max = max.max(s.header.as_ref().map(|h| h.raft_term));
                    }
                }
            }
        }
        max
    }

    async fn restart(&mut self, i: usize) -> BenchResult<()> {
        match self {
            Target::Driftlock(c) => {
                c.spawn(i)?;
                c.wait_caught_up(Duration::from_secs(60)).await
            }
            Target::Etcd(c, _) => {
                c.spawn(i)?;
                // Wait until the member answers and there is a leader.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let mut conn = EtcdConn::new(&c.endpoints[i..=i], 0, Budget::single(Duration::from_millis(500)))
                        .map_err(client_err)?;
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
            Target::Etcd(..) => None,
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
                    (Target::Etcd(..), _) => {
                        let Ok(mut c) = EtcdConn::new(&endpoints[i..=i], 0, Budget::single(Duration::from_millis(50)))
                        else {
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
            Target::Etcd(c, _) => {
                let ids = c.member_ids().await.map_err(|e| e.to_string())?;
                let mut conn = EtcdConn::new(&c.endpoints[from..=from], 0, Budget::single(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                conn.move_leader(ids[to]).await.map_err(|e| e.to_string())
            }
        }
    }
}

/// Microseconds of CPU per clock tick of `/proc/<pid>/stat` (USER_HZ,
/// 100 on Linux).
const US_PER_TICK: f64 = 10_000.0;

/// CPU ticks (user + system) used so far by all of `pids` together; `None`
/// if any cannot be read.
fn cpu_ticks_sum(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| cpu_ticks(p)).sum()
}

/// Uncontended lock+unlock pairs: `clients` clients, each its own lock.
/// Also the CPU all three nodes used per pair over the run.
pub async fn uncontended(target: &Target<'_>, clients: usize, window: Duration, run: usize) -> BenchResult<Measured> {
    let system = target.system();
    let mut workers = open_workers(system, &target.endpoints(), clients, false, TTL).await?;
    workers.iter_mut().for_each(Worker::expect_no_wait);
    let names = (0..clients).map(|i| format!("bench/u/{run}/{clients}/{i}")).collect();
    let pids = target.pids();
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = cpu_ticks_sum(&pids);
    let t0 = Instant::now();
    let handle = tokio::spawn(run_loops(workers, names, t0, stop.clone()));
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let (workers, ops) = handle.await.map_err(client_err)?;
    let elapsed = t0.elapsed();
    let cpu1 = cpu_ticks_sum(&pids);
    for w in workers {
        w.close().await;
    }
    let mut m = summarize(&ops, elapsed);
    let pairs = ops.iter().filter(|o| !o.is_lock && o.ok).count();
    m.cpu_us_per_op = match (cpu0, cpu1) {
        (Some(a), Some(b)) if pairs > 0 && pids.len() == 3 => {
            Some(b.saturating_sub(a) as f64 * US_PER_TICK / pairs as f64)
        }
        _ => None,
    };
    Ok(m)
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
    /// SIGSTOP of the leader for [`PAUSE`], then SIGCONT: a process that
    /// stalls (a GC pause, a VM migration, a swap storm) but is not dead.
    PauseLeader,
}

/// How long [`Fault::PauseLeader`] keeps the leader stopped.
pub const PAUSE: Duration = Duration::from_secs(2);

/// How long after a fault its cost is counted in
/// [`Measured::max_near_fault_us`]: a planned transfer is over in tens of
/// milliseconds, and anything in flight then is counted in full.
pub const FAULT_WINDOW: Duration = Duration::from_secs(1);

/// The largest latency of the ops in flight at any moment from `fault_us`
/// to `window` later (µs since the run's start), `None` if none was.
fn worst_near(ops: &[Op], fault_us: u64, window: Duration) -> Option<u64> {
    let window_end_us = fault_us.saturating_add(u64::try_from(window.as_micros()).unwrap_or(u64::MAX));
    ops.iter()
        .filter(|o| o.end_us >= fault_us && o.start_us <= window_end_us)
        .map(Op::latency_us)
        .max()
}

/// 16 clients lock and unlock their own locks; the leader is killed or
/// asked to hand over midway.
pub async fn failover(target: &mut Target<'_>, fault: Fault, timing: &Timing, run: usize) -> BenchResult<Measured> {
    let system = target.system();
    let clients = 16;
    let mut workers = open_workers(system, &target.endpoints(), clients, true, TTL).await?;
    workers.iter_mut().for_each(Worker::expect_no_wait);
    let names = (0..clients).map(|i| format!("bench/f/{run}/{i}")).collect();
    let leader = target.leader().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handle = tokio::spawn(run_loops(workers, names, t0, stop.clone()));
    let term_before = target.max_term().await;
    tokio::time::sleep(timing.before_fault.saturating_sub(t0.elapsed())).await;
    let fault_at = Instant::now();
    let mut fault_error = None;
    match fault {
        Fault::KillLeader => target.kill(leader),
        Fault::Planned => {
            if let Err(e) = target.move_leader(leader).await {
                fault_error = Some(e);
            }
        }
        Fault::PauseLeader => {
            if let Err(e) = target.signal(leader, nix::sys::signal::Signal::SIGSTOP) {
                fault_error = Some(e);
            }
        }
    }
    let elected = if fault == Fault::PauseLeader && fault_error.is_none() {
        // Watch for the new leader while the old one is stopped.
        let resume = async {
            tokio::time::sleep(PAUSE).await;
            target.signal(leader, nix::sys::signal::Signal::SIGCONT)
        };
        let (elected, resumed) = tokio::join!(target.new_leader_after(leader, fault_at), resume);
        if let Err(e) = resumed {
            fault_error = Some(e);
        }
        elected
    } else {
        target.new_leader_after(leader, fault_at).await
    };
    if let Some(d) = elected {
        eprintln!(
            "  {}: a new leader answered status {} ms after the fault",
            system.name(),
            d.as_millis()
        );
    }
    tokio::time::sleep(timing.after_fault.saturating_sub(fault_at.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let term_after = target.max_term().await;
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
    m.max_near_fault_us = worst_near(&ops, fault_us, FAULT_WINDOW);
    m.term_changes = term_before.zip(term_after).map(|(b, a)| a.saturating_sub(b));
    // Where the run's worst latency was, against the fault.
    if let Some(w) = ops.iter().max_by_key(|o| o.latency_us()) {
        eprintln!(
            "  {}: worst op {} ms, started {} ms from the fault; worst within {} ms of it {:?} µs",
            system.name(),
            w.latency_us() / 1_000,
            (i128::from(w.start_us) - i128::from(fault_us)) / 1_000,
            FAULT_WINDOW.as_millis(),
            m.max_near_fault_us
        );
    }
    if fault == Fault::KillLeader {
        target.restart(leader).await?;
    }
    Ok(m)
}

/// How far a session's `valid_until` must move forward to count as one
/// renewal (a renewal moves it by about a third of the TTL; the raw-clock
/// conversion jitters by nanoseconds).
const RENEWAL_STEP: Duration = Duration::from_millis(100);

/// How often the bench reads every driftlock session's `valid_until` to
/// count the renewals the client library made (well under the TTL/3
/// between two renewals of one session).
const RENEWAL_POLL: Duration = Duration::from_millis(500);

/// What the keepalive load measured, before it becomes a [`Measured`].
struct KeepaliveCounts {
    /// Successful renewals in the CPU window.
    renewals: u64,
    /// Sessions (leases) opened and alive at the end.
    kept: u64,
    /// Sessions (leases) not opened, expired or ended.
    lost: u64,
    /// The leader's CPU ticks in the window, if readable.
    cpu_ticks: Option<u64>,
    /// Length of the CPU window, seconds.
    window_s: f64,
}

impl KeepaliveCounts {
    fn measured(&self) -> Measured {
        let cpu_us = self.cpu_ticks.map(|t| t as f64 * US_PER_TICK);
        Measured {
            ops_per_sec: self.renewals as f64 / self.window_s,
            failed_ops: self.lost,
            leader_cpu_pct: cpu_us.map(|us| us / 1e4 / self.window_s),
            leader_cpu_us_per_renewal: cpu_us.filter(|_| self.renewals > 0).map(|us| us / self.renewals as f64),
            sessions_kept: Some(self.kept),
            sessions_lost: Some(self.lost),
            ..Measured::default()
        }
    }
}

/// `timing.keepalive_sessions` sessions (etcd: leases) of [`TTL`], spread
/// evenly over `timing.keepalive_clients` clients (each with its own
/// connections; each opens its share one after another), kept alive by the
/// client's own keepalives; then the leader's CPU over
/// `timing.cpu_window`, the successful renewals in that window, and the
/// sessions kept and lost by the end.
///
/// Renewals: driftlock — every advance of a session's `valid_until` (one
/// per `KeptAlive` the library applied), read by the bench every
/// [`RENEWAL_POLL`]; etcd — keepalive answers with a TTL above 0 on each
/// client's one keepalive stream, which sends every lease's renewal once
/// per TTL/3, spaced evenly.
pub async fn keepalive(target: &Target<'_>, timing: &Timing) -> BenchResult<Measured> {
    let n = timing.keepalive_sessions;
    let clients = timing.keepalive_clients.clamp(1, n.max(1));
    let shares: Vec<usize> = (0..clients)
        .map(|c| n / clients + usize::from(c < n % clients))
        .collect();
    let endpoints = target.endpoints();
    let leader = target.leader().await?;
    let pid = target
        .pid(leader)
        .ok_or_else(|| ClusterError::Io("leader has no process".into()))?;
    let counts = match target.system().routing() {
        None => keepalive_driftlock(&endpoints, &shares, pid, timing.cpu_window).await?,
        Some(routing) => keepalive_etcd(&endpoints, &shares, routing, pid, timing.cpu_window).await?,
    };
    eprintln!(
        "  {} sessions kept, {} lost, {} renewals in {:.1} s",
        counts.kept, counts.lost, counts.renewals, counts.window_s
    );
    Ok(counts.measured())
}

async fn keepalive_driftlock(
    endpoints: &[String],
    shares: &[usize],
    pid: u32,
    cpu_window: Duration,
) -> BenchResult<KeepaliveCounts> {
    let n: usize = shares.iter().sum();
    let mut opens = Vec::new();
    for &share in shares {
        let endpoints = endpoints.to_vec();
        opens.push(tokio::spawn(async move {
            let client = Client::connect_with(driftlock_config(&endpoints, budget(false)))
                .await
                .map_err(client_err)?;
            let mut sessions = Vec::with_capacity(share);
            let mut failures = 0u64;
            for _ in 0..share {
                // Opens that fail (the cluster saturated) are counted as
                // lost, not fatal.
                match client.open_session(TTL).await {
                    Ok(s) => sessions.push(s),
                    Err(_) => failures += 1,
                }
            }
            Ok::<_, ClusterError>((sessions, failures))
        }));
    }
    let mut sessions: Vec<Session> = Vec::with_capacity(n);
    let mut open_failures = 0u64;
    for o in opens {
        let (s, f) = o.await.map_err(client_err)??;
        sessions.extend(s);
        open_failures += f;
    }
    let sessions = Arc::new(sessions);
    let renewals = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (sessions, renewals, stop) = (sessions.clone(), renewals.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last: Vec<Instant> = sessions.iter().map(|s| s.valid_until()).collect();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(RENEWAL_POLL).await;
                for (s, l) in sessions.iter().zip(last.iter_mut()) {
                    let now = s.valid_until();
                    if now > *l + RENEWAL_STEP {
                        renewals.fetch_add(1, Ordering::Relaxed);
                        *l = now;
                    }
                }
            }
        })
    };
    let (window_renewals, window_ticks, window_s) = measure_window(&renewals, pid, cpu_window).await;
    stop.store(true, Ordering::Relaxed);
    let _ = poller.await;
    let dead = sessions.iter().filter(|s| !s.is_valid()).count() as u64;
    futures::future::join_all(sessions.iter().map(|s| s.close())).await;
    Ok(KeepaliveCounts {
        renewals: window_renewals,
        kept: sessions.len() as u64 - dead,
        lost: dead + open_failures,
        cpu_ticks: window_ticks,
        window_s,
    })
}

/// Lets the opening burst settle into steady keepalives (a third of the
/// TTL), then counts over `cpu_window` the renewals and the leader's
/// (`pid`) CPU ticks: (renewals, ticks if readable, window seconds).
async fn measure_window(renewals: &AtomicU64, pid: u32, cpu_window: Duration) -> (u64, Option<u64>, f64) {
    tokio::time::sleep(TTL / 3).await;
    let (r0, c0, t0) = (renewals.load(Ordering::Relaxed), cpu_ticks(pid), Instant::now());
    tokio::time::sleep(cpu_window).await;
    let (r1, c1) = (renewals.load(Ordering::Relaxed), cpu_ticks(pid));
    (
        r1.saturating_sub(r0),
        c0.zip(c1).map(|(a, b)| b.saturating_sub(a)),
        t0.elapsed().as_secs_f64(),
    )
}

/// One etcd load client's leases: when each was last renewed, and those
/// etcd said were gone.
#[derive(Default)]
struct LeaseBook {
    last_ok: HashMap<i64, Instant>,
    gone: std::collections::HashSet<i64>,
}

async fn keepalive_etcd(
    endpoints: &[String],
    shares: &[usize],
    routing: Routing,
    pid: u32,
    cpu_window: Duration,
) -> BenchResult<KeepaliveCounts> {
    let ttl_s = i64::try_from(TTL.as_secs()).unwrap_or(10);
    let renewals = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Every client grants its share, then keeps it alive until `stop`.
    let mut grants = Vec::new();
    for (c, &share) in shares.iter().enumerate() {
        let endpoints = endpoints.to_vec();
        grants.push(tokio::spawn(async move {
            let mut conn = EtcdConn::routed(&endpoints, c, budget(false), routing)
                .await
                .map_err(client_err)?;
            // Each lease with the instant it was granted (its last renewal
            // so far).
            let mut granted = Vec::with_capacity(share);
            let mut failures = 0u64;
            for _ in 0..share {
                match conn.lease_grant(ttl_s).await {
                    Ok(id) => granted.push((id, Instant::now())),
                    Err(_) => failures += 1,
                }
            }
            Ok::<_, ClusterError>((conn, granted, failures))
        }));
    }
    let mut open_failures = 0u64;
    let mut loops = Vec::new();
    let mut books = Vec::new();
    for g in grants {
        let (conn, granted, failures) = g.await.map_err(client_err)??;
        open_failures += failures;
        let ids: Vec<i64> = granted.iter().map(|&(id, _)| id).collect();
        let book = Arc::new(Mutex::new(LeaseBook {
            last_ok: granted.into_iter().collect(),
            ..LeaseBook::default()
        }));
        books.push(book.clone());
        loops.push(tokio::spawn(keep_leases_alive(
            conn,
            ids,
            book,
            renewals.clone(),
            stop.clone(),
        )));
    }
    let (window_renewals, window_ticks, window_s) = measure_window(&renewals, pid, cpu_window).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    let now = Instant::now();
    let (mut kept, mut lost) = (0u64, open_failures);
    for b in &books {
        let b = b.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, at) in &b.last_ok {
            if b.gone.contains(id) || now.saturating_duration_since(*at) >= TTL {
                lost += 1;
            } else {
                kept += 1;
            }
        }
    }
    Ok(KeepaliveCounts {
        renewals: window_renewals,
        kept,
        lost,
        cpu_ticks: window_ticks,
        window_s,
    })
}

/// Renews `ids` over one keepalive stream of `conn` (reopened after a
/// failure), each once per TTL/3, spaced evenly; records every answer in
/// `book` and counts answers with a TTL above 0 in `renewals`, until `stop`.
async fn keep_leases_alive(
    mut conn: EtcdConn,
    ids: Vec<i64>,
    book: Arc<Mutex<LeaseBook>>,
    renewals: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    if ids.is_empty() {
        return;
    }
    let pause = (TTL / 3) / u32::try_from(ids.len()).unwrap_or(u32::MAX);
    let mut k = 0usize;
    while !stop.load(Ordering::Relaxed) {
        // The stream opens with the next lease's renewal.
        let stream = match conn.keepalive_stream(ids[k % ids.len()]).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        k += 1;
        let mut next = tokio::time::Instant::now() + pause;
        let mut answers = stream.answers;
        let reader = {
            let (book, renewals) = (book.clone(), renewals.clone());
            tokio::spawn(async move {
                while let Ok(Some(r)) = answers.message().await {
                    let mut b = book.lock().unwrap_or_else(PoisonError::into_inner);
                    if r.ttl_s > 0 {
                        renewals.fetch_add(1, Ordering::Relaxed);
                        b.last_ok.insert(r.id, Instant::now());
                    } else {
                        b.gone.insert(r.id);
                    }
                }
            })
        };
        loop {
            tokio::time::sleep_until(next).await;
            if stop.load(Ordering::Relaxed) || reader.is_finished() {
                break;
            }
            if stream.ids.send(ids[k % ids.len()]).await.is_err() {
                break;
            }
            k += 1;
            next += pause;
        }
        drop(stream.ids);
        reader.abort();
    }
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
    let mut waiter = Worker::open(system, &endpoints, 1, budget(false), TTL).await?;
    let wait_name = name.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        // The grant time only for a lock actually granted; a failed lock
        // is reported as the run's failure, not as a re-grant time.
        let r = waiter.lock(&wait_name).await;
        let at = Instant::now();
        match r {
            Ok(h) => {
                let _ = tx.send(Ok(at));
                let _ = waiter.unlock(h).await;
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
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
        .map_err(client_err)?
        .map_err(|e| ClusterError::Client(format!("the waiter's lock failed: {e}")))?;
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
    let mut w = Worker::open(system, &endpoints, 0, budget(false), ttl).await?;
    let held = w.lock(&name).await.map_err(client_err)?;
    println!("held");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        // Keep the guard alive for as long as the process lives.
        let _ = &held;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_near_a_fault_ignores_pauses_elsewhere_in_the_run() {
        let op = |start_us, end_us| Op {
            start_us,
            end_us,
            ok: true,
            is_lock: true,
        };
        let fault_us = 2_000_000;
        let ops = [
            op(1_000_000, 1_300_000), // 300 ms, over before the fault
            op(1_990_000, 2_030_000), // 40 ms, across the fault
            op(2_500_000, 2_520_000), // 20 ms, inside the window
            op(3_100_000, 3_200_000), // 100 ms, after the window
        ];
        assert_eq!(worst_near(&ops, fault_us, Duration::from_secs(1)), Some(40_000));
        assert_eq!(worst_near(&ops, 5_000_000, Duration::from_secs(1)), None);
    }

    #[test]
    fn system_names_round_trip_and_plain_etcd_is_round_robin() {
        for s in System::ALL {
            assert_eq!(System::from_name(s.name()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.name()));
        }
        assert_eq!(System::from_name("etcd"), Some(System::EtcdRr));
        assert_eq!(System::from_name("zookeeper"), None);
        assert_eq!(System::EtcdLeader.routing(), Some(Routing::Leader));
        assert!(!System::Driftlock.is_etcd());
    }

    #[test]
    fn both_systems_get_the_same_budget() {
        for failover in [false, true] {
            let b = budget(failover);
            let c = driftlock_config(&["127.0.0.1:1".into()], b);
            assert_eq!(Duration::from_millis(c.request_timeout_ms), b.attempt);
            assert_eq!(Duration::from_millis(c.op_deadline_ms), b.op);
        }
        assert_eq!(budget(true).attempt, Duration::from_secs(1));
        assert_eq!(budget(false).op, Duration::from_secs(10));
    }

    #[test]
    fn keepalive_cpu_is_per_successful_renewal() {
        let c = KeepaliveCounts {
            renewals: 1_000,
            kept: 9_990,
            lost: 10,
            cpu_ticks: Some(50),
            window_s: 10.0,
        };
        let m = c.measured();
        // 50 ticks = 500 000 µs over 1 000 renewals.
        assert_eq!(m.leader_cpu_us_per_renewal, Some(500.0));
        assert_eq!(m.leader_cpu_pct, Some(5.0));
        assert_eq!(m.ops_per_sec, 100.0);
        assert_eq!(
            (m.sessions_kept, m.sessions_lost, m.failed_ops),
            (Some(9_990), Some(10), 10)
        );
        let none = KeepaliveCounts { renewals: 0, ..c }.measured();
        assert_eq!(none.leader_cpu_us_per_renewal, None);
    }
}
