//! The client library against real nodes: one `driftlock serve` process
//! (three where Raft roles matter), reached through a fault-injecting
//! proxy. Faults are real: stalled or cut connections, dropped replies,
//! a follower's `NotLeader`, a revocation the leader decides itself. What
//! the cluster holds is read from the node (linearizable reads); what the
//! client sent is what the proxy saw.
//!
//! Timing: bounds are generous and assertions are about order and cause
//! (who got the lock first, which token is larger, that local expiry came
//! before the server's deadline), not about speed.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use driftlock_client::{Client, ClientConfig, ClientError, LockMode, LockOptions, Rejection, SessionState};
use driftlock_proto::{AdminRequest, Consistency, DriftlockApiRequest, KvWrite, Query, QueryResult, SessionOp};
use support::{
    client_config, eventually_async, quick_suspicion_args, rpc_count, DropMode, FaultProxy, Node, ProxyTls, TestCluster,
};

const LONG: Duration = Duration::from_secs(20);

async fn connect(node: &Node) -> Client {
    Client::connect_with(client_config(&node.cluster, vec![node.addr()]))
        .await
        .expect("connect")
}

/// A session operation matching `op`.
fn is_session_op(r: &DriftlockApiRequest, op: impl Fn(&SessionOp) -> bool) -> bool {
    matches!(r, DriftlockApiRequest::SessionOp { op: o, .. } if op(o))
}

