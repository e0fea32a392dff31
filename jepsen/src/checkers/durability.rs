//! Durability: nothing acknowledged is lost. Reads after the final phase
//! began (every node restarted and healed) return a value that a write
//! which may have taken effect left there and that no acknowledged write
//! is known to have overwritten.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::{Status, Verdict};
use crate::history::{Completion, Function, HistoryError, PairedOp, Value};

/// A final read that shows an acknowledged write lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LostWrite {
    /// The register key whose final read lost a write.
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
