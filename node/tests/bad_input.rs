//! Bad input gets a typed error, changes nothing, and never stops a node.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Duration;

use driftlock_proto::{ApiError, Consistency, KvWrite, Query, QueryResult};

use driftlock_proto::{LockMode, Rejection, Reply, SessionOp, SessionSecret};
use driftlock_testkit::TestCluster;

const T: Duration = Duration::from_secs(5);

/// The secret of the test's sessions (by number).
fn secret(n: u8) -> SessionSecret {
    SessionSecret([n; 32])
}

async fn leader_client(c: &TestCluster) -> driftlock_proto::DriftlockApiClient {
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    driftlock_proto::connect(c.client_addr(leader), T, &c.security())
        .await
        .expect("connect")
}

fn acquire(name: &str) -> SessionOp {
    SessionOp::Acquire {
        name: name.into(),
        mode: LockMode::Exclusive,
        wait_us: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_for_bad_requests_and_garbage_is_survived() {
    let c = TestCluster::start(3).await;
    let api = leader_client(&c).await;
    let ctx = || driftlock_proto::context(T);

    let session = match api
        .open_session(ctx(), 1, "test".into(), 10_000_000, secret(1))
        .await
        .expect("rpc")
    {
        Ok(Reply::SessionOpened { session, .. }) => session,
        other => panic!("open: {other:?}"),
    };
    let other = match api
        .open_session(ctx(), 2, "other".into(), 10_000_000, secret(2))
        .await
        .expect("rpc")
    {
        Ok(Reply::SessionOpened { session, .. }) => session,
        other => panic!("open: {other:?}"),
    };

    // Oversized lock name.
    let long = "n".repeat(10_000);
    let r = api
        .session_op(ctx(), session, secret(1), 1, acquire(&long))
        .await
        .expect("rpc");
    assert!(
        matches!(r, Err(ApiError::Rejected(Rejection::NameTooLong { len: 10_000, .. }))),
        "{r:?}"
    );

    // Unknown session.
    let r = api
        .session_op(ctx(), 999_999, secret(1), 1, acquire("x"))
        .await
        .expect("rpc");
    assert_eq!(
        r,
        Err(ApiError::Rejected(Rejection::UnknownSession { session: 999_999 }))
    );

    // Release by a non-holder.
    assert!(matches!(
        api.session_op(ctx(), session, secret(1), 2, acquire("x"))
            .await
            .expect("rpc"),
        Ok(Reply::Granted { .. })
    ));
    let r = api
        .session_op(ctx(), other, secret(2), 1, SessionOp::Release { name: "x".into() })
        .await
        .expect("rpc");
    assert_eq!(r, Err(ApiError::Rejected(Rejection::NotHolder)));

    // Sequence 0 is refused before it reaches the log.
    let r = api
        .session_op(ctx(), session, secret(1), 0, acquire("y"))
        .await
        .expect("rpc");
    assert!(matches!(r, Err(ApiError::InvalidRequest(_))), "{r:?}");

    // Garbage on the client and Raft ports of every node: the connection is
    // closed, the node keeps serving.
    for i in 0..c.len() {
        for addr in [c.client_addr(i), c.raft_addr(i)] {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_write_timeout(Some(T)).expect("timeout");
            let mut junk = vec![0u8; 4096];
            for (i, b) in junk.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(167).wrapping_add(13);
            }
            // A frame header announcing far more than the frame limit, then noise.
            let _ = s.write_all(&[0xff, 0xff, 0xff, 0x7f]);
            let _ = s.write_all(&junk);
            let _ = s.flush();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Everything still works, and the lock is still held by `session` only.
    let api = leader_client(&c).await;
    let r = api
        .kv_write(
            ctx(),
            KvWrite::Put {
                key: "k".into(),
                value: b"v".to_vec(),
            },
        )
        .await
        .expect("rpc");
    assert!(matches!(r, Ok(Reply::KvWritten { .. })), "{r:?}");
    let lock = api
        .read(ctx(), Query::Lock { name: "x".into() }, Consistency::Linearizable)
        .await
        .expect("rpc");
    match lock {
        Ok(reply) => match reply.result {
            QueryResult::Lock(Some(view)) => {
                assert_eq!(
                    view.holders.iter().map(|h| h.session).collect::<Vec<_>>(),
                    vec![session]
                );
            }
            other => panic!("lock view: {other:?}"),
        },
        Err(e) => panic!("read: {e}"),
    }
    for i in 0..c.len() {
        assert!(c.status(i).await.is_some(), "node {} stopped serving", i + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_point_to_the_leader() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    let api = driftlock_proto::connect(c.client_addr(follower), T, &c.security())
        .await
        .expect("connect");
    let r = api
        .kv_write(
            driftlock_proto::context(T),
            KvWrite::Put {
                key: "k".into(),
                value: vec![],
            },
        )
        .await
        .expect("rpc");
    match r {
        Err(ApiError::NotLeader {
            leader_hint: Some((id, addr)),
        }) => {
            assert_eq!(id, c.id(leader));
            assert_eq!(addr, c.client_addr(leader));
        }
        other => panic!("expected NotLeader with a hint, got {other:?}"),
    }
}

#[test]
fn unknown_config_key_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, "id = 1\nelection_timeout = 5\n").expect("write");
    let out = std::process::Command::new(driftlock_testkit::driftlock_exe().expect("driftlock binary"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("election_timeout"), "stderr: {stderr}");
}

#[test]
fn corrupt_store_refuses_to_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node1");
    {
        // Create a store with a log entry, then flip one byte in a value.
        let store = driftlock_raft_store::open(&data).expect("open");
        drop(store);
        let db = sled::open(&data).expect("sled");
        let tree = db.open_tree("meta").expect("tree");
        tree.insert(b"probe", vec![1, 0, 0, 0, 0, 0, 0, 0, 9]).expect("insert");
        db.flush().expect("flush");
    }
    let out = std::process::Command::new(driftlock_testkit::driftlock_exe().expect("driftlock binary"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--client-addr", &driftlock_testkit::free_addr()])
        .args(["--raft-addr", &driftlock_testkit::free_addr()])
        .arg("--insecure")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("meta") && stderr.contains("probe"), "stderr: {stderr}");
}

/// `serve` without certificates and without `--insecure` refuses to
/// start, says what to give, and creates no store.
#[test]
fn serve_without_certificates_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node1");
    let out = std::process::Command::new(driftlock_testkit::driftlock_exe().expect("driftlock binary"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--client-addr", &driftlock_testkit::free_addr()])
        .args(["--raft-addr", &driftlock_testkit::free_addr()])
        .env_remove("DRIFTLOCK_CONFIG")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no certificates") && stderr.contains("--tls-cert") && stderr.contains("--insecure"),
        "stderr: {stderr}"
    );
    assert!(!data.exists(), "a refused start created {}", data.display());
}

/// Replies are bounded by bytes, not only by count: many large values
/// (each within the limits) that together exceed one frame still reach an
/// observer and a range reader, in several replies, none over the frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_that_exceed_a_frame_together_are_read_in_bounded_batches() {
    let c = TestCluster::start(1).await;
    let api = leader_client(&c).await;
    let ctx = || driftlock_proto::context(Duration::from_secs(20));
    // 200 values of 60 KiB: 12 MiB in all, above the 8 MiB frame.
    const VALUES: usize = 200;
    let value = vec![b'v'; 60 * 1024];
    let before = api.status(ctx()).await.expect("status").applied_revision;
    for i in 0..VALUES {
        let put = KvWrite::Put {
            key: format!("big/{i:04}"),
            value: value.clone(),
        };
        api.kv_write(ctx(), put).await.expect("rpc").expect("put");
    }

    // A master's value travels in its `MasterChanged` event: 200 elections
    // won with 60 KiB values are 12 MiB of events.
    let session = match api
        .open_session(ctx(), 7, "big".into(), 30_000_000, secret(7))
        .await
        .expect("rpc")
    {
        Ok(Reply::SessionOpened { session, .. }) => session,
        other => panic!("open: {other:?}"),
    };
    for i in 0..VALUES {
        let campaign = SessionOp::Campaign {
            election: format!("big/{i:04}"),
            value: value.clone(),
        };
        let r = api
            .session_op(ctx(), session, secret(7), i as u64 + 1, campaign)
            .await
            .expect("rpc");
        assert!(matches!(r, Ok(Reply::Elected { .. })), "campaign: {r:?}");
    }

    // Every change arrives, in batches that each fit in a frame.
    let filter = driftlock_proto::EventFilter::default();
    let mut after = before;
    let mut seen = 0;
    let mut batches = 0;
    while seen < VALUES {
        let batch = api
            .observe(ctx(), after, filter.clone(), 0)
            .await
            .expect("an observe reply larger than a frame breaks the connection")
            .expect("observe");
        assert!(!batch.truncated, "nothing was dropped from the buffer");
        seen += batch
            .events
            .iter()
            .filter(
                |(_, e)| matches!(e, driftlock_proto::Event::MasterChanged { value, .. } if value.len() == 60 * 1024),
            )
            .count();
        assert!(batch.next_after_index > after, "observe made no progress");
        after = batch.next_after_index;
        batches += 1;
        assert!(batches <= VALUES, "observe did not converge");
    }
    assert_eq!(seen, VALUES);

    // A range read pages through the same keys.
    let mut keys = Vec::new();
    let mut start_after = None;
    loop {
        let query = Query::KvRange {
            prefix: "big/".into(),
            start_after: start_after.clone(),
            limit: 10_000,
        };
        let reply = api
            .read(ctx(), query, Consistency::Linearizable)
            .await
            .expect("a range reply larger than a frame breaks the connection")
            .expect("read");
        let QueryResult::KvRange { entries, more } = reply.result else {
            panic!("unexpected {:?}", reply.result);
        };
        assert!(!entries.is_empty(), "a page is never empty while more remain");
        start_after = entries.last().map(|(k, _)| k.clone());
        keys.extend(entries.into_iter().map(|(k, v)| {
            assert_eq!(v.value.len(), 60 * 1024);
            k
        }));
        if !more {
            break;
        }
    }
    let expected: Vec<String> = (0..VALUES).map(|i| format!("big/{i:04}")).collect();
    assert_eq!(keys, expected);
}
