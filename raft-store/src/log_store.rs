//! openraft's [`RaftLogStorage`] over sled, and the cluster-time stamp
//! bookkeeping of docs/design.md "Time", rule 1.
//!
//! Layout: tree `log` maps the big-endian `u64` index to a framed entry;
//! tree `meta` holds the framed `vote`, `committed` and `purged` log ids.
//!
//! Durability:
//! - `append` writes the whole call as one sled batch (readable at once) and
//!   hands the callback to a flusher thread, which flushes sled and only then
//!   reports the entries flushed. The flusher takes every request queued
//!   while it was busy with one flush (group commit), so there is at most one
//!   flush per append call.
//! - `save_vote` flushes before it returns.
//! - Every flush's duration, write and fsync together, goes to the observer
//!   set with [`LogStore::observe_flushes`] (the node's
//!   `driftlock_raft_fsync_seconds`).
//! - `truncate_after`, `purge` and `save_committed` are not flushed on their
//!   own; sled keeps writes in order, so the next flush (or sled's periodic
//!   one) persists them, and a crash before that leaves an earlier, valid
//!   state. `purge` records the purged id before it deletes entries; an
//!   interrupted purge is finished when the store is opened.
//!
//! Restarting leaders: opening the store turns a committed vote into the
//! same vote uncommitted (same term, same candidate). openraft restores a
//! node whose stored vote is committed *for itself* as leader of that term
//! at once, with the commit index it last saved (not flushed) and a log
//! that may lack its newest entries: a leader's entry commits once a quorum
//! of *followers* flushed it, before the leader's own flush, and `kill -9`
//! loses what sled had not written. Such a leader would answer reads from
//! a state missing writes it acknowledged, and would append new entries at
//! the indexes of the ones it lost, under the same term — two different
//! entries with one log id, which Raft's log matching cannot tell apart.
//! With the vote uncommitted the node starts as a follower and leads again
//! only by winning an election in a new term: the followers refuse a
//! candidate missing committed entries, and a new leader's first entry (its
//! blank entry, which openraft's linearizable reads wait for) follows every
//! entry its log held. Safe for the vote itself: the term and the candidate
//! are kept, so the node grants no second vote in that term. The cost is
//! an election after a leader restarts (docs/design.md "Raft storage").

use driftlock_sensors::clock::RawInstant;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend};

use crate::frame::{self, StoreError};
use crate::type_config::{Entry, LogId, TypeConfig, Vote};

/// Name of the sled tree holding log entries.
pub const LOG_TREE: &str = "log";
/// Name of the sled tree holding the vote and the committed and purged log
/// ids.
pub const META_TREE: &str = "meta";
/// Key of the vote in [`META_TREE`].
pub const VOTE_KEY: &str = "vote";
/// Key of the committed log id in [`META_TREE`].
pub const COMMITTED_KEY: &str = "committed";
/// Key of the last purged log id in [`META_TREE`].
pub const PURGED_KEY: &str = "purged";

