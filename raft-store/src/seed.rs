//! Seeding the store of a new cluster's node from a backed-up snapshot
//! (`driftlock snapshot restore`; docs/design.md "Backup and restore").
//!
//! A seeded store is what a node of a cluster whose log was purged up to
//! the snapshot looks like: the snapshot slot holds the backed-up state
//! with the *new* membership, the log is empty with the purged and
//! committed log ids at the snapshot's last log id, and the vote is this
//! node's own, uncommitted, one term above that log id's (see
//! [`seed_from_snapshot`] for why there must be one). `driftlock serve` on
//! it starts as a member of the new cluster, without `init`: the nodes
//! elect a leader in the next term and the log continues after the
//! snapshot's index.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::Membership;

use crate::frame::{self, StoreError};
use crate::log_store::{COMMITTED_KEY, META_TREE, PURGED_KEY, VOTE_KEY};
use crate::state_machine::{decode_snapshot, SNAPSHOT_META_KEY, SNAPSHOT_TREE};
use crate::type_config::{LogId, NodeAddr, SnapshotMeta, StoredMembership, Vote};
use crate::StoreConfig;

/// Why a store could not be seeded. Nothing usable is left behind: the
/// checks run before anything is written, and a failure while writing
/// leaves a directory `driftlock serve` refuses (no snapshot) or that a
/// new restore refuses (not empty), never a half-seeded store that starts.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The data directory exists and holds something: a restore never
    /// writes over a store.
    #[error("data directory {} is not empty: restore only into a new or empty directory", path.display())]
    DirNotEmpty {
        /// The directory given.
        path: PathBuf,
    },
    /// The data directory could not be read or created.
    #[error("data directory {}: {source}", path.display())]
    Dir {
        /// The directory given.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The snapshot data fails its frame check (length or crc32), does not
    /// decode, is refused by the state machine (format version,
    /// invariants), or covers entries beyond the log id it came with.
    #[error("the snapshot is unusable: {0}")]
    BadSnapshot(StoreError),
    /// The new membership is empty.
    #[error("the new membership has no member")]
    NoMembers,
    /// The node being seeded is not one of the new members.
    #[error("node {node_id} is not one of the new members ({members:?})")]
    NotAMember {
        /// The node id given.
        node_id: u64,
        /// The new members' ids.
        members: Vec<u64>,
    },
    /// Writing or re-reading the new store failed.
    #[error("writing the new store: {0}")]
    Store(StoreError),
}

/// Seeds a new store at `path` for node `node_id` from a snapshot's
/// `data` (the framed state-machine snapshot, as the snapshot slot and the
/// Raft network carry it) covering the log up to `last_log_id`, with
/// `members` (id → addresses, all voters) as the new cluster's membership.
///
/// Refuses a `path` that exists and is not empty, snapshot data that fails
/// its frame check or does not restore, and a `node_id` not in `members`.
/// Writes, in one flushed sled database:
///
/// - the snapshot slot: `data` unchanged, and metadata naming `last_log_id`
///   and the new membership (introduced at `last_log_id`, committed);
/// - the purged and committed log ids: `last_log_id` (the log is empty, so
///   the next entry is `last_log_id.index + 1`);
/// - the vote: this node's own, uncommitted, in the term after
///   `last_log_id`'s. openraft's candidates campaign in the vote's term plus
///   one; without a vote that would be term 1, and a new leader's first
///   entry would carry a log id lower than the snapshot's, breaking the
///   order of log ids. With it the first election is in term + 2, above
///   every entry of the old cluster. Every node of the new cluster votes
///   for itself here and nobody leads this term, so no vote is ever given
///   twice.
///
/// Then it opens the new store as `driftlock serve` will ([`crate::open`]:
/// every frame checked, the state restored) and checks it reports
/// `last_log_id` as applied.
pub fn seed_from_snapshot(
    path: impl AsRef<Path>,
    node_id: u64,
    data: &[u8],
    last_log_id: LogId,
    members: BTreeMap<u64, NodeAddr>,
) -> Result<(), SeedError> {
    let path = path.as_ref();
    if members.is_empty() {
        return Err(SeedError::NoMembers);
    }
    if !members.contains_key(&node_id) {
        return Err(SeedError::NotAMember {
            node_id,
            members: members.keys().copied().collect(),
        });
    }
    let machine = decode_snapshot(data).map_err(SeedError::BadSnapshot)?;
    if machine.last_index() > last_log_id.index {
        return Err(SeedError::BadSnapshot(StoreError::Inconsistent(format!(
            "the state has applied entry {} but the snapshot is said to end at {}",
            machine.last_index(),
            last_log_id.index
        ))));
    }
    check_empty_dir(path)?;

    let voters: BTreeSet<u64> = members.keys().copied().collect();
    let membership = Membership::new(vec![voters], members)
        .map_err(|e| SeedError::Store(StoreError::Inconsistent(e.to_string())))?;
    let meta = SnapshotMeta {
        last_log_id: Some(last_log_id),
        last_membership: StoredMembership::new(Some(last_log_id), membership),
    };
    let vote = Vote::new(last_log_id.leader_id.term.saturating_add(1), node_id);
    write_store(path, &meta, data, last_log_id, vote).map_err(SeedError::Store)?;

    let store = crate::open(path).map_err(SeedError::Store)?;
    let applied = store.state_machine.reader().last_applied();
    if applied != Some(last_log_id) {
        return Err(SeedError::Store(StoreError::Inconsistent(format!(
            "the seeded store opens at {applied:?}, not at {last_log_id}"
        ))));
    }
    Ok(())
}

fn check_empty_dir(path: &Path) -> Result<(), SeedError> {
    let dir_error = |source| SeedError::Dir {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(SeedError::DirNotEmpty {
                    path: path.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(path).map_err(dir_error),
        Err(e) => Err(dir_error(e)),
    }
}

fn write_store(
    path: &Path,
    meta: &SnapshotMeta,
    data: &[u8],
    last_log_id: LogId,
    vote: Vote,
) -> Result<(), StoreError> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(StoreConfig::default().cache_capacity_bytes)
        .open()?;
    crate::snapshot_file::write(path, meta.last_log_id.as_ref(), data)?;
    let snapshot = db.open_tree(SNAPSHOT_TREE)?;
    snapshot.insert(SNAPSHOT_META_KEY, frame::encode_value(meta)?)?;
    let raft_meta = db.open_tree(META_TREE)?;
    let mut batch = sled::Batch::default();
    batch.insert(PURGED_KEY, frame::encode_value(&Some(last_log_id))?);
    batch.insert(COMMITTED_KEY, frame::encode_value(&Some(last_log_id))?);
    batch.insert(VOTE_KEY, frame::encode_value(&Some(vote))?);
    raft_meta.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}
