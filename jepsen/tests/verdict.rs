//! A run is valid only if every requested checker passed on enough data:
//! each rule of `driftlock_jepsen::verdict::judge` on its own makes a run
//! that is otherwise a clean pass invalid. No cluster needed.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{acquire, got, hold, read, write, Builder};
use driftlock_jepsen::checkers::{Status, Verdict, VerdictTable};
use driftlock_jepsen::history::{pair, Function, OpKind, Value, FINAL_PHASE};
use driftlock_jepsen::nemesis::Nemesis;
use driftlock_jepsen::verdict::{
    counts_by_type, judge, FaultRecord, Invalid, Minimums, RunFacts, WorkloadCounts, Workloads,
};
use driftlock_jepsen::workload::KnownValues;

const MIN: Minimums = Minimums {
    register_ok: 100,
    lock_holds: 10,
    masterships: 5,
};

fn row(checker: &str, status: Status) -> Verdict {
    Verdict {
        checker: checker.into(),
        status,
        checked: 50,
        violations: u64::from(status == Status::Violation),
        message: "m".into(),
    }
}

/// Every checker `ok`.
fn all_pass() -> VerdictTable {
    VerdictTable {
        rows: [
            "linearizability",
            "durability",
            "lock-safety",
            "fencing",
            "counter",
            "elections",
        ]
        .into_iter()
        .map(|c| row(c, Status::Pass))
        .collect(),
    }
}

fn with_status(checker: &str, status: Status) -> VerdictTable {
    let mut t = all_pass();
    for r in &mut t.rows {
        if r.checker == checker {
            r.status = status;
        }
    }
    t
}

fn fault(n: Nemesis) -> FaultRecord {
    FaultRecord {
        nemesis: n,
        what: format!("{n} something"),
        start_ns: 1,
        end_ns: Some(2),
        heal: Ok("healed".into()),
        took_effect: true,
    }
}

/// A clean run: all workloads above their minimums, kill and pause each
/// applied, the final restart and reads done.
fn good_facts() -> RunFacts {
    RunFacts {
        workloads: Workloads::ALL,
        nemeses: vec![Nemesis::Kill, Nemesis::Pause],
        counts: WorkloadCounts {
            register_ok: 100,
            lock_holds: 10,
            masterships: 5,
        },
        faults: vec![fault(Nemesis::Kill), fault(Nemesis::Pause), fault(Nemesis::Kill)],
        unavailable: BTreeMap::new(),
        workload_errors: Vec::new(),
        final_restart: Ok(()),
        final_reads: Ok(()),
    }
}

fn verdict(table: &VerdictTable, facts: &RunFacts) -> Vec<Invalid> {
    judge(table, facts, &MIN, false, &BTreeMap::new())
}

#[test]
fn a_clean_run_is_valid() {
    assert_eq!(verdict(&all_pass(), &good_facts()), vec![]);
}

#[test]
fn a_violation_is_invalid() {
    let v = verdict(&with_status("fencing", Status::Violation), &good_facts());
    assert!(
        matches!(&v[..], [Invalid::Violation { checker, .. }] if checker == "fencing"),
        "{v:?}"
    );
}

#[test]
fn unknown_is_invalid_unless_allowed() {
    let table = with_status("linearizability", Status::Unknown);
    let v = verdict(&table, &good_facts());
    assert!(
        matches!(&v[..], [Invalid::Unknown { checker, .. }] if checker == "linearizability"),
        "{v:?}"
    );
    assert!(v[0].to_string().contains("--allow-unknown"));
    assert_eq!(judge(&table, &good_facts(), &MIN, true, &BTreeMap::new()), vec![]);
}

#[test]
fn a_skipped_checker_of_a_requested_workload_is_invalid() {
    for checker in ["durability", "counter", "elections"] {
        let v = verdict(&with_status(checker, Status::Skipped), &good_facts());
        assert!(
            matches!(&v[..], [Invalid::Skipped { checker: c }] if c == checker),
            "{v:?}"
        );
    }
    // A checker missing from the table altogether, too.
    let mut table = all_pass();
    table.rows.retain(|r| r.checker != "lock-safety");
    let v = verdict(&table, &good_facts());
    assert!(
        matches!(&v[..], [Invalid::Skipped { checker }] if checker == "lock-safety"),
        "{v:?}"
    );
}

