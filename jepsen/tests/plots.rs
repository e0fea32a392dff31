//! The run pictures: points and per-second counts from a history, and
//! both PNGs written (with the embedded font, no system font).

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{got, read, write, Builder};
use driftlock_jepsen::history::{pair, Completion, OpKind, Value};
use driftlock_jepsen::nemesis::Nemesis;
use driftlock_jepsen::plots::{latency_points, throughput, write_plots};
use driftlock_jepsen::verdict::FaultRecord;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

#[test]
fn points_and_throughput_come_from_completed_ops() {
    let ops = Builder::new()
        .ok(1, write("a", 1), 0, 5 * MS, Value::None)
        .op(2, write("a", 2), S, S + 300 * MS, OpKind::Info, Value::None)
        .ok(3, read("a"), 2 * S, 2 * S + 2 * MS, got(Some(1)))
        .op(
            4,
            read("a"),
            2 * S,
            2 * S + 9 * MS,
            OpKind::Fail,
            Value::Error("x".into()),
        )
        .pending(5, write("a", 3), 3 * S)
        .build();
    let pairs = pair(&ops).unwrap();
    let points = latency_points(&pairs);
    assert_eq!(
        points["write"],
        vec![(0.0, 5.0, Completion::Ok), (1.0, 300.0, Completion::Info)]
    );
    assert_eq!(points["read"].len(), 2);
    // Second 0: one ok; 1: one info; 2: one ok, one fail.
    assert_eq!(throughput(&pairs), vec![(0, 1, 0, 0), (1, 0, 0, 1), (2, 1, 1, 0)]);

    let dir = tempfile::tempdir().unwrap();
    let faults = [FaultRecord {
        nemesis: Nemesis::Kill,
        what: "kill -9 n1".into(),
        start_ns: S / 2,
        end_ns: Some(S + S / 2),
        heal: Ok("restart n1".into()),
        took_effect: true,
    }];
    write_plots(&pairs, &faults, dir.path()).unwrap();
    for png in ["latency.png", "throughput.png"] {
        let bytes = std::fs::read(dir.path().join(png)).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{png}");
    }
}
