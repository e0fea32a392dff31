//! Authorization at apply: every refusal of the access policy, of session
//! ownership, of a reused sequence number and of a borrowed fence, each
//! shown to change nothing.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, SEC, SECRET};
use driftlock_proto::*;
use driftlock_state_machine::*;

fn h() -> Harness {
    Harness::new(Config::default())
}

fn alice() -> Principal {
    Principal::client("alice")
}

fn mallory() -> Principal {
    Principal::client("mallory")
}

fn root() -> Principal {
    Principal::admin("root")
}

fn acquire(name: &str) -> SessionOp {
    SessionOp::Acquire {
        name: name.into(),
        mode: LockMode::Exclusive,
        wait_us: 0,
    }
}

/// Applies `cmd` and checks it changed nothing but cluster time: the state
/// after it equals the state after a `Tick` at the same entry. Returns the
/// answer.
fn apply_changing_nothing(h: &mut Harness, cmd: Command) -> Response {
    let meta = h.next_meta();
    let mut expected = h.sm.clone();
    let _ = expected.apply(Command::Tick, meta);
    h.log.push((cmd.clone(), meta));
    let (r, events) = h.sm.apply(cmd, meta);
    assert_eq!(h.sm, expected, "a refused command changed state: {r:?}");
    assert!(events.is_empty(), "a refused command produced events: {events:?}");
    r
}

fn denied(r: &Response) -> String {
    match r {
        Err(rej @ Rejection::PermissionDenied { .. }) => rej.to_string(),
        other => panic!("expected permission denied, got {other:?}"),
    }
}

/// alice: lock and read under `billing/`; `ops` a named admin.
fn billing_policy() -> AccessPolicy {
    AccessPolicy {
        admins: ["ops".to_string()].into(),
        grants: vec![Grant {
            principal: "alice".into(),
            prefix: "billing/".into(),
            rights: Rights::parse("lock,read").unwrap(),
        }],
    }
}

fn set_policy(policy: AccessPolicy, by: Principal) -> Command {
    Command::SetPolicy {
        policy,
        expected_revision: None,
        by,
    }
}

#[test]
fn a_new_cluster_lets_every_client_do_everything() {
    let mut h = h();
    h.by = alice();
    let s = h.open(10 * SEC);
    assert!(matches!(
        h.acquire(s, "any/lock", LockMode::Exclusive, 0),
        Ok(Reply::Granted { .. })
    ));
    let put = Command::KvPut {
        key: "any/key".into(),
        value: b"v".to_vec(),
        by: alice(),
    };
    assert!(matches!(h.apply(put).0, Ok(Reply::KvWritten { .. })));
    assert!(matches!(h.campaign(s, "any/election"), Ok(Reply::Elected { .. })));
    assert_eq!(h.sm.policy(), &AccessPolicy::default());
    assert_eq!(h.sm.policy_view().revision, 0);
}

#[test]
fn only_an_admin_changes_the_policy() {
    let mut h = h();
    let r = apply_changing_nothing(&mut h, set_policy(billing_policy(), alice()));
    assert_eq!(
        denied(&r),
        "permission denied: alice may not make the admin request 'set_policy'"
    );
    // A node is no administrator either.
    let r = apply_changing_nothing(&mut h, set_policy(billing_policy(), Principal::Node(1)));
    denied(&r);

    let (r, events) = h.apply(set_policy(billing_policy(), root()));
    assert_eq!(r, Ok(Reply::Done));
    let revision = h.index;
    assert_eq!(events, vec![Event::PolicyChanged { revision }]);
    assert_eq!(h.sm.policy_view().revision, revision);
    // A name in `admins` is an administrator from then on.
    let (r, _) = h.apply(set_policy(AccessPolicy::default(), Principal::client("ops")));
    assert_eq!(r, Ok(Reply::Done));
}

#[test]
fn an_invalid_or_outdated_policy_changes_nothing() {
    let mut h = h();
    let mut bad = billing_policy();
    bad.grants[0].rights = Rights::default();
    let r = apply_changing_nothing(&mut h, set_policy(bad, root()));
    assert!(matches!(r, Err(Rejection::InvalidPolicy { .. })), "{r:?}");

    h.ok(set_policy(billing_policy(), root()));
    let stale = Command::SetPolicy {
        policy: AccessPolicy::default(),
        expected_revision: Some(0),
        by: root(),
    };
    let r = apply_changing_nothing(&mut h, stale);
    assert_eq!(
        r,
        Err(Rejection::RevisionMismatch {
            expected: 0,
            actual: h.sm.policy_view().revision
        })
    );
    let current = Command::SetPolicy {
        policy: AccessPolicy::default(),
        expected_revision: Some(h.sm.policy_view().revision),
        by: root(),
    };
    h.ok(current);
    assert_eq!(h.sm.policy(), &AccessPolicy::default());
}

