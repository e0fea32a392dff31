//! Behaviour of each command and each typed error.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, SEC, SECRET};
use driftlock_proto::*;
use driftlock_state_machine::*;

fn h() -> Harness {
    Harness::new(Config::default())
}

fn granted_token(r: &Response) -> u64 {
    match r {
        Ok(Reply::Granted { token, .. }) => *token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn session_ttl_and_name_limits_are_typed_errors() {
    let mut h = h();
    let r = h
        .apply(Command::OpenSession {
            nonce: 1,
            client_name: "c".into(),
            requested_ttl_us: 10,
            owner: h.by.clone(),
            secret_sha256: SECRET.digest(),
        })
        .0;
    assert!(
        matches!(r, Err(Rejection::TtlOutOfRange { requested_us: 10, .. })),
        "{r:?}"
    );
    let long = "x".repeat(Config::default().limits.max_client_name_bytes + 1);
    let r = h
        .apply(Command::OpenSession {
            nonce: 2,
            client_name: long,
            requested_ttl_us: 5 * SEC,
            owner: h.by.clone(),
            secret_sha256: SECRET.digest(),
        })
        .0;
    assert!(matches!(r, Err(Rejection::NameTooLong { .. })), "{r:?}");
    assert_eq!(h.sm.stats().sessions, 0);
}

#[test]
fn session_count_limit() {
    let mut cfg = Config::default();
    cfg.limits.max_sessions = 2;
    let mut h = Harness::new(cfg);
    h.open(5 * SEC);
    h.open(5 * SEC);
    let r = h
        .apply(Command::OpenSession {
            nonce: 99,
            client_name: "c".into(),
            requested_ttl_us: 5 * SEC,
            owner: h.by.clone(),
            secret_sha256: SECRET.digest(),
        })
        .0;
    assert_eq!(
        r,
        Err(Rejection::LimitReached {
            limit: LimitKind::Sessions,
            max: 2
        })
    );
}

#[test]
fn retried_open_with_same_nonce_returns_the_same_session() {
    let mut h = h();
    let cmd = Command::OpenSession {
        nonce: 7,
        client_name: "c".into(),
        requested_ttl_us: 5 * SEC,
        owner: h.by.clone(),
        secret_sha256: SECRET.digest(),
    };
    let a = h.apply(cmd.clone()).0;
    let b = h.apply(cmd).0;
    let id = |r: &Response| match r {
        Ok(Reply::SessionOpened { session, .. }) => *session,
        other => panic!("{other:?}"),
    };
    assert_eq!(id(&a), id(&b));
    assert_eq!(h.sm.stats().sessions, 1);
}

#[test]
fn retry_returns_cached_response_and_changes_nothing() {
    let mut h = h();
    let s = h.open(10 * SEC);
    let acquire = Command::Session {
        session: s,
        seq: 1,
        op: SessionOp::Acquire {
            name: "l".into(),
            mode: LockMode::Exclusive,
            wait_us: 0,
        },
        by: h.by.clone(),
    };
    let first = h.apply(acquire.clone()).0;
    let token = granted_token(&first);
    let mut expected = h.sm.clone();
    let meta = h.next_meta();
    let _ = expected.apply(Command::Tick, meta);
    let (retry, events) = h.sm.apply(acquire, meta);
    assert_eq!(retry, first);
    assert!(events.is_empty());
    assert_eq!(h.sm, expected, "a retry must not change state");
    assert_eq!(h.sm.lock_view("l", h.ts_us).map(|v| v.latest_token), Some(token));
}

#[test]
fn sequence_older_than_the_window_is_refused() {
    let mut cfg = Config::default();
    cfg.limits.dedupe_window = 2;
    let mut h = Harness::new(cfg);
    let s = h.open(10 * SEC);
    for _ in 0..3 {
        h.keepalive(s).expect("keepalive");
    }
    let r = h
        .apply(Command::Session {
            session: s,
            seq: 1,
            op: SessionOp::Keepalive {
                health: None,
                clock: None,
            },
            by: h.by.clone(),
        })
        .0;
    assert_eq!(
        r,
        Err(Rejection::StaleSequence {
            seq: 1,
            forgotten_through: 1
        })
    );
}

#[test]
fn unknown_session_is_refused() {
    let mut h = h();
    let r = h.acquire(42, "l", LockMode::Exclusive, 0);
    assert_eq!(r, Err(Rejection::UnknownSession { session: 42 }));
    let r = h
        .apply(Command::Revoke {
            session: 42,
            reason: "x".into(),
        })
        .0;
    assert_eq!(r, Err(Rejection::UnknownSession { session: 42 }));
}

#[test]
fn lock_names_are_checked() {
    let mut h = h();
    let s = h.open(10 * SEC);
    assert_eq!(h.acquire(s, "", LockMode::Exclusive, 0), Err(Rejection::EmptyName));
    let long = "n".repeat(513);
    assert_eq!(
        h.acquire(s, &long, LockMode::Exclusive, 0),
        Err(Rejection::NameTooLong { len: 513, max: 512 })
    );
    assert_eq!(h.sm.stats().held_locks, 0);
}

#[test]
fn exclusive_excludes_and_shared_shares() {
    let mut h = h();
    let (a, b, c) = (h.open(10 * SEC), h.open(10 * SEC), h.open(10 * SEC));
    granted_token(&h.acquire(a, "x", LockMode::Exclusive, 0));
    assert_eq!(
        h.acquire(b, "x", LockMode::Exclusive, 0),
        Err(Rejection::LockBusy {
            lock_delay_until_us: None
        })
    );
    assert_eq!(
        h.acquire(b, "x", LockMode::Shared, 0),
        Err(Rejection::LockBusy {
            lock_delay_until_us: None
        })
    );
    assert_eq!(h.acquire(a, "x", LockMode::Exclusive, 0), Err(Rejection::AlreadyHeld));
    granted_token(&h.acquire(b, "y", LockMode::Shared, 0));
    granted_token(&h.acquire(c, "y", LockMode::Shared, 0));
    assert_eq!(h.holders("y"), vec![b, c]);
    assert_eq!(
        h.acquire(a, "y", LockMode::Exclusive, 0),
        Err(Rejection::LockBusy {
            lock_delay_until_us: None
        })
    );
}

#[test]
fn release_by_non_holder_is_refused() {
    let mut h = h();
    let (a, b) = (h.open(10 * SEC), h.open(10 * SEC));
    granted_token(&h.acquire(a, "x", LockMode::Exclusive, 0));
    assert_eq!(h.release(b, "x"), Err(Rejection::NotHolder));
    assert_eq!(h.holders("x"), vec![a]);
}

#[test]
fn fifo_waiters_get_the_lock_inside_the_release_entry() {
    let mut h = h();
    let (a, b, c) = (h.open(30 * SEC), h.open(30 * SEC), h.open(30 * SEC));
    let t1 = granted_token(&h.acquire(a, "x", LockMode::Exclusive, 0));
    assert!(matches!(
        h.acquire(b, "x", LockMode::Exclusive, 10 * SEC),
        Ok(Reply::Queued { position: 0, .. })
    ));
    assert!(matches!(
        h.acquire(c, "x", LockMode::Exclusive, 10 * SEC),
        Ok(Reply::Queued { position: 1, .. })
    ));
    let (r, events) = h.op(a, SessionOp::Release { name: "x".into() });
    assert_eq!(r, Ok(Reply::Done));
    let granted: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::LockGranted { session, token, .. } => Some((*session, *token)),
            _ => None,
        })
        .collect();
    assert_eq!(
        granted,
        vec![(b, h.index)],
        "b is next, granted by the release entry itself"
    );
    assert!(h.index > t1);
    h.release(b, "x").expect("release");
    assert_eq!(h.holders("x"), vec![c]);
}

