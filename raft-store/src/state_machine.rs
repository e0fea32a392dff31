//! openraft's [`RaftStateMachine`] for driftlock, and its snapshot builder.
//!
//! **Persistence choice.** The [`StateMachine`] lives in memory. What is
//! persisted is the latest snapshot: its data, the framed bincode of the
//! state machine's [`Snapshot`](driftlock_state_machine::Snapshot), in a
//! file of its own ([`crate::snapshot_file`]), and in sled's tree
//! `snapshot` key `meta` the framed openraft [`SnapshotMeta`] (last applied
//! log id and membership), which names the file. Both are durable before a
//! build or an install returns; a store written before snapshot files
//! keeps its data under key `data` until its next snapshot. Opening the store
//! restores the state machine from it, so `applied_state()` reports the
//! snapshot's last log id; openraft then re-applies the committed entries
//! above it from the log (the log store persists the committed log id for
//! exactly this). `apply()` itself writes nothing to disk.
//!
//! **Events.** Applying a normal entry returns the state machine's events;
//! they are published on a [`tokio::sync::broadcast`] channel as
//! [`SmNotice`]s. Subscribe with [`StateReader::subscribe`] before handing
//! the state machine to openraft. Events of entries re-applied after a
//! restart are published again (same index), so consumers deduplicate by
//! index. A receiver that falls more than the channel's capacity behind gets
//! `RecvError::Lagged` and must resynchronise from the state.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use driftlock_proto::Event;
use driftlock_state_machine::{EntryMeta, StateMachine};
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use tokio::sync::broadcast;

use crate::frame::{self, StoreError};
use crate::log_store::StampHandle;
use crate::snapshot_file;
use crate::type_config::{
    ApplyOutput, LogId, Snapshot, SnapshotData, SnapshotMeta, StampedRequest, StoredMembership, TypeConfig,
};

/// Name of the sled tree holding the current snapshot.
pub const SNAPSHOT_TREE: &str = "snapshot";
/// Key of the snapshot's openraft metadata in [`SNAPSHOT_TREE`].
pub const SNAPSHOT_META_KEY: &str = "meta";
/// Key of the snapshot's data in [`SNAPSHOT_TREE`] in stores written before
/// snapshot files ([`crate::snapshot_file`]); read if present, removed by
/// the next snapshot.
pub const SNAPSHOT_DATA_KEY: &str = "data";

/// The events one applied entry produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEvents {
    /// Log index of the entry.
    pub index: u64,
    /// The events, in the order the state machine emitted them, each with
    /// the revision of the command that produced it (the entry's index
    /// unless it was a batch; never empty: entries without events are not
    /// published).
    pub events: Vec<(u64, Event)>,
}

/// What the state machine publishes to its subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmNotice {
    /// A normal entry was applied and produced events.
    Applied(AppliedEvents),
    /// The state was replaced by a snapshot (received from the leader)
    /// covering every entry up to `last_index`; events of entries in it that
    /// were not applied here were never published. Resynchronise from the
    /// state.
    SnapshotInstalled {
        /// Last log index the snapshot covers.
        last_index: u64,
        /// Revision of the last command the snapshot covers: events are
        /// numbered by revision, so this is where observers resume.
        last_revision: u64,
    },
}

/// The in-memory state and openraft's view of it, under one lock.
#[derive(Debug)]
struct Applied {
    machine: StateMachine,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

/// How long the state machine was held and what the last snapshot cost,
/// for the node's metrics (docs/design.md "Snapshots without stalls").
/// Updated with relaxed atomics: each value is a measurement, not a
/// synchronisation point.
#[derive(Debug, Default)]
struct Timings {
    /// Longest time the state-machine write lock was held to apply one
    /// entry since the store opened, µs: while held, reads and applies wait.
    apply_hold_max_us: AtomicU64,
    /// The last snapshot's capture (under the read lock), µs.
    snapshot_capture_us: AtomicU64,
    /// The last snapshot's encoding (off the apply path), µs.
    snapshot_encode_us: AtomicU64,
    /// The last snapshot's write to the store and flush, µs.
    snapshot_store_us: AtomicU64,
    /// The last snapshot's framed size, bytes.
    snapshot_bytes: AtomicU64,
}

/// A copy of the store's [`Timings`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreTimings {
    /// Longest time one entry's apply held the state machine since the
    /// store opened, µs.
    pub apply_hold_max_us: u64,
    /// Time the last snapshot built here held the state machine to capture
    /// it, µs (0 before the first).
    pub snapshot_capture_us: u64,
    /// Time the last snapshot built here took to encode, µs.
    pub snapshot_encode_us: u64,
    /// Time the last snapshot built here took to write and flush, µs.
    pub snapshot_store_us: u64,
    /// Framed size of the last snapshot built here, bytes.
    pub snapshot_bytes: u64,
}

