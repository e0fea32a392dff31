//! Input is bounded before it costs anything: a request over the limits is
//! refused before it reaches the log.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use driftlock_proto::{ApiError, KvWrite, LockMode, Rejection, Reply, SessionOp, SessionSecret};
use driftlock_testkit::TestCluster;

const T: Duration = Duration::from_secs(10);

/// Refused writes per round: the index would move by this much if they
/// reached the log.
const REFUSED_PER_ROUND: u64 = 10;

/// A 120 KB `kv put` (the default value limit is 64 KiB), a 10 000-byte
/// lock name and an over-long client name are refused with the state
/// machine's rejection, and the leader's log does not grow. Background
/// entries (health and clock commits) may move the index now and then, so
/// the test runs rounds of refused requests: in every round the index moves
/// by less than the refused requests would have moved it, and in at least
/// one it does not move at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_limits_never_reach_the_log() {
    let c = TestCluster::start(1).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let api = driftlock_proto::connect(c.client_addr(leader), T, &c.security())
        .await
        .expect("connect");
    let ctx = || driftlock_proto::context(T);
    let session = match api
        .open_session(ctx(), 1, "bounds".into(), 10_000_000, SessionSecret([7; 32]))
        .await
        .expect("rpc")
    {
        Ok(Reply::SessionOpened { session, .. }) => session,
        other => panic!("open: {other:?}"),
    };
    let last_index = || async { c.status(leader).await.expect("status").last_log_index };

    let mut unmoved_rounds = 0;
    for round in 0..3 {
        let before = last_index().await;
        for i in 0..REFUSED_PER_ROUND {
            let r = match i % 3 {
                0 => api
                    .kv_write(
                        ctx(),
                        KvWrite::Put {
                            key: "big".into(),
                            value: vec![7; 120_000],
                        },
                    )
                    .await
                    .expect("rpc"),
                1 => api
                    .session_op(
                        ctx(),
                        session,
                        SessionSecret([7; 32]),
                        100 + round * REFUSED_PER_ROUND + i,
                        SessionOp::Acquire {
                            name: "n".repeat(10_000),
                            mode: LockMode::Exclusive,
                            wait_us: 0,
                        },
                    )
                    .await
                    .expect("rpc"),
                _ => api
                    .open_session(
                        ctx(),
                        1000 + u128::from(i),
                        "c".repeat(1000),
                        10_000_000,
                        SessionSecret([8; 32]),
                    )
                    .await
                    .expect("rpc"),
            };
            assert!(
                matches!(
                    r,
                    Err(ApiError::Rejected(
                        Rejection::ValueTooLarge { len: 120_000, .. }
                            | Rejection::NameTooLong { len: 10_000 | 1000, .. }
                    ))
                ),
                "{r:?}"
            );
        }
        let after = last_index().await;
        assert!(
            after - before < REFUSED_PER_ROUND,
            "round {round}: the log grew from {before} to {after}"
        );
        if after == before {
            unmoved_rounds += 1;
        }
    }
    assert!(unmoved_rounds > 0, "the log moved in every round");

    // A request within the limits still goes through the log.
    let before = last_index().await;
    let r = api
        .kv_write(
            ctx(),
            KvWrite::Put {
                key: "small".into(),
                value: vec![7; 1000],
            },
        )
        .await
        .expect("rpc");
    assert!(matches!(r, Ok(Reply::KvWritten { .. })), "{r:?}");
    assert!(last_index().await > before);
}
