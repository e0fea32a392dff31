//! Safety checkers for the lock, fenced-counter, election and register
//! workloads, and the [`VerdictTable`] that sums a run up.
//!
//! Every checker works on paired operations ([`crate::history::pair`]) and
//! returns a detailed report with a [`Verdict`] row (`report.verdict()`);
//! [`check_all`] runs them all on a history. Each checker has its own file
//! (`lock_safety.rs`, `fencing.rs`, `counter.rs`, `elections.rs`,
//! `durability.rs`; the register's linearizability is
//! [`crate::linearizability`]); its items are re-exported here, so their
//! paths are `checkers::…`. This file holds what they share: the verdict
//! types, [`check_all`], and the overlap search of believed intervals.
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

mod counter;
mod durability;
mod elections;
mod fencing;
mod lock_safety;

pub use counter::{check_counter, CounterReport, CounterSummary, CounterViolation};
pub use durability::{check_durability, DurabilityReport, LostWrite};
pub use elections::{check_elections, ElectionReport, ElectionViolation, MastershipHold};
pub use fencing::{check_fencing, FencingReport, FencingViolation, Grant};
pub use lock_safety::{check_lock_safety, held_locks, HeldLock, LockOverlap, LockSafetyReport};

use std::fmt;

use serde::Serialize;

use crate::history::{final_phase_start_ns, pair, Function, HistoryError, Op, FINAL_PHASE};
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
    /// Its result; `Violation` fails the run, `Unknown` does when unknowns are
    /// to fail it.
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
    /// Whether the checkers passed: no violation anywhere, every checker
    /// in `required` (those of the requested workloads,
    /// [`crate::verdict::Workloads::checkers`]) present and `ok`, and no
    /// `unknown` unless `allow_unknown`. A skipped checker passes only when
    /// it is not required. The whole run's validity adds more
    /// ([`crate::verdict::judge`]).
    pub fn passed(&self, required: &[&str], allow_unknown: bool) -> bool {
        crate::verdict::checker_problems(self, required, allow_unknown).is_empty()
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
