//! `driftlock kv get|put|cas|del|list`: the KV store without a session.

use clap::Subcommand;

use serde_json::json;

use crate::output::{self, OutputArg};
use crate::{connect, CmdResult, Endpoints};

/// The `driftlock kv` subcommands: linearizable reads, and writes outside any
/// session, which are not deduplicated and so are retried only when they
/// surely did not arrive.
#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Print a key's value.
    Get {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Output format.
        #[command(flatten)]
        out: OutputArg,
        /// Key whose value to print (as text); a missing key is an error.
        key: String,
    },
    /// Set a key.
    Put {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Output format.
        #[command(flatten)]
        out: OutputArg,
        /// Key to set, e.g. config/mode.
        key: String,
        /// Value to store (the bytes of this text), e.g. active.
        value: String,
    },
    /// Set a key if its revision is EXPECTED (0: only if absent).
    Cas {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Output format.
        #[command(flatten)]
        out: OutputArg,
        /// Key to set.
        key: String,
        /// The key's current revision, as printed by put, cas or list; 0 = the
        /// key must not exist yet.
        expected: u64,
        /// Value to store if the revision matches.
        value: String,
    },
    /// Delete a key.
    Del {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Output format.
        #[command(flatten)]
        out: OutputArg,
        /// Key to delete; a missing key is an error.
        key: String,
    },
    /// List keys under a prefix.
    List {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Output format.
        #[command(flatten)]
        out: OutputArg,
        /// List keys starting with this (empty = all), at most 10000, one per
        /// line: KEY, VALUE, (revision N), tab-separated.
        #[arg(default_value = "")]
        prefix: String,
    },
}

/// Runs one `driftlock kv` subcommand and prints its result on stdout.
pub(crate) async fn kv(cmd: KvCmd) -> CmdResult {
    match cmd {
        KvCmd::Get { endpoints, out, key } => {
            let client = connect(&endpoints).await?;
            match client.kv_get(&key).await.map_err(|e| e.to_string())? {
                Some(v) if out.json() => output::print_line(&output::kv_entry(&key, &v)),
                Some(v) => println!("{}", String::from_utf8_lossy(&v.value)),
                None => return Err(format!("key '{key}' not found")),
            }
        }
        KvCmd::Put {
            endpoints,
            out,
            key,
            value,
        } => {
            let rev = connect(&endpoints)
                .await?
                .kv_put(&key, value.into_bytes())
                .await
                .map_err(|e| e.to_string())?;
            print_revision(out, &key, rev);
        }
        KvCmd::Cas {
            endpoints,
            out,
            key,
            expected,
            value,
        } => {
            let client = connect(&endpoints).await?;
            let rev = client
                .kv_cas(&key, expected, value.into_bytes())
                .await
                .map_err(|e| e.to_string())?;
            print_revision(out, &key, rev);
        }
        KvCmd::Del { endpoints, out, key } => {
            connect(&endpoints)
                .await?
                .kv_delete(&key)
                .await
                .map_err(|e| e.to_string())?;
            if out.json() {
                output::print_line(&json!({"key": key, "deleted": true}));
            } else {
                println!("deleted");
            }
        }
        KvCmd::List { endpoints, out, prefix } => {
            let entries = connect(&endpoints)
                .await?
                .kv_range(&prefix, LIST_MAX_KEYS)
                .await
                .map_err(|e| e.to_string())?;
            let cut = entries.len() >= LIST_MAX_KEYS as usize;
            if out.json() {
                let list: Vec<serde_json::Value> = entries.iter().map(|(k, v)| output::kv_entry(k, v)).collect();
                output::print_line(&json!({"prefix": prefix, "entries": list, "truncated": cut}));
                return Ok(());
            }
            for (k, v) in entries {
                println!(
                    "{k}\t{}\t(revision {})",
                    String::from_utf8_lossy(&v.value),
                    v.mod_revision
                );
            }
            if cut {
                eprintln!("driftlock kv list: stopped after {LIST_MAX_KEYS} keys; narrow the prefix to see the rest");
            }
        }
    }
    Ok(())
}

/// What `put` and `cas` print: the key's new revision.
fn print_revision(out: OutputArg, key: &str, revision: u64) {
    if out.json() {
        output::print_line(&json!({"key": key, "revision": revision}));
    } else {
        println!("revision {revision}");
    }
}

/// Most keys `kv list` prints.
const LIST_MAX_KEYS: u32 = 10_000;
