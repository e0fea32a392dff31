//! The client API: each node serves [`DriftlockApi`] on its client port.
//!
//! - Mutations run only on the leader; a follower answers
//!   [`ApiError::NotLeader`] with the leader's client address (clients
//!   follow the hint; no forwarding, so a request crosses the network once).
//! - The leader stamps each command with cluster time ([`ClusterClock`]).
//! - A proposal whose outcome is unknown (leadership lost while it was in
//!   flight) answers [`ApiError::Indeterminate`]: session commands are
//!   retried safely with the same sequence number.
//! - Every request is checked against the connection's principal and the
//!   access policy before anything is proposed or read (`authz.rs`); the
//!   commands that are proposed carry that principal, for the state
//!   machine's own check at apply.
//! - Linearizable reads confirm leadership with a quorum first (ReadIndex,
//!   never a clock-based lease) and are answered as of the leader's current
//!   cluster time (docs/design.md "Time", rule 8).

use openraft::type_config::async_runtime::WatchReceiver;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_proto::limits;
use driftlock_proto::tls::Principal;
use driftlock_proto::{
    AdminReply, AdminRequest, ApiError, Consistency, DriftlockApi, EventBatch, EventFilter, KvWrite, MemberAddr,
    NodeStatus, Query, QueryReply, QueryResult, Role, SnapshotChunk, SnapshotId, SnapshotMembership,
};
use driftlock_proto::{Reply, SessionId, SessionOp, SessionSecret};
use driftlock_raft_store::{NodeAddr, StampHandle, StateReader, TypeConfig};
use driftlock_sensors::clock::RawInstant;
use driftlock_state_machine::{Command, StateMachine};
use futures::StreamExt;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ReadPolicy;
use tarpc::server::Channel;

use crate::clock::ClusterClock;
use crate::events::EventBuffer;
use crate::metrics::Metrics;
use crate::network::Raft;

/// How long a backup's first request waits for a fresh snapshot to be
/// built (`AdminRequest::ReadSnapshot`).
pub const FRESH_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a request handler needs; shared by all connections.
pub struct NodeContext {
    /// This node's id.
    pub id: u64,
    /// This node's addresses.
    pub addr: NodeAddr,
    /// This node's openraft instance: proposals, leadership checks for reads,
    /// membership changes and the metrics behind status and gauges.
    pub raft: Raft,
    /// How this node's ports authenticate, and how it dials others (a
    /// leader's client port for health reports, peers' Raft ports).
    pub security: crate::tls::NodeSecurity,
    /// The cluster-time anchor of the local log.
    pub stamps: StampHandle,
    /// Read access to the applied state.
    pub state: StateReader,
    /// Recent events for observers.
    pub events: Arc<EventBuffer>,
    /// Stamps cluster time.
    pub clock: ClusterClock,
    /// Set when the node is shutting down: new requests are refused.
    pub stopping: AtomicBool,
    /// Client requests being handled now; shutdown waits up to
    /// [`DRAIN_LIMIT`](crate::app::DRAIN_LIMIT) for it to reach 0.
    pub in_flight: AtomicU64,
    /// Every metric the node exports on `[node] metrics_addr`; updated from the
    /// request path, the event pump and the background loops.
    pub metrics: Arc<Metrics>,
    /// Health sampling and handover settings.
    pub health: crate::health::NodeHealth,
    /// The clock drift module.
    pub clock_sync: Arc<crate::clocksync::ClockSync>,
    /// Session profiler, failure predictor and lock-rate estimates.
    pub predict: Arc<crate::predict::Predictor>,
    /// Where proposals wait to be packed into entries (`batch.rs`).
    pub proposals: crate::batch::ProposalQueue,
}

impl NodeContext {
    /// Cluster time now, as this node would stamp it (docs/design.md
    /// "Time", rules 1–2).
    ///
    /// A node that never knew a stamped entry (neither in its log nor in a
    /// snapshot: a new cluster's first entry) has no anchor and answers the
    /// applied cluster time, 0, without adding elapsed time: there is no
    /// earlier entry for the elapsed time to count from, and measuring from
    /// the process start would count time from before any entry — the
    /// first stamped entry then starts cluster time.
    pub fn cluster_now_us(&self) -> u64 {
        self.cluster_time_at(RawInstant::now())
    }

