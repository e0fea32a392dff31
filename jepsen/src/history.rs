//! Operation histories, in the manner of Jepsen.
//!
//! A workload process *invokes* an operation, then records its *completion*:
//!
//! - [`OpKind::Ok`]: it took effect, with the returned [`Value`];
//! - [`OpKind::Fail`]: it certainly did not take effect (a definite refusal,
//!   such as a cas whose comparison failed or a `NotLeader` before
//!   proposing);
//! - [`OpKind::Info`]: the outcome is unknown (a timeout, a lost connection,
//!   `Indeterminate`): it may have taken effect, at any time after its
//!   invocation, or never. A timed-out mutation is `Info`, never `Fail`.
//!
//! An invocation that never completes (the run ended first) counts as `Info`.
//! A process has at most one operation outstanding; after an `Info` the
//! harness should continue under a fresh process id, as Jepsen does, though
//! no checker here relies on it.
//!
//! Inputs live in the [`Function`] (`Write { key, value }`), results in the
//! completion's [`Value`]. Time is the harness's monotonic clock in
//! nanoseconds since the [`History`] was created; `index` is the position in
//! the history. Both are assigned by the recorder under one lock, so indices
//! and times increase together.
//!
//! On disk a history is JSON lines (`history.jsonl`), one [`Op`] per line,
//! serde's externally tagged enums:
//!
//! ```json
//! {"process":3,"kind":"Invoke","f":{"Write":{"key":"k1","value":7}},"value":"None","time_ns":1200,"index":41}
//! {"process":3,"kind":"Ok","f":{"Write":{"key":"k1","value":7}},"value":"None","time_ns":5300,"index":44}
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

// The Porcupine export lives in `crate::porcupine`; these names keep
// their old `history::` paths.
pub use crate::porcupine::{
    export_porcupine, porcupine_operations, sanitize_key, PorcupineInput, PorcupineOperation, PorcupineOutput,
};

/// File name of a run's history inside its run directory.
pub const HISTORY_FILE: &str = "history.jsonl";

/// Name of the [`Function::Phase`] marker that starts the final phase (all
/// nodes restarted and healed; final reads follow). [`crate::checkers`] uses
/// the last such marker as the start of the durability check.
pub const FINAL_PHASE: &str = "final";

/// How an entry of the history ends (or starts) an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpKind {
    /// The process started the operation.
    Invoke,
    /// The operation took effect; the value is its result.
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// Outcome unknown: it may have taken effect at any time after its
    /// invocation, or never.
    Info,
}

impl OpKind {
    /// Whether this kind completes an operation (anything but `Invoke`).
    pub fn is_completion(self) -> bool {
        self != OpKind::Invoke
    }
}

/// What an operation does, with its inputs. The same `Function` appears on
/// the invocation and on its completion.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Function {
    /// Register workload: linearizable read of `key`. Result:
    /// [`Value::Register`].
    Read {
        /// The KV key read, one of
        /// [`REGISTER_KEYS`](crate::workload::REGISTER_KEYS).
        key: String,
    },
    /// Register workload: set `key` to `value`. Result: [`Value::None`].
    Write {
        /// The KV key written, one of
        /// [`REGISTER_KEYS`](crate::workload::REGISTER_KEYS).
        key: String,
        /// Value written; the workload writes each value at most once per key.
        value: u64,
    },
    /// Register workload: set `key` to `to` iff it holds `from`. `Ok` means
    /// it did; a failed comparison is `Fail`. Result: [`Value::None`].
    Cas {
        /// The KV key, one of
        /// [`REGISTER_KEYS`](crate::workload::REGISTER_KEYS).
        key: String,
        /// The value the key must hold (the workload reads it first and cases
        /// on that read's revision).
        from: u64,
        /// The value written if it does; like `Write`'s, unique per key.
        to: u64,
    },
    /// Lock workload: acquire `lock` exclusively. Result: [`Value::Lock`]
    /// with the fencing token and the interval the client believes it holds
    /// the lock at grant time.
    Acquire {
        /// The lock taken ([`LOCK_NAME`](crate::workload::LOCK_NAME) in the
        /// lock workload).
        lock: String,
    },
    /// Lock workload: release `lock`. Its completion (of any kind) carries
    /// the *final* believed-held interval as [`Value::Lock`], which replaces
    /// the one recorded at acquisition (the hold may have ended early by
    /// release, or been extended by keepalives).
    Release {
        /// The lock released, the one the matching `Acquire` took.
        lock: String,
    },
    /// Fenced counter: under `lock`, read the counter, write it plus one with
    /// the lock's fencing token. Result: [`Value::Counter`], the new value.
    Increment {
        /// The lock that fences the counter; it also names the counter.
        lock: String,
    },
    /// Fenced counter: final read of the counter fenced by `lock`. Result:
    /// [`Value::Counter`].
    CounterRead {
        /// The lock that fences the counter.
        lock: String,
    },
    /// Election workload: campaign until master. Result:
    /// [`Value::Mastership`] (epoch, session and believed interval).
    Campaign {
        /// The election joined
        /// ([`ELECTION_NAME`](crate::workload::ELECTION_NAME) in the election
        /// workload).
        election: String,
    },
    /// Election workload: resign (also after the mastership was lost, e.g.
    /// handed over, when the cluster may answer `NotCandidate`). Like
    /// [`Function::Release`], its completion (of any kind) carries the final
    /// believed interval, with the loss-signal time, as
    /// [`Value::Mastership`].
    Resign {
        /// The election left, the one the matching `Campaign` joined.
        election: String,
    },
    /// Election workload: an observer saw who is master. Result:
    /// [`Value::Master`]. Recorded as an invoke immediately followed by its
    /// `Ok` ([`History::observe`]).
    Master {
        /// The election observed.
        election: String,
    },
    /// A fault the nemesis starts or stops (`"kill n2"`, `"heal"`), or an
    /// operator action of a workload (`"handover e0"`); ignored by the
    /// checkers, kept for reading the history.
    Nemesis {
        /// What the nemesis did.
        action: String,
    },
    /// A phase marker, such as [`FINAL_PHASE`].
    Phase {
        /// The phase that starts here, e.g. [`FINAL_PHASE`]; the checkers read
        /// only that one.
        name: String,
    },
}

