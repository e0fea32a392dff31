//! Snapshots: build, purge, reopen and install all reproduce the state
//! machine byte for byte; damaged or incompatible snapshot data is refused.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;

use common::{apply, blank, build_snapshot, lid, stamped, state_bytes};
use driftlock_raft_store::{SnapshotData, StoreError, Vote};
use driftlock_state_machine::{StateMachine, SNAPSHOT_VERSION};
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
use openraft::StorageHelper;

fn store_error(err: &io::Error) -> &StoreError {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<StoreError>())
        .unwrap_or_else(|| panic!("not a StoreError: {err}"))
}

#[tokio::test]
async fn snapshot_purge_reopen_restores_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let (built_meta, built_data, bytes_at_snapshot, bytes_at_end);
    {
        let store = driftlock_raft_store::open(dir.path()).unwrap();
        let mut log = store.log_store;
        let mut sm = store.state_machine;
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        let mut entries = vec![blank(1)];
        entries.extend((2..=60).map(stamped));
        log.blocking_append(entries.clone()).await.unwrap();

        // Apply and snapshot the first 40, purge the log up to the snapshot.
        apply(&mut sm, entries[..40].to_vec()).await.unwrap();
        log.save_committed(Some(lid(40))).await.unwrap();
        let snapshot = build_snapshot(&mut sm).await;
        assert_eq!(snapshot.meta.last_log_id, Some(lid(40)));
        bytes_at_snapshot = state_bytes(&sm);
        log.purge(lid(40)).await.unwrap();

        // The rest is committed and applied but in no snapshot.
        apply(&mut sm, entries[40..].to_vec()).await.unwrap();
        log.save_committed(Some(lid(60))).await.unwrap();
        bytes_at_end = state_bytes(&sm);
        assert_ne!(bytes_at_snapshot, bytes_at_end);
        built_meta = snapshot.meta;
        built_data = snapshot.snapshot.into_inner();
        log.blocking_append([blank(61)]).await.unwrap(); // flush the committed id too
    }

    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut log = store.log_store;
    let mut sm = store.state_machine;

    // Reopened: exactly the snapshot's state, and openraft sees its position.
    assert_eq!(state_bytes(&sm), bytes_at_snapshot, "state restored byte for byte");
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(40)));
    let current = sm.get_current_snapshot().await.unwrap().expect("a stored snapshot");
    assert_eq!(current.meta, built_meta);
    assert_eq!(
        current.snapshot.into_inner(),
        built_data,
        "stored snapshot data byte for byte"
    );
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(40)));
    assert_eq!(state.last_log_id, Some(lid(61)));
    let mut reader = log.get_log_reader().await;
    assert!(reader.try_get_log_entries(0..=40).await.unwrap().is_empty(), "purged");
    assert_eq!(reader.try_get_log_entries(41..).await.unwrap().len(), 21);

    // openraft's start-up re-applies the committed entries above the
    // snapshot: the state is back to where it was before the restart.
    let initial = StorageHelper::new(&mut log, &mut sm)
        .with_id(1)
        .get_initial_state()
        .await
        .unwrap();
    assert_eq!(initial.local_committed(), Some(&lid(60)));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(60)));
    assert_eq!(state_bytes(&sm), bytes_at_end, "re-applied state byte for byte");
}

#[tokio::test]
async fn install_on_another_node_reproduces_the_state() {
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = driftlock_raft_store::open(leader_dir.path()).unwrap();
    let mut leader_sm = leader.state_machine;
    apply(&mut leader_sm, (1..=30).map(stamped).collect()).await.unwrap();
    let snapshot = build_snapshot(&mut leader_sm).await;
    let leader_bytes = state_bytes(&leader_sm);

    let follower_dir = tempfile::tempdir().unwrap();
    {
        let follower = driftlock_raft_store::open(follower_dir.path()).unwrap();
        let mut follower_sm = follower.state_machine;
        let mut notices = follower_sm.reader().subscribe();
        follower_sm
            .install_snapshot(&snapshot.meta, SnapshotData::new(snapshot.snapshot.get_ref().clone()))
            .await
            .unwrap();
        assert_eq!(state_bytes(&follower_sm), leader_bytes);
        assert_eq!(follower_sm.applied_state().await.unwrap().0, Some(lid(30)));
        assert_eq!(
            notices.try_recv().unwrap(),
            driftlock_raft_store::SmNotice::SnapshotInstalled {
                last_index: 30,
                last_revision: 30
            }
        );
    }
    // And it is durable.
    let follower = driftlock_raft_store::open(follower_dir.path()).unwrap();
    assert_eq!(state_bytes(&follower.state_machine), leader_bytes);
}

