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
pub const SNAPSHOT_VERSION: u32 = 5;

/// A versioned, serializable image of the whole state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version; [`SNAPSHOT_VERSION`] when produced by this build.
    pub version: u32,
    /// The whole replicated state: configuration, cluster time, records, timers
    /// and dedupe caches. The derived lock counts are not in it; restore
    /// recounts them.
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
        }
    }

    /// Rebuilds a state machine from a snapshot, checking its version and
    /// invariants.
    pub fn restore(snapshot: Snapshot) -> Result<Self, RestoreError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(RestoreError::UnsupportedVersion(snapshot.version));
        }
        let mut state = snapshot.state;
        state.counts = LockCounts::of(&state.locks);
        state.check_invariants().map_err(RestoreError::Inconsistent)?;
        Ok(state)
    }
}
