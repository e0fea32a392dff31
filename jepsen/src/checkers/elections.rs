//! Elections: one master per epoch, epochs that never go back for an
//! observer, and — what the lock checker checks for locks — believed
//! masterships of different epochs that do not overlap in real time by more
//! than ε (see [`super`]). A believed mastership runs from the moment
//! `campaign` returned to the earlier of the client library's loss signal
//! (`Leadership::lost_at`: a resignation, a warm handover, the session's
//! end) and the session's local validity end, so a master that hands over
//! must have stopped believing before its successor starts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::{ms, ms_value, overlapping, Status, Verdict, MAX_REPORTED};
use crate::history::{Function, HistoryError, PairedOp, Value};

/// One mastership as the master believed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MastershipHold {
    /// The election the mastership is of.
    pub election: String,
    /// The master process.
    pub process: u64,
    /// Epoch of the mastership (the log index of the entry that made this
    /// master), from the campaign's or the resign's value.
    pub epoch: u64,
    /// The master's session id.
    pub session: u64,
    /// Start of the believed mastership, harness ns.
    pub held_from_ns: u64,
    /// End of it, harness ns: the earlier of the loss signal and the local
    /// validity end (or the start of the resignation).
    pub held_until_ns: u64,
    /// When the loss signal fired, harness ns, if recorded.
    pub lost_ns: Option<u64>,
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
        )?;
        match self.lost_ns {
            Some(lost) => write!(f, " (loss signal at {} ms)", ms_value(lost)),
            None => write!(f, " (no loss signal recorded)"),
        }
    }
}

/// An election violation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ElectionViolation {
    /// More than one session claimed or was seen as master of one epoch.
    TwoMasters {
        /// The election with two masters.
        election: String,
        /// The epoch they share.
        epoch: u64,
        /// The distinct sessions that claimed or were seen as its master.
        sessions: Vec<u64>,
        /// Indices of ops that show them.
        indices: Vec<u64>,
    },
    /// An observer saw the epoch go backwards.
    EpochRegressed {
        /// The election observed.
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
        /// The election whose masterships overlapped.
        election: String,
        /// The one that started first.
        first: MastershipHold,
        /// One of a different epoch that started at the same time or later.
        second: MastershipHold,
        /// Length of the overlap, harness ns (more than ε).
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
/// [`Value::Mastership`] (of any completion) gives the final interval of
/// that mastership; every interval ends at the earlier of its loss signal
/// and its `held_until_ns` ([`Mastership::believed_until_ns`](crate::history::Mastership::believed_until_ns)).
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
                        held_until_ns: m.believed_until_ns(),
                        lost_ns: m.lost_ns,
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
                        held_until_ns: m.believed_until_ns(),
                        lost_ns: m.lost_ns,
                        campaign_index: None,
                        resign_index: None,
                    });
                hold.held_from_ns = m.held_from_ns;
                hold.held_until_ns = m.believed_until_ns();
                hold.lost_ns = m.lost_ns;
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
