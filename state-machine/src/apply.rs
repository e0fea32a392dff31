//! The entry point of every committed entry: [`StateMachine::apply`]
//! advances cluster time (docs/design.md "Time", rule 3), fires the timers
//! that are due, then dispatches the command to the file that handles it.
//! Session operations pass the owner check and then the per-session dedupe
//! cache (Raft thesis §6.3), so a retried sequence number returns the
//! response it got the first time and changes nothing; commands a client
//! caused are checked against the access policy in force (`authz.rs`).

use driftlock_proto::{Action, Config, EndCause, Event, Principal, Rejection, Reply, SessionId, SessionOp};

use crate::authz::op_digest;
use crate::command::{Command, EntryMeta, Response};
use crate::entities::Cached;
use crate::StateMachine;

/// Context of one command's apply: its revision, the entry's effective
/// time, and the events the entry produced.
pub(crate) struct Ctx {
    /// The command's revision: every number the command hands out (fencing
    /// token, session id, master epoch, KV revision, config and policy
    /// revision) is this one. Strictly increasing across commands, and the
    /// log index itself for an entry holding one command
    /// ([`StateMachine::next_revision`]).
    pub(crate) revision: u64,
    pub(crate) now_us: u64,
    pub(crate) events: Vec<Event>,
}

impl StateMachine {
    /// Applies one committed entry holding a single command: advances
    /// cluster time, runs every expiry that is due, then the command.
    ///
    /// # Panics
    /// If `meta.index` does not exceed the last applied index: replaying an
    /// entry would corrupt the state, so it is refused loudly. If `command`
    /// is a [`Command::Batch`], whose responses only
    /// [`apply_entry`](Self::apply_entry) can return.
    pub fn apply(&mut self, command: Command, meta: EntryMeta) -> (Response, Vec<Event>) {
        assert!(
            !matches!(command, Command::Batch(_)),
            "apply takes one command; a batch goes through apply_entry"
        );
        let mut ctx = self.begin_entry(meta);
        let response = self.apply_command(command, &mut ctx);
        (response, ctx.events)
    }

    /// Applies one committed entry, a single command or a
    /// [`Command::Batch`]: one response per command, in order, and every
    /// event tagged with the revision of the command that produced it
    /// (docs/design.md "Batched proposals"). Each command of a batch runs as
    /// it would in an entry of its own at the same cluster time: due
    /// expiries first, then the command, under the next revision.
    ///
    /// # Panics
    /// If `meta.index` does not exceed the last applied index.
    pub fn apply_entry(&mut self, command: Command, meta: EntryMeta) -> (Vec<Response>, Vec<(u64, Event)>) {
        let mut ctx = self.begin_entry(meta);
        let mut tagged = Vec::new();
        let mut tag = |ctx: &mut Ctx| tagged.extend(ctx.events.drain(..).map(|e| (ctx.revision, e)));
        let responses = match command {
            Command::Batch(commands) if commands.is_empty() => {
                // Nothing to answer, but cluster time advanced: what fell
                // due still expires (rule 3).
                ctx.revision = self.next_revision();
                self.run_timers(&mut ctx);
                tag(&mut ctx);
                Vec::new()
            }
            Command::Batch(commands) => {
                let mut responses = Vec::with_capacity(commands.len());
                for command in commands {
                    responses.push(self.apply_command(command, &mut ctx));
                    tag(&mut ctx);
                }
                responses
            }
            single => {
                let response = self.apply_command(single, &mut ctx);
                tag(&mut ctx);
                vec![response]
            }
        };
        (responses, tagged)
    }

    /// Advances to a new entry: its index and cluster time (rule 3).
    fn begin_entry(&mut self, meta: EntryMeta) -> Ctx {
        assert!(
            meta.index > self.last_index,
            "entry {} applied after entry {}",
            meta.index,
            self.last_index
        );
        self.last_index = meta.index;
        self.ts_eff_us = self.ts_eff_us.max(meta.ts_us);
        Ctx {
            revision: self.last_revision,
            now_us: self.ts_eff_us,
            events: Vec::new(),
        }
    }

    /// One command: takes the next revision, fires the timers due, then
    /// dispatches. A batch inside a batch is refused and changes nothing.
    fn apply_command(&mut self, command: Command, ctx: &mut Ctx) -> Response {
        ctx.revision = self.next_revision();
        self.run_timers(ctx);
        match command {
            Command::Batch(_) => Err(Rejection::NestedBatch),
            command => self.dispatch(command, ctx),
        }
    }

    /// The revision of the next command: one past the last, and never below
    /// the index of the entry being applied. So an entry holding one
    /// command gets its log index (as every command did before batches), a
    /// batch of `n` takes `n` consecutive revisions, and the numbers handed
    /// out keep increasing whatever mix of entries the log holds.
    fn next_revision(&mut self) -> u64 {
        let revision = (self.last_revision + 1).max(self.last_index);
        debug_assert!(revision > self.last_revision);
        self.last_revision = revision;
        revision
    }

