//! Fenced KV writes from a shell command run by `driftlock lock NAME --
//! CMD` (issue 21): `driftlock kv put|cas|del --fence
//! NAME:$DRIFTLOCK_FENCING_TOKEN` inside CMD is relayed to the lock process
//! and made in the lock's own session, and the cluster, not the relay,
//! decides whether the fence holds.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::Duration;

use driftlock_client::Client;
use driftlock_testkit::cli::{run_cli, stderr, stdout};
use driftlock_testkit::TestCluster;

/// Exit code of a fenced write whose fence the cluster refused
/// (docs/cli.md, "Exit codes").
const FENCE_REFUSED: i32 = 3;

async fn cluster() -> TestCluster {
    let c = TestCluster::start(1).await;
    c.wait_leader(Duration::from_secs(10)).await;
    c
}

/// Runs `driftlock lock LOCK -- sh -c SCRIPT` with the cluster's
/// endpoints and administrator certificate; in SCRIPT, `"$1"` is the
/// `driftlock` binary.
fn under_lock(c: &TestCluster, lock: &str, script: &str) -> Output {
    let exe = driftlock_testkit::driftlock_exe().expect("driftlock binary");
    let exe = exe.to_str().expect("a UTF-8 binary path");
    run_cli(
        &c.endpoints(),
        c.admin_tls().as_ref(),
        &["lock", lock, "--", "sh", "-c", script, "sh", exe],
    )
}

/// The value of `key` now, as text (`None`: absent).
async fn value(client: &Client, key: &str) -> Option<String> {
    client
        .kv_get(key)
        .await
        .unwrap()
        .map(|v| String::from_utf8(v.value).unwrap())
}

