//! What a node that restarts still owes its clients: a leader killed right
//! after acknowledging a write never answers a linearizable read without
//! it, and an observer behind the snapshot a restarted node restored from
//! is told it missed events.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use driftlock_proto::{Consistency, EventFilter, KvWrite, Query, QueryResult, Reply};
use driftlock_testkit::TestCluster;

const T: Duration = Duration::from_secs(10);

/// A short deadline for reads racing a restart: an attempt that does not
/// answer at once is retried.
const ATTEMPT: Duration = Duration::from_millis(500);

/// Kill-and-restart rounds: in each, the killed leader usually comes back
/// before the others elect a new one.
const ROUNDS: u8 = 30;

/// Reads `key` linearizably from node `i`; `None` if the node does not
/// answer with data (down, not the leader, not ready).
async fn read_key(c: &TestCluster, i: usize, key: &str) -> Option<(QueryResult, u64)> {
    let api = driftlock_proto::connect(c.client_addr(i), ATTEMPT, &c.security())
        .await
        .ok()?;
    let reply = api
        .read(
            driftlock_proto::context(ATTEMPT),
            Query::KvGet { key: key.into() },
            Consistency::Linearizable,
        )
        .await
        .ok()?
        .ok()?;
    Some((reply.result, reply.revision))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_acknowledged_right_before_the_leader_is_killed_is_read_after_its_restart() {
    let mut c = TestCluster::start(3).await;
    let mut answered_by_restarted = 0;
    for round in 1..=ROUNDS {
        let leader = c.wait_leader(T).await;
        let api = driftlock_proto::connect(c.client_addr(leader), T, &c.security())
            .await
            .expect("connect");
        let put = KvWrite::Put {
            key: "acked".into(),
            value: vec![round],
        };
        let reply = api
            .kv_write(driftlock_proto::context(T), put)
            .await
            .expect("rpc")
            .expect("write");
        let Reply::KvWritten { revision } = reply else {
            panic!("{reply:?}")
        };
        c.kill(leader);
        c.spawn(leader);

        // The first linearizable answer, from the restarted node if it
        // answers, else from whichever node leads.
        let order: Vec<usize> = std::iter::once(leader)
            .chain((0..c.len()).filter(|&i| i != leader))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (from, (result, applied_revision)) = 'found: loop {
            for &i in &order {
                if let Some(answer) = read_key(&c, i, "acked").await {
                    break 'found (i, answer);
                }
            }
            assert!(Instant::now() < deadline, "round {round}: no node answered a read");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        answered_by_restarted += usize::from(from == leader);
        let value = match &result {
            QueryResult::Kv(Some(kv)) => Some(kv.value.clone()),
            _ => None,
        };
        assert_eq!(
            value,
            Some(vec![round]),
            "round {round}: node {} answered a linearizable read at revision {applied_revision} without \
             the write acknowledged at revision {revision} before the leader (node {}) was killed",
            c.id(from),
            c.id(leader)
        );
    }
    eprintln!("{answered_by_restarted} of {ROUNDS} reads answered by the restarted node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_on_a_restarted_node_reports_the_events_behind_its_restored_snapshot_as_missed() {
    let mut c = TestCluster::start_with(3, |_| ["--snapshot-every-entries", "10"].map(String::from).to_vec()).await;
    let leader = c.wait_leader(T).await;
    let api = driftlock_proto::connect(c.client_addr(leader), T, &c.security())
        .await
        .expect("connect");
    let mut last = 0;
    for i in 0..40 {
        let put = KvWrite::Put {
            key: format!("ev/{i}"),
            value: vec![],
        };
        if let Reply::KvWritten { revision } = api
            .kv_write(driftlock_proto::context(T), put)
            .await
            .expect("rpc")
            .expect("write")
        {
            last = revision;
        }
    }
    let follower = (leader + 1) % c.len();
    let deadline = Instant::now() + T;
    while c.status(follower).await.is_none_or(|s| s.applied_index < last) {
        assert!(Instant::now() < deadline, "the follower did not apply the writes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let it build its snapshot of them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.terminate(follower).await;
    c.spawn(follower);
    c.wait_up(follower).await;

    // An observer that had seen nothing: most of the 40 changes are inside
    // the snapshot the node restored from, and their events are gone.
    let follower_api = driftlock_proto::connect(c.client_addr(follower), T, &c.security())
        .await
        .expect("connect");
    let batch = follower_api
        .observe(driftlock_proto::context(T), 0, EventFilter::default(), 2_000)
        .await
        .expect("rpc")
        .expect("observe");
    assert!(
        batch.truncated,
        "events before the restored snapshot were lost, but the batch says nothing was missed: {} events, next \
         after {}",
        batch.events.len(),
        batch.next_after_index
    );
}
