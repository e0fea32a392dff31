//! Known-good and known-bad register histories, and randomized histories
//! generated from a real sequential register.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{cas, got, read, write, Builder};
use driftlock_jepsen::history::{pair, Function, Op, OpKind, Value};
use driftlock_jepsen::linearizability::{check_register, Budget, KeyOutcome, Linearizability};

fn check(ops: &[Op]) -> Linearizability {
    let pairs = pair(ops).expect("well-formed history");
    check_register(&pairs, &Budget::default())
        .expect("register values")
        .outcome
}

fn assert_linearizable(ops: &[Op]) {
    let outcome = check(ops);
    assert_eq!(outcome, Linearizability::Linearizable, "history: {ops:#?}");
}

fn assert_not_linearizable(ops: &[Op], bad_key: &str) -> driftlock_jepsen::linearizability::Witness {
    match check(ops) {
        Linearizability::NotLinearizable { key, witness } => {
            assert_eq!(key, bad_key);
            witness
        }
        other => panic!("expected a violation on {bad_key}, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_write_then_read() {
    let ops = Builder::new()
        .ok(1, read("k"), 0, 5, got(None))
        .ok(1, write("k", 1), 10, 20, Value::None)
        .ok(2, read("k"), 30, 40, got(Some(1)))
        .build();
    assert_linearizable(&ops);
}

#[test]
fn stale_read_after_a_completed_write_is_caught() {
    let ops = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .ok(2, write("k", 2), 20, 30, Value::None)
        .ok(3, read("k"), 40, 50, got(Some(1)))
        .build();
    let witness = assert_not_linearizable(&ops, "k");
    let blocking = witness.blocking.clone().expect("the stale read blocks");
    assert_eq!(blocking.process, 3);
    assert_eq!(witness.longest_prefix.len(), 2, "both writes linearize: {witness}");
    assert_eq!(witness.state_after_prefix, Some(2));
    assert!(witness.stuck.iter().any(|o| o.process == 3));
}

#[test]
fn read_of_a_never_written_value_is_caught() {
    let ops = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .ok(2, read("k"), 20, 30, got(Some(7)))
        .build();
    assert_not_linearizable(&ops, "k");
}

#[test]
fn lost_cas_is_caught() {
    // The cas was acknowledged, yet a later read sees the old value.
    let ops = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .ok(2, cas("k", 1, 2), 20, 30, Value::None)
        .ok(3, read("k"), 40, 50, got(Some(1)))
        .build();
    assert_not_linearizable(&ops, "k");
}

#[test]
fn two_sequential_cas_from_the_same_value_is_caught() {
    let ops = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .ok(2, cas("k", 1, 2), 20, 30, Value::None)
        .ok(3, cas("k", 1, 3), 40, 50, Value::None)
        .build();
    assert_not_linearizable(&ops, "k");
}

#[test]
fn concurrent_cas_both_succeeding_from_one_value_is_caught() {
    let ops = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .ok(2, cas("k", 1, 2), 20, 50, Value::None)
        .ok(3, cas("k", 1, 3), 25, 45, Value::None)
        .build();
    assert_not_linearizable(&ops, "k");
}

#[test]
fn concurrent_writes_then_a_read_of_either_value() {
    for seen in [1, 2] {
        let ops = Builder::new()
            .ok(1, write("k", 1), 0, 100, Value::None)
            .ok(2, write("k", 2), 10, 90, Value::None)
            .ok(3, read("k"), 110, 120, got(Some(seen)))
            .ok(4, read("k"), 130, 140, got(Some(seen)))
            .build();
        assert_linearizable(&ops);
    }
}

#[test]
fn concurrent_writes_then_reads_disagreeing_is_caught() {
    let ops = Builder::new()
        .ok(1, write("k", 1), 0, 100, Value::None)
        .ok(2, write("k", 2), 10, 90, Value::None)
        .ok(3, read("k"), 110, 120, got(Some(1)))
        .ok(4, read("k"), 130, 140, got(Some(2)))
        .build();
    assert_not_linearizable(&ops, "k");
}

#[test]
fn read_concurrent_with_a_write_may_see_old_or_new() {
    for seen in [None, Some(1)] {
        let ops = Builder::new()
            .ok(1, write("k", 1), 0, 100, Value::None)
            .ok(2, read("k"), 20, 30, got(seen))
            .build();
        assert_linearizable(&ops);
    }
}

#[test]
fn new_then_old_value_during_one_write_is_caught() {
    let ops = Builder::new()
        .ok(1, write("k", 1), 0, 100, Value::None)
        .ok(2, read("k"), 20, 30, got(Some(1)))
        .ok(3, read("k"), 40, 50, got(None))
        .build();
    assert_not_linearizable(&ops, "k");
}

#[test]
fn info_write_may_or_may_not_take_effect() {
    // Took effect (even long after its invocation).
    let took = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .op(2, write("k", 2), 20, 30, OpKind::Info, Value::Error("timeout".into()))
        .ok(3, read("k"), 40, 50, got(Some(1)))
        .ok(3, read("k"), 500, 510, got(Some(2)))
        .ok(4, read("k"), 600, 610, got(Some(2)))
        .build();
    assert_linearizable(&took);
    // Never took effect.
    let never = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .op(2, write("k", 2), 20, 30, OpKind::Info, Value::None)
        .ok(3, read("k"), 40, 50, got(Some(1)))
        .ok(3, read("k"), 500, 510, got(Some(1)))
        .build();
    assert_linearizable(&never);
    // Never completed at all.
    let pending = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .pending(2, write("k", 2), 20)
        .ok(3, read("k"), 40, 50, got(Some(2)))
        .build();
    assert_linearizable(&pending);
}

#[test]
fn info_write_cannot_take_effect_twice() {
    let ops = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .op(2, write("k", 2), 20, 30, OpKind::Info, Value::None)
        .ok(3, read("k"), 40, 50, got(Some(2)))
        .ok(3, read("k"), 60, 70, got(Some(1)))
        .build();
    assert_not_linearizable(&ops, "k");
}

#[test]
fn info_write_cannot_take_effect_before_its_invocation() {
    let ops = Builder::new()
        .ok(3, read("k"), 0, 10, got(Some(2)))
        .op(2, write("k", 2), 20, 30, OpKind::Info, Value::None)
        .build();
    assert_not_linearizable(&ops, "k");
}

#[test]
fn info_cas_may_or_may_not_take_effect() {
    for seen in [1, 2] {
        let ops = Builder::new()
            .ok(1, write("k", 1), 0, 10, Value::None)
            .op(2, cas("k", 1, 2), 20, 30, OpKind::Info, Value::None)
            .ok(3, read("k"), 40, 50, got(Some(seen)))
            .build();
        assert_linearizable(&ops);
    }
    // An indeterminate cas whose comparison cannot hold never writes.
    let ops = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .op(2, cas("k", 5, 2), 20, 30, OpKind::Info, Value::None)
        .ok(3, read("k"), 40, 50, got(Some(2)))
        .build();
    assert_not_linearizable(&ops, "k");
}

#[test]
fn failed_ops_did_not_happen() {
    let ok = Builder::new()
        .op(1, write("k", 3), 0, 10, OpKind::Fail, Value::Error("not leader".into()))
        .op(2, cas("k", 0, 4), 20, 30, OpKind::Fail, Value::None)
        .ok(3, read("k"), 40, 50, got(None))
        .build();
    assert_linearizable(&ok);
    let bad = Builder::new()
        .op(1, write("k", 3), 0, 10, OpKind::Fail, Value::None)
        .ok(3, read("k"), 40, 50, got(Some(3)))
        .build();
    assert_not_linearizable(&bad, "k");
}

#[test]
fn info_reads_are_dropped() {
    let ops = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .op(2, read("k"), 20, 30, OpKind::Info, Value::Error("timeout".into()))
        .ok(3, read("k"), 40, 50, got(Some(1)))
        .build();
    assert_linearizable(&ops);
}

#[test]
fn touching_intervals_count_as_concurrent() {
    let ops = Builder::new()
        .ok(1, write("k", 1), 0, 10, Value::None)
        .ok(2, read("k"), 10, 20, got(None))
        .build();
    assert_linearizable(&ops);
}

#[test]
fn keys_are_checked_independently() {
    let ops = Builder::new()
        .ok(1, write("a", 1), 0, 10, Value::None)
        .ok(2, write("b", 1), 0, 10, Value::None)
        .ok(1, read("a"), 20, 30, got(Some(1)))
        .ok(2, read("b"), 20, 30, got(None))
        .build();
    let pairs = pair(&ops).unwrap();
    let report = check_register(&pairs, &Budget::default()).unwrap();
    assert!(matches!(report.outcome, Linearizability::NotLinearizable { ref key, .. } if key == "b"));
    assert_eq!(report.keys["a"].outcome, KeyOutcome::Linearizable);
    assert_eq!(report.keys.len(), 2);
    assert_eq!(report.ops(), 4);
    let verdict = report.verdict();
    assert_eq!(verdict.violations, 1);
    assert!(verdict.message.contains("\"b\""), "{}", verdict.message);
}

#[test]
fn ok_read_without_a_register_value_is_malformed() {
    let ops = Builder::new().ok(1, read("k"), 0, 10, Value::None).build();
    assert!(check_register(&pair(&ops).unwrap(), &Budget::default()).is_err());
}

#[test]
fn exhausted_budget_is_unknown_not_a_pass() {
    let mut b = Builder::new();
    for p in 0..8 {
        b.ok(p, write("k", p + 1), 0, 1000, Value::None);
    }
    b.ok(9, read("k"), 2000, 2010, got(Some(3)));
    let ops = b.build();
    let pairs = pair(&ops).unwrap();
    let tight = Budget {
        max_steps_per_key: 5,
        ..Budget::default()
    };
    let report = check_register(&pairs, &tight).unwrap();
    assert!(matches!(report.outcome, Linearizability::Unknown { ref keys, .. } if keys == &["k".to_string()]));
    assert_eq!(report.verdict().status, driftlock_jepsen::Status::Unknown);
    // With room, it passes.
    assert_eq!(check(&ops), Linearizability::Linearizable);
}

// ---------------------------------------------------------------------------
// Randomized histories from a real register.

/// splitmix64: a small deterministic generator, enough for tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Slot {
    Idle,
    Invoked(Op),
    Applied(Op, OpKind, Value),
}

/// Concurrent clients on a sequential register: every op takes effect
/// atomically at one instant between its invocation and completion, so the
/// history is linearizable by construction. Some ops end `info`, with or
/// without having taken effect; written values are unique.
fn simulate(seed: u64, processes: u64, total_ops: usize, keys: &[&str]) -> Vec<Op> {
    let mut rng = Rng(seed);
    let mut register: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let mut written: Vec<u64> = Vec::new();
    let mut next_value = 1u64;
    let mut next_process = processes;
    let mut ids: Vec<u64> = (0..processes).collect();
    let mut slots: Vec<Slot> = (0..processes).map(|_| Slot::Idle).collect();
    let mut ops: Vec<Op> = Vec::new();
    let mut issued = 0;
    let mut time_ns = 0u64;
    let record = |ops: &mut Vec<Op>, process, kind, f, value, time_ns| {
        let index = ops.len() as u64;
        let op = Op {
            process,
            kind,
            f,
            value,
            time_ns,
            index,
        };
        ops.push(op.clone());
        op
    };
    loop {
        let busy = slots.iter().any(|s| !matches!(s, Slot::Idle));
        if issued >= total_ops && !busy {
            break;
        }
        time_ns += 1 + rng.below(3);
        let p = rng.below(processes) as usize;
        let slot = std::mem::replace(&mut slots[p], Slot::Idle);
        slots[p] = match slot {
            Slot::Idle if issued < total_ops => {
                issued += 1;
                let key = keys[rng.below(keys.len() as u64) as usize].to_string();
                let f = match rng.below(10) {
                    0..=3 => Function::Read { key },
                    4..=6 => {
                        next_value += 1;
                        Function::Write { key, value: next_value }
                    }
                    _ => {
                        let current = register.get(&key).copied().flatten();
                        let from = match (rng.below(2), current) {
                            (0, Some(v)) => v,
                            _ if !written.is_empty() => written[rng.below(written.len() as u64) as usize],
                            _ => 0,
                        };
                        next_value += 1;
                        Function::Cas {
                            key,
                            from,
                            to: next_value,
                        }
                    }
                };
                Slot::Invoked(record(&mut ops, ids[p], OpKind::Invoke, f, Value::None, time_ns))
            }
            Slot::Idle => Slot::Idle,
            Slot::Invoked(invoke) => {
                if rng.below(20) == 0 {
                    // Times out before taking effect.
                    record(
                        &mut ops,
                        invoke.process,
                        OpKind::Info,
                        invoke.f.clone(),
                        Value::None,
                        time_ns,
                    );
                    ids[p] = next_process;
                    next_process += 1;
                    Slot::Idle
                } else {
                    // Takes effect now.
                    let (kind, value) = match &invoke.f {
                        Function::Read { key } => (OpKind::Ok, Value::Register(register.get(key).copied().flatten())),
                        Function::Write { key, value } => {
                            register.insert(key.clone(), Some(*value));
                            written.push(*value);
                            (OpKind::Ok, Value::None)
                        }
                        Function::Cas { key, from, to } => {
                            if register.get(key).copied().flatten() == Some(*from) {
                                register.insert(key.clone(), Some(*to));
                                written.push(*to);
                                (OpKind::Ok, Value::None)
                            } else {
                                (OpKind::Fail, Value::None)
                            }
                        }
                        _ => unreachable!(),
                    };
                    Slot::Applied(invoke, kind, value)
                }
            }
            Slot::Applied(invoke, kind, value) => {
                if rng.below(20) == 0 {
                    // Took effect, but the answer is lost.
                    record(
                        &mut ops,
                        invoke.process,
                        OpKind::Info,
                        invoke.f.clone(),
                        Value::None,
                        time_ns,
                    );
                    ids[p] = next_process;
                    next_process += 1;
                } else {
                    record(&mut ops, invoke.process, kind, invoke.f.clone(), value, time_ns);
                }
                Slot::Idle
            }
        };
    }
    ops
}

const SEEDS: u64 = 120;

#[test]
fn random_histories_of_a_real_register_are_linearizable() {
    let (mut info_ops, mut concurrent) = (0, 0);
    for seed in 0..SEEDS {
        let ops = simulate(seed, 5, 150, &["a", "b", "c"]);
        let report = check_register(&pair(&ops).unwrap(), &Budget::default()).unwrap();
        assert_eq!(report.outcome, Linearizability::Linearizable, "seed {seed}");
        info_ops += report.keys.values().map(|k| k.info_ops).sum::<usize>();
        // Invocations that find another op outstanding.
        let mut outstanding = 0i64;
        for op in &ops {
            if op.kind == OpKind::Invoke {
                concurrent += usize::from(outstanding > 0);
                outstanding += 1;
            } else {
                outstanding -= 1;
            }
        }
    }
    // The generator really produces concurrency and indeterminate ops.
    assert!(info_ops > 100, "{info_ops} info ops");
    assert!(concurrent > 1000, "{concurrent} concurrent invocations");
}

/// Completion position of every `Ok` op: (invoke time, complete time, position of the completion).
fn completed(ops: &[Op]) -> Vec<(u64, u64, usize)> {
    let pairs = pair(ops).unwrap();
    pairs
        .iter()
        .filter(|p| p.is_ok())
        .map(|p| (p.invoke_ns, p.complete_ns.unwrap(), p.complete_index.unwrap() as usize))
        .collect()
}

#[test]
fn random_histories_with_a_read_of_an_unwritten_value_are_not_linearizable() {
    let mut corrupted = 0;
    for seed in 0..SEEDS {
        let mut ops = simulate(seed, 5, 150, &["a", "b", "c"]);
        let target = completed(&ops)
            .into_iter()
            .map(|(_, _, i)| i)
            .find(|&i| matches!(ops[i].f, Function::Read { .. }) && rng_pick(seed, i));
        let Some(i) = target else { continue };
        let key = ops[i].f.register_key().unwrap().to_string();
        ops[i].value = Value::Register(Some(1_000_000_000));
        match check(&ops) {
            Linearizability::NotLinearizable { key: bad, .. } => assert_eq!(bad, key, "seed {seed}"),
            other => panic!("seed {seed}: corrupted read not caught: {other:?}"),
        }
        corrupted += 1;
    }
    assert!(corrupted > SEEDS / 2, "only {corrupted} histories corrupted");
}

fn rng_pick(seed: u64, i: usize) -> bool {
    Rng(seed ^ (i as u64).wrapping_mul(31)).below(3) == 0
}

#[test]
fn random_histories_with_a_stale_read_are_not_linearizable() {
    // Construct a stale read: a read that began after write W2 was
    // acknowledged, which began after W1 was acknowledged, is made to return
    // W1's value. Written values are unique, so no linearization exists.
    let mut corrupted = 0;
    for seed in 0..SEEDS {
        let mut ops = simulate(seed, 5, 150, &["a", "b"]);
        let pairs = pair(&ops).unwrap();
        let writes: Vec<_> = pairs
            .iter()
            .filter(|p| p.is_ok() && matches!(p.f, Function::Write { .. } | Function::Cas { .. }))
            .collect();
        let reads: Vec<_> = pairs
            .iter()
            .filter(|p| p.is_ok() && matches!(p.f, Function::Read { .. }))
            .collect();
        let mut found = None;
        'search: for r in &reads {
            let key = r.f.register_key().unwrap();
            for w2 in writes.iter().filter(|w| w.f.register_key() == Some(key)) {
                if w2.complete_ns.unwrap() >= r.invoke_ns {
                    continue;
                }
                for w1 in writes.iter().filter(|w| w.f.register_key() == Some(key)) {
                    if w1.complete_ns.unwrap() < w2.invoke_ns {
                        let v1 = match w1.f {
                            Function::Write { value, .. } => value,
                            Function::Cas { to, .. } => to,
                            _ => unreachable!(),
                        };
                        found = Some((r.complete_index.unwrap() as usize, v1, key.to_string()));
                        break 'search;
                    }
                }
            }
        }
        let Some((i, v1, key)) = found else { continue };
        ops[i].value = Value::Register(Some(v1));
        match check(&ops) {
            Linearizability::NotLinearizable { key: bad, .. } => assert_eq!(bad, key, "seed {seed}"),
            other => panic!("seed {seed}: stale read not caught: {other:?}"),
        }
        corrupted += 1;
    }
    assert!(
        corrupted > SEEDS / 2,
        "only {corrupted} histories had a stale-read candidate"
    );
}

