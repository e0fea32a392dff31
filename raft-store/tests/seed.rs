//! Seeding a new cluster's store from a backed-up snapshot
//! (`seed_from_snapshot`): the opened store holds the state and the new
//! membership, with an empty log after the snapshot; a damaged snapshot,
//! a used directory and a node outside the membership are refused.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{apply, blank, build_snapshot, lid, stamped, state_bytes, ts_of};
use driftlock_raft_store::{seed_from_snapshot, NodeAddr, SeedError, StoreError};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};

/// A snapshot of 30 applied entries (KV puts and ticks) of an old cluster
/// (term 1, leader 1): its data, last log id and state bytes.
async fn old_snapshot() -> (Vec<u8>, driftlock_raft_store::LogId, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut sm = store.state_machine;
    let mut entries = vec![blank(1)];
    entries.extend((2..=30).map(stamped));
    apply(&mut sm, entries).await.unwrap();
    let snapshot = build_snapshot(&mut sm).await;
    let last = snapshot.meta.last_log_id.unwrap();
    (snapshot.snapshot.into_inner(), last, state_bytes(&sm))
}

fn members(ids: &[u64]) -> BTreeMap<u64, NodeAddr> {
    ids.iter()
        .map(|id| {
            (
                *id,
                NodeAddr {
                    raft_addr: format!("127.0.0.1:{}", 7400 + id),
                    client_addr: format!("127.0.0.1:{}", 7300 + id),
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn a_seeded_store_opens_with_the_state_and_the_new_membership() {
    let (data, last, state) = old_snapshot().await;
    assert_eq!(last, lid(30));
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("node-12");
    seed_from_snapshot(&path, 12, &data, last, members(&[11, 12, 13])).unwrap();

    let store = driftlock_raft_store::open(&path).unwrap();
    let mut sm = store.state_machine;
    let mut log = store.log_store;
    assert_eq!(state_bytes(&sm), state, "the state is the snapshot's, byte for byte");

    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(last));
    let voters: Vec<u64> = membership.membership().voter_ids().collect();
    assert_eq!(voters, vec![11, 12, 13], "the new membership, not the old one");
    assert_eq!(
        membership.membership().get_node(&13).unwrap().client_addr,
        "127.0.0.1:7313"
    );
    assert_eq!(membership.log_id(), &Some(last));

    // The log is empty and continues after the snapshot.
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(last));
    assert_eq!(state.last_log_id, Some(last));
    assert_eq!(log.read_committed().await.unwrap(), Some(last));
    let mut reader = log.get_log_reader().await;
    assert!(reader.try_get_log_entries(0..100).await.unwrap().is_empty());
    // Its own vote, uncommitted, in the term after the snapshot's: the
    // first election is above every old entry.
    let vote = reader.read_vote().await.unwrap().unwrap();
    assert_eq!(
        (vote.leader_id.term, vote.leader_id.node_id, vote.committed),
        (2, 12, false)
    );

    // Cluster time resumes from the snapshot's (docs/design.md "Time",
    // rule 1: a store opened with a snapshot anchors on its ts_eff).
    let (ts_us, _) = log.stamp_handle().last_stamp().unwrap();
    assert_eq!(ts_us, ts_of(30));
    assert_eq!(sm.reader().with_state(|s| s.ts_eff_us()), ts_of(30));

    // A second copy of the snapshot is served unchanged.
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.snapshot.into_inner(), data);
}

#[tokio::test]
async fn damaged_snapshots_used_directories_and_strangers_are_refused() {
    let (data, last, _) = old_snapshot().await;
    let root = tempfile::tempdir().unwrap();

    // One flipped byte anywhere in the data: the frame check says so.
    for at in [0, 5, data.len() / 2, data.len() - 1] {
        let mut bad = data.clone();
        bad[at] ^= 0x01;
        let path = root.path().join(format!("flip-{at}"));
        let err = seed_from_snapshot(&path, 1, &bad, last, members(&[1])).unwrap_err();
        assert!(
            matches!(err, SeedError::BadSnapshot(StoreError::Corruption { .. })),
            "byte {at}: {err}"
        );
        assert!(!path.exists(), "nothing written for byte {at}");
    }
    // Truncated data.
    let err = seed_from_snapshot(root.path().join("cut"), 1, &data[..data.len() - 3], last, members(&[1])).unwrap_err();
    assert!(matches!(err, SeedError::BadSnapshot(_)), "{err}");
    // A log id below what the state applied.
    let err = seed_from_snapshot(root.path().join("low"), 1, &data, lid(10), members(&[1])).unwrap_err();
    assert!(
        matches!(err, SeedError::BadSnapshot(StoreError::Inconsistent(_))),
        "{err}"
    );

    // A node that is not a member, an empty membership.
    let err = seed_from_snapshot(root.path().join("stranger"), 4, &data, last, members(&[1, 2, 3])).unwrap_err();
    assert!(matches!(err, SeedError::NotAMember { node_id: 4, .. }), "{err}");
    let err = seed_from_snapshot(root.path().join("nobody"), 1, &data, last, BTreeMap::new()).unwrap_err();
    assert!(matches!(err, SeedError::NoMembers), "{err}");

    // A directory holding anything, including a store already seeded.
    let used = root.path().join("used");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("leftover"), b"x").unwrap();
    let err = seed_from_snapshot(&used, 1, &data, last, members(&[1])).unwrap_err();
    assert!(matches!(err, SeedError::DirNotEmpty { .. }), "{err}");
    let seeded = root.path().join("seeded");
    seed_from_snapshot(&seeded, 1, &data, last, members(&[1])).unwrap();
    let err = seed_from_snapshot(&seeded, 1, &data, last, members(&[1])).unwrap_err();
    assert!(matches!(err, SeedError::DirNotEmpty { .. }), "{err}");
    // An empty directory that exists is fine.
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    seed_from_snapshot(&empty, 1, &data, last, members(&[1])).unwrap();
}
