//! A follower that catches up by snapshot receives it in bounded chunks
//! (`limits::SNAPSHOT_CHUNK_BYTES`), so a state larger than one Raft frame
//! still reaches it, and it ends with every key.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use driftlock_proto::limits::SNAPSHOT_CHUNK_BYTES;
use driftlock_proto::AdminRequest;
use driftlock_testkit::TestCluster;

const T: Duration = Duration::from_secs(20);

/// Values at the default value limit (64 KiB), enough of them (16 MiB)
/// that the one snapshot taken while they are written (at entry
/// `SNAPSHOT_EVERY`, about 12 MiB of values) spans at least three chunks.
const VALUE_BYTES: usize = 64 << 10;
const KEYS: usize = 4 * SNAPSHOT_CHUNK_BYTES / VALUE_BYTES;
const SNAPSHOT_EVERY: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_larger_than_a_chunk_reaches_a_new_node_in_chunks() {
    // Snapshots often and a short log behind them, so a node added later
    // catches up by snapshot, not by appends.
    let every = SNAPSHOT_EVERY.to_string();
    let args = move |_| {
        vec![
            "--snapshot-every-entries".to_owned(),
            every.clone(),
            "--log-kept-after-snapshot".to_owned(),
            "5".to_owned(),
        ]
    };
    let mut c = TestCluster::start_with(3, args.clone()).await;
    c.wait_leader(T).await;
    // The client library follows the leader if it moves under the load.
    let config = driftlock_client::ClientConfig {
        request_timeout_ms: 10_000,
        ..c.client_config(c.endpoints())
    };
    let client = driftlock_client::Client::connect_with(config).await.expect("connect");
    for i in 0..KEYS {
        // Writing the same value again is harmless, so a write whose
        // outcome is unknown (a slow snapshot on a loaded machine can hold
        // the leader past the request deadline) is simply repeated.
        let key = format!("k{i:04}");
        let mut attempts = 0;
        while let Err(e) = client.kv_put(&key, vec![(i % 251) as u8; VALUE_BYTES]).await {
            attempts += 1;
            assert!(attempts < 5, "put {key}: {e}");
        }
    }
    // Let the leader snapshot the last writes too.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let late = c.add_slot();
    c.spec_mut(late).serve_args.extend(args(0));
    c.spawn(late);
    c.wait_up(late).await;
    let member = c.spec(late).member();
    client
        .admin(AdminRequest::AddLearner { member })
        .await
        .expect("add learner");
    let deadline = Instant::now() + T;
    while c.status(late).await.is_none_or(|s| s.stats.keys < KEYS as u64) {
        assert!(
            Instant::now() < deadline,
            "the new node did not catch up: {:?}\nits log:\n{}\nthe cluster's snapshot lines:\n{}",
            c.status(late).await,
            c.log(late),
            (0..3)
                .flat_map(|i| c
                    .log(i)
                    .lines()
                    .filter(|l| l.contains("snapshot"))
                    .map(String::from)
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = c.log(late);
    let chunks = log
        .lines()
        .filter_map(|l| l.split("snapshot received in ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u32>().ok())
        .max();
    assert!(
        chunks.is_some_and(|n| n >= 3),
        "the snapshot came in at least 3 chunks ({chunks:?}); the new node's log:\n{log}"
    );
    // What it installed is the state: a value read back from it.
    let on_late = driftlock_proto::connect(c.client_addr(late), T, &c.security())
        .await
        .expect("connect to the new node");
    let query = driftlock_proto::Query::KvGet { key: "k0007".into() };
    let got = on_late
        .read(
            driftlock_proto::context(T),
            query,
            driftlock_proto::Consistency::Serializable,
        )
        .await
        .expect("rpc");
    match got.map(|r| r.result) {
        Ok(driftlock_proto::QueryResult::Kv(Some(kv))) => assert_eq!(kv.value, vec![7; VALUE_BYTES]),
        other => panic!("k0007 on the new node: {other:?}"),
    }
}
