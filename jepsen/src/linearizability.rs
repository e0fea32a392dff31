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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checkers::{Status, Verdict};
use crate::history::{Completion, Function, HistoryError, PairedOp, Value};

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
    /// The process.
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
    /// It is not.
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
    /// The result.
    pub outcome: KeyOutcome,
}

/// Overall result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Linearizability {
    /// Every key is linearizable.
    Linearizable,
    /// A key is not (the first such key in key order; see
    /// [`LinearizabilityReport::keys`] for all of them).
    NotLinearizable {
        /// The key.
        key: String,
        /// Why.
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
    /// Overall result.
    pub outcome: Linearizability,
    /// Per key.
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

/// The register state: the value, or `None` when absent.
type State = Option<u64>;

#[derive(Clone, Copy, Debug)]
enum Input {
    Read(Option<u64>),
    Write(u64),
    Cas {
        from: u64,
        to: u64,
    },
    /// An indeterminate cas: placed at a point, it succeeds iff the value is
    /// `from` there.
    CasUnknown {
        from: u64,
        to: u64,
    },
}

/// The model's transition: `None` if the op cannot happen in `state` with
/// the result it returned.
fn step(state: State, input: Input) -> Option<State> {
    match input {
        Input::Read(v) => (state == v).then_some(state),
        Input::Write(v) => Some(Some(v)),
        Input::Cas { from, to } => (state == Some(from)).then_some(Some(to)),
        Input::CasUnknown { from, to } => Some(if state == Some(from) { Some(to) } else { state }),
    }
}

struct Entry<'a> {
    input: Input,
    call_ns: u64,
    /// `None` for +∞ (indeterminate).
    return_ns: Option<u64>,
    source: &'a PairedOp,
}

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

fn entries<'a>(ops: &[&'a PairedOp]) -> Result<Vec<Entry<'a>>, HistoryError> {
    let mut out = Vec::with_capacity(ops.len());
    for &p in ops {
        let info = match p.completion {
            Completion::Fail => continue,
            Completion::Info => true,
            Completion::Ok => false,
        };
        let input = match (&p.f, info) {
            (Function::Read { .. }, true) => continue,
            (Function::Read { .. }, false) => match p.value {
                Value::Register(v) => Input::Read(v),
                _ => {
                    return Err(HistoryError::malformed(
                        p.index(),
                        "read completed without a Register value",
                    ))
                }
            },
            (Function::Write { value, .. }, _) => Input::Write(*value),
            (Function::Cas { from, to, .. }, false) => Input::Cas { from: *from, to: *to },
            (Function::Cas { from, to, .. }, true) => Input::CasUnknown { from: *from, to: *to },
            _ => continue,
        };
        let return_ns = if info { None } else { p.complete_ns };
        debug_assert!(return_ns.is_some() || info, "an Ok op has a completion");
        out.push(Entry {
            input,
            call_ns: p.invoke_ns,
            return_ns,
            source: p,
        });
    }
    Ok(out)
}

/// The value an op writes if it takes effect.
fn written(input: Input) -> Option<u64> {
    match input {
        Input::Read(_) => None,
        Input::Write(v) | Input::Cas { to: v, .. } | Input::CasUnknown { to: v, .. } => Some(v),
    }
}