#[tokio::test]
async fn damaged_snapshot_data_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut sm = store.state_machine;
    apply(&mut sm, (1..=10).map(stamped).collect()).await.unwrap();
    let snapshot = build_snapshot(&mut sm).await;

    let other_dir = tempfile::tempdir().unwrap();
    let other = driftlock_raft_store::open(other_dir.path()).unwrap();
    let mut other_sm = other.state_machine;
    apply(&mut other_sm, (1..=3).map(stamped).collect()).await.unwrap();
    let before = state_bytes(&other_sm);

    let mut data = snapshot.snapshot.into_inner();
    let mid = data.len() / 2;
    data[mid] ^= 0x20;
    let err = other_sm
        .install_snapshot(&snapshot.meta, SnapshotData::new(data))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(matches!(store_error(&err), StoreError::Corruption { .. }), "{err}");
    assert_eq!(state_bytes(&other_sm), before, "a refused snapshot changes nothing");
    assert_eq!(other_sm.applied_state().await.unwrap().0, Some(lid(3)));
    assert!(other_sm.get_current_snapshot().await.unwrap().is_none());
}

#[tokio::test]
async fn snapshot_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut sm = store.state_machine;
    let mut future = StateMachine::default().snapshot();
    future.version = SNAPSHOT_VERSION + 1;
    let data = driftlock_raft_store::state_machine::encode_snapshot(&future).unwrap();
    let meta = driftlock_raft_store::SnapshotMeta::default();
    let err = sm.install_snapshot(&meta, SnapshotData::new(data)).await.unwrap_err();
    assert!(matches!(store_error(&err), StoreError::Restore(_)), "{err}");
}

#[tokio::test]
async fn an_older_build_does_not_replace_a_newer_stored_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut sm = store.state_machine;
    apply(&mut sm, (1..=5).map(stamped).collect()).await.unwrap();
    let mut old_builder = sm.try_create_snapshot_builder(true).await.unwrap();
    apply(&mut sm, (6..=9).map(stamped).collect()).await.unwrap();
    sm.try_create_snapshot_builder(true)
        .await
        .unwrap()
        .build_snapshot()
        .await
        .unwrap();
    let old = old_builder.build_snapshot().await.unwrap();
    assert_eq!(old.meta.last_log_id, Some(lid(5)));
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id, Some(lid(9)));
}

/// A version-5 snapshot (written before batched entries, without the last
/// revision) still installs: every number it handed out was its entry's
/// index, so its last revision is its last index, and the next command
/// hands out the index after it.
#[tokio::test]
async fn a_version_5_snapshot_still_installs() {
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut sm = store.state_machine;
    apply(&mut sm, (1..=12).map(stamped).collect()).await.unwrap();
    let state = sm.reader().with_state(|s| s.clone());
    assert_eq!(state.last_revision(), 12);
    let v5 = driftlock_state_machine::SnapshotV5 { version: 5, state };
    let data = driftlock_raft_store::frame::encode_value(&v5).unwrap();
    let restored = driftlock_raft_store::state_machine::decode_snapshot(&data).unwrap();
    assert_eq!(restored.last_index(), 12);
    assert_eq!(restored.last_revision(), 12);
    assert_eq!(
        bincode::serialize(&restored.snapshot()).unwrap(),
        state_bytes(&sm),
        "the v5 image restores to the state that wrote it"
    );

    let other = tempfile::tempdir().unwrap();
    let mut other_sm = driftlock_raft_store::open(other.path()).unwrap().state_machine;
    let meta = driftlock_raft_store::SnapshotMeta {
        last_log_id: Some(lid(12)),
        ..Default::default()
    };
    other_sm.install_snapshot(&meta, SnapshotData::new(data)).await.unwrap();
    assert_eq!(state_bytes(&other_sm), state_bytes(&sm));
}