#[test]
fn the_policy_in_force_at_apply_decides_every_right() {
    let mut h = h();
    h.ok(set_policy(billing_policy(), root()));
    h.by = alice();
    let s = h.open(10 * SEC);
    assert!(matches!(
        h.acquire(s, "billing/job", LockMode::Exclusive, 0),
        Ok(Reply::Granted { .. })
    ));
    let r = h.acquire(s, "hr/job", LockMode::Exclusive, 0);
    assert_eq!(denied(&r), "permission denied: alice may not lock 'hr/job'");
    assert!(
        h.sm.lock_view("hr/job", h.ts_us).is_none(),
        "the refused acquire created the lock"
    );
    let r = h.campaign(s, "billing/leader");
    assert!(denied(&r).contains("campaign in election 'billing/leader'"));
    assert!(h.sm.election_view("billing/leader", h.ts_us).is_none());
    let r = h
        .op(
            s,
            SessionOp::KvPut {
                key: "billing/x".into(),
                value: b"v".to_vec(),
                fence: None,
            },
        )
        .0;
    assert!(denied(&r).contains("write key 'billing/x'"));
    // Sessionless writes, too; an admin may write anywhere.
    let put = |by| Command::KvPut {
        key: "billing/x".into(),
        value: b"v".to_vec(),
        by,
    };
    let r = apply_changing_nothing(&mut h, put(alice()));
    denied(&r);
    let delete = Command::KvDelete {
        key: "billing/x".into(),
        by: alice(),
    };
    denied(&apply_changing_nothing(&mut h, delete));
    assert!(matches!(h.apply(put(root())).0, Ok(Reply::KvWritten { .. })));
    // Giving up needs no right, even with no grant left.
    h.by = root();
    h.ok(set_policy(AccessPolicy::closed(), root()));
    h.by = alice();
    assert_eq!(h.release(s, "billing/job"), Ok(Reply::Done));
}

#[test]
fn another_principal_cannot_use_a_session_or_its_cached_replies() {
    let mut h = h();
    let s = h.open_as(&alice(), 10 * SEC);
    // alice's acquire, seq 1, is granted and cached.
    let first = h.apply(Command::Session {
        session: s,
        seq: 1,
        op: acquire("l"),
        by: alice(),
    });
    assert!(matches!(first.0, Ok(Reply::Granted { .. })));
    // mallory replays (session, 1) to read the cached grant, releases the
    // lock, closes the session, acquires in it: each refused, nothing
    // changes (not even the dedupe cache).
    for (seq, op) in [
        (1, acquire("l")),
        (2, SessionOp::Release { name: "l".into() }),
        (3, SessionOp::Close),
        (4, acquire("m")),
    ] {
        let cmd = Command::Session {
            session: s,
            seq,
            op,
            by: mallory(),
        };
        let r = apply_changing_nothing(&mut h, cmd);
        assert_eq!(
            denied(&r),
            format!("permission denied: mallory may not use session '{s}'")
        );
    }
    // An admin is not the owner either.
    let cmd = Command::Session {
        session: s,
        seq: 2,
        op: SessionOp::Close,
        by: root(),
    };
    denied(&apply_changing_nothing(&mut h, cmd));
    assert_eq!(h.holders("l"), vec![s]);
    // The owner's certificate reissued with the admin role keeps the session.
    let r = h.apply(Command::Session {
        session: s,
        seq: 2,
        op: SessionOp::Release { name: "l".into() },
        by: Principal::admin("alice"),
    });
    assert_eq!(r.0, Ok(Reply::Done));
}

#[test]
fn a_reused_open_nonce_from_someone_else_gets_nothing() {
    let mut h = h();
    let open = |owner: Principal, secret: SessionSecret| Command::OpenSession {
        nonce: 77,
        client_name: "c".into(),
        requested_ttl_us: 10 * SEC,
        owner,
        secret_sha256: secret.digest(),
    };
    let first = h.apply(open(alice(), SECRET)).0;
    let Ok(Reply::SessionOpened { session, .. }) = first else {
        panic!("{first:?}")
    };
    // The genuine retry finds the session.
    assert!(matches!(
        h.apply(open(alice(), SECRET)).0,
        Ok(Reply::SessionOpened { session: s, .. }) if s == session
    ));
    denied(&apply_changing_nothing(&mut h, open(mallory(), SECRET)));
    denied(&apply_changing_nothing(&mut h, open(alice(), SessionSecret([9; 32]))));
    assert_eq!(h.sm.stats().sessions, 1);
}