impl Timings {
    fn view(&self) -> StoreTimings {
        StoreTimings {
            apply_hold_max_us: self.apply_hold_max_us.load(Ordering::Relaxed),
            snapshot_capture_us: self.snapshot_capture_us.load(Ordering::Relaxed),
            snapshot_encode_us: self.snapshot_encode_us.load(Ordering::Relaxed),
            snapshot_store_us: self.snapshot_store_us.load(Ordering::Relaxed),
            snapshot_bytes: self.snapshot_bytes.load(Ordering::Relaxed),
        }
    }
}

fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Read access to the in-memory state machine and its event stream, for the
/// node (linearizable reads, `observe`). Cheap to clone.
#[derive(Clone)]
pub struct StateReader {
    applied: Arc<RwLock<Applied>>,
    notices: broadcast::Sender<SmNotice>,
    timings: Arc<Timings>,
}

impl StateReader {
    /// Runs `f` on the current state under a read lock. Keep `f` short:
    /// applying waits for it.
    pub fn with_state<R>(&self, f: impl FnOnce(&StateMachine) -> R) -> R {
        f(&read(&self.applied).machine)
    }

    /// The last log id applied (including blank and membership entries).
    pub fn last_applied(&self) -> Option<LogId> {
        read(&self.applied).last_applied
    }

    /// Subscribes to applied events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SmNotice> {
        self.notices.subscribe()
    }

    /// How long applies held the state machine, and what the last snapshot
    /// built here cost.
    pub fn timings(&self) -> StoreTimings {
        self.timings.view()
    }
}

// A panic while the lock is held can only come from a bug in apply, which
// also stops openraft's state-machine task; readers may still look.
fn read(lock: &RwLock<Applied>) -> RwLockReadGuard<'_, Applied> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(lock: &RwLock<Applied>) -> RwLockWriteGuard<'_, Applied> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// openraft's state machine for driftlock: applies committed entries to the
/// in-memory [`StateMachine`], builds, stores and installs snapshots.
///
/// Created by [`crate::open`]; hand it to `openraft::Raft::new`. Keep a
/// [`StateReader`] ([`SledStateMachine::reader`]) before doing so.
pub struct SledStateMachine {
    applied: Arc<RwLock<Applied>>,
    notices: broadcast::Sender<SmNotice>,
    /// Where snapshots are stored (builds run in their own task, installs
    /// in the state-machine task; the slot serialises them).
    slot: Slot,
    /// The log store's cluster-time anchor, moved to an installed
    /// snapshot (docs/design.md "Time", rule 1).
    stamp: StampHandle,
    timings: Arc<Timings>,
}

/// Builds a snapshot from a view of the state captured when the builder
/// was created. The state's tables are persistent maps, so the capture
/// shares them with the live state (O(1) under the read lock) and the
/// encoding runs on a blocking thread while applies go on: an apply that
/// changes a shared part copies that part first, so the view stays as it
/// was (docs/design.md "Snapshots without stalls").
pub struct SnapshotBuilder {
    slot: Slot,
    /// Taken by the first `build_snapshot`.
    snapshot: Option<driftlock_state_machine::Snapshot>,
    meta: SnapshotMeta,
    timings: Arc<Timings>,
}

/// Frames the bincode encoding of a state-machine snapshot: the snapshot
/// data format.
pub fn encode_snapshot(snapshot: &driftlock_state_machine::Snapshot) -> Result<Vec<u8>, StoreError> {
    frame::encode_value(snapshot)
}