#[test]
fn shared_waiters_behind_an_exclusive_are_granted_together() {
    let mut h = h();
    let (a, b, c, d) = (h.open(30 * SEC), h.open(30 * SEC), h.open(30 * SEC), h.open(30 * SEC));
    granted_token(&h.acquire(a, "x", LockMode::Exclusive, 0));
    h.acquire(b, "x", LockMode::Shared, 10 * SEC).expect("queue");
    h.acquire(c, "x", LockMode::Shared, 10 * SEC).expect("queue");
    h.acquire(d, "x", LockMode::Exclusive, 10 * SEC).expect("queue");
    h.release(a, "x").expect("release");
    assert_eq!(h.holders("x"), vec![b, c]);
    let v = h.sm.lock_view("x", h.ts_us).expect("lock");
    assert_eq!(v.waiters, vec![(d, LockMode::Exclusive)]);
}

#[test]
fn waiter_times_out_at_its_deadline() {
    let mut h = h();
    let (a, b) = (h.open(60 * SEC), h.open(60 * SEC));
    granted_token(&h.acquire(a, "x", LockMode::Exclusive, 0));
    h.acquire(b, "x", LockMode::Exclusive, 2 * SEC).expect("queue");
    h.advance(2 * SEC);
    let events = h.tick();
    assert!(
        events.contains(&Event::WaitTimedOut {
            name: "x".into(),
            session: b
        }),
        "{events:?}"
    );
    h.release(a, "x").expect("release");
    assert!(h.holders("x").is_empty());
    assert_eq!(h.sm.stats().held_locks, 0);
}

#[test]
fn waiter_and_lock_limits() {
    let mut cfg = Config::default();
    cfg.limits.max_waiters_per_lock = 1;
    cfg.limits.max_locks_per_session = 1;
    let mut h = Harness::new(cfg);
    let (a, b, c) = (h.open(30 * SEC), h.open(30 * SEC), h.open(30 * SEC));
    granted_token(&h.acquire(a, "x", LockMode::Exclusive, 0));
    assert_eq!(
        h.acquire(a, "y", LockMode::Exclusive, 0),
        Err(Rejection::LimitReached {
            limit: LimitKind::LocksPerSession,
            max: 1
        })
    );
    h.acquire(b, "x", LockMode::Exclusive, SEC).expect("queue");
    assert_eq!(
        h.acquire(c, "x", LockMode::Exclusive, SEC),
        Err(Rejection::LimitReached {
            limit: LimitKind::WaitersPerLock,
            max: 1
        })
    );
}

#[test]
fn expired_holder_leaves_lock_delay_then_waiter_gets_it() {
    let mut h = h();
    let a = h.open(5 * SEC);
    let b = h.open(60 * SEC);
    granted_token(&h.acquire(a, "x", LockMode::Exclusive, 0));
    h.acquire(b, "x", LockMode::Exclusive, 60 * SEC).expect("queue");
    // a's validity: 5 s; the drift margin at the default 500 ppm (cluster)
    // + 500 ppm (client) is 5 s × 1000 ppm = 5 ms.
    h.advance(5 * SEC);
    let events = h.tick();
    let delay_until = events.iter().find_map(|e| match e {
        Event::LockReleased {
            cause: EndCause::Expired,
            lock_delay_until_us,
            ..
        } => *lock_delay_until_us,
        _ => None,
    });
    let delay_until = delay_until.expect("expiry leaves a lock-delay");
    assert_eq!(delay_until, h.ts_us + 5_000);
    assert!(h.holders("x").is_empty(), "not granted during lock-delay");
    h.advance(4_999);
    h.tick();
    assert!(h.holders("x").is_empty());
    h.advance(1);
    h.tick();
    assert_eq!(h.holders("x"), vec![b]);
}

#[test]
fn revoked_holder_frees_only_after_its_granted_validity() {
    let mut h = h();
    let a = h.open(10 * SEC);
    let b = h.open(60 * SEC);
    granted_token(&h.acquire(a, "x", LockMode::Exclusive, 0));
    h.advance(SEC);
    h.ok(Command::Revoke {
        session: a,
        reason: "test".into(),
    });
    assert_eq!(
        h.acquire(b, "x", LockMode::Exclusive, 0),
        Err(Rejection::LockBusy {
            lock_delay_until_us: Some(1_010 * SEC + 10_000)
        })
    );
    h.advance(9 * SEC);
    h.tick();
    assert_eq!(
        h.acquire(b, "x", LockMode::Exclusive, 0),
        Err(Rejection::LockBusy {
            lock_delay_until_us: Some(1_010 * SEC + 10_000)
        })
    );
    h.advance(10_000);
    granted_token(&h.acquire(b, "x", LockMode::Exclusive, 0));
}

