//! The client protocol: the tarpc service every node serves on its client
//! port, and the request and reply types it carries (bincode over TCP).
//!
//! Mutations go through Raft on the leader; a follower answers
//! [`ApiError::NotLeader`] with a hint. Reads are linearizable by default
//! (served by the leader after `ensure_linearizable`), or serializable from
//! any node's applied state when asked. Reads that depend on expiry are
//! answered as of the leader's current cluster time.

use driftlock_state_machine::{
    ClockEstimate, ElectionView, Event, HealthSample, HealthTier, KvView, LockView, Rejection, Reply, SessionId,
    SessionOp, SessionView, Stats,
};
use serde::{Deserialize, Serialize};

/// The client API of a driftlock node.
#[tarpc::service]
pub trait DriftlockApi {
    /// Opens a session. `nonce` is random per attempt-series: a retry with
    /// the same nonce returns the same session.
    async fn open_session(nonce: u128, client_name: String, requested_ttl_us: u64) -> Result<Reply, ApiError>;

    /// Runs one deduplicated operation in a session: keepalive, close,
    /// acquire, release, fenced KV writes, campaign, resign, proclaim,
    /// handover state and acknowledgement, probe answers.
    async fn session_op(session: SessionId, seq: u64, op: SessionOp) -> Result<Reply, ApiError>;

    /// A KV write outside any session (not deduplicated: for operators and
    /// the CLI).
    async fn kv_write(write: KvWrite) -> Result<Reply, ApiError>;

    /// A read.
    async fn read(query: Query, consistency: Consistency) -> Result<QueryReply, ApiError>;

    /// Long-poll for events of entries after `after_index`: returns at once
    /// if there are some, else waits up to `timeout_ms` for them.
    async fn observe(after_index: u64, filter: EventFilter, timeout_ms: u64) -> Result<EventBatch, ApiError>;

    /// This node's own view of itself and the cluster (no Raft round trip).
    async fn status() -> NodeStatus;

    /// Cluster administration (leader only, except `Init`).
    async fn admin(request: AdminRequest) -> Result<AdminReply, ApiError>;
}

/// A KV write without a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvWrite {
    /// Put.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Delete.
    Delete {
        /// Key.
        key: String,
    },
    /// Compare-and-set on the modification revision (0 = must not exist).
    Cas {
        /// Key.
        key: String,
        /// Expected revision.
        expected_revision: u64,
        /// New value.
        value: Vec<u8>,
    },
}

/// Read consistency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Consistency {
    /// Served by the leader after confirming leadership (LeaseRead while the
    /// leader lease holds, else ReadIndex). The default.
    #[default]
    Linearizable,
    /// Served from any node's applied state; may be stale. Explicit opt-in.
    Serializable,
}

/// What to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// One key.
    KvGet {
        /// Key.
        key: String,
    },
    /// Keys with a prefix, in order.
    KvRange {
        /// Prefix.
        prefix: String,
        /// At most this many.
        limit: u32,
    },
    /// A lock's holders and waiters.
    Lock {
        /// Lock name.
        name: String,
    },
    /// A session.
    Session {
        /// Session id.
        session: SessionId,
    },
    /// An election.
    Election {
        /// Election name.
        name: String,
    },
    /// Counts.
    Stats,
}

/// Answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryReply {
    /// Applied index the answer reflects.
    pub applied_index: u64,
    /// Cluster time the answer is as of, µs.
    pub cluster_ts_us: u64,
    /// The answer.
    pub result: QueryResult,
}

/// The data of a [`QueryReply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryResult {
    /// A key (None = absent).
    Kv(Option<KvView>),
    /// A key range.
    KvRange(Vec<(String, KvView)>),
    /// A lock (None = free and not in lock-delay).
    Lock(Option<LockView>),
    /// A session (None = unknown or expired).
    Session(Option<SessionView>),
    /// An election (None = nobody campaigns).
    Election(Option<ElectionView>),
    /// Counts.
    Stats(Stats),
}

/// Which events an observer wants. An event matches if any given criterion
/// matches; with none given, every event matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventFilter {
    /// Events about this session (grants, releases, probes, its end,
    /// handovers it takes part in).
    pub session: Option<SessionId>,
    /// KV changes under this prefix.
    pub key_prefix: Option<String>,
    /// Events of this election.
    pub election: Option<String>,
}

/// Events returned by [`DriftlockApi::observe`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Matching events with the log index of the entry that produced them,
    /// in log order.
    pub events: Vec<(u64, Event)>,
    /// Pass this as `after_index` next time.
    pub next_after_index: u64,
    /// Events after the requested index were dropped from this node's
    /// buffer: the observer must re-read the state it cares about.
    pub truncated: bool,
}

/// A node's role in Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Leader.
    Leader,
    /// Follower (voter).
    Follower,
    /// Candidate in an election.
    Candidate,
    /// Non-voting learner.
    Learner,
    /// Shutting down.
    Shutdown,
}

