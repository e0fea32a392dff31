//! Proof that the checkers can fail: a cluster started with the
//! deliberately broken `--unsafe-fast-cluster-time` must show overlapping
//! lock holds. Runs without root (loopback addresses; only the pause and
//! kill nemeses, which need no namespace).

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use driftlock_jepsen::nemesis::Nemesis;
use driftlock_jepsen::run::{run, RunOptions, Workloads};
use driftlock_jepsen::verdict::{Invalid, Minimums};
use driftlock_jepsen::Status;

fn driftlock_binary() -> PathBuf {
    driftlock_testkit::driftlock_exe().expect("the driftlock binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fast_cluster_time_breaks_lock_safety_and_the_checker_sees_it() {
    let store = tempfile::tempdir().expect("tempdir");
    let outcome = run(RunOptions {
        nodes: 3,
        duration: Duration::from_secs(20),
        nemeses: vec![Nemesis::Pause],
        workloads: Workloads {
            lock: true,
            ..Workloads::default()
        },
        seed: 5,
        driftlock: driftlock_binary(),
        worker_exe: PathBuf::from(env!("CARGO_BIN_EXE_driftlock-jepsen")),
        store: store.path().to_path_buf(),
        no_netns: true,
        node_args: vec!["--unsafe-fast-cluster-time".into()],
        session_ttl_ms: 2_000,
        lock_workers: 3,
        optional_nemeses: Vec::new(),
        minimums: Minimums {
            register_ok: 0,
            lock_holds: 1,
            masterships: 0,
        },
        allow_unknown: false,
        live_progress: false,
    })
    .await
    .expect("the run completes");
    println!("{}", outcome.table);
    let lock = outcome.table.get("lock-safety").expect("lock-safety row");
    assert_eq!(
        lock.status,
        Status::Violation,
        "the broken mode went unnoticed: {lock:?} (history in {})",
        outcome.run_dir.display()
    );
    assert!(lock.violations > 0);
    assert!(!outcome.table.passed(&["lock-safety"], true));
    assert!(!outcome.valid());
    assert!(
        outcome
            .invalid
            .iter()
            .any(|i| matches!(i, Invalid::Violation { checker, .. } if checker == "lock-safety")),
        "{:?}",
        outcome.invalid
    );
    // The pause nemesis ran, so that is not among the reasons.
    assert!(
        !outcome
            .invalid
            .iter()
            .any(|i| matches!(i, Invalid::NemesisDidNotRun { .. })),
        "{:?}",
        outcome.invalid
    );
}
