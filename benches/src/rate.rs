//! `driftlock-bench cluster-rate`: how fast cluster time advances against
//! real time on a 3-node cluster, idle and under sequential load (one
//! client locking and unlocking one lock in a loop, every operation waiting
//! for the previous one — each log entry then costs one fsync-bound cycle).
//!
//! Cluster time is meant to run slightly slower than real time
//! (docs/design.md "Time", "What the rules cost"); how much slower decides
//! how far leases and lock-delays stretch and how large a drift a client
//! that measures the cluster's rate sees. The measurement uses the
//! testkit's [`cluster_time`](driftlock_testkit::cluster_time) marks: the
//! leader's applied cluster time against this process's raw monotonic
//! clock, from a write stamped after the start to a write applied before
//! the end.

use std::time::{Duration, Instant};

use driftlock_testkit::cluster_time::{self, EndMark, StartMark};
use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterError, DriftlockCluster};
use crate::workload::{System, Worker, TTL};

/// Key the marking writes go to.
const MARK_KEY: &str = "driftlock-bench/cluster-rate";
/// Timeout of one marking call.
const MARK_TIMEOUT: Duration = Duration::from_secs(5);
/// The one lock the sequential phase takes and releases.
const LOCK_NAME: &str = "driftlock-bench/cluster-rate";

/// One measured phase.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RatePhase {
    /// `idle` or `sequential`.
    pub name: String,
    /// Real time between the marks, seconds (this process's raw clock).
    pub real_s: f64,
    /// Cluster time between the marks, seconds.
    pub cluster_s: f64,
    /// `cluster_s / real_s`: 1.0 means cluster time kept pace.
    pub rate: f64,
    /// `(1 − rate) × 10⁶`: the slowness a client measuring the cluster's
    /// rate sees as drift, ppm.
    pub slow_ppm: f64,
    /// Lock+unlock pairs completed (0 when idle).
    pub pairs: u64,
    /// Commands applied between the marks (applied revision difference;
    /// a batch entry holds several).
    pub entries: u64,
    /// Pairs per real second.
    pub pairs_per_sec: f64,
    /// Operations that failed.
    pub failed_ops: u64,
    /// The leader's stamping drift bound ρ_hi at the end of the phase, ppm:
    /// the part of `slow_ppm` rule 2 costs on purpose.
    pub rho_hi_ppm: u64,
}

/// What `driftlock-bench cluster-rate` writes to
/// `benches/results/cluster-rate-<label>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateReport {
    /// What the run was labelled (e.g. `before`, `after`).
    pub label: String,
    /// The command that produced it.
    pub command: String,
    /// When, UTC.
    pub when: String,
    /// The source commit the nodes were built from (`git describe --always
    /// --dirty`), empty if unknown.
    pub commit: String,
    /// Length of each phase, seconds.
    pub seconds: u64,
    /// CPU cores of the machine.
    pub cores: usize,
    /// fdatasync latency of a 4 KiB write on the data disk, median, µs.
    pub fdatasync_p50_us: u64,
    /// The same, 99th percentile, µs.
    pub fdatasync_p99_us: u64,
    /// How the nodes were reached: `mutual TLS` or `plain TCP`
    /// (`--plain-tcp`); empty in reports from before TLS.
    #[serde(default)]
    pub transport: String,
    /// The cluster left alone (it commits a `Tick` every 200 ms).
    pub idle: RatePhase,
    /// One client locking and unlocking sequentially.
    pub sequential: RatePhase,
}

fn phase(name: &str, start: &StartMark, end: &EndMark, pairs: u64, failed_ops: u64, rho_hi_ppm: u64) -> RatePhase {
    let real_s = cluster_time::real_span_us(start, end) as f64 / 1e6;
    let cluster_s = cluster_time::cluster_span_us(start, end) as f64 / 1e6;
    let rate = cluster_time::rate(start, end).unwrap_or(0.0);
    RatePhase {
        name: name.to_string(),
        real_s,
        cluster_s,
        rate,
        slow_ppm: (1.0 - rate) * 1e6,
        pairs,
        entries: end.applied_revision.saturating_sub(start.revision),
        pairs_per_sec: if real_s > 0.0 { pairs as f64 / real_s } else { 0.0 },
        failed_ops,
        rho_hi_ppm,
    }
}