    fn dispatch(&mut self, command: Command, ctx: &mut Ctx) -> Response {
        match command {
            Command::OpenSession {
                nonce,
                client_name,
                requested_ttl_us,
                owner,
                secret_sha256,
            } => self.open_session(nonce, client_name, requested_ttl_us, owner, secret_sha256, ctx),
            Command::Session { session, seq, op, by } => self.session_command(session, seq, op, &by, ctx),
            Command::KvPut { key, value, by } => {
                self.authorize(&by, Action::Write, &key)?;
                self.kv_put(key, value, None, ctx)
            }
            Command::KvDelete { key, by } => {
                self.authorize(&by, Action::Write, &key)?;
                self.kv_delete(key, None, ctx)
            }
            Command::KvCas {
                key,
                expected_revision,
                value,
                by,
            } => {
                self.authorize(&by, Action::Write, &key)?;
                self.kv_cas(key, expected_revision, value, None, ctx)
            }
            Command::HandoverBegin {
                election,
                from,
                to,
                epoch,
                ack_timeout_us,
            } => self.handover_begin(&election, from, to, epoch, ack_timeout_us, ctx),
            Command::LeaseTransfer { .. } => Err(Self::lease_transfer_retired()),
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
            Command::SetConfig {
                config,
                expected_revision,
                by,
            } => self.set_config(config, expected_revision, &by, ctx),
            Command::SetPolicy {
                policy,
                expected_revision,
                by,
            } => self.set_policy(policy, expected_revision, &by, ctx),
            Command::Batch(_) => Err(Rejection::NestedBatch),
        }
    }

    /// `SetConfig`: an administrator replaces the replicated configuration,
    /// if it validates and, when asked, nothing changed it since
    /// `expected_revision`. A refusal changes nothing.
    fn set_config(
        &mut self,
        config: Config,
        expected_revision: Option<u64>,
        by: &Principal,
        ctx: &mut Ctx,
    ) -> Response {
        self.authorize(by, Action::Admin, "set_config")?;
        if let Some(expected) = expected_revision {
            if expected != self.config_revision {
                return Err(Rejection::RevisionMismatch {
                    expected,
                    actual: self.config_revision,
                });
            }
        }
        config
            .validate()
            .map_err(|detail| Rejection::InvalidConfig { detail })?;
        let changes = self.config.diff(&config);
        let window = config.limits.dedupe_window;
        self.config = config;
        self.config_revision = ctx.revision;
        // A smaller dedupe window applies to every cache at once.
        // (Only the sessions over it are touched: a persistent map copies
        // what it hands out mutably while a snapshot shares it.)
        let over: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.responses.len() as u64 > window)
            .map(|(id, _)| *id)
            .collect();
        for id in over {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.trim_responses(window);
            }
        }
        ctx.events.push(Event::ConfigChanged {
            revision: ctx.revision,
            changes,
        });
        Ok(Reply::Done)
    }

    /// A deduplicated session operation (Raft thesis §6.3), from its
    /// owner only: another principal's operation is refused before it can
    /// read or fill the dedupe cache, and a remembered sequence number
    /// answers from the cache only for the same operation.
    fn session_command(
        &mut self,
        session: SessionId,
        seq: u64,
        op: SessionOp,
        by: &Principal,
        ctx: &mut Ctx,
    ) -> Response {
        self.check_owner(session, by)?;
        let Some(s) = self.sessions.get(&session) else {
            return Err(Rejection::UnknownSession { session });
        };
        if seq <= s.forgotten_through {
            return Err(Rejection::StaleSequence {
                seq,
                forgotten_through: s.forgotten_through,
            });
        }
        let digest = op_digest(&op);
        if let Some(cached) = s.responses.get(&seq) {
            if cached.digest != digest {
                return Err(Rejection::SequenceReused { seq });
            }
            return cached.response.clone();
        }
        let response = match self.authorize_op(by, &op) {
            Ok(()) => self.run_session_op(session, op, ctx),
            Err(denied) => Err(denied),
        };
        let window = self.config.limits.dedupe_window;
        // The session may have ended inside the operation (Close).
        if let Some(s) = self.sessions.get_mut(&session) {
            s.responses.insert(
                seq,
                Cached {
                    digest,
                    response: response.clone(),
                },
            );
            s.trim_responses(window);
        }
        response
    }

    /// Runs an authorized session operation.
    fn run_session_op(&mut self, session: SessionId, op: SessionOp, ctx: &mut Ctx) -> Response {
        match op {
            SessionOp::Keepalive { health, clock } => self.keepalive(session, health, clock, ctx),
            SessionOp::Close => {
                self.end_session(session, EndCause::Released, ctx);
                Ok(Reply::Done)
            }
            SessionOp::Acquire { name, mode, wait_us } => self.acquire(session, name, mode, wait_us, ctx),
            SessionOp::Release { name } => self.release(session, &name, ctx),
            SessionOp::KvPut { key, value, fence } => self.kv_put(key, value, fence.map(|f| (session, f)), ctx),
            SessionOp::KvCas {
                key,
                expected_revision,
                value,
                fence,
            } => self.kv_cas(key, expected_revision, value, fence.map(|f| (session, f)), ctx),
            SessionOp::KvDelete { key, fence } => self.kv_delete(key, fence.map(|f| (session, f)), ctx),
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
            SessionOp::Relinquish { election, epoch } => self.relinquish(session, &election, epoch, ctx),
        }
    }
}
