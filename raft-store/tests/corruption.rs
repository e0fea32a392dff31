//! Corruption test: damage one stored value with sled directly; reopening
//! the store must fail with `Corruption` naming the tree and key.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{apply, blank, lid, stamped};
use driftlock_raft_store::{StoreError, Vote};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};

/// A store with 20 entries (10 applied and in a snapshot), a vote and a
/// committed id; closed on return.
async fn populated_store(path: &Path) {
    let store = driftlock_raft_store::open(path).unwrap();
    let mut log = store.log_store;
    let mut sm = store.state_machine;
    log.save_vote(&Vote::new(3, 1)).await.unwrap();
    let mut entries = vec![blank(1)];
    entries.extend((2..=20).map(stamped));
    log.blocking_append(entries.clone()).await.unwrap();
    log.save_committed(Some(lid(10))).await.unwrap();
    apply(&mut sm, entries[..10].to_vec()).await.unwrap();
    sm.try_create_snapshot_builder(true)
        .await
        .unwrap()
        .build_snapshot()
        .await
        .unwrap();
}

/// Rewrites the raw value at `tree`/`key` with `damage` applied, through
/// sled itself (the value stays a valid sled value; only our frame breaks).
fn damage(path: &Path, tree: &str, key: &[u8], damage: impl FnOnce(&mut Vec<u8>)) {
    let db = open_sled(path);
    let tree = db.open_tree(tree).unwrap();
    let mut value = tree.get(key).unwrap().expect("the value to damage exists").to_vec();
    damage(&mut value);
    tree.insert(key, value).unwrap();
    db.flush().unwrap();
}

