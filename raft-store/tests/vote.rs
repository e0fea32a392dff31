//! The vote across a restart: kept, except that a committed vote comes back
//! uncommitted, so a node that led before it stopped campaigns again
//! instead of resuming its term (raft-store/src/log_store.rs, "Restarting
//! leaders").

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use driftlock_raft_store::Vote;
use openraft::storage::{RaftLogReader, RaftLogStorage};

#[tokio::test]
async fn a_committed_vote_is_reopened_uncommitted_with_the_same_term_and_leader() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = driftlock_raft_store::open(dir.path()).unwrap();
        let mut log = store.log_store;
        log.save_vote(&Vote::new_committed(7, 2)).await.unwrap();
        let mut reader = log.get_log_reader().await;
        assert_eq!(
            reader.read_vote().await.unwrap(),
            Some(Vote::new_committed(7, 2)),
            "while running, the vote reads back as saved"
        );
    }
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut log = store.log_store;
    let mut reader = log.get_log_reader().await;
    assert_eq!(
        reader.read_vote().await.unwrap(),
        Some(Vote::new(7, 2)),
        "same term and leader, no longer committed"
    );
}

#[tokio::test]
async fn an_uncommitted_vote_is_reopened_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = driftlock_raft_store::open(dir.path()).unwrap();
        let mut log = store.log_store;
        log.save_vote(&Vote::new(4, 3)).await.unwrap();
    }
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut log = store.log_store;
    let mut reader = log.get_log_reader().await;
    assert_eq!(reader.read_vote().await.unwrap(), Some(Vote::new(4, 3)));
}
