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

#![forbid(unsafe_code)]

mod command;
mod elections;
mod kv;
pub mod lease;
mod locks;
mod reads;
mod sessions;

pub use command::{Command, EntryMeta, Response, StampedCommand};

use driftlock_proto::*;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Version of the snapshot format produced by [`StateMachine::snapshot`].
/// 2: lock holders no longer carry a predicted release time.
pub const SNAPSHOT_VERSION: u32 = 2;

/// One million, for ppm arithmetic.
const PPM: u128 = 1_000_000;

/// A pending deadline. Ordered, so the timer index pops in a deterministic
/// order when deadlines tie.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Timer {
    /// A session's validity ends.
    Session(SessionId),
    /// A suspected session's probe deadline.
    Probe(SessionId),
    /// A waiter gives up.
    Waiter(String, SessionId),
    /// A lock's lock-delay ends.
    LockDelay(String),
    /// An election's succession delay ends.
    ElectionDelay(String),
    /// A handover's acknowledgement deadline.
    Handover(String),
}

/// A suspected session's pending probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Suspicion {
    pub(crate) score_permille: u32,
    pub(crate) probe_deadline_us: u64,
}

/// An open session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) nonce: u128,
    pub(crate) client_name: String,
    pub(crate) requested_ttl_us: u64,
    /// End of the longest validity ever granted to this session, cluster µs.
    pub(crate) deadline_us: u64,
    /// The validity granted by the last open/keepalive, µs.
    pub(crate) validity_us: u64,
    pub(crate) lease: LeaseDecision,
    pub(crate) health: Option<HealthSample>,
    pub(crate) clock: Option<ClockEstimate>,
    /// Extra drift bound after a detected skew, ppm.
    pub(crate) rho_extra_ppm: u64,
    pub(crate) suspicion: Option<Suspicion>,
    pub(crate) held: BTreeSet<String>,
    pub(crate) waiting: BTreeSet<String>,
    pub(crate) campaigns: BTreeSet<String>,
    /// Cached responses by sequence number, for retries.
    pub(crate) responses: BTreeMap<u64, Response>,
    /// Highest sequence number whose response was evicted from the cache.
    pub(crate) forgotten_through: u64,
}

impl Session {
    fn resource_count(&self) -> u64 {
        (self.held.len() + self.waiting.len() + self.campaigns.len()) as u64
    }

    /// Forgets the oldest cached responses beyond `window`.
    fn trim_responses(&mut self, window: u64) {
        while self.responses.len() as u64 > window {
            if let Some((evicted, _)) = self.responses.pop_first() {
                self.forgotten_through = self.forgotten_through.max(evicted);
            }
        }
    }
}

/// A lock holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub(crate) mode: LockMode,
    pub(crate) token: u64,
    pub(crate) granted_ts_us: u64,
    /// Client clock at send, if the grant was immediate and the client sent it.
    pub(crate) client_clock_us: Option<u64>,
}

/// A queued acquire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Waiter {
    pub(crate) session: SessionId,
    pub(crate) mode: LockMode,
    pub(crate) deadline_us: u64,
}

/// A lock's holders, sorted by session id. A vector rather than a map: a
/// lock nearly always has one holder, and a map node would cost ~700 bytes
/// for it (see the apply benchmark's bytes-per-held-lock figure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Holders(Vec<(SessionId, Holder)>);

impl Holders {
    pub(crate) fn insert(&mut self, session: SessionId, holder: Holder) {
        match self.0.binary_search_by_key(&session, |(s, _)| *s) {
            Ok(i) => self.0[i].1 = holder,
            Err(i) => self.0.insert(i, (session, holder)),
        }
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

/// A lock that is held, awaited or in lock-delay. Free locks are removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Lock {
    pub(crate) holders: Holders,
    pub(crate) waiters: VecDeque<Waiter>,
    /// Token of the newest grant.
    pub(crate) latest_token: u64,
    /// Cluster time before which no grant may happen, µs (0 = none).
    pub(crate) lock_delay_until_us: u64,
}

/// A KV entry.
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

/// A waiting candidate.
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
    /// Epoch of the current or last master: the log index of the entry that
    /// made it master, so epochs increase across the cluster's life even if
    /// the election is removed and created again.
    pub(crate) epoch: u64,
    pub(crate) candidates: VecDeque<Candidate>,
    pub(crate) handover: Option<Handover>,
    pub(crate) delay_until_us: u64,
}