/// The stamping drift bound of the node at `addr`, ppm.
async fn rho_hi_ppm(addr: &str, security: &driftlock_proto::Security) -> Result<u64, ClusterError> {
    driftlock_proto::status(addr, MARK_TIMEOUT, security)
        .await
        .map(|s| s.rho_hi_ppm)
        .map_err(|e| ClusterError::Client(e.to_string()))
}

fn mark_err(e: cluster_time::MarkError) -> ClusterError {
    ClusterError::Client(e.to_string())
}

/// A stamping bound at or below this means the leader has measured its own
/// clock rate (the unmeasured bound is 100 000 ppm).
const MEASURED_RHO_HI_PPM: u64 = 10_000;

/// Starts a 3-node cluster with `serve_args`, measures the idle phase and
/// then the sequential phase, each for `seconds`.
pub async fn cluster_rate(
    label: &str,
    command: &str,
    when: &str,
    seconds: u64,
    fdatasync: (u64, u64),
    serve_args: &[String],
) -> Result<RateReport, ClusterError> {
    let window = Duration::from_secs(seconds.max(1));
    let cluster = DriftlockCluster::start(serve_args).await?;
    let security = crate::cluster::security()?;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let addr = cluster.endpoints[leader].clone();
    // Let start-up traffic (health reports, first clock estimates) pass,
    // and the leader's own clock rate be measured: until it is, the leader
    // stamps as if its clock were 10 % fast (docs/design.md "Time"), which
    // slows cluster time on purpose and is not what this measures.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let measured_by = Instant::now() + Duration::from_secs(60);
    while rho_hi_ppm(&addr, &security).await? > MEASURED_RHO_HI_PPM {
        if Instant::now() > measured_by {
            return Err(ClusterError::Timeout(format!(
                "the leader's clock rate was not measured within 60 s (ρ_hi above {MEASURED_RHO_HI_PPM} ppm)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    eprintln!("idle for {seconds} s");
    let start = cluster_time::start_mark(&addr, MARK_KEY, MARK_TIMEOUT, &security)
        .await
        .map_err(mark_err)?;
    tokio::time::sleep(window).await;
    let end = cluster_time::end_mark_by_write(&addr, MARK_KEY, MARK_TIMEOUT, &security)
        .await
        .map_err(mark_err)?;
    let idle = phase("idle", &start, &end, 0, 0, rho_hi_ppm(&addr, &security).await?);

    eprintln!("sequential lock/unlock for {seconds} s");
    let mut worker = Worker::open(
        System::Driftlock,
        &cluster.endpoints,
        0,
        crate::workload::budget(false),
        TTL,
    )
    .await?;
    let start = cluster_time::start_mark(&addr, MARK_KEY, MARK_TIMEOUT, &security)
        .await
        .map_err(mark_err)?;
    let deadline = Instant::now() + window;
    let (mut pairs, mut failed) = (0u64, 0u64);
    while Instant::now() < deadline {
        match worker.lock(LOCK_NAME).await {
            Ok(held) => match worker.unlock(held).await {
                Ok(()) => pairs += 1,
                Err(_) => failed += 1,
            },
            Err(_) => failed += 1,
        }
    }
    let end = cluster_time::end_mark_by_write(&addr, MARK_KEY, MARK_TIMEOUT, &security)
        .await
        .map_err(mark_err)?;
    worker.close().await;
    let sequential = phase(
        "sequential",
        &start,
        &end,
        pairs,
        failed,
        rho_hi_ppm(&addr, &security).await?,
    );

    Ok(RateReport {
        label: label.to_string(),
        command: command.to_string(),
        when: when.to_string(),
        commit: git_describe(),
        seconds,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        fdatasync_p50_us: fdatasync.0,
        fdatasync_p99_us: fdatasync.1,
        transport: crate::cluster::transport().into(),
        idle,
        sequential,
    })
}

/// `git describe --always --dirty` of the source tree, empty if git cannot
/// say.
fn git_describe() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
