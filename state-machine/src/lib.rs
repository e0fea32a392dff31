//! driftlock's replicated state machine: a pure, deterministic function from
//! committed log entries to state, replies and events.
//!
//! Sessions, locks (exclusive and shared, FIFO waiters, fencing tokens,
//! lock-delay), a fenced KV store, elections with master epochs and warm
//! handover, and the committed inputs of the predictive features (health and
//! clock reports, suspicion, revocation) all live here. The crate does no
//! I/O, reads no clock, draws no random numbers and iterates only ordered
//! collections, so replicas fed the same entries hold byte-identical state.
//!
//! Time enters only through [`EntryMeta::ts_us`], the cluster time the leader
//! stamped on the entry; the state machine uses `max(previous, ts_us)` and
//! expires everything whose deadline has passed, in deadline order, before
//! applying the entry (docs/design.md "Time").
//!
//! # Layout, along the path of an entry
//!
//! - `command.rs`: the log entry ([`Command`], [`StampedCommand`],
//!   [`EntryMeta`]) and the [`Response`] to it;
//! - `apply.rs`: [`StateMachine::apply`], dispatch, and the per-session
//!   dedupe cache;
//! - `timers.rs`: the deadline index and what each timer does when it fires;
//! - `sessions.rs`, `locks.rs`, `kv.rs`, `elections.rs`, `reports.rs`: one
//!   file per kind of request, each changing its records;
//! - `validate.rs`: the input checks those requests share;
//! - `authz.rs`: the access policy's checks at apply (proposer rights,
//!   session ownership, `SetPolicy`) and the dedupe digest;
//! - `time.rs`: the safety arithmetic of time (drift bounds, drift margins,
//!   lock-delay, the client clock check);
//! - [`lease`]: the adaptive lease formula;
//! - `entities.rs`: the records the state is made of;
//! - `reads.rs`: views of the state at a given cluster time, and stats;
//! - `invariants.rs`: the full structural check;
//! - `snapshot.rs`: [`Snapshot`] and restore.

#![forbid(unsafe_code)]

mod apply;
mod authz;
mod command;
mod decode;
mod elections;
mod entities;
mod invariants;
mod kv;
pub mod lease;
mod locks;
mod reads;
mod reports;
mod sessions;
mod snapshot;
mod time;
mod timers;
mod validate;

pub use command::{Command, EntryMeta, Response, StampedCommand};
pub use snapshot::{RestoreError, Snapshot, SnapshotV5, SNAPSHOT_VERSION};

use std::collections::BTreeMap;

use imbl::{OrdMap, OrdSet};

use driftlock_proto::{
    AccessPolicy, ClockEstimate, Config, ConfigView, HealthSample, PolicyView, Principal, SessionId,
};
use serde::{Deserialize, Serialize};

use entities::{Election, KvEntry, Lock, LockCounts, LockName, Session};
use timers::Timer;

/// The replicated state.
///
/// Its serialized fields, in this order, are the snapshot encoding (see
/// [`Snapshot`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    pub(crate) config: Config,
    pub(crate) last_index: u64,
    pub(crate) ts_eff_us: u64,
    #[serde(deserialize_with = "decode::ord_map")]
    pub(crate) sessions: OrdMap<SessionId, Session>,
    #[serde(deserialize_with = "decode::ord_map")]
    pub(crate) session_by_nonce: OrdMap<u128, SessionId>,
    #[serde(deserialize_with = "decode::ord_map")]
    pub(crate) locks: OrdMap<LockName, Lock>,
    #[serde(deserialize_with = "decode::ord_map")]
    pub(crate) kv: OrdMap<String, KvEntry>,
    #[serde(deserialize_with = "decode::ord_map")]
    pub(crate) elections: OrdMap<String, Election>,
    #[serde(deserialize_with = "decode::ord_set")]
    pub(crate) timers: OrdSet<(u64, Timer)>,
    pub(crate) node_health: BTreeMap<u64, HealthSample>,
    pub(crate) node_clocks: BTreeMap<u64, ClockEstimate>,
    /// The access policy in force (docs/security.md, "Policy model"); the
    /// open default until the first `SetPolicy`.
    pub(crate) policy: AccessPolicy,
    /// Log index of the `SetPolicy` that put `policy` in force; 0 = the
    /// default.
    pub(crate) policy_revision: u64,
    /// Log index of the `SetConfig` that put `config` in force; 0 = the
    /// configuration the cluster started with.
    pub(crate) config_revision: u64,
    /// Revision of the last applied command (docs/design.md "Batched
    /// proposals"): the fencing tokens, session ids, epochs and KV
    /// revisions handed out so far are all at most this. Serialized in
    /// [`Snapshot::last_revision`], not here, so that a version-5 snapshot
    /// (written before batches) still decodes.
    #[serde(skip)]
    pub(crate) last_revision: u64,
    /// Locks with at least one holder and waiters across all locks, kept
    /// as each changes so `stats()` never walks the lock table. Derived
    /// state: not serialized, recounted on restore and checked by
    /// `check_invariants`.
    #[serde(skip)]
    pub(crate) counts: LockCounts,
}

impl StateMachine {
    /// An empty state machine with the given configuration.
    pub fn new(config: Config) -> Self {
        StateMachine {
            config,
            ..Default::default()
        }
    }

    /// Log index of the last applied entry (0 before any).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Revision of the last applied command (0 before any): the largest
    /// fencing token, session id, epoch or KV revision handed out so far.
    /// Equal to [`last_index`](Self::last_index) until a batch entry is
    /// applied, ahead of it after.
    pub fn last_revision(&self) -> u64 {
        self.last_revision
    }

    /// Effective cluster time of the last applied entry, µs.
    pub fn ts_eff_us(&self) -> u64 {
        self.ts_eff_us
    }

    /// The replicated configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration in force with the index of the entry that set it.
    pub fn config_view(&self) -> ConfigView {
        ConfigView {
            config: self.config.clone(),
            revision: self.config_revision,
        }
    }

    /// Log index of the `SetConfig` that put the configuration in force
    /// (0 = the one the cluster started with).
    pub fn config_revision(&self) -> u64 {
        self.config_revision
    }

    /// The access policy in force.
    pub fn policy(&self) -> &AccessPolicy {
        &self.policy
    }

    /// The access policy in force with the index of the entry that set it.
    pub fn policy_view(&self) -> PolicyView {
        PolicyView {
            policy: self.policy.clone(),
            revision: self.policy_revision,
        }
    }

    /// Who opened `session` and the SHA-256 of its secret, while the
    /// session exists (whatever its deadline): what the node checks a
    /// session operation against before proposing it.
    pub fn session_owner(&self, session: SessionId) -> Option<(&Principal, &[u8; 32])> {
        self.sessions.get(&session).map(|s| (&s.owner, &s.secret_sha256))
    }
}
