//! The requests and replies of the client API that are not state-machine
//! commands: sessionless KV writes, reads, node status and administration,
//! and the transport-level errors.

use serde::{Deserialize, Serialize};

use crate::reply::Rejection;
use crate::types::{ClockEstimate, HealthSample, HealthTier, SessionId};
use crate::views::{ElectionView, KvView, LockView, SessionView, Stats};

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
    /// Keys with a prefix, in key order, one page at a time.
    KvRange {
        /// Only keys starting with this (empty: every key).
        prefix: String,
        /// Only keys after this one: the last key of the previous page.
        start_after: Option<String>,
        /// At most this many keys; a node also stops at
        /// [`MAX_RANGE_KEYS`](crate::limits::MAX_RANGE_KEYS) and after
        /// [`MAX_BATCH_BYTES`](crate::limits::MAX_BATCH_BYTES) of entries.
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
    /// One page of a key range.
    KvRange {
        /// Keys and their values, in key order.
        entries: Vec<(String, KvView)>,
        /// More keys match after the last one here: ask again with it as
        /// `start_after` to read them.
        more: bool,
    },
    /// A lock (None = free and not in lock-delay).
    Lock(Option<LockView>),
    /// A session (None = unknown or expired).
    Session(Option<SessionView>),
    /// An election (None = nobody campaigns).
    Election(Option<ElectionView>),
    /// Counts.
    Stats(Stats),
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
