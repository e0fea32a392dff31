//! The records the state is made of: sessions, lock holders and waiters,
//! locks, KV entries, elections with their masters, candidates and
//! handovers, and the derived lock counts.
//!
//! Every serialized record here is part of the snapshot encoding
//! ([`crate::Snapshot`]): the order of fields is the order of bytes, so a
//! field is never reordered, renamed into another type or removed without
//! bumping [`crate::SNAPSHOT_VERSION`]. Behaviour lives with the request
//! that changes a record (`sessions.rs`, `locks.rs`, `kv.rs`,
//! `elections.rs`); this file holds only the shapes and the few helpers
//! that keep a record's own invariants.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use smallvec::SmallVec;

use driftlock_proto::{ClockEstimate, ClockSample, HealthSample, LeaseDecision, LockMode, Principal, SessionId};
use serde::{Deserialize, Serialize};

use crate::command::Response;

/// A lock's name as the state stores it: one allocation shared by the lock
/// table's key and the holder's and waiters' sessions (`Session::held`,
/// `Session::waiting`). Serialized as a plain string.
pub(crate) type LockName = Arc<str>;

/// A suspected session's pending probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Suspicion {
    pub(crate) score_permille: u32,
    pub(crate) probe_deadline_us: u64,
}

/// An open session, keyed by its id (the log index of its `OpenSession` entry).
/// It ends on close, at `deadline_us`, on an unanswered probe or on
/// revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) nonce: u128,
    /// Who opened it: the only principal whose operations on it apply.
    pub(crate) owner: Principal,
    /// SHA-256 of the client's session secret (never the secret itself).
    pub(crate) secret_sha256: [u8; 32],
    pub(crate) client_name: String,
    pub(crate) requested_ttl_us: u64,
    /// End of the longest validity ever granted to this session, cluster µs.
    pub(crate) deadline_us: u64,
    /// The validity granted by the last open/keepalive, µs.
    pub(crate) validity_us: u64,
    pub(crate) lease: LeaseDecision,
    pub(crate) health: Option<HealthSample>,
    pub(crate) clock: Option<ClockEstimate>,
    /// What its renewals have shown of the client's clock.
    pub(crate) client_clock: ClientClock,
    pub(crate) suspicion: Option<Suspicion>,
    /// Locks this session holds: the reverse index of [`Lock::holders`].
    #[serde(deserialize_with = "crate::decode::ord_set")]
    pub(crate) held: OrdSet<LockName>,
    /// Locks this session waits for: the reverse index of [`Lock::waiters`].
    #[serde(deserialize_with = "crate::decode::ord_set")]
    pub(crate) waiting: OrdSet<LockName>,
    /// Elections this session is master of or a candidate in.
    #[serde(deserialize_with = "crate::decode::ord_set")]
    pub(crate) campaigns: OrdSet<String>,
    /// Cached responses by sequence number, for retries, each with the
    /// digest of the operation that produced it.
    pub(crate) responses: BTreeMap<u64, Cached>,
    /// Highest sequence number whose response was evicted from the cache.
    pub(crate) forgotten_through: u64,
}

impl Session {
    /// Locks held or awaited plus elections joined: what
    /// `limits.max_locks_per_session` bounds.
    pub(crate) fn resource_count(&self) -> u64 {
        (self.held.len() + self.waiting.len() + self.campaigns.len()) as u64
    }

    /// Forgets the oldest cached responses beyond `window`.
    pub(crate) fn trim_responses(&mut self, window: u64) {
        while self.responses.len() as u64 > window {
            if let Some((evicted, _)) = self.responses.pop_first() {
                self.forgotten_through = self.forgotten_through.max(evicted);
            }
        }
        debug_assert!(self.responses.len() as u64 <= window);
    }
}

/// A remembered response of a session operation, with the digest of the
/// operation (`authz::op_digest`): a retry is answered from the cache only
/// if its digest matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cached {
    /// The first 16 bytes of the operation's SHA-256.
    pub(crate) digest: u128,
    /// What the operation answered the first time.
    pub(crate) response: Response,
}

/// Pairs of renewals whose evidence must agree before a client's drift
/// bound is widened: the widening is the smallest of their lower bounds.
pub(crate) const CLOCK_EVIDENCE_PAIRS: usize = 3;

/// What a session's renewals have shown of its client's clock
/// (docs/design.md "Clock drift", checking a client's clock).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClientClock {
    /// The newest accepted sample: the next one pairs with it.
    pub(crate) last: Option<ClockSample>,
    /// Lower bounds on the client's slowness from the latest pairs of
    /// samples, ppm, oldest first; at most [`CLOCK_EVIDENCE_PAIRS`].
    pub(crate) evidence_ppm: [u64; CLOCK_EVIDENCE_PAIRS],
    /// How many of `evidence_ppm` are filled.
    pub(crate) evidence_len: u8,
    /// The widening in force, ppm (0 = none): the largest filtered
    /// evidence seen, capped at `time.max_client_rho_ppm`. It never
    /// shrinks during the session: every piece of evidence is a sound
    /// lower bound, so the largest is too.
    pub(crate) widened_ppm: u64,
    /// The filtered evidence is beyond `time.alert_drift_ppm`.
    pub(crate) alerted: bool,
}

