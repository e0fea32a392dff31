//! Snapshots: a versioned image of the whole state, and its restore, which
//! rebuilds the derived counts and refuses a state that breaks an
//! invariant.
//!
//! The encoding is serde's derive over [`StateMachine`] and the records of
//! `entities.rs` and `timers.rs`, field by field in declaration order, so
//! any change to a serialized field or variant changes the format and
//! needs a new [`SNAPSHOT_VERSION`].

use serde::{Deserialize, Serialize};

use crate::entities::LockCounts;
use crate::StateMachine;

/// Version of the snapshot format produced by [`StateMachine::snapshot`].
/// 2: lock holders no longer carry a predicted release time.
/// 3: the client clock check moved from lock holds to renewals (holders
/// carry no client clock; sessions carry `ClientClock`).
/// 4: the access policy and its revision; sessions carry their owner and
/// secret digest; cached responses carry the digest of their operation.
/// 5: the config revision (the index of the `SetConfig` in force).
/// 6: the last revision handed out, after the state (batched entries hand
/// out several revisions per log index). A version-5 snapshot still
/// restores ([`SnapshotV5`]).
pub const SNAPSHOT_VERSION: u32 = 6;

/// A versioned, serializable image of the whole state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version; [`SNAPSHOT_VERSION`] when produced by this build.
    pub version: u32,
    /// The whole replicated state: configuration, cluster time, records, timers
    /// and dedupe caches. The derived lock counts are not in it; restore
    /// recounts them.
    pub state: StateMachine,
    /// Revision of the last command applied ([`StateMachine::last_revision`]).
    /// Last, so that the encoding up to here is that of a version-5
    /// snapshot and [`SnapshotV5`] decodes the head of either.
    pub last_revision: u64,
}

/// The version-5 snapshot format: the head of every later one. A decoder
/// reads this first (bincode allows the trailing bytes of a newer format),
/// then, by `version`, the whole [`Snapshot`] or restores this
/// ([`StateMachine::restore_v5`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotV5 {
    /// Format version of the snapshot this head was read from.
    pub version: u32,
    /// The whole replicated state.
    pub state: StateMachine,
}

/// Why a snapshot could not be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The snapshot was written by an incompatible format version.
    UnsupportedVersion(u32),
    /// The snapshot's state breaks an invariant.
    Inconsistent(String),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "snapshot format version {v} is not supported (this build reads {SNAPSHOT_VERSION})"
                )
            }
            RestoreError::Inconsistent(d) => write!(f, "snapshot state is inconsistent: {d}"),
        }
    }
}

impl std::error::Error for RestoreError {}

impl StateMachine {
    /// A versioned image of the state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            state: self.clone(),
            last_revision: self.last_revision,
        }
    }

    /// Rebuilds a state machine from a snapshot, checking its version and
    /// invariants.
    pub fn restore(snapshot: Snapshot) -> Result<Self, RestoreError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(RestoreError::UnsupportedVersion(snapshot.version));
        }
        let mut state = snapshot.state;
        state.last_revision = snapshot.last_revision;
        Self::finish_restore(state)
    }

    /// Rebuilds a state machine from a version-5 snapshot, written before
    /// batched entries existed: every revision it handed out was the index
    /// of its entry, so the last revision is the last applied index.
    pub fn restore_v5(snapshot: SnapshotV5) -> Result<Self, RestoreError> {
        if snapshot.version != 5 {
            return Err(RestoreError::UnsupportedVersion(snapshot.version));
        }
        let mut state = snapshot.state;
        state.last_revision = state.last_index;
        Self::finish_restore(state)
    }

    /// Recounts the derived state and checks every invariant.
    fn finish_restore(mut state: StateMachine) -> Result<Self, RestoreError> {
        state.counts = LockCounts::of(&state.locks, &state.sessions);
        state.check_invariants().map_err(RestoreError::Inconsistent)?;
        Ok(state)
    }
}