#[test]
fn explicit_release_has_no_lock_delay() {
    let mut h = h();
    let (a, b) = (h.open(10 * SEC), h.open(10 * SEC));
    granted_token(&h.acquire(a, "x", LockMode::Exclusive, 0));
    h.release(a, "x").expect("release");
    granted_token(&h.acquire(b, "x", LockMode::Exclusive, 0));
}

#[test]
fn keepalive_never_shortens_a_granted_validity() {
    let mut h = h();
    let s = h.open(20 * SEC);
    h.ok(Command::Suspect {
        session: s,
        score_permille: 900,
        probe_timeout_us: 60 * SEC,
    });
    h.advance(SEC);
    match h.keepalive(s) {
        Ok(Reply::KeptAlive { validity_us, lease, .. }) => {
            assert_eq!(lease.validity_us, 10 * SEC, "suspicion halves the new grant");
            assert_eq!(validity_us, 19 * SEC, "the earlier promise still stands");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unanswered_probe_revokes_and_answered_probe_clears() {
    let mut h = h();
    let (a, b) = (h.open(60 * SEC), h.open(60 * SEC));
    h.ok(Command::Suspect {
        session: a,
        score_permille: 800,
        probe_timeout_us: 2 * SEC,
    });
    h.ok(Command::Suspect {
        session: b,
        score_permille: 800,
        probe_timeout_us: 2 * SEC,
    });
    h.op(b, SessionOp::ProbeAnswer).0.expect("answer");
    h.advance(2 * SEC);
    let events = h.tick();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::SessionEnded { session, cause: EndCause::Revoked { .. } } if *session == a)));
    assert!(h.sm.session_view(b, h.ts_us).is_some());
    assert!(h.sm.session_view(a, h.ts_us).is_none());
}

#[test]
fn probe_revocation_after_a_shortened_grant_waits_for_the_longest_validity() {
    let mut h = h();
    let a = h.open(20 * SEC);
    let opened_at = h.ts_us;
    let b = h.open(120 * SEC);
    granted_token(&h.acquire(a, "x", LockMode::Exclusive, 0));
    h.acquire(b, "x", LockMode::Exclusive, 100 * SEC).expect("queue");
    h.ok(Command::Suspect {
        session: a,
        score_permille: 900,
        probe_timeout_us: 3 * SEC,
    });
    h.advance(SEC);
    match h.keepalive(a) {
        Ok(Reply::KeptAlive { validity_us, lease, .. }) => {
            assert_eq!(lease.suspicion_scale_permille, 500, "the grant says why it is shorter");
            assert_eq!(lease.validity_us, 10 * SEC);
            assert_eq!(validity_us, 19 * SEC, "the earlier promise still stands");
        }
        other => panic!("{other:?}"),
    }
    // No answer: the probe deadline (3 s after the suspicion) revokes.
    h.advance(2 * SEC);
    let events = h.tick();
    let delay_until = events
        .iter()
        .find_map(|e| match e {
            Event::LockReleased {
                cause: EndCause::Revoked { .. },
                lock_delay_until_us,
                ..
            } => *lock_delay_until_us,
            _ => None,
        })
        .expect("revocation frees the lock under lock-delay");
    assert!(
        delay_until >= opened_at + 20 * SEC,
        "lock-delay {delay_until} ends before the granted validity {}",
        opened_at + 20 * SEC
    );
    assert!(h.holders("x").is_empty());
    h.advance(delay_until - h.ts_us - 1);
    h.tick();
    assert!(h.holders("x").is_empty(), "not one µs early");
    h.advance(1);
    let events = h.tick();
    assert_eq!(
        h.holders("x"),
        vec![b],
        "the head waiter gets it in the entry that ends the delay"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::LockGranted { session, .. } if *session == b)));
}

#[test]
fn fenced_writes_reject_stale_and_unheld_tokens() {
    let mut h = h();
    let (a, b) = (h.open(10 * SEC), h.open(10 * SEC));
    let t1 = granted_token(&h.acquire(a, "x", LockMode::Exclusive, 0));
    let put = |token| SessionOp::KvPut {
        key: "counter".into(),
        value: b"1".to_vec(),
        fence: Some(Fence {
            lock: "x".into(),
            token,
        }),
    };
    assert!(matches!(h.op(a, put(t1)).0, Ok(Reply::KvWritten { .. })));
    h.release(a, "x").expect("release");
    assert_eq!(h.op(a, put(t1)).0, Err(Rejection::FenceNotHeld { token: t1 }));
    let t2 = granted_token(&h.acquire(b, "x", LockMode::Exclusive, 0));
    assert_eq!(
        h.op(a, put(t1)).0,
        Err(Rejection::StaleFencingToken { token: t1, latest: t2 })
    );
    assert_eq!(h.op(b, put(t2 + 5)).0, Err(Rejection::FenceNotHeld { token: t2 + 5 }));
    assert!(matches!(h.op(b, put(t2)).0, Ok(Reply::KvWritten { .. })));
    assert_eq!(h.sm.kv_get("counter").map(|v| v.version), Some(2));
}

