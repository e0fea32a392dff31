//! Authorization over real mutual TLS (docs/security.md, "Policy model"):
//! the default policy lets an ordinary client certificate through the
//! newcomer path; a non-admin gets `permission denied` for `cluster remove`,
//! for the policy commands and for a prefix it has no grant on; another
//! principal's session cannot be used with its id and a guessed or stale
//! secret. Each refusal is shown to change nothing.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::Duration;

use driftlock_proto::tls::TlsFiles;
use driftlock_proto::{
    ApiError, Consistency, DriftlockApiClient, EventFilter, LockMode, Query, QueryResult, Reply, Security, SessionOp,
    SessionSecret,
};
use driftlock_testkit::cli::{run_cli, stderr, stdout};
use driftlock_testkit::TestCluster;

const T: Duration = Duration::from_secs(10);

fn ctx() -> tarpc::context::Context {
    driftlock_proto::context(T)
}

/// Runs the `driftlock` binary with `args`, showing the cluster `files`'
/// certificate through the environment, as `driftlock dev` prints it.
fn cli(c: &TestCluster, files: &TlsFiles, args: &[&str]) -> Output {
    run_cli(&c.endpoints(), Some(files), args)
}

/// Asserts the command failed with a permission-denied message containing
/// `want`.
fn assert_denied(out: &Output, want: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    let err = stderr(out);
    assert!(err.contains("permission denied") && err.contains(want), "stderr: {err}");
}

async fn api_as(c: &TestCluster, leader: usize, files: &TlsFiles) -> DriftlockApiClient {
    let security = Security::from_files(Some(files)).expect("certificates");
    driftlock_proto::connect(c.client_addr(leader), T, &security)
        .await
        .expect("connect")
}

async fn open(api: &DriftlockApiClient, nonce: u128, secret: &SessionSecret) -> u64 {
    match api
        .open_session(ctx(), nonce, "t".into(), 10_000_000, secret.clone())
        .await
        .expect("rpc")
    {
        Ok(Reply::SessionOpened { session, .. }) => session,
        other => panic!("open: {other:?}"),
    }
}

fn acquire(name: &str) -> SessionOp {
    SessionOp::Acquire {
        name: name.into(),
        mode: LockMode::Exclusive,
        wait_us: 0,
    }
}

fn is_denied<T: std::fmt::Debug>(r: &Result<T, ApiError>, want: &str) -> bool {
    matches!(r, Err(e @ ApiError::PermissionDenied { .. }) if e.to_string().contains(want))
}

