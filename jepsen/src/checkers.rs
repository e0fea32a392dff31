//! Safety checkers for the lock, fenced-counter, election and register
//! workloads, and the [`VerdictTable`] that sums a run up.
//!
//! Every checker works on paired operations ([`crate::history::pair`]) and
//! returns a detailed report with a [`Verdict`] row (`report.verdict()`);
//! [`check_all`] runs them all on a history.
//!
//! # ε: the measurement tolerance of believed intervals
//!
//! Lock and mastership intervals are what the *client* believes, in harness
//! time: the start is the harness reading taken when the grant returned, the
//! end the client's own local validity end (its `valid_until`, computed by
//! the client library from its send time, drift bound and margin) converted
//! to harness time, or the start of its release. These are readings taken by
//! the harness *around* the client's own calculations, not the instants the
//! client itself used, and a client under a skewed clock (faketime) or in
//! another process converts with some error. `epsilon_ns` absorbs that
//! measurement error: two intervals may overlap by up to `epsilon_ns`
//! without a violation. It must stay small against the lease (default
//! 1 ms); it is not a margin of the system's safety argument, which promises
//! no overlap at all (docs/design.md "Time", rules 4–6).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::history::{
    final_phase_start_ns, pair, Completion, Function, HistoryError, Op, PairedOp, Value, FINAL_PHASE,
};
use crate::linearizability::{check_register, Budget};

/// At most this many overlapping pairs are kept in a report (all are
/// counted).
pub const MAX_REPORTED: usize = 1000;

/// Result of one checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Status {
    /// Checked, no violation.
    Pass,
    /// At least one violation.
    Violation,
    /// Could not decide (budget spent, final read missing).
    Unknown,
    /// The workload it checks did not run.
    Skipped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Pass => "ok",
            Status::Violation => "VIOLATION",
            Status::Unknown => "unknown",
            Status::Skipped => "skipped",
        })
    }
}

/// One row of the verdict table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Checker name, such as `lock-safety`.
    pub checker: String,
    /// Its result.
    pub status: Status,
    /// How many things it checked (ops, holds, grants, reads).
    pub checked: u64,
    /// How many violations it found.
    pub violations: u64,
    /// A short explanation (the first violation, or a summary).
    pub message: String,
}

/// The verdicts of a run, one row per checker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerdictTable {
    /// The rows, in checking order.
    pub rows: Vec<Verdict>,
}

impl VerdictTable {
    /// Whether the run passed: no violation, and, if `unknown_fails`, no
    /// unknown either. Skipped checkers never fail a run.
    pub fn passed(&self, unknown_fails: bool) -> bool {
        self.rows.iter().all(|r| match r.status {
            Status::Pass | Status::Skipped => true,
            Status::Violation => false,
            Status::Unknown => !unknown_fails,
        })
    }

    /// The row of `checker`, if present.
    pub fn get(&self, checker: &str) -> Option<&Verdict> {
        self.rows.iter().find(|r| r.checker == checker)
    }
}

impl fmt::Display for VerdictTable {
    /// An aligned text table: checker, result, checked, violations, message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers = ["checker", "result", "checked", "violations", "message"];
        let mut width = [headers[0].len(), headers[1].len(), headers[2].len(), headers[3].len()];
        for r in &self.rows {
            width[0] = width[0].max(r.checker.len());
            width[1] = width[1].max(r.status.to_string().len());
            width[2] = width[2].max(r.checked.to_string().len());
            width[3] = width[3].max(r.violations.to_string().len());
        }
        writeln!(
            f,
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
            headers[0],
            headers[1],
            headers[2],
            headers[3],
            headers[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3]
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
                r.checker,
                r.status,
                r.checked,
                r.violations,
                r.message,
                w0 = width[0],
                w1 = width[1],
                w2 = width[2],
                w3 = width[3]
            )?;
        }
        Ok(())
    }
}

/// Parameters of [`check_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Tolerated overlap of believed intervals (see the module doc).
    pub epsilon_ns: u64,
    /// Linearizability search budget.
    pub budget: Budget,
    /// Start of the durability check's final reads; `None` takes the last
    /// [`FINAL_PHASE`] marker of the history (and skips the check if there
    /// is none).
    pub final_phase_start_ns: Option<u64>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            epsilon_ns: 1_000_000,
            budget: Budget::default(),
            final_phase_start_ns: None,
        }
    }
}

fn skipped(checker: &str, message: &str) -> Verdict {
    Verdict {
        checker: checker.to_string(),
        status: Status::Skipped,
        checked: 0,
        violations: 0,
        message: message.into(),
    }
}