/// The sled key of log index `index`: big-endian, so sled's order is the
/// log's order.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log index of a sled key of [`LOG_TREE`], if it is one.
pub fn index_of_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// A readable rendering of a key of `tree`, for error messages.
pub fn key_display(tree: &str, key: &[u8]) -> String {
    if tree == LOG_TREE {
        if let Some(index) = index_of_key(key) {
            return index.to_string();
        }
    }
    match std::str::from_utf8(key) {
        Ok(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic()) => s.to_string(),
        _ => {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

/// The cluster-time anchor of docs/design.md "Time", rule 1, as the node reads it.
///
/// A cheap clone of shared state: the node keeps one while openraft owns the
/// [`LogStore`] and calls [`StampHandle::last_stamp`] when it stamps a new
/// entry (`ts = ts_us + elapsed_since(instant) × (1 − ρ_hi)`).
///
/// The anchor's time is that of the newest stamped position this node
/// knows, newest by log index: the newest *stamped* entry in the log
/// (highest index carrying a [`StampedRequest`](crate::StampedRequest);
/// blank and membership entries carry none), or the snapshot this store
/// opened with or installed (its last index, with the state machine's
/// cluster time `ts_eff` after it), whichever is at the higher index. The
/// instant is a `RawInstant::now()` read when the log change that made it
/// the newest happened:
///
/// - an append holding a stamped entry: when the batch is written, before
///   the flush (every entry was stamped before any node could append it, so
///   the instant is after the stamping; waiting for the flush would only
///   slow cluster time down by one flush per entry) — or, for an entry this
///   node stamped itself as leader, the instant of the stamping, which the
///   node reports with [`StampHandle::stamped`];
/// - a truncation: after it;
/// - a snapshot install, or opening the store: after it.
///
/// An append of only blank or membership entries and a purge change
/// nothing: neither makes another stamped position the newest, and an older
/// instant only lengthens the elapsed time measured from a position that
/// is still the newest one. If no stamped position is left (a truncation of
/// every stamped entry), the last published time is kept with the new
/// instant.
#[derive(Clone, Debug, Default)]
pub struct StampHandle {
    state: Arc<Mutex<StampState>>,
}

#[derive(Debug, Default)]
struct StampState {
    /// `(index, ts_us)` of the newest stamped entry in the log, tracked as
    /// the log changes, `None` if the log holds none.
    newest_in_log: Option<(u64, u64)>,
    /// `(index, ts_us)` of the newest stamped position no longer (or never)
    /// in the log: the snapshot opened with or installed (last index,
    /// `ts_eff`), or the newest entry a purge removed. `None` if none.
    beyond_log: Option<(u64, u64)>,
    /// What [`StampHandle::last_stamp`] returns.
    published: Option<(u64, RawInstant)>,
    /// Stamps this node made as leader whose entries were not yet seen
    /// appended: `(ts_us, instant of the stamping)`, in stamping order, at
    /// most [`MAX_OWN_STAMPS`].
    own_stamps: VecDeque<(u64, RawInstant)>,
    /// The node id given with those stamps.
    own_id: Option<u64>,
}

/// Own stamps remembered at most; older ones are forgotten (their entries
/// then anchor at the instant of their append, the later, safe reading).
pub const MAX_OWN_STAMPS: usize = 4_096;

/// The one of two `(index, ts_us)` positions at the higher index (`b` on a
/// tie: the snapshot's `ts_eff` is at least the ts of its last entry).
fn newer(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<(u64, u64)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.0 > b.0 { a } else { b }),
        (a, None) => a,
        (None, b) => b,
    }
}

impl StampHandle {
    /// `(ts_us, instant)`: the cluster time of the newest stamped position
    /// this node knows (entry in its log, or snapshot) and a raw monotonic
    /// instant read no earlier than the log change that made it the newest.
    /// `None` while no stamped entry was ever known (a new cluster).
    pub fn last_stamp(&self) -> Option<(u64, RawInstant)> {
        self.lock().published
    }

    /// Records that this node (`node_id`), as leader, stamped an entry with
    /// `ts_us` computed at the raw instant `at` — call it before handing the
    /// entry to openraft. When that entry is appended to this log, the
    /// anchor takes `at` as its instant rather than the instant of the
    /// append: both are no earlier than the stamping (docs/design.md "Time",
    /// rule 1, A2), and `at` does not lose the time the entry took to reach
    /// the log. An entry is matched by its `ts_us` and by its log id naming
    /// `node_id` as the leader that created it; if this node stamped the
    /// same `ts_us` more than once, the latest instant is used.
    pub fn stamped(&self, node_id: u64, ts_us: u64, at: RawInstant) {
        let mut state = self.lock();
        if state.own_id != Some(node_id) {
            state.own_stamps.clear();
            state.own_id = Some(node_id);
        }
        if state.own_stamps.len() >= MAX_OWN_STAMPS {
            state.own_stamps.pop_front();
        }
        state.own_stamps.push_back((ts_us, at));
    }

    /// Records a snapshot this store now holds, covering the log up to
    /// `last_index` with cluster time `ts_eff_us` after it, and republishes
    /// the anchor with the instant taken now (docs/design.md "Time", rule
    /// 1): after an install, every entry the snapshot covers was stamped
    /// before this call.
    pub(crate) fn snapshot_held(&self, last_index: u64, ts_eff_us: u64) {
        let mut state = self.lock();
        state.beyond_log = newer(state.beyond_log, Some((last_index, ts_eff_us)));
        state.publish();
    }

    fn lock(&self) -> MutexGuard<'_, StampState> {
        // Every update of the state is a few plain assignments that cannot
        // panic: a panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StampState {
    /// Publishes the newest stamped position (or keeps the last known time)
    /// with the instant taken now, after the change.
    fn publish(&mut self) {
        let ts_us = match (newer(self.newest_in_log, self.beyond_log), self.published) {
            (Some((_, ts_us)), _) => ts_us,
            (None, Some((ts_us, _))) => ts_us,
            (None, None) => return,
        };
        self.published = Some((ts_us, RawInstant::now()));
    }

    /// Entry `(index, ts_us)`, created by leader `leader`, was appended:
    /// it is the newest stamped entry in the log. Publishes it with the
    /// instant of its stamping if this node stamped it, else with the
    /// instant taken now, after the append.
    fn appended(&mut self, index: u64, ts_us: u64, leader: u64) {
        self.newest_in_log = Some((index, ts_us));
        let own = if self.own_id == Some(leader) {
            self.own_stamps
                .iter()
                .filter(|(ts, _)| *ts == ts_us)
                .map(|(_, at)| *at)
                .max()
        } else {
            None
        };
        // Stamps at or below this one belong to entries appended now or
        // before, or to entries appended out of order or never; those fall
        // back to the instant of their append.
        self.own_stamps.retain(|(ts, _)| *ts > ts_us);
        match own {
            Some(at) if newer(self.newest_in_log, self.beyond_log) == self.newest_in_log => {
                self.published = Some((ts_us, at));
            }
            _ => self.publish(),
        }
    }
}

/// One pending flush: the callback to fire once the flush covering the
/// request's append has completed.
struct FlushRequest {
    callback: IOFlushed<TypeConfig>,
}

/// Told how long each flush of the store took; see
/// [`LogStore::observe_flushes`].
pub type FlushObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// State shared by the [`LogStore`], its [`LogReader`]s and the flusher.
struct Shared {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    stamp: StampHandle,
    /// Set at most once, before the store is handed to openraft.
    flush_observer: OnceLock<FlushObserver>,
}

/// openraft's log storage for driftlock: entries, vote, committed and purged
/// log ids in sled, every value framed.
///
/// Created by [`crate::open`]; hand it to `openraft::Raft::new`. Keep a
/// [`StampHandle`] ([`LogStore::stamp_handle`]) before doing so.
///
/// Dropping it waits for the flusher thread to finish its last flush. The
/// sled database closes when the log store, its readers, the state machine
/// and any snapshot builder are all dropped.
pub struct LogStore {
    shared: Arc<Shared>,
    flush_tx: mpsc::Sender<FlushRequest>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // Closing the channel ends the flusher's loop.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.flush_tx, closed));
        if let Some(flusher) = self.flusher.take() {
            if flusher.join().is_err() {
                tracing::error!("the log flusher thread panicked");
            }
        }
    }
}

