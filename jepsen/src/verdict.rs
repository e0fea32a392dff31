//! Whether a run's verdict can be trusted: a run is valid only if every
//! requested checker returned a definite pass on enough data.
//!
//! The checkers ([`crate::checkers`]) say whether what they saw was correct;
//! this module says whether they saw enough for a green verdict to mean
//! something. A run is **invalid** (exit 1, like a violation) when any of
//! these holds:
//!
//! - a checker found a violation;
//! - a checker of a requested workload was `Skipped` (its workload left no
//!   op), or `Unknown` (search budget spent, final read missing) unless
//!   unknowns are allowed (`--allow-unknown`);
//! - a requested workload completed fewer `ok` operations than its minimum
//!   ([`Minimums`]: register ops, lock holds, masterships);
//! - a requested workload reported an error: it could not connect, a task
//!   panicked, a lock worker exited with a non-zero code or had to be killed;
//! - a requested nemesis never applied its fault (unavailable here, or every
//!   attempt failed);
//! - the final restart did not bring every node back, or the final reads
//!   did not complete.
//!
//! [`judge`] lists every reason; an empty list is a valid run. Everything
//! here is pure, so each rule is tested without a cluster
//! (`jepsen/tests/verdict.rs`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::checkers::{Status, VerdictTable};
use crate::history::{final_phase_start_ns, Completion, Function, PairedOp};
use crate::nemesis::Nemesis;

/// Which workloads run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Workloads {
    /// KV register read/write/cas.
    pub register: bool,
    /// Lock + fenced counter (worker processes).
    pub lock: bool,
    /// Election campaign/resign/observe.
    pub election: bool,
}

impl Workloads {
    /// Every workload.
    pub const ALL: Workloads = Workloads {
        register: true,
        lock: true,
        election: true,
    };

    /// Parses `all` or a comma-separated list of `register`, `lock`
    /// (also `counter`), `election`.
    pub fn parse(s: &str) -> Result<Workloads, String> {
        let mut w = Workloads::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => w = Workloads::ALL,
                "register" | "kv" => w.register = true,
                "lock" | "counter" | "lock-intervals" => w.lock = true,
                "election" => w.election = true,
                p => return Err(format!("unknown workload '{p}' (known: register, lock, election, all)")),
            }
        }
        Ok(w)
    }

    /// The checkers that judge these workloads: each must pass.
    pub fn checkers(self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.register {
            out.extend(["linearizability", "durability"]);
        }
        if self.lock {
            out.extend(["lock-safety", "fencing", "counter"]);
        }
        if self.election {
            out.push("elections");
        }
        out
    }

    /// Names of the selected workloads, for tables.
    pub fn names(self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.register {
            out.push("register");
        }
        if self.lock {
            out.push("lock");
        }
        if self.election {
            out.push("election");
        }
        out
    }
}

/// The least a requested workload must have done for its checkers' pass to
/// count: `ok` operations before the final phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Minimums {
    /// Register reads, writes and cas completed `ok`.
    pub register_ok: u64,
    /// Lock acquisitions completed `ok` (holds).
    pub lock_holds: u64,
    /// Campaigns completed `ok` (masterships).
    pub masterships: u64,
}

impl Minimums {
    /// Defaults of a full run (60 s and more). A 75 s `--short` run on a
    /// shared 2-core machine (debug build) did 5195 register ops, 375 lock
    /// holds and 101 masterships; through the delay nemesis' proxies about
    /// half that (a 40 s run: 1394, 113, 39). A 60 s run with every
    /// nemesis clears these several times over.
    pub const FULL: Minimums = Minimums {
        register_ok: 1_000,
        lock_holds: 60,
        masterships: 15,
    };

    /// Defaults under `--short` (75 s on a loaded CI machine): a fifth to a
    /// tenth of what such a run was seen to do.
    pub const SHORT: Minimums = Minimums {
        register_ok: 500,
        lock_holds: 30,
        masterships: 8,
    };
}

/// What each workload achieved, counted from the history before the final
/// phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkloadCounts {
    /// Register reads, writes and cas completed `ok`.
    pub register_ok: u64,
    /// Lock acquisitions completed `ok`.
    pub lock_holds: u64,
    /// Campaigns completed `ok`.
    pub masterships: u64,
}

impl WorkloadCounts {
    /// Counts the `ok` ops of each workload invoked before the final phase
    /// (the final reads do not count).
    pub fn from_pairs(pairs: &[PairedOp]) -> WorkloadCounts {
        let end = final_phase_start_ns(pairs).unwrap_or(u64::MAX);
        let mut c = WorkloadCounts::default();
        for p in pairs.iter().filter(|p| p.is_ok() && p.invoke_ns < end) {
            match p.f {
                Function::Read { .. } | Function::Write { .. } | Function::Cas { .. } => c.register_ok += 1,
                Function::Acquire { .. } => c.lock_holds += 1,
                Function::Campaign { .. } => c.masterships += 1,
                _ => {}
            }
        }
        c
    }
}