/// Runs every checker on a history and returns the verdict table. Checkers
/// whose workload has no op in the history are `Skipped`. Errors only on a
/// malformed history.
pub fn check_all(ops: &[Op], config: &CheckConfig) -> Result<VerdictTable, HistoryError> {
    let pairs = pair(ops)?;
    let has = |pred: fn(&Function) -> bool| pairs.iter().any(|p| pred(&p.f));
    let mut rows = Vec::new();

    rows.push(check_register(&pairs, &config.budget)?.verdict());
    if !has(|f| matches!(f, Function::Write { .. } | Function::Cas { .. })) {
        rows.push(skipped("durability", "no register writes"));
    } else {
        match config.final_phase_start_ns.or_else(|| final_phase_start_ns(&pairs)) {
            Some(start_ns) => rows.push(check_durability(&pairs, start_ns)?.verdict()),
            None => rows.push(skipped("durability", &format!("no {FINAL_PHASE:?} phase marker"))),
        }
    }
    if has(|f| matches!(f, Function::Acquire { .. } | Function::Release { .. })) {
        rows.push(check_lock_safety(&pairs, config.epsilon_ns)?.verdict());
        rows.push(check_fencing(&pairs)?.verdict());
    } else {
        rows.push(skipped("lock-safety", "no lock ops"));
        rows.push(skipped("fencing", "no lock ops"));
    }
    if has(|f| matches!(f, Function::Increment { .. } | Function::CounterRead { .. })) {
        rows.push(check_counter(&pairs)?.verdict());
    } else {
        rows.push(skipped("counter", "no counter ops"));
    }
    if has(|f| {
        matches!(
            f,
            Function::Campaign { .. } | Function::Resign { .. } | Function::Master { .. }
        )
    }) {
        rows.push(check_elections(&pairs, config.epsilon_ns)?.verdict());
    } else {
        rows.push(skipped("elections", "no election ops"));
    }
    Ok(VerdictTable { rows })
}

// ---------------------------------------------------------------------------
// Interval overlap.

/// Pairs `(a, b)` of items (indices into `items`) whose non-empty intervals
/// `[from, until)` overlap by more than `epsilon_ns`, skipping pairs
/// `same(a, b)`; with the overlap in ns. Returns at most [`MAX_REPORTED`]
/// pairs and the total count.
fn overlapping<T>(
    items: &[T],
    interval: impl Fn(&T) -> (u64, u64),
    same: impl Fn(&T, &T) -> bool,
    epsilon_ns: u64,
) -> (Vec<(usize, usize, u64)>, u64) {
    let mut order: Vec<usize> = (0..items.len())
        .filter(|&i| interval(&items[i]).1 > interval(&items[i]).0)
        .collect();
    order.sort_by_key(|&i| interval(&items[i]));
    let mut active: Vec<usize> = Vec::new();
    let mut found = Vec::new();
    let mut count = 0u64;
    for &h in &order {
        let (from, until) = interval(&items[h]);
        // Sorted by start: an interval that ends within ε of this start
        // cannot overlap this one or any later one by more than ε.
        active.retain(|&a| interval(&items[a]).1 > from.saturating_add(epsilon_ns));
        for &a in &active {
            let (a_from, a_until) = interval(&items[a]);
            debug_assert!(a_from <= from);
            let overlap_ns = a_until.min(until) - from;
            if overlap_ns > epsilon_ns && !same(&items[a], &items[h]) {
                count += 1;
                if found.len() < MAX_REPORTED {
                    found.push((a, h, overlap_ns));
                }
            }
        }
        active.push(h);
    }
    (found, count)
}

/// Nanoseconds as milliseconds with three decimals, for messages.
fn ms_value(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn ms(ns: u64) -> String {
    format!("{} ms", ms_value(ns))
}

// ---------------------------------------------------------------------------
// Lock safety.

/// One lock hold as the client believed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeldLock {
    /// Lock name.
    pub lock: String,
    /// The holding process.
    pub process: u64,
    /// Its session.
    pub session: u64,
    /// Fencing token of the grant.
    pub fencing_token: u64,
    /// Start of the believed hold, harness ns.
    pub held_from_ns: u64,
    /// End of the believed hold, harness ns.
    pub held_until_ns: u64,
    /// Completion index of the acquire, if recorded.
    pub acquire_index: Option<u64>,
    /// Completion index of the release that gave the final interval.
    pub release_index: Option<u64>,
}

impl fmt::Display for HeldLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p{} token {} held [{}, {}] ms",
            self.process,
            self.fencing_token,
            ms_value(self.held_from_ns),
            ms_value(self.held_until_ns)
        )?;
        if let Some(i) = self.acquire_index.or(self.release_index) {
            write!(f, " (op {i})")?;
        }
        Ok(())
    }
}

/// Two believed holds of one lock that overlap by more than ε.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockOverlap {
    /// Lock name.
    pub lock: String,
    /// The hold that started first.
    pub first: HeldLock,
    /// The other.
    pub second: HeldLock,
    /// By how much they overlap.
    pub overlap_ns: u64,
}

