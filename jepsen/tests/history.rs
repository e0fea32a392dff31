//! The recorder, JSONL round trip and pairing.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{acquire, got, hold, read, write, Builder};
use driftlock_jepsen::history::{
    final_phase_start_ns, load_jsonl, pair, validate, write_jsonl, Completion, Function, History, HistoryError, Op,
    OpKind, Value, FINAL_PHASE, HISTORY_FILE,
};

#[test]
fn recorder_assigns_indices_and_monotonic_times_across_threads() {
    let history = History::in_memory();
    let handles: Vec<_> = (0..4u64)
        .map(|p| {
            let h = history.clone();
            thread::spawn(move || {
                for i in 0..250 {
                    let inv = h.invoke(p, write("k", p * 1000 + i));
                    h.ok(&inv, Value::None);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let ops = history.ops();
    assert_eq!(ops.len(), 2000);
    assert_eq!(history.len(), 2000);
    for (i, op) in ops.iter().enumerate() {
        assert_eq!(op.index, i as u64);
    }
    validate(&ops).unwrap();
    let pairs = pair(&ops).unwrap();
    assert_eq!(pairs.len(), 1000);
    assert!(pairs.iter().all(|p| p.is_ok()));
}

#[test]
fn ns_at_converts_instants() {
    let history = History::in_memory();
    let later = history.start() + Duration::from_millis(5);
    assert_eq!(history.ns_at(later), 5_000_000);
    assert_eq!(history.ns_at(history.start()), 0);
    let before = Instant::now();
    assert!(history.now_ns() >= history.ns_at(before));
}

#[test]
fn jsonl_round_trip_through_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run-1");
    let history = Arc::new(History::create(&run).unwrap());
    assert_eq!(history.path(), Some(run.join(HISTORY_FILE)));

    let inv = history.invoke(1, write("k", 7));
    history.ok(&inv, Value::None);
    let inv = history.invoke(2, read("k"));
    history.ok(&inv, got(Some(7)));
    let inv = history.invoke(3, acquire("L"));
    history.ok(&inv, hold(42, 9, 100, 200));
    let inv = history.invoke(4, write("k", 8));
    history.info(&inv, Value::Error("timeout".into()));
    let inv = history.invoke(5, read("k"));
    history.fail(&inv, Value::Error("not leader".into()));
    history.observe(6, Function::Master { election: "e".into() }, Value::Master(None));
    history.mark_phase(7, FINAL_PHASE);
    history.invoke(8, Function::Increment { lock: "L".into() });
    history.flush().unwrap();

    let loaded = load_jsonl(&run.join(HISTORY_FILE)).unwrap();
    assert_eq!(loaded, history.ops());
    assert_eq!(loaded.len(), 15);

    // One op per line, externally tagged.
    let text = std::fs::read_to_string(run.join(HISTORY_FILE)).unwrap();
    assert_eq!(text.lines().count(), 15);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "Invoke");
    assert_eq!(first["f"]["Write"]["key"], "k");
    assert_eq!(first["f"]["Write"]["value"], 7);
    assert_eq!(first["value"], "None");

    // A second history cannot clobber the first.
    assert!(matches!(History::create(&run), Err(HistoryError::Io { .. })));

    // Writing a loaded history elsewhere and reading it back is the identity.
    let copy = dir.path().join("copy.jsonl");
    write_jsonl(&copy, &loaded).unwrap();
    assert_eq!(load_jsonl(&copy).unwrap(), loaded);

    // Pairing: the final phase marker and the never-completed increment.
    let pairs = pair(&loaded).unwrap();
    assert_eq!(final_phase_start_ns(&pairs), Some(loaded[12].time_ns));
    let last = pairs.last().unwrap();
    assert_eq!(last.completion, Completion::Info);
    assert_eq!(last.complete_index, None);
}

#[test]
fn masterships_written_before_the_loss_signal_still_load() {
    let old = r#"{"epoch":4,"session":3,"held_from_ns":10,"held_until_ns":20}"#;
    let m: driftlock_jepsen::history::Mastership = serde_json::from_str(old).unwrap();
    assert_eq!((m.lost_ns, m.believed_until_ns()), (None, 20));
    let text = serde_json::to_string(&m).unwrap();
    assert_eq!(text, old, "no loss signal: nothing new written");
    let lost = driftlock_jepsen::history::Mastership { lost_ns: Some(15), ..m };
    let back: driftlock_jepsen::history::Mastership =
        serde_json::from_str(&serde_json::to_string(&lost).unwrap()).unwrap();
    assert_eq!(back, lost);
    assert_eq!(back.believed_until_ns(), 15);
}

#[test]
fn loader_reports_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(HISTORY_FILE);
    let ops = Builder::new().ok(1, write("k", 1), 0, 10, Value::None).build();
    write_jsonl(&path, &ops).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n{\"process\":1,\"kind\":\"Nope\"}\n");
    std::fs::write(&path, text).unwrap();
    match load_jsonl(&path) {
        Err(HistoryError::Parse { line, .. }) => assert_eq!(line, 4),
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert!(matches!(
        load_jsonl(&dir.path().join("missing")),
        Err(HistoryError::Io { .. })
    ));
}

#[test]
fn loader_rejects_out_of_order_histories() {
    let mut ops = Builder::new().ok(1, write("k", 1), 0, 10, Value::None).build();
    ops[1].time_ns = 0;
    ops[0].time_ns = 5;
    assert!(matches!(validate(&ops), Err(HistoryError::Malformed { index: 1, .. })));
    ops[0].time_ns = 0;
    ops[1].index = 0;
    assert!(matches!(validate(&ops), Err(HistoryError::Malformed { .. })));
}

fn op(process: u64, kind: OpKind, f: Function, index: u64) -> Op {
    Op {
        process,
        kind,
        f,
        value: Value::None,
        time_ns: index * 10,
        index,
    }
}

#[test]
fn pairing_rejects_malformed_histories() {
    // Completion without an invocation.
    let ops = vec![op(1, OpKind::Ok, read("k"), 0)];
    assert!(matches!(pair(&ops), Err(HistoryError::Malformed { index: 0, .. })));
    // Two outstanding invocations of one process.
    let ops = vec![op(1, OpKind::Invoke, read("k"), 0), op(1, OpKind::Invoke, read("k"), 1)];
    assert!(matches!(pair(&ops), Err(HistoryError::Malformed { index: 1, .. })));
    // A completion of a different function.
    let ops = vec![op(1, OpKind::Invoke, read("k"), 0), op(1, OpKind::Ok, read("j"), 1)];
    assert!(matches!(pair(&ops), Err(HistoryError::Malformed { index: 1, .. })));
    // Interleaved processes pair correctly.
    let ops = vec![
        op(1, OpKind::Invoke, read("k"), 0),
        op(2, OpKind::Invoke, write("k", 1), 1),
        op(1, OpKind::Info, read("k"), 2),
        op(2, OpKind::Fail, write("k", 1), 3),
    ];
    let pairs = pair(&ops).unwrap();
    assert_eq!(pairs[0].completion, Completion::Info);
    assert_eq!(pairs[0].complete_index, Some(2));
    assert_eq!(pairs[1].completion, Completion::Fail);
    assert_eq!(pairs[1].invoke_ns, 10);
    assert_eq!(pairs[1].complete_ns, Some(30));
}