    /// Cluster time at the raw instant `now`, read just before (see
    /// [`cluster_now_us`](Self::cluster_now_us)).
    fn cluster_time_at(&self, now: RawInstant) -> u64 {
        let anchor = self
            .stamps
            .last_stamp()
            .unwrap_or_else(|| (self.state.with_state(|sm| sm.ts_eff_us()), now));
        self.clock.stamp(anchor, now)
    }

    /// Stamps a command about to be proposed: cluster time now, and the
    /// instant it was computed at handed to the log store, which anchors on
    /// it once the entry is appended (docs/design.md "Time", rule 1).
    pub(crate) fn stamp(&self) -> u64 {
        let now = RawInstant::now();
        let ts_us = self.cluster_time_at(now);
        self.stamps.stamped(self.id, ts_us, now);
        ts_us
    }

    /// The leader's id and client address, as far as this node knows.
    pub fn leader_hint(&self) -> Option<(u64, String)> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.client_addr.clone()))
    }

    pub(crate) fn not_leader(&self) -> ApiError {
        ApiError::NotLeader {
            leader_hint: self.leader_hint(),
        }
    }

    /// Proposes a command on the leader and returns the state machine's
    /// reply; the command may share its entry with others (`batch.rs`).
    pub async fn propose(&self, command: Command) -> Result<Reply, ApiError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(ApiError::Unavailable("node is shutting down".into()));
        }
        self.leader_here().await?;
        // Every entry fits one Raft frame with room for a full append
        // beside it (`limits::MAX_ENTRY_BYTES`); a request frame cannot
        // carry more, so this refuses only what a bug would build. (The
        // entry alone is the command and its 8-byte stamp.)
        let command_bytes = bincode::serialized_size(&command).unwrap_or(u64::MAX);
        let entry_bytes = command_bytes.saturating_add(8);
        if entry_bytes > limits::MAX_ENTRY_BYTES as u64 {
            return Err(ApiError::InvalidRequest(format!(
                "the command encodes to {entry_bytes} bytes, above the {}-byte entry limit",
                limits::MAX_ENTRY_BYTES
            )));
        }
        self.proposals.propose(command, command_bytes).await
    }

    /// `Ok` if this node leads; otherwise `NotLeader` with the leader it
    /// knows. While no leader is known (an election, or a transfer, under
    /// way) it first waits for one, at most a heartbeat interval
    /// (`raft.heartbeat_ms`): a client told "no leader" backs off and tries
    /// again, 10–80 ms a time, and after a planned transfer that backoff
    /// was most of its longest wait (the election itself took 17–22 ms);
    /// parked here, the request goes on the moment this node wins, or is
    /// pointed at the winner. Not longer: a node that hears of no leader
    /// for a heartbeat interval may be cut off, and the client does better
    /// trying another.
    async fn leader_here(&self) -> Result<(), ApiError> {
        if self.raft.is_leader() {
            return Ok(());
        }
        let id = self.id;
        let wait = Duration::from_millis(self.raft.config().heartbeat_interval);
        // Unsettled after the wait is answered below like any other state.
        self.settle(wait, "a known leader", move |m| {
            m.state.is_leader() || m.current_leader.is_some_and(|l| l != id)
        })
        .await;
        if self.raft.is_leader() {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    /// Waits, at most an election timeout (`raft.election_timeout_max_ms`:
    /// the transfer's election either ends within it or failed), until
    /// this node knows of a leader other than itself: the end of a
    /// leadership transfer it started. Answering at once with the
    /// transfer's target sent clients back and forth: the target, not yet
    /// told of the transfer, still named this node as its leader.
    pub(crate) async fn await_successor(&self) {
        let id = self.id;
        let wait = Duration::from_millis(self.raft.config().election_timeout_max);
        // Timed out: the caller answers with what it knows.
        self.settle(wait, "the transfer's new leader", move |m| {
            !m.state.is_leader() && m.current_leader.is_some_and(|l| l != id)
        })
        .await;
    }

    /// Waits at most `wait` until `settled` holds of this node's Raft
    /// metrics (`what` names the wait in openraft's debug log); whether it
    /// does. Reads the current metrics first without copying them, so a
    /// state that already holds — the common case on every request path —
    /// costs no allocation and no timer.
    pub(crate) async fn settle(
        &self,
        wait: Duration,
        what: &'static str,
        settled: impl Fn(&openraft::RaftMetrics<TypeConfig>) -> bool + Send,
    ) -> bool {
        if settled(&self.raft.metrics().borrow_watched()) {
            return true;
        }
        self.raft.wait(Some(wait)).metrics(settled, what).await.is_ok()
    }

    /// Confirms leadership for a linearizable read and returns the cluster
    /// time to answer as of.
    async fn read_barrier(&self, consistency: Consistency) -> Result<u64, ApiError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(ApiError::Unavailable("node is shutting down".into()));
        }
        if consistency == Consistency::Serializable {
            return Ok(self.cluster_now_us());
        }
        self.leader_here().await?;
        // ReadIndex, never LeaseRead: a leader lease is measured on the
        // leader's clock and the followers' promise not to vote on theirs,
        // so a leader whose clock runs slow believes in its lease after its
        // successor committed writes, and would answer without them
        // (jepsen/tests/lease_read.rs). ReadIndex asks a quorum instead:
        // one round of heartbeats per read, no disk write, no clock.
        self.raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(|_| self.not_leader())?;
        // No wait beyond openraft's: its read index is the larger of the
        // commit index and this leader's first entry of its term, and a
        // leader always won an election in this process's life (the store
        // reopens a committed vote uncommitted: raft-store/src/log_store.rs,
        // "Restarting leaders"). Every write acknowledged before the
        // election is at or before that first entry; every one since was
        // committed by this leader. (A restarted node used to resume as
        // leader with a stale commit index; waiting here for its whole log
        // to apply hid the stale reads, not the entries it had lost.)
        Ok(self.cluster_now_us())
    }

    /// Answers a read. A linearizable one confirms leadership first (and fails
    /// with `NotLeader` on a follower); a serializable one reads this node's
    /// applied state as it is. Either way expiry is judged at this node's
    /// cluster time now, which the reply carries with the applied index.
    ///
    /// `principal` must be allowed the read (`authz::check_query`), judged
    /// on the same applied state the answer comes from.
    pub async fn query(
        &self,
        principal: &Principal,
        query: Query,
        consistency: Consistency,
    ) -> Result<QueryReply, ApiError> {
        // Refused reads cost no quorum round: checked once before the
        // barrier, and again on the state that answers.
        self.state
            .with_state(|sm| crate::authz::check_query(sm, principal, &query))?;
        let now_us = self.read_barrier(consistency).await?;
        let (revision, result) = self.state.with_state(|sm| {
            let answer = crate::authz::check_query(sm, principal, &query).and_then(|()| answer(sm, &query, now_us));
            (sm.last_revision(), answer)
        });
        Ok(QueryReply {
            revision,
            cluster_ts_us: now_us,
            result: result?,
        })
    }

    /// This node's status.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let role = match m.state {
            openraft::ServerState::Leader => Role::Leader,
            openraft::ServerState::Follower => Role::Follower,
            openraft::ServerState::Candidate => Role::Candidate,
            openraft::ServerState::Learner => Role::Learner,
            openraft::ServerState::Shutdown => Role::Shutdown,
        };
        let membership = m.membership_config.membership();
        let voters = membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.client_addr.clone())))
            .collect();
        let learners = membership
            .learner_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.client_addr.clone())))
            .collect();
        let (stats, cluster_ts_us, applied_index, applied_revision, config_revision) = self.state.with_state(|sm| {
            (
                sm.stats(),
                sm.ts_eff_us(),
                sm.last_index(),
                sm.last_revision(),
                sm.config_revision(),
            )
        });
        let health = crate::health::committed(self, self.id);
        let clock = self.state.with_state(|sm| sm.node_clock(self.id).cloned());
        NodeStatus {
            id: self.id,
            client_addr: self.addr.client_addr.clone(),
            raft_addr: self.addr.raft_addr.clone(),
            role,
            term: m.current_term,
            leader: self.leader_hint(),
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index,
            voters,
            learners,
            cluster_ts_us,
            config_revision,
            stats,
            health: health.as_ref().map(|(s, _, _)| s.clone()),
            nhi_permille: health.as_ref().map(|(_, nhi, _)| *nhi),
            health_tier: health.map(|(_, _, tier)| tier),
            clock,
            rho_hi_ppm: self.clock.rho_hi_ppm(),
            hot_locks: if role == Role::Leader {
                self.predict.hot_locks()
            } else {
                Vec::new()
            },
            snapshots_installed: self.metrics.snapshots_installed.get(),
            warnings: crate::tls::expiry_warning(self.security.expires_in_s())
                .into_iter()
                .collect(),
            applied_revision,
        }
    }

    /// Runs an administrative request from `principal`, who must be allowed
    /// it (`authz::check_admin`).
    pub async fn admin(&self, principal: &Principal, request: AdminRequest) -> Result<AdminReply, ApiError> {
        self.state
            .with_state(|sm| crate::authz::check_admin(sm.policy(), principal, &request))?;
        match request {
            AdminRequest::Init { members } => {
                if members.is_empty() {
                    return Err(ApiError::InvalidRequest("init needs at least one member".into()));
                }
                let mut nodes = std::collections::BTreeMap::new();
                for m in members {
                    check_addr(&m.raft_addr)?;
                    check_addr(&m.client_addr)?;
                    if nodes
                        .insert(
                            m.id,
                            NodeAddr {
                                raft_addr: m.raft_addr,
                                client_addr: m.client_addr,
                            },
                        )
                        .is_some()
                    {
                        return Err(ApiError::InvalidRequest(format!("node id {} listed twice", m.id)));
                    }
                }
                if !nodes.contains_key(&self.id) {
                    return Err(ApiError::InvalidRequest(format!(
                        "members must include this node ({})",
                        self.id
                    )));
                }
                self.raft
                    .initialize(nodes)
                    .await
                    .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
            }
            AdminRequest::AddLearner { member } => {
                check_addr(&member.raft_addr)?;
                check_addr(&member.client_addr)?;
                self.require_leader()?;
                let node = NodeAddr {
                    raft_addr: member.raft_addr,
                    client_addr: member.client_addr,
                };
                self.raft
                    .add_learner(member.id, node, true)
                    .await
                    .map_err(|e| self.admin_error(e))?;
            }
            AdminRequest::ChangeVoters { voters } => {
                if voters.is_empty() {
                    return Err(ApiError::InvalidRequest("a cluster needs at least one voter".into()));
                }
                self.require_leader()?;
                let voters: std::collections::BTreeSet<u64> = voters.into_iter().collect();
                self.raft
                    .change_membership(voters, false)
                    .await
                    .map_err(|e| self.admin_error(e))?;
            }
            AdminRequest::ReportHealth { node, sample } => {
                crate::health::commit_report(self, node, sample).await?;
            }
            AdminRequest::Handover { election, to } => {
                crate::handover::begin(self, &election, to).await?;
            }
            AdminRequest::TransferLeader { to } => {
                crate::transfer::transfer_leadership(self, to).await?;
            }
            AdminRequest::SetPolicy {
                policy,
                expected_revision,
            } => {
                // An invalid policy never reaches the log.
                policy
                    .validate()
                    .map_err(|detail| ApiError::Rejected(driftlock_proto::Rejection::InvalidPolicy { detail }))?;
                self.propose(Command::SetPolicy {
                    policy,
                    expected_revision,
                    by: principal.clone(),
                })
                .await?;
            }
            AdminRequest::SetConfig {
                config,
                expected_revision,
            } => {
                // An invalid configuration never reaches the log; the state
                // machine validates it again at apply.
                config
                    .validate()
                    .map_err(|detail| ApiError::Rejected(driftlock_proto::Rejection::InvalidConfig { detail }))?;
                self.propose(Command::SetConfig {
                    config,
                    expected_revision,
                    by: principal.clone(),
                })
                .await?;
            }
            AdminRequest::ReadSnapshot { snapshot, offset } => {
                return Ok(AdminReply::SnapshotChunk(self.read_snapshot(snapshot, offset).await?));
            }
        }
        Ok(AdminReply::Done)
    }

    /// One chunk of this leader's stored snapshot for a backup
    /// (`AdminRequest::ReadSnapshot`; docs/design.md "Backup and restore").
    /// Without `wanted`, builds a fresh snapshot first.
    ///
    /// Each chunk reads the stored snapshot whole (openraft's
    /// `get_snapshot`) and keeps its slice: simple and stateless, at the
    /// cost of copying the snapshot once per 4 MiB chunk.
    async fn read_snapshot(&self, wanted: Option<SnapshotId>, offset: u64) -> Result<SnapshotChunk, ApiError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(ApiError::Unavailable("node is shutting down".into()));
        }
        self.require_leader()?;
        if wanted.is_none() {
            self.fresh_snapshot().await?;
        }
        let snapshot = self
            .raft
            .get_snapshot()
            .await
            .map_err(|e| ApiError::Unavailable(format!("cannot read the stored snapshot: {e}")))?
            .ok_or_else(|| ApiError::Unavailable("this node stores no snapshot".into()))?;
        let last = snapshot
            .meta
            .last_log_id
            .ok_or_else(|| ApiError::Unavailable("the stored snapshot covers no entry".into()))?;
        let id = SnapshotId {
            index: last.index,
            term: last.leader_id.term,
            leader: last.leader_id.node_id,
        };
        if let Some(wanted) = wanted {
            if wanted != id {
                return Err(ApiError::InvalidRequest(format!(
                    "the snapshot at {wanted} is no longer stored on this node (it now holds the one at {id}); \
                     start the save again"
                )));
            }
        }
        let data = snapshot.snapshot.into_inner();
        let total_bytes = data.len() as u64;
        if offset > total_bytes {
            return Err(ApiError::InvalidRequest(format!(
                "offset {offset} is past the end of the snapshot ({total_bytes} bytes)"
            )));
        }
        // `offset <= data.len()`, so it fits a usize.
        let start = offset as usize;
        let end = data.len().min(start.saturating_add(limits::MAX_BATCH_BYTES));
        let membership = snapshot.meta.last_membership.membership();
        Ok(SnapshotChunk {
            snapshot: id,
            membership: SnapshotMembership {
                voters: membership.voter_ids().collect(),
                members: membership
                    .nodes()
                    .map(|(id, node)| MemberAddr {
                        id: *id,
                        raft_addr: node.raft_addr.clone(),
                        client_addr: node.client_addr.clone(),
                    })
                    .collect(),
            },
            total_bytes,
            offset,
            data: data[start..end].to_vec(),
        })
    }

    /// Makes the stored snapshot cover every entry committed before now:
    /// confirms leadership with a quorum (ReadIndex, which also waits until
    /// this node applied up to the read index), then triggers snapshots
    /// until one at or after the applied index is stored, for up to
    /// [`FRESH_SNAPSHOT_TIMEOUT`]. A trigger while a build is under way is
    /// ignored by openraft, hence the retries.
    async fn fresh_snapshot(&self) -> Result<(), ApiError> {
        self.raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(|_| self.not_leader())?;
        let target = self.raft.metrics().borrow_watched().last_applied.map_or(0, |l| l.index);
        let covered = move |m: &openraft::RaftMetrics<TypeConfig>| m.snapshot.is_some_and(|s| s.index >= target);
        let deadline = Instant::now() + FRESH_SNAPSHOT_TIMEOUT;
        loop {
            if covered(&self.raft.metrics().borrow_watched()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ApiError::Unavailable(format!(
                    "no snapshot covering entry {target} was built within {} s",
                    FRESH_SNAPSHOT_TIMEOUT.as_secs()
                )));
            }
            self.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?;
            // A timeout only means "trigger again".
            let _ = self
                .raft
                .wait(Some(Duration::from_millis(500)))
                .metrics(covered, "snapshot for a backup")
                .await;
        }
    }

    fn require_leader(&self) -> Result<(), ApiError> {
        if self.raft.is_leader() {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    /// The answer to a failed membership change. Both membership requests
    /// name a target state (this learner added, these voters), so a retry
    /// after a lost leadership is safe: openraft finishes or skips the steps
    /// already taken. Leadership lost before or during the change is
    /// therefore `NotLeader` (the client retries at the new leader), a
    /// change already under way is `Unavailable`, and only a request that
    /// can never succeed is `InvalidRequest`.
    fn admin_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ApiError {
        use openraft::error::ChangeMembershipError;
        match e {
            RaftError::Fatal(f) => ApiError::Unavailable(f.to_string()),
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward))
            | RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward)) => {
                forward_error(forward, || self.leader_hint())
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(p))) => {
                ApiError::Unavailable(p.to_string())
            }
            RaftError::APIError(e) => ApiError::InvalidRequest(e.to_string()),
        }
    }
}

