//! Backup and restore end to end (docs/design.md "Backup and restore"):
//! load a 3-node cluster, `driftlock snapshot save`, kill it and wipe its
//! data, `driftlock snapshot restore` into 3 new data directories on new
//! addresses, start them with `serve` (no `init`), and find every KV
//! value, the lock holder and the election record back; new grants get
//! fencing tokens above every old one. Saving needs an administrator.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use driftlock_client::Client;
use driftlock_proto::limits::DEFAULT_MAX_VALUE_BYTES;
use driftlock_proto::{Consistency, Query, QueryResult};
use driftlock_testkit::cli::{run_cli, stderr, stdout};
use driftlock_testkit::{free_addr, TestCluster};

/// Keys whose values sit at the default value limit: 70 × 64 KiB, so the
/// snapshot is larger than one 4 MiB chunk.
const BIG_KEYS: usize = 70;

fn big_value(i: usize) -> Vec<u8> {
    (0..DEFAULT_MAX_VALUE_BYTES)
        .map(|b| ((b * 31 + i * 7) % 251) as u8)
        .collect()
}

/// `driftlock snapshot restore FILE --data-dir DIR --node-id ID --members
/// MEMBERS`, run without endpoints or certificates (restore is offline).
fn restore(file: &std::path::Path, data_dir: &std::path::Path, node_id: u64, members: &str) -> std::process::Output {
    run_cli(
        &[],
        None,
        &[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--node-id",
            &node_id.to_string(),
            "--members",
            members,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_cluster_restores_into_a_new_one_with_every_value_lock_and_election() {
    let mut c = TestCluster::start(3).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let client = Client::connect_with(c.client_config(c.endpoints())).await.unwrap();

    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..20 {
        expected.insert(format!("small/{i:02}"), format!("value {i}").into_bytes());
    }
    for i in 0..BIG_KEYS {
        expected.insert(format!("big/{i:02}"), big_value(i));
    }
    for (key, value) in &expected {
        client.kv_put(key, value.clone()).await.unwrap();
    }
    // One session holds a lock and is master of an election with a value;
    // its TTL outlasts the restore (cluster time does not run while no
    // node does).
    let session = client.open_session(Duration::from_secs(15)).await.unwrap();
    let guard = session.lock("jobs/lock").await.unwrap();
    let old_token = guard.fencing_token();
    let election = session.election("scheduler");
    let _leadership = election.campaign(b"node-a:8080".to_vec()).await.unwrap();

    // A client without the administrator role may not save.
    let dir = c.dir().to_path_buf();
    let file = dir.join("cluster.snap");
    let file_arg = file.to_str().unwrap();
    let bob = c.client_tls("bob", false);
    let refused = run_cli(&c.endpoints(), Some(&bob), &["snapshot", "save", file_arg]);
    assert!(!refused.status.success(), "bob saved a snapshot: {refused:?}");
    assert!(
        stderr(&refused).contains("permission denied: bob may not"),
        "stderr: {}",
        stderr(&refused)
    );
    assert!(!file.exists(), "a refused save left a file");

    let saved = run_cli(&c.endpoints(), c.admin_tls().as_ref(), &["snapshot", "save", file_arg]);
    assert!(saved.status.success(), "save: {saved:?}");
    let printed = stdout(&saved);
    assert!(
        printed.contains(&format!(
            "{} keys, 1 held locks, 1 sessions, 1 elections",
            expected.len()
        )),
        "save printed: {printed}"
    );
    let state_bytes: usize = printed
        .split(" bytes of state")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("save printed no size: {printed}"));
    assert!(
        state_bytes > driftlock_proto::limits::MAX_BATCH_BYTES,
        "{state_bytes} bytes came in one chunk"
    );
    // An existing file is kept unless --force.
    let again = run_cli(&c.endpoints(), c.admin_tls().as_ref(), &["snapshot", "save", file_arg]);
    assert!(
        !again.status.success() && stderr(&again).contains("--force"),
        "{again:?}"
    );
    let forced = run_cli(
        &c.endpoints(),
        c.admin_tls().as_ref(),
        &["snapshot", "save", "--force", file_arg],
    );
    assert!(forced.status.success(), "save --force: {forced:?}");

    // The old cluster is gone, data and all.
    c.launcher_mut().kill_all();
    for i in 0..c.len() {
        std::fs::remove_dir_all(&c.spec(i).data_dir).unwrap();
    }

    // A new cluster: new addresses, new data directories, same CA.
    for i in 0..c.len() {
        let id = c.id(i);
        let spec = c.spec_mut(i);
        spec.raft_addr = free_addr();
        spec.client_addr = free_addr();
        spec.metrics_addr = Some(free_addr());
        spec.data_dir = dir.join(format!("restored{id}"));
    }
    let members: Vec<String> = (0..c.len())
        .map(|i| format!("{}={}/{}", c.id(i), c.raft_addr(i), c.client_addr(i)))
        .collect();
    let members = members.join(",");

    // Refusals: a node id outside --members, a corrupted file.
    let stranger_dir = dir.join("stranger");
    let stranger = restore(&file, &stranger_dir, 9, &members);
    assert!(
        !stranger.status.success() && stderr(&stranger).contains("node 9 is not one of the new members"),
        "{stranger:?}"
    );
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let bad_file = dir.join("bad.snap");
    std::fs::write(&bad_file, bytes).unwrap();
    let bad = restore(&bad_file, &stranger_dir, 1, &members);
    assert!(
        !bad.status.success() && stderr(&bad).contains("the payload fails its crc32 check"),
        "{bad:?}"
    );

    for i in 0..c.len() {
        let restored = restore(&file, &c.spec(i).data_dir, c.id(i), &members);
        assert!(restored.status.success(), "restore node {}: {restored:?}", c.id(i));
    }
    // Started with `serve` on the restored directories; bring_up sees a
    // membership and does not `init`.
    let up = c.try_bring_up().await.unwrap();
    assert!(!up.initialized, "the restored cluster was initialized anew");

    let new = Client::connect_with(c.client_config(c.endpoints())).await.unwrap();
    let status = new.status_of(c.client_addr(0)).await.unwrap();
    let voters: Vec<String> = status.voters.iter().map(|(_, a)| a.clone()).collect();
    assert_eq!(voters, c.endpoints(), "the new membership");

    for (key, value) in &expected {
        let got = new
            .kv_get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} is gone"));
        assert_eq!(&got.value, value, "{key}");
    }
    let read = |query: Query| {
        let new = &new;
        async move { new.read(query, Consistency::Linearizable).await.unwrap().result }
    };
    let QueryResult::Election(Some(view)) = read(Query::Election {
        name: "scheduler".into(),
    })
    .await
    else {
        panic!("the election is gone")
    };
    assert_eq!(view.master, Some((session.id(), b"node-a:8080".to_vec())));
    let QueryResult::Lock(Some(lock)) = read(Query::Lock {
        name: "jobs/lock".into(),
    })
    .await
    else {
        panic!("the lock is gone")
    };
    assert_eq!(lock.latest_token, old_token);
    assert_eq!(
        lock.holders.iter().map(|h| h.session).collect::<Vec<_>>(),
        vec![session.id()],
        "the old session still holds the lock"
    );

    // Nobody keeps the old session alive on the new cluster: it expires,
    // and a new session gets the lock with a token above every old one.
    let newcomer = new.open_session(Duration::from_secs(5)).await.unwrap();
    let taken = tokio::time::timeout(Duration::from_secs(120), newcomer.lock("jobs/lock"))
        .await
        .expect("the restored holder never expired")
        .unwrap();
    assert!(
        taken.fencing_token() > old_token,
        "token {} after {old_token}",
        taken.fencing_token()
    );
    let other = newcomer.try_lock("other/lock").await.unwrap().unwrap();
    assert!(other.fencing_token() > old_token);
    drop((guard, session, client));
}
