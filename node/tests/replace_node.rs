//! Replacing a node whose disk died, the way docs/operations.md tells an
//! operator to ("Adding, removing, replacing a node"): every step is a
//! `driftlock` command run with the cluster's administrator certificate.
//!
//! - A new node (new id, empty data directory): `cluster remove 3`, start
//!   `serve` for node 4, `cluster add-learner`, `cluster promote`; node 4
//!   then holds every value, can lead, and with node 1 gone {2, 4} is a
//!   working majority.
//! - The same id on a wiped disk: only after `cluster remove`, as a new
//!   learner. A wiped voter restarted under its old id *without* that is
//!   not refused today — it never catches up, and in a debug build the
//!   leader's Raft core panics on openraft's log-reversion assertion — so
//!   the guide forbids it (docs/operations.md, "What a wiped voter does
//!   today"); there is no refusal to assert.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use driftlock_client::{Client, Session};
use driftlock_proto::{Consistency, Query, QueryReply, QueryResult, Role};
use driftlock_testkit::cli::{run_cli, stderr, stdout};
use driftlock_testkit::TestCluster;

const T: Duration = Duration::from_secs(10);

/// KV values written before the disk dies.
const KEYS: usize = 25;

fn key(i: usize) -> String {
    format!("replace/k{i:02}")
}

fn value(i: usize) -> String {
    format!("value {i}")
}

/// Runs `driftlock args…` against `endpoints` as the administrator and
/// returns its stdout; fails the test when the command fails.
fn driftlock(c: &TestCluster, endpoints: &[String], args: &[&str]) -> String {
    let out = run_cli(endpoints, c.admin_tls().as_ref(), args);
    assert!(
        out.status.success(),
        "driftlock {args:?} failed: {}\n{}",
        stderr(&out),
        stdout(&out)
    );
    stdout(&out)
}

/// `driftlock status -o json` against `endpoints`: (id, role) of every
/// node that answered, and how many did not.
fn cli_status(c: &TestCluster, endpoints: &[String]) -> (Vec<(u64, String)>, usize) {
    let out = run_cli(endpoints, c.admin_tls().as_ref(), &["status", "-o", "json"]);
    let text = stdout(&out);
    let doc: serde_json::Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("status printed no JSON ({e}): {text}"));
    let nodes = doc["nodes"].as_array().expect("nodes");
    let mut up = Vec::new();
    let mut down = 0;
    for n in nodes {
        if n["reachable"] == true {
            up.push((
                n["id"].as_u64().expect("id"),
                n["role"].as_str().expect("role").to_owned(),
            ));
        } else {
            down += 1;
        }
    }
    up.sort();
    (up, down)
}