impl Function {
    /// The register key, for `Read`, `Write` and `Cas`.
    pub fn register_key(&self) -> Option<&str> {
        match self {
            Function::Read { key } | Function::Write { key, .. } | Function::Cas { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A lock hold as the client sees it: its token and the interval, in harness
/// time, during which it believes it holds the lock.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockHold {
    /// Fencing token of the grant (the log index of the granting entry).
    pub fencing_token: u64,
    /// The client's session id.
    pub session: u64,
    /// When the client started to believe it holds the lock (normally the
    /// time `acquire` returned).
    pub held_from_ns: u64,
    /// When the client stops believing it (its local validity end, or the
    /// start of its release, whichever is first).
    pub held_until_ns: u64,
}

/// A mastership as the master sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mastership {
    /// Election epoch (the log index of the entry that made the master).
    pub epoch: u64,
    /// The master's session id.
    pub session: u64,
    /// When the client started to believe it is master (the time
    /// `campaign` returned).
    pub held_from_ns: u64,
    /// The latest it may believe it: its session's local validity end, or
    /// the start of its resignation, whichever is first.
    pub held_until_ns: u64,
    /// When the client library's loss signal fired (`Leadership::lost_at`:
    /// resigned, handed over, session ended or local validity over), if it
    /// had when this was recorded. The believed mastership ends at the
    /// earlier of this and `held_until_ns`. Absent in histories written
    /// before the signal existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_ns: Option<u64>,
}

impl Mastership {
    /// End of the believed mastership: the earlier of the loss signal and
    /// `held_until_ns`.
    pub fn believed_until_ns(&self) -> u64 {
        self.lost_ns
            .map_or(self.held_until_ns, |lost| lost.min(self.held_until_ns))
    }
}

/// A master as an observer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MasterView {
    /// Epoch the observer saw (the log index of the entry that made that
    /// master); for one observer it must never decrease.
    pub epoch: u64,
    /// The master's session id.
    pub session: u64,
}

/// The value an operation returned (on a completion) or carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    /// No value: invocations, writes, cas, most failures.
    None,
    /// A register read: the value, or `None` when the key is absent.
    Register(Option<u64>),
    /// A lock hold (acquire, release).
    Lock(LockHold),
    /// A counter value (increment: the new value; counter read).
    Counter(u64),
    /// A mastership (campaign, resign).
    Mastership(Mastership),
    /// The master an observer saw, or `None` for no master.
    Master(Option<MasterView>),
    /// Why an operation failed or is indeterminate, for the reader.
    Error(String),
}