#[test]
fn kv_cas_delete_and_limits() {
    let mut cfg = Config::default();
    cfg.limits.max_keys = 1;
    cfg.limits.max_value_bytes = 4;
    let mut h = Harness::new(cfg);
    let rev = match h
        .apply(Command::KvCas {
            key: "k".into(),
            expected_revision: 0,
            value: b"v".to_vec(),
            by: h.by.clone(),
        })
        .0
    {
        Ok(Reply::KvWritten { revision }) => revision,
        other => panic!("{other:?}"),
    };
    let r = h
        .apply(Command::KvCas {
            key: "k".into(),
            expected_revision: 0,
            value: b"w".to_vec(),
            by: h.by.clone(),
        })
        .0;
    assert_eq!(
        r,
        Err(Rejection::RevisionMismatch {
            expected: 0,
            actual: rev
        })
    );
    let r = h
        .apply(Command::KvPut {
            key: "k2".into(),
            value: vec![],
            by: h.by.clone(),
        })
        .0;
    assert_eq!(
        r,
        Err(Rejection::LimitReached {
            limit: LimitKind::Keys,
            max: 1
        })
    );
    let r = h
        .apply(Command::KvPut {
            key: "k".into(),
            value: vec![0; 5],
            by: h.by.clone(),
        })
        .0;
    assert_eq!(r, Err(Rejection::ValueTooLarge { len: 5, max: 4 }));
    assert_eq!(h.sm.kv_get("k").map(|v| v.value), Some(b"v".to_vec()));
    h.apply(Command::KvDelete {
        key: "k".into(),
        by: h.by.clone(),
    })
    .0
    .expect("delete");
    assert_eq!(
        h.apply(Command::KvDelete {
            key: "k".into(),
            by: h.by.clone(),
        })
        .0,
        Err(Rejection::KeyNotFound)
    );
}

#[test]
fn election_succession_raises_the_epoch() {
    let mut h = h();
    let (a, b) = (h.open(30 * SEC), h.open(30 * SEC));
    let e1 = match h.campaign(a, "svc") {
        Ok(Reply::Elected { epoch }) => epoch,
        other => panic!("{other:?}"),
    };
    assert_eq!(h.campaign(b, "svc"), Ok(Reply::Candidate { position: 0 }));
    assert_eq!(h.campaign(b, "svc"), Err(Rejection::AlreadyCandidate));
    let r = h
        .op(
            b,
            SessionOp::Proclaim {
                election: "svc".into(),
                epoch: e1,
                value: vec![],
            },
        )
        .0;
    assert_eq!(r, Err(Rejection::NotMaster { epoch: e1 }));
    h.op(a, SessionOp::Resign { election: "svc".into() }).0.expect("resign");
    let v = h.sm.election_view("svc", h.ts_us).expect("election");
    assert_eq!(v.master.map(|m| m.0), Some(b));
    assert!(v.epoch > e1);
    assert_eq!(
        h.op(a, SessionOp::Resign { election: "svc".into() }).0,
        Err(Rejection::NotCandidate)
    );
}

fn chunk(e: &str, epoch: u64, seq: u32, data: &[u8], last: bool) -> SessionOp {
    SessionOp::HandoverState {
        election: e.into(),
        epoch,
        chunk_seq: seq,
        data: data.to_vec(),
        crc32: crc32fast::hash(data),
        last,
    }
}

#[test]
fn warm_handover_transfers_after_ack_only() {
    let mut h = h();
    let (a, b) = (h.open(30 * SEC), h.open(30 * SEC));
    h.campaign(a, "svc").expect("a");
    h.campaign(b, "svc").expect("b");
    let epoch = h.sm.election_view("svc", h.ts_us).expect("e").epoch;
    let begin = Command::HandoverBegin {
        election: "svc".into(),
        from: a,
        to: b,
        epoch,
        ack_timeout_us: 5 * SEC,
    };
    h.apply(begin).0.expect("begin");
    h.op(a, chunk("svc", epoch, 0, b"hello ", false)).0.expect("chunk 0");
    let bad = SessionOp::HandoverState {
        election: "svc".into(),
        epoch,
        chunk_seq: 1,
        data: b"world".to_vec(),
        crc32: 0,
        last: true,
    };
    assert_eq!(h.op(a, bad).0, Err(Rejection::ChunkChecksum { chunk_seq: 1 }));
    // A chunk travels in one event: one above the protocol's value ceiling
    // is refused (and changes nothing: chunk 1 is still expected).
    let huge = vec![0u8; driftlock_proto::limits::MAX_VALUE_BYTES_CEILING + 1];
    assert_eq!(
        h.op(a, chunk("svc", epoch, 1, &huge, true)).0,
        Err(Rejection::ValueTooLarge {
            len: huge.len(),
            max: driftlock_proto::limits::MAX_VALUE_BYTES_CEILING
        })
    );
    h.op(a, chunk("svc", epoch, 1, b"world", true)).0.expect("chunk 1");
    let relinquish = SessionOp::Relinquish {
        election: "svc".into(),
        epoch,
    };
    assert!(
        matches!(h.op(a, relinquish.clone()).0, Err(Rejection::HandoverMismatch { .. })),
        "no ack yet"
    );
    let wrong = SessionOp::HandoverAck {
        election: "svc".into(),
        epoch,
        chunks: 2,
        total_crc32: 1,
    };
    assert!(matches!(h.op(b, wrong).0, Err(Rejection::HandoverMismatch { .. })));
    let ack = SessionOp::HandoverAck {
        election: "svc".into(),
        epoch,
        chunks: 2,
        total_crc32: crc32fast::hash(b"hello world"),
    };
    h.op(b, ack).0.expect("ack");
    // The leader's own transfer is retired: acknowledged or not, only the
    // old master moves the mastership.
    let transfer = Command::LeaseTransfer {
        election: "svc".into(),
        to: b,
        epoch,
    };
    assert!(matches!(h.apply(transfer).0, Err(Rejection::HandoverMismatch { .. })));
    assert_eq!(master_of(&h), Some(a), "the old master leads until it relinquishes");
    assert!(
        matches!(h.op(b, relinquish.clone()).0, Err(Rejection::HandoverMismatch { .. })),
        "only the old master relinquishes"
    );
    let (r, events) = h.op(a, relinquish);
    assert_eq!(r, Ok(Reply::Done));
    let new_epoch = h.index;
    assert!(new_epoch > epoch);
    assert!(events.contains(&Event::LeaseTransferred {
        election: "svc".into(),
        from: a,
        to: b,
        epoch: new_epoch
    }));
    let v = h.sm.election_view("svc", h.ts_us).expect("e");
    assert_eq!(v.master.map(|m| m.0), Some(b));
    assert_eq!(v.epoch, new_epoch);
    assert!(v.candidates.is_empty(), "the old master left the election");
    assert_eq!(
        h.op(a, SessionOp::Resign { election: "svc".into() }).0,
        Err(Rejection::NotCandidate)
    );
    assert!(h.sm.check_invariants().is_ok());
}