/// Waits until `driftlock status` over `endpoints` shows exactly `ids`,
/// all reachable, one leader and the rest followers.
async fn wait_cli_voters(c: &TestCluster, endpoints: &[String], ids: &[u64]) {
    let deadline = Instant::now() + T;
    loop {
        let (up, down) = cli_status(c, endpoints);
        let got: Vec<u64> = up.iter().map(|(id, _)| *id).collect();
        let leaders = up.iter().filter(|(_, r)| r == "leader").count();
        let followers = up.iter().filter(|(_, r)| r == "follower").count();
        if down == 0 && got == ids && leaders == 1 && followers == ids.len() - 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed voters {ids:?} with one leader: {up:?}, {down} down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The voter ids in node `i`'s own status, and whether it has learners.
async fn membership(c: &TestCluster, i: usize) -> (Vec<u64>, usize) {
    let s = c.status(i).await.expect("status");
    (s.voters.iter().map(|(id, _)| *id).collect(), s.learners.len())
}

/// One read answered by node `i` itself (no leader hint followed).
async fn read_on(c: &TestCluster, i: usize, query: Query, consistency: Consistency) -> QueryReply {
    let api = driftlock_proto::connect(c.client_addr(i), T, &c.security())
        .await
        .expect("connect");
    api.read(driftlock_proto::context(T), query, consistency)
        .await
        .expect("rpc")
        .unwrap_or_else(|e| panic!("node {} refused the read: {e:?}", c.id(i)))
}

/// Every value written, read from node `i` alone; each reply must be of
/// a state at least as far as revision `min_revision`.
async fn assert_values_on(c: &TestCluster, i: usize, consistency: Consistency, min_revision: u64) {
    for k in 0..KEYS {
        let reply = read_on(c, i, Query::KvGet { key: key(k) }, consistency).await;
        assert!(
            reply.revision >= min_revision,
            "node {} answered from revision {} < {min_revision}",
            c.id(i),
            reply.revision
        );
        let QueryResult::Kv(Some(view)) = reply.result else {
            panic!("node {} lacks {}: {:?}", c.id(i), key(k), reply.result)
        };
        assert_eq!(view.value, value(k).into_bytes(), "{} on node {}", key(k), c.id(i));
    }
}

/// The lock and election the session took before the disk died are still
/// its own, as node `i` sees them with a linearizable read (node `i` must
/// lead).
async fn assert_records_on(c: &TestCluster, i: usize, session: &Session, token: u64) {
    let reply = read_on(
        c,
        i,
        Query::Lock {
            name: "jobs/nightly".into(),
        },
        Consistency::Linearizable,
    )
    .await;
    let QueryResult::Lock(Some(lock)) = reply.result else {
        panic!("the lock is gone: {:?}", reply.result)
    };
    assert_eq!(
        lock.holders.iter().map(|h| h.session).collect::<Vec<_>>(),
        vec![session.id()]
    );
    assert_eq!(lock.latest_token, token);
    let reply = read_on(
        c,
        i,
        Query::Election {
            name: "scheduler".into(),
        },
        Consistency::Linearizable,
    )
    .await;
    let QueryResult::Election(Some(view)) = reply.result else {
        panic!("the election is gone: {:?}", reply.result)
    };
    assert_eq!(view.master, Some((session.id(), b"host-a".to_vec())));
}

/// Waits until node `i` says it leads.
async fn wait_role(c: &TestCluster, i: usize, role: Role) {
    let deadline = Instant::now() + T;
    while !c.status(i).await.is_some_and(|s| s.role == role) {
        assert!(Instant::now() < deadline, "node {} never became {role:?}", c.id(i));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until node `i` has applied at least `index`.
async fn wait_applied(c: &TestCluster, i: usize, index: u64) {
    let deadline = Instant::now() + T;
    loop {
        let s = c.status(i).await.expect("status");
        if s.applied_index >= index {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} applied only {} of {index}",
            c.id(i),
            s.applied_index
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What [`load`] leaves running: a session holding a lock and mastership.
struct Held {
    /// Keeps the session's connections.
    _client: Client,
    session: Session,
    guard: driftlock_client::LockGuard,
    /// Fencing token of `guard`.
    token: u64,
    _leadership: driftlock_client::Leadership,
}

/// Writes the values through the CLI and has a session take a lock and
/// win an election.
async fn load(c: &TestCluster) -> Held {
    let all = c.endpoints();
    for k in 0..KEYS {
        driftlock(c, &all, &["kv", "put", &key(k), &value(k)]);
    }
    let client = Client::connect_with(c.client_config(all)).await.unwrap();
    let session = client.open_session(T).await.unwrap();
    let guard = session.lock("jobs/nightly").await.unwrap();
    let token = guard.fencing_token();
    let leadership = session
        .election("scheduler")
        .campaign(b"host-a".to_vec())
        .await
        .unwrap();
    Held {
        _client: client,
        session,
        guard,
        token,
        _leadership: leadership,
    }
}

/// Node 3 "loses its disk": SIGKILLed, data directory deleted.
fn disk_dies(c: &mut TestCluster, i: usize) {
    c.kill(i);
    std::fs::remove_dir_all(&c.spec(i).data_dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_died_is_replaced_by_a_new_node_through_the_cli() {
    let mut c = TestCluster::start(3).await;
    c.wait_leader(T).await;
    let all = c.endpoints();
    let held = load(&c).await;
    let (session, token) = (&held.session, held.token);

    disk_dies(&mut c, 2);
    let removed = driftlock(&c, &all, &["cluster", "remove", "3"]);
    assert!(removed.contains("node 3 removed"), "{removed}");
    let leader = c.wait_leader(T).await;
    assert_eq!(membership(&c, leader).await, (vec![1, 2], 0));

    // Node 4: a new id on a new, empty data directory, started with
    // `serve` alone (no init); it joins as a learner, then votes.
    let n4 = c.add_slot();
    assert_eq!(c.id(n4), 4);
    c.spawn(n4);
    c.wait_up(n4).await;
    let member = format!("4={}/{}", c.raft_addr(n4), c.client_addr(n4));
    let added = driftlock(&c, &all, &["cluster", "add-learner", &member]);
    assert!(added.contains("node 4 added as learner and caught up"), "{added}");
    let promoted = driftlock(&c, &all, &["cluster", "promote", "4"]);
    assert!(promoted.contains("node 4 is a voter"), "{promoted}");

    let new = vec![
        c.client_addr(0).to_owned(),
        c.client_addr(1).to_owned(),
        c.client_addr(n4).to_owned(),
    ];
    wait_cli_voters(&c, &new, &[1, 2, 4]).await;
    let leader = c.wait_leader(T).await;
    assert_eq!(membership(&c, leader).await, (vec![1, 2, 4], 0));
    // The old endpoint list still works for status: node 3 is reported down.
    let (up, down) = cli_status(&c, &all);
    assert_eq!((up.len(), down), (2, 1), "{up:?}");

    // Node 4 has applied everything the leader had: every value, from its
    // own state (serializable), then as leader (linearizable).
    let last = c.status(leader).await.expect("leader status").applied_revision;
    wait_applied(&c, n4, last).await;
    assert_values_on(&c, n4, Consistency::Serializable, last).await;
    let moved = driftlock(&c, &new, &["cluster", "transfer-leader", "4"]);
    assert!(moved.contains("node 4 leads"), "{moved}");
    wait_role(&c, n4, Role::Leader).await;
    assert_values_on(&c, n4, Consistency::Linearizable, last).await;
    assert_records_on(&c, n4, session, token).await;

    // Locks can be taken; the one held since before the failure still
    // excludes others.
    let locked = driftlock(&c, &new, &["lock", "jobs/after", "--", "echo", "ran"]);
    assert_eq!(locked.trim(), "ran");
    let other = Client::connect_with(c.client_config(new.clone())).await.unwrap();
    let rival = other.open_session(T).await.unwrap();
    assert!(
        rival.try_lock("jobs/nightly").await.unwrap().is_none(),
        "the held lock was free"
    );

    // Node 1 leads again, then dies: {2, 4} is a majority of {1, 2, 4}.
    driftlock(&c, &new, &["cluster", "transfer-leader", "1"]);
    wait_role(&c, 0, Role::Leader).await;
    c.kill(0);
    let survivors = vec![c.client_addr(1).to_owned(), c.client_addr(n4).to_owned()];
    let leader = c.wait_leader(T).await;
    assert!(leader == 1 || leader == n4, "leader index {leader}");
    driftlock(&c, &survivors, &["kv", "put", "after/node1", "gone"]);
    let got = driftlock(&c, &survivors, &["kv", "get", &key(KEYS - 1)]);
    assert!(got.contains(&value(KEYS - 1)), "{got}");
    let locked = driftlock(&c, &survivors, &["lock", "jobs/after-node1", "--", "echo", "ran"]);
    assert_eq!(locked.trim(), "ran");
    assert_records_on(&c, leader, session, token).await;
    // The session kept itself alive through all of it.
    held.guard.release().await.unwrap();
}

/// Same id, wiped disk — the documented way: the node is removed first,
/// then started empty and added back as a learner and promoted, exactly
/// as a new node would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_under_its_old_id_after_remove_add_learner_promote() {
    let mut c = TestCluster::start(3).await;
    c.wait_leader(T).await;
    let all = c.endpoints();
    let held = load(&c).await;
    let (session, token) = (&held.session, held.token);

    disk_dies(&mut c, 2);
    driftlock(&c, &all, &["cluster", "remove", "3"]);
    c.spawn(2);
    c.wait_up(2).await;
    let member = format!("3={}/{}", c.raft_addr(2), c.client_addr(2));
    driftlock(&c, &all, &["cluster", "add-learner", &member]);
    driftlock(&c, &all, &["cluster", "promote", "3"]);
    wait_cli_voters(&c, &all, &[1, 2, 3]).await;

    let leader = c.wait_leader(T).await;
    let last = c.status(leader).await.expect("leader status").applied_revision;
    wait_applied(&c, 2, last).await;
    assert_values_on(&c, 2, Consistency::Serializable, last).await;
    driftlock(&c, &all, &["cluster", "transfer-leader", "3"]);
    wait_role(&c, 2, Role::Leader).await;
    assert_records_on(&c, 2, session, token).await;

    // With node 1 gone, {2, 3} still commits.
    c.kill(0);
    c.wait_leader(T).await;
    let survivors = vec![c.client_addr(1).to_owned(), c.client_addr(2).to_owned()];
    driftlock(&c, &survivors, &["kv", "put", "after/node1", "gone"]);
    let ids: BTreeSet<u64> = cli_status(&c, &survivors).0.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, BTreeSet::from([2, 3]));
}