/// Result of [`check_lock_safety`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockSafetyReport {
    /// The tolerance used.
    pub epsilon_ns: u64,
    /// Every believed hold.
    pub holds: Vec<HeldLock>,
    /// Overlapping pairs (at most [`MAX_REPORTED`]).
    pub overlaps: Vec<LockOverlap>,
    /// Number of overlapping pairs.
    pub overlap_count: u64,
}

impl LockSafetyReport {
    /// This check as a row of the verdict table.
    pub fn verdict(&self) -> Verdict {
        let (status, message) = match self.overlaps.first() {
            None => (
                Status::Pass,
                format!("{} holds, no overlap beyond {}", self.holds.len(), ms(self.epsilon_ns)),
            ),
            Some(o) => (
                Status::Violation,
                format!(
                    "lock {:?}: {} overlaps {} by {}",
                    o.lock,
                    o.first,
                    o.second,
                    ms(o.overlap_ns)
                ),
            ),
        };
        Verdict {
            checker: "lock-safety".into(),
            status,
            checked: self.holds.len() as u64,
            violations: self.overlap_count,
            message,
        }
    }
}

/// The believed holds of a history: one per (lock, process, token). An `Ok`
/// acquire gives the interval believed at grant; a release (of any
/// completion) carrying [`Value::Lock`] replaces it with the final one.
pub fn held_locks(pairs: &[PairedOp]) -> Result<Vec<HeldLock>, HistoryError> {
    let mut holds: BTreeMap<(String, u64, u64), HeldLock> = BTreeMap::new();
    for p in pairs {
        match (&p.f, &p.value) {
            (Function::Acquire { lock }, Value::Lock(h)) if p.is_ok() => {
                holds
                    .entry((lock.clone(), p.process, h.fencing_token))
                    .or_insert_with(|| HeldLock {
                        lock: lock.clone(),
                        process: p.process,
                        session: h.session,
                        fencing_token: h.fencing_token,
                        held_from_ns: h.held_from_ns,
                        held_until_ns: h.held_until_ns,
                        acquire_index: p.complete_index,
                        release_index: None,
                    });
            }
            (Function::Acquire { .. }, _) if p.is_ok() => {
                return Err(HistoryError::malformed(
                    p.index(),
                    "acquire completed Ok without a Lock value",
                ));
            }
            (Function::Release { lock }, Value::Lock(h)) => {
                let hold = holds
                    .entry((lock.clone(), p.process, h.fencing_token))
                    .or_insert_with(|| HeldLock {
                        lock: lock.clone(),
                        process: p.process,
                        session: h.session,
                        fencing_token: h.fencing_token,
                        held_from_ns: h.held_from_ns,
                        held_until_ns: h.held_until_ns,
                        acquire_index: None,
                        release_index: None,
                    });
                hold.held_from_ns = h.held_from_ns;
                hold.held_until_ns = h.held_until_ns;
                hold.release_index = p.complete_index;
            }
            _ => {}
        }
    }
    Ok(holds.into_values().collect())
}

/// Lock safety: no two believed holds of one lock overlap, in harness time,
/// by more than `epsilon_ns`. Empty intervals (validity over before the
/// grant was seen) are ignored.
pub fn check_lock_safety(pairs: &[PairedOp], epsilon_ns: u64) -> Result<LockSafetyReport, HistoryError> {
    let holds = held_locks(pairs)?;
    let mut per_lock: BTreeMap<&str, Vec<&HeldLock>> = BTreeMap::new();
    for h in &holds {
        per_lock.entry(&h.lock).or_default().push(h);
    }
    let mut overlaps = Vec::new();
    let mut overlap_count = 0;
    for (lock, items) in per_lock {
        let (found, count) = overlapping(&items, |h| (h.held_from_ns, h.held_until_ns), |_, _| false, epsilon_ns);
        overlap_count += count;
        for (a, b, overlap_ns) in found {
            if overlaps.len() < MAX_REPORTED {
                overlaps.push(LockOverlap {
                    lock: lock.to_string(),
                    first: items[a].clone(),
                    second: items[b].clone(),
                    overlap_ns,
                });
            }
        }
    }
    Ok(LockSafetyReport {
        epsilon_ns,
        holds,
        overlaps,
        overlap_count,
    })
}

// ---------------------------------------------------------------------------
// Fencing tokens.

/// An acknowledged grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Lock name.
    pub lock: String,
    /// The process.
    pub process: u64,
    /// Its token.
    pub fencing_token: u64,
    /// When the acquire was invoked.
    pub invoke_ns: u64,
    /// When the grant was seen (the `Ok`).
    pub complete_ns: u64,
    /// Index of the `Ok`.
    pub complete_index: u64,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p{} token {} (op {})",
            self.process, self.fencing_token, self.complete_index
        )
    }
}