#[test]
fn an_acknowledged_handover_the_master_never_relinquishes_aborts_and_the_master_keeps_its_role() {
    let mut h = h();
    let (a, b) = (h.open(30 * SEC), h.open(30 * SEC));
    h.campaign(a, "svc").expect("a");
    h.campaign(b, "svc").expect("b");
    let epoch = handover_up_to_the_ack(&mut h, a, b);
    h.advance(5 * SEC);
    let events = h.tick();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::HandoverAborted { reason, .. } if reason == "master did not relinquish in time"
        )),
        "{events:?}"
    );
    assert_eq!(master_of(&h), Some(a));
    assert_eq!(h.sm.election_view("svc", h.ts_us).expect("e").epoch, epoch);
    // Too late to relinquish: the library then resigns instead, which hands
    // over at once (a resignation needs no succession delay).
    let late = SessionOp::Relinquish {
        election: "svc".into(),
        epoch,
    };
    assert!(matches!(h.op(a, late).0, Err(Rejection::HandoverMismatch { .. })));
    h.op(a, SessionOp::Resign { election: "svc".into() }).0.expect("resign");
    assert_eq!(master_of(&h), Some(b));
    assert!(h.sm.check_invariants().is_ok());
}

#[test]
fn handover_aborts_when_not_acknowledged_in_time() {
    let mut h = h();
    let (a, b) = (h.open(30 * SEC), h.open(30 * SEC));
    h.campaign(a, "svc").expect("a");
    h.campaign(b, "svc").expect("b");
    let epoch = h.sm.election_view("svc", h.ts_us).expect("e").epoch;
    let begin = Command::HandoverBegin {
        election: "svc".into(),
        from: a,
        to: b,
        epoch,
        ack_timeout_us: 2 * SEC,
    };
    h.apply(begin).0.expect("begin");
    h.advance(2 * SEC);
    let events = h.tick();
    assert!(
        events.iter().any(|e| matches!(e, Event::HandoverAborted { .. })),
        "{events:?}"
    );
    let v = h.sm.election_view("svc", h.ts_us).expect("e");
    assert_eq!(v.master.map(|m| m.0), Some(a));
    assert_eq!(v.epoch, epoch, "abort keeps the epoch");
}

#[test]
fn candidate_death_mid_handover_aborts() {
    let mut h = h();
    let a = h.open(60 * SEC);
    let b = h.open(5 * SEC);
    let c = h.open(60 * SEC);
    for s in [a, b, c] {
        h.campaign(s, "svc").expect("campaign");
    }
    let epoch = h.sm.election_view("svc", h.ts_us).expect("e").epoch;
    h.apply(Command::HandoverBegin {
        election: "svc".into(),
        from: a,
        to: b,
        epoch,
        ack_timeout_us: 30 * SEC,
    })
    .0
    .expect("begin");
    h.advance(5 * SEC);
    let events = h.tick();
    assert!(events.iter().any(|e| matches!(e, Event::HandoverAborted { .. })));
    let v = h.sm.election_view("svc", h.ts_us).expect("e");
    assert_eq!(v.master.map(|m| m.0), Some(a));
    assert_eq!(v.candidates, vec![c]);
    assert!(h.sm.check_invariants().is_ok());
}

/// Runs a handover of "svc" from `a` to `b` up to the candidate's
/// acknowledgement: begin, one chunk from `a`, the ack from `b`. Returns the
/// handover's epoch (the old master's).
fn handover_up_to_the_ack(h: &mut Harness, a: SessionId, b: SessionId) -> u64 {
    let epoch = h.sm.election_view("svc", h.ts_us).expect("e").epoch;
    h.ok(Command::HandoverBegin {
        election: "svc".into(),
        from: a,
        to: b,
        epoch,
        ack_timeout_us: 5 * SEC,
    });
    h.op(a, chunk("svc", epoch, 0, b"state", true)).0.expect("last chunk");
    let ack = SessionOp::HandoverAck {
        election: "svc".into(),
        epoch,
        chunks: 1,
        total_crc32: crc32fast::hash(b"state"),
    };
    h.op(b, ack).0.expect("ack");
    epoch
}

/// The master of "svc" now, if any.
fn master_of(h: &Harness) -> Option<SessionId> {
    h.sm.election_view("svc", h.ts_us).and_then(|v| v.master.map(|m| m.0))
}

/// Issue 14, item 2: the old master sends its last state chunk and is then
/// cut off, so it commits nothing more and hears nothing. Whatever the
/// leader commits on its own (the lease transfer the controller used to
/// commit after the ack, ticks), the candidate must not be master while
/// the old master's session lives: the old master was never told, so it
/// still has every reason to believe it leads (design.md "Elections and
/// warm handover").
#[test]
fn a_handover_never_makes_a_second_master_while_the_old_one_was_not_told() {
    let mut h = h();
    let (a, b) = (h.open(10 * SEC), h.open(30 * SEC));
    h.campaign(a, "svc").expect("a");
    h.campaign(b, "svc").expect("b");
    let epoch = handover_up_to_the_ack(&mut h, a, b);
    // a is cut off from here on: none of its commands reach the cluster.
    // What the leader may commit without a: the transfer, then ticks.
    let transfer = Command::LeaseTransfer {
        election: "svc".into(),
        to: b,
        epoch,
    };
    let mut commands = vec![transfer];
    commands.extend(std::iter::repeat_n(Command::Tick, 400));
    let mut b_epoch = None;
    for (k, cmd) in commands.into_iter().enumerate() {
        if k % 10 == 0 {
            h.keepalive(b).expect("b stays alive");
        }
        let _ = h.apply(cmd);
        if master_of(&h) == Some(b) {
            assert!(
                h.sm.session_view(a, h.ts_us).is_none(),
                "entry {}: b is master at cluster time {} while a's session lives and a was never told",
                h.index,
                h.ts_us
            );
            b_epoch.get_or_insert(h.sm.election_view("svc", h.ts_us).expect("e").epoch);
        }
        h.advance(SEC / 10);
    }
    let b_epoch = b_epoch.expect("b becomes master once a's session is over");
    assert!(b_epoch > epoch);
    assert!(h.sm.check_invariants().is_ok());
}