/// The answer to a proposal openraft refused before appending it
/// (`ForwardToLeader`): nothing was written, so either answer is definite.
///
/// A leader whose quorum lease lapsed (`ForwardReason::LeaseExpired`: just
/// elected and not yet acknowledged by a quorum, or cut off from it) is
/// still the leader, and openraft names no other node. Its own hint would
/// point the client back at it, so the answer is `Unavailable`: retry
/// shortly. Otherwise `NotLeader`, with the leader (or transfer target)
/// openraft named, else `known_leader`.
pub(crate) fn forward_error(
    forward: openraft::error::ForwardToLeader<TypeConfig>,
    known_leader: impl FnOnce() -> Option<(u64, String)>,
) -> ApiError {
    if forward.reason == openraft::error::ForwardReason::LeaseExpired {
        return ApiError::Unavailable(
            "this node leads but no quorum has acknowledged it within its lease (just elected, or cut off); \
             retry shortly"
                .into(),
        );
    }
    let leader_hint = match (forward.leader_id, forward.leader_node) {
        (Some(id), Some(node)) => Some((id, node.client_addr)),
        _ => known_leader(),
    };
    ApiError::NotLeader { leader_hint }
}

fn check_addr(addr: &str) -> Result<(), ApiError> {
    addr.parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| ApiError::InvalidRequest(format!("'{addr}' is not an ip:port address")))
}

