//! `driftlock status`: every node's role, indexes, lag, drift, health and
//! the revision of the replicated configuration it applies, and optionally how one session's lease was computed.

use std::time::Duration;

use clap::Args;
use driftlock_proto::{Consistency, Query, QueryResult, Role};

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

/// Prints a session's lease: base, each factor and the result.
async fn session_status(endpoints: &Endpoints, id: u64) -> CmdResult {
    let client = connect(endpoints).await?;
    let reply = client
        .read(Query::Session { session: id }, Consistency::Linearizable)
        .await
        .map_err(|e| e.to_string())?;
    let view = match reply.result {
        QueryResult::Session(Some(v)) => v,
        QueryResult::Session(None) => return Err(format!("session {id} does not exist")),
        other => return Err(format!("unexpected answer {other:?}")),
    };
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