/// Issue 14, item 2: after a completed handover the old master is out of
/// the election. When the new master resigns, the old one is not made
/// master again behind its code's back, and it can campaign anew.
#[test]
fn after_a_handover_the_old_master_is_not_made_master_again_when_the_new_one_resigns() {
    let mut h = h();
    let (a, b) = (h.open(30 * SEC), h.open(30 * SEC));
    h.campaign(a, "svc").expect("a");
    h.campaign(b, "svc").expect("b");
    let epoch = handover_up_to_the_ack(&mut h, a, b);
    h.op(
        a,
        SessionOp::Relinquish {
            election: "svc".into(),
            epoch,
        },
    )
    .0
    .expect("relinquish");
    assert_eq!(master_of(&h), Some(b));
    h.op(b, SessionOp::Resign { election: "svc".into() })
        .0
        .expect("b resigns");
    assert_ne!(
        master_of(&h),
        Some(a),
        "the old master was made master again without being told"
    );
    assert!(
        matches!(h.campaign(a, "svc"), Ok(Reply::Elected { .. })),
        "the old master campaigns anew"
    );
    assert!(h.sm.check_invariants().is_ok());
}

/// A client that renews every 3 s. Its clock runs at `rate` (1.0 =
/// cluster time's rate; the rate may change between calls, the reading
/// stays continuous), with `delay_us(k)` of network delay each way on
/// renewal `k`; each keepalive carries the sample of the previous renewal.
struct ClientSim {
    session: SessionId,
    rate: f64,
    /// (cluster µs, client clock µs) at the last reading.
    at: (u64, f64),
    last_sample: Option<ClockSample>,
}

impl ClientSim {
    fn new(h: &Harness, session: SessionId) -> Self {
        ClientSim {
            session,
            rate: 1.0,
            at: (h.ts_us, 1e9),
            last_sample: None,
        }
    }

    fn clock_at(&mut self, ts_us: u64) -> u64 {
        let (t0, c0) = self.at;
        let c = c0 + (ts_us as f64 - t0 as f64) * self.rate;
        if ts_us >= t0 {
            self.at = (ts_us, c);
        }
        c as u64
    }

    /// `renewals` keepalives; every event and the last reply.
    fn renew(&mut self, h: &mut Harness, renewals: u32, delay_us: impl Fn(u32) -> u64) -> (Vec<Event>, Response) {
        let mut all = Vec::new();
        let mut reply = Err(Rejection::KeyNotFound);
        for k in 0..renewals {
            h.advance(3 * SEC);
            let d = delay_us(k);
            let keepalive = SessionOp::Keepalive {
                health: None,
                clock: self.last_sample,
            };
            let (r, events) = h.op(self.session, keepalive);
            all.extend(events);
            if let Ok(Reply::KeptAlive { cluster_ts_us, .. }) = &r {
                // The entry was stamped d after the send and d before the
                // reply arrived.
                let sent_us = self.clock_at(cluster_ts_us - d);
                let received_us = self.clock_at(cluster_ts_us + d);
                self.last_sample = Some(ClockSample {
                    sent_us,
                    received_us,
                    cluster_ts_us: *cluster_ts_us,
                });
            }
            reply = r;
        }
        (all, reply)
    }
}

/// `renewals` keepalives of a fresh simulated client at `rate`.
fn renew_with_clock(
    h: &mut Harness,
    s: SessionId,
    renewals: u32,
    rate: f64,
    delay_us: impl Fn(u32) -> u64,
) -> (Vec<Event>, Response) {
    let mut c = ClientSim::new(h, s);
    c.rate = rate;
    c.renew(h, renewals, delay_us)
}

fn skew_events(events: &[Event]) -> Vec<(u64, u64, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ClockSkewDetected {
                slow_ppm,
                client_rho_ppm,
                alert,
                ..
            } => Some((*slow_ppm, *client_rho_ppm, *alert)),
            _ => None,
        })
        .collect()
}

#[test]
fn network_delay_and_retries_never_read_as_clock_skew() {
    let mut h = h();
    let s = h.open(60 * SEC);
    // Wildly varying delays, up to 1.4 s each way, on an honest clock.
    let (events, reply) = renew_with_clock(&mut h, s, 30, 1.0, |k| u64::from(k % 8) * 200_000);
    assert!(skew_events(&events).is_empty(), "{events:?}");
    assert!(
        matches!(
            reply,
            Ok(Reply::KeptAlive {
                client_rho_ppm: 500,
                ..
            })
        ),
        "{reply:?}"
    );
    assert_eq!(h.sm.session_view(s, h.ts_us).expect("session").client_rho_ppm, 500);
}

#[test]
fn a_slow_client_clock_widens_its_bound_after_three_agreeing_renewals() {
    let mut h = h();
    let s = h.open(60 * SEC);
    // 2 % slow (20 000 ppm) with 1 ms of delay each way: three pairs of
    // renewals (four samples, so five keepalives) before anything happens.
    let mut client = ClientSim::new(&h, s);
    client.rate = 0.98;
    let (events, _) = client.renew(&mut h, 4, |_| 1_000);
    assert!(
        skew_events(&events).is_empty(),
        "acted before three pairs agreed: {events:?}"
    );
    let (events, reply) = client.renew(&mut h, 1, |_| 1_000);
    let skew = skew_events(&events);
    assert_eq!(skew.len(), 1, "{events:?}");
    let (slow_ppm, rho_ppm, alert) = skew[0];
    // A lower bound: the 2 ms of delay per pair loosen it a little.
    assert!((19_000..=20_000).contains(&slow_ppm), "{slow_ppm}");
    assert_eq!(rho_ppm, slow_ppm);
    assert!(alert, "20 000 ppm is beyond the 1000 ppm alert threshold");
    let Ok(Reply::KeptAlive { client_rho_ppm, .. }) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(client_rho_ppm, slow_ppm, "the client is told the bound to apply");
    assert_eq!(h.sm.stats().skewed_sessions, 1);
    // Steady evidence raises nothing more.
    let (events, _) = client.renew(&mut h, 3, |_| 1_000);
    assert!(skew_events(&events).len() <= 1, "{events:?}");
}

