//! Batch entries (docs/design.md "Batched proposals"): the commands of one
//! entry each get their own revision and response, apply in order, and
//! hand out numbers that keep increasing across entries of any size.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, SEC};
use driftlock_proto::*;
use driftlock_state_machine::*;

fn acquire(name: &str) -> SessionOp {
    SessionOp::Acquire {
        name: name.into(),
        mode: LockMode::Exclusive,
        wait_us: 0,
    }
}

fn token(r: &Response) -> u64 {
    match r {
        Ok(Reply::Granted { token, .. }) => *token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// Two grants in one entry get two tokens, the revisions of their
/// commands; the entries after the batch hand out larger numbers again,
/// although their log index is below what the batch handed out.
#[test]
fn each_command_of_a_batch_gets_its_own_revision() {
    let mut h = Harness::new(Config::default());
    let s = h.open(10 * SEC);
    assert_eq!(s, 1, "a single-command entry's revision is its log index");
    let a = h.session_cmd(s, acquire("a"));
    let b = h.session_cmd(s, acquire("b"));
    let c = h.session_cmd(s, acquire("c"));
    let (responses, _) = h.apply_batch(vec![a, b, c]);
    assert_eq!(h.index, 2);
    let tokens: Vec<u64> = responses.iter().map(token).collect();
    assert_eq!(tokens, vec![2, 3, 4]);
    assert_eq!(h.sm.last_index(), 2);
    assert_eq!(h.sm.last_revision(), 4);

    // Entry 3 comes after revision 4: it gets 5, not its index.
    let r = h.acquire(s, "d", LockMode::Exclusive, 0);
    assert_eq!(token(&r), 5);
    // A session opened later has an id above every token handed out.
    let later = h.open(10 * SEC);
    assert_eq!(later, 6);
    assert_eq!(h.sm.last_index(), 4);
    h.sm.check_invariants().unwrap();
}

/// Commands of a batch apply in order and see each other's effects: the
/// second acquire of the same lock finds it held, a release then frees it
/// for a third, whose token is above the first's.
#[test]
fn a_batch_applies_its_commands_in_order() {
    let mut h = Harness::new(Config::default());
    let s1 = h.open(10 * SEC);
    let s2 = h.open(10 * SEC);
    let first = h.session_cmd(s1, acquire("l"));
    let busy = h.session_cmd(s2, acquire("l"));
    let release = h.session_cmd(s1, SessionOp::Release { name: "l".into() });
    let (responses, events) = h.apply_batch(vec![first, busy, release]);
    let first_token = token(&responses[0]);
    assert!(
        matches!(responses[1], Err(Rejection::LockBusy { .. })),
        "{:?}",
        responses[1]
    );
    assert_eq!(responses[2], Ok(Reply::Done));
    let revision = h.sm.last_revision();
    assert!(
        events
            .iter()
            .any(|(r, e)| *r == revision && matches!(e, Event::LockReleased { .. })),
        "the release's event carries the release's revision {revision}: {events:?}"
    );
    // After the lock-delay a new grant's token exceeds the batch's.
    for _ in 0..12 {
        h.advance(5 * SEC);
        assert!(h.keepalive(s2).is_ok());
    }
    let r = h.acquire(s2, "l", LockMode::Exclusive, 0);
    assert!(token(&r) > first_token);
    h.sm.check_invariants().unwrap();
}

/// A batch inside a batch is refused and changes nothing; the commands
/// around it still apply.
#[test]
fn a_nested_batch_is_refused() {
    let mut h = Harness::new(Config::default());
    let s = h.open(10 * SEC);
    let inner = Command::Batch(vec![h.session_cmd(s, acquire("inner"))]);
    let outer = h.session_cmd(s, acquire("outer"));
    let (responses, _) = h.apply_batch(vec![inner, outer]);
    assert_eq!(responses[0], Err(Rejection::NestedBatch));
    token(&responses[1]);
    assert!(h.holders("inner").is_empty());
    assert_eq!(h.holders("outer"), vec![s]);
    h.sm.check_invariants().unwrap();
}

/// An empty batch answers nothing but still advances cluster time, so what
/// fell due expires.
#[test]
fn an_empty_batch_still_runs_expiries() {
    let mut h = Harness::new(Config::default());
    let s = h.open(2 * SEC);
    h.advance(120 * SEC);
    let (responses, events) = h.apply_batch(Vec::new());
    assert!(responses.is_empty());
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, Event::SessionEnded { session, .. } if *session == s)),
        "{events:?}"
    );
    h.sm.check_invariants().unwrap();
}

/// A retried session command inside a batch answers from the dedupe cache
/// like a retry in its own entry.
#[test]
fn a_retry_inside_a_batch_is_deduplicated() {
    let mut h = Harness::new(Config::default());
    let s = h.open(10 * SEC);
    let grant = h.session_cmd(s, acquire("l"));
    let (responses, _) = h.apply_batch(vec![grant.clone(), grant]);
    assert_eq!(responses[0], responses[1]);
    assert_eq!(h.sm.last_revision(), 3);
    h.sm.check_invariants().unwrap();
}

/// A snapshot keeps the last revision: a replica restored from it hands
/// out the same numbers as the one that applied the batch.
#[test]
fn a_snapshot_keeps_the_last_revision() {
    let mut h = Harness::new(Config::default());
    let s = h.open(10 * SEC);
    let cmds = (0..5).map(|i| h.session_cmd(s, acquire(&format!("l{i}")))).collect();
    h.apply_batch(cmds);
    let restored = StateMachine::restore(h.sm.snapshot()).unwrap();
    assert_eq!(restored.last_revision(), 6);
    assert_eq!(restored, h.sm);
}