/// The replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    pub(crate) config: Config,
    pub(crate) last_index: u64,
    pub(crate) ts_eff_us: u64,
    pub(crate) sessions: BTreeMap<SessionId, Session>,
    pub(crate) session_by_nonce: BTreeMap<u128, SessionId>,
    pub(crate) locks: BTreeMap<String, Lock>,
    pub(crate) kv: BTreeMap<String, KvEntry>,
    pub(crate) elections: BTreeMap<String, Election>,
    pub(crate) timers: BTreeSet<(u64, Timer)>,
    pub(crate) node_health: BTreeMap<u64, HealthSample>,
    pub(crate) node_clocks: BTreeMap<u64, ClockEstimate>,
    /// Locks with at least one holder and waiters across all locks, kept
    /// as each changes so `stats()` never walks the lock table. Derived
    /// state: not serialized, recounted on restore and checked by
    /// `check_invariants`.
    #[serde(skip)]
    pub(crate) counts: LockCounts,
}

/// Counts derived from the lock table (see [`StateMachine::counts`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LockCounts {
    pub(crate) held_locks: u64,
    pub(crate) waiters: u64,
}

impl LockCounts {
    /// Counts `locks` by walking them (restore and invariant checks only).
    pub(crate) fn of(locks: &BTreeMap<String, Lock>) -> Self {
        LockCounts {
            held_locks: locks.values().filter(|l| !l.holders.is_empty()).count() as u64,
            waiters: locks.values().map(|l| l.waiters.len() as u64).sum(),
        }
    }
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

/// Context of one apply: the entry's index and effective time, and the
/// events it produced.
pub(crate) struct Ctx {
    pub(crate) index: u64,
    pub(crate) now_us: u64,
    pub(crate) events: Vec<Event>,
}

impl StateMachine {
    /// An empty state machine with the given configuration.
    pub fn new(config: Config) -> Self {
        StateMachine {
            config,
            ..Default::default()
        }
    }

    /// Applies one committed entry: advances cluster time, runs every expiry
    /// that is due, then the command.
    ///
    /// # Panics
    /// If `meta.index` does not exceed the last applied index: replaying an
    /// entry would corrupt the state, so it is refused loudly.
    pub fn apply(&mut self, command: Command, meta: EntryMeta) -> (Response, Vec<Event>) {
        assert!(
            meta.index > self.last_index,
            "entry {} applied after entry {}",
            meta.index,
            self.last_index
        );
        self.last_index = meta.index;
        self.ts_eff_us = self.ts_eff_us.max(meta.ts_us);
        let mut ctx = Ctx {
            index: meta.index,
            now_us: self.ts_eff_us,
            events: Vec::new(),
        };
        self.run_timers(&mut ctx);
        let response = self.dispatch(command, &mut ctx);
        (response, ctx.events)
    }

    fn dispatch(&mut self, command: Command, ctx: &mut Ctx) -> Response {
        match command {
            Command::OpenSession {
                nonce,
                client_name,
                requested_ttl_us,
            } => self.open_session(nonce, client_name, requested_ttl_us, ctx),
            Command::Session { session, seq, op } => self.session_command(session, seq, op, ctx),
            Command::KvPut { key, value } => self.kv_put(key, value, None, ctx),
            Command::KvDelete { key } => self.kv_delete(key, None, ctx),
            Command::KvCas {
                key,
                expected_revision,
                value,
            } => self.kv_cas(key, expected_revision, value, None, ctx),
            Command::HandoverBegin {
                election,
                from,
                to,
                epoch,
                ack_timeout_us,
            } => self.handover_begin(&election, from, to, epoch, ack_timeout_us, ctx),
            Command::LeaseTransfer { election, to, epoch } => self.lease_transfer(&election, to, epoch, ctx),
            Command::HandoverAbort {
                election,
                epoch,
                reason,
            } => self.handover_abort_cmd(&election, epoch, reason, ctx),
            Command::HealthReport { subject, sample } => self.health_report(subject, sample),
            Command::ClockReport { subject, estimate } => self.clock_report(subject, estimate, ctx),
            Command::Suspect {
                session,
                score_permille,
                probe_timeout_us,
            } => self.suspect(session, score_permille, probe_timeout_us, ctx),
            Command::Revoke { session, reason } => {
                if !self.sessions.contains_key(&session) {
                    return Err(Rejection::UnknownSession { session });
                }
                self.end_session(session, EndCause::Revoked { reason }, ctx);
                Ok(Reply::Done)
            }
            Command::Tick => Ok(Reply::Done),
            Command::SetConfig(config) => {
                config
                    .validate()
                    .map_err(|detail| Rejection::InvalidConfig { detail })?;
                let window = config.limits.dedupe_window;
                self.config = config;
                // A smaller dedupe window applies to every cache at once.
                for s in self.sessions.values_mut() {
                    s.trim_responses(window);
                }
                ctx.events.push(Event::ConfigChanged);
                Ok(Reply::Done)
            }
        }
    }

