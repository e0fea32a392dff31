//! The acceptance test of the service: 16 concurrent clients increment a
//! fenced KV counter under one lock on a 3-node cluster of real processes;
//! the leader is SIGKILLed mid-run. The final counter equals the
//! acknowledged increments, nothing acknowledged is lost, and the restarted
//! node catches up.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_client::{Client, ClientConfig, ClientError, LockOptions};
use driftlock_state_machine::{LockMode, Rejection};
use support::Cluster;

const CLIENTS: usize = 16;
const COUNTER: &str = "counter";
const LOCK: &str = "counter-lock";

/// What one increment attempt did to the counter.
enum Outcome {
    /// The fenced write was acknowledged.
    Acked,
    /// Nothing was written (lock or read failed, or the fence refused the
    /// write because the lease ended under us — exactly as it should).
    NotWritten(Option<ClientError>),
    /// The write may or may not have happened.
    Unknown,
}

/// One increment: lock, read, fenced write of value + 1, release.
async fn increment(client: &Client, session: &driftlock_client::Session) -> Outcome {
    let opts = LockOptions {
        mode: LockMode::Exclusive,
        wait: Duration::from_secs(20),
    };
    let guard = match session.lock_with(LOCK, opts).await {
        Ok(g) => g,
        Err(e) => return Outcome::NotWritten(Some(e)),
    };
    let n = match client.kv_get(COUNTER).await {
        Ok(current) => current.map_or(0, |v| u64::from_le_bytes(v.value.try_into().unwrap_or([0; 8]))),
        Err(e) => return Outcome::NotWritten(Some(e)),
    };
    let written = session
        .kv_put_fenced(COUNTER, (n + 1).to_le_bytes().to_vec(), &guard)
        .await;
    let _ = guard.release().await;
    match written {
        Ok(_) => Outcome::Acked,
        Err(ClientError::Rejected(Rejection::StaleFencingToken { .. } | Rejection::FenceNotHeld { .. })) => {
            Outcome::NotWritten(None)
        }
        Err(ClientError::Rejected(_)) => Outcome::NotWritten(None),
        Err(_) => Outcome::Unknown,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fenced_counter_survives_a_leader_kill() {
    let mut cluster = Cluster::start(3).await;
    let endpoints = cluster.endpoints();
    let acked = Arc::new(AtomicU64::new(0));
    let indeterminate = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(12);

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let endpoints = endpoints.clone();
        let acked = acked.clone();
        let indeterminate = indeterminate.clone();
        tasks.push(tokio::spawn(async move {
            let config = ClientConfig {
                client_name: format!("counter-{c}"),
                ..ClientConfig::new(endpoints)
            };
            let client = Client::connect_with(config).await.expect("connect");
            let mut session = client.open_session(Duration::from_secs(5)).await.expect("session");
            while Instant::now() < stop_at {
                match increment(&client, &session).await {
                    Outcome::Acked => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Outcome::Unknown => {
                        indeterminate.fetch_add(1, Ordering::SeqCst);
                    }
                    Outcome::NotWritten(Some(ClientError::SessionExpired)) => {
                        if let Ok(s) = client.open_session(Duration::from_secs(5)).await {
                            session = s;
                        }
                    }
                    Outcome::NotWritten(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            let _ = session.close().await;
        }));
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

    let client = Client::connect(endpoints).await.expect("connect");
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