/// Checks the frame of snapshot data, decodes it and restores the state
/// machine from it (which checks the format version and the invariants).
/// A version-5 snapshot (written before batched entries) restores too: its
/// encoding is the head of the current one, which is decoded first.
pub fn decode_snapshot(data: &[u8]) -> Result<StateMachine, StoreError> {
    let payload = frame::decode(SNAPSHOT_TREE, SNAPSHOT_DATA_KEY, data)?;
    let undecodable = |source| StoreError::Undecodable {
        tree: SNAPSHOT_TREE.to_string(),
        key: SNAPSHOT_DATA_KEY.to_string(),
        source,
    };
    // Every format starts with its version; bincode 1.3's `deserialize`
    // allows trailing bytes, so this reads those four and nothing else.
    #[derive(serde::Deserialize)]
    struct Head {
        version: u32,
    }
    let head: Head = bincode::deserialize(payload).map_err(undecodable)?;
    if head.version == 5 {
        let v5: driftlock_state_machine::SnapshotV5 = bincode::deserialize(payload).map_err(undecodable)?;
        return Ok(StateMachine::restore_v5(v5)?);
    }
    let snapshot: driftlock_state_machine::Snapshot = bincode::deserialize(payload).map_err(undecodable)?;
    Ok(StateMachine::restore(snapshot)?)
}

/// Checks that a decoded state is no further than its metadata says.
fn check_meta(machine: &StateMachine, meta: &SnapshotMeta) -> Result<(), StoreError> {
    let last = meta.last_log_id.map(|l| l.index);
    if machine.last_index() > 0 && last.is_none_or(|last| machine.last_index() > last) {
        return Err(StoreError::Inconsistent(format!(
            "snapshot state has applied entry {} but its metadata ends at {:?}",
            machine.last_index(),
            last
        )));
    }
    Ok(())
}

/// Where a snapshot is persisted: the store's sled tree for the metadata,
/// its directory for the data file, and the lock that serialises writers.
#[derive(Clone)]
struct Slot {
    db: sled::Db,
    dir: PathBuf,
    tree: sled::Tree,
    lock: Arc<Mutex<()>>,
}

impl Slot {
    /// Persists a snapshot: its data file, then the metadata naming it
    /// (one sled batch, flushed), then removes the files no longer named
    /// — all under the slot's lock, so a concurrent writer never removes
    /// the file the durable metadata names. Unless `replace` is set, a
    /// newer snapshot already stored is kept. Returns whether it wrote.
    /// Blocking (file writes and fsyncs): call on a blocking thread.
    fn persist(&self, meta: &SnapshotMeta, data: &[u8], replace: bool) -> Result<bool, StoreError> {
        let _slot = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(stored) = self.tree.get(SNAPSHOT_META_KEY)?.filter(|_| !replace) {
            let stored: SnapshotMeta = frame::decode_value(SNAPSHOT_TREE, SNAPSHOT_META_KEY, &stored)?;
            if stored.last_log_id > meta.last_log_id {
                return Ok(false);
            }
        }
        snapshot_file::write(&self.dir, meta.last_log_id.as_ref(), data)?;
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META_KEY, frame::encode_value(meta)?);
        batch.remove(SNAPSHOT_DATA_KEY);
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        snapshot_file::remove_others(&self.dir, meta.last_log_id.as_ref())?;
        Ok(true)
    }

    /// The stored snapshot's metadata and data (from its file, or from the
    /// `data` key of a store written before snapshot files).
    fn load(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StoreError> {
        let _slot = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        load(&self.dir, &self.tree)
    }
}

/// [`Slot::load`] without the lock (opening, before anything else runs).
fn load(dir: &Path, tree: &sled::Tree) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StoreError> {
    let Some(meta) = tree.get(SNAPSHOT_META_KEY)? else {
        if tree.get(SNAPSHOT_DATA_KEY)?.is_some() {
            return Err(StoreError::Inconsistent(
                "the snapshot tree holds data but no metadata".to_string(),
            ));
        }
        return Ok(None);
    };
    let meta: SnapshotMeta = frame::decode_value(SNAPSHOT_TREE, SNAPSHOT_META_KEY, &meta)?;
    let data = match tree.get(SNAPSHOT_DATA_KEY)? {
        Some(legacy) => {
            frame::decode(SNAPSHOT_TREE, SNAPSHOT_DATA_KEY, &legacy)?;
            legacy.to_vec()
        }
        None => snapshot_file::read(dir, meta.last_log_id.as_ref())?,
    };
    Ok(Some((meta, data)))
}