/// A fencing-token order violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum FencingViolation {
    /// `earlier` completed before `later` was invoked, yet its token is
    /// greater.
    NotIncreasing {
        /// The earlier grant.
        earlier: Grant,
        /// The later grant with the smaller token.
        later: Grant,
    },
    /// Two grants carry the same token.
    Duplicate {
        /// The first (by completion).
        first: Grant,
        /// Another.
        second: Grant,
    },
}

impl fmt::Display for FencingViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FencingViolation::NotIncreasing { earlier, later } => {
                write!(f, "lock {:?}: {earlier} completed before {later} began", earlier.lock)
            }
            FencingViolation::Duplicate { first, second } => {
                write!(f, "lock {:?}: {first} and {second} share a token", first.lock)
            }
        }
    }
}

/// Result of [`check_fencing`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FencingReport {
    /// Acknowledged grants checked.
    pub grants: usize,
    /// Violations.
    pub violations: Vec<FencingViolation>,
}

impl FencingReport {
    /// This check as a row of the verdict table.
    pub fn verdict(&self) -> Verdict {
        let (status, message) = match self.violations.first() {
            None => (Status::Pass, format!("{} grants in token order", self.grants)),
            Some(v) => (Status::Violation, v.to_string()),
        };
        Verdict {
            checker: "fencing".into(),
            status,
            checked: self.grants as u64,
            violations: self.violations.len() as u64,
            message,
        }
    }
}

/// Fencing tokens of exclusive grants increase with real-time order: for
/// acknowledged acquisitions A and B of one lock, if A completed before B
/// was invoked then `token(A) < token(B)`; and no two grants share a token.
/// (Concurrent acquisitions may complete in either order.)
pub fn check_fencing(pairs: &[PairedOp]) -> Result<FencingReport, HistoryError> {
    let mut per_lock: BTreeMap<&str, Vec<Grant>> = BTreeMap::new();
    for p in pairs {
        let Function::Acquire { lock } = &p.f else { continue };
        if !p.is_ok() {
            continue;
        }
        let (Value::Lock(h), Some(complete_ns), Some(complete_index)) = (&p.value, p.complete_ns, p.complete_index)
        else {
            return Err(HistoryError::malformed(
                p.index(),
                "acquire completed Ok without a Lock value",
            ));
        };
        per_lock.entry(lock).or_default().push(Grant {
            lock: lock.clone(),
            process: p.process,
            fencing_token: h.fencing_token,
            invoke_ns: p.invoke_ns,
            complete_ns,
            complete_index,
        });
    }
    let mut grants = 0;
    let mut violations = Vec::new();
    for (_, mut list) in per_lock {
        grants += list.len();
        list.sort_by_key(|g| (g.complete_ns, g.complete_index));
        // Duplicates.
        let mut by_token: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, g) in list.iter().enumerate() {
            match by_token.get(&g.fencing_token) {
                Some(&first) => violations.push(FencingViolation::Duplicate {
                    first: list[first].clone(),
                    second: g.clone(),
                }),
                None => {
                    by_token.insert(g.fencing_token, i);
                }
            }
        }
        // Real-time order: the largest token among the grants that completed
        // before this one was invoked must be smaller than its token.
        let mut prefix_max: Vec<usize> = Vec::with_capacity(list.len());
        for i in 0..list.len() {
            let best = match prefix_max.last() {
                Some(&b) if list[b].fencing_token >= list[i].fencing_token => b,
                _ => i,
            };
            prefix_max.push(best);
        }
        for later in &list {
            let before = list.partition_point(|g| g.complete_ns < later.invoke_ns);
            if before == 0 {
                continue;
            }
            let earlier = &list[prefix_max[before - 1]];
            // Equal tokens are reported as duplicates above.
            if earlier.fencing_token > later.fencing_token {
                violations.push(FencingViolation::NotIncreasing {
                    earlier: earlier.clone(),
                    later: later.clone(),
                });
            }
        }
    }
    Ok(FencingReport { grants, violations })
}

// ---------------------------------------------------------------------------
// Fenced counter.

/// The increments of one counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CounterSummary {
    /// Acknowledged increments.
    pub ok_increments: u64,
    /// Indeterminate increments (may or may not have counted).
    pub info_increments: u64,
    /// Failed increments (did not count).
    pub failed_increments: u64,
    /// The last successful `CounterRead`, if any.
    pub final_value: Option<u64>,
    /// The largest value an acknowledged increment returned.
    pub max_acknowledged: Option<u64>,
}