/// One entry of a history.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Op {
    /// The workload process (logical client) that performed it.
    pub process: u64,
    /// Invocation or completion.
    pub kind: OpKind,
    /// The operation and its inputs.
    pub f: Function,
    /// Its result (completions) or [`Value::None`] (invocations).
    pub value: Value,
    /// Harness monotonic time, nanoseconds since the history began.
    pub time_ns: u64,
    /// Position in the history, from 0.
    pub index: u64,
}

/// Errors of reading, writing and interpreting histories.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A file could not be created, written or read.
    #[error("{path}: {source}")]
    Io {
        /// The history file (or run directory) being written or read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A line of a JSONL history is not an [`Op`].
    #[error("{path}:{line}: not a history op: {source}")]
    Parse {
        /// The JSONL history being loaded.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// Encoding to JSON failed.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The encoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The history breaks its own rules (order, pairing, value types).
    #[error("malformed history at op {index}: {reason}")]
    Malformed {
        /// Index of the offending op.
        index: u64,
        /// What is wrong.
        reason: String,
    },
}

impl HistoryError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        HistoryError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn malformed(index: u64, reason: impl Into<String>) -> Self {
        HistoryError::Malformed {
            index,
            reason: reason.into(),
        }
    }
}

/// The history recorder. Cheap to clone and share across tokio tasks (an
/// `Arc` around a mutex held for a push and a buffered line write).
///
/// It assigns `index` and `time_ns` itself. Recording never fails: ops are
/// kept in memory, and the first error writing `history.jsonl` is kept and
/// returned by [`History::flush`] (call it at the end of a run, and at will
/// during it; the file is buffered).
#[derive(Clone, Debug)]
pub struct History {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    start: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    ops: Vec<Op>,
    last_time_ns: u64,
    sink: Option<Sink>,
}

#[derive(Debug)]
struct Sink {
    path: PathBuf,
    writer: BufWriter<File>,
    /// Set by the first failed write; nothing is written after it.
    failed: bool,
    /// That failure, until [`History::flush`] reports it.
    error: Option<HistoryError>,
}

impl Default for History {
    fn default() -> Self {
        History::in_memory()
    }
}

impl History {
    /// A history kept only in memory. Time 0 is now.
    pub fn in_memory() -> History {
        History::with_sink(None)
    }

