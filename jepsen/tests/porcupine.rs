//! The export of the register workload to Porcupine's format.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{cas, got, read, write, Builder};
use driftlock_jepsen::history::{pair, OpKind, Value};
use driftlock_jepsen::porcupine::{export_porcupine, porcupine_operations, sanitize_key};

#[test]
fn porcupine_export() {
    let ops = Builder::new()
        .ok(1, write("a/b", 1), 0, 10, Value::None)
        .ok(2, read("a/b"), 5, 20, got(Some(1)))
        .op(3, cas("a/b", 1, 2), 30, 40, OpKind::Info, Value::None)
        .op(4, read("a/b"), 30, 40, OpKind::Info, Value::None)
        .op(5, write("a/b", 3), 50, 60, OpKind::Fail, Value::None)
        .ok(6, read("x"), 70, 80, got(None))
        .build();
    let pairs = pair(&ops).unwrap();
    let per_key = porcupine_operations(&pairs).unwrap();
    assert_eq!(per_key.len(), 2);
    assert_eq!(per_key["a/b"].len(), 3, "fail and info read are left out");
    let info_cas = &per_key["a/b"][2];
    assert_eq!(info_cas.return_ns, 81, "info returns one past the end of the history");

    let dir = tempfile::tempdir().unwrap();
    let files = export_porcupine(&pairs, dir.path()).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].1.file_name().unwrap(), "porcupine-a_b.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&files[0].1).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"ClientId": 1, "Input": {"op": "write", "value": 1}, "Call": 0, "Output": {"ok": true}, "Return": 10},
            {"ClientId": 2, "Input": {"op": "read"}, "Call": 5, "Output": {"value": 1}, "Return": 20},
            {"ClientId": 3, "Input": {"op": "cas", "from": 1, "to": 2}, "Call": 30, "Output": {"unknown": true}, "Return": 81},
        ])
    );
    let x: serde_json::Value = serde_json::from_slice(&std::fs::read(&files[1].1).unwrap()).unwrap();
    assert_eq!(x[0]["Output"], serde_json::json!({"value": null}));
}

#[test]
fn key_sanitizing() {
    assert_eq!(sanitize_key("a/b c"), "a_b_c");
    assert_eq!(sanitize_key(""), "_");
    assert_eq!(sanitize_key("..x"), "_..x");
    assert_eq!(sanitize_key("k-1_v.2"), "k-1_v.2");
}