/// ok / fail / info of one op type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    /// Took effect.
    pub ok: u64,
    /// Certainly did not take effect (for a cas: mostly a failed comparison).
    pub fail: u64,
    /// Outcome unknown (or never completed).
    pub info: u64,
}

impl KindCounts {
    /// All three.
    pub fn total(&self) -> u64 {
        self.ok + self.fail + self.info
    }
}

/// The op type of a function for the summary (`read`, `write`, `cas`,
/// `acquire`, …); `None` for nemesis and phase markers.
pub fn op_type(f: &Function) -> Option<&'static str> {
    Some(match f {
        Function::Read { .. } => "read",
        Function::Write { .. } => "write",
        Function::Cas { .. } => "cas",
        Function::Acquire { .. } => "acquire",
        Function::Release { .. } => "release",
        Function::Increment { .. } => "increment",
        Function::CounterRead { .. } => "counter-read",
        Function::Campaign { .. } => "campaign",
        Function::Resign { .. } => "resign",
        Function::Master { .. } => "observe",
        Function::Nemesis { .. } | Function::Phase { .. } => return None,
    })
}

/// ok / fail / info per op type over the whole history (final reads
/// included).
pub fn counts_by_type(pairs: &[PairedOp]) -> BTreeMap<&'static str, KindCounts> {
    let mut out: BTreeMap<&'static str, KindCounts> = BTreeMap::new();
    for p in pairs {
        let Some(t) = op_type(&p.f) else { continue };
        let e = out.entry(t).or_default();
        match p.completion {
            Completion::Ok => e.ok += 1,
            Completion::Fail => e.fail += 1,
            Completion::Info => e.info += 1,
        }
    }
    out
}

/// The per-op-type table: `type ok fail info`, one line each.
pub fn counts_table(counts: &BTreeMap<&'static str, KindCounts>) -> String {
    let mut s = format!("{:<13} {:>8} {:>8} {:>8}\n", "op", "ok", "fail", "info");
    for (t, c) in counts {
        s.push_str(&format!("{t:<13} {:>8} {:>8} {:>8}\n", c.ok, c.fail, c.info));
    }
    s
}

/// One fault as it happened: what was applied, when, and how it was healed.
/// Times are history ns (the harness's monotonic clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultRecord {
    /// Which nemesis.
    pub nemesis: Nemesis,
    /// What it did (`kill -9 n2`).
    pub what: String,
    /// When the fault was applied.
    pub start_ns: u64,
    /// When its heal finished; `None` if the run ended first (healed by the
    /// final heal-all).
    pub end_ns: Option<u64>,
    /// The heal's description, or why it failed (`Err`).
    pub heal: Result<String, String>,
    /// Whether the fault took effect: once applied for most; for the
    /// snapshot fault only if the follower then installed a snapshot, for
    /// the handover cut only if an old master was cut off after its last
    /// state chunk ([`Nemesis::confirmed_at_heal`]).
    pub took_effect: bool,
}

/// The facts of a run besides the checkers' verdicts, as [`judge`] needs
/// them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunFacts {
    /// The requested workloads.
    pub workloads: Workloads,
    /// The requested nemeses (after `all` was expanded and nemeses this
    /// machine cannot run under `all` were dropped with a note).
    pub nemeses: Vec<Nemesis>,
    /// `ok` ops per workload.
    pub counts: WorkloadCounts,
    /// Faults applied, in order.
    pub faults: Vec<FaultRecord>,
    /// Requested nemeses that could not run here, with the reason.
    pub unavailable: BTreeMap<Nemesis, String>,
    /// Errors of the workloads: could not connect, a task panicked, a lock
    /// worker's exit status.
    pub workload_errors: Vec<String>,
    /// The final kill-and-restart of every node: `Err` says which node did
    /// not come back or that no leader was elected.
    pub final_restart: Result<(), String>,
    /// The final reads of every register key and the counter: `Err` lists
    /// what could not be read.
    pub final_reads: Result<(), String>,
}

impl RunFacts {
    /// How many faults of nemesis `n` took effect.
    pub fn ran(&self, n: Nemesis) -> usize {
        self.faults.iter().filter(|f| f.nemesis == n && f.took_effect).count()
    }
}

