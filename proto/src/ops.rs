//! What a client asks for inside its session ([`SessionOp`]).

use serde::{Deserialize, Serialize};

use crate::types::{ClockSample, Fence, HealthSample, LockMode};

/// An operation a client performs inside its session, sent with
/// `DriftlockApi::session_op(session, seq, op)` and committed as the state
/// machine's `Command::Session`. The session remembers the replies of its
/// last `limits.dedupe_window` sequence numbers, so a retry with the same
/// `seq` gets the first reply back and changes nothing.
///
/// Names (lock, key, election) must be non-empty and at most
/// `limits.max_name_bytes`; values at most `limits.max_value_bytes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOp {
    /// Renew the session's validity (and report health with it). The reply
    /// is [`Reply::KeptAlive`](crate::Reply::KeptAlive).
    Keepalive {
        /// A health sample of the client's host, committed as the session's
        /// health and used by this and later lease decisions; `None` keeps
        /// the last one (the client library attaches one at most every
        /// `health_report_interval_ms`).
        health: Option<HealthSample>,
        /// The client's clock around its previous successful renewal (or
        /// none yet): the state machine compares the client's clock with
        /// cluster time between renewals (docs/design.md "Clock drift").
        clock: Option<ClockSample>,
    },
    /// End the session: releases its locks at once (no lock-delay), leaves
    /// its wait queues and withdraws its candidacies (a master's election
    /// passes to the next candidate at once).
    Close,
    /// Acquire a lock: [`Reply::Granted`](crate::Reply::Granted) at once,
    /// [`Reply::Queued`](crate::Reply::Queued) behind earlier waiters, or
    /// `Rejection::LockBusy` for a try-lock.
    Acquire {
        /// The lock's name: non-empty, at most `limits.max_name_bytes`.
        name: String,
        /// Exclusive (one holder) or shared (any number of shared holders).
        mode: LockMode,
        /// How long to wait in the FIFO queue, µs of cluster time from this
        /// entry; 0 = try-lock (never queue). At most
        /// [`MAX_WAIT_US`](crate::limits::MAX_WAIT_US): the client library
        /// and the node refuse more.
        wait_us: u64,
    },
    /// Release a held lock at once (no lock-delay), or leave its wait
    /// queue; `Rejection::NotHolder` if the session does neither.
    Release {
        /// The lock to release or stop waiting for.
        name: String,
    },
    /// Put a key, optionally fenced.
    KvPut {
        /// The key: non-empty, at most `limits.max_name_bytes`.
        key: String,
        /// The value to store, at most `limits.max_value_bytes`.
        value: Vec<u8>,
        /// `Some`: write only while this lock grant is the newest and held;
        /// `None`: unconditional.
        fence: Option<Fence>,
    },
    /// Compare-and-set on the key's modification revision, optionally
    /// fenced.
    KvCas {
        /// The key: non-empty, at most `limits.max_name_bytes`.
        key: String,
        /// Expected `mod_revision`; 0 means "the key must not exist".
        /// A mismatch is `Rejection::RevisionMismatch`.
        expected_revision: u64,
        /// The value to store, at most `limits.max_value_bytes`.
        value: Vec<u8>,
        /// `Some`: write only while this lock grant is the newest and held;
        /// `None`: unconditional.
        fence: Option<Fence>,
    },
    /// Delete a key, optionally fenced; `Rejection::KeyNotFound` if absent.
    KvDelete {
        /// The key: non-empty, at most `limits.max_name_bytes`.
        key: String,
        /// `Some`: delete only while this lock grant is the newest and
        /// held; `None`: unconditional.
        fence: Option<Fence>,
    },
    /// Join an election's FIFO candidate queue:
    /// [`Reply::Elected`](crate::Reply::Elected) if it becomes master at
    /// once, else [`Reply::Candidate`](crate::Reply::Candidate).
    Campaign {
        /// The election's name (elections are created by their first
        /// candidate).
        election: String,
        /// The value this candidate proclaims when it is master (e.g. its
        /// address).
        value: Vec<u8>,
    },
    /// Leave an election; a master that resigns hands over to the next
    /// candidate at once (no succession delay).
    Resign {
        /// The election's name: non-empty, at most `limits.max_name_bytes`.
        election: String,
    },
    /// As master, replace the proclaimed value; `Rejection::NotMaster`
    /// unless the session is master at `epoch`.
    Proclaim {
        /// The election to leave.
        election: String,
        /// Epoch the master believes it holds.
        epoch: u64,
        /// The new proclaimed value.
        value: Vec<u8>,
    },
    /// As master, send one chunk of state to the handover candidate; the
    /// candidate receives it as [`Event::HandoverChunk`](crate::Event::HandoverChunk).
    HandoverState {
        /// The election the session is master of.
        election: String,
        /// Epoch of the master handing over (the handover's epoch).
        epoch: u64,
        /// 0-based chunk number; chunks must arrive in order.
        chunk_seq: u32,
        /// The chunk's bytes: at most
        /// [`MAX_VALUE_BYTES_CEILING`](crate::limits::MAX_VALUE_BYTES_CEILING),
        /// and all chunks together at most `limits.max_handover_bytes`
        /// (the client library sends
        /// [`HANDOVER_CHUNK_BYTES`](crate::limits::HANDOVER_CHUNK_BYTES)).
        data: Vec<u8>,
        /// crc32 of `data`, computed by the sender and checked by the
        /// state machine (`Rejection::ChunkChecksum`).
        crc32: u32,
        /// Whether this is the final chunk; the candidate may acknowledge
        /// only after it.
        last: bool,
    },
    /// As handover candidate, acknowledge that every chunk was received.
    /// The master's library then stops acting as master and relinquishes
    /// ([`SessionOp::Relinquish`]); only that makes the candidate master.
    HandoverAck {
        /// The election being handed over.
        election: String,
        /// Epoch of the master handing over (the handover's epoch).
        epoch: u64,
        /// Number of chunks the candidate received; must equal the number
        /// committed.
        chunks: u32,
        /// crc32 over all chunk payloads in order; must equal the state
        /// machine's running crc32.
        total_crc32: u32,
    },
    /// Answer a renewal probe (docs/design.md "Predictive failure
    /// analysis"): clears the session's suspicion and cancels the probe's
    /// revocation deadline. The client library sends it on its own.
    ProbeAnswer,
    /// As the master of an acknowledged handover, give the mastership up:
    /// in this entry the candidate becomes master at a new epoch (this
    /// entry's index) and this session leaves the election (to lead again
    /// it campaigns again). The client library sends it only after it has
    /// told the application that its mastership is over (`Leadership`'s
    /// loss signal), so the entry is the proof that the old master stopped
    /// acting (docs/design.md "Elections and warm handover"). Refused with
    /// `HandoverMismatch` unless this session is the master handing over
    /// at `epoch` and the candidate has acknowledged; the reply is
    /// [`Reply::Done`](crate::Reply::Done).
    Relinquish {
        /// The election being handed over.
        election: String,
        /// Epoch of the master handing over (the handover's epoch).
        epoch: u64,
    },
}