#[test]
fn the_widening_is_capped_so_a_broken_client_can_still_renew() {
    let mut h = h();
    let s = h.open(60 * SEC);
    // Half speed: 500 000 ppm slow.
    let (events, reply) = renew_with_clock(&mut h, s, 6, 0.5, |_| 1_000);
    let skew = skew_events(&events);
    assert!(!skew.is_empty(), "{events:?}");
    let cap = Config::default().time.max_client_rho_ppm;
    assert!(
        skew.iter()
            .all(|(slow, rho, alert)| *slow > cap && *rho == cap && *alert),
        "{skew:?}"
    );
    let Ok(Reply::KeptAlive {
        client_rho_ppm,
        validity_us,
        ..
    }) = reply
    else {
        panic!("{reply:?}")
    };
    assert_eq!(client_rho_ppm, cap);
    // Local validity V × (1 − ρ) stays above the keepalive interval V/3.
    assert!(validity_us * (1_000_000 - client_rho_ppm) / 1_000_000 > validity_us / 3);
    // And lock-delay stays bounded by the cap: V × (ρ_cluster + cap).
    h.acquire(s, "l", LockMode::Exclusive, 0).expect("grant");
    let deadline = h.sm.session_view(s, h.ts_us).expect("session").deadline_us;
    h.apply(Command::Revoke {
        session: s,
        reason: "test".into(),
    })
    .0
    .expect("revoke");
    let until = h.sm.lock_view("l", h.ts_us).expect("in lock-delay").lock_delay_until_us;
    let margin = until - deadline;
    assert!(margin <= validity_us * (500 + cap) / 1_000_000 + 1, "{margin} µs");
}

#[test]
fn one_disagreeing_pair_of_renewals_widens_nothing() {
    let mut h = h();
    let s = h.open(60 * SEC);
    // Honest renewals, then one pair whose client span is 100 ms short
    // (a glitch), then honest again.
    let mut client = ClientSim::new(&h, s);
    let (events, _) = client.renew(&mut h, 3, |_| 1_000);
    assert!(skew_events(&events).is_empty());
    client.rate = 0.966;
    let (events, _) = client.renew(&mut h, 1, |_| 1_000);
    client.rate = 1.0;
    let (more, _) = client.renew(&mut h, 4, |_| 1_000);
    assert!(
        skew_events(&events).is_empty() && skew_events(&more).is_empty(),
        "{events:?} {more:?}"
    );
}

#[test]
fn impossible_clock_samples_are_refused_and_change_nothing() {
    let mut h = h();
    let s = h.open(60 * SEC);
    h.advance(SEC);
    let before = h.sm.session_view(s, h.ts_us).expect("session");
    for (sample, why) in [
        (
            ClockSample {
                sent_us: 10,
                received_us: 9,
                cluster_ts_us: 0,
            },
            "received before it was sent",
        ),
        (
            ClockSample {
                sent_us: 1,
                received_us: 2,
                cluster_ts_us: h.ts_us + SEC,
            },
            "a renewal in the future",
        ),
    ] {
        let keepalive = SessionOp::Keepalive {
            health: None,
            clock: Some(sample),
        };
        let (r, events) = h.op(s, keepalive);
        assert!(matches!(r, Err(Rejection::InvalidReport { .. })), "{why}: {r:?}");
        assert!(events.is_empty(), "{why}: {events:?}");
    }
    let after = h.sm.session_view(s, h.ts_us).expect("session");
    assert_eq!(
        before.deadline_us, after.deadline_us,
        "a refused keepalive renews nothing"
    );
    // The same renewal reported twice (its successor's reply was lost) is
    // no evidence and no error: nothing to divide by.
    let (events, _) = renew_with_clock(&mut h, s, 1, 1.0, |_| 0);
    assert!(events.is_empty());
    let repeat = ClockSample {
        sent_us: 5,
        received_us: 5,
        cluster_ts_us: h.ts_us,
    };
    for _ in 0..2 {
        let keepalive = SessionOp::Keepalive {
            health: None,
            clock: Some(repeat),
        };
        assert!(matches!(h.op(s, keepalive).0, Ok(Reply::KeptAlive { .. })));
    }
}

#[test]
fn committed_clock_estimates_set_the_margin() {
    let mut h = h();
    assert_eq!(h.sm.cluster_rho_ppm(), 500, "no estimate: configured worst case");
    let est = |drift_ppb, sigma_ppb, samples| ClockEstimate {
        offset_us: 0,
        offset_sigma_us: 100,
        drift_ppb,
        drift_sigma_ppb: sigma_ppb,
        samples,
    };
    h.ok(Command::ClockReport {
        subject: Subject::Node(1),
        estimate: est(-20_000, 2_000, 30),
    });
    assert_eq!(h.sm.cluster_rho_ppm(), 26, "|−20 ppm| + 3 × 2 ppm");
    h.ok(Command::ClockReport {
        subject: Subject::Node(2),
        estimate: est(1_000, 1_000, 3),
    });
    assert_eq!(h.sm.cluster_rho_ppm(), 500, "too few samples: worst case");
}