/// A fenced-counter violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum CounterViolation {
    /// Two acknowledged increments returned the same new value: one of them
    /// was lost.
    DuplicateValue {
        /// Counter (lock) name.
        lock: String,
        /// The value.
        value: u64,
        /// Index of the first increment's `Ok`.
        first_index: u64,
        /// Index of the second's.
        second_index: u64,
    },
    /// The final value is outside `[ok, ok + info]`.
    FinalOutOfRange {
        /// Counter (lock) name.
        lock: String,
        /// The final value read.
        final_value: u64,
        /// Acknowledged increments.
        min: u64,
        /// Acknowledged plus indeterminate increments.
        max: u64,
    },
    /// The final value is below a value an acknowledged increment returned:
    /// the counter went backwards.
    FinalBelowAcknowledged {
        /// Counter (lock) name.
        lock: String,
        /// The final value read.
        final_value: u64,
        /// The acknowledged value.
        acknowledged: u64,
        /// Index of that increment's `Ok`.
        index: u64,
    },
}

impl fmt::Display for CounterViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CounterViolation::DuplicateValue {
                lock,
                value,
                first_index,
                second_index,
            } => {
                write!(
                    f,
                    "counter {lock:?}: ops {first_index} and {second_index} both acknowledged value {value}"
                )
            }
            CounterViolation::FinalOutOfRange {
                lock,
                final_value,
                min,
                max,
            } => {
                write!(f, "counter {lock:?}: final value {final_value} outside [{min}, {max}]")
            }
            CounterViolation::FinalBelowAcknowledged {
                lock,
                final_value,
                acknowledged,
                index,
            } => write!(
                f,
                "counter {lock:?}: final value {final_value} below acknowledged {acknowledged} (op {index})"
            ),
        }
    }
}

/// Result of [`check_counter`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterReport {
    /// Per counter (lock name).
    pub counters: BTreeMap<String, CounterSummary>,
    /// Counters with increments but no successful final read.
    pub unread: Vec<String>,
    /// Violations.
    pub violations: Vec<CounterViolation>,
}

impl CounterReport {
    /// This check as a row of the verdict table.
    pub fn verdict(&self) -> Verdict {
        let increments: u64 = self
            .counters
            .values()
            .map(|c| c.ok_increments + c.info_increments)
            .sum();
        let (status, message) = match (self.violations.first(), self.unread.first()) {
            (Some(v), _) => (Status::Violation, v.to_string()),
            (None, Some(_)) => (Status::Unknown, format!("no final read of {:?}", self.unread)),
            (None, None) => (Status::Pass, format!("{} counters consistent", self.counters.len())),
        };
        Verdict {
            checker: "counter".into(),
            status,
            checked: increments,
            violations: self.violations.len() as u64,
            message,
        }
    }
}

/// The fenced counter: the final value is within `[ok, ok + info]`
/// increments and not below any acknowledged value, and no two
/// acknowledged increments returned the same value. The counter starts at
/// 0; the final value is the last `Ok` [`Function::CounterRead`].
pub fn check_counter(pairs: &[PairedOp]) -> Result<CounterReport, HistoryError> {
    let mut counters: BTreeMap<String, CounterSummary> = BTreeMap::new();
    let mut seen: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut max_index: BTreeMap<String, u64> = BTreeMap::new();
    let mut final_index: BTreeMap<String, u64> = BTreeMap::new();
    let mut violations = Vec::new();
    for p in pairs {
        match &p.f {
            Function::Increment { lock } => {
                let c = counters.entry(lock.clone()).or_default();
                match p.completion {
                    Completion::Fail => c.failed_increments += 1,
                    Completion::Info => c.info_increments += 1,
                    Completion::Ok => {
                        let Value::Counter(v) = p.value else {
                            return Err(HistoryError::malformed(
                                p.index(),
                                "increment completed Ok without a Counter",
                            ));
                        };
                        c.ok_increments += 1;
                        if c.max_acknowledged.is_none_or(|m| v > m) {
                            c.max_acknowledged = Some(v);
                            max_index.insert(lock.clone(), p.index());
                        }
                        if let Some(&first_index) = seen.get(&(lock.clone(), v)) {
                            violations.push(CounterViolation::DuplicateValue {
                                lock: lock.clone(),
                                value: v,
                                first_index,
                                second_index: p.index(),
                            });
                        } else {
                            seen.insert((lock.clone(), v), p.index());
                        }
                    }
                }
            }
            Function::CounterRead { lock } if p.is_ok() => {
                let Value::Counter(v) = p.value else {
                    return Err(HistoryError::malformed(
                        p.index(),
                        "counter read completed Ok without a Counter",
                    ));
                };
                let c = counters.entry(lock.clone()).or_default();
                if final_index.get(lock).is_none_or(|&i| p.index() > i) {
                    final_index.insert(lock.clone(), p.index());
                    c.final_value = Some(v);
                }
            }
            _ => {}
        }
    }
    let mut unread = Vec::new();
    for (lock, c) in &counters {
        let Some(final_value) = c.final_value else {
            if c.ok_increments + c.info_increments > 0 {
                unread.push(lock.clone());
            }
            continue;
        };
        let (min, max) = (c.ok_increments, c.ok_increments + c.info_increments);
        if final_value < min || final_value > max {
            violations.push(CounterViolation::FinalOutOfRange {
                lock: lock.clone(),
                final_value,
                min,
                max,
            });
        }
        if let (Some(acknowledged), Some(&index)) = (c.max_acknowledged, max_index.get(lock)) {
            if final_value < acknowledged {
                violations.push(CounterViolation::FinalBelowAcknowledged {
                    lock: lock.clone(),
                    final_value,
                    acknowledged,
                    index,
                });
            }
        }
    }
    Ok(CounterReport {
        counters,
        unread,
        violations,
    })
}

