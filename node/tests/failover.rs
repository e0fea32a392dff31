//! A dead leader is told from a paused one (docs/design.md "Raft", fast
//! failover; `node/src/failover.rs`).
//!
//! A SIGKILLed leader's connections end and its Raft port refuses: the
//! followers end their lease on it at once and campaign with pre-vote. A SIGSTOPped leader keeps its
//! connections and its port: nothing of that happens, and the followers
//! elect only after their election timeout, as before. How fast each is
//! lives in the benchmarks (`compare-etcd` failover-sigkill,
//! failover-pause), not here.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use driftlock_proto::{KvWrite, Reply};
use driftlock_testkit::prom;
use driftlock_testkit::TestCluster;

const T: Duration = Duration::from_secs(20);
const SERIES: &str = "driftlock_raft_dead_leader_detections_total";

fn detections(c: &TestCluster, i: usize) -> u64 {
    prom::sample(&prom::scrape(c.metrics_addr(i)), SERIES)
}

/// Waits for a leader other than `old` among the running nodes.
async fn new_leader(c: &TestCluster, old: usize) -> usize {
    let deadline = Instant::now() + T;
    loop {
        let l = c.wait_leader(T).await;
        if l != old {
            return l;
        }
        assert!(Instant::now() < deadline, "node {} kept leading", c.id(old));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_found_dead_by_both_survivors() {
    let mut c = TestCluster::start(3).await;
    let leader = c.wait_leader(T).await;
    // A leader well under way: its replication streams are set up (a
    // follower with no connection from the leader at the kill has nothing
    // to see end).
    let api = driftlock_proto::connect(c.client_addr(leader), T, &c.security())
        .await
        .expect("connect");
    let put = KvWrite::Put {
        key: "before-the-kill".into(),
        value: vec![1],
    };
    let r = api.kv_write(driftlock_proto::context(T), put).await.expect("rpc");
    assert!(matches!(r, Ok(Reply::KvWritten { .. })), "{r:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &survivors {
        assert_eq!(detections(&c, i), 0, "node {} counted a death before any", c.id(i));
    }
    c.kill(leader);
    new_leader(&c, leader).await;
    // Both survivors saw the leader's connections end and its port gone,
    // ended their lease on it and campaigned with pre-vote (which a voter
    // grants only once it has ended its own lease). Without the fast path
    // the count stays 0 and the election waits out the lease.
    for &i in &survivors {
        assert_eq!(
            detections(&c, i),
            1,
            "node {} did not find its leader dead:\n{}",
            c.id(i),
            c.log(i)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_not_taken_for_dead() {
    let mut c = TestCluster::start(3).await;
    let leader = c.wait_leader(T).await;
    c.pause(leader);
    // The followers elect after their election timeout, as they must.
    let next = new_leader(&c, leader).await;
    c.resume(leader);
    // The resumed node hears of the new term and follows.
    let deadline = Instant::now() + T;
    while c
        .status(leader)
        .await
        .is_none_or(|s| s.leader.map(|(id, _)| id) != Some(c.id(next)))
    {
        assert!(
            Instant::now() < deadline,
            "the resumed node does not follow the new leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..3 {
        assert_eq!(
            detections(&c, i),
            0,
            "node {} took a paused leader for dead:\n{}",
            c.id(i),
            c.log(i)
        );
    }
}