/// Opens sled directly, waiting for the store's last handles to release its
/// file lock (sled releases it from background threads).
fn open_sled(path: &Path) -> sled::Db {
    let started = Instant::now();
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if started.elapsed() < Duration::from_secs(3) => {
                assert!(e.to_string().contains("could not acquire lock"), "{e}");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Opens the store, expecting corruption at `tree`/`key`.
fn assert_corruption_at(path: &Path, want_tree: &str, want_key: &str) {
    match driftlock_raft_store::open(path) {
        Ok(_) => panic!("a store with a damaged value at {want_tree}/{want_key} opened"),
        Err(err) => {
            let message = err.to_string();
            match err {
                StoreError::Corruption { tree, key, .. } => {
                    assert_eq!((tree.as_str(), key.as_str()), (want_tree, want_key));
                    assert!(
                        message.contains(&format!("`{want_tree}`")) && message.contains(want_key),
                        "the message names tree and key: {message}"
                    );
                }
                other => panic!("expected Corruption at {want_tree}/{want_key}, got: {other}"),
            }
        }
    }
}

async fn case(tree: &str, key: &[u8], key_text: &str, how: impl FnOnce(&mut Vec<u8>)) {
    let dir = tempfile::tempdir().unwrap();
    populated_store(dir.path()).await;
    // The undamaged store opens.
    drop(driftlock_raft_store::open(dir.path()).unwrap());
    damage(dir.path(), tree, key, how);
    assert_corruption_at(dir.path(), tree, key_text);
}

fn flip_last_byte(v: &mut [u8]) {
    let last = v.len() - 1;
    v[last] ^= 0x01;
}

#[tokio::test]
async fn flipped_byte_in_a_log_entry() {
    case("log", &7u64.to_be_bytes(), "7", |v| flip_last_byte(v)).await;
}

#[tokio::test]
async fn flipped_byte_in_the_middle_of_a_log_entry() {
    case("log", &13u64.to_be_bytes(), "13", |v| {
        let mid = v.len() / 2;
        v[mid] ^= 0x80;
    })
    .await;
}

#[tokio::test]
async fn damaged_checksum_field() {
    case("log", &1u64.to_be_bytes(), "1", |v| v[5] ^= 0x10).await;
}

#[tokio::test]
async fn truncated_log_entry() {
    case("log", &20u64.to_be_bytes(), "20", |v| v.truncate(v.len() - 3)).await;
}

#[tokio::test]
async fn flipped_byte_in_the_vote() {
    case("meta", b"vote", "vote", |v| flip_last_byte(v)).await;
}

#[tokio::test]
async fn flipped_byte_in_the_committed_id() {
    case("meta", b"committed", "committed", |v| flip_last_byte(v)).await;
}

/// The only file in the store's snapshot directory.
fn snapshot_file(store: &Path) -> std::path::PathBuf {
    let dir = driftlock_raft_store::snapshot_file::dir(store);
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "one snapshot file in {}: {files:?}", dir.display());
    files.into_iter().next().unwrap()
}

/// Opens the store, expecting an error whose message names `file`.
fn open_fails_naming(store: &Path, file: &Path) -> StoreError {
    match driftlock_raft_store::open(store) {
        Ok(_) => panic!(
            "a store whose snapshot file {} is damaged or gone opened",
            file.display()
        ),
        Err(err) => {
            let message = err.to_string();
            assert!(
                message.contains(&file.display().to_string()),
                "the message names the file: {message}"
            );
            err
        }
    }
}

#[tokio::test]
async fn flipped_byte_in_the_snapshot_data() {
    let dir = tempfile::tempdir().unwrap();
    populated_store(dir.path()).await;
    drop(driftlock_raft_store::open(dir.path()).unwrap());
    let file = snapshot_file(dir.path());
    let mut data = std::fs::read(&file).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x04;
    std::fs::write(&file, data).unwrap();
    let err = open_fails_naming(dir.path(), &file);
    assert!(
        matches!(err, StoreError::CorruptFile { ref path, .. } if *path == file),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_missing_snapshot_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    populated_store(dir.path()).await;
    let file = snapshot_file(dir.path());
    std::fs::remove_file(&file).unwrap();
    let err = open_fails_naming(dir.path(), &file);
    assert!(
        matches!(err, StoreError::File { ref path, .. } if *path == file),
        "{err:?}"
    );
}

/// A store written before snapshot files keeps its data in the snapshot
/// tree: it still opens from there, and the next snapshot moves the data to
/// a file and removes the key.
#[tokio::test]
async fn a_store_with_the_snapshot_in_sled_opens_and_moves_it_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    populated_store(dir.path()).await;
    let file = snapshot_file(dir.path());
    {
        let db = open_sled(dir.path());
        let tree = db.open_tree("snapshot").unwrap();
        tree.insert(b"data", std::fs::read(&file).unwrap()).unwrap();
        db.flush().unwrap();
    }
    std::fs::remove_file(&file).unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    assert_eq!(store.state_machine.reader().last_applied(), Some(lid(10)));
    let mut sm = store.state_machine;
    sm.try_create_snapshot_builder(true)
        .await
        .unwrap()
        .build_snapshot()
        .await
        .unwrap();
    drop(sm);
    drop(store.log_store);
    assert!(snapshot_file(dir.path()).exists());
    let db = open_sled(dir.path());
    assert!(db.open_tree("snapshot").unwrap().get(b"data").unwrap().is_none());
}

#[tokio::test]
async fn flipped_byte_in_the_snapshot_meta() {
    case("snapshot", b"meta", "meta", |v| flip_last_byte(v)).await;
}

/// A value written without our frame at all (e.g. by another program) is
/// also refused, wherever it is.
#[tokio::test]
async fn unframed_value_in_an_unknown_tree() {
    let dir = tempfile::tempdir().unwrap();
    populated_store(dir.path()).await;
    {
        let db = open_sled(dir.path());
        db.open_tree("stray")
            .unwrap()
            .insert(b"junk", &b"not a frame"[..])
            .unwrap();
        db.flush().unwrap();
    }
    assert_corruption_at(dir.path(), "stray", "junk");
}
