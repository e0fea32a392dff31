//! Warm handover (docs/design.md "Elections and warm handover"), the leader's side.
//!
//! The state machine owns the handover's safety: it checks that `from` is
//! the master at `epoch`, that `to` is a live candidate, the chunk order and
//! checksums, that the candidate acknowledged before the old master's
//! `Relinquish`, and it aborts a handover whose deadline passes. The
//! mastership moves only in the old master's own `Relinquish`, which its
//! client library sends after it stopped acting as master: the leader never
//! completes a handover (its former `LeaseTransfer` is retired). This
//! module only decides *when* to start one and *whom* to pick:
//!
//! - **Triggers** (leader only, with `[handover] auto`): the master's committed
//!   health tier is Warning or Critical; or its session is suspected by the
//!   failure predictor while less than a third of its validity is left.
//!   At most one automatic handover per election per
//!   `[handover] min_interval_ms` (hysteresis after an abort). An operator can
//!   start one at any time (`driftlock elect handover`).
//! - **Candidate selection** from committed inputs: highest health index,
//!   then lowest load, then lowest RTT to the cluster, ties by campaign
//!   order. Automatic handovers only go to candidates that reported health
//!   in the Good or Excellent tier and whose clock is not flagged (a drift
//!   bound widened beyond the default); an operator's request may go to any
//!   live candidate.
//! - **Completion** is the old master's: after `HandoverAcked` its library
//!   fires its `Leadership` loss signal and commits `Relinquish`; one that
//!   never does (cut off, dead) keeps its mastership until the handover's
//!   deadline aborts it, and then until its session ends (docs/design.md
//!   "Elections and warm handover").
//! - **The cluster's own leader**: when this node's committed tier has been
//!   Critical, or its committed clock drift beyond `time.alert_drift_ppm`,
//!   for [`CRITICAL_STREAK`] consecutive scans, it moves Raft leadership to
//!   the healthiest voter whose log has caught up (never a lagging one) and
//!   whose clock is not flagged, at most once per `[handover] min_interval_ms`.
//!
//! The scan walks every election once per [`SCAN_INTERVAL`]; with very many
//! elections it is the cost to watch (it reads, it never writes, unless a
//! trigger fires).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_proto::health::{health_index_permille, tier_of};
use driftlock_proto::ApiError;
use driftlock_proto::{Event, HealthTier, LeaseConfig, SessionId};
use driftlock_raft_store::SmNotice;
use driftlock_state_machine::{Command, StateMachine};
use openraft::type_config::async_runtime::WatchReceiver;
use tokio::sync::broadcast::error::RecvError;

use crate::server::NodeContext;

/// How often the leader scans elections for triggers.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// Consecutive Critical scans before the leader hands Raft leadership away.
pub const CRITICAL_STREAK: u32 = 3;
/// A voter is caught up if its matched log index is within this many
/// entries of the leader's last one.
pub const CAUGHT_UP_ENTRIES: u64 = 64;
/// Page size of the election scan.
const SCAN_PAGE: usize = 1_000;

/// A candidate's ranking key: lower is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// 1000 − NHI (unknown health ranks as 1000, behind any report).
    ill_permille: u32,
    load_permille: u32,
    rtt_mean_us: u64,
    /// Position in the campaign queue.
    position: usize,
}

/// Whether selection is for an automatic trigger (strict) or an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Automatic,
    Operator,
}

/// The best candidate of `election` at cluster time `now_us`, or `None`.
fn best_candidate(sm: &StateMachine, election: &str, now_us: u64, mode: Mode) -> Option<SessionId> {
    let view = sm.election_view(election, now_us)?;
    let cfg = &sm.config().lease;
    let default_rho_ppm = sm.config().time.max_drift_ppm;
    let mut best: Option<(Rank, SessionId)> = None;
    for (position, session) in view.candidates.iter().copied().enumerate() {
        let Some(s) = sm.session_view(session, now_us) else {
            continue;
        };
        let rank = match &s.health {
            Some(h) => {
                let nhi = health_index_permille(h, cfg);
                let tier = tier_of(nhi, cfg);
                let healthy = matches!(tier, HealthTier::Excellent | HealthTier::Good);
                let clock_ok = s.client_rho_ppm <= default_rho_ppm;
                if mode == Mode::Automatic && (!healthy || !clock_ok || s.suspicion_permille.is_some()) {
                    continue;
                }
                Rank {
                    ill_permille: 1000 - nhi.min(1000),
                    load_permille: h.load_permille,
                    rtt_mean_us: h.rtt_mean_us,
                    position,
                }
            }
            None if mode == Mode::Operator => Rank {
                ill_permille: 1000,
                load_permille: 0,
                rtt_mean_us: 0,
                position,
            },
            None => continue,
        };
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((rank, session));
        }
    }
    best.map(|(_, s)| s)
}