#[test]
fn a_skipped_checker_of_a_workload_not_requested_is_fine() {
    let mut facts = good_facts();
    facts.workloads = Workloads {
        lock: true,
        ..Workloads::default()
    };
    let mut table = with_status("elections", Status::Skipped);
    for r in &mut table.rows {
        if r.checker == "linearizability" || r.checker == "durability" {
            r.status = Status::Skipped;
        }
    }
    assert_eq!(verdict(&table, &facts), vec![]);
}

#[test]
fn too_few_ops_of_any_requested_workload_is_invalid() {
    type Lower = fn(&mut WorkloadCounts);
    let cases: [(&str, Lower); 3] = [
        ("register ok ops", |c| c.register_ok = 99),
        ("lock holds", |c| c.lock_holds = 9),
        ("masterships", |c| c.masterships = 0),
    ];
    for (what, lower) in cases {
        let mut facts = good_facts();
        lower(&mut facts.counts);
        let v = verdict(&all_pass(), &facts);
        assert!(
            matches!(&v[..], [Invalid::TooFewOps { what: w, .. }] if *w == what),
            "{what}: {v:?}"
        );
    }
    // Not requested: no minimum.
    let mut facts = good_facts();
    facts.workloads.election = false;
    facts.counts.masterships = 0;
    let mut table = all_pass();
    table.rows.retain(|r| r.checker != "elections");
    assert_eq!(verdict(&table, &facts), vec![]);
}

#[test]
fn a_requested_nemesis_that_never_ran_is_invalid() {
    // Every attempt failed: the reason is its last error.
    let mut facts = good_facts();
    facts.faults.retain(|f| f.nemesis != Nemesis::Pause);
    let errors = BTreeMap::from([(Nemesis::Pause, "no live node".to_owned())]);
    let v = judge(&all_pass(), &facts, &MIN, false, &errors);
    assert_eq!(
        v,
        vec![Invalid::NemesisDidNotRun {
            nemesis: Nemesis::Pause,
            why: "no live node".into()
        }]
    );
    // Unavailable on this machine.
    let mut facts = good_facts();
    facts.nemeses.push(Nemesis::Partition);
    facts
        .unavailable
        .insert(Nemesis::Partition, "needs network namespaces".into());
    let v = verdict(&all_pass(), &facts);
    assert!(
        matches!(&v[..], [Invalid::NemesisDidNotRun { nemesis: Nemesis::Partition, why }] if why.contains("namespaces")),
        "{v:?}"
    );
    // The schedule never reached it.
    let mut facts = good_facts();
    facts.nemeses.push(Nemesis::Snapshot);
    let v = verdict(&all_pass(), &facts);
    assert!(
        matches!(
            &v[..],
            [Invalid::NemesisDidNotRun {
                nemesis: Nemesis::Snapshot,
                ..
            }]
        ),
        "{v:?}"
    );
    // A fault that took effect counts even if its heal failed.
    let mut facts = good_facts();
    facts.faults[1].heal = Err("n2 did not catch up".into());
    assert_eq!(verdict(&all_pass(), &facts), vec![]);
    // One that was applied but never took effect (a snapshot fault whose
    // follower caught up from the log) does not.
    let mut facts = good_facts();
    facts.nemeses.push(Nemesis::Snapshot);
    let mut f = fault(Nemesis::Snapshot);
    f.took_effect = false;
    f.heal = Err("n2 caught up without installing a snapshot".into());
    facts.faults.push(f);
    let v = verdict(&all_pass(), &facts);
    assert!(
        matches!(&v[..], [Invalid::NemesisDidNotRun { nemesis: Nemesis::Snapshot, why }]
            if why.contains("never took effect") && why.contains("without installing")),
        "{v:?}"
    );
}

