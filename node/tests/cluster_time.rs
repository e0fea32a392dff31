//! Cluster time against real time on real processes (docs/design.md "Time",
//! rules 1–3), measured with the testkit's `cluster_time` marks: the
//! leader's applied cluster time against this test's raw monotonic clock.
//!
//! - It never runs ahead of real time when a node that joined late and
//!   caught up by snapshot becomes leader (rule 1's anchor after a snapshot
//!   install).
//! - It does not run much slower than real time under sequential writes
//!   (rule 1's anchor instant is not delayed by the flush).

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_proto::{AdminRequest, ApiError, KvWrite, Reply, RpcError};
use driftlock_testkit::cluster_time::{self, EndMark, MarkError, StartMark};
use driftlock_testkit::TestCluster;

const T: Duration = Duration::from_secs(10);

/// Writes `key` through `api` and expects `KvWritten`.
async fn put(api: &driftlock_proto::DriftlockApiClient, key: String) {
    let reply = api
        .kv_write(driftlock_proto::context(T), KvWrite::Put { key, value: vec![1] })
        .await
        .expect("rpc")
        .expect("write");
    assert!(matches!(reply, Reply::KvWritten { .. }), "{reply:?}");
}

/// Entries the leader keeps in its log behind a snapshot
/// (`StoreConfig::entries_kept_after_snapshot`): a node further behind
/// than this catches up by snapshot.
const KEPT_AFTER_SNAPSHOT: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_caught_up_by_snapshot_and_leads_never_runs_cluster_time_ahead() {
    // A snapshot after every applied entry, so that the one a late node
    // receives covers every stamped entry; no background proposals (idle
    // ticks after the first, health and clock reports after the first) to
    // append a stamped entry after it during the test.
    let quiet = |_| {
        [
            "--snapshot-every-entries",
            "1",
            "--tick-interval-ms",
            "30000",
            "--health-interval-ms",
            "600000",
            "--clock-interval-ms",
            "600000",
        ]
        .map(String::from)
        .to_vec()
    };
    let mut c = TestCluster::start_with(3, quiet).await;
    // The late node's process starts now, long before it learns anything.
    let late = c.add_slot();
    c.spec_mut(late).serve_args.extend(quiet(0));
    c.spawn(late);
    c.wait_up(late).await;

    let leader = c.wait_leader(T).await;
    let leader_addr = c.client_addr(leader).to_string();
    // Enough entries that the log the late node needs is purged: 8
    // writers in parallel until the leader's log is that long. (Counted
    // in entries, not puts: the leader packs concurrent puts into shared
    // entries.)
    let target_index = (KEPT_AFTER_SNAPSHOT + 200) as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let addr = leader_addr.clone();
        let security = c.security();
        let stop = Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let api = driftlock_proto::connect(&addr, T, &security).await.expect("connect");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                put(&api, format!("w{w}/{i}")).await;
                i += 1;
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while c.status(leader).await.is_none_or(|s| s.applied_index < target_index) {
        assert!(
            Instant::now() < deadline,
            "the leader never reached entry {target_index}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let start: StartMark = cluster_time::start_mark(&leader_addr, "mark", T, &c.security())
        .await
        .expect("start mark");
    // Let the leader snapshot the mark's entry too.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let member = c.spec(late).member();
    let late_id = member.id;
    driftlock_proto::admin(&leader_addr, AdminRequest::AddLearner { member }, T, &c.security())
        .await
        .expect("add learner");
    let deadline = Instant::now() + T;
    while c.status(late).await.is_none_or(|s| s.applied_revision < start.revision) {
        assert!(
            Instant::now() < deadline,
            "the late node did not catch up to the mark: {:?}",
            c.status(late).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        c.log(late).contains("install full snapshot"),
        "the late node caught up by snapshot; its log:\n{}",
        c.log(late)
    );
    driftlock_proto::admin(
        &leader_addr,
        AdminRequest::ChangeVoters {
            voters: vec![1, 2, 3, late_id],
        },
        T,
        &c.security(),
    )
    .await
    .expect("promote");
    c.transfer_leader(late, T).await;

    // An entry the late node stamps as leader. A leader just elected takes
    // writes once a quorum has acknowledged it; until then it answers
    // `Unavailable`.
    let late_addr = c.client_addr(late).to_string();
    let deadline = Instant::now() + T;
    let end: EndMark = loop {
        match cluster_time::end_mark_by_write(&late_addr, "stamped-by-the-late-node", T, &c.security()).await {
            Ok(end) => break end,
            Err(MarkError::Rpc(RpcError::Api(ApiError::Unavailable(why)))) if Instant::now() < deadline => {
                eprintln!("the new leader is not writable yet: {why}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("end mark: {e:?}"),
        }
    };
    let ahead_us = cluster_time::ahead_us(&start, &end);
    assert!(
        ahead_us <= 0,
        "cluster time ran {ahead_us} µs ahead of real time: {} µs of cluster time in {} µs of real time \
         ({start:?} → {end:?})",
        cluster_time::cluster_span_us(&start, &end),
        cluster_time::real_span_us(&start, &end)
    );
}

/// The least rate a sequential writer may measure: a behaviour bound, not
/// a speed goal (cluster time is meant to lose only ρ_hi, 500 ppm, and the
/// stamp-to-append time per entry).
const MIN_RATE_UNDER_SEQUENTIAL_WRITES: f64 = 0.9;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_time_keeps_pace_with_real_time_under_sequential_writes() {
    let c = TestCluster::start(3).await;
    let mut leader;
    // Until its peers have measured its clock, a node stamps with the
    // unmeasured bound (10 %, docs/design.md "Time", where ρ_hi comes
    // from), which slows cluster time on purpose. The loss under load is
    // what this test is about: measure once the leader's rate is known.
    let measured_by = Instant::now() + Duration::from_secs(60);
    loop {
        leader = c.wait_leader(T).await;
        let rho = c.status(leader).await.map_or(u64::MAX, |s| s.rho_hi_ppm);
        if rho <= 10_000 {
            break;
        }
        assert!(
            Instant::now() < measured_by,
            "the leader's clock was not measured within 60 s (ρ_hi {rho} ppm)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let addr = c.client_addr(leader).to_string();
    let api = driftlock_proto::connect(&addr, T, &c.security())
        .await
        .expect("connect");
    let start = cluster_time::start_mark(&addr, "mark", T, &c.security())
        .await
        .expect("start mark");
    let until = Instant::now() + Duration::from_secs(3);
    let mut writes = 0u64;
    while Instant::now() < until {
        put(&api, format!("k{}", writes % 16)).await;
        writes += 1;
    }
    let end = cluster_time::end_mark_by_write(&addr, "mark", T, &c.security())
        .await
        .expect("end mark");
    let rate = cluster_time::rate(&start, &end).expect("a real span");
    eprintln!("cluster time advanced at {rate:.4} of real time over {writes} sequential writes");
    assert!(
        cluster_time::ahead_us(&start, &end) <= 0,
        "cluster time ran ahead of real time: {start:?} → {end:?}"
    );
    assert!(
        rate >= MIN_RATE_UNDER_SEQUENTIAL_WRITES,
        "cluster time advanced at {rate:.3} of real time over {writes} sequential writes \
         ({start:?} → {end:?})"
    );
}
