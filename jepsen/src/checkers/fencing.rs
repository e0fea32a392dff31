//! Fencing-token order: for acknowledged exclusive grants of one lock,
//! real-time order implies token order, and no two grants share a token.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::{Status, Verdict};
use crate::history::{Function, HistoryError, PairedOp, Value};

/// An acknowledged grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// The lock granted.
    pub lock: String,
    /// The history's process id of the acquire.
    pub process: u64,
    /// The fencing token the acquire returned.
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
        /// A later one (by completion) with the same token.
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
    /// Every violation found; empty when the check passes.
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
