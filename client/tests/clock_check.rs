//! The cluster's check of a client's clock (docs/design.md "Clock drift",
//! "Checking a client's clock") must not mistake delay for skew: a request
//! held up on the way, retried after a timeout, or queued before its grant
//! says nothing about the client's clock, and a healthy client must never
//! see its drift bound widened or a skew event raised.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use driftlock_client::Client;
use driftlock_proto::{DriftlockApiRequest, Event, EventFilter, SessionOp};
use support::{client_config, Node};

fn is_acquire(r: &DriftlockApiRequest) -> bool {
    matches!(
        r,
        DriftlockApiRequest::SessionOp {
            op: SessionOp::Acquire { .. },
            ..
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_acquire_is_not_clock_skew() {
    let node = Node::start().await;
    let client = Client::connect_with(client_config(&node.cluster, vec![node.addr()]))
        .await
        .expect("connect");
    let session = client.open_session(Duration::from_secs(10)).await.expect("open");
    let base_rho_ppm = node.session_view(session.id()).await.expect("session").client_rho_ppm;

    // The first attempts of the acquire never arrive (a partition, a dead
    // leader): the client times out after 1 s and resends the same
    // operation until the way is open again.
    let held_up = node.proxy.block(is_acquire);
    let lock = {
        let session = session.clone();
        tokio::spawn(async move { session.lock("skew").await })
    };
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    node.proxy.unblock(held_up);
    let guard = lock.await.expect("task").expect("lock");
    tokio::time::sleep(Duration::from_millis(300)).await;
    guard.release().await.expect("release");

    // A few renewals, so a check based on them has had its chance too.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(session.is_valid(), "the session was lost");

    let view = node.session_view(session.id()).await.expect("session");
    assert_eq!(
        view.client_rho_ppm, base_rho_ppm,
        "the client's drift bound was widened for a delay"
    );
    let batch = client
        .observe(0, EventFilter::default(), Duration::from_millis(500))
        .await
        .expect("observe");
    let skew: Vec<_> = batch
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::ClockSkewDetected { .. }))
        .collect();
    assert!(skew.is_empty(), "delay was taken for clock skew: {skew:?}");
    session.close().await.expect("close");
}