#[test]
fn a_node_drifting_past_the_alert_threshold_raises_one_alert_per_crossing() {
    let mut h = h();
    let est = |drift_ppb| ClockEstimate {
        offset_us: 0,
        offset_sigma_us: 100,
        drift_ppb,
        drift_sigma_ppb: 5_000,
        samples: 30,
    };
    let alerts = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e, Event::NodeClockAlert { node: 3, .. }))
            .count()
    };
    let report = |h: &mut Harness, drift_ppb| {
        h.apply(Command::ClockReport {
            subject: Subject::Node(3),
            estimate: est(drift_ppb),
        })
        .1
    };
    assert_eq!(alerts(&report(&mut h, 900_000)), 0, "below the 1000 ppm default");
    assert_eq!(alerts(&report(&mut h, 2_000_000)), 1, "crossing up alerts");
    assert_eq!(alerts(&report(&mut h, 2_100_000)), 0, "staying above does not repeat");
    assert_eq!(alerts(&report(&mut h, 100_000)), 0);
    assert_eq!(alerts(&report(&mut h, -1_500_000)), 1, "a slow clock alerts too");
    assert!(h.sm.cluster_rho_ppm() >= 1_500, "the margin follows the drifting node");
}

#[test]
fn invalid_config_and_reports_change_nothing() {
    let mut h = h();
    let before = h.sm.config().clone();
    let mut bad = Config::default();
    bad.lease.min_validity_us = 0;
    assert!(matches!(
        h.apply(Command::SetConfig {
            config: bad,
            expected_revision: None,
            by: Principal::admin("root"),
        })
        .0,
        Err(Rejection::InvalidConfig { .. })
    ));
    assert_eq!(h.sm.config(), &before);
    let sample = HealthSample {
        cpu_load_permille: 1001,
        mem_used_permille: 0,
        io_wait_permille: 0,
        rtt_mean_us: 0,
        rtt_stddev_us: 0,
        recent_failures: 0,
        load_permille: 0,
    };
    let r = h
        .apply(Command::HealthReport {
            subject: Subject::Node(1),
            sample,
        })
        .0;
    assert!(matches!(r, Err(Rejection::InvalidReport { .. })));
    assert!(h.sm.node_health(1).is_none());
}

#[test]
fn health_reports_shape_the_next_keepalive() {
    let mut h = h();
    let s = h.open(10 * SEC);
    let critical = HealthSample {
        cpu_load_permille: 1000,
        mem_used_permille: 1000,
        io_wait_permille: 1000,
        rtt_mean_us: 10 * SEC,
        rtt_stddev_us: 0,
        recent_failures: 10,
        load_permille: 0,
    };
    match h
        .op(
            s,
            SessionOp::Keepalive {
                health: Some(critical),
                clock: None,
            },
        )
        .0
    {
        Ok(Reply::KeptAlive { lease, .. }) => {
            assert_eq!(lease.tier, Some(HealthTier::Critical));
            assert_eq!(lease.validity_us, 13 * SEC);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reads_use_the_given_cluster_time() {
    let mut h = h();
    let s = h.open(5 * SEC);
    granted_token(&h.acquire(s, "x", LockMode::Exclusive, 0));
    let later = h.ts_us + 5 * SEC;
    assert_eq!(h.sm.lock_view("x", h.ts_us).map(|v| v.holders.len()), Some(1));
    assert_eq!(
        h.sm.lock_view("x", later).map(|v| v.holders.len()),
        Some(0),
        "holder past its deadline is not reported"
    );
    assert!(h.sm.session_view(s, later).is_none());
}

#[test]
fn restore_checks_version() {
    let h = h();
    let mut snap = h.sm.snapshot();
    snap.version = 99;
    assert_eq!(StateMachine::restore(snap), Err(RestoreError::UnsupportedVersion(99)));
}

#[test]
#[should_panic(expected = "applied after")]
fn replaying_an_index_is_refused() {
    let mut sm = StateMachine::default();
    let _ = sm.apply(Command::Tick, EntryMeta { index: 5, ts_us: 1 });
    let _ = sm.apply(Command::Tick, EntryMeta { index: 5, ts_us: 2 });
}

#[test]
fn cluster_time_never_goes_back() {
    let mut sm = StateMachine::default();
    let _ = sm.apply(Command::Tick, EntryMeta { index: 1, ts_us: 100 });
    let _ = sm.apply(Command::Tick, EntryMeta { index: 2, ts_us: 50 });
    assert_eq!(sm.ts_eff_us(), 100);
}

/// Rule 6 across two frees in one entry: a lock-delay that has run out but
/// whose timer has not fired yet must not cancel a newer, longer delay set
/// in the same entry. Here X's expiry leaves a short delay on `l`; a tick a
/// second later first revokes Y (an unanswered probe), whose delay runs to
/// the end of Y's validity, and only then would X's old timer fire. The
/// waiter W must not be granted before Y's validity has ended.
#[test]
fn a_stale_lock_delay_timer_never_frees_a_lock_early() {
    let mut h = h();
    let x = h.open(10 * SEC);
    let y = h.open(30 * SEC);
    let w = h.open(60 * SEC);
    h.acquire(x, "l", LockMode::Shared, 0).expect("x");
    h.acquire(y, "l", LockMode::Shared, 0).expect("y");
    assert!(matches!(
        h.acquire(w, "l", LockMode::Exclusive, 100 * SEC),
        Ok(Reply::Queued { .. })
    ));
    let x_deadline = h.sm.session_view(x, h.ts_us).expect("x").deadline_us;
    let y_deadline = h.sm.session_view(y, h.ts_us).expect("y").deadline_us;
    h.ts_us = x_deadline;
    h.tick();
    h.ok(Command::Suspect {
        session: y,
        score_permille: 900,
        probe_timeout_us: 1_000,
    });
    h.ts_us = x_deadline + SEC;
    assert!(h.ts_us < y_deadline);
    let events = h.tick();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::LockGranted { session, .. } if *session == w)),
        "W was granted at {} µs, before Y's validity ends at {y_deadline} µs: {events:#?}",
        h.ts_us
    );
    let view = h.sm.lock_view("l", h.ts_us).expect("l is still in lock-delay");
    assert!(view.holders.is_empty());
    assert!(view.lock_delay_until_us >= y_deadline, "{view:?}");
    assert_eq!(h.sm.check_invariants(), Ok(()));
    // After Y's validity (plus the margin) has ended, W gets the lock.
    h.ts_us = view.lock_delay_until_us;
    let events = h.tick();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::LockGranted { session, .. } if *session == w)));
}
