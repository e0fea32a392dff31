//! `driftlock elect`: campaign in an election and report mastership, or
//! ask the cluster for a warm handover.

use std::time::Duration;

use clap::{Args, Subcommand};
use driftlock_client::LeadershipLoss;
use driftlock_proto::AdminRequest;

use serde_json::json;

use crate::output::{self, OutputArg};
use crate::{connect, CmdResult, Endpoints};

/// `driftlock elect ELECTION --value V`, or `driftlock elect handover …`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ElectArgs {
    #[command(subcommand)]
    action: Option<ElectCmd>,
    /// The cluster to talk to.
    #[command(flatten)]
    endpoints: Endpoints,
    /// Election name, e.g. jobs/scheduler: every candidate for the role uses
    /// the same one.
    #[arg(required = true)]
    election: Option<String>,
    /// Value to proclaim as master.
    #[arg(long, required = true)]
    value: Option<String>,
    /// Session TTL (e.g. 10s, 500ms): mastership ends about this long after
    /// this process stops renewing.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// State handed to the next master if the cluster moves mastership away
    /// from this one (warm handover); this process then campaigns again.
    #[arg(long, default_value = "")]
    state: String,
    /// Output format: json prints one JSON object per change (JSON Lines).
    #[command(flatten)]
    out: OutputArg,
}

/// `driftlock elect` subcommands.
#[derive(Subcommand, Debug)]
pub enum ElectCmd {
    /// Ask the cluster to hand ELECTION's mastership over to a candidate
    /// (the healthiest one unless --to names a session).
    Handover {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Name of the election whose mastership to move.
        election: String,
        /// Session id of the candidate to hand over to (printed by its
        /// driftlock elect); default: the healthiest candidate.
        #[arg(long)]
        to: Option<u64>,
    },
}

/// Campaigns and reports mastership until Ctrl-C, then resigns; or, with
/// `handover`, asks the cluster to start a warm handover. The loss of a
/// mastership is printed the moment the library signals it; after a
/// handover away from this process it campaigns again.
pub(crate) async fn elect(args: ElectArgs) -> CmdResult {
    if let Some(ElectCmd::Handover {
        endpoints,
        election,
        to,
    }) = args.action
    {
        let client = connect(&endpoints).await?;
        client
            .admin(AdminRequest::Handover {
                election: election.clone(),
                to,
            })
            .await
            .map_err(|e| e.to_string())?;
        println!("handover of '{election}' started");
        return Ok(());
    }
    let (Some(name), Some(value)) = (args.election, args.value) else {
        return Err("elect needs ELECTION and --value".into());
    };
    let client = connect(&args.endpoints).await?;
    let session = client.open_session(args.ttl).await.map_err(|e| e.to_string())?;
    let election = session.election(&name);
    let state = args.state.into_bytes();
    election.on_handover(move || state.clone());
    let json = args.out.json();
    // One line per change: text for people, or one JSON object (docs/cli.md).
    let say = |text: String, value: serde_json::Value| {
        if json {
            output::print_line(&value);
        } else {
            println!("{text}");
        }
    };
    say(
        format!(
            "campaigning in '{name}' as session {} with value '{value}'",
            session.id()
        ),
        json!({"event": "campaigning", "election": name, "session": session.id(), "value": value}),
    );
    loop {
        let campaign = election.campaign(value.clone().into_bytes());
        let leadership = tokio::select! {
            r = campaign => r.map_err(|e| e.to_string())?,
            _ = tokio::signal::ctrl_c() => {
                let _ = session.close().await;
                return Ok(());
            }
        };
        let mut master = json!({"event": "master", "election": name, "epoch": leadership.epoch()});
        let mut text = format!("master of '{name}' at epoch {}", leadership.epoch());
        if let Some(state) = leadership.handover_state() {
            text.push_str(&format!(
                "\ntook over by warm handover with {} bytes of state: {}",
                state.len(),
                String::from_utf8_lossy(state)
            ));
            if let Some(obj) = master.as_object_mut() {
                let mut fields = serde_json::Map::new();
                output::value_fields(state, &mut fields);
                obj.insert("handover_state".into(), serde_json::Value::Object(fields));
            }
        }
        say(text, master);
        // Master exactly until the loss signal: it is printed the moment it
        // fires, and "master" is not reported again until a new campaign
        // wins.
        tokio::select! {
            why = leadership.lost() => {
                say(
                    format!("no longer master of '{name}' (epoch {}): {why}", leadership.epoch()),
                    json!({
                        "event": "lost",
                        "election": name,
                        "epoch": leadership.epoch(),
                        "cause": loss_cause(&why),
                        "reason": why.to_string(),
                    }),
                );
                match why {
                    LeadershipLoss::SessionEnded | LeadershipLoss::ValidityEnded => {
                        let _ = session.close().await;
                        return Err("session expired: no longer master".into());
                    }
                    // Handed over (the session left the election) or
                    // superseded: join the queue again, as a new candidate.
                    _ => say(
                        format!("campaigning again in '{name}'"),
                        json!({"event": "campaigning", "election": name, "session": session.id(), "value": value}),
                    ),
                }
            }
            _ = tokio::signal::ctrl_c() => {
                let _ = election.resign().await;
                let _ = session.close().await;
                say("resigned".into(), json!({"event": "resigned", "election": name}));
                return Ok(());
            }
        }
    }
}

/// A stable name for why a mastership ended (`-o json`'s `cause`).
fn loss_cause(why: &LeadershipLoss) -> &'static str {
    match why {
        LeadershipLoss::HandedOver { .. } => "handed_over",
        LeadershipLoss::Resigned => "resigned",
        LeadershipLoss::SessionEnded => "session_ended",
        LeadershipLoss::ValidityEnded => "validity_ended",
        LeadershipLoss::Superseded { .. } => "superseded",
    }
}
