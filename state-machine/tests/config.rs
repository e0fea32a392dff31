//! `SetConfig` at apply: only an administrator changes the replicated
//! configuration, only to one that validates and, when a revision is
//! named, only if nothing changed it since; a refusal changes nothing, and
//! a change touches exactly the settings asked and says which.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, SEC};
use driftlock_proto::*;
use driftlock_state_machine::*;

fn root() -> Principal {
    Principal::admin("root")
}

fn set(config: Config, expected_revision: Option<u64>, by: Principal) -> Command {
    Command::SetConfig {
        config,
        expected_revision,
        by,
    }
}

/// Applies `cmd` and checks it changed nothing but cluster time: the state
/// after it equals the state after a `Tick` at the same entry.
fn apply_changing_nothing(h: &mut Harness, cmd: Command) -> Response {
    let meta = h.next_meta();
    let mut expected = h.sm.clone();
    let _ = expected.apply(Command::Tick, meta);
    h.log.push((cmd.clone(), meta));
    let (r, events) = h.sm.apply(cmd, meta);
    assert_eq!(h.sm, expected, "a refused SetConfig changed state: {r:?}");
    assert!(events.is_empty(), "a refused SetConfig produced events: {events:?}");
    r
}

#[test]
fn a_good_set_changes_exactly_the_keys_asked_and_says_which() {
    let mut h = Harness::new(Config::default());
    assert_eq!(h.sm.config_view().revision, 0);
    let mut new = Config::default();
    new.set_key("lease.max_ttl_us", "60000000").unwrap();
    new.set_key("limits.max_keys", "5").unwrap();
    let (r, events) = h.apply(set(new.clone(), Some(0), root()));
    assert_eq!(r, Ok(Reply::Done));
    let revision = h.index;
    assert_eq!(
        events,
        vec![Event::ConfigChanged {
            revision,
            changes: vec![
                ConfigChange {
                    key: "lease.max_ttl_us".into(),
                    old: "300000000".into(),
                    new: "60000000".into()
                },
                ConfigChange {
                    key: "limits.max_keys".into(),
                    old: "1000000".into(),
                    new: "5".into()
                },
            ]
        }]
    );
    assert_eq!(h.sm.config_view(), ConfigView { config: new, revision });
    assert_eq!(Config::default().diff(h.sm.config()).len(), 2);
    // The new bound is in force from the next entry on.
    h.by = Principal::client("alice");
    let r = h.apply(Command::OpenSession {
        nonce: 77,
        client_name: "c".into(),
        requested_ttl_us: 61 * SEC,
        owner: Principal::client("alice"),
        secret_sha256: common::SECRET.digest(),
    });
    assert!(matches!(r.0, Err(Rejection::TtlOutOfRange { .. })), "{:?}", r.0);
    // And it survives a snapshot with its revision.
    let restored = StateMachine::restore(h.sm.snapshot()).unwrap();
    assert_eq!(restored.config_view().revision, revision);
}

#[test]
fn a_set_that_fails_validation_changes_nothing() {
    let mut h = Harness::new(Config::default());
    let mut bad = Config::default();
    bad.set_key("lease.min_ttl_us", "0").unwrap();
    let r = apply_changing_nothing(&mut h, set(bad, None, root()));
    match r {
        Err(Rejection::InvalidConfig { detail }) => assert!(detail.contains("lease.min_ttl_us"), "{detail}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert_eq!(h.sm.config(), &Config::default());
    assert_eq!(h.sm.config_revision(), 0);
}

#[test]
fn a_stale_revision_changes_nothing() {
    let mut h = Harness::new(Config::default());
    let mut first = Config::default();
    first.set_key("time.lock_delay_extra_us", "1000").unwrap();
    h.ok(set(first.clone(), Some(0), root()));
    let revision = h.sm.config_revision();
    assert!(revision > 0);
    // A second operator read revision 0 too and now writes against it.
    let mut second = Config::default();
    second.set_key("time.max_drift_ppm", "600").unwrap();
    let r = apply_changing_nothing(&mut h, set(second.clone(), Some(0), root()));
    assert_eq!(
        r,
        Err(Rejection::RevisionMismatch {
            expected: 0,
            actual: revision
        })
    );
    assert_eq!(h.sm.config(), &first);
    // Against the revision in force it goes through.
    h.ok(set(second.clone(), Some(revision), root()));
    assert_eq!(h.sm.config(), &second);
}

#[test]
fn only_an_admin_changes_the_config() {
    let mut h = Harness::new(Config::default());
    let mut new = Config::default();
    new.set_key("limits.max_keys", "5").unwrap();
    for by in [Principal::client("alice"), Principal::Node(1)] {
        let r = apply_changing_nothing(&mut h, set(new.clone(), None, by));
        assert!(matches!(r, Err(Rejection::PermissionDenied { .. })), "{r:?}");
    }
    assert_eq!(h.sm.config(), &Config::default());
    h.ok(set(new.clone(), None, root()));
    assert_eq!(h.sm.config(), &new);
}
