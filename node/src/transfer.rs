//! Raft leadership transfer, asked for by an operator (`driftlock cluster
//! transfer-leader`, [`AdminRequest::TransferLeader`]) or by a leader whose
//! health turned Critical (`handover.rs`).
//!
//! openraft's transfer is fire-and-forget: the leader stops proposing and
//! heartbeating and tells the target to run an election, and the target
//! does so only if its log reaches the leader's last entry within an
//! election timeout. A target that is behind (just restarted, paused,
//! slow) ignores the request; the old leader then stays silent until the
//! followers time out and elect someone, so an acknowledged transfer could
//! leave the cluster without a leader for an election timeout and end with
//! leadership anywhere. Here a transfer is only started towards a target
//! that has caught up, and is answered only once it took effect: `Ok`
//! means the target leads.
//!
//! [`AdminRequest::TransferLeader`]: driftlock_proto::AdminRequest::TransferLeader

use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver;

use driftlock_proto::ApiError;

use crate::handover::CAUGHT_UP_ENTRIES;
use crate::server::NodeContext;

/// How far behind the leader's last entry `node` is, from the leader's
/// replication progress: `None` if this node does not lead or does not
/// replicate to `node`.
fn lag(m: &openraft::RaftMetrics<driftlock_raft_store::TypeConfig>, node: u64) -> Option<u64> {
    let matched = m.replication.as_ref()?.get(&node)?.as_ref().map_or(0, |l| l.index());
    Some(m.last_log_index.unwrap_or(0).saturating_sub(matched))
}

/// Hands Raft leadership from this node to voter `to` and waits until `to`
/// leads.
///
/// - `NotLeader` if this node does not lead; `InvalidRequest` if `to` is
///   not a voter. Nothing changes.
/// - `Unavailable` if `to` does not come within [`CAUGHT_UP_ENTRIES`] of
///   the leader's log within an election timeout (it is down, paused, or
///   still catching up). Nothing changes: the transfer is not started.
/// - `Unavailable` if, started, the transfer has not made `to` the leader
///   within two election timeouts. Leadership may then have moved
///   elsewhere (the old leader stopped heartbeating); the message says
///   where.
///
/// `Ok` at once if this node is `to`.
pub async fn transfer_leadership(ctx: &NodeContext, to: u64) -> Result<(), ApiError> {
    if !ctx.raft.is_leader() {
        return Err(ctx.not_leader());
    }
    if to == ctx.id {
        return Ok(());
    }
    let is_voter = ctx
        .raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == to);
    if !is_voter {
        return Err(ApiError::InvalidRequest(format!("node {to} is not a voter")));
    }
    let election_timeout = Duration::from_millis(ctx.raft.config().election_timeout_max);
    let caught_up = ctx
        .settle(election_timeout, "the transfer target to catch up", move |m| {
            !m.state.is_leader() || lag(m, to).is_some_and(|l| l <= CAUGHT_UP_ENTRIES)
        })
        .await;
    if !ctx.raft.is_leader() {
        return Err(ctx.not_leader());
    }
    if !caught_up {
        let behind =
            lag(&ctx.raft.metrics().borrow_watched(), to).map_or_else(|| "unknown".to_string(), |l| l.to_string());
        return Err(ApiError::Unavailable(format!(
            "node {to} is {behind} entries behind the leader after {} ms (it may be down, paused or \
             catching up); leadership not transferred",
            election_timeout.as_millis()
        )));
    }
    ctx.raft
        .trigger()
        .transfer_leader(to)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let took = ctx
        .settle(2 * election_timeout, "the transfer target to lead", move |m| {
            m.current_leader == Some(to) && !m.state.is_leader()
        })
        .await;
    if took {
        return Ok(());
    }
    let now = match ctx.leader_hint() {
        Some((leader, _)) => format!("node {leader} leads"),
        None => "no leader is known".to_string(),
    };
    Err(ApiError::Unavailable(format!(
        "node {to} did not take over within {} ms of the transfer; {now}",
        (2 * election_timeout).as_millis()
    )))
}
