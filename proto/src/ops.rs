//! What a client asks for inside its session ([`SessionOp`]).

use serde::{Deserialize, Serialize};

use crate::types::{Fence, HealthSample, LockMode};

/// An operation a client performs inside its session. Carried in
/// [`Command::Session`] with a sequence number for deduplication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOp {
    /// Renew the session's validity (and report health with it).
    Keepalive {
        /// Optional health sample of the client's host.
        health: Option<HealthSample>,
    },
    /// End the session: releases its locks at once (no lock-delay) and
    /// withdraws its candidacies.
    Close,
    /// Acquire a lock.
    Acquire {
        /// Lock name.
        name: String,
        /// Exclusive or shared.
        mode: LockMode,
        /// How long to wait in the queue, µs of cluster time; 0 = try-lock.
        wait_us: u64,
        /// The client's own clock when it sent the request, µs (for clock
        /// validation, docs/design.md "Clock drift").
        client_clock_us: Option<u64>,
    },
    /// Release a held lock, or leave its wait queue.
    Release {
        /// Lock name.
        name: String,
        /// The client's own clock at release, µs.
        client_clock_us: Option<u64>,
    },
    /// Put a key, optionally fenced.
    KvPut {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Fencing check.
        fence: Option<Fence>,
    },
    /// Compare-and-set on the key's modification revision (0 = must not exist).
    KvCas {
        /// Key.
        key: String,
        /// Expected `mod_revision`; 0 means "the key must not exist".
        expected_revision: u64,
        /// New value.
        value: Vec<u8>,
        /// Fencing check.
        fence: Option<Fence>,
    },
    /// Delete a key, optionally fenced.
    KvDelete {
        /// Key.
        key: String,
        /// Fencing check.
        fence: Option<Fence>,
    },
    /// Join an election's candidate queue.
    Campaign {
        /// Election name.
        election: String,
        /// The value this candidate proclaims when master.
        value: Vec<u8>,
    },
    /// Leave an election (mastership passes to the next candidate).
    Resign {
        /// Election name.
        election: String,
    },
    /// As master, replace the proclaimed value.
    Proclaim {
        /// Election name.
        election: String,
        /// Epoch the master believes it holds.
        epoch: u64,
        /// New value.
        value: Vec<u8>,
    },
    /// As master, send one chunk of state to the handover candidate.
    HandoverState {
        /// Election name.
        election: String,
        /// Epoch of the master handing over.
        epoch: u64,
        /// 0-based chunk number; chunks must arrive in order.
        chunk_seq: u32,
        /// Chunk payload.
        data: Vec<u8>,
        /// crc32 of `data`, computed by the sender.
        crc32: u32,
        /// Whether this is the final chunk.
        last: bool,
    },
    /// As handover candidate, acknowledge that every chunk was received.
    HandoverAck {
        /// Election name.
        election: String,
        /// Epoch of the master handing over.
        epoch: u64,
        /// Number of chunks received.
        chunks: u32,
        /// crc32 over all chunk payloads in order.
        total_crc32: u32,
    },
    /// Answer a renewal probe (predictive failure analysis).
    ProbeAnswer,
}
