//! The client library against an in-process test server over real TCP.
//!
//! Timing: bounds are generous and assertions are about order and cause
//! (who got the lock first, which token is larger, that local expiry came
//! before the server's deadline), not about speed.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use driftlock_client::{Client, ClientConfig, ClientError, LockMode, LockOptions, Rejection, SessionState};
use driftlock_proto::SessionOp;
use driftlock_proto::{AdminRequest, Consistency, Query, QueryResult};
use driftlock_state_machine::Command;
use support::{client_config, eventually, DropMode, TestServer};

const LONG: Duration = Duration::from_secs(20);

async fn connect(server: &TestServer) -> Client {
    Client::connect_with(client_config(vec![server.addr()]))
        .await
        .expect("connect")
}

fn is_acquire(c: &Command) -> bool {
    matches!(
        c,
        Command::Session {
            op: SessionOp::Acquire { .. },
            ..
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_keep_a_short_session_alive() {
    let server = TestServer::start().await;
    let client = connect(&server).await;
    let session = client.open_session(Duration::from_secs(2)).await.expect("open");
    let first_expiry = session.valid_until();
    assert!(first_expiry > Instant::now());
    assert!(first_expiry < Instant::now() + Duration::from_secs(2));

    tokio::time::sleep(Duration::from_secs(5)).await;

    assert_ne!(session.state(), SessionState::Expired);
    assert!(session.is_valid());
    assert!(
        server.core.session_view(session.id()).is_some(),
        "the cluster lost the session"
    );
    assert!(
        session.valid_until() > first_expiry + Duration::from_secs(2),
        "local validity did not move forward"
    );
    let keepalives = server.core.count_applied(|c| {
        matches!(
            c,
            Command::Session {
                op: SessionOp::Keepalive { .. },
                ..
            }
        )
    });
    assert!(keepalives >= 3, "only {keepalives} keepalives in 5 s for a 2 s session");
    assert!(
        tokio::time::timeout(Duration::ZERO, session.lost()).await.is_err(),
        "lost() resolved on a live session"
    );
    session.close().await.expect("close");
    assert_eq!(session.state(), SessionState::Expired);
    assert!(server.core.session_view(session.id()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_lock_goes_to_the_waiter_with_a_larger_token() {
    let server = TestServer::start().await;
    let client = connect(&server).await;
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
    let s2_id = s2.id();
    assert!(
        eventually(LONG, || server
            .core
            .lock_view("orders")
            .is_some_and(|v| v.waiters.iter().any(|(s, _)| *s == s2_id)))
        .await,
        "s2 never queued"
    );
    assert!(!waiter.is_finished(), "s2 got the lock while s1 held it");

    g1.release().await.expect("release");
    let g2 = tokio::time::timeout(LONG, waiter)
        .await
        .expect("s2 got no answer")
        .expect("task")
        .expect("s2 locks");
    assert!(g2.fencing_token() > t1, "token {} not above {t1}", g2.fencing_token());
    assert_eq!(g2.session_id(), s2.id());
    let view = server.core.lock_view("orders").expect("held");
    assert_eq!(view.holders.len(), 1);
    assert_eq!(view.holders[0].session, s2.id());
    assert_eq!(view.holders[0].token, g2.fencing_token());
    g2.release().await.expect("release g2");
}

/// Hands a lock from one session to a waiting one and returns the waiter's
/// guard token (panics if the handover does not complete within `LONG`).
async fn handover(server: &TestServer, client: &Client, name: &str) -> u64 {
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let g1 = s1.lock(name).await.expect("lock");
    let s2c = s2.clone();
    let owned = name.to_owned();
    let waiter = tokio::spawn(async move { s2c.lock(&owned).await });
    let s2_id = s2.id();
    assert!(
        eventually(LONG, || server
            .core
            .lock_view(name)
            .is_some_and(|v| v.waiters.iter().any(|(s, _)| *s == s2_id)))
        .await
    );
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
    let server = TestServer::start().await;
    let no_poll = ClientConfig {
        poll_interval_ms: 600_000,
        ..client_config(vec![server.addr()])
    };
    let client = Client::connect_with(no_poll.clone()).await.expect("connect");
    handover(&server, &client, "by-event").await;

    // A gap in the event buffer: the grant's event is pushed out before the
    // waiter's next long-poll, whose truncated batch makes it re-read.
    let server = TestServer::start().await;
    server.core.set_event_capacity(1);
    let client = Client::connect_with(ClientConfig {
        endpoints: vec![server.addr()],
        ..no_poll
    })
    .await
    .expect("connect");
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let g1 = s1.lock("by-gap").await.expect("lock");
    let s2c = s2.clone();
    let waiter = tokio::spawn(async move { s2c.lock("by-gap").await });
    let s2_id = s2.id();
    assert!(
        eventually(LONG, || server
            .core
            .lock_view("by-gap")
            .is_some_and(|v| v.waiters.iter().any(|(s, _)| *s == s2_id)))
        .await
    );
    server.set_observe_blocked(true);
    // Let the long-polls in flight run out (observe_wait_ms = 1 s).
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    g1.release().await.expect("release");
    client.kv_put("noise", b"x".to_vec()).await.expect("put");
    server.set_observe_blocked(false);
    let g2 = tokio::time::timeout(LONG, waiter)
        .await
        .expect("the gap did not make the waiter re-read")
        .expect("task")
        .expect("lock");
    assert_eq!(
        server.core.lock_view("by-gap").map(|v| v.holders[0].token),
        Some(g2.fencing_token())
    );

    // No events at all: the poll finds the grant.
    let server = TestServer::start().await;
    server.set_observe_blocked(true);
    let client = connect(&server).await;
    handover(&server, &client, "by-poll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_on_a_held_lock_returns_none() {
    let server = TestServer::start().await;
    let client = connect(&server).await;
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
    let server = TestServer::start().await;
    let client = connect(&server).await;
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
    let server = TestServer::start().await;
    let client = connect(&server).await;
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");

    let g = s1.lock("tmp").await.expect("lock");
    drop(g);
    assert!(
        eventually(LONG, || server.core.lock_view("tmp").is_none()).await,
        "the dropped guard's lock stayed held"
    );
    assert!(s2.try_lock("tmp").await.expect("try").is_some());
    // An explicit release, not an expiry: no lock-delay.
    assert_ne!(s1.state(), SessionState::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_hints_are_followed() {
    let leader = TestServer::start().await;
    let follower = leader.replica(2).await;
    follower.set_not_leader(Some((leader.id(), leader.addr())));

    // Only the follower is configured.
    let client = Client::connect_with(client_config(vec![follower.addr()]))
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
        follower.requests("open_session") >= 1,
        "the follower was not asked first"
    );
    assert!(leader.requests("open_session") >= 1);
    assert_eq!(client.leader_hint(), Some(leader.addr()));
    g.release().await.expect("release");

    // Without a hint the client moves on to the next endpoint.
    let silent = leader.replica(3).await;
    silent.set_not_leader(None);
    let client = Client::connect_with(client_config(vec![silent.addr(), leader.addr()]))
        .await
        .expect("connect");
    assert!(client.kv_put("k2", b"v".to_vec()).await.expect("put") > rev);
    assert!(silent.requests("kv_write") >= 1);

    // A dead endpoint first in the list is skipped as well.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let client = Client::connect_with(client_config(vec![dead, leader.addr()]))
        .await
        .expect("connect");
    assert_eq!(
        client.kv_get("k").await.expect("get").map(|v| v.value),
        Some(b"v".to_vec())
    );
    let status = client.status_of(&leader.addr()).await.expect("status");
    assert_eq!(status.id, leader.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_puts_the_session_in_jeopardy_then_expires_it_before_the_server_does() {
    let server = TestServer::start().await;
    // A wide ε so that the ordering below survives a slow scheduler.
    let config = ClientConfig {
        local_margin_us: 500_000,
        ..client_config(vec![server.addr()])
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
    server.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deadline_us = server
        .core
        .session_view(session.id())
        .expect("the cluster still has the session")
        .deadline_us;

    tokio::time::timeout(LONG, session.lost())
        .await
        .expect("lost() never resolved");
    let lost_at = Instant::now();
    assert!(
        lost_at < server.core.instant_of(deadline_us),
        "the client thought it held the session after the cluster's deadline"
    );
    assert!(
        server.core.session_view(session.id()).is_some(),
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
    let server = TestServer::start().await;
    let client = connect(&server).await;
    let session = client.open_session(Duration::from_secs(2)).await.expect("open");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.kill_connections();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_ne!(session.state(), SessionState::Expired);
    assert!(server.core.session_view(session.id()).is_some());
    let g = session.lock("after-reconnect").await.expect("lock");
    g.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_automatically() {
    let server = TestServer::start().await;
    let client = connect(&server).await;
    let session = client.open_session(Duration::from_secs(3)).await.expect("open");
    let id = session.id();

    let (_, response) = server.core.apply(Command::Suspect {
        session: id,
        score_permille: 900,
        probe_timeout_us: 1_000_000,
    });
    response.expect("suspect");
    let suspected_at = Instant::now();
    assert!(
        eventually(LONG, || server
            .core
            .session_view(id)
            .is_some_and(|v| v.suspicion_permille.is_none()))
        .await,
        "the probe was not answered"
    );
    let answers = server.core.count_applied(|c| {
        matches!(
            c,
            Command::Session {
                op: SessionOp::ProbeAnswer,
                ..
            }
        )
    });
    assert!(answers >= 1);
    // Past the probe deadline: an unanswered probe would have revoked it.
    let past_deadline = suspected_at + Duration::from_millis(1_500);
    tokio::time::sleep_until(past_deadline.into()).await;
    assert!(server.core.session_view(id).is_some(), "the session was revoked");
    assert_ne!(session.state(), SessionState::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resigning_master_hands_over_to_the_next_candidate_at_a_higher_epoch() {
    let server = TestServer::start().await;
    let client = connect(&server).await;
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
    let s2_id = s2.id();
    let queued = eventually(LONG, || {
        server.core.count_applied(
            |c| matches!(c, Command::Session { session, op: SessionOp::Campaign { .. }, .. } if *session == s2_id),
        ) > 0
    })
    .await;
    assert!(queued);
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
    let server = TestServer::start().await;
    let client = connect(&server).await;
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let _l1 = s1.election("db").campaign(b"a".to_vec()).await.expect("campaign");
    let e2 = s2.election("db");
    let campaign = tokio::spawn(async move { e2.campaign(b"b".to_vec()).await });
    let s2_id = s2.id();
    assert!(
        eventually(LONG, || server.core.count_applied(|c| matches!(
            c,
            Command::Session { session, op: SessionOp::Campaign { .. }, .. } if *session == s2_id
        )) > 0)
        .await
    );
    server
        .core
        .apply(Command::Revoke {
            session: s2_id,
            reason: "test".into(),
        })
        .1
        .expect("revoke");
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
    let server = TestServer::start().await;
    let client = connect(&server).await;
    let s1 = client.open_session(Duration::from_secs(3)).await.expect("open");
    let s2 = client.open_session(Duration::from_secs(3)).await.expect("open");
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
    let s2_id = s2.id();
    assert!(
        eventually(LONG, || server
            .core
            .lock_view("busy")
            .is_some_and(|v| v.waiters.iter().any(|(s, _)| *s == s2_id)))
        .await
    );
    server
        .core
        .apply(Command::Revoke {
            session: s2_id,
            reason: "test".into(),
        })
        .1
        .expect("revoke");
    let r = tokio::time::timeout(LONG, waiter)
        .await
        .expect("waiter hung")
        .expect("task");
    assert!(matches!(r, Err(ClientError::SessionExpired)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_dropped_reply_does_not_acquire_twice() {
    for mode in [DropMode::Disconnect, DropMode::Hang] {
        let server = TestServer::start().await;
        let client = connect(&server).await;
        let session = client.open_session(Duration::from_secs(3)).await.expect("open");
        server.drop_reply_of(is_acquire, mode);

        let g = session.lock("once").await.expect("lock despite the lost reply");
        assert!(
            server.core.count_applied(is_acquire) >= 2,
            "{mode:?}: the acquire was not retried"
        );
        let view = server.core.lock_view("once").expect("held");
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
    let server = TestServer::start().await;
    let client = connect(&server).await;
    server.drop_reply_of(|c| matches!(c, Command::OpenSession { .. }), DropMode::Disconnect);
    let session = client.open_session(Duration::from_secs(3)).await.expect("open");
    let opens = server.core.count_applied(|c| matches!(c, Command::OpenSession { .. }));
    assert!(opens >= 2, "the open was not retried");
    let stats = client
        .read(Query::Stats, Consistency::Linearizable)
        .await
        .expect("stats");
    assert!(
        matches!(stats.result, QueryResult::Stats(s) if s.sessions == 1),
        "a retry opened a second session"
    );
    assert!(server.core.session_view(session.id()).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessionless_kv_and_the_indeterminate_write() {
    let server = TestServer::start().await;
    let client = connect(&server).await;
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
    server.drop_reply_of(
        |c| matches!(c, Command::KvPut { key, .. } if key == "b"),
        DropMode::Hang,
    );
    let r = client.kv_put("b", b"1".to_vec()).await;
    assert!(matches!(r, Err(ClientError::Indeterminate(_))), "{r:?}");
    assert_eq!(
        server
            .core
            .count_applied(|c| matches!(c, Command::KvPut { key, .. } if key == "b")),
        1
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
    let server = TestServer::start().await;
    let client = connect(&server).await;
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
    let server = TestServer::start().await;
    let client = connect(&server).await;
    let session = client.open_session(Duration::from_secs(3)).await.expect("open");
    let id = session.id();
    let _g = session.lock("l").await.expect("lock");
    drop(session);
    assert!(
        eventually(LONG, || server.core.session_view(id).is_none()).await,
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
        ..client_config(vec![dead])
    };
    let r = Client::connect_with(config).await;
    assert!(matches!(r, Err(ClientError::Unavailable(_))), "{r:?}");
    assert!(matches!(Client::connect(vec![]).await, Err(ClientError::NoEndpoints)));
}
