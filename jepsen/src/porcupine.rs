//! Export of the register workload to the format of Porcupine, the Go
//! linearizability checker (github.com/anishathalye/porcupine), so a run's
//! register history can be cross-checked outside this crate: one
//! `porcupine-<key>.json` per key, each a JSON array of its `Operation`
//! struct. The checker of this crate is [`crate::linearizability`]; this
//! file only translates.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::history::{Completion, Function, HistoryError, PairedOp, Value};

/// One operation in Porcupine's format (its Go `Operation` struct:
/// `ClientId`, `Input`, `Call`, `Output`, `Return`; times in nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PorcupineOperation {
    /// The history's process id of the operation.
    #[serde(rename = "ClientId")]
    pub client_id: u64,
    /// What was asked.
    #[serde(rename = "Input")]
    pub input: PorcupineInput,
    /// Invocation time, ns.
    #[serde(rename = "Call")]
    pub call_ns: i64,
    /// What came back.
    #[serde(rename = "Output")]
    pub output: PorcupineOutput,
    /// Completion time, ns; for an `info` op, one past the end of the
    /// history (standing for +∞).
    #[serde(rename = "Return")]
    pub return_ns: i64,
}

/// A register operation's input in the Porcupine export:
/// `{"op":"read"}`, `{"op":"write","value":3}`, `{"op":"cas","from":3,"to":4}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PorcupineInput {
    /// `"read"`, `"write"` or `"cas"`.
    pub op: String,
    /// Value written (writes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// Value the cas expected (cas only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Cas new value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// A register operation's output in the Porcupine export. Reads give
/// `{"value":v}` (`null` for absent); writes and cas give `{"ok":true}`; an
/// indeterminate write or cas gives `{"unknown":true}`, which the Go model
/// must accept with either outcome (a cas needs a nondeterministic model).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PorcupineOutput {
    /// Value read (reads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Option<u64>>,
    /// The write or cas took effect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ok: bool,
    /// The outcome is unknown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
}

fn ns_i64(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// The register workload in Porcupine's format, per key. `Fail` ops are
/// left out (they did not happen), as are `info` reads (they constrain
/// nothing); `info` writes and cas get `Return` one past the last time of
/// the history. Operations are in invocation order.
pub fn porcupine_operations(pairs: &[PairedOp]) -> Result<BTreeMap<String, Vec<PorcupineOperation>>, HistoryError> {
    let end_ns = pairs
        .iter()
        .map(|p| p.complete_ns.unwrap_or(p.invoke_ns))
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let mut out: BTreeMap<String, Vec<PorcupineOperation>> = BTreeMap::new();
    for p in pairs {
        let Some(key) = p.f.register_key() else { continue };
        if p.completion == Completion::Fail {
            continue;
        }
        let info = p.completion == Completion::Info;
        let input = match &p.f {
            Function::Read { .. } => {
                if info {
                    continue;
                }
                PorcupineInput {
                    op: "read".into(),
                    value: None,
                    from: None,
                    to: None,
                }
            }
            Function::Write { value, .. } => PorcupineInput {
                op: "write".into(),
                value: Some(*value),
                from: None,
                to: None,
            },
            Function::Cas { from, to, .. } => PorcupineInput {
                op: "cas".into(),
                value: None,
                from: Some(*from),
                to: Some(*to),
            },
            _ => continue,
        };
        let output = if info {
            PorcupineOutput {
                value: None,
                ok: false,
                unknown: true,
            }
        } else if let Function::Read { .. } = p.f {
            let Value::Register(v) = p.value else {
                return Err(HistoryError::malformed(
                    p.index(),
                    "read completed without a Register value",
                ));
            };
            PorcupineOutput {
                value: Some(v),
                ok: false,
                unknown: false,
            }
        } else {
            PorcupineOutput {
                value: None,
                ok: true,
                unknown: false,
            }
        };
        let return_ns = if info { end_ns } else { p.complete_ns.unwrap_or(end_ns) };
        out.entry(key.to_string()).or_default().push(PorcupineOperation {
            client_id: p.process,
            input,
            call_ns: ns_i64(p.invoke_ns),
            output,
            return_ns: ns_i64(return_ns),
        });
    }
    Ok(out)
}

/// A file-name-safe form of a key: characters other than ASCII letters,
/// digits, `-`, `_` and `.` become `_`.
pub fn sanitize_key(key: &str) -> String {
    let s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Writes `porcupine-<key>.json` (a JSON array of [`PorcupineOperation`])
/// into `dir` for every register key; keys that sanitize to the same name
/// get a numeric suffix. Returns the key and path of each file written.
pub fn export_porcupine(pairs: &[PairedOp], dir: &Path) -> Result<Vec<(String, PathBuf)>, HistoryError> {
    let per_key = porcupine_operations(pairs)?;
    let mut written = Vec::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    for (key, ops) in per_key {
        let base = sanitize_key(&key);
        let mut name = format!("porcupine-{base}.json");
        let mut n = 0u64;
        while used.contains(&name) {
            n += 1;
            name = format!("porcupine-{base}-{n}.json");
        }
        used.insert(name.clone());
        let path = dir.join(name);
        let json = serde_json::to_vec(&ops).map_err(|source| HistoryError::Encode {
            what: format!("key {key:?}"),
            source,
        })?;
        fs::write(&path, json).map_err(|e| HistoryError::io(&path, e))?;
        written.push((key, path));
    }
    Ok(written)
}
