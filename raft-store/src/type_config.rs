//! The one openraft type configuration of driftlock.
//!
//! It lives here, in `raft-store`, because this crate is the lowest one that
//! needs it: the storage traits are generic over it, and the node depends on
//! this crate anyway. The node uses [`TypeConfig`] (and the aliases below)
//! for `openraft::Raft`, its network and its RPC types, so log entries written
//! here and entries sent over the wire are the same type.
//!
//! - `NodeId` = `u64`, `Node` = [`NodeAddr`]: the node's Raft address and its
//!   client API address, so that any node can point a client at the leader.
//! - `D` = [`StampedRequest`]: a [`StampedCommand`], i.e. a state-machine
//!   command plus the cluster time the leader stamped on it (docs/design.md "Time"
//!   rule 2).
//! - `R` = [`ApplyOutput`]: what applying one entry produced.
//! - Everything else is openraft's default (tokio runtime, advanced leader
//!   ids, `u64` terms).

use std::fmt;
use std::io::Cursor;

use driftlock_state_machine::{Response, StampedCommand};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// driftlock's openraft type configuration, shared by the node and this
    /// crate.
    pub TypeConfig:
        D = StampedRequest,
        R = ApplyOutput,
        NodeId = u64,
        Node = NodeAddr,
);

/// The addresses of a cluster member, stored in the Raft membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeAddr {
    /// Node-to-node Raft address, `host:port`.
    pub raft_addr: String,
    /// Client API address, `host:port`.
    pub client_addr: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} client={}", self.raft_addr, self.client_addr)
    }
}

/// The application payload of a log entry: a [`StampedCommand`].
///
/// A transparent newtype only because openraft requires `Display` of its
/// application data and the orphan rule forbids implementing it here for the
/// state machine's type. It serializes exactly like the inner
/// [`StampedCommand`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StampedRequest(pub StampedCommand);

impl From<StampedCommand> for StampedRequest {
    fn from(stamped: StampedCommand) -> Self {
        StampedRequest(stamped)
    }
}

impl From<StampedRequest> for StampedCommand {
    fn from(request: StampedRequest) -> Self {
        request.0
    }
}

/// Longest command description [`StampedRequest`]'s `Display` writes, in
/// characters; commands can carry large byte payloads.
const DISPLAY_MAX_CHARS: usize = 96;

impl fmt::Display for StampedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let command = format!("{:?}", self.0.command);
        match command.char_indices().nth(DISPLAY_MAX_CHARS) {
            Some((cut, _)) => write!(f, "@{}us {}…", self.0.ts_us, &command[..cut]),
            None => write!(f, "@{}us {}", self.0.ts_us, command),
        }
    }
}

/// What applying one log entry produced; openraft returns it from
/// `client_write` to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutput {
    /// Log index of the applied entry.
    pub index: u64,
    /// The state machine's effective cluster time after the entry, µs.
    pub ts_eff_us: u64,
    /// The state machine's answers to a normal entry, one per command (a
    /// [`Command::Batch`](driftlock_state_machine::Command::Batch) holds
    /// several, in order); empty for blank and membership entries, which do
    /// not reach the state machine.
    pub responses: Vec<Response>,
}

/// A log id of [`TypeConfig`].
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// The log id of entry `index`, created by the leader `leader` of `term`
/// (openraft's leader ids are `(term, node)`).
pub fn log_id(term: u64, leader: u64, index: u64) -> LogId {
    LogId {
        leader_id: openraft::vote::leader_id_adv::LeaderId { term, node_id: leader },
        index,
    }
}

/// A log entry of [`TypeConfig`].
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A vote (leader id and whether it is committed) of [`TypeConfig`]; the log
/// store flushes it before `save_vote` returns.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A membership config with the log id that introduced it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// Metadata of a snapshot: the last log id it covers, the membership as of that
/// entry, and the snapshot's id.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// The snapshot data the state machine produces and installs: the framed
/// (`[len][crc32][bincode]`) encoding of a state-machine
/// [`Snapshot`](driftlock_state_machine::Snapshot), read from / written to
/// memory. The node's network sends these bytes as they are.
pub type SnapshotData = Cursor<Vec<u8>>;
/// A snapshot (metadata and data) of [`TypeConfig`].
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
