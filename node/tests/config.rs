//! `driftlock cluster config` against a three-node cluster over mutual TLS
//! (docs/design.md "Adaptive leases"): an administrator sets a
//! key and every node's own applied state shows it, with its revision in
//! `status` and the change in each node's log; a non-admin is refused; an
//! invalid value is refused with a message naming the key, on the command
//! line and by the node itself, and nothing changes.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::{Duration, Instant};

use driftlock_proto::tls::TlsFiles;
use driftlock_proto::{AdminRequest, ApiError, Config, Consistency, Query, QueryResult, Rejection, Security};
use driftlock_testkit::cli::{run_cli, stderr, stdout};
use driftlock_testkit::TestCluster;

const T: Duration = Duration::from_secs(10);

/// Runs the `driftlock` binary with `args` against `endpoints`, showing
/// `files`' certificate through the environment.
fn cli(endpoints: &[String], files: &TlsFiles, args: &[&str]) -> Output {
    run_cli(endpoints, Some(files), args)
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

fn assert_failed_with(out: &Output, want: &str) {
    assert!(!out.status.success(), "succeeded: {}", stdout(out));
    assert!(stderr(out).contains(want), "stderr: {}", stderr(out));
}

/// Node `i`'s `config get --serializable`, retried until it shows `want`
/// (a follower applies the change a moment after the leader) or 10 s pass.
async fn wait_config_line(c: &TestCluster, i: usize, files: &TlsFiles, want: &str) -> String {
    let deadline = Instant::now() + T;
    loop {
        let out = cli(
            &[c.client_addr(i).to_owned()],
            files,
            &["cluster", "config", "get", "--serializable"],
        );
        assert_ok(&out, "config get --serializable");
        let text = stdout(&out);
        if text.contains(want) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn config_of(c: &TestCluster, leader: usize, files: &TlsFiles) -> (Config, u64) {
    let api = driftlock_proto::connect(c.client_addr(leader), T, &Security::from_files(Some(files)).unwrap())
        .await
        .expect("connect");
    let reply = api
        .read(driftlock_proto::context(T), Query::Config, Consistency::Linearizable)
        .await
        .expect("rpc")
        .expect("read");
    match reply.result {
        QueryResult::Config(v) => (v.config, v.revision),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_over_tls() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let admin = c.admin_tls().expect("a TLS cluster");
    let alice = c.client_tls("alice", false);
    let all = c.endpoints();

    // Anyone may read it; a new cluster runs the default at revision 0.
    let out = cli(&all, &alice, &["cluster", "config", "get"]);
    assert_ok(&out, "config get");
    let text = stdout(&out);
    assert!(
        text.starts_with("# replicated config in force: revision 0, the default of a new cluster"),
        "{text}"
    );
    assert!(text.contains("\nmax_ttl_us = 300000000\n"), "{text}");

    // A non-admin may not change it.
    let out = cli(&all, &alice, &["cluster", "config", "set", "lease.max_ttl_us=60000000"]);
    assert_failed_with(&out, "permission denied");
    assert!(stderr(&out).contains("set_config"), "{}", stderr(&out));
    assert_eq!(config_of(&c, leader, &admin).await, (Config::default(), 0));

    // An invalid value: refused on the command line naming the key…
    let out = cli(&all, &admin, &["cluster", "config", "set", "lease.min_ttl_us=0"]);
    assert_failed_with(&out, "lease.min_ttl_us must be > 0");
    assert!(stderr(&out).contains("nothing changed"), "{}", stderr(&out));
    let out = cli(&all, &admin, &["cluster", "config", "set", "lease.max_ttl=5"]);
    assert_failed_with(&out, "unknown config key 'lease.max_ttl'");
    // …and by the node itself, before proposing, when a client skips that.
    let mut bad = Config::default();
    bad.lease.min_ttl_us = 0;
    let api = driftlock_proto::connect(c.client_addr(leader), T, &Security::from_files(Some(&admin)).unwrap())
        .await
        .expect("connect");
    let r = api
        .admin(
            driftlock_proto::context(T),
            AdminRequest::SetConfig {
                config: bad,
                expected_revision: None,
            },
        )
        .await
        .expect("rpc");
    match r {
        Err(ApiError::Rejected(Rejection::InvalidConfig { detail })) => {
            assert!(detail.contains("lease.min_ttl_us"), "{detail}")
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert_eq!(config_of(&c, leader, &admin).await, (Config::default(), 0));

    // `diff` shows a change and changes nothing.
    let file = c.dir().join("new-config.toml");
    std::fs::write(&file, "[lease]\nmax_ttl_us = 60_000_000\n").unwrap();
    let out = cli(&all, &admin, &["cluster", "config", "diff", file.to_str().unwrap()]);
    assert_ok(&out, "config diff");
    assert!(
        stdout(&out).contains("lease.max_ttl_us: 300000000 → 60000000"),
        "{}",
        stdout(&out)
    );
    assert_eq!(config_of(&c, leader, &admin).await, (Config::default(), 0));

    // The administrator sets it; every node applies it.
    let out = cli(&all, &admin, &["cluster", "config", "set", "lease.max_ttl_us=60000000"]);
    assert_ok(&out, "config set");
    assert!(
        stdout(&out).contains("lease.max_ttl_us: 300000000 → 60000000"),
        "{}",
        stdout(&out)
    );
    let (config, revision) = config_of(&c, leader, &admin).await;
    assert!(revision > 0);
    let mut want = Config::default();
    want.lease.max_ttl_us = 60_000_000;
    assert_eq!(config, want);
    for i in 0..c.len() {
        let text = wait_config_line(&c, i, &alice, "\nmax_ttl_us = 60000000\n").await;
        assert!(text.contains("\nmax_ttl_us = 60000000\n"), "node {i}: {text}");
        assert!(
            text.contains(&format!("revision {revision}, set by log entry {revision}")),
            "node {i}: {text}"
        );
        assert_eq!(c.status(i).await.expect("status").config_revision, revision, "node {i}");
        let log = c.log(i);
        assert!(
            log.contains("replicated config changed") && log.contains("lease.max_ttl_us: 300000000 → 60000000"),
            "node {i} log lacks the change"
        );
    }
    // The status table shows the revision too.
    let out = cli(&all, &admin, &["status"]);
    assert_ok(&out, "status");
    assert!(stdout(&out).contains("CFG_REV"), "{}", stdout(&out));
}