/// Shrinks the indeterminate ops before the search, by two rules that keep
/// the answer exact:
///
/// 1. An indeterminate write or cas of a value `v` that no op observes (no
///    `Ok` read returns `v`, no cas expects `v`) is dropped. From any
///    linearization that places it, removing it (and the indeterminate cas
///    that were no-ops while the value was `v`) leaves a valid
///    linearization: only those cas and a later write could follow it before
///    the value changes, and the write resets the value anyway. Applied
///    until nothing changes.
/// 2. An indeterminate write or cas that is the only writer of an observed
///    value `v` must have taken effect before the earliest return `r` among
///    the `Ok` ops that observe `v`: it becomes a completed op (a cas: a
///    successful one) with return `r`, which every linearization satisfies.
fn reduce_indeterminate(mut entries: Vec<Entry<'_>>) -> Vec<Entry<'_>> {
    loop {
        let mut observed: HashSet<u64> = HashSet::new();
        for e in &entries {
            match e.input {
                Input::Read(Some(v)) | Input::Cas { from: v, .. } | Input::CasUnknown { from: v, .. } => {
                    observed.insert(v);
                }
                _ => {}
            }
        }
        let before = entries.len();
        entries.retain(|e| e.return_ns.is_some() || written(e.input).is_none_or(|v| observed.contains(&v)));
        if entries.len() == before {
            break;
        }
    }
    let mut writers: HashMap<u64, usize> = HashMap::new();
    let mut first_observed_ns: HashMap<u64, u64> = HashMap::new();
    for e in &entries {
        if let Some(v) = written(e.input) {
            *writers.entry(v).or_default() += 1;
        }
        if let (Input::Read(Some(v)) | Input::Cas { from: v, .. }, Some(r)) = (e.input, e.return_ns) {
            let first = first_observed_ns.entry(v).or_insert(r);
            *first = (*first).min(r);
        }
    }
    for e in entries.iter_mut().filter(|e| e.return_ns.is_none()) {
        let Some(v) = written(e.input) else { continue };
        let Some(&r) = first_observed_ns.get(&v) else { continue };
        // An observer that returned before this op was called cannot be
        // explained by it; leave it to the search to fail.
        if writers.get(&v) == Some(&1) && r >= e.call_ns {
            e.return_ns = Some(r);
            if let Input::CasUnknown { from, to } = e.input {
                e.input = Input::Cas { from, to };
            }
        }
    }
    entries
}

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

/// A set of op ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Self {
        Bitset(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// A call or return event in the doubly linked list.
#[derive(Clone, Copy, Debug)]
struct Node {
    prev: usize,
    next: usize,
    /// The op (index into the entries).
    op: usize,
    is_call: bool,
    /// For a call: its return node, or `NIL` for an indeterminate op.
    partner: usize,
}

#[derive(Default)]
struct RawWitness {
    prefix: Vec<usize>,
    state: State,
    blocking: Option<usize>,
    stuck: Vec<usize>,
}

enum SearchResult {
    Linearizable,
    NotLinearizable,
    Exhausted(String),
}

struct Search<'e, 'a> {
    entries: &'e [Entry<'a>],
    nodes: Vec<Node>,
    steps: u64,
    best: Option<RawWitness>,
}

impl<'e, 'a> Search<'e, 'a> {
    fn new(entries: &'e [Entry<'a>]) -> Self {
        // Events ordered by time; at equal times calls come first, so ops
        // touching at one instant count as concurrent.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(entries.len() * 2);
        for (i, e) in entries.iter().enumerate() {
            events.push((e.call_ns, false, i));
            if let Some(r) = e.return_ns {
                debug_assert!(r >= e.call_ns);
                events.push((r, true, i));
            }
        }
        events.sort_unstable();
        let mut nodes = Vec::with_capacity(events.len() + 1);
        nodes.push(Node {
            prev: NIL,
            next: NIL,
            op: NIL,
            is_call: false,
            partner: NIL,
        });
        let mut call_node = vec![NIL; entries.len()];
        for (pos, &(_, is_return, op)) in events.iter().enumerate() {
            let id = pos + 1;
            nodes[id - 1].next = id;
            nodes.push(Node {
                prev: id - 1,
                next: NIL,
                op,
                is_call: !is_return,
                partner: NIL,
            });
            if is_return {
                let c = call_node[op];
                debug_assert_ne!(c, NIL, "a return follows its call");
                nodes[c].partner = id;
            } else {
                call_node[op] = id;
            }
        }
        Search {
            entries,
            nodes,
            steps: 0,
            best: None,
        }
    }

    fn unlink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = x;
        if next != NIL {
            self.nodes[next].prev = x;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let partner = self.nodes[call].partner;
        if partner != NIL {
            self.unlink(partner);
        }
    }

    /// Undoes [`Search::lift`]: relinks in the reverse order of unlinking.
    fn unlift(&mut self, call: usize) {
        let partner = self.nodes[call].partner;
        if partner != NIL {
            self.relink(partner);
        }
        self.relink(call);
    }

    /// Remembers the configuration at a dead end if it is the deepest so far.
    fn note_dead_end(&mut self, stack: &[(usize, State)], state: State, at: usize) {
        if self.best.as_ref().is_some_and(|b| b.prefix.len() >= stack.len()) {
            return;
        }
        let mut stuck = Vec::new();
        let mut n = self.nodes[HEAD].next;
        while n != at && n != NIL {
            if self.nodes[n].is_call {
                stuck.push(self.nodes[n].op);
            }
            n = self.nodes[n].next;
        }
        let blocking = (at != NIL).then(|| self.nodes[at].op);
        let prefix = stack.iter().map(|&(node, _)| self.nodes[node].op).collect();
        self.best = Some(RawWitness {
            prefix,
            state,
            blocking,
            stuck,
        });
    }

    fn run(&mut self, budget: &Budget, deadline: Option<Instant>) -> SearchResult {
        let n = self.entries.len();
        let finite_total = self.entries.iter().filter(|e| e.return_ns.is_some()).count();
        if finite_total == 0 {
            return SearchResult::Linearizable;
        }
        let entry_bytes = (n.div_ceil(64) * 8 + std::mem::size_of::<(Bitset, State)>() + 16) as u64;
        let max_cache_entries = (budget.max_cache_bytes / entry_bytes.max(1)).max(1);

        let mut cache: HashSet<(Bitset, State)> = HashSet::new();
        let mut linearized = Bitset::new(n);
        let mut state: State = None;
        let mut finite_done = 0usize;
        // (call node, state before it) of each linearized op, in order.
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut entry = self.nodes[HEAD].next;

        loop {
            self.steps += 1;
            if self.steps > budget.max_steps_per_key {
                return SearchResult::Exhausted(format!("step budget of {} spent", budget.max_steps_per_key));
            }
            if self.steps % 1024 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                return SearchResult::Exhausted("time budget spent".to_string());
            }

            if entry != NIL && self.nodes[entry].is_call {
                // A candidate: its call precedes the first remaining return.
                let op = self.nodes[entry].op;
                debug_assert!(!linearized.contains(op));
                if let Some(next_state) = step(state, self.entries[op].input) {
                    linearized.set(op);
                    if cache.insert((linearized.clone(), next_state)) {
                        if cache.len() as u64 > max_cache_entries {
                            return SearchResult::Exhausted(format!(
                                "memo budget of {} MiB spent",
                                budget.max_cache_bytes >> 20
                            ));
                        }
                        stack.push((entry, state));
                        state = next_state;
                        self.lift(entry);
                        if self.entries[op].return_ns.is_some() {
                            finite_done += 1;
                            if finite_done == finite_total {
                                return SearchResult::Linearizable;
                            }
                        }
                        entry = self.nodes[HEAD].next;
                        continue;
                    }
                    linearized.clear(op);
                }
                entry = self.nodes[entry].next;
                continue;
            }

            // A return whose op is not linearized, or the end of the list
            // with only unplaceable indeterminate calls: backtrack.
            self.note_dead_end(&stack, state, entry);
            let Some((call, prev_state)) = stack.pop() else {
                return SearchResult::NotLinearizable;
            };
            let op = self.nodes[call].op;
            linearized.clear(op);
            if self.entries[op].return_ns.is_some() {
                finite_done -= 1;
            }
            state = prev_state;
            self.unlift(call);
            entry = self.nodes[call].next;
        }
    }
}
