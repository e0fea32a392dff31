//! Linearizability checker for the KV register workload (`Read`, `Write`,
//! `Cas` on several keys).
//!
//! # Model
//!
//! Each key is a register whose initial value is absent (`None`). A read
//! returns the current value; a write sets it; `cas(from, to)` sets it to
//! `to` iff it holds `from`. The workload records a cas whose comparison
//! failed as `Fail`.
//!
//! # How the history is read
//!
//! - `Fail` ops are removed: they did not happen. (For a failed cas this
//!   throws away the information that the value differed from `from`; that
//!   can hide a violation, never invent one.)
//! - `Info` (indeterminate) writes and cas may take effect at any point after
//!   their invocation, or never: their return is +∞, and the search may
//!   leave them out (leaving one out is the same as placing it after every
//!   other op). An indeterminate cas is placed as "succeeds iff the value is
//!   `from` at that point".
//! - `Info` reads are dropped: they cannot affect the state.
//! - Calls and returns at the same nanosecond are taken as concurrent (the
//!   permissive reading).
//!
//! # Algorithm
//!
//! The history is split per key (P-compositionality: a history is
//! linearizable iff each key's sub-history is, since keys are independent
//! objects). Each key is searched with the Wing–Gong algorithm as improved by
//! Lowe: the calls and returns form a time-ordered doubly linked list; the
//! search repeatedly tries to linearize a call that precedes the first
//! remaining return, applying it to the model and removing its call and
//! return from the list, and backtracks when it meets a return whose op is
//! not yet linearized. Lowe's memoization caches every (set of linearized
//! ops, model state) already reached, so no configuration is explored twice.
//!
//! Before the search, indeterminate ops are reduced by two exact rules (see
//! `reduce_indeterminate`): an indeterminate write or cas whose value no op
//! observes is dropped, and one that is the only writer of an observed value
//! is promoted to a completed op that returns when its first observer did.
//! With the workload's unique written values this removes nearly all the
//! search width indeterminate ops would add. A cross-check against brute
//! force on small random histories guards both rules.
//!
//! # Limits
//!
//! - The problem is NP-complete; the search is exponential in the worst case
//!   (many concurrent ops, many indeterminate ones). The memo makes typical
//!   histories fast but costs memory: one entry per configuration, each a
//!   bitset of the key's ops. A [`Budget`] bounds steps per key, total time
//!   and cache memory; an exhausted budget gives `Unknown`, never a pass.
//! - The per-key split assumes keys are independent: no multi-key operation
//!   and no cross-key invariant is checked.
//! - Every `Info` op the reduction cannot remove widens the search: it stays
//!   a candidate from its invocation to the end of the history. Runs that
//!   write the same value many times (so the reduction does not apply) with
//!   many timeouts are the likely cause of `Unknown`. High concurrency on
//!   one key is the other: 20 clients and 5 000 ops on one key take about
//!   3.5 million steps (under 2 s in release); spread ops over several keys.
//! - Rust's `HashSet` holds the memo; its memory estimate is approximate.
//! - The witness of a violation is the longest partial linearization found
//!   and the ops that could not be placed after it; it is "minimal-ish", not
//!   a minimal counterexample.
//!
//! # Files
//!
//! `model.rs` holds the register model and turns a key's paired ops into
//! the entries the search works on (with the reduction above); `search.rs`
//! is the Wing–Gong–Lowe search; this file holds the public budget and
//! report types, [`check_register`] and the translation of a dead end into
//! a [`Witness`]. The brute-force cross-check lives in the tests
//! (`jepsen/tests/linearizability.rs`).

mod model;
mod search;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checkers::{Status, Verdict};
use crate::history::{Completion, Function, HistoryError, PairedOp, Value};

use model::{entries, reduce_indeterminate};
use search::{Search, SearchResult};

/// Limits of the search. An exhausted limit makes the result `Unknown`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Search steps (list positions visited) allowed for one key.
    pub max_steps_per_key: u64,
    /// Wall time allowed for the whole check (all keys); `None` for no limit.
    pub max_duration: Option<Duration>,
    /// Approximate memory allowed for one key's memo, in bytes.
    pub max_cache_bytes: u64,
}

impl Default for Budget {
    /// 20 million steps per key, 5 minutes, 512 MiB of memo.
    fn default() -> Self {
        Budget {
            max_steps_per_key: 20_000_000,
            max_duration: Some(Duration::from_secs(300)),
            max_cache_bytes: 512 << 20,
        }
    }
}

