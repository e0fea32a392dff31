//! Known-good and known-bad histories for the lock, fencing, counter,
//! election and durability checkers, and the verdict table.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{acquire, got, hold, master, mastership, mastership_lost, read, release, write, Builder};
use driftlock_jepsen::checkers::{
    check_all, check_counter, check_durability, check_elections, check_fencing, check_lock_safety, CheckConfig,
    CounterViolation, ElectionViolation, FencingViolation, Status,
};
use driftlock_jepsen::history::{pair, Function, History, Op, OpKind, PairedOp, Value, FINAL_PHASE};

fn pairs(ops: &[Op]) -> Vec<PairedOp> {
    pair(ops).expect("well-formed history")
}

const MS: u64 = 1_000_000;

// ---------------------------------------------------------------------------
// Lock safety.

#[test]
fn overlapping_lock_holds_are_caught() {
    let ops = Builder::new()
        .ok(1, acquire("L"), 0, 10 * MS, hold(5, 100, 10 * MS, 50 * MS))
        .ok(2, acquire("L"), 20 * MS, 30 * MS, hold(9, 200, 30 * MS, 80 * MS))
        .build();
    let report = check_lock_safety(&pairs(&ops), MS).unwrap();
    assert_eq!(report.holds.len(), 2);
    assert_eq!(report.overlap_count, 1);
    let o = &report.overlaps[0];
    assert_eq!((o.first.process, o.second.process), (1, 2));
    assert_eq!((o.first.fencing_token, o.second.fencing_token), (5, 9));
    assert_eq!(o.overlap_ns, 20 * MS);
    let verdict = report.verdict();
    assert_eq!(verdict.status, Status::Violation);
    assert!(verdict.message.contains("p1 token 5"), "{}", verdict.message);
}

#[test]
fn adjacent_and_epsilon_close_holds_are_fine() {
    let ops = Builder::new()
        .ok(1, acquire("L"), 0, 10 * MS, hold(5, 100, 10 * MS, 50 * MS))
        .ok(2, acquire("L"), 20 * MS, 50 * MS, hold(9, 200, 50 * MS, 80 * MS))
        // Overlaps the previous by 0.5 ms: within ε = 1 ms.
        .ok(
            3,
            acquire("L"),
            60 * MS,
            79 * MS,
            hold(12, 300, 79 * MS + MS / 2, 90 * MS),
        )
        // Another lock may be held at the same time.
        .ok(4, acquire("M"), 0, 10 * MS, hold(6, 400, 10 * MS, 90 * MS))
        .build();
    let report = check_lock_safety(&pairs(&ops), MS).unwrap();
    assert!(report.overlaps.is_empty(), "{:?}", report.overlaps);
    assert_eq!(report.verdict().status, Status::Pass);
    // With ε = 0 the half-millisecond overlap is a violation.
    let strict = check_lock_safety(&pairs(&ops), 0).unwrap();
    assert_eq!(strict.overlap_count, 1);
    assert_eq!(strict.overlaps[0].overlap_ns, MS / 2);
}

#[test]
fn release_records_the_final_interval() {
    // At grant p1 believed it held until 100 ms, but it released at 40 ms.
    let released = Builder::new()
        .ok(1, acquire("L"), 0, 10 * MS, hold(5, 100, 10 * MS, 100 * MS))
        .ok(1, release("L"), 40 * MS, 45 * MS, hold(5, 100, 10 * MS, 40 * MS))
        .ok(2, acquire("L"), 41 * MS, 46 * MS, hold(9, 200, 46 * MS, 120 * MS))
        .build();
    assert!(check_lock_safety(&pairs(&released), MS).unwrap().overlaps.is_empty());
    // Keepalives extended p1's belief past p2's grant: caught, even though
    // the release timed out.
    let extended = Builder::new()
        .ok(1, acquire("L"), 0, 10 * MS, hold(5, 100, 10 * MS, 30 * MS))
        .op(
            1,
            release("L"),
            60 * MS,
            70 * MS,
            OpKind::Info,
            hold(5, 100, 10 * MS, 60 * MS),
        )
        .ok(2, acquire("L"), 40 * MS, 50 * MS, hold(9, 200, 50 * MS, 120 * MS))
        .build();
    let report = check_lock_safety(&pairs(&extended), MS).unwrap();
    assert_eq!(report.overlap_count, 1);
    assert_eq!(report.overlaps[0].overlap_ns, 10 * MS);
}