/// Whether the master of `election` should hand over now.
fn needs_handover(sm: &StateMachine, election: &str, now_us: u64, cfg: &LeaseConfig) -> Option<(SessionId, u64)> {
    let view = sm.election_view(election, now_us)?;
    if view.handover.is_some() {
        return None;
    }
    let (master, _) = view.master?;
    let s = sm.session_view(master, now_us)?;
    let unhealthy = s.health.as_ref().is_some_and(|h| {
        matches!(
            tier_of(health_index_permille(h, cfg), cfg),
            HealthTier::Warning | HealthTier::Critical
        )
    });
    let anomalous_near_end = s.suspicion_permille.is_some() && s.remaining_us.saturating_mul(3) < s.lease.validity_us;
    (unhealthy || anomalous_near_end).then_some((master, view.epoch))
}

/// Starts a handover of `election` to `to` (or the best candidate).
///
/// # Errors
/// `NotLeader`; `InvalidRequest` when the election has no master, a
/// handover is already running, or no candidate qualifies; the state
/// machine's rejection otherwise.
pub async fn begin(ctx: &NodeContext, election: &str, to: Option<SessionId>) -> Result<SessionId, ApiError> {
    if !ctx.raft.is_leader() {
        return Err(ApiError::NotLeader {
            leader_hint: ctx.leader_hint(),
        });
    }
    let now_us = ctx.cluster_now_us();
    let plan = ctx.state.with_state(|sm| {
        let view = sm
            .election_view(election, now_us)
            .ok_or_else(|| format!("election '{election}' does not exist"))?;
        let (master, _) = view
            .master
            .ok_or_else(|| format!("election '{election}' has no master"))?;
        if view.handover.is_some() {
            return Err(format!("election '{election}' is already handing over"));
        }
        let to = match to {
            Some(t) => t,
            None => best_candidate(sm, election, now_us, Mode::Operator)
                .ok_or_else(|| format!("election '{election}' has no live candidate"))?,
        };
        Ok((master, view.epoch, to))
    });
    let (from, epoch, to) = plan.map_err(ApiError::InvalidRequest)?;
    ctx.propose(Command::HandoverBegin {
        election: election.to_owned(),
        from,
        to,
        epoch,
        ack_timeout_us: ctx.health.handover_ack_timeout_us,
    })
    .await?;
    tracing::info!(%election, from, to, epoch, "handover begun");
    Ok(to)
}

