//! The fenced counter: its final value counts every acknowledged increment
//! and at most the indeterminate ones besides, is not below any value an
//! increment acknowledged, and no two acknowledged increments returned the
//! same value.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::{Status, Verdict};
use crate::history::{Completion, Function, HistoryError, PairedOp, Value};

/// The increments of one counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CounterSummary {
    /// Increments that completed `Ok` (each must have counted).
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
        /// The new value both returned.
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
        /// Acknowledged increments: the least the final value may be.
        min: u64,
        /// Acknowledged plus indeterminate increments: the most the final value
        /// may be.
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
    /// Every violation found; empty when the counters pass.
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