fn answer(sm: &StateMachine, query: &Query, now_us: u64) -> Result<QueryResult, ApiError> {
    Ok(match query {
        Query::KvGet { key } => QueryResult::Kv(sm.kv_get(key)),
        Query::KvRange {
            prefix,
            start_after,
            limit,
        } => {
            let limit = (*limit).min(limits::MAX_RANGE_KEYS) as usize;
            let (entries, more) = sm.kv_range(prefix, start_after.as_deref(), limit, limits::MAX_BATCH_BYTES);
            QueryResult::KvRange { entries, more }
        }
        Query::Lock { name } => QueryResult::Lock(sm.lock_view(name, now_us)),
        Query::Session { session } => QueryResult::Session(sm.session_view(*session, now_us)),
        Query::Election { name } => QueryResult::Election(sm.election_view(name, now_us)),
        Query::Stats => QueryResult::Stats(sm.stats()),
        Query::Policy => QueryResult::Policy(sm.policy_view()),
        Query::Config => QueryResult::Config(sm.config_view()),
    })
}

/// One connection's handler; cheap to clone.
#[derive(Clone)]
pub struct ApiHandler {
    ctx: Arc<NodeContext>,
    /// Who is on the other end of the connection: from its verified client
    /// certificate, or [`Principal::Anonymous`] on a node started with
    /// `--insecure`.
    principal: Principal,
}

