//! Bytes per held lock: node RSS before and after a client takes N locks
//! (and keeps them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_client::{Client, LockGuard};
use futures::StreamExt;
use serde::Serialize;

use crate::cluster::{rss_bytes, ClusterError, DriftlockCluster};
use crate::workload::driftlock_config;

/// Result of the memory measurement.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryResult {
    /// Locks held at the end.
    pub locks: usize,
    /// Sessions holding them.
    pub sessions: usize,
    /// RSS of each node before, bytes.
    pub rss_before: Vec<u64>,
    /// RSS of each node after, bytes.
    pub rss_after: Vec<u64>,
    /// (after − before) / locks per node, bytes.
    pub bytes_per_lock: Vec<f64>,
    /// Index, in the per-node lists above, of the leader found before the
    /// locks were taken.
    pub leader: usize,
    /// Acquires per second while filling.
    pub acquires_per_sec: f64,
}

/// Takes `locks` locks over `sessions` sessions with `in_flight`
/// concurrent acquires and reports the nodes' RSS growth.
pub async fn held_locks(
    locks: usize,
    sessions: usize,
    in_flight: usize,
    extra_args: &[String],
) -> Result<MemoryResult, ClusterError> {
    let cluster = DriftlockCluster::start(extra_args).await?;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(
            Client::connect_with(driftlock_config(&cluster.endpoints, crate::workload::budget(false)))
                .await
                .map_err(|e| ClusterError::Client(e.to_string()))?,
        );
    }
    let mut ss = Vec::new();
    for i in 0..sessions {
        let s = clients[i % clients.len()]
            .open_session(Duration::from_secs(60))
            .await
            .map_err(|e| ClusterError::Client(e.to_string()))?;
        ss.push(Arc::new(s));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before: Vec<u64> = (0..3)
        .map(|i| cluster.pid(i).and_then(rss_bytes).unwrap_or(0))
        .collect();
    let t0 = Instant::now();
    let mut guards: Vec<LockGuard> = Vec::with_capacity(locks);
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut failures = 0usize;
    let mut next = 0usize;
    while guards.len() < locks {
        while pending.len() < in_flight && next < locks + failures {
            let s = ss[next % ss.len()].clone();
            let name = format!("mem/{next:08}");
            pending.push(async move { s.lock(&name).await });
            next += 1;
        }
        match pending.next().await {
            Some(Ok(g)) => guards.push(g),
            Some(Err(e)) => {
                failures += 1;
                if failures > locks / 100 + 100 {
                    return Err(ClusterError::Client(format!("too many failed acquires; last: {e}")));
                }
            }
            None => break,
        }
        if guards.len() % 100_000 == 0 && !guards.is_empty() {
            eprintln!(
                "  {} locks held ({:.0}/s)",
                guards.len(),
                guards.len() as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    let acquires_per_sec = guards.len() as f64 / t0.elapsed().as_secs_f64();
    cluster.wait_caught_up(Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after: Vec<u64> = (0..3)
        .map(|i| cluster.pid(i).and_then(rss_bytes).unwrap_or(0))
        .collect();
    let bytes_per_lock = rss_before
        .iter()
        .zip(&rss_after)
        .map(|(b, a)| (*a as f64 - *b as f64) / guards.len().max(1) as f64)
        .collect();
    let held = guards.len();
    // The guards are forgotten, not released one by one: the cluster goes away.
    std::mem::forget(guards);
    Ok(MemoryResult {
        locks: held,
        sessions,
        rss_before,
        rss_after,
        bytes_per_lock,
        leader,
        acquires_per_sec,
    })
}