    /// A history that also writes `run_dir/history.jsonl` (the directory is
    /// created if needed; an existing history file is an error, so a run
    /// never overwrites another's evidence). Time 0 is now.
    pub fn create(run_dir: &Path) -> Result<History, HistoryError> {
        fs::create_dir_all(run_dir).map_err(|e| HistoryError::io(run_dir, e))?;
        let path = run_dir.join(HISTORY_FILE);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| HistoryError::io(&path, e))?;
        Ok(History::with_sink(Some(Sink {
            path,
            writer: BufWriter::new(file),
            failed: false,
            error: None,
        })))
    }

    fn with_sink(sink: Option<Sink>) -> History {
        History {
            shared: Arc::new(Shared {
                start: Instant::now(),
                state: Mutex::new(State {
                    ops: Vec::new(),
                    last_time_ns: 0,
                    sink,
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the ops vector
        // intact (a push either happened or not), so poisoning is ignored.
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instant that is time 0 of this history.
    pub fn start(&self) -> Instant {
        self.shared.start
    }

    /// The harness time now, in nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    /// Converts an instant of the harness's monotonic clock (for instance a
    /// lock guard's `valid_until`) to history time; instants before the
    /// start map to 0, and the result saturates at `u64::MAX`.
    pub fn ns_at(&self, instant: Instant) -> u64 {
        let nanos = instant.saturating_duration_since(self.shared.start).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }

    /// The path of `history.jsonl`, if this history writes one.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().sink.as_ref().map(|s| s.path.clone())
    }

    /// Records one entry now and returns it (with its index and time).
    pub fn record(&self, process: u64, kind: OpKind, f: Function, value: Value) -> Op {
        let mut state = self.lock();
        // Read the clock under the lock, so time never decreases with index.
        let time_ns = self.now_ns().max(state.last_time_ns);
        debug_assert!(time_ns >= state.last_time_ns);
        let index = state.ops.len() as u64;
        let op = Op {
            process,
            kind,
            f,
            value,
            time_ns,
            index,
        };
        state.last_time_ns = time_ns;
        if let Some(sink) = state.sink.as_mut() {
            if !sink.failed {
                if let Err(e) = write_line(&mut sink.writer, &op) {
                    sink.failed = true;
                    sink.error = Some(match e {
                        LineError::Io(e) => HistoryError::io(&sink.path, e),
                        LineError::Encode(source) => HistoryError::Encode {
                            what: format!("op {index}"),
                            source,
                        },
                    });
                }
            }
        }
        state.ops.push(op.clone());
        op
    }

    /// Records the invocation of `f` by `process`.
    pub fn invoke(&self, process: u64, f: Function) -> Op {
        self.record(process, OpKind::Invoke, f, Value::None)
    }

    /// Records the completion of `invoke` (same process and function).
    pub fn complete(&self, invoke: &Op, kind: OpKind, value: Value) -> Op {
        debug_assert_eq!(invoke.kind, OpKind::Invoke, "complete() takes the invocation");
        debug_assert!(kind.is_completion(), "a completion cannot be an Invoke");
        self.record(invoke.process, kind, invoke.f.clone(), value)
    }

    /// Records that `invoke` took effect with result `value`.
    pub fn ok(&self, invoke: &Op, value: Value) -> Op {
        self.complete(invoke, OpKind::Ok, value)
    }

    /// Records that `invoke` certainly did not take effect.
    pub fn fail(&self, invoke: &Op, value: Value) -> Op {
        self.complete(invoke, OpKind::Fail, value)
    }

    /// Records that the outcome of `invoke` is unknown (a timeout).
    pub fn info(&self, invoke: &Op, value: Value) -> Op {
        self.complete(invoke, OpKind::Info, value)
    }

    /// Records an instantaneous observation (such as [`Function::Master`])
    /// as an invocation immediately followed by its `Ok`; returns the `Ok`.
    pub fn observe(&self, process: u64, f: Function, value: Value) -> Op {
        let invoke = self.invoke(process, f);
        self.ok(&invoke, value)
    }

    /// Records the phase marker `name` (see [`FINAL_PHASE`]).
    pub fn mark_phase(&self, process: u64, name: &str) -> Op {
        self.observe(process, Function::Phase { name: name.to_string() }, Value::None)
    }

    /// A copy of all entries so far.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    /// Number of entries so far.
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes out the buffered lines of `history.jsonl` and syncs the file
    /// to disk (an fsync: call it at the end of a run, or now and then).
    /// Returns the first write error of the run, if any: the file then ends
    /// at the failed op, though the in-memory ops ([`History::ops`]) are
    /// complete; later calls keep failing.
    pub fn flush(&self) -> Result<(), HistoryError> {
        let mut state = self.lock();
        let Some(sink) = state.sink.as_mut() else { return Ok(()) };
        if let Some(e) = sink.error.take() {
            return Err(e);
        }
        if sink.failed {
            let e = io::Error::other("an earlier write failed; the history file is incomplete");
            return Err(HistoryError::io(&sink.path, e));
        }
        let flushed = sink.writer.flush().and_then(|()| sink.writer.get_ref().sync_data());
        flushed.map_err(|e| HistoryError::io(&sink.path, e))
    }
}

enum LineError {
    Io(io::Error),
    Encode(serde_json::Error),
}

fn write_line(writer: &mut impl Write, op: &Op) -> Result<(), LineError> {
    serde_json::to_writer(&mut *writer, op).map_err(|e| {
        if e.is_io() {
            LineError::Io(io::Error::other(e))
        } else {
            LineError::Encode(e)
        }
    })?;
    writer.write_all(b"\n").map_err(LineError::Io)
}

/// Writes `ops` as JSON lines to `path` (creating or truncating it).
pub fn write_jsonl(path: &Path, ops: &[Op]) -> Result<(), HistoryError> {
    let file = File::create(path).map_err(|e| HistoryError::io(path, e))?;
    let mut writer = BufWriter::new(file);
    for op in ops {
        write_line(&mut writer, op).map_err(|e| match e {
            LineError::Io(e) => HistoryError::io(path, e),
            LineError::Encode(source) => HistoryError::Encode {
                what: format!("op {}", op.index),
                source,
            },
        })?;
    }
    writer.flush().map_err(|e| HistoryError::io(path, e))
}

/// Loads a JSON-lines history (blank lines are skipped) and checks it with
/// [`validate`].
pub fn load_jsonl(path: &Path) -> Result<Vec<Op>, HistoryError> {
    let file = File::open(path).map_err(|e| HistoryError::io(path, e))?;
    read_jsonl(BufReader::new(file), path)
}

/// Reads a JSON-lines history from `reader`; `path` names it in errors.
pub fn read_jsonl(reader: impl BufRead, path: &Path) -> Result<Vec<Op>, HistoryError> {
    let mut ops = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| HistoryError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let op: Op = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        ops.push(op);
    }
    validate(&ops)?;
    Ok(ops)
}

/// Checks the order rules of a history: indices strictly increase and times
/// never decrease along it.
pub fn validate(ops: &[Op]) -> Result<(), HistoryError> {
    for pair in ops.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.index <= a.index {
            return Err(HistoryError::malformed(
                b.index,
                format!("index not after the previous op's {}", a.index),
            ));
        }
        if b.time_ns < a.time_ns {
            return Err(HistoryError::malformed(
                b.index,
                format!("time {} ns before the previous op's {} ns", b.time_ns, a.time_ns),
            ));
        }
    }
    Ok(())
}

/// How a paired operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Completion {
    /// Took effect: the completion was [`OpKind::Ok`].
    Ok,
    /// Certainly did not take effect: the completion was [`OpKind::Fail`].
    Fail,
    /// Unknown (including never completed).
    Info,
}

/// An invocation together with its completion: what the checkers work on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairedOp {
    /// The workload process that invoked the operation (one outstanding
    /// operation per process).
    pub process: u64,
    /// The operation and its inputs, as on both the invocation and the
    /// completion.
    pub f: Function,
    /// How it ended.
    pub completion: Completion,
    /// The completion's value ([`Value::None`] if it never completed).
    pub value: Value,
    /// Index of the invocation.
    pub invoke_index: u64,
    /// Time of the invocation.
    pub invoke_ns: u64,
    /// Index of the completion; `None` if it never completed.
    pub complete_index: Option<u64>,
    /// Time of the completion; `None` if it never completed.
    pub complete_ns: Option<u64>,
}