// ---------------------------------------------------------------------------
// Elections.

/// One mastership as the master believed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MastershipHold {
    /// Election name.
    pub election: String,
    /// The master process.
    pub process: u64,
    /// Epoch.
    pub epoch: u64,
    /// Session.
    pub session: u64,
    /// Start of the believed mastership, harness ns.
    pub held_from_ns: u64,
    /// End of it, harness ns.
    pub held_until_ns: u64,
    /// Completion index of the campaign, if recorded.
    pub campaign_index: Option<u64>,
    /// Completion index of the resign that gave the final interval.
    pub resign_index: Option<u64>,
}

impl fmt::Display for MastershipHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p{} epoch {} session {} held [{}, {}] ms",
            self.process,
            self.epoch,
            self.session,
            ms_value(self.held_from_ns),
            ms_value(self.held_until_ns)
        )
    }
}

/// An election violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ElectionViolation {
    /// More than one session claimed or was seen as master of one epoch.
    TwoMasters {
        /// Election name.
        election: String,
        /// Epoch.
        epoch: u64,
        /// The sessions.
        sessions: Vec<u64>,
        /// Indices of ops that show them.
        indices: Vec<u64>,
    },
    /// An observer saw the epoch go backwards.
    EpochRegressed {
        /// Election name.
        election: String,
        /// The observing process.
        observer: u64,
        /// The epoch it saw before.
        from_epoch: u64,
        /// The smaller epoch it saw next.
        to_epoch: u64,
        /// Index of that observation.
        index: u64,
    },
    /// Masterships of different epochs overlapped by more than ε.
    Overlap {
        /// Election name.
        election: String,
        /// The one that started first.
        first: MastershipHold,
        /// The other.
        second: MastershipHold,
        /// By how much.
        overlap_ns: u64,
    },
}

impl fmt::Display for ElectionViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElectionViolation::TwoMasters {
                election,
                epoch,
                sessions,
                indices,
            } => {
                write!(
                    f,
                    "election {election:?}: epoch {epoch} has masters {sessions:?} (ops {indices:?})"
                )
            }
            ElectionViolation::EpochRegressed {
                election,
                observer,
                from_epoch,
                to_epoch,
                index,
            } => write!(
                f,
                "election {election:?}: observer p{observer} saw epoch {from_epoch} then {to_epoch} (op {index})"
            ),
            ElectionViolation::Overlap {
                election,
                first,
                second,
                overlap_ns,
            } => {
                write!(
                    f,
                    "election {election:?}: {first} overlaps {second} by {}",
                    ms(*overlap_ns)
                )
            }
        }
    }
}

/// Result of [`check_elections`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ElectionReport {
    /// The tolerance used.
    pub epsilon_ns: u64,
    /// Every believed mastership.
    pub masterships: Vec<MastershipHold>,
    /// Successful observations checked.
    pub observations: usize,
    /// Violations (overlaps: at most [`MAX_REPORTED`]).
    pub violations: Vec<ElectionViolation>,
    /// Number of violations, counting every overlapping pair.
    pub violation_count: u64,
}

impl ElectionReport {
    /// This check as a row of the verdict table.
    pub fn verdict(&self) -> Verdict {
        let (status, message) = match self.violations.first() {
            None => (
                Status::Pass,
                format!(
                    "{} masterships, {} observations",
                    self.masterships.len(),
                    self.observations
                ),
            ),
            Some(v) => (Status::Violation, v.to_string()),
        };
        Verdict {
            checker: "elections".into(),
            status,
            checked: (self.masterships.len() + self.observations) as u64,
            violations: self.violation_count,
            message,
        }
    }
}

