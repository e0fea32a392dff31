//! The requests and replies of the client API that are not state-machine
//! commands: sessionless KV writes, reads, node status and administration,
//! and the transport-level errors.

use serde::{Deserialize, Serialize};

use crate::auth::{AccessPolicy, Action, Denied, PolicyView};
use crate::config::{Config, ConfigView};
use crate::reply::Rejection;
use crate::types::{ClockEstimate, HealthSample, HealthTier, SessionId};
use crate::views::{ElectionView, KvView, LockView, SessionView, Stats};

/// A KV write without a session (`DriftlockApi::kv_write`): for operators
/// and the CLI. It is not deduplicated, so a write whose outcome is unknown
/// cannot be retried safely; it cannot be fenced either (fences need a
/// session). Keys must be non-empty and at most `limits.max_name_bytes`,
/// values at most `limits.max_value_bytes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvWrite {
    /// Create or overwrite a key.
    Put {
        /// The key: non-empty, at most `limits.max_name_bytes`.
        key: String,
        /// The value to store, at most `limits.max_value_bytes`.
        value: Vec<u8>,
    },
    /// Delete a key (`Rejection::KeyNotFound` if it does not exist).
    Delete {
        /// The key: non-empty, at most `limits.max_name_bytes`.
        key: String,
    },
    /// Compare-and-set on the key's modification revision.
    Cas {
        /// The key: non-empty, at most `limits.max_name_bytes`.
        key: String,
        /// Expected `mod_revision`; 0 means "the key must not exist".
        expected_revision: u64,
        /// The value to store, at most `limits.max_value_bytes`.
        value: Vec<u8>,
    },
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Consistency {
    /// Served by the leader after confirming with a quorum that it still
    /// leads (ReadIndex, never a clock-based lease). The default.
    #[default]
    Linearizable,
    /// Served from any node's applied state; may be stale. Explicit opt-in.
    Serializable,
}

/// What to read. Reads that depend on expiry (locks, sessions, elections)
/// are answered as of the serving node's current cluster time
/// (docs/design.md "Time", rule 8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// One key's value and revisions, or `None` when it does not exist.
    KvGet {
        /// The key to read.
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
    /// A lock's holders, waiters, newest token and lock-delay.
    Lock {
        /// The lock to read (any name; an unknown or free lock reads as `None`).
        name: String,
    },
    /// A session's deadline, lease decision, suspicion, drift bound and
    /// held locks.
    Session {
        /// The session's id.
        session: SessionId,
    },
    /// An election's master, epoch, candidates and handover.
    Election {
        /// The election to read.
        name: String,
    },
    /// Counts of the state ([`Stats`]).
    Stats,
    /// The access policy in force and its revision (administrators only).
    Policy,
    /// The replicated configuration in force and its revision (any
    /// authenticated client: it holds bounds and weights, no names).
    Config,
}

/// Answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryReply {
    /// Revision of the last command applied to the state the answer was
    /// read from (docs/design.md "Batched proposals"): pass it as
    /// `observe`'s `after_index` to follow every change after this answer.
    pub revision: u64,
    /// Cluster time the answer is as of, µs: the serving node's current
    /// cluster time (rule 2's formula at the moment of the read), which can
    /// be later than the last applied entry's.
    pub cluster_ts_us: u64,
    /// The data read, of the variant matching the [`Query`] asked.
    pub result: QueryResult,
}

/// The data of a [`QueryReply`], one variant per [`Query`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryResult {
    /// A key (`None` = absent).
    Kv(Option<KvView>),
    /// One page of a key range.
    KvRange {
        /// Keys and their values, in key order.
        entries: Vec<(String, KvView)>,
        /// More keys match after the last one here: ask again with it as
        /// `start_after` to read them.
        more: bool,
    },
    /// A lock (`None` = free: no holder, no waiter, no lock-delay).
    Lock(Option<LockView>),
    /// A session (`None` = unknown, closed, or past its deadline).
    Session(Option<SessionView>),
    /// An election (`None` = no master, candidate, handover or succession
    /// delay).
    Election(Option<ElectionView>),
    /// Counts of the node's applied state.
    Stats(Stats),
    /// The access policy in force.
    Policy(PolicyView),
    /// The replicated configuration in force.
    Config(ConfigView),
}

