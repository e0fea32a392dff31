//! The launcher and the proxy against real `driftlock serve` processes.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use driftlock_proto::{Consistency, DriftlockApiRequest, KvWrite, Query, QueryResult, Reply, Role};
use driftlock_testkit::{DropMode, LaunchError, TestCluster, TestkitError, Wrapper};

const T: Duration = Duration::from_secs(5);

fn put(key: &str) -> KvWrite {
    KvWrite::Put {
        key: key.into(),
        value: b"v".to_vec(),
    }
}

async fn read_key(c: &TestCluster, addr: &str, key: &str) -> Option<Vec<u8>> {
    let api = driftlock_proto::connect(addr, T, &c.security()).await.unwrap();
    let reply = api
        .read(
            driftlock_proto::context(T),
            Query::KvGet { key: key.into() },
            Consistency::Linearizable,
        )
        .await
        .unwrap()
        .unwrap();
    match reply.result {
        QueryResult::Kv(v) => v.map(|v| v.value),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarts_on_its_data_and_sigterm_exits_cleanly() {
    let mut c = TestCluster::start(1).await;
    assert_eq!(c.status(0).await.map(|s| s.role), Some(Role::Leader));
    let api = driftlock_proto::connect(c.client_addr(0), T, &c.security())
        .await
        .unwrap();
    let r = api.kv_write(driftlock_proto::context(T), put("kept")).await.unwrap();
    assert!(matches!(r, Ok(Reply::KvWritten { .. })), "{r:?}");

    let status = c.terminate(0).await.expect("it ran");
    assert!(status.success(), "SIGTERM exit: {status:?}; log:\n{}", c.log(0));
    assert!(c.status(0).await.is_none());

    // A restart finds its membership: no second Init.
    let up = c.try_bring_up().await.unwrap();
    assert!(!up.initialized);
    assert_eq!(read_key(&c, c.client_addr(0), "kept").await, Some(b"v".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_start_is_reported_with_its_log() {
    let mut c = TestCluster::new(1).unwrap();
    c.spec_mut(0).serve_args.push("--no-such-flag".into());
    match c.try_bring_up().await {
        Err(TestkitError::Launch(LaunchError::Exited { id, status, tail, .. })) => {
            assert_eq!(id, 1);
            assert!(!status.success());
            assert!(tail.contains("--no-such-flag"), "{tail}");
        }
        Err(e) => panic!("expected Exited, got {e}"),
        Ok(up) => panic!("started anyway: {up:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapper_prefix_runs_the_node() {
    // `env` as the wrapper: it execs the node with one more variable.
    let c = TestCluster::start_wrapped(1, |_| Vec::new(), |_| Wrapper::command(["env", "DRIFTLOCK_WRAPPED=1"])).await;
    let pid = c.launcher().nodes[0].pid().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ.split(|b| *b == 0).any(|v| v == b"DRIFTLOCK_WRAPPED=1"),
        "the node did not run under the wrapper"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_counts_blocks_pauses_drops_and_stops() {
    let c = TestCluster::start(1).await;
    let proxy = c.proxy(0).await;
    let short = || driftlock_proto::context(Duration::from_millis(500));
    let api = driftlock_proto::connect(&proxy.addr(), T, &c.security()).await.unwrap();

    // Requests pass and are counted by method.
    let r = api.kv_write(driftlock_proto::context(T), put("a")).await.unwrap();
    assert!(matches!(r, Ok(Reply::KvWritten { .. })), "{r:?}");
    assert_eq!(proxy.count_method("kv_write"), 1);
    assert_eq!(proxy.count_method("status"), 0);

    // A dropped reply: the node acted, the caller heard nothing.
    proxy.drop_reply_of(
        |r| matches!(r, DriftlockApiRequest::KvWrite { write: KvWrite::Put { key, .. } } if key == "b"),
        DropMode::Hang,
    );
    assert!(api.kv_write(short(), put("b")).await.is_err(), "the reply came through");
    assert_eq!(read_key(&c, c.client_addr(0), "b").await, Some(b"v".to_vec()));
    // One-shot: the next one is answered, on the same connection.
    assert!(api.kv_write(short(), put("b")).await.unwrap().is_ok());

    // Blocked requests never reach the node.
    let rule =
        proxy.block(|r| matches!(r, DriftlockApiRequest::KvWrite { write: KvWrite::Put { key, .. } } if key == "c"));
    assert!(api.kv_write(short(), put("c")).await.is_err());
    assert_eq!(read_key(&c, c.client_addr(0), "c").await, None);
    assert!(api.status(short()).await.is_ok(), "other requests still pass");
    proxy.unblock(rule);
    assert!(api.kv_write(short(), put("c")).await.unwrap().is_ok());

    // Paused: everything hangs, and flows again on resume.
    proxy.pause();
    assert!(api.status(short()).await.is_err());
    proxy.resume();
    assert!(api.status(driftlock_proto::context(T)).await.is_ok());

    // Delayed: a request arrives, later.
    proxy.set_delay(Duration::from_millis(700));
    assert!(api.status(short()).await.is_err(), "a 700 ms delay fit in 500 ms");
    proxy.set_delay(Duration::ZERO);

    // A disconnecting drop closes the connection.
    proxy.drop_reply_of(|r| matches!(r, DriftlockApiRequest::Status {}), DropMode::Disconnect);
    assert!(api.status(driftlock_proto::context(T)).await.is_err());
    assert!(
        api.status(driftlock_proto::context(T)).await.is_err(),
        "the connection survived"
    );

    // Stopped: no connection gets through until it serves again.
    proxy.stop();
    let refused = driftlock_proto::status(&proxy.addr(), Duration::from_millis(500), &c.security()).await;
    assert!(refused.is_err(), "{refused:?}");
    proxy.set_refusing(false);
    let s = driftlock_proto::status(&proxy.addr(), T, &c.security()).await.unwrap();
    assert_eq!(s.id, 1);
    assert_eq!(proxy.count(|r| matches!(r, DriftlockApiRequest::KvWrite { .. })), 5);
}