/// The leader's handover controller; runs for the life of the node and
/// acts only while this node leads.
pub async fn controller_loop(ctx: Arc<NodeContext>) {
    let mut notices = ctx.state.subscribe();
    let mut scan = tokio::time::interval(SCAN_INTERVAL);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_auto: BTreeMap<String, Instant> = BTreeMap::new();
    let mut last_transfer: Option<Instant> = None;
    let mut critical_streak = 0u32;
    loop {
        tokio::select! {
            notice = notices.recv() => match notice {
                Ok(SmNotice::Applied(applied)) => {
                    for (_, e) in &applied.events {
                        count_outcome(&ctx, e);
                    }
                }
                Ok(SmNotice::SnapshotInstalled { .. }) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = scan.tick() => {
                if !ctx.raft.is_leader() {
                    critical_streak = 0;
                    continue;
                }
                scan_elections(&ctx, &mut last_auto).await;
                leader_health(&ctx, &mut critical_streak, &mut last_transfer).await;
            }
        }
    }
}

fn count_outcome(ctx: &NodeContext, e: &Event) {
    match e {
        Event::ClockSkewDetected {
            session,
            slow_ppm,
            client_rho_ppm,
            alert,
        } => {
            if *alert {
                tracing::warn!(
                    session,
                    slow_ppm,
                    client_rho_ppm,
                    "a client's clock runs slow beyond the alert threshold: its drift bound is widened (capped)"
                );
            } else {
                tracing::warn!(
                    session,
                    slow_ppm,
                    client_rho_ppm,
                    "a client's clock runs slow: its drift bound is widened"
                );
            }
            ctx.metrics.clock.skew_detected.inc();
            return;
        }
        Event::NodeClockAlert {
            node,
            drift_ppb,
            drift_sigma_ppb,
            alert_drift_ppm,
        } => {
            tracing::warn!(
                node,
                drift_ppb,
                drift_sigma_ppb,
                alert_drift_ppm,
                "node clock drift beyond the alert threshold: it will not be chosen to lead"
            );
            ctx.metrics.clock.node_alerts.inc();
            return;
        }
        _ => {}
    }
    let outcome = match e {
        Event::HandoverBegun { .. } => "begun",
        Event::LeaseTransferred { .. } => "transferred",
        Event::HandoverAborted { .. } => "aborted",
        _ => return,
    };
    ctx.metrics
        .health
        .handovers
        .get_or_create(&crate::metrics::OutcomeLabel {
            outcome: outcome.into(),
        })
        .inc();
}

async fn scan_elections(ctx: &NodeContext, last_auto: &mut BTreeMap<String, Instant>) {
    let now = Instant::now();
    let min_interval = ctx.health.handover_min_interval;
    last_auto.retain(|_, t| now.saturating_duration_since(*t) < min_interval);
    let mut after: Option<String> = None;
    loop {
        let now_us = ctx.cluster_now_us();
        let (names, triggers) = ctx.state.with_state(|sm| {
            let names = sm.election_names(after.as_deref(), SCAN_PAGE);
            let cfg = &sm.config().lease;
            let mut triggers = Vec::new();
            for name in &names {
                if ctx.health.auto_handover && !last_auto.contains_key(name) {
                    if let Some((master, epoch)) = needs_handover(sm, name, now_us, cfg) {
                        if let Some(to) = best_candidate(sm, name, now_us, Mode::Automatic) {
                            triggers.push((name.clone(), master, epoch, to));
                        }
                    }
                }
            }
            (names, triggers)
        });
        for (name, from, epoch, to) in triggers {
            last_auto.insert(name.clone(), now);
            tracing::info!(election = %name, from, to, epoch, "master looks unhealthy: starting a warm handover");
            let r = ctx
                .propose(Command::HandoverBegin {
                    election: name.clone(),
                    from,
                    to,
                    epoch,
                    ack_timeout_us: ctx.health.handover_ack_timeout_us,
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(election = %name, error = %e, "handover not started");
            }
        }
        if names.len() < SCAN_PAGE {
            return;
        }
        after = names.last().cloned();
    }
}

/// Moves Raft leadership away from this node when its committed health has
/// been Critical, or its clock flagged, for a while.
async fn leader_health(ctx: &NodeContext, critical_streak: &mut u32, last_transfer: &mut Option<Instant>) {
    let own = crate::health::committed(ctx, ctx.id);
    if let Some((_, nhi, _)) = &own {
        ctx.metrics.health.node_health_index_permille.set(i64::from(*nhi));
    }
    let critical = own.is_some_and(|(_, _, tier)| tier == HealthTier::Critical);
    let clock_flagged = clock_flagged(ctx, ctx.id);
    *critical_streak = if critical || clock_flagged {
        critical_streak.saturating_add(1)
    } else {
        0
    };
    if !ctx.health.auto_handover || *critical_streak < CRITICAL_STREAK {
        return;
    }
    if last_transfer.is_some_and(|t| t.elapsed() < ctx.health.handover_min_interval) {
        return;
    }
    let Some(target) = best_voter(ctx) else {
        tracing::warn!(
            critical,
            clock_flagged,
            "leader is unhealthy but no healthy caught-up voter can take over"
        );
        return;
    };
    *last_transfer = Some(Instant::now());
    tracing::warn!(
        to = target,
        critical,
        clock_flagged,
        "leader is unhealthy: transferring Raft leadership"
    );
    ctx.metrics.health.health_leader_transfers.inc();
    if let Err(e) = crate::transfer::transfer_leadership(ctx, target).await {
        tracing::warn!(to = target, error = %e, "leader transfer failed");
    }
}

/// Whether `node`'s committed clock estimate drifts beyond the replicated
/// `time.alert_drift_ppm`: such a node must not lead (it stamps cluster
/// time) and is never a leader-transfer target.
pub fn clock_flagged(ctx: &NodeContext, node: u64) -> bool {
    ctx.state.with_state(|sm| {
        let alert_ppb = i128::from(sm.config().time.alert_drift_ppm) * 1000;
        sm.node_clock(node)
            .is_some_and(|c| i128::from(c.drift_ppb).abs() > alert_ppb)
    })
}

/// The healthiest caught-up voter other than this node whose clock is not
/// flagged.
fn best_voter(ctx: &NodeContext) -> Option<u64> {
    let m = ctx.raft.metrics().borrow_watched().clone();
    let last = m.last_log_index.unwrap_or(0);
    let replication = m.replication.as_ref()?;
    let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
    let mut best: Option<((u32, u64, u64), u64)> = None;
    for id in voters.into_iter().filter(|id| *id != ctx.id) {
        let matched = replication.get(&id).and_then(|l| l.as_ref()).map_or(0, |l| l.index());
        let lag = last.saturating_sub(matched);
        if lag > CAUGHT_UP_ENTRIES {
            continue;
        }
        let health = crate::health::committed(ctx, id);
        if health.as_ref().is_some_and(|(_, _, t)| *t == HealthTier::Critical) || clock_flagged(ctx, id) {
            continue;
        }
        // Unknown health ranks behind any reported health.
        let ill = health.map_or(1000, |(_, nhi, _)| 1000 - nhi.min(1000));
        let key = (ill, lag, id);
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, id));
        }
    }
    best.map(|(_, id)| id)
}