/// One session's grant of a lock, kept in [`Holders`] under its session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub(crate) mode: LockMode,
    pub(crate) token: u64,
    pub(crate) granted_ts_us: u64,
}

/// A queued acquire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Waiter {
    pub(crate) session: SessionId,
    pub(crate) mode: LockMode,
    pub(crate) deadline_us: u64,
}

/// A lock's holders, sorted by session id. A vector rather than a map: a
/// lock nearly always has one holder, and with a map the apply benchmark
/// measured 985 bytes per held lock against 521 with a `Vec`; inline room
/// for one holder saves the `Vec`'s heap block too (serialized the same).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Holders(#[serde(deserialize_with = "crate::decode::small_vec")] SmallVec<[(SessionId, Holder); 1]>);

impl Holders {
    pub(crate) fn insert(&mut self, session: SessionId, holder: Holder) {
        match self.0.binary_search_by_key(&session, |(s, _)| *s) {
            Ok(i) => self.0[i].1 = holder,
            Err(i) => self.0.insert(i, (session, holder)),
        }
        // Every lookup is a binary search: the order is what makes it right.
        debug_assert!(self.0.windows(2).all(|w| w[0].0 < w[1].0), "holders out of order");
    }

    pub(crate) fn remove(&mut self, session: &SessionId) -> Option<Holder> {
        let i = self.0.binary_search_by_key(session, |(s, _)| *s).ok()?;
        Some(self.0.remove(i).1)
    }

    pub(crate) fn contains_key(&self, session: &SessionId) -> bool {
        self.0.binary_search_by_key(session, |(s, _)| *s).is_ok()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&SessionId, &Holder)> {
        self.0.iter().map(|(s, h)| (s, h))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &SessionId> {
        self.0.iter().map(|(s, _)| s)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Holder> {
        self.0.iter().map(|(_, h)| h)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// A lock's FIFO queue of waiters. Most locks have none, so the queue is
/// boxed and absent when empty: one pointer in every lock instead of an
/// empty `VecDeque`'s four words. Serialized as the queue itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(from = "VecDeque<Waiter>", into = "VecDeque<Waiter>")]
// The box is the point: one word in the lock, the deque's own words only
// for a lock that has waiters.
#[allow(clippy::box_collection)]
pub(crate) struct Waiters(Option<Box<VecDeque<Waiter>>>);

impl From<VecDeque<Waiter>> for Waiters {
    fn from(queue: VecDeque<Waiter>) -> Self {
        Waiters((!queue.is_empty()).then(|| Box::new(queue)))
    }
}

impl From<Waiters> for VecDeque<Waiter> {
    fn from(waiters: Waiters) -> Self {
        waiters.0.map(|q| *q).unwrap_or_default()
    }
}

impl Waiters {
    pub(crate) fn is_empty(&self) -> bool {
        debug_assert!(self.0.as_ref().is_none_or(|q| !q.is_empty()), "an empty queue is kept");
        self.0.is_none()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    pub(crate) fn front(&self) -> Option<&Waiter> {
        self.0.as_ref().and_then(|q| q.front())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Waiter> {
        self.0.iter().flat_map(|q| q.iter())
    }

    pub(crate) fn push_back(&mut self, waiter: Waiter) {
        self.0.get_or_insert_with(Box::default).push_back(waiter);
    }

    pub(crate) fn pop_front(&mut self) -> Option<Waiter> {
        let waiter = self.0.as_mut()?.pop_front();
        self.drop_if_empty();
        waiter
    }

    pub(crate) fn remove(&mut self, index: usize) -> Option<Waiter> {
        let waiter = self.0.as_mut()?.remove(index);
        self.drop_if_empty();
        waiter
    }

    fn drop_if_empty(&mut self) {
        if self.0.as_ref().is_some_and(|q| q.is_empty()) {
            self.0 = None;
        }
    }
}

/// A lock that is held, awaited or in lock-delay. Free locks are removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Lock {
    pub(crate) holders: Holders,
    pub(crate) waiters: Waiters,
    /// Token of the newest grant.
    pub(crate) latest_token: u64,
    /// Cluster time before which no grant may happen, µs (0 = none).
    pub(crate) lock_delay_until_us: u64,
}

/// A KV entry. Revisions are command revisions (`Ctx::revision`: the log
/// index unless the entry was a batch); `version` counts writes since the
/// key was (re)created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KvEntry {
    pub(crate) value: Vec<u8>,
    pub(crate) create_revision: u64,
    pub(crate) mod_revision: u64,
    pub(crate) version: u64,
}

/// An election's master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Master {
    pub(crate) session: SessionId,
    pub(crate) value: Vec<u8>,
}

/// A session queued in an election behind its master, in campaign order; the
/// front one becomes master once there is none and no succession delay runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Candidate {
    pub(crate) session: SessionId,
    pub(crate) value: Vec<u8>,
}

/// A warm handover in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Handover {
    pub(crate) from: SessionId,
    pub(crate) to: SessionId,
    pub(crate) epoch: u64,
    pub(crate) deadline_us: u64,
    pub(crate) next_chunk_seq: u32,
    pub(crate) bytes: u64,
    /// crc32 of all chunk payloads so far, in order.
    pub(crate) total_crc32: u32,
    pub(crate) complete: bool,
    pub(crate) acked: bool,
}

/// An election (kept while it has a master, candidates, a handover or a
/// succession delay).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Election {
    pub(crate) master: Option<Master>,
    /// Epoch of the current or last master: the revision of the command that
    /// made it master, so epochs increase across the cluster's life even if
    /// the election is removed and created again.
    pub(crate) epoch: u64,
    pub(crate) candidates: VecDeque<Candidate>,
    pub(crate) handover: Option<Handover>,
    pub(crate) delay_until_us: u64,
}