/// Elections: at most one session is master of an epoch (from campaigns,
/// resigns and observations alike); each observer's successive
/// observations of an election never go to a smaller epoch (`no master` is
/// not an epoch and is skipped); believed masterships of different epochs do
/// not overlap by more than `epsilon_ns`. A resign carrying
/// [`Value::Mastership`] gives the final interval of that mastership.
pub fn check_elections(pairs: &[PairedOp], epsilon_ns: u64) -> Result<ElectionReport, HistoryError> {
    let mut holds: BTreeMap<(String, u64, u64, u64), MastershipHold> = BTreeMap::new();
    let mut claims: BTreeMap<(String, u64), BTreeMap<u64, Vec<u64>>> = BTreeMap::new();
    let mut observed: BTreeMap<(u64, String), Vec<(u64, u64)>> = BTreeMap::new();
    let mut observations = 0;
    for p in pairs {
        match (&p.f, &p.value) {
            (Function::Campaign { election }, Value::Mastership(m)) if p.is_ok() => {
                claims
                    .entry((election.clone(), m.epoch))
                    .or_default()
                    .entry(m.session)
                    .or_default()
                    .push(p.index());
                holds
                    .entry((election.clone(), p.process, m.epoch, m.session))
                    .or_insert_with(|| MastershipHold {
                        election: election.clone(),
                        process: p.process,
                        epoch: m.epoch,
                        session: m.session,
                        held_from_ns: m.held_from_ns,
                        held_until_ns: m.held_until_ns,
                        campaign_index: p.complete_index,
                        resign_index: None,
                    });
            }
            (Function::Campaign { .. }, _) if p.is_ok() => {
                return Err(HistoryError::malformed(
                    p.index(),
                    "campaign completed Ok without a Mastership",
                ));
            }
            (Function::Resign { election }, Value::Mastership(m)) => {
                claims
                    .entry((election.clone(), m.epoch))
                    .or_default()
                    .entry(m.session)
                    .or_default()
                    .push(p.index());
                let hold = holds
                    .entry((election.clone(), p.process, m.epoch, m.session))
                    .or_insert_with(|| MastershipHold {
                        election: election.clone(),
                        process: p.process,
                        epoch: m.epoch,
                        session: m.session,
                        held_from_ns: m.held_from_ns,
                        held_until_ns: m.held_until_ns,
                        campaign_index: None,
                        resign_index: None,
                    });
                hold.held_from_ns = m.held_from_ns;
                hold.held_until_ns = m.held_until_ns;
                hold.resign_index = p.complete_index;
            }
            (Function::Master { election }, value) if p.is_ok() => {
                let Value::Master(view) = value else {
                    return Err(HistoryError::malformed(
                        p.index(),
                        "master observation without a Master value",
                    ));
                };
                observations += 1;
                if let Some(v) = view {
                    claims
                        .entry((election.clone(), v.epoch))
                        .or_default()
                        .entry(v.session)
                        .or_default()
                        .push(p.index());
                    observed
                        .entry((p.process, election.clone()))
                        .or_default()
                        .push((p.index(), v.epoch));
                }
            }
            _ => {}
        }
    }

    let mut violations = Vec::new();
    let mut violation_count = 0u64;
    for ((election, epoch), sessions) in &claims {
        if sessions.len() > 1 {
            violation_count += 1;
            violations.push(ElectionViolation::TwoMasters {
                election: election.clone(),
                epoch: *epoch,
                sessions: sessions.keys().copied().collect(),
                indices: sessions
                    .values()
                    .flatten()
                    .copied()
                    .collect::<BTreeSet<u64>>()
                    .into_iter()
                    .collect(),
            });
        }
    }
    for ((observer, election), mut seen) in observed {
        seen.sort_unstable();
        for w in seen.windows(2) {
            let ((_, from_epoch), (index, to_epoch)) = (w[0], w[1]);
            if to_epoch < from_epoch {
                violation_count += 1;
                violations.push(ElectionViolation::EpochRegressed {
                    election: election.clone(),
                    observer,
                    from_epoch,
                    to_epoch,
                    index,
                });
            }
        }
    }
    let masterships: Vec<MastershipHold> = holds.into_values().collect();
    let mut per_election: BTreeMap<&str, Vec<&MastershipHold>> = BTreeMap::new();
    for m in &masterships {
        per_election.entry(&m.election).or_default().push(m);
    }
    for (election, items) in per_election {
        // Same-epoch pairs are two masters of one epoch, reported above.
        let (found, count) = overlapping(
            &items,
            |m| (m.held_from_ns, m.held_until_ns),
            |a, b| a.epoch == b.epoch,
            epsilon_ns,
        );
        violation_count += count;
        for (a, b, overlap_ns) in found {
            if violations.len() < MAX_REPORTED {
                violations.push(ElectionViolation::Overlap {
                    election: election.to_string(),
                    first: items[a].clone(),
                    second: items[b].clone(),
                    overlap_ns,
                });
            }
        }
    }
    Ok(ElectionReport {
        epsilon_ns,
        masterships,
        observations,
        violations,
        violation_count,
    })
}

// ---------------------------------------------------------------------------
// Durability.

/// A final read that shows an acknowledged write lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LostWrite {
    /// Register key.
    pub key: String,
    /// Completion index of the final read.
    pub read_index: u64,
    /// What it read.
    pub observed: Option<u64>,
    /// What it could have read.
    pub admissible: Vec<Option<u64>>,
}