// ---------------------------------------------------------------------------
// Cross-check against brute force on small arbitrary histories.

/// Brute force: some subset of the `info` ops plus every `Ok` op, in some
/// order that respects real time (a before b if a returned strictly before b
/// was called), is a legal register sequence.
fn brute_force(ops: &[Op]) -> bool {
    struct P {
        call: u64,
        ret: Option<u64>,
        f: Function,
        value: Value,
    }
    let pairs: Vec<P> = pair(ops)
        .unwrap()
        .into_iter()
        .filter(|p| p.completion != driftlock_jepsen::history::Completion::Fail)
        .filter(|p| p.is_ok() || !matches!(p.f, Function::Read { .. }))
        .map(|p| P {
            call: p.invoke_ns,
            ret: if p.is_ok() { p.complete_ns } else { None },
            f: p.f,
            value: p.value,
        })
        .collect();
    fn go(pairs: &[P], used: &mut Vec<bool>, state: Option<u64>) -> bool {
        if pairs.iter().zip(used.iter()).all(|(p, &u)| u || p.ret.is_none()) {
            return true;
        }
        for i in 0..pairs.len() {
            if used[i] {
                continue;
            }
            // Every op that must precede i is already placed.
            let ready = (0..pairs.len()).all(|j| used[j] || j == i || pairs[j].ret.is_none_or(|r| r >= pairs[i].call));
            if !ready {
                continue;
            }
            let info = pairs[i].ret.is_none();
            let next = match (&pairs[i].f, &pairs[i].value) {
                (Function::Read { .. }, Value::Register(v)) => (state == *v).then_some(state),
                (Function::Write { value, .. }, _) => Some(Some(*value)),
                (Function::Cas { from, to, .. }, _) if info => {
                    Some(if state == Some(*from) { Some(*to) } else { state })
                }
                (Function::Cas { from, to, .. }, _) => (state == Some(*from)).then_some(Some(*to)),
                _ => unreachable!(),
            };
            if let Some(next) = next {
                used[i] = true;
                if go(pairs, used, next) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    let mut used = vec![false; pairs.len()];
    go(&pairs, &mut used, None)
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let (mut yes, mut no) = (0, 0);
    for seed in 0..2000u64 {
        let mut rng = Rng(seed.wrapping_mul(7919));
        let mut b = Builder::new();
        let n = 2 + rng.below(5);
        // Half the histories write each value at most once, as the workload
        // does; the others repeat values.
        let unique = seed % 2 == 0;
        for p in 0..n {
            let call = rng.below(40);
            let ret = call + rng.below(25);
            let new_value = if unique { p + 1 } else { 1 + rng.below(3) };
            let f = match rng.below(3) {
                0 => read("k"),
                1 => write("k", new_value),
                _ => cas("k", 1 + rng.below(if unique { n } else { 3 }), new_value),
            };
            let kind = match rng.below(8) {
                0 | 1 => OpKind::Info,
                2 => OpKind::Fail,
                _ => OpKind::Ok,
            };
            let value = match (&f, kind) {
                (Function::Read { .. }, OpKind::Ok) => got(match rng.below(4) {
                    0 => None,
                    _ => Some(1 + rng.below(if unique { n } else { 3 })),
                }),
                _ => Value::None,
            };
            b.op(p, f, call, ret, kind, value);
        }
        let ops = b.build();
        let expected = brute_force(&ops);
        let outcome = check(&ops);
        assert_eq!(
            outcome == Linearizability::Linearizable,
            expected,
            "seed {seed}: {outcome:?}\n{ops:#?}"
        );
        if expected {
            yes += 1
        } else {
            no += 1
        }
    }
    assert!(yes > 400 && no > 400, "{yes} linearizable, {no} not");
}