/// A reader of the log and the vote, used by openraft's replication tasks.
/// It sees every entry the moment `append` has returned.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl LogStore {
    /// Opens the log store on `db`, whose frames the caller has checked:
    /// decodes every entry and the meta values, checks that the log has no
    /// holes, finishes an interrupted purge and sets the stamp anchor.
    pub(crate) fn open(db: &sled::Db) -> Result<LogStore, StoreError> {
        let log = db.open_tree(LOG_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        let shared = Shared {
            db: db.clone(),
            log,
            meta,
            stamp: StampHandle::default(),
            flush_observer: OnceLock::new(),
        };
        let vote: Option<Vote> = shared.read_meta(VOTE_KEY)?;
        if let Some(vote) = vote.filter(|v| v.committed) {
            // See "Restarting leaders" in the module documentation.
            let reopened = Vote {
                leader_id: vote.leader_id,
                committed: false,
            };
            shared.meta.insert(VOTE_KEY, frame::encode_value(&Some(reopened))?)?;
        }
        let _committed: Option<LogId> = shared.read_meta(COMMITTED_KEY)?;
        let purged: Option<LogId> = shared.read_meta(PURGED_KEY)?;

        if let Some(purged) = &purged {
            shared.finish_purge(purged.index)?;
        }

        // After a purge the log must continue right above the purged id;
        // without one, the first entry may be anywhere.
        let mut previous: Option<u64> = purged.as_ref().map(|p| p.index);
        let mut newest_stamped = None;
        for item in shared.log.iter() {
            let (key, value) = item?;
            let key_text = key_display(LOG_TREE, &key);
            let entry: Entry = frame::decode_value(LOG_TREE, &key_text, &value)?;
            let index = entry.index();
            if index_of_key(&key) != Some(index) {
                return Err(StoreError::Inconsistent(format!(
                    "log key {key_text} holds the entry of index {index}"
                )));
            }
            if let Some(prev) = previous {
                if Some(index) != prev.checked_add(1) {
                    return Err(StoreError::Inconsistent(format!(
                        "hole in the log: entry {index} follows {prev}"
                    )));
                }
            }
            previous = Some(index);
            if let EntryPayload::Normal(request) = &entry.payload {
                newest_stamped = Some((index, request.0.ts_us));
            }
        }

        {
            let mut stamp = shared.stamp.lock();
            stamp.newest_in_log = newest_stamped;
            stamp.publish();
        }

        let shared = Arc::new(shared);
        let (flush_tx, flush_rx) = mpsc::channel();
        let flusher = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("driftlock-log-flush".to_string())
            .spawn(move || flusher_loop(&flusher, &flush_rx))
            .map_err(StoreError::Thread)?;
        Ok(LogStore {
            shared,
            flush_tx,
            flusher: Some(flusher),
        })
    }

    /// Has `observer` told the duration of every flush this store makes
    /// from now on: the group-commit flush of appended entries and the flush
    /// of a saved vote, each a sled flush (its buffered writes, then fsync),
    /// failed ones included. It runs on the flushing thread, so it must be
    /// quick (a histogram's `observe`). Only one observer is kept: `false`
    /// if one was set before (this one is then dropped).
    pub fn observe_flushes(&self, observer: impl Fn(Duration) + Send + Sync + 'static) -> bool {
        self.shared.flush_observer.set(Box::new(observer)).is_ok()
    }

    /// The cluster-time anchor; see [`StampHandle`].
    pub fn stamp_handle(&self) -> StampHandle {
        self.shared.stamp.clone()
    }

    /// A reader sharing this store.
    pub fn reader(&self) -> LogReader {
        LogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The index the next appended entry must carry, if the log constrains
    /// it.
    fn next_index(&self) -> Result<Option<u64>, StoreError> {
        if let Some((key, _)) = self.shared.log.last()? {
            let index =
                index_of_key(&key).ok_or_else(|| StoreError::Inconsistent("a log key is not 8 bytes".into()))?;
            return Ok(Some(index + 1));
        }
        let purged: Option<LogId> = self.shared.read_meta(PURGED_KEY)?;
        Ok(purged.map(|p| p.index + 1))
    }

    fn append_entries<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut batch = sled::Batch::default();
        let mut expected = self.next_index()?;
        let mut newest_stamped = None;
        for entry in entries {
            let index = entry.index();
            if let Some(expected) = expected {
                // A gap or an overlap here would leave a hole or silently
                // overwrite entries: openraft truncates before it appends a
                // conflicting suffix, so this is a bug.
                assert_eq!(index, expected, "appended log index {index}, expected {expected}");
            }
            expected = Some(index + 1);
            if let EntryPayload::Normal(request) = &entry.payload {
                newest_stamped = Some((index, request.0.ts_us, entry.log_id.leader_id.node_id));
            }
            batch.insert(&log_key(index), frame::encode_value(&entry)?);
        }
        self.shared.log.apply_batch(batch)?;
        if let Some((index, ts_us, leader)) = newest_stamped {
            // Rule 1: the entries are in the log now, and were stamped before
            // this node received them; the flush adds nothing the anchor
            // needs.
            self.shared.stamp.lock().appended(index, ts_us, leader);
        }
        self.flush_tx
            .send(FlushRequest { callback })
            .map_err(|_| StoreError::FlusherGone)
    }

    fn truncate_entries_after(&mut self, last_kept: Option<LogId>) -> Result<(), StoreError> {
        let from = match last_kept {
            Some(log_id) => match log_id.index.checked_add(1) {
                Some(from) => from,
                None => return Ok(()),
            },
            None => 0,
        };
        // Hold the stamp lock across the change so that no snapshot install
        // publishes in between.
        let mut stamp = self.shared.stamp.lock();
        let mut batch = sled::Batch::default();
        for item in self.shared.log.range(log_key(from)..) {
            let (key, _) = item?;
            batch.remove(key);
        }
        self.shared.log.apply_batch(batch)?;
        if matches!(stamp.newest_in_log, Some((index, _)) if index >= from) {
            stamp.newest_in_log = self.shared.newest_stamped_before(from)?;
        }
        stamp.publish();
        Ok(())
    }

    fn purge_entries(&mut self, upto: LogId) -> Result<(), StoreError> {
        let purged: Option<LogId> = self.shared.read_meta(PURGED_KEY)?;
        if purged.as_ref().is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        // Record first, delete second: a crash in between leaves entries the
        // next open recognises as purged and deletes.
        self.shared.meta.insert(PURGED_KEY, frame::encode_value(&Some(upto))?)?;
        self.shared.finish_purge(upto.index)?;
        let mut stamp = self.shared.stamp.lock();
        if matches!(stamp.newest_in_log, Some((index, _)) if index <= upto.index) {
            // Still the newest stamped position, now outside the log; the
            // published anchor does not change.
            stamp.beyond_log = newer(stamp.beyond_log, stamp.newest_in_log);
            stamp.newest_in_log = None;
        }
        Ok(())
    }
}