    /// A deduplicated session operation (Raft thesis §6.3).
    fn session_command(&mut self, session: SessionId, seq: u64, op: SessionOp, ctx: &mut Ctx) -> Response {
        let Some(s) = self.sessions.get(&session) else {
            return Err(Rejection::UnknownSession { session });
        };
        if seq <= s.forgotten_through {
            return Err(Rejection::StaleSequence {
                seq,
                forgotten_through: s.forgotten_through,
            });
        }
        if let Some(cached) = s.responses.get(&seq) {
            return cached.clone();
        }
        let response = match op {
            SessionOp::Keepalive { health } => self.keepalive(session, health, ctx),
            SessionOp::Close => {
                self.end_session(session, EndCause::Released, ctx);
                Ok(Reply::Done)
            }
            SessionOp::Acquire {
                name,
                mode,
                wait_us,
                client_clock_us,
            } => self.acquire(session, name, mode, wait_us, client_clock_us, ctx),
            SessionOp::Release { name, client_clock_us } => self.release(session, &name, client_clock_us, ctx),
            SessionOp::KvPut { key, value, fence } => self.kv_put(key, value, fence, ctx),
            SessionOp::KvCas {
                key,
                expected_revision,
                value,
                fence,
            } => self.kv_cas(key, expected_revision, value, fence, ctx),
            SessionOp::KvDelete { key, fence } => self.kv_delete(key, fence, ctx),
            SessionOp::Campaign { election, value } => self.campaign(session, election, value, ctx),
            SessionOp::Resign { election } => self.resign(session, &election, ctx),
            SessionOp::Proclaim { election, epoch, value } => self.proclaim(session, &election, epoch, value, ctx),
            SessionOp::HandoverState {
                election,
                epoch,
                chunk_seq,
                data,
                crc32,
                last,
            } => self.handover_state(session, &election, epoch, chunk_seq, data, crc32, last, ctx),
            SessionOp::HandoverAck {
                election,
                epoch,
                chunks,
                total_crc32,
            } => self.handover_ack(session, &election, epoch, chunks, total_crc32, ctx),
            SessionOp::ProbeAnswer => self.probe_answer(session),
        };
        let window = self.config.limits.dedupe_window;
        // The session may have ended inside the operation (Close).
        if let Some(s) = self.sessions.get_mut(&session) {
            s.responses.insert(seq, response.clone());
            s.trim_responses(window);
        }
        response
    }

    /// Pops every timer due at `ctx.now_us`, in deadline order.
    fn run_timers(&mut self, ctx: &mut Ctx) {
        while let Some((deadline, _)) = self.timers.first() {
            if *deadline > ctx.now_us {
                break;
            }
            let Some((deadline, timer)) = self.timers.pop_first() else {
                break;
            };
            debug_assert!(deadline <= ctx.now_us);
            match timer {
                Timer::Session(id) => {
                    debug_assert_eq!(self.sessions.get(&id).map(|s| s.deadline_us), Some(deadline));
                    self.end_session(id, EndCause::Expired, ctx);
                }
                Timer::Probe(id) => {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.suspicion = None;
                    }
                    self.end_session(
                        id,
                        EndCause::Revoked {
                            reason: "no answer to renewal probe".into(),
                        },
                        ctx,
                    );
                }
                Timer::Waiter(name, id) => self.waiter_timed_out(&name, id, ctx),
                Timer::LockDelay(name) => {
                    if let Some(lock) = self.locks.get_mut(&name) {
                        lock.lock_delay_until_us = 0;
                    }
                    self.pump_lock(&name, ctx);
                }
                Timer::ElectionDelay(name) => {
                    if let Some(e) = self.elections.get_mut(&name) {
                        e.delay_until_us = 0;
                    }
                    self.succeed(&name, ctx);
                }
                Timer::Handover(name) => {
                    self.abort_handover(&name, "candidate did not acknowledge in time".into(), ctx);
                }
            }
        }
    }

    /// The drift bound every replica uses for cluster margins, ppm: the
    /// largest `|drift| + k·σ` among committed node estimates, and the
    /// configured worst case for a node whose estimate is unusable or
    /// missing (docs/design.md "Time").
    pub fn cluster_rho_ppm(&self) -> u64 {
        let t = &self.config.time;
        let mut rho = 0u64;
        let mut any = false;
        for est in self.node_clocks.values() {
            any = true;
            rho = rho.max(self.estimate_rho_ppm(est).unwrap_or(t.max_drift_ppm));
        }
        if !any {
            return t.max_drift_ppm;
        }
        // A node that reports health but never a clock is also unknown.
        if self.node_health.keys().any(|id| !self.node_clocks.contains_key(id)) {
            rho = rho.max(t.max_drift_ppm);
        }
        rho.max(1)
    }