/// Counts derived from the lock and session tables (see
/// [`crate::StateMachine::stats`]), kept as each record changes so that
/// status and metrics never walk a table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LockCounts {
    pub(crate) held_locks: u64,
    pub(crate) waiters: u64,
    /// Sessions with a pending probe (`Session::suspicion` set).
    pub(crate) suspected_sessions: u64,
    /// Sessions whose client clock bound was widened
    /// (`ClientClock::widened_ppm > 0`; it never narrows in a session).
    pub(crate) skewed_sessions: u64,
}

impl LockCounts {
    /// Counts by walking the tables (restore and invariant checks only).
    pub(crate) fn of(locks: &OrdMap<LockName, Lock>, sessions: &OrdMap<SessionId, Session>) -> Self {
        LockCounts {
            held_locks: locks.values().filter(|l| !l.holders.is_empty()).count() as u64,
            waiters: locks.values().map(|l| l.waiters.len() as u64).sum(),
            suspected_sessions: sessions.values().filter(|s| s.suspicion.is_some()).count() as u64,
            skewed_sessions: sessions.values().filter(|s| s.client_clock.widened_ppm > 0).count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    // Snapshot format 6 was written with `BTreeMap`/`BTreeSet` tables,
    // `String` lock names and a `Vec` of holders; the persistent tables,
    // shared names and inline holders must encode to the same bytes, or
    // stored snapshots would no longer restore.
    #[test]
    fn persistent_tables_encode_as_the_std_collections_did() {
        let names = ["a", "lock/b", "zz"];
        let ord_map: OrdMap<LockName, u64> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (LockName::from(*n), i as u64))
            .collect();
        let std_map: BTreeMap<String, u64> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), i as u64))
            .collect();
        assert_eq!(
            bincode::serialize(&ord_map).unwrap(),
            bincode::serialize(&std_map).unwrap()
        );

        let ord_set: OrdSet<LockName> = names.iter().map(|n| LockName::from(*n)).collect();
        let std_set: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            bincode::serialize(&ord_set).unwrap(),
            bincode::serialize(&std_set).unwrap()
        );

        let holder = |token| Holder {
            mode: LockMode::Shared,
            token,
            granted_ts_us: 7,
        };
        let mut holders = Holders::default();
        holders.insert(9, holder(2));
        holders.insert(3, holder(1));
        let as_vec: Vec<(SessionId, Holder)> = vec![(3, holder(1)), (9, holder(2))];
        assert_eq!(
            bincode::serialize(&holders).unwrap(),
            bincode::serialize(&as_vec).unwrap()
        );
        let back: Holders = bincode::deserialize(&bincode::serialize(&as_vec).unwrap()).unwrap();
        assert_eq!(back, holders);

        let waiter = |session| Waiter {
            session,
            mode: LockMode::Exclusive,
            deadline_us: 5,
        };
        for n in [0, 1, 3] {
            let queue: VecDeque<Waiter> = (0..n).map(waiter).collect();
            let mut waiters = Waiters::default();
            for w in queue.iter().cloned() {
                waiters.push_back(w);
            }
            assert_eq!(
                bincode::serialize(&waiters).unwrap(),
                bincode::serialize(&queue).unwrap()
            );
            let back: Waiters = bincode::deserialize(&bincode::serialize(&queue).unwrap()).unwrap();
            assert_eq!(back, waiters, "{n} waiters");
        }
    }

    #[test]
    fn an_emptied_waiter_queue_is_dropped() {
        let mut waiters = Waiters::default();
        waiters.push_back(Waiter {
            session: 1,
            mode: LockMode::Shared,
            deadline_us: 9,
        });
        waiters.push_back(Waiter {
            session: 2,
            mode: LockMode::Shared,
            deadline_us: 9,
        });
        assert_eq!(waiters.remove(1).map(|w| w.session), Some(2));
        assert_eq!(waiters.pop_front().map(|w| w.session), Some(1));
        assert!(waiters.is_empty());
        assert_eq!(waiters, Waiters::default(), "no empty box left behind");
    }
}