impl SledStateMachine {
    /// Opens the state machine on `db`, whose frames the caller has checked:
    /// restores the state from the stored snapshot, or starts from
    /// `StateMachine::new(initial)` if there is none.
    pub(crate) fn open(
        db: &sled::Db,
        dir: &Path,
        initial: driftlock_proto::Config,
        events_capacity: usize,
        stamp: StampHandle,
    ) -> Result<SledStateMachine, StoreError> {
        let tree = db.open_tree(SNAPSHOT_TREE)?;
        let applied = match load(dir, &tree)? {
            None => Applied {
                machine: StateMachine::new(initial),
                last_applied: None,
                last_membership: StoredMembership::default(),
            },
            Some((meta, data)) => {
                let machine = decode_snapshot(&data)?;
                check_meta(&machine, &meta)?;
                Applied {
                    machine,
                    last_applied: meta.last_log_id,
                    last_membership: meta.last_membership,
                }
            }
        };
        // Files of older snapshots and interrupted writes.
        snapshot_file::remove_others(dir, applied.last_applied.as_ref())?;
        let (notices, _) = broadcast::channel(events_capacity.max(1));
        Ok(SledStateMachine {
            applied: Arc::new(RwLock::new(applied)),
            notices,
            slot: Slot {
                db: db.clone(),
                dir: dir.to_path_buf(),
                tree,
                lock: Arc::new(Mutex::new(())),
            },
            stamp,
            timings: Arc::new(Timings::default()),
        })
    }

    /// Read access to the state and its events.
    pub fn reader(&self) -> StateReader {
        StateReader {
            applied: Arc::clone(&self.applied),
            notices: self.notices.clone(),
            timings: Arc::clone(&self.timings),
        }
    }

    /// Applies one entry under the write lock; returns its output and the
    /// events to publish.
    fn apply_entry(&self, entry: crate::Entry) -> Result<(ApplyOutput, Vec<(u64, Event)>), StoreError> {
        let log_id = entry.log_id;
        let index = log_id.index;
        let mut applied = write(&self.applied);
        let held_since = Instant::now();
        if let Some(last) = &applied.last_applied {
            if index <= last.index {
                return Err(StoreError::Apply(format!(
                    "entry {index} arrived after entry {} was applied",
                    last.index
                )));
            }
        }
        let (responses, events) = match entry.payload {
            EntryPayload::Blank => (Vec::new(), Vec::new()),
            EntryPayload::Normal(StampedRequest(stamped)) => {
                // Blank and membership entries do not reach the state
                // machine, so its last index may be lower, never higher.
                if index <= applied.machine.last_index() {
                    return Err(StoreError::Apply(format!(
                        "entry {index} does not follow the state machine's entry {}",
                        applied.machine.last_index()
                    )));
                }
                applied.machine.apply_entry(
                    stamped.command,
                    EntryMeta {
                        index,
                        ts_us: stamped.ts_us,
                    },
                )
            }
            EntryPayload::Membership(membership) => {
                applied.last_membership = StoredMembership::new(Some(log_id), membership);
                (Vec::new(), Vec::new())
            }
        };
        applied.last_applied = Some(log_id);
        let output = ApplyOutput {
            index,
            ts_eff_us: applied.machine.ts_eff_us(),
            responses,
        };
        drop(applied);
        self.timings
            .apply_hold_max_us
            .fetch_max(elapsed_us(held_since), Ordering::Relaxed);
        Ok((output, events))
    }