/// One op as named in a witness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WitnessOp {
    /// The history's process id of the operation.
    pub process: u64,
    /// Index of the invocation.
    pub invoke_index: u64,
    /// Index of the completion (`None` if it never completed).
    pub complete_index: Option<u64>,
    /// Human-readable form, such as `write 3`, `read -> 5`, `cas 3->4 (info)`.
    pub description: String,
}

impl fmt::Display for WitnessOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{} {} [op {}", self.process, self.description, self.invoke_index)?;
        match self.complete_index {
            Some(c) => write!(f, "..{c}]"),
            None => write!(f, "..]"),
        }
    }
}

/// Why a key's history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Witness {
    /// The longest partial linearization the search found, in order.
    pub longest_prefix: Vec<WitnessOp>,
    /// The register's value after that prefix.
    pub state_after_prefix: Option<u64>,
    /// The op whose return came before it could be linearized after the
    /// prefix (`None` if the search ran out of candidates instead).
    pub blocking: Option<WitnessOp>,
    /// The ops that could go next after the prefix, none of which can
    /// (the blocking op is among them).
    pub stuck: Vec<WitnessOp>,
}

impl fmt::Display for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state_after_prefix {
            Some(v) => v.to_string(),
            None => "absent".to_string(),
        };
        write!(
            f,
            "after a linearized prefix of {} ops (value {state}), ",
            self.longest_prefix.len()
        )?;
        match &self.blocking {
            Some(op) => write!(f, "{op} cannot be linearized")?,
            None => write!(f, "no remaining op can be linearized")?,
        }
        if !self.stuck.is_empty() {
            let stuck: Vec<String> = self.stuck.iter().map(|o| o.to_string()).collect();
            write!(f, "; candidates: {}", stuck.join(", "))?;
        }
        Ok(())
    }
}

/// Result for one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum KeyOutcome {
    /// The key's history is linearizable.
    Linearizable,
    /// It is not; the witness shows where the search got stuck.
    NotLinearizable(Witness),
    /// The budget ran out; the reason says which limit.
    Unknown(String),
}

/// The check of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyReport {
    /// Ops checked (after dropping `Fail` ops and `info` reads).
    pub ops: usize,
    /// How many of them are indeterminate.
    pub info_ops: usize,
    /// Search steps spent.
    pub steps: u64,
    /// Whether the key's history is linearizable, with a witness if not.
    pub outcome: KeyOutcome,
}

/// Overall result over every key: not linearizable if any key is not, else
/// unknown if any key could not be decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Linearizability {
    /// Every key is linearizable.
    Linearizable,
    /// A key is not (the first such key in key order; see
    /// [`LinearizabilityReport::keys`] for all of them).
    NotLinearizable {
        /// The first non-linearizable key, in key order.
        key: String,
        /// That key's witness: the longest linearizable prefix and the ops
        /// that could not follow it.
        witness: Witness,
    },
    /// No key is known to be wrong, but some could not be decided.
    Unknown {
        /// The undecided keys.
        keys: Vec<String>,
        /// Which limit ran out (for the first of them).
        reason: String,
    },
}

/// The linearizability check of a register history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinearizabilityReport {
    /// Overall result (see [`Linearizability`]).
    pub outcome: Linearizability,
    /// Every key's report, by key; keys are checked independently.
    pub keys: BTreeMap<String, KeyReport>,
}

impl LinearizabilityReport {
    /// Ops checked over all keys.
    pub fn ops(&self) -> usize {
        self.keys.values().map(|k| k.ops).sum()
    }

    /// Search steps over all keys.
    pub fn steps(&self) -> u64 {
        self.keys.values().map(|k| k.steps).sum()
    }

    /// This check as a row of the verdict table.
    pub fn verdict(&self) -> Verdict {
        let bad = self
            .keys
            .values()
            .filter(|k| matches!(k.outcome, KeyOutcome::NotLinearizable(_)))
            .count();
        let summary = format!("{} keys, {} steps", self.keys.len(), self.steps());
        let (status, message) = match &self.outcome {
            Linearizability::Linearizable if self.keys.is_empty() => (Status::Skipped, "no register ops".to_string()),
            Linearizability::Linearizable => (Status::Pass, summary),
            Linearizability::NotLinearizable { key, witness } => (
                Status::Violation,
                format!("key {key:?}: {witness} ({bad} bad keys, {summary})"),
            ),
            Linearizability::Unknown { keys, reason } => (
                Status::Unknown,
                format!("undecided keys {keys:?}: {reason} ({summary})"),
            ),
        };
        Verdict {
            checker: "linearizability".to_string(),
            status,
            checked: self.ops() as u64,
            violations: bad as u64,
            message,
        }
    }
}