/// Why a run is invalid: one entry per broken rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Invalid {
    /// A checker found a violation.
    Violation {
        /// The checker.
        checker: String,
        /// Its message.
        message: String,
    },
    /// A requested checker was skipped (no op of its workload) or is
    /// missing from the table.
    Skipped {
        /// The checker.
        checker: String,
    },
    /// A requested checker could not decide and unknowns are not allowed.
    Unknown {
        /// The checker.
        checker: String,
        /// Its message (why it could not decide).
        message: String,
    },
    /// A requested workload did too little.
    TooFewOps {
        /// `register ok ops`, `lock holds` or `masterships`.
        what: &'static str,
        /// What it did.
        got: u64,
        /// The minimum.
        min: u64,
    },
    /// A workload reported an error.
    Workload(String),
    /// A requested nemesis never applied its fault.
    NemesisDidNotRun {
        /// The nemesis.
        nemesis: Nemesis,
        /// Why (unavailable here, or the last error).
        why: String,
    },
    /// The final restart failed.
    FinalRestart(String),
    /// The final reads did not complete.
    FinalReads(String),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Violation { checker, message } => write!(f, "{checker}: violation: {message}"),
            Invalid::Skipped { checker } => write!(f, "{checker}: skipped, but its workload was requested"),
            Invalid::Unknown { checker, message } => {
                write!(f, "{checker}: unknown ({message}); --allow-unknown accepts it")
            }
            Invalid::TooFewOps { what, got, min } => write!(f, "only {got} {what} (minimum {min})"),
            Invalid::Workload(e) => write!(f, "workload: {e}"),
            Invalid::NemesisDidNotRun { nemesis, why } => write!(f, "nemesis {nemesis} never ran: {why}"),
            Invalid::FinalRestart(e) => write!(f, "final restart: {e}"),
            Invalid::FinalReads(e) => write!(f, "final reads: {e}"),
        }
    }
}

/// Every reason the run is invalid; empty when the verdict is a valid
/// pass. `errors` gives the last error of each nemesis (for the reason a
/// nemesis never ran).
pub fn judge(
    table: &VerdictTable,
    facts: &RunFacts,
    minimums: &Minimums,
    allow_unknown: bool,
    errors: &BTreeMap<Nemesis, String>,
) -> Vec<Invalid> {
    let mut out = checker_problems(table, &facts.workloads.checkers(), allow_unknown);
    let w = facts.workloads;
    let c = facts.counts;
    for (on, what, got, min) in [
        (w.register, "register ok ops", c.register_ok, minimums.register_ok),
        (w.lock, "lock holds", c.lock_holds, minimums.lock_holds),
        (w.election, "masterships", c.masterships, minimums.masterships),
    ] {
        if on && got < min {
            out.push(Invalid::TooFewOps { what, got, min });
        }
    }
    out.extend(facts.workload_errors.iter().cloned().map(Invalid::Workload));
    for &n in &facts.nemeses {
        if facts.ran(n) == 0 {
            let applied: Vec<&FaultRecord> = facts.faults.iter().filter(|f| f.nemesis == n).collect();
            let why = match (facts.unavailable.get(&n), applied.last()) {
                (Some(why), _) => why.clone(),
                (None, Some(last)) => format!(
                    "applied {} times, never took effect (last heal: {})",
                    applied.len(),
                    match &last.heal {
                        Ok(h) => h.clone(),
                        Err(e) => e.clone(),
                    }
                ),
                (None, None) => errors
                    .get(&n)
                    .cloned()
                    .unwrap_or_else(|| "the schedule never reached it (run too short?)".to_owned()),
            };
            out.push(Invalid::NemesisDidNotRun { nemesis: n, why });
        }
    }
    if let Err(e) = &facts.final_restart {
        out.push(Invalid::FinalRestart(e.clone()));
    }
    if let Err(e) = &facts.final_reads {
        out.push(Invalid::FinalReads(e.clone()));
    }
    out
}

/// The checker part of [`judge`]: violations anywhere; a `required`
/// checker missing, skipped, or (unless `allow_unknown`) unknown; an
/// unknown anywhere unless allowed.
pub fn checker_problems(table: &VerdictTable, required: &[&str], allow_unknown: bool) -> Vec<Invalid> {
    let mut out = Vec::new();
    for row in &table.rows {
        if row.status == Status::Violation {
            out.push(Invalid::Violation {
                checker: row.checker.clone(),
                message: row.message.clone(),
            });
        }
    }
    for &checker in required {
        match table.get(checker) {
            None => out.push(Invalid::Skipped {
                checker: checker.to_owned(),
            }),
            Some(row) => match row.status {
                Status::Pass | Status::Violation => {}
                Status::Skipped => out.push(Invalid::Skipped {
                    checker: checker.to_owned(),
                }),
                Status::Unknown if allow_unknown => {}
                Status::Unknown => out.push(Invalid::Unknown {
                    checker: checker.to_owned(),
                    message: row.message.clone(),
                }),
            },
        }
    }
    // Unknown in a checker of a workload that was not requested (ops of it
    // in a re-checked history) is not a pass either.
    for row in &table.rows {
        let requested = required.contains(&row.checker.as_str());
        if !requested && row.status == Status::Unknown && !allow_unknown {
            out.push(Invalid::Unknown {
                checker: row.checker.clone(),
                message: row.message.clone(),
            });
        }
    }
    out
}
