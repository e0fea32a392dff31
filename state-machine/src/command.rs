//! The log entry: what enters the state machine ([`Command`]), stamped
//! with cluster time ([`StampedCommand`]), and where it sits ([`EntryMeta`]).

use serde::{Deserialize, Serialize};

use driftlock_proto::{
    AccessPolicy, ClockEstimate, Config, HealthSample, Principal, Rejection, Reply, SessionId, SessionOp, Subject,
};

/// Position and cluster time of the entry being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// Raft log index of the entry; strictly increasing across applies.
    pub index: u64,
    /// Cluster time the leader stamped on the entry, µs (docs/design.md "Time"
    /// rule 2). The state machine uses `max(previous, ts_us)`.
    pub ts_us: u64,
}

/// A command as the leader proposes it: the command plus the cluster time
/// stamped on it. This is the Raft log's application payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StampedCommand {
    /// Cluster time at stamping, µs.
    pub ts_us: u64,
    /// What to apply.
    pub command: Command,
}

/// Every entry the state machine applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Open a session; the granted validity follows the adaptive formula.
    OpenSession {
        /// Client-chosen random nonce; a retried open with the same nonce
        /// returns the same session instead of opening a second one.
        nonce: u128,
        /// Human-readable client name (for status), limited in length.
        client_name: String,
        /// Requested time-to-live, µs.
        requested_ttl_us: u64,
        /// The principal that opened it (the node sets it from the
        /// connection's certificate): the session's owner, the only one
        /// whose operations on it are applied.
        owner: Principal,
        /// SHA-256 of the secret the client drew for the session. The node
        /// checks every operation's secret against it before proposing; the
        /// secret itself is never in the log. A retried open (same nonce)
        /// finds the session only with the same owner and digest.
        secret_sha256: [u8; 32],
    },
    /// A deduplicated operation inside a session.
    Session {
        /// The session the operation runs in; an unknown or ended session is
        /// rejected with `UnknownSession`.
        session: SessionId,
        /// Client sequence number, strictly increasing per session.
        seq: u64,
        /// What to do; applied once per `(session, seq)`, a retry gets the
        /// cached response while `seq` is within `limits.dedupe_window` and
        /// it is the same operation (else `SequenceReused`).
        op: SessionOp,
        /// Who proposed it (set by the node from the connection's
        /// certificate): refused with `PermissionDenied`, touching nothing,
        /// unless it is the session's owner; the operation's rights are
        /// checked against the policy in force at this entry.
        by: Principal,
    },
    /// A KV write outside any session (not deduplicated; for operators).
    KvPut {
        /// Non-empty, at most `limits.max_name_bytes`; a new key counts against
        /// `limits.max_keys`.
        key: String,
        /// Replaces the whole value; at most `limits.max_value_bytes`.
        value: Vec<u8>,
        /// Who proposed it; needs the `write` right on `key`.
        by: Principal,
    },
    /// A KV delete outside any session.
    KvDelete {
        /// Key to remove; rejected with `KeyNotFound` if it does not exist.
        key: String,
        /// Who proposed it; needs the `write` right on `key`.
        by: Principal,
    },
    /// A KV compare-and-set outside any session.
    KvCas {
        /// Non-empty, at most `limits.max_name_bytes`.
        key: String,
        /// Expected `mod_revision`; 0 means "must not exist".
        expected_revision: u64,
        /// Written only if the key's `mod_revision` equals `expected_revision`;
        /// at most `limits.max_value_bytes`.
        value: Vec<u8>,
        /// Who proposed it; needs the `write` right on `key`.
        by: Principal,
    },
    /// Start a warm handover of `election` from its master to `to`.
    HandoverBegin {
        /// Election whose master hands over; it must have no handover in
        /// progress and `to` must be one of its candidates.
        election: String,
        /// The current master's session.
        from: SessionId,
        /// The candidate's session.
        to: SessionId,
        /// The master's current epoch.
        epoch: u64,
        /// Time allowed for the state transfer, the candidate's
        /// acknowledgement and the master's relinquish, µs of cluster time
        /// from this entry; then the handover is aborted and the master keeps
        /// its role.
        ack_timeout_us: u64,
    },
    /// Retired: always refused with `HandoverMismatch`. It used to make an
    /// acknowledged candidate master in the leader's own entry while the
    /// old master had not been told (issue 14, item 2: two masters at
    /// once). Mastership now moves only in the old master's own
    /// `SessionOp::Relinquish` (docs/design.md "Elections and warm
    /// handover"). The variant stays so that the encoding of the later
    /// variants, and of logs that hold one, does not change.
    LeaseTransfer {
        /// Election the transfer was for.
        election: String,
        /// The candidate it would have made master.
        to: SessionId,
        /// The handover's epoch.
        epoch: u64,
    },
    /// Abandon a handover; the standard election continues.
    HandoverAbort {
        /// Election whose handover is abandoned; its master keeps the role.
        election: String,
        /// The master epoch the handover began at; any other is rejected with
        /// `HandoverMismatch`.
        epoch: u64,
        /// Why, for events and logs.
        reason: String,
    },
    /// A health sample of a node or client, measured outside the state
    /// machine.
    HealthReport {
        /// A node (kept per node id) or a session (kept on the session, where
        /// the next keepalive's lease decision uses it; an unknown session is
        /// rejected).
        subject: Subject,
        /// Every permille field must be at most 1000, else `InvalidReport`.
        sample: HealthSample,
    },
    /// A clock estimate of a node or client.
    ClockReport {
        /// A node (its estimate feeds ρ_cluster) or a session (its estimate
        /// feeds that session's ρ_client); an unknown session is rejected.
        subject: Subject,
        /// Usable only with at least `time.min_estimate_samples` samples and σ
        /// at most `time.max_usable_drift_sigma_ppb`; otherwise the subject
        /// counts at `time.max_drift_ppm`.
        estimate: ClockEstimate,
    },
    /// The failure predictor suspects this session: its next grants are
    /// shorter and it must answer a renewal probe.
    Suspect {
        /// Session to suspect. Suspecting it again while a probe is pending
        /// keeps that probe's deadline.
        session: SessionId,
        /// Combined anomaly score, permille.
        score_permille: u32,
        /// How long the session has to answer the probe, µs.
        probe_timeout_us: u64,
    },
    /// End a session for cause; its locks free under lock-delay.
    Revoke {
        /// Session to end. Its locks stay unavailable under lock-delay and an
        /// election it was master of waits out a succession delay.
        session: SessionId,
        /// Why, for events and logs.
        reason: String,
    },
    /// Advance cluster time without other effect (expiries run).
    Tick,
    /// Replace the replicated configuration (an administrator's
    /// `AdminRequest::SetConfig`; docs/design.md "Replicated
    /// configuration").
    SetConfig {
        /// The whole new configuration; refused with `InvalidConfig` unless
        /// it passes `Config::validate`.
        config: Config,
        /// The config revision the change was made against; refused with
        /// `RevisionMismatch` if another `SetConfig` came in between.
        /// `None`: replace whatever is in force.
        expected_revision: Option<u64>,
        /// Who proposed it; must be an administrator under the policy in
        /// force at this entry.
        by: Principal,
    },
    /// Put a new access policy in force (docs/security.md, "Policy
    /// model"); from this entry on every replica checks commands against
    /// it.
    SetPolicy {
        /// The whole new policy; refused with `InvalidPolicy` unless it
        /// passes `AccessPolicy::validate`.
        policy: AccessPolicy,
        /// The policy revision the change was made against; refused with
        /// `RevisionMismatch` if another `SetPolicy` came in between.
        /// `None`: replace whatever is in force.
        expected_revision: Option<u64>,
        /// Who proposed it; must be an administrator under the policy in
        /// force before this entry.
        by: Principal,
    },
    /// Several commands in one log entry (docs/design.md "Batched
    /// proposals"): the leader packs the commands that arrive while an
    /// append is in flight. They share the entry's cluster time and apply
    /// in order, each with its own revision and response, exactly as they
    /// would one entry each; a nested batch is refused with `NestedBatch`.
    Batch(Vec<Command>),
}

/// The state machine's answer to one entry.
pub type Response = Result<Reply, Rejection>;