/// Counts a request as in flight while alive, and times it.
struct InFlight<'a> {
    ctx: &'a NodeContext,
    method: &'static str,
    started: Instant,
}

impl<'a> InFlight<'a> {
    fn new(ctx: &'a NodeContext, method: &'static str) -> Self {
        ctx.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            ctx,
            method,
            started: Instant::now(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.ctx.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.ctx.metrics.observe_rpc(self.method, self.started.elapsed());
    }
}

impl DriftlockApi for ApiHandler {
    async fn open_session(
        self,
        _: tarpc::context::Context,
        nonce: u128,
        client_name: String,
        requested_ttl_us: u64,
        secret: SessionSecret,
    ) -> Result<Reply, ApiError> {
        let _f = InFlight::new(&self.ctx, "open_session");
        // Any authenticated principal may open sessions; what it does in
        // them is checked per operation. Only the secret's hash is kept.
        crate::check::open_session(&self.ctx, nonce, &client_name, requested_ttl_us)?;
        self.ctx
            .propose(Command::OpenSession {
                nonce,
                client_name,
                requested_ttl_us,
                owner: self.principal.clone(),
                secret_sha256: secret.digest(),
            })
            .await
    }

    async fn session_op(
        self,
        _: tarpc::context::Context,
        session: SessionId,
        secret: SessionSecret,
        seq: u64,
        op: SessionOp,
    ) -> Result<Reply, ApiError> {
        let _f = InFlight::new(&self.ctx, "session_op");
        crate::check::session_op(&self.ctx, session, seq, &op)?;
        self.ctx
            .state
            .with_state(|sm| crate::authz::check_session_op(sm, &self.principal, session, &secret, &op))?;
        let _profiled = self.ctx.predict.track(session, &op);
        self.ctx
            .propose(Command::Session {
                session,
                seq,
                op,
                by: self.principal.clone(),
            })
            .await
    }