impl fmt::Display for LostWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<u64>| v.map_or_else(|| "absent".to_string(), |v| v.to_string());
        let admissible: Vec<String> = self.admissible.iter().map(show).collect();
        write!(
            f,
            "key {:?}: final read (op {}) saw {}, expected one of [{}]",
            self.key,
            self.read_index,
            show(&self.observed),
            admissible.join(", ")
        )
    }
}

/// Result of [`check_durability`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DurabilityReport {
    /// Reads invoked at or after this time are final reads.
    pub final_phase_start_ns: u64,
    /// Final reads checked.
    pub final_reads: usize,
    /// Keys with at least one write or cas that may have taken effect.
    pub keys_written: usize,
    /// Written keys with no final read.
    pub unread_keys: Vec<String>,
    /// Final reads that lost something.
    pub violations: Vec<LostWrite>,
}

impl DurabilityReport {
    /// This check as a row of the verdict table.
    pub fn verdict(&self) -> Verdict {
        let (status, message) = match (self.violations.first(), self.unread_keys.first()) {
            (Some(v), _) => (Status::Violation, v.to_string()),
            (None, Some(_)) => (
                Status::Unknown,
                format!("{} written keys have no final read", self.unread_keys.len()),
            ),
            (None, None) => (
                Status::Pass,
                format!("{} keys, {} final reads", self.keys_written, self.final_reads),
            ),
        };
        Verdict {
            checker: "durability".into(),
            status,
            checked: self.final_reads as u64,
            violations: self.violations.len() as u64,
            message,
        }
    }
}

struct Mutation {
    value: u64,
    invoke_ns: u64,
    /// `None` for an indeterminate write.
    complete_ns: Option<u64>,
}

/// Durability: nothing acknowledged is lost. Each successful read invoked
/// at or after `final_phase_start_ns` (after all nodes restarted) must
/// return the value of a write that may have taken effect (acknowledged or
/// indeterminate; a successful cas counts as a write of its `to`) and was
/// invoked before the read returned, and that is not *known-overwritten*:
/// no acknowledged write to the key was invoked after it was acknowledged
/// and acknowledged before the read was invoked. Absent is admissible only
/// if no write was acknowledged before the read was invoked.
pub fn check_durability(pairs: &[PairedOp], final_phase_start_ns: u64) -> Result<DurabilityReport, HistoryError> {
    let mut writes: BTreeMap<&str, Vec<Mutation>> = BTreeMap::new();
    let mut reads: Vec<(&str, &PairedOp)> = Vec::new();
    for p in pairs {
        let complete_ns = match p.completion {
            Completion::Fail => continue,
            Completion::Ok => p.complete_ns,
            Completion::Info => None,
        };
        match &p.f {
            Function::Write { key, value } => writes.entry(key).or_default().push(Mutation {
                value: *value,
                invoke_ns: p.invoke_ns,
                complete_ns,
            }),
            Function::Cas { key, to, .. } => writes.entry(key).or_default().push(Mutation {
                value: *to,
                invoke_ns: p.invoke_ns,
                complete_ns,
            }),
            Function::Read { key } if p.is_ok() && p.invoke_ns >= final_phase_start_ns => reads.push((key, p)),
            _ => {}
        }
    }
    let mut violations = Vec::new();
    let mut read_keys = BTreeSet::new();
    for (key, read) in &reads {
        let Value::Register(observed) = read.value else {
            return Err(HistoryError::malformed(
                read.index(),
                "read completed without a Register value",
            ));
        };
        read_keys.insert(*key);
        let read_complete_ns = read.complete_ns.unwrap_or(u64::MAX);
        let muts = writes.get(key).map(Vec::as_slice).unwrap_or(&[]);
        // Latest invocation among the writes acknowledged before the read
        // began: any acknowledged write that completed before it is
        // known-overwritten.
        let overwritten_before = muts
            .iter()
            .filter(|m| m.complete_ns.is_some_and(|c| c < read.invoke_ns))
            .map(|m| m.invoke_ns)
            .max();
        let mut admissible: BTreeSet<Option<u64>> = BTreeSet::new();
        if overwritten_before.is_none() {
            admissible.insert(None);
        }
        for m in muts {
            if m.invoke_ns > read_complete_ns {
                continue;
            }
            let known_overwritten = match (m.complete_ns, overwritten_before) {
                (Some(c), Some(t)) => c < t,
                _ => false,
            };
            if !known_overwritten {
                admissible.insert(Some(m.value));
            }
        }
        if !admissible.contains(&observed) {
            violations.push(LostWrite {
                key: key.to_string(),
                read_index: read.index(),
                observed,
                admissible: admissible.into_iter().collect(),
            });
        }
    }
    let unread_keys = writes
        .keys()
        .filter(|k| !read_keys.contains(*k))
        .map(|k| k.to_string())
        .collect();
    Ok(DurabilityReport {
        final_phase_start_ns,
        final_reads: reads.len(),
        keys_written: writes.len(),
        unread_keys,
        violations,
    })
}