/// A node's view of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub id: u64,
    /// Client API address.
    pub client_addr: String,
    /// Raft address.
    pub raft_addr: String,
    /// Role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of, with its client address.
    pub leader: Option<(u64, String)>,
    /// Last log index.
    pub last_log_index: u64,
    /// Last applied index.
    pub applied_index: u64,
    /// Voters of the current membership, with their client addresses.
    pub voters: Vec<(u64, String)>,
    /// Learners, with their client addresses.
    pub learners: Vec<(u64, String)>,
    /// Cluster time of the last applied entry, µs.
    pub cluster_ts_us: u64,
    /// State-machine counts from this node's applied state.
    pub stats: Stats,
    /// This node's committed health sample, if it reported one.
    pub health: Option<HealthSample>,
    /// Node Health Index of that sample under the replicated config, permille.
    pub nhi_permille: Option<u32>,
    /// Tier of that index.
    pub health_tier: Option<HealthTier>,
    /// This node's committed clock estimate, if the leader committed one.
    pub clock: Option<ClockEstimate>,
    /// The drift bound this node stamps cluster time with when leading, ppm.
    pub rho_hi_ppm: u64,
    /// Locks with the highest acquire rates seen by this node as leader,
    /// hottest first (empty on followers).
    pub hot_locks: Vec<HotLock>,
}

/// A lock whose acquire rate is at or above the node's hot threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotLock {
    /// Lock name.
    pub name: String,
    /// Estimated acquire rate, thousandths per second.
    pub rate_milli_per_s: u64,
}

/// Cluster administration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Initialize a new cluster with these members (id, raft address,
    /// client address). Only on a node that has never been initialized.
    Init {
        /// Members.
        members: Vec<MemberAddr>,
    },
    /// Add a non-voting learner and wait until it has caught up.
    AddLearner {
        /// The new node.
        member: MemberAddr,
    },
    /// Make these node ids the voters (joint consensus).
    ChangeVoters {
        /// Voter ids.
        voters: Vec<u64>,
    },
    /// A node's health sample for the leader to commit (rate-limited).
    ReportHealth {
        /// Reporting node.
        node: u64,
        /// The sample.
        sample: HealthSample,
    },
    /// Start a warm handover of an election's master (operator trigger).
    Handover {
        /// Election name.
        election: String,
        /// Candidate session; `None` = the healthiest candidate.
        to: Option<SessionId>,
    },
    /// Hand Raft leadership to this node.
    TransferLeader {
        /// Target node id.
        to: u64,
    },
}

/// A member's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddr {
    /// Node id.
    pub id: u64,
    /// Raft (node-to-node) address, `host:port`.
    pub raft_addr: String,
    /// Client API address, `host:port`.
    pub client_addr: String,
}

/// Answer to an [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminReply {
    /// Done.
    Done,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// This node is not the leader; try the hinted one.
    #[error("not the leader (leader: {leader_hint:?})")]
    NotLeader {
        /// The leader this node knows of: id and client address.
        leader_hint: Option<(u64, String)>,
    },
    /// The state machine refused the command; nothing changed.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The outcome is unknown (e.g. leadership lost while it was in
    /// flight): retry with the same session sequence number.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// The node cannot serve now (no leader, shutting down, not initialized).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl EventFilter {
    /// Whether `event` passes this filter.
    pub fn matches(&self, event: &Event) -> bool {
        if self.session.is_none() && self.key_prefix.is_none() && self.election.is_none() {
            return true;
        }
        if let Some(s) = self.session {
            if event_session_matches(event, s) {
                return true;
            }
        }
        if let (Some(prefix), Event::KvChanged { key, .. }) = (&self.key_prefix, event) {
            if key.starts_with(prefix.as_str()) {
                return true;
            }
        }
        if let (Some(want), Some(election)) = (&self.election, event_election(event)) {
            if want == election {
                return true;
            }
        }
        false
    }
}

/// Whether an event concerns session `s`.
fn event_session_matches(event: &Event, s: SessionId) -> bool {
    match event {
        Event::SessionOpened { session }
        | Event::SessionEnded { session, .. }
        | Event::LockGranted { session, .. }
        | Event::LockReleased { session, .. }
        | Event::WaitTimedOut { session, .. }
        | Event::Probe { session, .. }
        | Event::ClockSkewDetected { session, .. } => *session == s,
        Event::MasterChanged { master, .. } => *master == Some(s),
        Event::HandoverBegun { from, to, .. } | Event::LeaseTransferred { from, to, .. } => *from == s || *to == s,
        _ => false,
    }
}

/// The election an event belongs to, if any.
fn event_election(event: &Event) -> Option<&str> {
    match event {
        Event::MasterChanged { election, .. }
        | Event::HandoverBegun { election, .. }
        | Event::HandoverChunk { election, .. }
        | Event::HandoverAcked { election, .. }
        | Event::LeaseTransferred { election, .. }
        | Event::HandoverAborted { election, .. } => Some(election),
        _ => None,
    }
}