    async fn kv_write(self, _: tarpc::context::Context, write: KvWrite) -> Result<Reply, ApiError> {
        let _f = InFlight::new(&self.ctx, "kv_write");
        crate::check::kv_write(&self.ctx, &write)?;
        self.ctx
            .state
            .with_state(|sm| crate::authz::check_kv_write(sm.policy(), &self.principal, &write))?;
        let by = self.principal.clone();
        let command = match write {
            KvWrite::Put { key, value } => Command::KvPut { key, value, by },
            KvWrite::Delete { key } => Command::KvDelete { key, by },
            KvWrite::Cas {
                key,
                expected_revision,
                value,
            } => Command::KvCas {
                key,
                expected_revision,
                value,
                by,
            },
        };
        self.ctx.propose(command).await
    }

    async fn read(
        self,
        _: tarpc::context::Context,
        query: Query,
        consistency: Consistency,
    ) -> Result<QueryReply, ApiError> {
        let _f = InFlight::new(&self.ctx, "read");
        self.ctx.query(&self.principal, query, consistency).await
    }

    async fn observe(
        self,
        _: tarpc::context::Context,
        after_index: u64,
        filter: EventFilter,
        timeout_ms: u64,
    ) -> Result<EventBatch, ApiError> {
        if self.ctx.stopping.load(Ordering::Relaxed) {
            return Err(ApiError::Unavailable("node is shutting down".into()));
        }
        filter.check_sessions().map_err(ApiError::InvalidRequest)?;
        self.ctx
            .state
            .with_state(|sm| crate::authz::check_observe(sm, &self.principal, &filter))?;
        let wait = Duration::from_millis(timeout_ms.min(limits::MAX_OBSERVE_WAIT_MS));
        Ok(self.ctx.events.wait(after_index, &filter, wait).await)
    }