impl PairedOp {
    /// Whether it took effect for sure.
    pub fn is_ok(&self) -> bool {
        self.completion == Completion::Ok
    }

    /// The index a reader should look at first: the completion's if any,
    /// else the invocation's.
    pub fn index(&self) -> u64 {
        self.complete_index.unwrap_or(self.invoke_index)
    }
}

/// Pairs each invocation with the next completion of the same process.
///
/// Errors: a completion with no outstanding invocation, an invocation while
/// the process already has one outstanding, or a completion whose function
/// differs from its invocation's. An invocation left outstanding at the end
/// becomes [`Completion::Info`]. The result is in invocation order.
pub fn pair(ops: &[Op]) -> Result<Vec<PairedOp>, HistoryError> {
    let mut pending: BTreeMap<u64, usize> = BTreeMap::new();
    let mut paired: Vec<PairedOp> = Vec::new();
    for op in ops {
        match op.kind {
            OpKind::Invoke => {
                if let Some(&slot) = pending.get(&op.process) {
                    return Err(HistoryError::malformed(
                        op.index,
                        format!(
                            "process {} invokes while its op {} is outstanding",
                            op.process, paired[slot].invoke_index
                        ),
                    ));
                }
                pending.insert(op.process, paired.len());
                paired.push(PairedOp {
                    process: op.process,
                    f: op.f.clone(),
                    completion: Completion::Info,
                    value: Value::None,
                    invoke_index: op.index,
                    invoke_ns: op.time_ns,
                    complete_index: None,
                    complete_ns: None,
                });
            }
            kind => {
                let Some(slot) = pending.remove(&op.process) else {
                    return Err(HistoryError::malformed(
                        op.index,
                        format!("completion of process {} with no outstanding invocation", op.process),
                    ));
                };
                let p = &mut paired[slot];
                if p.f != op.f {
                    return Err(HistoryError::malformed(
                        op.index,
                        format!(
                            "completion {:?} does not match invocation {} {:?}",
                            op.f, p.invoke_index, p.f
                        ),
                    ));
                }
                if op.time_ns < p.invoke_ns {
                    return Err(HistoryError::malformed(op.index, "completion before its invocation"));
                }
                p.completion = match kind {
                    OpKind::Ok => Completion::Ok,
                    OpKind::Fail => Completion::Fail,
                    _ => Completion::Info,
                };
                p.value = op.value.clone();
                p.complete_index = Some(op.index);
                p.complete_ns = Some(op.time_ns);
            }
        }
    }
    Ok(paired)
}

/// The start of the final phase: the invocation time of the last
/// [`Function::Phase`] marker named [`FINAL_PHASE`].
pub fn final_phase_start_ns(pairs: &[PairedOp]) -> Option<u64> {
    pairs
        .iter()
        .filter(|p| matches!(&p.f, Function::Phase { name } if name == FINAL_PHASE))
        .map(|p| p.invoke_ns)
        .max()
}
