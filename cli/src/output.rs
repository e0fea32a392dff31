//! How a command prints its result: text for people (the default) or, with
//! `-o json`, JSON for scripts. The JSON shapes are documented in
//! docs/cli.md and tested there and in `node/tests/cli.rs`; a key once
//! documented is not renamed or removed.

use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

/// The output formats of `-o/--output`.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Lines and tables for people.
    #[default]
    Text,
    /// JSON: one document per result, or one JSON object per line (JSON
    /// Lines) for commands that report as they go (`watch`, `elect`).
    Json,
}

/// The `-o/--output` flag every scriptable command takes.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct OutputArg {
    /// Output format: text, or json (documented in docs/cli.md).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

impl OutputArg {
    /// Whether JSON was asked for.
    pub fn json(self) -> bool {
        self.output == Format::Json
    }
}

/// Prints one JSON value on one line of stdout.
pub fn print_line(value: &Value) {
    println!("{value}");
}

/// Prints one JSON value on one line of stderr.
pub fn eprint_line(value: &Value) {
    eprintln!("{value}");
}

/// A stored value as JSON fields: `"value"` holds the text when the bytes
/// are UTF-8; otherwise it is `null` and `"value_hex"` holds the bytes in
/// lowercase hex, so no byte is lost or altered.
pub fn value_fields(bytes: &[u8], into: &mut Map<String, Value>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            into.insert("value".into(), Value::String(text.to_owned()));
        }
        Err(_) => {
            into.insert("value".into(), Value::Null);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            into.insert("value_hex".into(), Value::String(hex));
        }
    }
}

/// A KV entry as `{"key", "value"[, "value_hex"], "create_revision",
/// "mod_revision", "version"}`.
pub fn kv_entry(key: &str, kv: &driftlock_proto::KvView) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), json!(key));
    value_fields(&kv.value, &mut m);
    m.insert("create_revision".into(), json!(kv.create_revision));
    m.insert("mod_revision".into(), json!(kv.mod_revision));
    m.insert("version".into(), json!(kv.version));
    Value::Object(m)
}

/// A lower-case name of a `Debug` enum value (`Leader` → `leader`).
pub fn lower<T: std::fmt::Debug>(v: &T) -> String {
    format!("{v:?}").to_lowercase()
}

/// Exit codes, as `--help` shows them for every command but `lock`.
pub const EXIT_CODES: &str = "Exit codes: 0 success; 1 failure (the reason on stderr, prefixed \
with `driftlock:`); 2 bad command line (from the argument parser).";

/// Exit code of `kv put|cas|del --fence` when the cluster refuses the
/// fence (a stale token, a grant not held now or not by the lock's
/// session): distinct from other failures, so a script can tell "I am no
/// longer the holder" from "the write failed".
pub const FENCE_REFUSED_EXIT: u8 = 3;

/// Exit codes of `driftlock kv`.
pub const KV_EXIT_CODES: &str = "Exit codes: 0 success; 1 failure (the reason on stderr, prefixed \
with `driftlock:`); 2 bad command line (from the argument parser); 3 a fenced write (--fence) \
refused by the cluster because the fence is stale or not held by the lock's session (nothing was \
written).";

/// Exit codes of `driftlock lock`.
pub const LOCK_EXIT_CODES: &str = "Exit codes: the command's own exit code, or 128 + N when it died \
of signal N; 1 when the lock was not taken or the session was lost while the command ran (the \
command is then killed); 130 when interrupted with Ctrl-C; 2 bad command line.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_stay_text_and_other_bytes_become_hex() {
        let mut m = Map::new();
        value_fields(b"active", &mut m);
        assert_eq!(Value::Object(m), json!({"value": "active"}));
        let mut m = Map::new();
        value_fields(&[0xff, 0x00, 0x41], &mut m);
        assert_eq!(Value::Object(m), json!({"value": null, "value_hex": "ff0041"}));
    }

    #[test]
    fn a_kv_entry_has_its_revisions() {
        let kv = driftlock_proto::KvView {
            value: b"v".to_vec(),
            create_revision: 3,
            mod_revision: 9,
            version: 2,
        };
        assert_eq!(
            kv_entry("a/b", &kv),
            json!({"key": "a/b", "value": "v", "create_revision": 3, "mod_revision": 9, "version": 2})
        );
    }
}