/// Checks the register ops of `pairs` (see [`crate::history::pair`]) for
/// linearizability, key by key, within `budget`. Errors only on a malformed
/// history (an `Ok` read without a [`Value::Register`]).
pub fn check_register(pairs: &[PairedOp], budget: &Budget) -> Result<LinearizabilityReport, HistoryError> {
    let mut per_key: BTreeMap<&str, Vec<&PairedOp>> = BTreeMap::new();
    for p in pairs {
        if let Some(key) = p.f.register_key() {
            per_key.entry(key).or_default().push(p);
        }
    }
    let deadline = budget.max_duration.map(|d| Instant::now() + d);
    let mut keys = BTreeMap::new();
    for (key, ops) in per_key {
        keys.insert(key.to_string(), check_key(&ops, budget, deadline)?);
    }
    let outcome = overall(&keys);
    Ok(LinearizabilityReport { outcome, keys })
}

fn overall(keys: &BTreeMap<String, KeyReport>) -> Linearizability {
    for (key, report) in keys {
        if let KeyOutcome::NotLinearizable(witness) = &report.outcome {
            return Linearizability::NotLinearizable {
                key: key.clone(),
                witness: witness.clone(),
            };
        }
    }
    let undecided: Vec<(&String, &String)> = keys
        .iter()
        .filter_map(|(k, r)| match &r.outcome {
            KeyOutcome::Unknown(reason) => Some((k, reason)),
            _ => None,
        })
        .collect();
    match undecided.first() {
        None => Linearizability::Linearizable,
        Some((_, reason)) => Linearizability::Unknown {
            keys: undecided.iter().map(|(k, _)| (*k).clone()).collect(),
            reason: (*reason).clone(),
        },
    }
}

/// Checks one key: its ops become entries, reduced, then searched; a
/// failed search's deepest dead end becomes the witness.
fn check_key(ops: &[&PairedOp], budget: &Budget, deadline: Option<Instant>) -> Result<KeyReport, HistoryError> {
    let entries = entries(ops)?;
    let checked = entries.len();
    let info_ops = entries.iter().filter(|e| e.return_ns.is_none()).count();
    let entries = reduce_indeterminate(entries);
    let mut search = Search::new(&entries);
    let result = search.run(budget, deadline);
    let outcome = match result {
        SearchResult::Linearizable => KeyOutcome::Linearizable,
        SearchResult::Exhausted(reason) => KeyOutcome::Unknown(reason),
        SearchResult::NotLinearizable => {
            let raw = search.best.take().unwrap_or_default();
            KeyOutcome::NotLinearizable(Witness {
                longest_prefix: raw.prefix.iter().map(|&i| describe(entries[i].source)).collect(),
                state_after_prefix: raw.state,
                blocking: raw.blocking.map(|i| describe(entries[i].source)),
                stuck: raw.stuck.iter().map(|&i| describe(entries[i].source)).collect(),
            })
        }
    };
    Ok(KeyReport {
        ops: checked,
        info_ops,
        steps: search.steps,
        outcome,
    })
}

/// An op as a witness names it.
fn describe(p: &PairedOp) -> WitnessOp {
    let mut description = match (&p.f, &p.value) {
        (Function::Read { .. }, Value::Register(Some(v))) => format!("read -> {v}"),
        (Function::Read { .. }, Value::Register(None)) => "read -> absent".to_string(),
        (Function::Read { .. }, _) => "read".to_string(),
        (Function::Write { value, .. }, _) => format!("write {value}"),
        (Function::Cas { from, to, .. }, _) => format!("cas {from}->{to}"),
        (f, _) => format!("{f:?}"),
    };
    if p.completion == Completion::Info {
        description.push_str(" (info)");
    }
    WitnessOp {
        process: p.process,
        invoke_index: p.invoke_index,
        complete_index: p.complete_index,
        description,
    }
}
