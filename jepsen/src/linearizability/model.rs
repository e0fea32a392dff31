//! The register model and the history as the search sees it: each
//! register op becomes an [`Entry`] (its input, call time and return time,
//! +∞ for an indeterminate op), `Fail` ops and indeterminate reads are left
//! out, and [`reduce_indeterminate`] shrinks the indeterminate ops by two
//! exact rules before the search starts.

use std::collections::{HashMap, HashSet};

use crate::history::{Completion, Function, HistoryError, PairedOp, Value};

/// The register state: the value, or `None` when absent.
pub(super) type State = Option<u64>;

/// What one op does to the register, with the result it returned.
#[derive(Clone, Copy, Debug)]
pub(super) enum Input {
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
pub(super) fn step(state: State, input: Input) -> Option<State> {
    match input {
        Input::Read(v) => (state == v).then_some(state),
        Input::Write(v) => Some(Some(v)),
        Input::Cas { from, to } => (state == Some(from)).then_some(Some(to)),
        Input::CasUnknown { from, to } => Some(if state == Some(from) { Some(to) } else { state }),
    }
}

/// One op as the search sees it.
pub(super) struct Entry<'a> {
    pub(super) input: Input,
    pub(super) call_ns: u64,
    /// `None` for +∞ (indeterminate).
    pub(super) return_ns: Option<u64>,
    pub(super) source: &'a PairedOp,
}

pub(super) fn entries<'a>(ops: &[&'a PairedOp]) -> Result<Vec<Entry<'a>>, HistoryError> {
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
pub(super) fn reduce_indeterminate(mut entries: Vec<Entry<'_>>) -> Vec<Entry<'_>> {
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