#[test]
fn failed_and_indeterminate_acquires_hold_nothing() {
    let ops = Builder::new()
        .ok(1, acquire("L"), 0, 10 * MS, hold(5, 100, 10 * MS, 50 * MS))
        .op(
            2,
            acquire("L"),
            0,
            20 * MS,
            OpKind::Info,
            Value::Error("timeout".into()),
        )
        .op(3, acquire("L"), 0, 20 * MS, OpKind::Fail, Value::Error("held".into()))
        .build();
    let report = check_lock_safety(&pairs(&ops), MS).unwrap();
    assert_eq!(report.holds.len(), 1);
    assert!(report.overlaps.is_empty());
}

#[test]
fn ok_acquire_without_a_hold_is_malformed() {
    let ops = Builder::new().ok(1, acquire("L"), 0, 10, Value::None).build();
    assert!(check_lock_safety(&pairs(&ops), 0).is_err());
    assert!(check_fencing(&pairs(&ops)).is_err());
}

// ---------------------------------------------------------------------------
// Fencing tokens.

#[test]
fn increasing_tokens_pass() {
    let ops = Builder::new()
        .ok(1, acquire("L"), 0, 10, hold(5, 1, 10, 20))
        .ok(2, acquire("L"), 30, 40, hold(9, 2, 40, 50))
        .ok(3, acquire("L"), 60, 70, hold(12, 3, 70, 80))
        .build();
    let report = check_fencing(&pairs(&ops)).unwrap();
    assert_eq!(report.grants, 3);
    assert!(report.violations.is_empty());
    assert_eq!(report.verdict().status, Status::Pass);
}

