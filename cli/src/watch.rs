//! `driftlock watch PREFIX`: print KV changes under a prefix until Ctrl-C.

use std::time::Duration;

use clap::Args;
use driftlock_proto::{Event, EventFilter};

use serde_json::json;

use crate::output::{self, OutputArg};
use crate::{CmdResult, Endpoints};

/// `driftlock watch PREFIX`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The cluster to talk to.
    #[command(flatten)]
    endpoints: Endpoints,
    /// Print changes of keys starting with this (empty = every key).
    #[arg(default_value = "")]
    prefix: String,
    /// Output format: json prints one JSON object per change (JSON Lines).
    #[command(flatten)]
    out: OutputArg,
}

/// `driftlock watch PREFIX`: prints KV changes until Ctrl-C.
pub(crate) async fn watch(args: WatchArgs) -> CmdResult {
    let filter = EventFilter {
        key_prefix: Some(args.prefix.clone()),
        ..Default::default()
    };
    let mut after = 0u64;
    let mut endpoint = 0usize;
    let mut started = false;
    let security = args.endpoints.security()?;
    loop {
        let ep = &args.endpoints.endpoints[endpoint % args.endpoints.endpoints.len()];
        let client = match driftlock_proto::connect(ep, Duration::from_secs(2), &security).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("driftlock watch: {e}; trying the next node");
                endpoint += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if !started {
            // Start from now: the newest revision this node has.
            after = client
                .status(driftlock_proto::context(Duration::from_secs(2)))
                .await
                .map(|s| s.applied_revision)
                .unwrap_or(0);
            started = true;
            eprintln!("watching '{}' from revision {after} (Ctrl-C stops)", args.prefix);
        }
        loop {
            let call = client.observe(
                driftlock_proto::context(Duration::from_secs(15)),
                after,
                filter.clone(),
                10_000,
            );
            let batch = tokio::select! {
                r = call => r,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match batch {
                Ok(Ok(batch)) => {
                    if batch.truncated {
                        if args.out.json() {
                            output::print_line(&json!({"missed": true, "after_index": after}));
                        }
                        eprintln!("driftlock watch: some changes were missed (node buffer overflow or snapshot)");
                    }
                    for (index, e) in batch.events {
                        if let Event::KvChanged { key, revision } = e {
                            let op = if revision == 0 { "delete" } else { "put" };
                            if args.out.json() {
                                output::print_line(&json!({
                                    "index": index,
                                    "op": op,
                                    "key": key,
                                    "revision": revision,
                                }));
                            } else {
                                println!("{index}\t{}\t{key}", op.to_uppercase());
                            }
                        }
                    }
                    after = batch.next_after_index.max(after);
                }
                _ => {
                    endpoint += 1;
                    break;
                }
            }
        }
    }
}