/// A node's role in Raft, as openraft reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The leader: serves mutations and linearizable reads.
    Leader,
    /// A voter following a leader.
    Follower,
    /// A voter standing for election (no leader known to it).
    Candidate,
    /// A non-voting member that replicates the log.
    Learner,
    /// Raft on this node is shutting down.
    Shutdown,
}

/// A node's view of itself, answered locally by `DriftlockApi::status`
/// without a Raft round trip (it may lag the leader).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node's Raft id.
    pub id: u64,
    /// Its client API address, `host:port`.
    pub client_addr: String,
    /// Its Raft (node-to-node) address, `host:port`.
    pub raft_addr: String,
    /// Its Raft role now.
    pub role: Role,
    /// Its current Raft term.
    pub term: u64,
    /// The leader this node knows of: Raft id and client address.
    pub leader: Option<(u64, String)>,
    /// Index of the last entry in its log (0 = empty).
    pub last_log_index: u64,
    /// Index of the last entry applied to its state machine.
    pub applied_index: u64,
    /// Voters of the current membership: Raft id and client address.
    pub voters: Vec<(u64, String)>,
    /// Learners of the current membership: Raft id and client address.
    pub learners: Vec<(u64, String)>,
    /// Effective cluster time of the last applied entry, µs.
    pub cluster_ts_us: u64,
    /// Revision of the replicated configuration this node applies: the
    /// revision of the `SetConfig` that put it in force (0 = the default
    /// of a new cluster). Nodes that show different revisions have not all
    /// applied the latest change yet.
    pub config_revision: u64,
    /// State-machine counts from this node's applied state.
    pub stats: Stats,
    /// This node's committed health sample; `None` until the leader has
    /// committed one.
    pub health: Option<HealthSample>,
    /// Node Health Index of that sample under the replicated config,
    /// permille (1000 = perfectly healthy).
    pub nhi_permille: Option<u32>,
    /// Tier of that index.
    pub health_tier: Option<HealthTier>,
    /// This node's committed clock estimate; `None` until the leader has
    /// committed one.
    pub clock: Option<ClockEstimate>,
    /// `ρ_hi`, the drift bound this node stamps cluster time with when it
    /// leads, ppm (docs/design.md "Time", rule 2).
    pub rho_hi_ppm: u64,
    /// Locks with the highest acquire rates seen by this node as leader,
    /// hottest first (empty on followers).
    pub hot_locks: Vec<HotLock>,
    /// Snapshots this node installed from a leader since it started: each
    /// time it lagged beyond the log the leader still kept.
    pub snapshots_installed: u64,
    /// What an operator should act on about this node, one sentence each
    /// (e.g. its TLS certificate expires within 30 days); empty when all
    /// is well.
    pub warnings: Vec<String>,
    /// Revision of the last command applied to its state machine: the
    /// largest fencing token, session id, epoch or KV revision it has
    /// applied, and where `observe` finds the newest events. Equal to the
    /// applied index until a batch entry was applied, ahead of it after.
    pub applied_revision: u64,
}

/// A lock whose acquire rate is at or above the node's hot threshold
/// (the predictor's `hot_lock_rate_per_s` setting, default 2/s).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotLock {
    /// The lock's name (leader-side statistics only; nothing replicated).
    pub name: String,
    /// Estimated acquire rate (an exponentially weighted moving average
    /// with a 10 s time constant), thousandths per second.
    pub rate_milli_per_s: u64,
}

