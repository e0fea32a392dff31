//! openraft's own storage conformance suite, run against the sled store as
//! openraft ships it.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use driftlock_raft_store::{LogStore, SledStateMachine, TypeConfig};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

/// Opens a fresh store in its own temporary directory; the directory is the
/// suite's guard and is removed after each case.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, SledStateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, SledStateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = driftlock_raft_store::open(dir.path()).expect("open a fresh store");
        Ok((dir, store.log_store, store.state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).await.expect("openraft storage suite");
}