#[test]
fn a_workload_error_is_invalid() {
    let mut facts = good_facts();
    facts
        .workload_errors
        .push("register: process 0 cannot connect: refused".into());
    facts
        .workload_errors
        .push("lock worker 1 exited with exit status: 2".into());
    let v = verdict(&all_pass(), &facts);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|i| matches!(i, Invalid::Workload(_))));
}

#[test]
fn a_failed_final_restart_or_final_read_is_invalid() {
    let mut facts = good_facts();
    facts.final_restart = Err("n3 does not answer".into());
    let v = verdict(&all_pass(), &facts);
    assert!(
        matches!(&v[..], [Invalid::FinalRestart(e)] if e.contains("n3")),
        "{v:?}"
    );
    let mut facts = good_facts();
    facts.final_reads = Err("not read: r1".into());
    let v = verdict(&all_pass(), &facts);
    assert!(matches!(&v[..], [Invalid::FinalReads(e)] if e.contains("r1")), "{v:?}");
}

#[test]
fn every_reason_is_listed() {
    let mut facts = good_facts();
    facts.final_reads = Err("x".into());
    facts.counts.lock_holds = 0;
    facts.faults.clear();
    let v = verdict(&with_status("counter", Status::Unknown), &facts);
    // unknown counter, too few holds, kill and pause never ran, final reads.
    assert_eq!(v.len(), 5, "{v:?}");
}

#[test]
fn workload_counts_are_ok_ops_before_the_final_phase() {
    let ops = Builder::new()
        .ok(1, write("a", 1), 0, 10, Value::None)
        .op(2, write("a", 2), 0, 10, OpKind::Info, Value::None)
        .ok(3, read("a"), 20, 30, got(Some(1)))
        .op(
            4,
            common::cas("a", 1, 3),
            20,
            30,
            OpKind::Fail,
            Value::Error("value differs".into()),
        )
        .ok(5, acquire("L"), 0, 10, hold(5, 100, 10, 50))
        .ok(
            6,
            Function::Phase {
                name: FINAL_PHASE.into(),
            },
            100,
            100,
            Value::None,
        )
        .ok(7, read("a"), 110, 120, got(Some(1)))
        .build();
    let pairs = pair(&ops).unwrap();
    assert_eq!(
        WorkloadCounts::from_pairs(&pairs),
        WorkloadCounts {
            register_ok: 2,
            lock_holds: 1,
            masterships: 0
        }
    );
    let by_type = counts_by_type(&pairs);
    assert_eq!((by_type["read"].ok, by_type["read"].total()), (2, 2));
    assert_eq!((by_type["write"].ok, by_type["write"].info), (1, 1));
    assert_eq!((by_type["cas"].ok, by_type["cas"].fail), (0, 1));
    assert!(!by_type.contains_key("phase"));
}

#[test]
fn cas_mostly_expects_the_last_value_this_process_saw() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut known = KnownValues::default();
    known.set("r0", Some(41));
    let hits = (0..1000)
        .filter(|_| known.cas_from("r0", 1_000_000, &mut rng) == 41)
        .count();
    // CAS_FROM_KNOWN = 0.8 of them; the rest are random over a million.
    assert!((700..=900).contains(&hits), "{hits}");
    // Unknown key, or forgotten after an indeterminate write: random.
    known.set("r0", None);
    let hits = (0..1000)
        .filter(|_| known.cas_from("r0", 1_000_000, &mut rng) == 41)
        .count();
    assert!(hits < 5, "{hits}");
}

#[test]
fn election_process_ids_never_collide() {
    use driftlock_jepsen::workload::candidate_process;
    let (first, n) = (100_000, 3);
    let observer = first + n;
    let operator = first + n + 1;
    let mut seen = std::collections::BTreeSet::new();
    for k in 0..n {
        for infos in 0..50 {
            let p = candidate_process(first, n, k, infos);
            assert!(p != observer && p != operator, "candidate {k} after {infos}: {p}");
            assert!(seen.insert(p), "candidate {k} after {infos}: {p} reused");
        }
    }
}
