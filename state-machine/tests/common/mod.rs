//! A small harness that plays the leader: it numbers entries, stamps cluster
//! time and remembers sessions and sequence numbers.

#![allow(dead_code)]

use driftlock_proto::*;
use driftlock_state_machine::*;

pub const SEC: u64 = 1_000_000;

pub struct Harness {
    pub sm: StateMachine,
    pub index: u64,
    pub ts_us: u64,
    pub seqs: std::collections::BTreeMap<SessionId, u64>,
    /// Every entry applied, for replay on another replica.
    pub log: Vec<(Command, EntryMeta)>,
    /// Who proposes the harness's commands (an ordinary client, so the
    /// default policy is what lets them through).
    pub by: Principal,
}

/// The secret the harness opens sessions with (tests of ownership use
/// others).
pub const SECRET: SessionSecret = SessionSecret([42; 32]);

impl Harness {
    pub fn new(config: Config) -> Self {
        Harness {
            sm: StateMachine::new(config),
            index: 0,
            ts_us: 1_000 * SEC,
            seqs: Default::default(),
            log: Vec::new(),
            by: Principal::client("t"),
        }
    }

    pub fn advance(&mut self, dt_us: u64) {
        self.ts_us += dt_us;
    }

    pub fn next_meta(&mut self) -> EntryMeta {
        self.index += 1;
        EntryMeta {
            index: self.index,
            ts_us: self.ts_us,
        }
    }

    pub fn apply(&mut self, cmd: Command) -> (Response, Vec<Event>) {
        let meta = self.next_meta();
        self.log.push((cmd.clone(), meta));
        self.sm.apply(cmd, meta)
    }

    /// Applies `commands` as one batch entry; one response per command,
    /// and the events tagged with their command's revision.
    pub fn apply_batch(&mut self, commands: Vec<Command>) -> (Vec<Response>, Vec<(u64, Event)>) {
        let meta = self.next_meta();
        let batch = Command::Batch(commands);
        self.log.push((batch.clone(), meta));
        self.sm.apply_entry(batch, meta)
    }

    /// The next session command of `session` (its next sequence number),
    /// for a batch: nothing is applied.
    pub fn session_cmd(&mut self, session: SessionId, op: SessionOp) -> Command {
        let seq = self.next_seq(session);
        Command::Session {
            session,
            seq,
            op,
            by: self.by.clone(),
        }
    }

    /// Applies a command that must succeed; returns its events.
    pub fn ok(&mut self, cmd: Command) -> Vec<Event> {
        let (r, events) = self.apply(cmd.clone());
        assert!(r.is_ok(), "{cmd:?} failed: {r:?}");
        events
    }

    /// Applies a Tick; returns its events.
    pub fn tick(&mut self) -> Vec<Event> {
        self.ok(Command::Tick)
    }

    pub fn open(&mut self, ttl_us: u64) -> SessionId {
        let by = self.by.clone();
        self.open_as(&by, ttl_us)
    }

    /// Opens a session owned by `owner` with [`SECRET`].
    pub fn open_as(&mut self, owner: &Principal, ttl_us: u64) -> SessionId {
        let nonce = u128::from(self.index) + 1_000_000;
        match self
            .apply(Command::OpenSession {
                nonce,
                client_name: "t".into(),
                requested_ttl_us: ttl_us,
                owner: owner.clone(),
                secret_sha256: SECRET.digest(),
            })
            .0
        {
            Ok(Reply::SessionOpened { session, .. }) => session,
            other => panic!("open failed: {other:?}"),
        }
    }

    pub fn next_seq(&mut self, session: SessionId) -> u64 {
        let seq = self.seqs.entry(session).or_insert(0);
        *seq += 1;
        *seq
    }

    pub fn op(&mut self, session: SessionId, op: SessionOp) -> (Response, Vec<Event>) {
        let seq = self.next_seq(session);
        let by = self.by.clone();
        self.apply(Command::Session { session, seq, op, by })
    }

    /// Like [`Self::op`], proposed by `by` instead of the harness's principal.
    pub fn op_as(&mut self, by: &Principal, session: SessionId, op: SessionOp) -> (Response, Vec<Event>) {
        let seq = self.next_seq(session);
        self.apply(Command::Session {
            session,
            seq,
            op,
            by: by.clone(),
        })
    }

    pub fn acquire(&mut self, session: SessionId, name: &str, mode: LockMode, wait_us: u64) -> Response {
        self.op(
            session,
            SessionOp::Acquire {
                name: name.into(),
                mode,
                wait_us,
            },
        )
        .0
    }

    pub fn release(&mut self, session: SessionId, name: &str) -> Response {
        self.op(session, SessionOp::Release { name: name.into() }).0
    }

    pub fn keepalive(&mut self, session: SessionId) -> Response {
        self.op(
            session,
            SessionOp::Keepalive {
                health: None,
                clock: None,
            },
        )
        .0
    }

    pub fn campaign(&mut self, session: SessionId, election: &str) -> Response {
        self.op(
            session,
            SessionOp::Campaign {
                election: election.into(),
                value: session.to_le_bytes().to_vec(),
            },
        )
        .0
    }

    pub fn holders(&self, name: &str) -> Vec<SessionId> {
        self.sm
            .lock_view(name, self.sm.ts_eff_us())
            .map(|v| v.holders.iter().map(|h| h.session).collect())
            .unwrap_or_default()
    }
}