impl Shared {
    /// Flushes sled (its buffered writes, then fsync) and tells the flush
    /// observer how long it took.
    fn flush(&self) -> Result<usize, sled::Error> {
        let started = Instant::now();
        let result = self.db.flush();
        self.flushed_in(started.elapsed());
        result
    }

    /// The asynchronous form of [`Shared::flush`].
    async fn flush_async(&self) -> Result<usize, sled::Error> {
        let started = Instant::now();
        let result = self.db.flush_async().await;
        self.flushed_in(started.elapsed());
        result
    }

    fn flushed_in(&self, elapsed: Duration) {
        if let Some(observe) = self.flush_observer.get() {
            observe(elapsed);
        }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.meta.get(key)? {
            Some(value) => frame::decode_value::<Option<T>>(META_TREE, key, &value),
            None => Ok(None),
        }
    }

    /// Deletes every entry at or below `upto` in one batch.
    fn finish_purge(&self, upto: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for item in self.log.range(..=log_key(upto)) {
            let (key, _) = item?;
            batch.remove(key);
            any = true;
        }
        if any {
            self.log.apply_batch(batch)?;
        }
        Ok(())
    }

    /// `(index, ts_us)` of the newest stamped entry below `end`.
    fn newest_stamped_before(&self, end: u64) -> Result<Option<(u64, u64)>, StoreError> {
        for item in self.log.range(..log_key(end)).rev() {
            let (key, value) = item?;
            let entry: Entry = frame::decode_value(LOG_TREE, &key_display(LOG_TREE, &key), &value)?;
            if let EntryPayload::Normal(request) = &entry.payload {
                return Ok(Some((entry.index(), request.0.ts_us)));
            }
        }
        Ok(None)
    }

    fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        self.read_meta(PURGED_KEY)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = match self.log.last()? {
            Some((key, value)) => {
                let entry: Entry = frame::decode_value(LOG_TREE, &key_display(LOG_TREE, &key), &value)?;
                Some(entry.log_id())
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    /// Entries in `range`, which must be contiguous.
    fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StoreError> {
        self.entries_within(range, usize::MAX)
    }

    /// The entries of `range`, stopping before the one that would take the
    /// stored bytes read past `max_bytes` — but always the first one, so a
    /// non-empty range never reads empty.
    fn entries_within<RB: RangeBounds<u64>>(&self, range: RB, max_bytes: usize) -> Result<Vec<Entry>, StoreError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let end_excl: Option<u64> = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        let iter = match end_excl {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => self.log.range(log_key(start)..log_key(end)),
            None => self.log.range(log_key(start)..),
        };
        let mut out: Vec<Entry> = Vec::new();
        let mut bytes: usize = 0;
        for item in iter {
            let (key, value) = item?;
            bytes = bytes.saturating_add(value.len());
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            let key_text = key_display(LOG_TREE, &key);
            let entry: Entry = frame::decode_value(LOG_TREE, &key_text, &value)?;
            if let Some(prev) = out.last() {
                if entry.index() != prev.index() + 1 {
                    return Err(StoreError::Inconsistent(format!(
                        "hole in the log: entry {} follows {}",
                        entry.index(),
                        prev.index()
                    )));
                }
            }
            out.push(entry);
        }
        Ok(out)
    }
}

/// The flusher thread: one sled flush for everything queued, then the
/// callbacks, in order. After a failed flush every later request fails too:
/// what sled had not yet written is lost, so nothing after it may be
/// reported durable.
fn flusher_loop(shared: &Shared, rx: &mpsc::Receiver<FlushRequest>) {
    let mut failed: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut pending = vec![first];
        pending.extend(rx.try_iter());
        if failed.is_none() {
            if let Err(e) = shared.flush() {
                tracing::error!(error = %e, "flushing the raft log failed; no further append will be acknowledged");
                failed = Some(e.to_string());
            }
        }
        for request in pending {
            let result = match &failed {
                None => Ok(()),
                Some(msg) => Err(io::Error::other(format!("flushing the raft log failed: {msg}"))),
            };
            request.callback.io_completed(result);
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.shared.entries(range)?)
    }