#[test]
fn non_monotonic_tokens_are_caught() {
    let ops = Builder::new()
        .ok(1, acquire("L"), 0, 10, hold(9, 1, 10, 20))
        .ok(2, acquire("L"), 30, 40, hold(5, 2, 40, 50))
        .build();
    let report = check_fencing(&pairs(&ops)).unwrap();
    assert_eq!(report.violations.len(), 1);
    match &report.violations[0] {
        FencingViolation::NotIncreasing { earlier, later } => {
            assert_eq!((earlier.fencing_token, later.fencing_token), (9, 5));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(report.verdict().status, Status::Violation);
}

#[test]
fn concurrent_acquisitions_may_complete_in_either_order() {
    // p2's grant (token 9) is seen before p1's (token 5), but both were
    // outstanding together: the grants could have been made 5 then 9.
    let ops = Builder::new()
        .ok(1, acquire("L"), 0, 40, hold(5, 1, 40, 45))
        .ok(2, acquire("L"), 5, 30, hold(9, 2, 30, 35))
        .build();
    assert!(check_fencing(&pairs(&ops)).unwrap().violations.is_empty());
}

#[test]
fn duplicate_tokens_are_caught() {
    let ops = Builder::new()
        .ok(1, acquire("L"), 0, 40, hold(5, 1, 40, 45))
        .ok(2, acquire("L"), 5, 30, hold(5, 2, 30, 35))
        // Same token on another lock is fine.
        .ok(3, acquire("M"), 5, 30, hold(5, 3, 30, 35))
        .build();
    let report = check_fencing(&pairs(&ops)).unwrap();
    assert_eq!(report.violations.len(), 1);
    assert!(matches!(report.violations[0], FencingViolation::Duplicate { .. }));
}

// ---------------------------------------------------------------------------
// Fenced counter.

fn inc() -> Function {
    Function::Increment { lock: "L".into() }
}

fn counter_read() -> Function {
    Function::CounterRead { lock: "L".into() }
}

#[test]
fn consistent_counter_passes() {
    let ops = Builder::new()
        .ok(1, inc(), 0, 10, Value::Counter(1))
        .ok(2, inc(), 20, 30, Value::Counter(2))
        .op(3, inc(), 40, 50, OpKind::Info, Value::None)
        .op(4, inc(), 60, 70, OpKind::Fail, Value::None)
        .ok(5, counter_read(), 100, 110, Value::Counter(3))
        .build();
    let report = check_counter(&pairs(&ops)).unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let c = &report.counters["L"];
    assert_eq!((c.ok_increments, c.info_increments, c.failed_increments), (2, 1, 1));
    assert_eq!(c.final_value, Some(3));
    assert_eq!(report.verdict().status, Status::Pass);
    assert_eq!(report.verdict().checked, 3);
}

#[test]
fn lost_increment_is_caught() {
    let ops = Builder::new()
        .ok(1, inc(), 0, 10, Value::Counter(1))
        .ok(2, inc(), 20, 30, Value::Counter(2))
        .ok(3, inc(), 40, 50, Value::Counter(3))
        .ok(5, counter_read(), 100, 110, Value::Counter(2))
        .build();
    let report = check_counter(&pairs(&ops)).unwrap();
    assert!(report.violations.iter().any(|v| matches!(
        v,
        CounterViolation::FinalOutOfRange {
            final_value: 2,
            min: 3,
            max: 3,
            ..
        }
    )));
    assert!(report
        .violations
        .iter()
        .any(|v| matches!(v, CounterViolation::FinalBelowAcknowledged { acknowledged: 3, .. })));
    assert_eq!(report.verdict().status, Status::Violation);
}

#[test]
fn two_increments_seeing_the_same_value_are_caught() {
    // Both wrote 2: one increment overwrote the other, yet the final value
    // happens to be in range thanks to an indeterminate increment.
    let ops = Builder::new()
        .ok(1, inc(), 0, 10, Value::Counter(1))
        .ok(2, inc(), 20, 30, Value::Counter(2))
        .ok(3, inc(), 20, 35, Value::Counter(2))
        .op(4, inc(), 40, 50, OpKind::Info, Value::None)
        .ok(5, counter_read(), 100, 110, Value::Counter(3))
        .build();
    let report = check_counter(&pairs(&ops)).unwrap();
    assert_eq!(report.violations.len(), 1);
    assert!(matches!(
        report.violations[0],
        CounterViolation::DuplicateValue { value: 2, .. }
    ));
}

#[test]
fn counter_above_every_possible_increment_is_caught() {
    let ops = Builder::new()
        .ok(1, inc(), 0, 10, Value::Counter(1))
        .op(2, inc(), 20, 30, OpKind::Info, Value::None)
        .ok(5, counter_read(), 100, 110, Value::Counter(3))
        .build();
    let report = check_counter(&pairs(&ops)).unwrap();
    assert!(matches!(
        report.violations[0],
        CounterViolation::FinalOutOfRange { min: 1, max: 2, .. }
    ));
}

#[test]
fn counter_without_a_final_read_is_unknown() {
    let ops = Builder::new().ok(1, inc(), 0, 10, Value::Counter(1)).build();
    let report = check_counter(&pairs(&ops)).unwrap();
    assert_eq!(report.unread, vec!["L".to_string()]);
    assert_eq!(report.verdict().status, Status::Unknown);
}

// ---------------------------------------------------------------------------
// Elections.

fn campaign() -> Function {
    Function::Campaign { election: "E".into() }
}

fn resign() -> Function {
    Function::Resign { election: "E".into() }
}

fn observe() -> Function {
    Function::Master { election: "E".into() }
}

#[test]
fn orderly_succession_passes() {
    let ops = Builder::new()
        .ok(1, campaign(), 0, 10 * MS, mastership(10, 100, 10 * MS, 60 * MS))
        .ok(9, observe(), 20 * MS, 20 * MS, master(10, 100))
        .ok(1, resign(), 40 * MS, 41 * MS, mastership(10, 100, 10 * MS, 40 * MS))
        .ok(2, campaign(), 5 * MS, 41 * MS, mastership(25, 200, 41 * MS, 90 * MS))
        .ok(9, observe(), 50 * MS, 50 * MS, master(25, 200))
        .ok(9, observe(), 55 * MS, 55 * MS, Value::Master(None))
        .ok(9, observe(), 56 * MS, 56 * MS, master(25, 200))
        .build();
    let report = check_elections(&pairs(&ops), MS).unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.masterships.len(), 2);
    assert_eq!(report.observations, 4);
    assert_eq!(report.verdict().status, Status::Pass);
}

#[test]
fn two_masters_in_one_epoch_are_caught() {
    let ops = Builder::new()
        .ok(1, campaign(), 0, 10, mastership(10, 100, 10, 20))
        .ok(2, campaign(), 30, 40, mastership(10, 200, 40, 50))
        .build();
    let report = check_elections(&pairs(&ops), 0).unwrap();
    assert_eq!(report.violations.len(), 1);
    match &report.violations[0] {
        ElectionViolation::TwoMasters { epoch, sessions, .. } => {
            assert_eq!(*epoch, 10);
            assert_eq!(sessions, &vec![100, 200]);
        }
        other => panic!("{other:?}"),
    }
    // Also when only an observer sees the second one.
    let ops = Builder::new()
        .ok(1, campaign(), 0, 10, mastership(10, 100, 10, 20))
        .ok(9, observe(), 15, 15, master(10, 300))
        .build();
    assert!(matches!(
        check_elections(&pairs(&ops), 0).unwrap().violations[0],
        ElectionViolation::TwoMasters { epoch: 10, .. }
    ));
}

#[test]
fn epoch_going_backwards_for_an_observer_is_caught() {
    let ops = Builder::new()
        .ok(9, observe(), 10, 10, master(25, 200))
        .ok(8, observe(), 15, 15, master(10, 100))
        .ok(9, observe(), 20, 20, master(10, 100))
        .build();
    let report = check_elections(&pairs(&ops), 0).unwrap();
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    assert!(matches!(
        report.violations[0],
        ElectionViolation::EpochRegressed {
            observer: 9,
            from_epoch: 25,
            to_epoch: 10,
            ..
        }
    ));
}

#[test]
fn overlapping_masterships_are_caught() {
    let ops = Builder::new()
        .ok(1, campaign(), 0, 10 * MS, mastership(10, 100, 10 * MS, 60 * MS))
        .ok(2, campaign(), 5 * MS, 41 * MS, mastership(25, 200, 41 * MS, 90 * MS))
        .build();
    let report = check_elections(&pairs(&ops), MS).unwrap();
    assert_eq!(report.violation_count, 1);
    match &report.violations[0] {
        ElectionViolation::Overlap {
            first,
            second,
            overlap_ns,
            ..
        } => {
            assert_eq!((first.epoch, second.epoch), (10, 25));
            assert_eq!(*overlap_ns, 19 * MS);
        }
        other => panic!("{other:?}"),
    }
}

/// A warm handover as the histories record it: the old master (session
/// 100, epoch 10, local validity to 90 ms) learns of the loss at
/// `lost_ms`, the new master's campaign returns at 41 ms, and the old
/// master's resign (the cleanup after the loss) starts at 60 ms.
fn handover_history(lost_ms: Option<u64>) -> Vec<Op> {
    let final_value = match lost_ms {
        Some(lost) => mastership_lost(10, 100, 10 * MS, 60 * MS, lost * MS),
        None => mastership(10, 100, 10 * MS, 60 * MS),
    };
    Builder::new()
        .ok(1, campaign(), 0, 10 * MS, mastership(10, 100, 10 * MS, 90 * MS))
        .ok(2, campaign(), 5 * MS, 41 * MS, mastership(25, 200, 41 * MS, 120 * MS))
        .op(1, resign(), 60 * MS, 61 * MS, OpKind::Fail, final_value)
        .build()
}

#[test]
fn a_handover_whose_old_master_was_told_first_passes() {
    let report = check_elections(&pairs(&handover_history(Some(40))), MS).unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let old = &report.masterships[0];
    assert_eq!((old.held_until_ns, old.lost_ns), (40 * MS, Some(40 * MS)));
}

#[test]
fn a_new_master_while_the_old_one_still_believed_it_led_is_caught() {
    // The loss signal fired 9 ms after the new master started: beyond ε.
    let report = check_elections(&pairs(&handover_history(Some(50))), MS).unwrap();
    assert_eq!(report.violation_count, 1);
    assert!(matches!(
        &report.violations[0],
        ElectionViolation::Overlap { overlap_ns, .. } if *overlap_ns == 9 * MS
    ));
    // No loss signal at all (the library before issue 14): the old master
    // believed it led until it resigned at 60 ms, by its session's
    // validity; one epoch per master is not enough to pass.
    let report = check_elections(&pairs(&handover_history(None)), MS).unwrap();
    assert!(matches!(
        &report.violations[..],
        [ElectionViolation::Overlap { overlap_ns, .. }] if *overlap_ns == 19 * MS
    ));
    // Within ε: measurement error, not a violation.
    let report = check_elections(&pairs(&handover_history(Some(42))), MS).unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

#[test]
fn a_loss_signal_after_the_validity_end_changes_nothing() {
    let ops = Builder::new()
        .ok(
            1,
            campaign(),
            0,
            10 * MS,
            mastership_lost(10, 100, 10 * MS, 30 * MS, 80 * MS),
        )
        .ok(2, campaign(), 5 * MS, 41 * MS, mastership(25, 200, 41 * MS, 90 * MS))
        .build();
    let report = check_elections(&pairs(&ops), MS).unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.masterships[0].held_until_ns, 30 * MS);
}

// ---------------------------------------------------------------------------
// Durability.

#[test]
fn durable_writes_pass() {
    let ops = Builder::new()
        .ok(1, write("a", 1), 0, 10, Value::None)
        .ok(2, write("a", 2), 20, 30, Value::None)
        .ok(3, write("b", 5), 0, 10, Value::None)
        .ok(1, read("a"), 100, 110, got(Some(2)))
        .ok(2, read("b"), 100, 110, got(Some(5)))
        .build();
    let report = check_durability(&pairs(&ops), 100).unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.final_reads, 2);
    assert_eq!(report.verdict().status, Status::Pass);
}

