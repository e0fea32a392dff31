//! driftlock's Raft storage: openraft's `RaftLogStorage` and
//! `RaftStateMachine` over sled, every value crc32-framed, applying committed
//! entries to [`driftlock_state_machine`].
//!
//! [`open`] validates every stored frame and returns a [`Store`]: the
//! [`LogStore`] and the [`SledStateMachine`] to hand to `openraft::Raft::new`.
//! Before handing them over, the node keeps a [`StampHandle`] (the cluster
//! time anchor of docs/design.md "Time", rule 1) and a [`StateReader`] (reads of
//! the in-memory state and a subscription to its events). [`TypeConfig`] is
//! the one openraft type configuration of the whole service.
//! [`seed_from_snapshot`] makes a new cluster's store from a backed-up
//! snapshot (`driftlock snapshot restore`).
//!
//! ```no_run
//! # fn main() -> Result<(), driftlock_raft_store::StoreError> {
//! let config = driftlock_raft_store::StoreConfig::default();
//! let store = driftlock_raft_store::open_with("/var/lib/driftlock/raft", &config)?;
//! let stamps = store.log_store.stamp_handle(); // last_stamp() and stamped() when stamping
//! let state = store.state_machine.reader(); // with_state(..), subscribe()
//! let mut events = state.subscribe();
//! let mut raft_config = openraft::Config::default();
//! config.apply_to(&mut raft_config);
//! // openraft::Raft::new(id, raft_config.into(), network, store.log_store, store.state_machine)
//! # let _ = (stamps, events.try_recv());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod background;
pub mod frame;
pub mod log_store;
pub mod seed;
pub mod snapshot_file;
pub mod state_machine;
pub mod type_config;

use std::path::Path;

pub use frame::StoreError;
pub use log_store::{FlushObserver, LogReader, LogStore, StampHandle};
pub use seed::{seed_from_snapshot, SeedError};
pub use state_machine::{AppliedEvents, SledStateMachine, SmNotice, SnapshotBuilder, StateReader, StoreTimings};
pub use type_config::{
    log_id, ApplyOutput, Entry, LogId, NodeAddr, Snapshot, SnapshotData, SnapshotMeta, StampedRequest,
    StoredMembership, TypeConfig, Vote,
};

/// Settings of [`open_with`]: sled's cache, the event channel, the initial
/// replicated configuration, and the snapshot and log-retention policy that
/// [`StoreConfig::apply_to`] copies into openraft's config. The node sets only
/// the snapshot interval (from its `[raft]` settings) and keeps the defaults
/// for the rest.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// Build a snapshot every this many applied entries (openraft's
    /// `SnapshotPolicy::LogsSinceLast`); `0` disables automatic snapshots.
    pub snapshot_every_entries: u64,
    /// Entries already in a snapshot to keep in the log for lagging
    /// followers (openraft's `max_in_snapshot_log_to_keep`); the log is
    /// purged up to the snapshot minus this many.
    pub entries_kept_after_snapshot: u64,
    /// Capacity of the event broadcast channel, in notices.
    pub events_capacity: usize,
    /// sled's page cache, bytes.
    pub cache_capacity_bytes: u64,
    /// The state machine's configuration on a store with no snapshot. It is
    /// replicated state: every replica of a cluster must start from the same
    /// value (later changes go through the log).
    pub initial_state_config: driftlock_proto::Config,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            snapshot_every_entries: 10_000,
            entries_kept_after_snapshot: 1_000,
            events_capacity: 4_096,
            cache_capacity_bytes: 256 * 1024 * 1024,
            initial_state_config: driftlock_proto::Config::default(),
        }
    }
}

impl StoreConfig {
    /// openraft's snapshot policy for [`Self::snapshot_every_entries`].
    pub fn snapshot_policy(&self) -> openraft::SnapshotPolicy {
        match self.snapshot_every_entries {
            0 => openraft::SnapshotPolicy::Never,
            n => openraft::SnapshotPolicy::LogsSinceLast(n),
        }
    }

    /// Sets the snapshot policy and the log retention in an openraft config.
    pub fn apply_to(&self, raft: &mut openraft::Config) {
        raft.snapshot_policy = self.snapshot_policy();
        raft.max_in_snapshot_log_to_keep = self.entries_kept_after_snapshot;
    }
}

/// An opened store: give both halves to `openraft::Raft::new`.
pub struct Store {
    /// The log, vote and committed id.
    pub log_store: LogStore,
    /// The in-memory state machine, restored from the stored snapshot, and the
    /// snapshot slot on disk.
    pub state_machine: SledStateMachine,
}

/// Opens (or creates) the store at `path` with [`StoreConfig::default`]; see
/// [`open_with`].
pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
    open_with(path, &StoreConfig::default())
}

/// Opens (or creates) the store at `path`.
///
/// Every frame of every sled tree is checked first; a mismatch returns
/// [`StoreError::Corruption`] naming the tree and key, and the node must not
/// start. Then the log is decoded and checked for holes, an interrupted
/// purge is finished, a committed vote is reopened uncommitted (see
/// [`log_store`]), the state machine is restored from the stored snapshot,
/// and the stamp anchor is set from the newest stamped entry in the log or
/// the snapshot, whichever is at the higher index, with the instant of the
/// opening.
pub fn open_with(path: impl AsRef<Path>, config: &StoreConfig) -> Result<Store, StoreError> {
    let db = open_db(path.as_ref(), config)?;
    validate_frames(&db)?;
    let log_store = LogStore::open(&db)?;
    let state_machine = SledStateMachine::open(
        &db,
        path.as_ref(),
        config.initial_state_config.clone(),
        config.events_capacity,
        log_store.stamp_handle(),
    )?;
    let reader = state_machine.reader();
    if let Some(snapshot) = reader.last_applied() {
        // Opened from a stored snapshot: every entry it covers was stamped
        // before now.
        log_store
            .stamp_handle()
            .snapshot_held(snapshot.index, reader.with_state(|sm| sm.ts_eff_us()));
    }
    Ok(Store {
        log_store,
        state_machine,
    })
}

/// How long [`open_with`] waits for sled's file lock, ms.
///
/// sled releases the lock from its background IO threads shortly after the
/// last handle of a database is dropped, so a store reopened in the same
/// process (tests, an in-process restart) can find it still held for a
/// moment. Another process holding it gets the error after this wait.
pub const LOCK_WAIT_MS: u64 = 3_000;

fn open_db(path: &Path, config: &StoreConfig) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_capacity_bytes)
            .open();
        match opened {
            // sled reports a held lock only through its message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < std::time::Duration::from_millis(LOCK_WAIT_MS) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return Ok(other?),
        }
    }
}

/// Checks the frame of every value in every tree of `db`.
pub fn validate_frames(db: &sled::Db) -> Result<(), StoreError> {
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        let tree_name = String::from_utf8_lossy(&name).into_owned();
        for item in tree.iter() {
            let (key, value) = item?;
            frame::check(&value).map_err(|detail| StoreError::Corruption {
                key: log_store::key_display(&tree_name, &key),
                tree: tree_name.clone(),
                detail,
            })?;
        }
    }
    Ok(())
}