/// Cluster administration (`DriftlockApi::admin`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Initialize a new cluster with these members as its voters. Only on a
    /// node that has never been initialized, and that is itself one of the
    /// members.
    Init {
        /// Every initial member with its addresses.
        members: Vec<MemberAddr>,
    },
    /// Add a non-voting learner and wait until it has caught up.
    AddLearner {
        /// The new node with its addresses.
        member: MemberAddr,
    },
    /// Make exactly these node ids the voters (openraft's joint consensus);
    /// each must already be a member (add new nodes as learners first), and
    /// at least one is needed.
    ChangeVoters {
        /// Raft ids of the new voter set.
        voters: Vec<u64>,
    },
    /// A node's own health sample, sent by a follower to the leader, which
    /// commits it only when it changed enough or is due for a refresh.
    ReportHealth {
        /// The reporting node's Raft id (must be a member).
        node: u64,
        /// What it measured of its host.
        sample: HealthSample,
    },
    /// Start a warm handover of an election's master (operator trigger).
    Handover {
        /// The election whose master should hand over.
        election: String,
        /// The candidate session to hand to; `None` = the best candidate by
        /// committed health, load and RTT.
        to: Option<SessionId>,
    },
    /// Hand Raft leadership to this node (openraft's `transfer_leader`).
    /// Answered once the target leads; `Unavailable`, with nothing
    /// changed, if the target is not caught up with the leader's log
    /// within an election timeout (down, paused, catching up).
    TransferLeader {
        /// The target's Raft id; must be a voter.
        to: u64,
    },
    /// Put a new access policy in force (committed as `SetPolicy`, so every
    /// node enforces it from the same entry on). Refused with
    /// `InvalidPolicy` unless it passes [`AccessPolicy::validate`].
    SetPolicy {
        /// The whole new policy (it replaces the old one).
        policy: AccessPolicy,
        /// The revision (`PolicyView::revision`) the change was made
        /// against; the state machine refuses it with `RevisionMismatch` if
        /// another change came in between. `None` replaces whatever is in
        /// force.
        expected_revision: Option<u64>,
    },
    /// Put a new replicated configuration in force (committed as
    /// `SetConfig`, so every replica computes leases, margins and limits
    /// with it from the same entry on). Refused with `InvalidConfig` unless
    /// it passes [`Config::validate`], checked by the serving node before
    /// proposing and again at apply.
    SetConfig {
        /// The whole new configuration (it replaces the old one).
        config: Config,
        /// The revision (`ConfigView::revision`) the change was made
        /// against; the state machine refuses it with `RevisionMismatch`
        /// if another change came in between. `None` replaces whatever is
        /// in force.
        expected_revision: Option<u64>,
    },
    /// Read one chunk of the leader's stored Raft snapshot, for a backup
    /// (`driftlock snapshot save`; docs/design.md "Backup and restore").
    /// Leader only. With `snapshot: None` the leader first confirms its
    /// leadership (ReadIndex) and builds a fresh snapshot covering every
    /// entry committed before the request, then answers the chunk at
    /// `offset` of it; every later request names the snapshot the first
    /// reply identified, and is refused with `InvalidRequest` if the node no
    /// longer stores that one (replaced by a newer snapshot, or another
    /// leader answered), so a backup is never a mix of two snapshots.
    ReadSnapshot {
        /// The snapshot the transfer started on; `None` to build a fresh
        /// one and start.
        snapshot: Option<SnapshotId>,
        /// Byte offset of the chunk in the snapshot data; at most the
        /// data's length (an offset equal to it reads an empty chunk).
        offset: u64,
    },
}