fn is_acquire(r: &DriftlockApiRequest) -> bool {
    is_session_op(r, |o| matches!(o, SessionOp::Acquire { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_keep_a_short_session_alive() {
    let node = Node::start().await;
    let client = connect(&node).await;
    let session = client.open_session(Duration::from_secs(2)).await.expect("open");
    let first_expiry = session.valid_until();
    assert!(first_expiry > Instant::now());
    assert!(first_expiry < Instant::now() + Duration::from_secs(2));

    tokio::time::sleep(Duration::from_secs(5)).await;

    assert_ne!(session.state(), SessionState::Expired);
    assert!(session.is_valid());
    assert!(
        node.session_view(session.id()).await.is_some(),
        "the cluster lost the session"
    );
    assert!(
        session.valid_until() > first_expiry + Duration::from_secs(2),
        "local validity did not move forward"
    );
    let keepalives = node
        .proxy
        .count(|r| is_session_op(r, |o| matches!(o, SessionOp::Keepalive { .. })));
    assert!(keepalives >= 3, "only {keepalives} keepalives in 5 s for a 2 s session");
    assert!(
        tokio::time::timeout(Duration::ZERO, session.lost()).await.is_err(),
        "lost() resolved on a live session"
    );
    session.close().await.expect("close");
    assert_eq!(session.state(), SessionState::Expired);
    assert!(node.session_view(session.id()).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_lock_goes_to_the_waiter_with_a_larger_token() {
    let node = Node::start().await;
    let client = connect(&node).await;
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open s1");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open s2");

    let g1 = s1.lock("orders").await.expect("s1 locks");
    assert!(g1.is_valid());
    assert_eq!(g1.name(), "orders");
    let t1 = g1.fencing_token();

    let s2c = s2.clone();
    let waiter = tokio::spawn(async move {
        s2c.lock_with(
            "orders",
            LockOptions {
                mode: LockMode::Exclusive,
                wait: LONG,
            },
        )
        .await
    });
    assert!(node.wait_until_queued("orders", s2.id(), LONG).await, "s2 never queued");
    assert!(!waiter.is_finished(), "s2 got the lock while s1 held it");

    g1.release().await.expect("release");
    let g2 = tokio::time::timeout(LONG, waiter)
        .await
        .expect("s2 got no answer")
        .expect("task")
        .expect("s2 locks");
    assert!(g2.fencing_token() > t1, "token {} not above {t1}", g2.fencing_token());
    assert_eq!(g2.session_id(), s2.id());
    let view = node.lock_view("orders").await.expect("held");
    assert_eq!(view.holders.len(), 1);
    assert_eq!(view.holders[0].session, s2.id());
    assert_eq!(view.holders[0].token, g2.fencing_token());
    g2.release().await.expect("release g2");
}

/// Hands a lock from one session to a waiting one and returns the waiter's
/// guard token (panics if the handover does not complete within `LONG`).
async fn handover(node: &Node, client: &Client, name: &str) -> u64 {
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let g1 = s1.lock(name).await.expect("lock");
    let s2c = s2.clone();
    let owned = name.to_owned();
    let waiter = tokio::spawn(async move { s2c.lock(&owned).await });
    assert!(node.wait_until_queued(name, s2.id(), LONG).await);
    g1.release().await.expect("release");
    let g2 = tokio::time::timeout(LONG, waiter)
        .await
        .expect("the waiter never learned of its grant")
        .expect("task")
        .expect("lock");
    g2.fencing_token()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_reach_waiters_by_event_by_gap_recovery_and_by_polling() {
    // Events alone: the backup poll is slower than the test's patience.
    let node = Node::start().await;
    let no_poll = ClientConfig {
        poll_interval_ms: 600_000,
        ..client_config(&node.cluster, vec![node.addr()])
    };
    let client = Client::connect_with(no_poll.clone()).await.expect("connect");
    handover(&node, &client, "by-event").await;

    // A gap in the event buffer: the node keeps one event, so the grant's
    // event is pushed out before the waiter's next long-poll, whose
    // truncated batch makes it re-read.
    let node = Node::start_with(["--event-buffer-len", "1"].map(String::from).to_vec()).await;
    let client = Client::connect_with(ClientConfig {
        poll_interval_ms: no_poll.poll_interval_ms,
        ..client_config(&node.cluster, vec![node.addr()])
    })
    .await
    .expect("connect");
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let g1 = s1.lock("by-gap").await.expect("lock");
    let s2c = s2.clone();
    let waiter = tokio::spawn(async move { s2c.lock("by-gap").await });
    assert!(node.wait_until_queued("by-gap", s2.id(), LONG).await);
    let no_events = node.proxy.block(|r| matches!(r, DriftlockApiRequest::Observe { .. }));
    // Let the long-polls in flight run out (observe_wait_ms = 1 s).
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    g1.release().await.expect("release");
    client.kv_put("noise", b"x".to_vec()).await.expect("put");
    node.proxy.unblock(no_events);
    let g2 = tokio::time::timeout(LONG, waiter)
        .await
        .expect("the gap did not make the waiter re-read")
        .expect("task")
        .expect("lock");
    assert_eq!(
        node.lock_view("by-gap").await.map(|v| v.holders[0].token),
        Some(g2.fencing_token())
    );

    // No events at all: the poll finds the grant.
    let node = Node::start().await;
    node.proxy.block(|r| matches!(r, DriftlockApiRequest::Observe { .. }));
    let client = connect(&node).await;
    handover(&node, &client, "by-poll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_on_a_held_lock_returns_none() {
    let node = Node::start().await;
    let client = connect(&node).await;
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");

    let g = s1.try_lock("cron").await.expect("try").expect("free lock taken");
    assert!(s2.try_lock("cron").await.expect("try").is_none());
    // The same session asking again is told it holds it already.
    assert!(matches!(
        s1.try_lock("cron").await,
        Err(ClientError::Rejected(Rejection::AlreadyHeld))
    ));
    g.release().await.expect("release");
    assert!(s2.try_lock("cron").await.expect("try").is_some());

    // Shared holders coexist; an exclusive try fails while they hold.
    let r1 = s1
        .try_lock_with("catalog", LockMode::Shared)
        .await
        .expect("try")
        .expect("shared 1");
    let r2 = s2
        .try_lock_with("catalog", LockMode::Shared)
        .await
        .expect("try")
        .expect("shared 2");
    let s3 = client.open_session(Duration::from_secs(3)).await.expect("open");
    assert!(s3.try_lock("catalog").await.expect("try").is_none());
    r1.release().await.expect("release");
    r2.release().await.expect("release");
    assert!(s3.try_lock("catalog").await.expect("try").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_guards_token_no_longer_fences() {
    let node = Node::start().await;
    let client = connect(&node).await;
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");

    let g1 = s1.lock("ledger").await.expect("lock");
    let stale = g1.fence();
    let rev = s1
        .kv_put_fenced("balance", b"1".to_vec(), &g1)
        .await
        .expect("fenced put");
    assert!(rev > 0);
    g1.release().await.expect("release");

    // Released: the token is not held by anyone.
    assert!(matches!(
        s1.kv_put_fenced("balance", b"2".to_vec(), stale.clone()).await,
        Err(ClientError::Rejected(Rejection::FenceNotHeld { .. }))
    ));
    // Granted again: the old token is stale.
    let g2 = s2.lock("ledger").await.expect("lock");
    assert!(matches!(
        s1.kv_put_fenced("balance", b"3".to_vec(), stale).await,
        Err(ClientError::Rejected(Rejection::StaleFencingToken { .. }))
    ));
    let rev2 = s2
        .kv_cas_fenced("balance", rev, b"4".to_vec(), &g2)
        .await
        .expect("fenced cas");
    assert!(rev2 > rev);
    let v = client.kv_get("balance").await.expect("get").expect("present");
    assert_eq!(v.value, b"4");
    s2.kv_delete_fenced("balance", &g2).await.expect("fenced delete");
    assert!(client.kv_get("balance").await.expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_guard_releases_the_lock() {
    let node = Node::start().await;
    let client = connect(&node).await;
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");

    let g = s1.lock("tmp").await.expect("lock");
    drop(g);
    assert!(
        eventually_async(LONG, || async { node.lock_view("tmp").await.is_none() }).await,
        "the dropped guard's lock stayed held"
    );
    assert!(s2.try_lock("tmp").await.expect("try").is_some());
    // An explicit release, not an expiry: no lock-delay.
    assert_ne!(s1.state(), SessionState::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_hints_are_followed() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader(LONG).await;
    let leader_addr = cluster.client_addr(leader).to_owned();
    let opens_at_leader = rpc_count(cluster.metrics_addr(leader), "open_session");
    // Only a follower is configured, behind a proxy that counts.
    let follower = cluster.proxy((leader + 1) % 3).await;
    let client = Client::connect_with(client_config(&cluster, vec![follower.addr()]))
        .await
        .expect("connect");
    let session = client
        .open_session(Duration::from_secs(3))
        .await
        .expect("open via hint");
    let g = session.lock("hinted").await.expect("lock via hint");
    let rev = client.kv_put("k", b"v".to_vec()).await.expect("put via hint");
    assert!(rev > 0);
    assert!(
        follower.count_method("open_session") >= 1,
        "the follower was not asked first"
    );
    assert!(rpc_count(cluster.metrics_addr(leader), "open_session") > opens_at_leader);
    assert_eq!(client.leader_hint(), Some(leader_addr.clone()));
    g.release().await.expect("release");

    // Without a hint the client moves on to the next endpoint: a node that
    // was never initialized knows no leader.
    let mut lone = TestCluster::new(1).expect("node slot");
    lone.spawn(0);
    lone.wait_up(0).await;
    // The proxy shows the client a certificate of the client's cluster and
    // dials the lone node (of another CA) as that node's administrator.
    let bridge = match (cluster.spec(0).tls.as_ref(), lone.admin_tls()) {
        (Some(node), Some(admin)) => Some(ProxyTls::new(node, &admin).expect("proxy certificates")),
        _ => None,
    };
    let silent = FaultProxy::start_tls(lone.client_addr(0), bridge).await.expect("proxy");
    let client = Client::connect_with(client_config(&cluster, vec![silent.addr(), leader_addr.clone()]))
        .await
        .expect("connect");
    assert!(client.kv_put("k2", b"v".to_vec()).await.expect("put") > rev);
    assert!(silent.count_method("kv_write") >= 1);

    // A dead endpoint first in the list is skipped as well.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let client = Client::connect_with(client_config(&cluster, vec![dead, leader_addr.clone()]))
        .await
        .expect("connect");
    assert_eq!(
        client.kv_get("k").await.expect("get").map(|v| v.value),
        Some(b"v".to_vec())
    );
    let status = client.status_of(&leader_addr).await.expect("status");
    assert_eq!(status.id, cluster.id(leader));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_puts_the_session_in_jeopardy_then_expires_it_before_the_server_does() {
    let node = Node::start().await;
    // A wide ε so that the ordering below survives a slow scheduler.
    let config = ClientConfig {
        local_margin_us: 500_000,
        ..client_config(&node.cluster, vec![node.addr()])
    };
    let client = Client::connect_with(config).await.expect("connect");
    let session = client.open_session(Duration::from_secs(2)).await.expect("open");
    let guard = session.lock("job").await.expect("lock");

    let mut states = session.watch_state();
    let recorder = tokio::spawn(async move {
        let mut seen = Vec::new();
        while states.changed().await.is_ok() {
            let s = *states.borrow_and_update();
            seen.push(s);
            if s == SessionState::Expired {
                break;
            }
        }
        seen
    });
    // The client's way to the node is cut; the node itself runs on.
    node.proxy.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, cluster_deadline) = node
        .session_deadline(session.id())
        .await
        .expect("the cluster still has the session");

    tokio::time::timeout(LONG, session.lost())
        .await
        .expect("lost() never resolved");
    let lost_at = Instant::now();
    assert!(
        lost_at < cluster_deadline,
        "the client thought it held the session after the cluster's deadline"
    );
    assert!(
        node.session_view(session.id()).await.is_some(),
        "the cluster expired the session before the client did"
    );
    let seen = tokio::time::timeout(LONG, recorder)
        .await
        .expect("recorder")
        .expect("task");
    assert_eq!(seen.first(), Some(&SessionState::Jeopardy), "states: {seen:?}");
    assert_eq!(seen.last(), Some(&SessionState::Expired), "states: {seen:?}");
    assert!(!guard.is_valid());
    assert!(matches!(session.lock("other").await, Err(ClientError::SessionExpired)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_reconnects() {
    let node = Node::start().await;
    let client = connect(&node).await;
    let session = client.open_session(Duration::from_secs(2)).await.expect("open");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        node.proxy.kill_connections();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_ne!(session.state(), SessionState::Expired);
    assert!(node.session_view(session.id()).await.is_some());
    let g = session.lock("after-reconnect").await.expect("lock");
    g.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_automatically() {
    let node = Node::start_with(quick_suspicion_args()).await;
    let client = connect(&node).await;
    let session = client.open_session(Duration::from_secs(3)).await.expect("open");
    let id = session.id();
    // The leader learns the session's keepalive rhythm (a few gaps).
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Stall the client's traffic until the leader suspects the session:
    // long enough to look dead, well within its validity.
    node.proxy.pause();
    let suspected = eventually_async(Duration::from_secs(2), || async {
        node.session_view(id)
            .await
            .is_some_and(|v| v.suspicion_permille.is_some())
    })
    .await;
    let suspected_at = Instant::now();
    node.proxy.resume();
    assert!(suspected, "the stalled session was not suspected");

    assert!(
        eventually_async(LONG, || async {
            node.session_view(id)
                .await
                .is_some_and(|v| v.suspicion_permille.is_none())
        })
        .await,
        "the probe was not answered"
    );
    let answers = node
        .proxy
        .count(|r| is_session_op(r, |o| matches!(o, SessionOp::ProbeAnswer)));
    assert!(answers >= 1);
    // Past the probe deadline (3 s): an unanswered probe would have revoked it.
    let past_deadline = suspected_at + Duration::from_millis(3_500);
    tokio::time::sleep_until(past_deadline.into()).await;
    assert!(node.session_view(id).await.is_some(), "the session was revoked");
    assert_ne!(session.state(), SessionState::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resigning_master_hands_over_to_the_next_candidate_at_a_higher_epoch() {
    let node = Node::start().await;
    let client = connect(&node).await;
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");

    let e1 = s1.election("scheduler");
    let l1 = e1.campaign(b"one".to_vec()).await.expect("s1 campaigns");
    assert_eq!(
        e1.leader().await.expect("leader"),
        Some((s1.id(), b"one".to_vec(), l1.epoch()))
    );

    let mut watch = client.watch_election("scheduler");
    let first = watch.next().await.expect("watch");
    assert_eq!(first.master, Some(s1.id()));

    let e2 = s2.election("scheduler");
    let e2c = e2.clone();
    let campaign = tokio::spawn(async move { e2c.campaign(b"two".to_vec()).await });
    assert!(node.wait_until_candidate("scheduler", s2.id(), LONG).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!campaign.is_finished(), "s2 became master while s1 was");

    e1.proclaim(b"one-b".to_vec()).await.expect("proclaim");
    e1.resign().await.expect("resign");
    let l2 = tokio::time::timeout(LONG, campaign)
        .await
        .expect("s2 never became master")
        .expect("task")
        .expect("campaign");
    assert!(l2.epoch() > l1.epoch());
    assert_eq!(
        e2.leader().await.expect("leader"),
        Some((s2.id(), b"two".to_vec(), l2.epoch()))
    );

    // The watcher sees the proclaimed value, then the new master.
    let mut changes = Vec::new();
    while changes.last().map(|c: &driftlock_client::LeaderChange| c.master) != Some(Some(s2.id())) {
        let c = tokio::time::timeout(LONG, watch.next())
            .await
            .expect("watch stalled")
            .expect("watch");
        changes.push(c);
    }
    assert!(changes.iter().any(|c| c.master == Some(s1.id()) && c.value == b"one-b"));
    assert_eq!(changes.last().map(|c| c.epoch), Some(l2.epoch()));
    // The old master can no longer proclaim.
    assert!(matches!(
        e1.proclaim(b"stale".to_vec()).await,
        Err(ClientError::Rejected(Rejection::NotMaster { .. }))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_ends_when_its_session_ends() {
    let node = Node::start_with(quick_suspicion_args()).await;
    let client = connect(&node).await;
    // s2's client has a way to the node of its own, to be stalled alone.
    let p2 = node.another_proxy().await;
    let client2 = Client::connect_with(client_config(&node.cluster, vec![p2.addr()]))
        .await
        .expect("connect");
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client2.open_session(Duration::from_secs(3)).await.expect("open");
    let _l1 = s1.election("db").campaign(b"a".to_vec()).await.expect("campaign");
    let e2 = s2.election("db");
    let campaign = tokio::spawn(async move { e2.campaign(b"b".to_vec()).await });
    assert!(node.wait_until_candidate("db", s2.id(), LONG).await);
    // The leader learns s2's keepalive rhythm, then revokes it on its own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    node.revoke_by_unanswered_probe(&p2, s2.id()).await;
    let result = tokio::time::timeout(LONG, campaign)
        .await
        .expect("campaign hung")
        .expect("task");
    assert!(matches!(result, Err(ClientError::SessionExpired)), "{result:?}");
    assert_eq!(s2.state(), SessionState::Expired);
    tokio::time::timeout(LONG, s2.lost()).await.expect("lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_acquire_ends_when_its_session_ends_or_its_wait_runs_out() {
    let node = Node::start_with(quick_suspicion_args()).await;
    let client = connect(&node).await;
    // s2's client has a way to the node of its own, to be stalled alone.
    let p2 = node.another_proxy().await;
    let client2 = Client::connect_with(client_config(&node.cluster, vec![p2.addr()]))
        .await
        .expect("connect");
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client2.open_session(Duration::from_secs(3)).await.expect("open");
    let _g = s1.lock("busy").await.expect("lock");

    let short = LockOptions {
        mode: LockMode::Exclusive,
        wait: Duration::from_millis(300),
    };
    let r = tokio::time::timeout(LONG, s2.lock_with("busy", short))
        .await
        .expect("hung");
    assert!(matches!(r, Err(ClientError::WaitTimedOut { .. })), "{r:?}");

    let s2c = s2.clone();
    let waiter = tokio::spawn(async move { s2c.lock("busy").await });
    assert!(node.wait_until_queued("busy", s2.id(), LONG).await);
    // The leader learns s2's keepalive rhythm, then revokes it on its own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    node.revoke_by_unanswered_probe(&p2, s2.id()).await;
    let r = tokio::time::timeout(LONG, waiter)
        .await
        .expect("waiter hung")
        .expect("task");
    assert!(matches!(r, Err(ClientError::SessionExpired)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_dropped_reply_does_not_acquire_twice() {
    for mode in [DropMode::Disconnect, DropMode::Hang] {
        let node = Node::start().await;
        let client = connect(&node).await;
        let session = client.open_session(Duration::from_secs(3)).await.expect("open");
        node.proxy.drop_reply_of(is_acquire, mode);

        let g = session.lock("once").await.expect("lock despite the lost reply");
        assert!(
            node.proxy.count(is_acquire) >= 2,
            "{mode:?}: the acquire was not retried"
        );
        let view = node.lock_view("once").await.expect("held");
        assert_eq!(view.holders.len(), 1, "{mode:?}");
        assert_eq!(view.holders[0].session, session.id());
        assert_eq!(
            view.holders[0].token,
            g.fencing_token(),
            "{mode:?}: the retry made a second grant"
        );
        assert_eq!(view.latest_token, g.fencing_token());
        g.release().await.expect("release");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_session_retries_keep_their_nonce() {
    let node = Node::start().await;
    let client = connect(&node).await;
    let is_open = |r: &DriftlockApiRequest| matches!(r, DriftlockApiRequest::OpenSession { .. });
    node.proxy.drop_reply_of(is_open, DropMode::Disconnect);
    let session = client.open_session(Duration::from_secs(3)).await.expect("open");
    let opens = node.proxy.count(is_open);
    assert!(opens >= 2, "the open was not retried");
    let stats = client
        .read(Query::Stats, Consistency::Linearizable)
        .await
        .expect("stats");
    assert!(
        matches!(stats.result, QueryResult::Stats(s) if s.sessions == 1),
        "a retry opened a second session"
    );
    assert!(node.session_view(session.id()).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessionless_kv_and_the_indeterminate_write() {
    let node = Node::start().await;
    let client = connect(&node).await;
    let r1 = client.kv_put("a/1", b"x".to_vec()).await.expect("put");
    let r2 = client.kv_put("a/2", b"y".to_vec()).await.expect("put");
    assert!(r2 > r1);
    assert!(matches!(
        client.kv_cas("a/1", r1 + 1_000, b"z".to_vec()).await,
        Err(ClientError::Rejected(Rejection::RevisionMismatch { .. }))
    ));
    let r3 = client.kv_cas("a/1", r1, b"z".to_vec()).await.expect("cas");
    let range = client.kv_range("a/", 10).await.expect("range");
    assert_eq!(range.len(), 2);
    assert_eq!(range[0].0, "a/1");
    assert_eq!(range[0].1.mod_revision, r3);
    client.kv_delete("a/2").await.expect("delete");
    assert!(matches!(
        client.kv_delete("a/2").await,
        Err(ClientError::Rejected(Rejection::KeyNotFound))
    ));
    let serial = client
        .kv_get_with("a/1", Consistency::Serializable)
        .await
        .expect("serializable get");
    assert_eq!(serial.map(|v| v.value), Some(b"z".to_vec()));

    // A sessionless write whose reply is lost is reported, not repeated.
    let is_put_b = |r: &DriftlockApiRequest| matches!(r, DriftlockApiRequest::KvWrite { write: KvWrite::Put { key, .. } } if key == "b");
    node.proxy.drop_reply_of(is_put_b, DropMode::Hang);
    let r = client.kv_put("b", b"1".to_vec()).await;
    assert!(matches!(r, Err(ClientError::Indeterminate(_))), "{r:?}");
    assert_eq!(node.proxy.count(is_put_b), 1);
    assert_eq!(
        client.kv_get("b").await.expect("get").map(|v| v.value),
        Some(b"1".to_vec()),
        "the node applied the write whose reply was lost"
    );
    assert!(r.is_err_and(|e| e.is_indeterminate()));

    // Admin requests reach the node.
    client
        .admin(AdminRequest::TransferLeader { to: 1 })
        .await
        .expect("admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_session_frees_its_locks_at_once() {
    let node = Node::start().await;
    let client = connect(&node).await;
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let g = s1.lock("held").await.expect("lock");
    s1.close().await.expect("close");
    assert_eq!(s1.state(), SessionState::Expired);
    assert!(!g.is_valid());
    assert!(
        s2.try_lock("held").await.expect("try").is_some(),
        "lock-delay after a close"
    );
    assert!(matches!(s1.lock("x").await, Err(ClientError::SessionExpired)));
    // Releasing a guard of a closed session reports the session's end.
    assert!(matches!(g.release().await, Err(ClientError::SessionExpired)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_session_closes_it() {
    let node = Node::start().await;
    let client = connect(&node).await;
    let session = client.open_session(Duration::from_secs(3)).await.expect("open");
    let id = session.id();
    let _g = session.lock("l").await.expect("lock");
    drop(session);
    assert!(
        eventually_async(LONG, || async { node.session_view(id).await.is_none() }).await,
        "the dropped session stayed open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fails_cleanly_without_a_reachable_endpoint() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let config = ClientConfig {
        op_deadline_ms: 300,
        ..ClientConfig::new(vec![dead])
    };
    let r = Client::connect_with(config).await;
    assert!(matches!(r, Err(ClientError::Unavailable(_))), "{r:?}");
    assert!(matches!(Client::connect(vec![]).await, Err(ClientError::NoEndpoints)));
}

/// A client multiplexes every session's event stream (one long poll each)
/// and every operation over one connection per node: 300 sessions on one
/// client, all long-polling, still lock, write and close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_serves_hundreds_of_sessions_over_one_connection() {
    let node = Node::start().await;
    let client = Client::connect_with(client_config(&node.cluster, vec![node.node_addr()]))
        .await
        .expect("connect");
    let mut sessions = Vec::new();
    for i in 0..300 {
        let session = client
            .open_session(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("session {i}: {e}"));
        sessions.push(session);
    }
    // Let every session's event loop start its long poll.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, session) in sessions.iter().enumerate().step_by(50) {
        let guard = session
            .lock(&format!("many/{i}"))
            .await
            .unwrap_or_else(|e| panic!("lock by session {i}: {e}"));
        session
            .kv_put_fenced(&format!("many/{i}/state"), b"held".to_vec(), &guard)
            .await
            .unwrap_or_else(|e| panic!("fenced put by session {i}: {e}"));
        guard.release().await.expect("release");
    }
    client
        .kv_put("many/done", b"yes".to_vec())
        .await
        .expect("sessionless put");
    for (i, session) in sessions.iter().enumerate() {
        session
            .close()
            .await
            .unwrap_or_else(|e| panic!("close session {i}: {e}"));
    }
}

/// Issue 17: many sessions on one client must all stay alive. 400
/// sessions (more than the node's 128 requests in flight per connection)
/// with a short TTL, opened at once, are kept for three TTLs on a cluster
/// under no other load: none is lost, the cluster still holds every one,
/// and each can still do an operation. The node turning requests away
/// over its cap must not cost the client its connection (and with it
/// every keepalive in flight), nor may the sessions' event streams fill
/// the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_keeps_hundreds_of_short_sessions_alive() {
    const SESSIONS: usize = 400;
    const TTL: Duration = Duration::from_secs(3);
    let node = Node::start().await;
    let metrics = node.cluster.metrics_addr(0).to_owned();
    let open_connections = || {
        driftlock_testkit::prom::sample(
            &driftlock_testkit::prom::scrape(&metrics),
            "driftlock_connections{port=\"client\"}",
        )
    };
    let before = open_connections();
    let client = Client::connect_with(client_config(&node.cluster, vec![node.node_addr()]))
        .await
        .expect("connect");
    let started = Instant::now();
    let opens: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.open_session(TTL).await })
        })
        .collect();
    let mut sessions = Vec::new();
    for (i, open) in opens.into_iter().enumerate() {
        sessions.push(
            open.await
                .expect("join")
                .unwrap_or_else(|e| panic!("open session {i}: {e}")),
        );
    }
    eprintln!("{SESSIONS} sessions opened in {:?}", started.elapsed());
    let lost: Vec<_> = sessions.iter().map(|s| tokio::spawn(s.lost())).collect();

    tokio::time::sleep(TTL * 3).await;

    let gone: Vec<_> = sessions
        .iter()
        .filter(|s| s.state() == SessionState::Expired)
        .map(|s| s.id())
        .collect();
    let lost_count = lost.iter().filter(|l| l.is_finished()).count();
    assert_eq!(
        lost_count, 0,
        "{lost_count} of {SESSIONS} sessions fired lost(); expired: {gone:?}"
    );
    for (i, session) in sessions.iter().enumerate() {
        assert!(session.is_valid(), "session {i} ({}) is no longer valid", session.id());
        assert!(
            node.session_view(session.id()).await.is_some(),
            "the cluster lost session {i} ({})",
            session.id()
        );
    }
    let puts: Vec<_> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.clone();
            tokio::spawn(async move { s.kv_put(&format!("kept/{i}"), b"alive".to_vec()).await })
        })
        .collect();
    for (i, put) in puts.into_iter().enumerate() {
        put.await
            .expect("join")
            .unwrap_or_else(|e| panic!("put by session {i}: {e}"));
    }
    assert_eq!(
        lost.iter().filter(|l| l.is_finished()).count(),
        0,
        "a session was lost during the puts"
    );
    // Turned-away requests did not make the client drop its connection and
    // dial new ones: it still holds one connection to the node.
    let now = open_connections();
    assert!(
        now <= before + 1,
        "the client holds {} connections to its one node ({before} before it connected, {now} now)",
        now.saturating_sub(before)
    );
}

/// A client whose nodes are reachable only through the addresses it was
/// given (a proxy, NAT, a load balancer) must not leave them for the
/// leader address a follower names: with `follow_leader_hints` off every
/// request goes through the configured endpoints; with the default it
/// dials the hinted node directly and the proxies see fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_hints_off_every_request_goes_through_the_configured_endpoints() {
    let cluster = driftlock_testkit::TestCluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    // Followers first, so the first answer is a NotLeader with a hint.
    let order: Vec<usize> = (0..3).filter(|&i| i != leader).chain([leader]).collect();
    let mut proxies = Vec::new();
    for &i in &order {
        proxies.push(cluster.proxy(i).await);
    }
    let endpoints: Vec<String> = proxies.iter().map(|p| p.addr()).collect();
    let writes = 10;
    let through_proxies = |proxies: &[driftlock_testkit::FaultProxy]| -> usize {
        proxies.iter().map(|p| p.count_method("kv_write")).sum()
    };

    let pinned = Client::connect_with(ClientConfig {
        follow_leader_hints: false,
        ..cluster.client_config(endpoints.clone())
    })
    .await
    .expect("connect");
    for i in 0..writes {
        pinned.kv_put(&format!("pinned/{i}"), vec![1]).await.expect("put");
    }
    let pinned_seen = through_proxies(&proxies);
    assert!(
        pinned_seen >= writes,
        "{pinned_seen} kv writes went through the proxies for {writes} puts: some bypassed them"
    );
    // The leader's proxy carried the successful ones.
    assert!(proxies[2].count_method("kv_write") >= writes);

    let following = Client::connect_with(cluster.client_config(endpoints))
        .await
        .expect("connect");
    for i in 0..writes {
        following.kv_put(&format!("following/{i}"), vec![1]).await.expect("put");
    }
    let following_seen = through_proxies(&proxies) - pinned_seen;
    assert!(
        following_seen < writes,
        "with hints followed, {following_seen} of {writes} writes still went through the proxies"
    );
}
