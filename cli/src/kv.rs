//! `driftlock kv get|put|cas|del|list`: the KV store without a session,
//! and fenced writes (`put|cas|del --fence NAME:TOKEN`) relayed through the
//! session of the enclosing `driftlock lock` (see [`crate::fence`]).

use std::process::ExitCode;

use clap::Subcommand;
use driftlock_proto::Fence;

use serde_json::json;

use crate::fence::{self, FenceReply, FenceRequest};
use crate::output::{self, OutputArg};
use crate::{connect, report, Endpoints};

/// The `driftlock kv` subcommands: linearizable reads, and writes outside any
/// session, which are not deduplicated and so are retried only when they
/// surely did not arrive. With `--fence`, `put`, `cas` and `del` are instead
/// relayed to the enclosing `driftlock lock` and made, deduplicated and
/// fenced, in its session.
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
    #[command(mut_arg("endpoints", |a| a.required(false).required_unless_present("fence")), after_help = output::KV_EXIT_CODES)]
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
        /// Write under this lock grant, from a command run by `driftlock lock
        /// NAME -- CMD`: NAME:TOKEN, usually NAME:$DRIFTLOCK_FENCING_TOKEN. The
        /// write goes through the lock's own session and the cluster applies
        /// it only while TOKEN is NAME's newest grant and held by that
        /// session (otherwise exit 3). No cluster connection of its own:
        /// --endpoints and the certificates are not needed.
        #[arg(long, value_name = "NAME:TOKEN", value_parser = fence::parse_fence)]
        fence: Option<Fence>,
    },
    /// Set a key if its revision is EXPECTED (0: only if absent).
    #[command(mut_arg("endpoints", |a| a.required(false).required_unless_present("fence")), after_help = output::KV_EXIT_CODES)]
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
        /// Write under this lock grant, from a command run by `driftlock lock
        /// NAME -- CMD`: NAME:TOKEN, usually NAME:$DRIFTLOCK_FENCING_TOKEN. The
        /// write goes through the lock's own session and the cluster applies
        /// it only while TOKEN is NAME's newest grant and held by that
        /// session (otherwise exit 3). No cluster connection of its own:
        /// --endpoints and the certificates are not needed.
        #[arg(long, value_name = "NAME:TOKEN", value_parser = fence::parse_fence)]
        fence: Option<Fence>,
    },
    /// Delete a key.
    #[command(mut_arg("endpoints", |a| a.required(false).required_unless_present("fence")), after_help = output::KV_EXIT_CODES)]
    Del {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Output format.
        #[command(flatten)]
        out: OutputArg,
        /// Key to delete; a missing key is an error.
        key: String,
        /// Write under this lock grant, from a command run by `driftlock lock
        /// NAME -- CMD`: NAME:TOKEN, usually NAME:$DRIFTLOCK_FENCING_TOKEN. The
        /// write goes through the lock's own session and the cluster applies
        /// it only while TOKEN is NAME's newest grant and held by that
        /// session (otherwise exit 3). No cluster connection of its own:
        /// --endpoints and the certificates are not needed.
        #[arg(long, value_name = "NAME:TOKEN", value_parser = fence::parse_fence)]
        fence: Option<Fence>,
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

/// Why a `driftlock kv` command failed; the two kinds exit differently.
enum KvFailure {
    /// The cluster refused a fenced write's fence (exit
    /// [`output::FENCE_REFUSED_EXIT`]).
    FenceRefused(String),
    /// Any other failure (exit 1).
    Other(String),
}

impl From<String> for KvFailure {
    fn from(message: String) -> Self {
        KvFailure::Other(message)
    }
}

/// Runs one `driftlock kv` subcommand, prints its result on stdout and
/// returns the exit code (docs/cli.md, "Exit codes").
pub(crate) async fn kv(cmd: KvCmd) -> ExitCode {
    match run(cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(KvFailure::FenceRefused(message)) => {
            eprintln!("driftlock: {message}");
            ExitCode::from(output::FENCE_REFUSED_EXIT)
        }
        Err(KvFailure::Other(message)) => report(Err(message)),
    }
}

async fn run(cmd: KvCmd) -> Result<(), KvFailure> {
    match cmd {
        KvCmd::Get { endpoints, out, key } => {
            let client = connect(&endpoints).await?;
            match client.kv_get(&key).await.map_err(|e| e.to_string())? {
                Some(v) if out.json() => output::print_line(&output::kv_entry(&key, &v)),
                Some(v) => println!("{}", String::from_utf8_lossy(&v.value)),
                None => return Err(format!("key '{key}' not found").into()),
            }
        }
        KvCmd::Put {
            out,
            key,
            value,
            fence: Some(fence),
            ..
        } => {
            let rev = fenced(FenceRequest::Put {
                key: key.clone(),
                value,
                fence,
            })
            .await?;
            print_revision(out, &key, rev);
        }
        KvCmd::Put {
            endpoints,
            out,
            key,
            value,
            fence: None,
        } => {
            let rev = connect(&endpoints)
                .await?
                .kv_put(&key, value.into_bytes())
                .await
                .map_err(|e| e.to_string())?;
            print_revision(out, &key, rev);
        }
        KvCmd::Cas {
            out,
            key,
            expected,
            value,
            fence: Some(fence),
            ..
        } => {
            let rev = fenced(FenceRequest::Cas {
                key: key.clone(),
                expected,
                value,
                fence,
            })
            .await?;
            print_revision(out, &key, rev);
        }
        KvCmd::Cas {
            endpoints,
            out,
            key,
            expected,
            value,
            fence: None,
        } => {
            let client = connect(&endpoints).await?;
            let rev = client
                .kv_cas(&key, expected, value.into_bytes())
                .await
                .map_err(|e| e.to_string())?;
            print_revision(out, &key, rev);
        }
        KvCmd::Del {
            endpoints,
            out,
            key,
            fence,
        } => {
            match fence {
                Some(fence) => {
                    fenced(FenceRequest::Del {
                        key: key.clone(),
                        fence,
                    })
                    .await?;
                }
                None => {
                    connect(&endpoints)
                        .await?
                        .kv_delete(&key)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
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

/// Has the enclosing `driftlock lock` perform a fenced write through its
/// session; the write's revision.
async fn fenced(request: FenceRequest) -> Result<u64, KvFailure> {
    let (lock, token) = match &request {
        FenceRequest::Put { fence, .. } | FenceRequest::Cas { fence, .. } | FenceRequest::Del { fence, .. } => {
            (fence.lock.clone(), fence.token)
        }
    };
    match fence::send(&request).await? {
        FenceReply::Written { revision } => Ok(revision),
        FenceReply::FenceRefused { message } => Err(KvFailure::FenceRefused(format!(
            "the cluster refused the fence {lock}:{token}, nothing was written: {message}"
        ))),
        FenceReply::Failed { message } => Err(KvFailure::Other(message)),
    }
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