impl AdminRequest {
    /// The request's kind, for logs, metrics and refusals: `init`,
    /// `add_learner`, `change_voters`, `report_health`, `handover`,
    /// `transfer_leader`, `set_policy`, `set_config`, `read_snapshot`.
    pub fn kind(&self) -> &'static str {
        match self {
            AdminRequest::Init { .. } => "init",
            AdminRequest::AddLearner { .. } => "add_learner",
            AdminRequest::ChangeVoters { .. } => "change_voters",
            AdminRequest::ReportHealth { .. } => "report_health",
            AdminRequest::Handover { .. } => "handover",
            AdminRequest::TransferLeader { .. } => "transfer_leader",
            AdminRequest::SetPolicy { .. } => "set_policy",
            AdminRequest::SetConfig { .. } => "set_config",
            AdminRequest::ReadSnapshot { .. } => "read_snapshot",
        }
    }
}

/// A member's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddr {
    /// The node's Raft id (non-zero, unique in the cluster).
    pub id: u64,
    /// Raft (node-to-node) address, `host:port`.
    pub raft_addr: String,
    /// Client API address, `host:port`.
    pub client_addr: String,
}

/// Answer to an [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminReply {
    /// The request took effect (for `ReportHealth`: was accepted, whether
    /// or not it was worth committing).
    Done,
    /// One chunk of a stored snapshot (`ReadSnapshot`).
    SnapshotChunk(SnapshotChunk),
}

/// Names a stored Raft snapshot by the log id of the last entry it covers:
/// two snapshots with the same id hold the same state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SnapshotId {
    /// Log index of the last entry the snapshot covers.
    pub index: u64,
    /// Raft term of the leader that created that entry.
    pub term: u64,
    /// Raft id of the leader that created that entry (openraft's leader ids
    /// are `(term, node)`).
    pub leader: u64,
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "index {} (term {}, leader {})", self.index, self.term, self.leader)
    }
}

/// The membership a snapshot was taken under: who the old cluster was.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMembership {
    /// Raft ids of the voters (of every configuration, during a joint
    /// change), ascending.
    pub voters: Vec<u64>,
    /// Every member (voters and learners) with its addresses, by id.
    pub members: Vec<MemberAddr>,
}

/// One chunk of a snapshot's data, with what identifies the snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The snapshot this chunk belongs to.
    pub snapshot: SnapshotId,
    /// The membership recorded with the snapshot.
    pub membership: SnapshotMembership,
    /// Length of the whole snapshot data, bytes.
    pub total_bytes: u64,
    /// Offset of `data` in the snapshot data, bytes (the requested one).
    pub offset: u64,
    /// At most [`MAX_BATCH_BYTES`](crate::limits::MAX_BATCH_BYTES) bytes
    /// of the snapshot data from `offset`; empty only at the end. The data
    /// is the store's framed encoding of the state machine's snapshot
    /// (`[len u32 LE][crc32 u32 LE][bincode]`).
    pub data: Vec<u8>,
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
    /// The request is malformed or names something that does not exist
    /// (e.g. a node that is not a member); the message says what.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The outcome is unknown (e.g. leadership lost while it was in
    /// flight): retry with the same session sequence number.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// The node cannot serve now (no leader, shutting down, not
    /// initialized); nothing was done, so the request may go elsewhere.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The principal of the connection may not do this (docs/security.md,
    /// "Policy model"); the node refused before proposing, so nothing
    /// changed. Retrying will not help until the policy changes.
    #[error("{}", DeniedDisplay(.principal, .action, .name))]
    PermissionDenied {
        /// Who asked, as the certificate names them (`alice`, `ops
        /// (admin)`, `node 3`).
        principal: String,
        /// What was refused.
        action: Action,
        /// The lock, key, prefix, election, session or request refused;
        /// empty when the action names nothing.
        name: String,
    },
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        ApiError::PermissionDenied {
            principal: d.principal,
            action: d.action,
            name: d.name,
        }
    }
}

/// Formats a refusal's fields as [`Denied`] does.
pub(crate) struct DeniedDisplay<'a>(pub &'a str, pub &'a Action, pub &'a str);

impl std::fmt::Display for DeniedDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::auth::write_denied(f, self.0, *self.1, self.2)
    }
}