#[test]
fn lost_acknowledged_write_is_caught() {
    let ops = Builder::new()
        .ok(1, write("a", 1), 0, 10, Value::None)
        .ok(1, read("a"), 100, 110, got(None))
        .build();
    let report = check_durability(&pairs(&ops), 100).unwrap();
    assert_eq!(report.violations.len(), 1);
    assert_eq!(report.violations[0].admissible, vec![Some(1)]);
    assert_eq!(report.verdict().status, Status::Violation);
}

#[test]
fn known_overwritten_value_is_caught() {
    let ops = Builder::new()
        .ok(1, write("a", 1), 0, 10, Value::None)
        .ok(2, write("a", 2), 20, 30, Value::None)
        .ok(1, read("a"), 100, 110, got(Some(1)))
        .build();
    let report = check_durability(&pairs(&ops), 100).unwrap();
    assert_eq!(report.violations.len(), 1);
    assert_eq!(report.violations[0].observed, Some(1));
}

#[test]
fn concurrent_and_indeterminate_writes_are_admissible() {
    for seen in [1, 2, 3, 4] {
        let ops = Builder::new()
            .ok(1, write("a", 1), 0, 50, Value::None)
            .ok(2, write("a", 2), 10, 40, Value::None)
            .op(3, write("a", 3), 60, 70, OpKind::Info, Value::None)
            .op(4, common::cas("a", 2, 4), 60, 70, OpKind::Info, Value::None)
            .op(5, write("a", 9), 60, 70, OpKind::Fail, Value::None)
            .ok(1, read("a"), 100, 110, got(Some(seen)))
            .build();
        let report = check_durability(&pairs(&ops), 100).unwrap();
        assert!(report.violations.is_empty(), "seen {seen}: {:?}", report.violations);
    }
    // The failed write is not admissible.
    let ops = Builder::new()
        .ok(1, write("a", 1), 0, 50, Value::None)
        .op(5, write("a", 9), 60, 70, OpKind::Fail, Value::None)
        .ok(1, read("a"), 100, 110, got(Some(9)))
        .build();
    assert_eq!(check_durability(&pairs(&ops), 100).unwrap().violations.len(), 1);
}

