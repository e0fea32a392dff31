//! `driftlock status`: every node's role, indexes, lag, drift, health and
//! the revision of the replicated configuration it applies, and optionally how one session's lease was computed.

use std::time::Duration;

use clap::Args;
use driftlock_proto::{Consistency, Query, QueryResult, Role};

use driftlock_proto::{NodeStatus, SessionView};
use serde_json::{json, Value};

use crate::output::{self, OutputArg};
use crate::{connect, CmdResult, Endpoints};

/// `driftlock status [--session ID]`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The cluster to talk to.
    #[command(flatten)]
    endpoints: Endpoints,
    /// Also show one session: its validity and how its lease was computed.
    #[arg(long)]
    session: Option<u64>,
    /// Output format.
    #[command(flatten)]
    out: OutputArg,
}

/// `driftlock status`: one row per node, and optionally one session.
pub(crate) async fn status(args: StatusArgs) -> CmdResult {
    let endpoints = args.endpoints;
    let security = endpoints.security()?;
    let mut rows = Vec::new();
    for ep in &endpoints.endpoints {
        rows.push((
            ep.clone(),
            driftlock_proto::status(ep, Duration::from_secs(2), &security).await,
        ));
    }
    let leader_last = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter(|s| s.role == Role::Leader)
        .map(|s| s.last_log_index)
        .max();
    if args.out.json() {
        let session = match args.session {
            Some(id) => Some(session_view(&endpoints, id).await?),
            None => None,
        };
        output::print_line(&status_json(&rows, leader_last, session.as_ref()));
        if !rows.iter().any(|(_, r)| r.is_ok()) {
            return Err("no node answered".into());
        }
        return Ok(());
    }
    println!(
        "{:<4} {:<22} {:<9} {:>6} {:>10} {:>10} {:>6} {:>9} {:>10} {:>8} {:>18} {:>5} {:<9} {:>7}",
        "ID",
        "ADDRESS",
        "ROLE",
        "TERM",
        "LAST_LOG",
        "APPLIED",
        "LAG",
        "SESSIONS",
        "HELD_LOCKS",
        "RHO_PPM",
        "DRIFT_PPM(±σ)",
        "NHI",
        "TIER",
        "CFG_REV"
    );
    let mut reachable = 0;
    for (ep, r) in &rows {
        match r {
            Ok(s) => {
                reachable += 1;
                let lag = leader_last.map_or("?".to_owned(), |l| l.saturating_sub(s.applied_index).to_string());
                let drift = s.clock.as_ref().map_or("-".to_owned(), |c| {
                    let alert = if c.drift_ppb.unsigned_abs() > s.stats.alert_drift_ppm.saturating_mul(1_000) {
                        " !"
                    } else {
                        ""
                    };
                    format!(
                        "{:+.1}±{:.1}{alert}",
                        c.drift_ppb as f64 / 1000.0,
                        c.drift_sigma_ppb as f64 / 1000.0
                    )
                });
                println!(
                    "{:<4} {:<22} {:<9} {:>6} {:>10} {:>10} {:>6} {:>9} {:>10} {:>8} {:>18} {:>5} {:<9} {:>7}",
                    s.id,
                    s.client_addr,
                    format!("{:?}", s.role).to_lowercase(),
                    s.term,
                    s.last_log_index,
                    s.applied_index,
                    lag,
                    s.stats.sessions,
                    s.stats.held_locks,
                    s.stats.cluster_rho_ppm,
                    drift,
                    s.nhi_permille.map_or("-".to_owned(), |n| n.to_string()),
                    s.health_tier
                        .map_or("-".to_owned(), |t| format!("{t:?}").to_lowercase()),
                    s.config_revision,
                );
            }
            Err(e) => println!("{:<4} {:<22} {:<9} {e}", "?", ep, "down"),
        }
    }
    if leader_last.is_none() {
        println!("no leader among the reachable nodes");
    }
    for (_, r) in &rows {
        let Ok(s) = r else { continue };
        for warning in &s.warnings {
            println!("warning: node {}: {warning}", s.id);
        }
    }
    for (_, r) in &rows {
        let Ok(s) = r else { continue };
        if let Some(c) = &s.clock {
            if c.drift_ppb.unsigned_abs() > s.stats.alert_drift_ppm.saturating_mul(1_000) {
                println!(
                    "clock alert: node {} drifts {:+.1} ppm (±{:.1}), beyond alert_drift_ppm {}; it will not lead",
                    s.id,
                    c.drift_ppb as f64 / 1000.0,
                    c.drift_sigma_ppb as f64 / 1000.0,
                    s.stats.alert_drift_ppm
                );
            }
        }
    }
    if let Some(s) = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .find(|s| s.role == Role::Leader && s.stats.skewed_sessions > 0)
    {
        println!(
            "clock skew: {} session(s) measured hold times off cluster time; their drift bounds are widened",
            s.stats.skewed_sessions
        );
    }
    if let Some(leader) = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .find(|s| s.role == Role::Leader)
    {
        if !leader.hot_locks.is_empty() {
            let hot: Vec<String> = leader
                .hot_locks
                .iter()
                .map(|h| format!("{} ({:.1}/s)", h.name, h.rate_milli_per_s as f64 / 1000.0))
                .collect();
            println!("hot locks: {}", hot.join(", "));
        }
    }
    if reachable == 0 {
        return Err("no node answered".into());
    }
    if let Some(id) = args.session {
        session_status(&endpoints, id).await?;
    }
    Ok(())
}

