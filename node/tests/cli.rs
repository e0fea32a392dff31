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

/// Parses one line of JSON, failing the test with the text when it is not.
fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// Reads lines from a child's stdout until one satisfies `want` or 20 s
/// pass.
fn read_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for line in lines {
        let line = line.expect("read the child's stdout");
        let v = json(&line);
        if want(&v) {
            return v;
        }
    }
    panic!("the child's output ended before the expected line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_json_is_what_docs_cli_md_describes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let c = TestCluster::start(3).await;
    c.wait_leader(std::time::Duration::from_secs(10)).await;

    let put = driftlock(&c, &["kv", "put", "-o", "json", "j/a", "one"]);
    assert!(put.status.success(), "kv put: {put:?}");
    let v = json(&stdout(&put));
    assert_eq!(v["key"], "j/a");
    let revision = v["revision"].as_u64().expect("a revision");
    assert!(revision > 0);

    let get = driftlock(&c, &["kv", "get", "-o", "json", "j/a"]);
    let v = json(&stdout(&get));
    assert_eq!((v["key"].as_str(), v["value"].as_str()), (Some("j/a"), Some("one")));
    assert_eq!(v["mod_revision"].as_u64(), Some(revision));
    assert_eq!(v["version"].as_u64(), Some(1));

    let cas = driftlock(&c, &["kv", "cas", "-o", "json", "j/a", &revision.to_string(), "two"]);
    let v = json(&stdout(&cas));
    assert!(v["revision"].as_u64().is_some_and(|r| r > revision), "{v}");
    assert!(driftlock(&c, &["kv", "put", "j/b", "three"]).status.success());

    let list = driftlock(&c, &["kv", "list", "-o", "json", "j/"]);
    let v = json(&stdout(&list));
    let entries = v["entries"].as_array().expect("entries");
    let pairs: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["key"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert_eq!(pairs, vec![("j/a", "two"), ("j/b", "three")]);
    assert_eq!(v["truncated"], false);

    let del = driftlock(&c, &["kv", "del", "-o", "json", "j/b"]);
    assert_eq!(json(&stdout(&del)), serde_json::json!({"key": "j/b", "deleted": true}));

    let status = driftlock(&c, &["status", "-o", "json"]);
    assert!(status.status.success(), "status: {status:?}");
    let v = json(&stdout(&status));
    let nodes = v["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    assert!(nodes
        .iter()
        .all(|n| n["reachable"] == true && n["term"].as_u64().is_some()));
    let leader = v["leader_id"].as_u64().expect("a leader");
    assert_eq!(nodes.iter().filter(|n| n["role"] == "leader").count(), 1);
    assert!(nodes.iter().any(|n| n["id"].as_u64() == Some(leader)));

    // lock: the grant as one JSON line on stderr, stdout left to the command.
    let lock = driftlock(&c, &["lock", "-o", "json", "j/lock", "--", "echo", "ran"]);
    assert!(lock.status.success(), "lock: {lock:?}");
    assert_eq!(stdout(&lock).trim(), "ran");
    let stderr = String::from_utf8_lossy(&lock.stderr);
    let grant = stderr
        .lines()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON grant on stderr: {stderr}"));
    assert_eq!(grant["lock"], "j/lock");
    assert_eq!(grant["mode"], "exclusive");
    assert!(grant["fencing_token"].as_u64().is_some_and(|t| t > 0), "{grant}");

    // watch and elect report as they go: one JSON object per line.
    let spawn = |args: &[&str]| {
        let mut cmd = Command::new(driftlock_testkit::driftlock_exe().expect("driftlock binary"));
        cmd.args(args)
            .env("DRIFTLOCK_ENDPOINTS", c.endpoints().join(","))
            .envs(c.cli_env())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd.spawn().expect("spawn driftlock")
    };
    let mut watch = spawn(&["watch", "-o", "json", "w/"]);
    let mut watched = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    // The watch starts from the newest index once it is connected: write
    // until a change shows up.
    let writer = {
        let endpoints = c.endpoints();
        let env = c.cli_env();
        std::thread::spawn(move || {
            for i in 0..40 {
                let _ = Command::new(driftlock_testkit::driftlock_exe().expect("driftlock binary"))
                    .args(["kv", "put", "w/k", &i.to_string()])
                    .env("DRIFTLOCK_ENDPOINTS", endpoints.join(","))
                    .envs(env.clone())
                    .output();
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        })
    };
    let change = read_until(&mut watched, |v| v["key"] == "w/k");
    assert_eq!(change["op"], "put");
    assert!(
        change["index"].as_u64().is_some() && change["revision"].as_u64().is_some(),
        "{change}"
    );
    let _ = watch.kill();
    let _ = watch.wait();

    let mut elect = spawn(&["elect", "-o", "json", "j/election", "--value", "me", "--ttl", "2s"]);
    let mut said = BufReader::new(elect.stdout.take().expect("stdout")).lines();
    let first = read_until(&mut said, |_| true);
    assert_eq!(first["event"], "campaigning");
    assert_eq!(first["value"], "me");
    let master = read_until(&mut said, |v| v["event"] == "master");
    assert_eq!(master["election"], "j/election");
    assert!(master["epoch"].as_u64().is_some_and(|e| e > 0), "{master}");
    let _ = elect.kill();
    let _ = elect.wait();
    writer.join().expect("writer");
}

/// Completions and manual pages come from the same clap definitions the
/// binary parses: every user command is in them.
#[test]
fn completions_and_man_pages_cover_every_command() {
    let exe = driftlock_testkit::driftlock_exe().expect("driftlock binary");
    let run = |args: &[&str]| {
        let out = Command::new(&exe).args(args).output().expect("run driftlock");
        assert!(out.status.success(), "driftlock {args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let commands = [
        "serve", "dev", "lock", "elect", "kv", "watch", "status", "cluster", "auth", "snapshot",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for command in commands {
            assert!(script.contains(command), "{shell} completion lacks {command}");
        }
    }
    let page = run(&["man"]);
    assert!(page.starts_with(".ie") || page.contains(".TH driftlock"), "{page}");
    let dir = tempfile::tempdir().expect("temp dir");
    run(&["man", "--dir", dir.path().to_str().expect("utf-8 path")]);
    for command in commands {
        let page = dir.path().join(format!("driftlock-{command}.1"));
        assert!(page.exists(), "no page {}", page.display());
    }
    let bad = Command::new(&exe).args(["completions", "tcsh"]).output().expect("run");
    assert_eq!(bad.status.code(), Some(2), "an unknown shell is a command-line error");
}
