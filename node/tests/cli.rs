//! The README's user commands, run as a newcomer runs them: the
//! `driftlock` binary with the `DRIFTLOCK_*` lines `dev` prints in its
//! environment, against a cluster with mutual TLS.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use driftlock_testkit::cli::{run_cli, stdout};
use driftlock_testkit::TestCluster;

/// Runs `driftlock args…` with the cluster's endpoints and administrator
/// certificate in its environment, as `dev`'s export line sets them.
fn driftlock(c: &TestCluster, args: &[&str]) -> Output {
    run_cli(&c.endpoints(), c.admin_tls().as_ref(), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_lock_and_status_work_with_the_environment_dev_prints() {
    let c = TestCluster::start(3).await;
    c.wait_leader(std::time::Duration::from_secs(10)).await;

    let put = driftlock(&c, &["kv", "put", "greeting", "hello"]);
    assert!(put.status.success(), "kv put: {put:?}");
    let get = driftlock(&c, &["kv", "get", "greeting"]);
    assert!(get.status.success(), "kv get: {get:?}");
    assert!(stdout(&get).contains("hello"), "kv get printed: {}", stdout(&get));

    let lock = driftlock(
        &c,
        &["lock", "demo", "--", "sh", "-c", "echo token=$DRIFTLOCK_FENCING_TOKEN"],
    );
    assert!(lock.status.success(), "lock: {lock:?}");
    let printed = stdout(&lock);
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("token="))
        .unwrap_or_else(|| panic!("the command saw no fencing token: {printed}"));
    assert!(token.parse::<u64>().is_ok_and(|t| t > 0), "token {token:?}");

    let status = driftlock(&c, &["status"]);
    assert!(status.status.success(), "status: {status:?}");
    assert!(
        stdout(&status).contains("leader"),
        "status printed: {}",
        stdout(&status)
    );

    // Without the certificate the same command fails, and says how to
    // give one.
    let plain = Command::new(driftlock_testkit::driftlock_exe().expect("driftlock binary"))
        .args(["kv", "get", "greeting"])
        .env("DRIFTLOCK_ENDPOINTS", c.endpoints().join(","))
        .env_remove("DRIFTLOCK_CA")
        .env_remove("DRIFTLOCK_CERT")
        .env_remove("DRIFTLOCK_KEY")
        .output()
        .expect("run driftlock");
    assert!(!plain.status.success(), "a plain-TCP client was answered: {plain:?}");
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("DRIFTLOCK_CA"), "stderr: {stderr}");
}