/// One session as a linearizable read sees it.
async fn session_view(endpoints: &Endpoints, id: u64) -> Result<SessionView, String> {
    let client = connect(endpoints).await?;
    let reply = client
        .read(Query::Session { session: id }, Consistency::Linearizable)
        .await
        .map_err(|e| e.to_string())?;
    match reply.result {
        QueryResult::Session(Some(v)) => Ok(v),
        QueryResult::Session(None) => Err(format!("session {id} does not exist")),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// `status -o json`: the document docs/cli.md describes.
fn status_json(
    rows: &[(String, Result<NodeStatus, driftlock_proto::RpcError>)],
    leader_last: Option<u64>,
    session: Option<&SessionView>,
) -> Value {
    let nodes: Vec<Value> = rows
        .iter()
        .map(|(ep, r)| match r {
            Ok(s) => {
                let (drift_ppm, sigma_ppm, alert) = match &s.clock {
                    Some(c) => (
                        json!(c.drift_ppb as f64 / 1000.0),
                        json!(c.drift_sigma_ppb as f64 / 1000.0),
                        c.drift_ppb.unsigned_abs() > s.stats.alert_drift_ppm.saturating_mul(1_000),
                    ),
                    None => (Value::Null, Value::Null, false),
                };
                json!({
                    "address": ep,
                    "reachable": true,
                    "id": s.id,
                    "role": output::lower(&s.role),
                    "term": s.term,
                    "leader_id": s.leader.as_ref().map(|(id, _)| *id),
                    "last_log_index": s.last_log_index,
                    "applied_index": s.applied_index,
                    "lag": leader_last.map(|l| l.saturating_sub(s.applied_index)),
                    "sessions": s.stats.sessions,
                    "held_locks": s.stats.held_locks,
                    "keys": s.stats.keys,
                    "cluster_rho_ppm": s.stats.cluster_rho_ppm,
                    "drift_ppm": drift_ppm,
                    "drift_sigma_ppm": sigma_ppm,
                    "clock_alert": alert,
                    "nhi_permille": s.nhi_permille,
                    "health_tier": s.health_tier.map(|t| output::lower(&t)),
                    "config_revision": s.config_revision,
                    "skewed_sessions": s.stats.skewed_sessions,
                    "hot_locks": s.hot_locks.iter().map(|h| json!({
                        "name": h.name,
                        "rate_per_s": h.rate_milli_per_s as f64 / 1000.0,
                    })).collect::<Vec<_>>(),
                    "warnings": s.warnings,
                })
            }
            Err(e) => json!({"address": ep, "reachable": false, "error": e.to_string()}),
        })
        .collect();
    let leader = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .find(|s| s.role == Role::Leader)
        .map(|s| s.id);
    let mut doc = json!({"nodes": nodes, "leader_id": leader});
    if let (Some(v), Some(obj)) = (session, doc.as_object_mut()) {
        obj.insert("session".into(), session_json(v));
    }
    doc
}

/// A session's lease in `status --session ID -o json`.
fn session_json(view: &SessionView) -> Value {
    let l = &view.lease;
    json!({
        "id": view.session,
        "client_name": view.client_name,
        "remaining_ms": view.remaining_us / 1_000,
        "lease": {
            "base_ms": l.base_us / 1_000,
            "nhi_factor_permille": l.nhi_factor_permille,
            "nhi_permille": l.nhi_permille,
            "health_tier": l.tier.map(|t| output::lower(&t)),
            "stability_factor_permille": l.stability_factor_permille,
            "load_factor_permille": l.load_factor_permille,
            "suspicion_scale_permille": l.suspicion_scale_permille,
            "validity_ms": l.validity_us / 1_000,
            "clamped": l.clamped,
        },
        "client_rho_ppm": view.client_rho_ppm,
        "suspicion_permille": view.suspicion_permille,
        "holds": view.held,
    })
}

/// Prints a session's lease: base, each factor and the result.
async fn session_status(endpoints: &Endpoints, id: u64) -> CmdResult {
    let view = session_view(endpoints, id).await?;
    let l = &view.lease;
    println!();
    println!(
        "session {id} ({}): {} ms of validity left",
        view.client_name,
        view.remaining_us / 1_000
    );
    println!(
        "  lease: base {} ms × (1 {:+}‰ health{} {:+}‰ stability {:+}‰ load) × {}‰ suspicion = {} ms{}",
        l.base_us / 1_000,
        l.nhi_factor_permille,
        match (l.nhi_permille, l.tier) {
            (Some(n), Some(t)) => format!(" [NHI {n}, {}]", format!("{t:?}").to_lowercase()),
            _ => " [no report]".to_owned(),
        },
        l.stability_factor_permille,
        l.load_factor_permille,
        l.suspicion_scale_permille,
        l.validity_us / 1_000,
        if l.clamped { " (clamped)" } else { "" },
    );
    println!("  client drift bound: {} ppm", view.client_rho_ppm);
    if let Some(score) = view.suspicion_permille {
        println!("  suspected: score {score}‰");
    }
    if !view.held.is_empty() {
        println!("  holds: {}", view.held.join(", "));
    }
    Ok(())
}