    /// `|drift| + k·σ` of an estimate in ppm (rounded up), or `None` when
    /// the estimate is unusable.
    fn estimate_rho_ppm(&self, est: &ClockEstimate) -> Option<u64> {
        let t = &self.config.time;
        if est.samples < t.min_estimate_samples || est.drift_sigma_ppb > t.max_usable_drift_sigma_ppb {
            return None;
        }
        let ppb =
            u128::from(est.drift_ppb.unsigned_abs()) + u128::from(est.drift_sigma_ppb) * u128::from(t.drift_k_sigma);
        Some(u64::try_from(ppb.div_ceil(1000)).unwrap_or(u64::MAX))
    }

    /// Drift bound for a session's client, ppm: its own usable estimate (or
    /// the configured worst case) plus any widening after a detected skew.
    pub(crate) fn client_rho_ppm(&self, s: &Session) -> u64 {
        let own = s
            .clock
            .as_ref()
            .and_then(|e| self.estimate_rho_ppm(e))
            .unwrap_or(self.config.time.max_drift_ppm);
        own.saturating_add(s.rho_extra_ppm)
    }

    /// Margin to add after `duration_us` of validity so that it has surely
    /// ended on every clock involved, µs (rounded up).
    pub(crate) fn drift_margin_us(&self, duration_us: u64, rho_ppm: u64) -> u64 {
        let m = (u128::from(duration_us) * u128::from(rho_ppm)).div_ceil(PPM);
        u64::try_from(m).unwrap_or(u64::MAX)
    }

    /// Cluster time until which a resource held by `s` must stay unavailable
    /// after an expiry or revocation (docs/design.md "Time", rule 6).
    pub(crate) fn lock_delay_until(&self, s: &Session) -> u64 {
        let rho = self.cluster_rho_ppm().saturating_add(self.client_rho_ppm(s));
        s.deadline_us
            .saturating_add(self.drift_margin_us(s.validity_us, rho))
            .saturating_add(self.config.time.lock_delay_extra_us)
    }

    pub(crate) fn check_name(&self, name: &str) -> Result<(), Rejection> {
        if name.is_empty() {
            return Err(Rejection::EmptyName);
        }
        let max = self.config.limits.max_name_bytes;
        if name.len() > max {
            return Err(Rejection::NameTooLong { len: name.len(), max });
        }
        Ok(())
    }

    pub(crate) fn check_value(&self, len: usize) -> Result<(), Rejection> {
        let max = self.config.limits.max_value_bytes;
        if len > max {
            return Err(Rejection::ValueTooLarge { len, max });
        }
        Ok(())
    }

    /// Whether a session is alive at `now_us` (its deadline not reached).
    pub(crate) fn session_alive_at(&self, session: SessionId, now_us: u64) -> bool {
        self.sessions.get(&session).is_some_and(|s| s.deadline_us > now_us)
    }

    fn health_report(&mut self, subject: Subject, sample: HealthSample) -> Response {
        for (field, v) in [
            ("cpu_load_permille", sample.cpu_load_permille),
            ("mem_used_permille", sample.mem_used_permille),
            ("io_wait_permille", sample.io_wait_permille),
            ("load_permille", sample.load_permille),
        ] {
            if v > 1000 {
                return Err(Rejection::InvalidReport {
                    detail: format!("{field} = {v} exceeds 1000"),
                });
            }
        }
        match subject {
            Subject::Node(id) => {
                self.node_health.insert(id, sample);
            }
            Subject::Session(id) => match self.sessions.get_mut(&id) {
                Some(s) => s.health = Some(sample),
                None => return Err(Rejection::UnknownSession { session: id }),
            },
        }
        Ok(Reply::Done)
    }

    fn clock_report(&mut self, subject: Subject, estimate: ClockEstimate, ctx: &mut Ctx) -> Response {
        match subject {
            Subject::Node(id) => {
                let alert_ppb = i128::from(self.config.time.alert_drift_ppm) * 1000;
                let over = |e: &ClockEstimate| i128::from(e.drift_ppb).abs() > alert_ppb;
                let was_over = self.node_clocks.get(&id).is_some_and(over);
                if over(&estimate) && !was_over {
                    ctx.events.push(Event::NodeClockAlert {
                        node: id,
                        drift_ppb: estimate.drift_ppb,
                        drift_sigma_ppb: estimate.drift_sigma_ppb,
                        alert_drift_ppm: self.config.time.alert_drift_ppm,
                    });
                }
                self.node_clocks.insert(id, estimate);
            }
            Subject::Session(id) => match self.sessions.get_mut(&id) {
                Some(s) => s.clock = Some(estimate),
                None => return Err(Rejection::UnknownSession { session: id }),
            },
        }
        Ok(Reply::Done)
    }

    /// Log index of the last applied entry (0 before any).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Effective cluster time of the last applied entry, µs.
    pub fn ts_eff_us(&self) -> u64 {
        self.ts_eff_us
    }

    /// The replicated configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

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