    async fn status(self, _: tarpc::context::Context) -> NodeStatus {
        let status = self.ctx.status();
        if self
            .ctx
            .state
            .with_state(|sm| crate::authz::sees_full_status(sm.policy(), &self.principal))
        {
            status
        } else {
            crate::authz::basic_status(status)
        }
    }

    async fn admin(self, _: tarpc::context::Context, request: AdminRequest) -> Result<AdminReply, ApiError> {
        let _f = InFlight::new(&self.ctx, "admin");
        crate::check::admin(&request)?;
        // An audit line per administrative request; health reports come
        // every few seconds from every node and are not changes an operator
        // made, and a backup is audited once, at its first chunk.
        let routine = matches!(
            request,
            AdminRequest::ReportHealth { .. } | AdminRequest::ReadSnapshot { snapshot: Some(_), .. }
        );
        if !routine {
            tracing::info!(principal = %self.principal, request = request.kind(), "admin request");
        }
        let result = self.ctx.admin(&self.principal, request).await;
        if let Err(e @ ApiError::PermissionDenied { .. }) = &result {
            tracing::warn!(principal = %self.principal, error = %e, "admin request refused");
        }
        result
    }
}

/// Binds the client port on `addr` and returns its accept loop, which the
/// caller runs as a task until it aborts it (it ends only if the listener
/// fails). Each connection is served with the principal its certificate
/// names.
pub async fn serve(
    addr: std::net::SocketAddr,
    ctx: Arc<NodeContext>,
    acceptor: crate::listener::Acceptor,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let in_flight = acceptor.caps.in_flight;
    Ok(acceptor.run(listener, move |io, principal| {
        let handler = ApiHandler {
            ctx: ctx.clone(),
            principal,
        };
        async move {
            let transport = driftlock_proto::service::bincode_transport(io, driftlock_proto::codec::FrameCodec::node());
            tarpc::server::BaseChannel::with_defaults(transport)
                .max_concurrent_requests(in_flight)
                .execute(handler.serve())
                .for_each(|response| async move {
                    tokio::spawn(response);
                })
                .await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlock_raft_store::NodeAddr;
    use openraft::error::{ForwardReason, ForwardToLeader};

    /// The CI failure this covers: a node just made leader by a transfer
    /// answered its first write with `NotLeader` naming itself (openraft
    /// refused it for a lease not yet acknowledged by a quorum and named no
    /// leader, so the node's own view, itself, filled the hint).
    #[test]
    fn a_leader_whose_lease_lapsed_is_unavailable_not_a_pointer_to_itself() {
        let myself = || Some((4, "127.0.0.1:7904".to_string()));
        let lapsed = ForwardToLeader::<TypeConfig>::empty().with_reason(ForwardReason::LeaseExpired);
        assert!(
            matches!(forward_error(lapsed, myself), ApiError::Unavailable(_)),
            "a lapsed lease must not send the client back to the same node"
        );
    }

    #[test]
    fn a_refusal_naming_the_leader_points_there() {
        let other = NodeAddr {
            raft_addr: "127.0.0.1:7802".into(),
            client_addr: "127.0.0.1:7902".into(),
        };
        let named = ForwardToLeader::<TypeConfig>::new(2, other);
        assert_eq!(
            forward_error(named, || None),
            ApiError::NotLeader {
                leader_hint: Some((2, "127.0.0.1:7902".into()))
            }
        );
        let transfer = ForwardToLeader::<TypeConfig>::new(
            3,
            NodeAddr {
                raft_addr: "127.0.0.1:7803".into(),
                client_addr: "127.0.0.1:7903".into(),
            },
        )
        .with_reason(ForwardReason::LeadershipTransfer);
        assert_eq!(
            forward_error(transfer, || None),
            ApiError::NotLeader {
                leader_hint: Some((3, "127.0.0.1:7903".into()))
            }
        );
        let unknown = ForwardToLeader::<TypeConfig>::empty();
        assert_eq!(
            forward_error(unknown, || Some((1, "127.0.0.1:7901".into()))),
            ApiError::NotLeader {
                leader_hint: Some((1, "127.0.0.1:7901".into()))
            }
        );
    }
}