async fn lock_holders(api: &DriftlockApiClient, name: &str) -> Vec<u64> {
    let reply = api
        .read(ctx(), Query::Lock { name: name.into() }, Consistency::Linearizable)
        .await
        .expect("rpc")
        .expect("read");
    match reply.result {
        QueryResult::Lock(v) => v
            .map(|v| v.holders.iter().map(|h| h.session).collect())
            .unwrap_or_default(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_over_tls() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let admin = c.admin_tls().expect("a TLS cluster");
    let alice = c.client_tls("alice", false);
    let bob = c.client_tls("bob", false);

    // The newcomer path with an ordinary client certificate and the
    // default policy: lock, kv, status, no extra step.
    let out = cli(&c, &bob, &["lock", "newcomer/job", "--", "true"]);
    assert!(out.status.success(), "lock: {}", stderr(&out));
    let out = cli(&c, &bob, &["kv", "put", "newcomer/k", "v"]);
    assert!(out.status.success(), "kv put: {}", stderr(&out));
    let out = cli(&c, &bob, &["kv", "get", "newcomer/k"]);
    assert!(
        out.status.success() && stdout(&out).contains('v'),
        "kv get: {}",
        stderr(&out)
    );
    let out = cli(&c, &bob, &["status"]);
    assert!(out.status.success(), "status: {}", stderr(&out));

    // A non-admin may not change membership: refused, the voters unchanged.
    let voters_before = c.status(leader).await.expect("status").voters;
    let out = cli(&c, &alice, &["cluster", "remove", "3"]);
    assert_denied(&out, "alice may not make the admin request 'change_voters'");
    let out = cli(&c, &alice, &["cluster", "transfer-leader", "2"]);
    assert_denied(&out, "alice may not make the admin request 'transfer_leader'");
    assert_eq!(c.status(leader).await.expect("status").voters, voters_before);
    // Nor read or change the policy.
    assert_denied(
        &cli(&c, &alice, &["auth", "show"]),
        "alice may not make the admin request 'policy'",
    );
    assert_denied(
        &cli(&c, &alice, &["auth", "grant", "alice", "", "all"]),
        "alice may not make the admin request 'policy'",
    );

    // An administrator replaces the open default: alice gets billing/ only.
    let file = c.dir().join("policy.toml");
    std::fs::write(
        &file,
        "admins = []\n[[grant]]\nprincipal = \"alice\"\nprefix = \"billing/\"\nrights = \"lock,read,write\"\n",
    )
    .expect("write policy");
    let out = cli(&c, &admin, &["auth", "set", file.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "auth set: {}", stderr(&out));
    assert!(stdout(&out).contains("prefix = \"billing/\""), "{}", stdout(&out));
    let out = cli(&c, &admin, &["auth", "grant", "bob", "shared/", "read"]);
    assert!(out.status.success(), "auth grant: {}", stderr(&out));
    assert!(stdout(&out).contains("principal = \"bob\""), "{}", stdout(&out));

    // alice on a prefix without a grant: refused, nothing written.
    assert!(cli(&c, &alice, &["kv", "put", "billing/x", "1"]).status.success());
    assert_denied(
        &cli(&c, &alice, &["kv", "put", "hr/x", "1"]),
        "alice may not write key 'hr/x'",
    );
    assert_denied(
        &cli(&c, &alice, &["kv", "get", "hr/x"]),
        "alice may not read key 'hr/x'",
    );
    assert_denied(
        &cli(&c, &alice, &["lock", "hr/job", "--", "true"]),
        "alice may not lock 'hr/job'",
    );
    assert_denied(
        &cli(&c, &bob, &["kv", "get", "billing/x"]),
        "bob may not read key 'billing/x'",
    );
    let admin_api = api_as(&c, leader, &admin).await;
    let hr = admin_api
        .read(ctx(), Query::KvGet { key: "hr/x".into() }, Consistency::Linearizable)
        .await
        .expect("rpc")
        .expect("read");
    assert_eq!(hr.result, QueryResult::Kv(None), "the refused write was applied");
    assert!(lock_holders(&admin_api, "hr/job").await.is_empty());

    // alice's session, with the lock billing/l.
    let alice_api = api_as(&c, leader, &alice).await;
    let bob_api = api_as(&c, leader, &bob).await;
    let secret = SessionSecret(rand_bytes(1));
    let session = open(&alice_api, 1, &secret).await;
    let first = alice_api
        .session_op(ctx(), session, secret.clone(), 1, acquire("billing/l"))
        .await
        .expect("rpc");
    assert!(matches!(first, Ok(Reply::Granted { .. })), "{first:?}");
    // bob with a guessed secret, and with alice's real one (leaked, say):
    // refused, including the replay of (session, 1) that would have
    // answered the cached grant.
    for guess in [SessionSecret(rand_bytes(2)), secret.clone()] {
        for (seq, op) in [
            (1, acquire("billing/l")),
            (
                2,
                SessionOp::Release {
                    name: "billing/l".into(),
                },
            ),
            (3, SessionOp::Close),
        ] {
            let r = bob_api
                .session_op(ctx(), session, guess.clone(), seq, op)
                .await
                .expect("rpc");
            assert!(is_denied(&r, &format!("bob may not use session '{session}'")), "{r:?}");
        }
    }
    // alice herself with a stale secret (another session's): refused.
    let other_secret = SessionSecret(rand_bytes(3));
    let _other = open(&alice_api, 2, &other_secret).await;
    let r = alice_api
        .session_op(
            ctx(),
            session,
            other_secret,
            2,
            SessionOp::Release {
                name: "billing/l".into(),
            },
        )
        .await
        .expect("rpc");
    assert!(is_denied(&r, "alice may not use session"), "{r:?}");
    // Nothing changed: alice still holds the lock, her session is alive,
    // and her own next operation goes through.
    assert_eq!(lock_holders(&admin_api, "billing/l").await, vec![session]);
    let r = alice_api
        .session_op(
            ctx(),
            session,
            secret.clone(),
            2,
            SessionOp::Release {
                name: "billing/l".into(),
            },
        )
        .await
        .expect("rpc");
    assert_eq!(r, Ok(Reply::Done));

    // Observing: everything needs an admin; another's session is refused.
    let all = EventFilter::default();
    let r = bob_api.observe(ctx(), 0, all.clone(), 10).await.expect("rpc");
    assert!(is_denied(&r, "bob may not observe every event"), "{r:?}");
    let theirs = EventFilter {
        session: Some(session),
        ..EventFilter::default()
    };
    let r = bob_api.observe(ctx(), 0, theirs.clone(), 10).await.expect("rpc");
    assert!(is_denied(&r, "use session"), "{r:?}");
    assert!(alice_api.observe(ctx(), 0, theirs, 10).await.expect("rpc").is_ok());
    // A list of sessions is checked member by member, and must be sorted.
    let listed = |sessions: Vec<u64>| EventFilter {
        sessions,
        ..EventFilter::default()
    };
    let r = bob_api.observe(ctx(), 0, listed(vec![session]), 10).await.expect("rpc");
    assert!(is_denied(&r, "use session"), "{r:?}");
    let r = alice_api
        .observe(ctx(), 0, listed(vec![session]), 10)
        .await
        .expect("rpc");
    assert!(r.is_ok(), "{r:?}");
    let r = alice_api
        .observe(ctx(), 0, listed(vec![session, session]), 10)
        .await
        .expect("rpc");
    assert!(matches!(r, Err(ApiError::InvalidRequest(_))), "{r:?}");
    assert!(admin_api.observe(ctx(), 0, all, 10).await.expect("rpc").is_ok());

    // A non-admin's status is the basics: no health, clock or Raft address.
    let basic = bob_api.status(ctx()).await.expect("rpc");
    assert!(basic.raft_addr.is_empty() && basic.clock.is_none() && basic.hot_locks.is_empty());
    assert_eq!(basic.id, c.id(leader));
    assert!(!admin_api.status(ctx()).await.expect("rpc").raft_addr.is_empty());
}

/// 32 bytes that differ per `n` and per run (a real client draws them from
/// the OS; any distinct value serves the test).
fn rand_bytes(n: u8) -> [u8; 32] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut out = [n; 32];
    out[..4].copy_from_slice(&nanos.to_le_bytes());
    out
}
