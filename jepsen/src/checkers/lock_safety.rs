//! Lock safety: no two believed holds of one lock overlap, in harness time,
//! by more than ε (see [`super`] for what ε absorbs). The believed holds
//! ([`held_locks`]) come from acquires and the final intervals their
//! releases carry.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::{ms, ms_value, overlapping, Status, Verdict, MAX_REPORTED};
use crate::history::{Function, HistoryError, PairedOp, Value};

/// One lock hold as the client believed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeldLock {
    /// The lock held.
    pub lock: String,
    /// The holding process.
    pub process: u64,
    /// The session the lock was granted to.
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
    /// The lock both holds are of.
    pub lock: String,
    /// The hold that started first.
    pub first: HeldLock,
    /// A hold that started at the same time or later.
    pub second: HeldLock,
    /// Length of the overlap, harness ns (more than ε).
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
