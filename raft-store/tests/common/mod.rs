//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io;

use driftlock_raft_store::{Entry, LogId, SledStateMachine, StampedRequest, TypeConfig};
use driftlock_state_machine::{Command, StampedCommand};
use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;

/// Bytes of the KV value in a test entry.
pub const VALUE_BYTES: usize = 256;

/// Log id of term 1, leader 1.
pub fn lid(index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(1, 1, index)
}

/// The cluster time stamped on test entry `index`.
pub fn ts_of(index: u64) -> u64 {
    index * 1_000
}

/// A deterministic 256-byte value for entry `index`.
pub fn value_of(index: u64) -> Vec<u8> {
    (0..VALUE_BYTES as u64)
        .map(|i| (index.wrapping_mul(31).wrapping_add(i) % 251) as u8)
        .collect()
}

/// The command of test entry `index`: a KV put, every fifth one a tick.
pub fn command_of(index: u64) -> Command {
    if index % 5 == 0 {
        Command::Tick
    } else {
        Command::KvPut {
            key: format!("k{}", index % 17),
            value: value_of(index),
            by: driftlock_proto::Principal::Anonymous,
        }
    }
}

/// A stamped normal entry at `index`.
pub fn stamped(index: u64) -> Entry {
    Entry::new_normal(
        lid(index),
        StampedRequest(StampedCommand {
            ts_us: ts_of(index),
            command: command_of(index),
        }),
    )
}

/// A blank entry at `index`.
pub fn blank(index: u64) -> Entry {
    Entry::new_blank(lid(index))
}

/// Applies `entries` with no client waiting.
pub async fn apply(sm: &mut SledStateMachine, entries: Vec<Entry>) -> io::Result<()> {
    sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None))))).await
}

/// The bincode bytes of the state machine's snapshot: the byte-identity
/// the tests compare.
pub fn state_bytes(sm: &SledStateMachine) -> Vec<u8> {
    sm.reader()
        .with_state(|state| bincode::serialize(&state.snapshot()).unwrap())
}

/// Builds a snapshot of everything `sm` has applied, as the leader's
/// builder does.
pub async fn build_snapshot(sm: &mut SledStateMachine) -> driftlock_raft_store::Snapshot {
    use openraft::storage::RaftSnapshotBuilder;
    sm.try_create_snapshot_builder(true)
        .await
        .expect("snapshot builder")
        .build_snapshot()
        .await
        .expect("build snapshot")
}