#[test]
fn the_dedupe_cache_answers_only_the_same_operation() {
    let mut h = h();
    let s = h.open(10 * SEC);
    let cmd = |op| Command::Session {
        session: s,
        seq: 1,
        op,
        by: Principal::client("t"),
    };
    let first = h.apply(cmd(acquire("a"))).0;
    assert!(matches!(first, Ok(Reply::Granted { .. })));
    // The same (session, seq) with another operation: refused, nothing done.
    let r = apply_changing_nothing(&mut h, cmd(acquire("b")));
    assert_eq!(r, Err(Rejection::SequenceReused { seq: 1 }));
    assert!(h.sm.lock_view("b", h.ts_us).is_none());
    let r = apply_changing_nothing(&mut h, cmd(SessionOp::Release { name: "a".into() }));
    assert_eq!(r, Err(Rejection::SequenceReused { seq: 1 }));
    assert_eq!(h.holders("a"), vec![s]);
    // The same operation is a retry: the first answer, nothing done.
    let r = apply_changing_nothing(&mut h, cmd(acquire("a")));
    assert_eq!(r, first);
}

#[test]
fn a_fenced_write_needs_the_writer_to_hold_the_fence() {
    let mut h = h();
    let (a, b) = (h.open(10 * SEC), h.open(10 * SEC));
    let token = match h.acquire(a, "x", LockMode::Exclusive, 0) {
        Ok(Reply::Granted { token, .. }) => token,
        other => panic!("{other:?}"),
    };
    let put = SessionOp::KvPut {
        key: "counter".into(),
        value: b"1".to_vec(),
        fence: Some(Fence {
            lock: "x".into(),
            token,
        }),
    };
    // b borrows a's published token.
    let seq = h.next_seq(b);
    let cmd = Command::Session {
        session: b,
        seq,
        op: put.clone(),
        by: Principal::client("t"),
    };
    let r = h.apply(cmd).0;
    assert_eq!(r, Err(Rejection::FenceNotHolder { token }));
    assert!(h.sm.kv_get("counter").is_none(), "the borrowed fence wrote");
    assert!(matches!(h.op(a, put).0, Ok(Reply::KvWritten { .. })));

    // Shared holders granted in one entry share a token: each may write.
    let (c, d) = (h.open(10 * SEC), h.open(10 * SEC));
    let t1 = match h.acquire(c, "s", LockMode::Shared, 0) {
        Ok(Reply::Granted { token, .. }) => token,
        other => panic!("{other:?}"),
    };
    let t2 = match h.acquire(d, "s", LockMode::Shared, 0) {
        Ok(Reply::Granted { token, .. }) => token,
        other => panic!("{other:?}"),
    };
    let fenced = |token| SessionOp::KvPut {
        key: "shared".into(),
        value: b"1".to_vec(),
        fence: Some(Fence {
            lock: "s".into(),
            token,
        }),
    };
    assert!(matches!(h.op(d, fenced(t2)).0, Ok(Reply::KvWritten { .. })));
    if t1 != t2 {
        assert!(h.op(c, fenced(t1)).0.is_err(), "c's older token passed");
    }
}

#[test]
fn owners_secrets_and_policy_survive_a_snapshot() {
    let mut h = h();
    h.ok(set_policy(billing_policy(), root()));
    let s = h.open_as(&alice(), 10 * SEC);
    let restored = StateMachine::restore(h.sm.snapshot()).expect("restore");
    assert_eq!(restored, h.sm);
    assert_eq!(restored.policy(), &billing_policy());
    let (owner, digest) = restored.session_owner(s).expect("session");
    assert_eq!(owner, &alice());
    assert!(SECRET.matches(digest));
    assert_eq!(SNAPSHOT_VERSION, 6);
}

#[test]
fn no_view_or_event_carries_the_secret_or_its_digest() {
    let mut h = h();
    let digest = SECRET.digest();
    let (_, events) = h.apply(Command::OpenSession {
        nonce: 5,
        client_name: "c".into(),
        requested_ttl_us: 10 * SEC,
        owner: alice(),
        secret_sha256: digest,
    });
    let s = h.index;
    let view = h.sm.session_view(s, h.ts_us).expect("view");
    let contains = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for (what, bytes) in [
        ("view", bincode::serialize(&view).unwrap()),
        ("events", bincode::serialize(&events).unwrap()),
        ("debug", format!("{view:?}{events:?}").into_bytes()),
    ] {
        assert!(!contains(&bytes, &digest), "the {what} carries the digest");
        assert!(!contains(&bytes, &SECRET.0), "the {what} carries the secret");
    }
}