    async fn install(&mut self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StoreError> {
        // Decoding, checking and writing a large snapshot take a while:
        // on a blocking thread, not on a runtime worker.
        let (slot, stored_meta) = (self.slot.clone(), meta.clone());
        let machine = tokio::task::spawn_blocking(move || -> Result<StateMachine, StoreError> {
            let machine = decode_snapshot(&data)?;
            check_meta(&machine, &stored_meta)?;
            slot.persist(&stored_meta, &data, true)?;
            Ok(machine)
        })
        .await
        .map_err(|e| StoreError::Apply(format!("snapshot install task failed: {e}")))??;
        let ts_eff_us = machine.ts_eff_us();
        let last_revision = machine.last_revision();
        let replaced = {
            let mut applied = write(&self.applied);
            std::mem::replace(
                &mut *applied,
                Applied {
                    machine,
                    last_applied: meta.last_log_id,
                    last_membership: meta.last_membership.clone(),
                },
            )
        };
        // Freeing a large state takes a while: not under the lock, and not
        // on this task's runtime worker.
        drop(tokio::task::spawn_blocking(move || drop(replaced)));
        let last_index = meta.last_log_id.map_or(0, |l| l.index);
        // The log may still anchor cluster time at an entry far older than
        // the snapshot (a follower that was cut off), or at nothing (a new
        // node): the snapshot's cluster time, with the instant now, is the
        // newest stamped position this node knows.
        self.stamp.snapshot_held(last_index, ts_eff_us);
        // No subscriber is not an error.
        let _ = self.notices.send(SmNotice::SnapshotInstalled {
            last_index,
            last_revision,
        });
        Ok(())
    }

    async fn current_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let slot = self.slot.clone();
        let loaded = tokio::task::spawn_blocking(move || slot.load())
            .await
            .map_err(|e| StoreError::Apply(format!("snapshot read task failed: {e}")))??;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: SnapshotData::new(data),
        }))
    }

    fn builder(&self) -> SnapshotBuilder {
        let started = Instant::now();
        let (snapshot, meta) = {
            let applied = read(&self.applied);
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.last_membership.clone(),
            };
            (applied.machine.snapshot(), meta)
        };
        self.timings
            .snapshot_capture_us
            .store(elapsed_us(started), Ordering::Relaxed);
        SnapshotBuilder {
            slot: self.slot.clone(),
            snapshot: Some(snapshot),
            meta,
            timings: Arc::clone(&self.timings),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let snapshot = self
            .snapshot
            .take()
            .ok_or_else(|| io::Error::other("this snapshot builder was already used"))?;
        let (slot, meta, timings) = (self.slot.clone(), self.meta.clone(), Arc::clone(&self.timings));
        // Encoding walks the whole state and the write goes to a file and
        // fsyncs: both on a thread of their own, so neither holds a runtime
        // worker and the Raft log's own flushes never wait for them, and at
        // a lower priority, so a worker woken by a request runs first
        // (`background`).
        let (data, stored) =
            crate::background::run("snapshot-build", move || -> Result<(Vec<u8>, bool), StoreError> {
                let started = Instant::now();
                let data = encode_snapshot(&snapshot)?;
                // The view shares the live tables; dropping it here lets the
                // next apply of each shared part take it over without a copy.
                drop(snapshot);
                timings.snapshot_encode_us.store(elapsed_us(started), Ordering::Relaxed);
                timings.snapshot_bytes.store(data.len() as u64, Ordering::Relaxed);
                let started = Instant::now();
                let stored = slot.persist(&meta, &data, false)?;
                timings.snapshot_store_us.store(elapsed_us(started), Ordering::Relaxed);
                Ok((data, stored))
            })
            .await
            .map_err(|e| io::Error::other(format!("snapshot encoding failed: {e}")))??;
        if !stored {
            tracing::info!(last_log_id = ?self.meta.last_log_id, "built snapshot is older than the stored one; not stored");
        }
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: SnapshotData::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for SledStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = read(&self.applied);
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let (output, events) = self.apply_entry(entry)?;
            if !events.is_empty() {
                // No subscriber is not an error.
                let _ = self.notices.send(SmNotice::Applied(AppliedEvents {
                    index: output.index,
                    events,
                }));
            }
            if let Some(responder) = responder {
                responder.send(output);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<Self::SnapshotBuilder> {
        Some(self.builder())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.builder()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        Ok(self.install(meta, snapshot.into_inner()).await?)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.current_snapshot().await?)
    }
}
