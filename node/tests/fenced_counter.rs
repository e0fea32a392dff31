//! The acceptance test of the service: 16 concurrent clients increment a
//! fenced KV counter under one lock on a 3-node cluster of real processes;
//! the leader is SIGKILLed mid-run. The final counter equals the
//! acknowledged increments, nothing acknowledged is lost, and the restarted
//! node catches up.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_client::Client;
use driftlock_testkit::counter::{run_worker, COUNTER};
use driftlock_testkit::TestCluster;

const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fenced_counter_survives_a_leader_kill() {
    let mut cluster = TestCluster::start(3).await;
    let endpoints = cluster.endpoints();
    let acked = Arc::new(AtomicU64::new(0));
    let indeterminate = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(12);

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let endpoints = endpoints.clone();
        let acked = acked.clone();
        let indeterminate = indeterminate.clone();
        tasks.push(tokio::spawn(run_worker(
            cluster.client_config(endpoints),
            format!("counter-{c}"),
            stop_at,
            acked,
            indeterminate,
        )));
    }

    // Let the clients run, then kill the leader.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = acked.load(Ordering::SeqCst);
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    cluster.kill(leader);
    let new_leader = cluster.wait_leader(Duration::from_secs(15)).await;
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.spawn(leader);

    for t in tasks {
        t.await.expect("client task");
    }
    let acked = acked.load(Ordering::SeqCst);
    let indeterminate = indeterminate.load(Ordering::SeqCst);
    assert!(before_kill > 0, "no increment before the kill");
    assert!(
        acked > before_kill,
        "service did not resume after the leader was killed"
    );

    let client = Client::connect_with(cluster.client_config(endpoints))
        .await
        .expect("connect");
    let value = client.kv_get(COUNTER).await.expect("read").expect("counter exists");
    let n = u64::from_le_bytes(value.value.try_into().expect("8 bytes"));
    assert!(
        n >= acked && n <= acked + indeterminate,
        "counter {n}, acknowledged {acked}, indeterminate {indeterminate}"
    );

    // The restarted node catches up to the same state.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader_status = cluster.status(cluster.wait_leader(Duration::from_secs(5)).await).await;
        let restarted = cluster.status(leader).await;
        if let (Some(l), Some(r)) = (leader_status, restarted) {
            if r.applied_index >= l.applied_index.saturating_sub(5) && r.stats.keys == l.stats.keys {
                break;
            }
        }
        assert!(Instant::now() < deadline, "restarted node did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
