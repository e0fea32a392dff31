//! The slow-disk shim delays fsync by what its delay file says, and only
//! then: built with `cc` (every Rust toolchain's linker) and preloaded
//! into `dd conv=fsync`, which ends with one fsync.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use driftlock_jepsen::slowdisk::{build, set_delay_us, DELAY_FILE_ENV};

fn dd_with_fsync(lib: &std::path::Path, delay_file: &std::path::Path, dir: &std::path::Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("dd")
        .args(["if=/dev/zero", "bs=1", "count=1", "conv=fsync"])
        .arg(format!("of={}", dir.join("out").display()))
        .env("LD_PRELOAD", lib)
        .env(DELAY_FILE_ENV, delay_file)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("dd runs");
    assert!(status.success());
    started.elapsed()
}

#[test]
fn the_shim_delays_fsync_by_the_delay_file() {
    let dir = tempfile::tempdir().unwrap();
    let lib = build(dir.path()).expect("the shim builds with cc");
    let delay_file = dir.path().join("delay-us");
    set_delay_us(&delay_file, 1_000_000).unwrap();
    // A lower bound only: the shim sleeps at least this long.
    assert!(dd_with_fsync(&lib, &delay_file, dir.path()) >= Duration::from_secs(1));
    // Changed while nothing restarts: read on every call.
    set_delay_us(&delay_file, 0).unwrap();
    let fast = dd_with_fsync(&lib, &delay_file, dir.path());
    assert!(fast < Duration::from_secs(1), "{fast:?}");
}