    /// What replication sends: at most
    /// [`MAX_APPEND_BYTES`](driftlock_proto::limits::MAX_APPEND_BYTES) of
    /// entries (at least one), so one AppendEntries always fits a Raft frame.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        Ok(self
            .shared
            .entries_within(start..end, driftlock_proto::limits::MAX_APPEND_BYTES)?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.read_meta(VOTE_KEY)?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        Ok(self.shared.log_state()?)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.shared
            .meta
            .insert(VOTE_KEY, frame::encode_value(&Some(vote))?)
            .map_err(StoreError::from)?;
        self.shared.flush_async().await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.shared
            .meta
            .insert(COMMITTED_KEY, frame::encode_value(&committed)?)
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.shared.read_meta(COMMITTED_KEY)?)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        Ok(self.append_entries(entries, callback)?)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        Ok(self.truncate_entries_after(last_log_id)?)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        Ok(self.purge_entries(log_id)?)
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::log_id;

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry::new_blank(log_id::<TypeConfig>(1, 1, index))
    }

    #[tokio::test]
    async fn a_limited_read_stops_at_the_byte_budget_but_never_reads_empty() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut store = LogStore::open(&db).unwrap();
        store.blocking_append((1..=10).map(entry)).await.unwrap();
        let one = db.open_tree(LOG_TREE).unwrap().get(log_key(1)).unwrap().unwrap().len();
        let shared = &store.reader().shared;
        let read = |max: usize| shared.entries_within(1..11, max).unwrap();
        assert_eq!(read(0).len(), 1, "the first entry even above the budget");
        assert_eq!(read(one).len(), 1);
        assert_eq!(read(3 * one + one / 2).len(), 3);
        assert_eq!(read(usize::MAX).len(), 10);
        let ids: Vec<u64> = read(3 * one).iter().map(|e| e.index()).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn corruption_met_while_running_is_a_typed_io_error() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut store = LogStore::open(&db).unwrap();
        store.blocking_append((1..=5).map(entry)).await.unwrap();

        let tree = db.open_tree(LOG_TREE).unwrap();
        let mut value = tree.get(log_key(3)).unwrap().unwrap().to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x40;
        tree.insert(log_key(3), value).unwrap();

        let mut reader = store.reader();
        let err = reader.try_get_log_entries(1..=5).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<StoreError>());
        match inner {
            Some(StoreError::Corruption { tree, key, .. }) => assert_eq!((tree.as_str(), key.as_str()), ("log", "3")),
            other => panic!("expected a corruption error, got {other:?}"),
        }
        // Entries before the corrupted one still read.
        assert_eq!(reader.try_get_log_entries(1..3).await.unwrap().len(), 2);
    }

    #[tokio::test]
    #[should_panic(expected = "appended log index 7, expected 6")]
    async fn appending_with_a_gap_is_refused() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut store = LogStore::open(&db).unwrap();
        store.blocking_append((1..=5).map(entry)).await.unwrap();
        let _ = store.blocking_append([entry(7)]).await;
    }

    #[tokio::test]
    async fn every_append_flush_and_vote_flush_is_observed() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut store = LogStore::open(&db).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        assert!(store.observe_flushes(move |d| sink.lock().unwrap().push(d)));
        assert!(!store.observe_flushes(|_| {}), "a second observer is refused");
        // blocking_append waits for the flush that reports the entries.
        store.blocking_append((1..=3).map(entry)).await.unwrap();
        let after_append = seen.lock().unwrap().len();
        assert!(after_append >= 1, "the append's flush was not observed");
        store.save_vote(&Vote::new(2, 1)).await.unwrap();
        assert_eq!(seen.lock().unwrap().len(), after_append + 1, "the vote's flush");
    }

    #[test]
    fn keys_display_readably() {
        assert_eq!(key_display(LOG_TREE, &log_key(42)), "42");
        assert_eq!(key_display(META_TREE, b"vote"), "vote");
        assert_eq!(key_display("other", &[0, 255]), "0x00ff");
    }
}
