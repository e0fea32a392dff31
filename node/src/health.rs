//! Node health (docs/design.md "Adaptive leases"): each node samples its host
//! every `[health] interval_ms` and reports to the leader; the leader commits
//! `HealthReport`s at a bounded rate, so the Node Health Index every replica
//! computes rests on the same committed inputs.
//!
//! A report is committed when the node has none committed yet, when its
//! tier changes, when its index moves by at least [`NHI_STEP_PERMILLE`], or
//! when the committed one is older than [`REFRESH`]; otherwise it is
//! dropped. That bounds health traffic in the log to a few entries per node
//! per minute on a steady cluster while a real change lands within one
//! interval.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftlock_proto::health::{health_index_permille, tier_of};
use driftlock_proto::{AdminRequest, ApiError};
use driftlock_proto::{HealthSample, HealthTier, Subject};
use driftlock_sensors::health::{parse_tier, HealthMonitor};
use driftlock_state_machine::Command;
use openraft::type_config::async_runtime::WatchReceiver;

use crate::config::NodeConfig;
use crate::server::NodeContext;

/// Index movement that makes a new report worth committing, permille.
pub const NHI_STEP_PERMILLE: u32 = 50;
/// A committed report older than this is refreshed even if nothing changed.
pub const REFRESH: Duration = Duration::from_secs(30);

/// Health settings and state of one node.
pub struct NodeHealth {
    monitor: Mutex<HealthMonitor>,
    /// Leader side: when each node's report was last committed (by this
    /// node while leader), for the rate limit.
    committed_at: Mutex<BTreeMap<u64, Instant>>,
    /// How often this node samples its host and reports to the leader
    /// (`[health] interval_ms`).
    pub interval: Duration,
    /// Automatic handover and leader transfer enabled.
    pub auto_handover: bool,
    /// Time a handover has to complete (state, acknowledgement and the old
    /// master's relinquish) before it is aborted, µs.
    pub handover_ack_timeout_us: u64,
    /// Least time between automatic handovers of one election, and between
    /// automatic leader transfers.
    pub handover_min_interval: Duration,
}

impl std::fmt::Debug for NodeHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHealth").field("interval", &self.interval).finish()
    }
}

impl NodeHealth {
    /// Settings from the node configuration. `restarted` counts this start
    /// as a recent failure (the node had state before).
    pub fn new(config: &NodeConfig, restarted: bool) -> Self {
        // `NodeConfig::validate` has checked the override already.
        let forced = config.health.override_tier.as_deref().and_then(|t| parse_tier(t).ok());
        if let Some(t) = forced {
            tracing::warn!(tier = ?t, "health override in force: reported health is synthetic");
        }
        let mut monitor = HealthMonitor::new(forced);
        if restarted {
            monitor.record_failure(Instant::now());
        }
        NodeHealth {
            monitor: Mutex::new(monitor),
            committed_at: Mutex::new(BTreeMap::new()),
            interval: Duration::from_millis(config.health.interval_ms),
            auto_handover: config.handover.auto,
            handover_ack_timeout_us: config.handover.ack_timeout_ms.saturating_mul(1_000),
            handover_min_interval: Duration::from_millis(config.handover.min_interval_ms),
        }
    }

    /// Records one round trip to a peer, µs.
    pub fn record_peer_rtt_us(&self, rtt_us: u64) {
        lock(&self.monitor).record_rtt_us(rtt_us);
    }

    /// A sample of this host now.
    pub fn sample(&self) -> HealthSample {
        lock(&self.monitor).sample(Instant::now())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a report should be committed, given the committed sample and
/// when this leader last committed one for the node.
fn worth_committing(
    committed: Option<&HealthSample>,
    committed_at: Option<Instant>,
    sample: &HealthSample,
    now: Instant,
    cfg: &driftlock_proto::LeaseConfig,
) -> bool {
    let Some(old) = committed else { return true };
    if committed_at.is_none_or(|t| now.saturating_duration_since(t) >= REFRESH) {
        return true;
    }
    let (a, b) = (health_index_permille(old, cfg), health_index_permille(sample, cfg));
    tier_of(a, cfg) != tier_of(b, cfg) || a.abs_diff(b) >= NHI_STEP_PERMILLE
}

/// On the leader: commits `sample` as node `node`'s health if it is worth
/// it (see the module documentation). Returns whether it was proposed.
///
/// # Errors
/// `NotLeader`, an unknown node, or the proposal's failure.
pub async fn commit_report(ctx: &NodeContext, node: u64, sample: HealthSample) -> Result<bool, ApiError> {
    if !ctx.raft.is_leader() {
        return Err(ApiError::NotLeader {
            leader_hint: ctx.leader_hint(),
        });
    }
    let is_member = ctx
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .get_node(&node)
        .is_some();
    if !is_member {
        return Err(ApiError::InvalidRequest(format!("node {node} is not a member")));
    }
    let now = Instant::now();
    let due = {
        let at = lock(&ctx.health.committed_at).get(&node).copied();
        ctx.state
            .with_state(|sm| worth_committing(sm.node_health(node), at, &sample, now, &sm.config().lease))
    };
    if !due {
        return Ok(false);
    }
    ctx.propose(Command::HealthReport {
        subject: Subject::Node(node),
        sample,
    })
    .await?;
    lock(&ctx.health.committed_at).insert(node, now);
    Ok(true)
}

/// The committed health of `node`: its sample, index and tier.
pub fn committed(ctx: &NodeContext, node: u64) -> Option<(HealthSample, u32, HealthTier)> {
    ctx.state.with_state(|sm| {
        let sample = sm.node_health(node)?.clone();
        let nhi = health_index_permille(&sample, &sm.config().lease);
        Some((sample, nhi, tier_of(nhi, &sm.config().lease)))
    })
}

/// Samples this node every interval and reports to the leader.
pub async fn report_loop(ctx: Arc<NodeContext>) {
    let mut ticker = tokio::time::interval(ctx.health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let sample = ctx.health.sample();
        ctx.metrics.set_health(&sample);
        let result = if ctx.raft.is_leader() {
            commit_report(&ctx, ctx.id, sample).await.map(|_| ())
        } else {
            match ctx.leader_hint() {
                Some((_, addr)) => driftlock_proto::admin(
                    &addr,
                    AdminRequest::ReportHealth { node: ctx.id, sample },
                    ctx.health.interval,
                    &ctx.security.dialer(),
                )
                .await
                .map(|_| ())
                .map_err(|e| ApiError::Unavailable(e.to_string())),
                None => Err(ApiError::Unavailable("no leader known".into())),
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "health report not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlock_proto::LeaseConfig;
    use driftlock_sensors::health::synthetic_sample;

    #[test]
    fn first_report_tier_changes_and_staleness_are_committed_noise_is_not() {
        let cfg = LeaseConfig::default();
        let now = Instant::now();
        let good = synthetic_sample(HealthTier::Good);
        assert!(worth_committing(None, None, &good, now, &cfg));
        // Same tier, small change, fresh: dropped.
        let mut nudged = good.clone();
        nudged.cpu_load_permille += 10;
        assert!(!worth_committing(Some(&good), Some(now), &nudged, now, &cfg));
        // Tier change: committed at once.
        let critical = synthetic_sample(HealthTier::Critical);
        assert!(worth_committing(Some(&good), Some(now), &critical, now, &cfg));
        // Unchanged but stale: refreshed.
        assert!(worth_committing(Some(&good), Some(now), &good, now + REFRESH, &cfg));
        // Committed by an earlier leader (no local record): refreshed.
        assert!(worth_committing(Some(&good), None, &good, now, &cfg));
    }
}