/// The `NAME=VALUE` line the script echoed.
fn echoed<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the script printed no {name}=: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_under_lock_writes_with_its_fencing_token() {
    let c = cluster().await;
    let client = Client::connect_with(c.client_config(c.endpoints())).await.unwrap();

    // The second write runs with no cluster address or certificate at all:
    // a fenced write goes through the lock process, not a connection of
    // its own.
    let out = under_lock(
        &c,
        "job",
        r#"echo sock="$DRIFTLOCK_LOCK_SOCKET"
           echo mode="$(stat -c %a "$(dirname "$DRIFTLOCK_LOCK_SOCKET")")"
           "$1" kv put fence/k v1 --fence "job:$DRIFTLOCK_FENCING_TOKEN" || exit
           env -u DRIFTLOCK_ENDPOINTS -u DRIFTLOCK_CA -u DRIFTLOCK_CERT -u DRIFTLOCK_KEY \
               "$1" kv put -o json fence/k2 v2 --fence "job:$DRIFTLOCK_FENCING_TOKEN""#,
    );
    assert!(out.status.success(), "{out:?}");
    let printed = stdout(&out);
    let revision: u64 = printed
        .lines()
        .find_map(|l| l.strip_prefix("revision "))
        .unwrap_or_else(|| panic!("put printed no revision: {printed}"))
        .parse()
        .unwrap();
    let stored = client.kv_get("fence/k").await.unwrap().expect("fence/k written");
    assert_eq!((stored.value.as_slice(), stored.mod_revision), (&b"v1"[..], revision));
    let json: serde_json::Value = serde_json::from_str(printed.lines().last().unwrap()).unwrap();
    assert_eq!(json["key"], "fence/k2");
    assert!(json["revision"].as_u64().is_some_and(|r| r > revision), "{json}");
    assert_eq!(value(&client, "fence/k2").await.as_deref(), Some("v2"));

    // The socket lived in a private directory, gone once the lock ended.
    assert_eq!(echoed(&printed, "mode"), "700");
    let sock = std::path::Path::new(echoed(&printed, "sock"));
    assert!(sock.is_absolute(), "{sock:?}");
    assert!(!sock.exists(), "{} left behind", sock.display());
    assert!(!sock.parent().unwrap().exists(), "socket directory left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_or_foreign_fence_is_refused_by_the_cluster_and_writes_nothing() {
    let c = cluster().await;
    let client = Client::connect_with(c.client_config(c.endpoints())).await.unwrap();
    client.kv_put("fence/k", b"before".to_vec()).await.unwrap();

    // An earlier grant of the same lock.
    let first = under_lock(&c, "job", "echo token=$DRIFTLOCK_FENCING_TOKEN");
    assert!(first.status.success(), "{first:?}");
    let old_token: u64 = echoed(&stdout(&first), "token").parse().unwrap();

    let refused = |out: &Output, what: &str| {
        assert_eq!(out.status.code(), Some(FENCE_REFUSED), "{what}: {out:?}");
        let err = stderr(out);
        assert!(err.contains("the cluster refused the fence"), "{what}: {err}");
        err
    };

    // The token just below the grant: stale (the parent does not check;
    // the cluster does).
    let out = under_lock(
        &c,
        "job",
        r#"echo token=$DRIFTLOCK_FENCING_TOKEN
           "$1" kv put fence/k after --fence "job:$((DRIFTLOCK_FENCING_TOKEN - 1))""#,
    );
    let err = refused(&out, "token - 1");
    let token: u64 = echoed(&stdout(&out), "token").parse().unwrap();
    assert!(token > old_token);
    assert!(
        err.contains(&format!(
            "fencing token {} is stale (newest grant is {token})",
            token - 1
        )),
        "{err}"
    );

    // A much older grant of the lock, while a newer one is held.
    let out = under_lock(
        &c,
        "job",
        &format!(r#""$1" kv put fence/k after --fence "job:{old_token}""#),
    );
    let err = refused(&out, "older grant");
    assert!(err.contains(&format!("fencing token {old_token} is stale")), "{err}");

    // The right token under another lock's name: that lock has no grant.
    let out = under_lock(
        &c,
        "job",
        r#""$1" kv del fence/k --fence "other:$DRIFTLOCK_FENCING_TOKEN""#,
    );
    let err = refused(&out, "other lock");
    assert!(err.contains("is not held now"), "{err}");

    assert_eq!(value(&client, "fence/k").await.as_deref(), Some("before"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_outside_a_lock_fails_clearly_and_changes_nothing() {
    let c = cluster().await;
    let client = Client::connect_with(c.client_config(c.endpoints())).await.unwrap();
    let exe = driftlock_testkit::driftlock_exe().expect("driftlock binary");
    let run = |socket: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .env("DRIFTLOCK_ENDPOINTS", c.endpoints().join(","))
            .envs(c.cli_env());
        match socket {
            Some(path) => cmd.env("DRIFTLOCK_LOCK_SOCKET", path),
            None => cmd.env_remove("DRIFTLOCK_LOCK_SOCKET"),
        };
        cmd.output().expect("run driftlock")
    };

    for args in [
        &["kv", "put", "fence/k", "v", "--fence", "job:5"][..],
        &["kv", "cas", "fence/k", "0", "v", "--fence", "job:5"],
        &["kv", "del", "fence/k", "--fence", "job:5"],
    ] {
        let out = run(None, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            stderr(&out).contains(
                "--fence works inside `driftlock lock NAME -- CMD`: the write must come from the session holding the lock"
            ),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "{args:?}: {out:?}");
    }
    // A socket left over from a lock that ended.
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("fence.sock");
    let out = run(
        Some(gone.to_str().unwrap()),
        &["kv", "put", "fence/k", "v", "--fence", "job:5"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("cannot reach the `driftlock lock` process"),
        "{}",
        stderr(&out)
    );

    assert_eq!(value(&client, "fence/k").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_cas_and_delete_work_and_print_as_the_sessionless_commands_do() {
    let c = cluster().await;
    let client = Client::connect_with(c.client_config(c.endpoints())).await.unwrap();

    let out = under_lock(
        &c,
        "job",
        r#"F="job:$DRIFTLOCK_FENCING_TOKEN"
           r=$("$1" kv put fence/c one --fence "$F") || exit
           r=${r#revision }
           "$1" kv cas -o json fence/c "$r" two --fence "$F" || exit
           "$1" kv cas fence/c "$r" three --fence "$F"
           echo cas_again=$?
           "$1" kv cas fence/new 0 fresh --fence "$F" || exit
           "$1" kv del -o json fence/c --fence "$F" || exit
           "$1" kv del fence/new --fence "$F" || exit
           "$1" kv del fence/c --fence "$F"
           echo del_again=$?"#,
    );
    assert!(out.status.success(), "{out:?}");
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().collect();
    let cas: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(cas["key"], "fence/c");
    assert!(cas["revision"].as_u64().is_some_and(|r| r > 0), "{cas}");
    // A revision mismatch and a missing key are failures (exit 1), not
    // fence refusals, and say so as the sessionless commands do.
    assert_eq!(echoed(&printed, "cas_again"), "1");
    assert_eq!(echoed(&printed, "del_again"), "1");
    let err = stderr(&out);
    assert!(err.contains("revision mismatch"), "{err}");
    assert!(err.contains("key not found"), "{err}");
    assert!(lines[2].starts_with("revision "), "{printed}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(lines[3]).unwrap(),
        serde_json::json!({"key": "fence/c", "deleted": true})
    );
    assert_eq!(lines[4], "deleted");
    assert_eq!(value(&client, "fence/c").await, None);
    assert_eq!(value(&client, "fence/new").await, None);
}