#[test]
fn written_key_without_a_final_read_is_unknown() {
    let ops = Builder::new()
        .ok(1, write("a", 1), 0, 10, Value::None)
        .ok(1, read("a"), 20, 30, got(Some(1)))
        .build();
    let report = check_durability(&pairs(&ops), 100).unwrap();
    assert_eq!(report.unread_keys, vec!["a".to_string()]);
    assert_eq!(report.verdict().status, Status::Unknown);
}

// ---------------------------------------------------------------------------
// Everything together.

#[test]
fn check_all_builds_the_verdict_table() {
    let history = History::in_memory();
    let w = history.invoke(1, write("k", 1));
    history.ok(&w, Value::None);
    history.mark_phase(0, FINAL_PHASE);
    let r = history.invoke(1, read("k"));
    history.ok(&r, got(Some(1)));
    let a = history.invoke(2, acquire("L"));
    let now = history.now_ns();
    history.ok(&a, hold(7, 2, now, now + 10 * MS));
    let table = check_all(&history.ops(), &CheckConfig::default()).unwrap();
    let names: Vec<&str> = table.rows.iter().map(|r| r.checker.as_str()).collect();
    assert_eq!(
        names,
        [
            "linearizability",
            "durability",
            "lock-safety",
            "fencing",
            "counter",
            "elections"
        ]
    );
    assert_eq!(table.get("linearizability").unwrap().status, Status::Pass);
    assert_eq!(table.get("durability").unwrap().status, Status::Pass);
    assert_eq!(table.get("lock-safety").unwrap().status, Status::Pass);
    assert_eq!(table.get("counter").unwrap().status, Status::Skipped);
    // Skipped passes only when its workload was not requested.
    assert!(table.passed(&["linearizability", "durability", "lock-safety", "fencing"], false));
    assert!(!table.passed(
        &["linearizability", "durability", "lock-safety", "fencing", "counter"],
        true
    ));
    assert!(!table.passed(&["elections"], true));

    let text = table.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7);
    assert!(lines[0].starts_with("checker          result"), "{text}");
    // Columns are aligned: the result column starts at the same offset.
    let col = lines[0].find("result").unwrap();
    for line in &lines[1..] {
        assert_eq!(&line[col - 2..col], "  ", "{text}");
    }
}

#[test]
fn unknown_fails_the_run_unless_allowed() {
    let ops = Builder::new()
        .ok(1, Function::Increment { lock: "L".into() }, 0, 10, Value::Counter(1))
        .build();
    let table = check_all(&ops, &CheckConfig::default()).unwrap();
    assert_eq!(table.get("counter").unwrap().status, Status::Unknown);
    // Unknown fails whether or not the counter was required...
    assert!(!table.passed(&[], false));
    assert!(!table.passed(&["counter"], false));
    // ...unless unknowns are allowed (--allow-unknown).
    assert!(table.passed(&["counter"], true));

    let bad = Builder::new()
        .ok(1, acquire("L"), 0, 10 * MS, hold(5, 100, 10 * MS, 50 * MS))
        .ok(2, acquire("L"), 20 * MS, 30 * MS, hold(9, 200, 30 * MS, 80 * MS))
        .build();
    let table = check_all(&bad, &CheckConfig::default()).unwrap();
    assert_eq!(table.get("lock-safety").unwrap().status, Status::Violation);
    // A violation fails the run even in a checker nobody required.
    assert!(!table.passed(&[], true));
    println!("{table}");
}
