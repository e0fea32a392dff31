//! Elections: a FIFO candidate queue, one master per epoch, succession delay
//! after a master's expiry or revocation, and warm handover
//! (HandoverBegin → the master's HandoverState chunks → the candidate's
//! HandoverAck → the master's Relinquish; or HandoverAbort, or the
//! deadline).
//!
//! Mastership changes hands only in an entry the old master committed
//! itself (resign, close, relinquish) or after its session ended and the
//! succession delay ran out (rule 6 of docs/design.md "Time"): never while
//! a live master may still believe it leads. A handover is no exception:
//! the candidate becomes master in the old master's `Relinquish`, which its
//! library sends only after it stopped believing it leads
//! (docs/design.md "Elections and warm handover").
//!
//! Epochs are the log index of the entry that made the master, so they
//! increase strictly over the life of the cluster, also across an election
//! that is dropped when empty and later used again.

use driftlock_proto::limits;
use driftlock_proto::*;

use crate::apply::Ctx;
use crate::command::Response;
use crate::entities::{Candidate, Handover, Master};
use crate::timers::Timer;
use crate::StateMachine;

impl StateMachine {
    pub(crate) fn campaign(&mut self, session: SessionId, name: String, value: Vec<u8>, ctx: &mut Ctx) -> Response {
        self.check_name(&name)?;
        self.check_value(value.len())?;
        let limits = &self.config.limits;
        let Some(s) = self.sessions.get(&session) else {
            return Err(Rejection::UnknownSession { session });
        };
        if s.campaigns.contains(&name) {
            return Err(Rejection::AlreadyCandidate);
        }
        if s.resource_count() >= limits.max_locks_per_session {
            return Err(Rejection::LimitReached {
                limit: LimitKind::LocksPerSession,
                max: limits.max_locks_per_session,
            });
        }
        let max_candidates = limits.max_candidates_per_election;
        if let Some(e) = self.elections.get(&name) {
            let count = e.candidates.len() as u64 + u64::from(e.master.is_some());
            if count >= max_candidates {
                return Err(Rejection::LimitReached {
                    limit: LimitKind::CandidatesPerElection,
                    max: max_candidates,
                });
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.campaigns.insert(name.clone());
        }
        let e = self.elections.entry(name.clone()).or_default();
        e.candidates.push_back(Candidate { session, value });
        let position = (e.candidates.len() - 1) as u32;
        self.succeed(&name, ctx);
        match self.elections.get(&name) {
            Some(e) if e.master.as_ref().is_some_and(|m| m.session == session) => Ok(Reply::Elected { epoch: e.epoch }),
            _ => Ok(Reply::Candidate { position }),
        }
    }

    pub(crate) fn resign(&mut self, session: SessionId, name: &str, ctx: &mut Ctx) -> Response {
        let is_candidate = self.sessions.get(&session).is_some_and(|s| s.campaigns.contains(name));
        if !is_candidate {
            return Err(Rejection::NotCandidate);
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.campaigns.remove(name);
        }
        self.withdraw_candidate(name, session, None, ctx);
        Ok(Reply::Done)
    }

    pub(crate) fn proclaim(
        &mut self,
        session: SessionId,
        name: &str,
        epoch: u64,
        value: Vec<u8>,
        ctx: &mut Ctx,
    ) -> Response {
        self.check_value(value.len())?;
        let Some(e) = self.elections.get_mut(name) else {
            return Err(Rejection::UnknownElection);
        };
        match &mut e.master {
            Some(m) if m.session == session && e.epoch == epoch => {
                m.value = value.clone();
                ctx.events.push(Event::MasterChanged {
                    election: name.to_owned(),
                    master: Some(session),
                    epoch,
                    value,
                });
                Ok(Reply::Done)
            }
            _ => Err(Rejection::NotMaster { epoch: e.epoch }),
        }
    }

    /// Removes a session from an election (resign, close, expiry,
    /// revocation). A master removed for cause leaves a succession delay.
    pub(crate) fn withdraw_candidate(
        &mut self,
        name: &str,
        session: SessionId,
        delay_until_us: Option<u64>,
        ctx: &mut Ctx,
    ) {
        let Some(e) = self.elections.get_mut(name) else { return };
        let handover_involves = e
            .handover
            .as_ref()
            .is_some_and(|h| h.from == session || h.to == session);
        if handover_involves {
            self.abort_handover(name, format!("session {session} left the election"), ctx);
        }
        let Some(e) = self.elections.get_mut(name) else { return };
        if e.master.as_ref().is_some_and(|m| m.session == session) {
            e.master = None;
            if let Some(until) = delay_until_us {
                if until > ctx.now_us && until > e.delay_until_us {
                    // As for lock-delay: a passed but unfired timer of the
                    // old delay must not end the new one.
                    if e.delay_until_us != 0 {
                        self.timers
                            .remove(&(e.delay_until_us, Timer::ElectionDelay(name.to_owned())));
                    }
                    e.delay_until_us = until;
                    self.timers.insert((until, Timer::ElectionDelay(name.to_owned())));
                }
            }
            let epoch = e.epoch;
            ctx.events.push(Event::MasterChanged {
                election: name.to_owned(),
                master: None,
                epoch,
                value: Vec::new(),
            });
        } else {
            e.candidates.retain(|c| c.session != session);
        }
        self.succeed(name, ctx);
    }

    /// Makes the first live candidate master when there is none and no
    /// succession delay; drops the election when nothing is left in it.
    pub(crate) fn succeed(&mut self, name: &str, ctx: &mut Ctx) {
        let Some(e) = self.elections.get(name) else { return };
        if e.master.is_none() && e.delay_until_us <= ctx.now_us {
            if let Some(head) = e.candidates.front() {
                // A candidate whose session expires in this same entry is
                // left for its expiry to remove.
                if self.session_alive_at(head.session, ctx.now_us) {
                    let Some(e) = self.elections.get_mut(name) else { return };
                    let Some(c) = e.candidates.pop_front() else { return };
                    assert!(ctx.revision > e.epoch, "election {name}: epoch would not increase");
                    e.epoch = ctx.revision;
                    e.master = Some(Master {
                        session: c.session,
                        value: c.value.clone(),
                    });
                    ctx.events.push(Event::MasterChanged {
                        election: name.to_owned(),
                        master: Some(c.session),
                        epoch: ctx.revision,
                        value: c.value,
                    });
                }
            }
        }
        if let Some(e) = self.elections.get(name) {
            if e.master.is_none() && e.candidates.is_empty() && e.handover.is_none() && e.delay_until_us <= ctx.now_us {
                // The epoch need not be kept: the next one is a later log index.
                self.elections.remove(name);
            }
        }
    }

    pub(crate) fn handover_begin(
        &mut self,
        name: &str,
        from: SessionId,
        to: SessionId,
        epoch: u64,
        ack_timeout_us: u64,
        ctx: &mut Ctx,
    ) -> Response {
        let Some(e) = self.elections.get_mut(name) else {
            return Err(Rejection::UnknownElection);
        };
        if e.master.as_ref().is_none_or(|m| m.session != from) || e.epoch != epoch {
            return Err(Rejection::NotMaster { epoch: e.epoch });
        }
        if e.handover.is_some() {
            return Err(Rejection::HandoverMismatch {
                detail: "a handover is already in progress".into(),
            });
        }
        if !e.candidates.iter().any(|c| c.session == to) {
            return Err(Rejection::NotCandidate);
        }
        let deadline_us = ctx.now_us.saturating_add(ack_timeout_us);
        e.handover = Some(Handover {
            from,
            to,
            epoch,
            deadline_us,
            next_chunk_seq: 0,
            bytes: 0,
            total_crc32: 0,
            complete: false,
            acked: false,
        });
        self.timers.insert((deadline_us, Timer::Handover(name.to_owned())));
        ctx.events.push(Event::HandoverBegun {
            election: name.to_owned(),
            from,
            to,
            epoch,
        });
        Ok(Reply::Done)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handover_state(
        &mut self,
        session: SessionId,
        name: &str,
        epoch: u64,
        chunk_seq: u32,
        data: Vec<u8>,
        crc32: u32,
        last: bool,
        ctx: &mut Ctx,
    ) -> Response {
        // One chunk travels in one event: keep it within what a frame holds.
        if data.len() > limits::MAX_VALUE_BYTES_CEILING {
            return Err(Rejection::ValueTooLarge {
                len: data.len(),
                max: limits::MAX_VALUE_BYTES_CEILING,
            });
        }
        let max_bytes = self.config.limits.max_handover_bytes as u64;
        let h = self.handover_of(name, epoch)?;
        if h.from != session {
            return Err(Rejection::HandoverMismatch {
                detail: "only the master sends handover state".into(),
            });
        }
        if h.complete {
            return Err(Rejection::HandoverMismatch {
                detail: "state already complete".into(),
            });
        }
        if chunk_seq != h.next_chunk_seq {
            return Err(Rejection::HandoverMismatch {
                detail: format!("expected chunk {}, got {chunk_seq}", h.next_chunk_seq),
            });
        }
        if crc32fast::hash(&data) != crc32 {
            return Err(Rejection::ChunkChecksum { chunk_seq });
        }
        let bytes = h.bytes + data.len() as u64;
        if bytes > max_bytes {
            return Err(Rejection::LimitReached {
                limit: LimitKind::HandoverBytes,
                max: max_bytes,
            });
        }
        let mut hasher = crc32fast::Hasher::new_with_initial(h.total_crc32);
        hasher.update(&data);
        let total = hasher.finalize();
        let h = self.handover_of_mut(name)?;
        h.total_crc32 = total;
        h.bytes = bytes;
        h.next_chunk_seq += 1;
        h.complete = last;
        ctx.events.push(Event::HandoverChunk {
            election: name.to_owned(),
            epoch,
            chunk_seq,
            data,
            last,
        });
        Ok(Reply::Done)
    }

    pub(crate) fn handover_ack(
        &mut self,
        session: SessionId,
        name: &str,
        epoch: u64,
        chunks: u32,
        total_crc32: u32,
        ctx: &mut Ctx,
    ) -> Response {
        let h = self.handover_of(name, epoch)?;
        if h.to != session {
            return Err(Rejection::HandoverMismatch {
                detail: "only the candidate acknowledges".into(),
            });
        }
        if !h.complete {
            return Err(Rejection::HandoverMismatch {
                detail: "state not complete yet".into(),
            });
        }
        if chunks != h.next_chunk_seq || total_crc32 != h.total_crc32 {
            return Err(Rejection::HandoverMismatch {
                detail: format!(
                    "candidate has {chunks} chunks (crc32 {total_crc32:08x}), master sent {} (crc32 {:08x})",
                    h.next_chunk_seq, h.total_crc32
                ),
            });
        }
        self.handover_of_mut(name)?.acked = true;
        ctx.events.push(Event::HandoverAcked {
            election: name.to_owned(),
            epoch,
        });
        Ok(Reply::Done)
    }

    /// The old master of an acknowledged handover gives its mastership up:
    /// the candidate becomes master at this entry's index and the old
    /// master leaves the election. Only the old master can commit this,
    /// and its library does so only after it stopped acting as master, so
    /// the candidate is never master while the old one may still believe
    /// it is.
    pub(crate) fn relinquish(&mut self, session: SessionId, name: &str, epoch: u64, ctx: &mut Ctx) -> Response {
        let h = self.handover_of(name, epoch)?;
        if h.from != session {
            return Err(Rejection::HandoverMismatch {
                detail: "only the master handing over relinquishes".into(),
            });
        }
        if !h.acked {
            return Err(Rejection::HandoverMismatch {
                detail: "candidate has not acknowledged".into(),
            });
        }
        let (to, deadline_us) = (h.to, h.deadline_us);
        let Some(e) = self.elections.get_mut(name) else {
            return Err(Rejection::UnknownElection);
        };
        // Both parties are live here: a handover whose candidate or master
        // left (or expired, before this command) was aborted with it.
        let Some(pos) = e.candidates.iter().position(|c| c.session == to) else {
            return Err(Rejection::NotCandidate);
        };
        if e.master.as_ref().is_none_or(|m| m.session != session) {
            return Err(Rejection::NotMaster { epoch: e.epoch });
        }
        let Some(new_master) = e.candidates.remove(pos) else {
            return Err(Rejection::NotCandidate);
        };
        assert!(ctx.revision > e.epoch, "election {name}: epoch would not increase");
        e.epoch = ctx.revision;
        e.handover = None;
        e.master = Some(Master {
            session: to,
            value: new_master.value.clone(),
        });
        self.timers.remove(&(deadline_us, Timer::Handover(name.to_owned())));
        // The old master leaves the election: it is nobody's candidate, so
        // no later succession can make it master without its asking.
        if let Some(s) = self.sessions.get_mut(&session) {
            s.campaigns.remove(name);
        }
        ctx.events.push(Event::LeaseTransferred {
            election: name.to_owned(),
            from: session,
            to,
            epoch: ctx.revision,
        });
        ctx.events.push(Event::MasterChanged {
            election: name.to_owned(),
            master: Some(to),
            epoch: ctx.revision,
            value: new_master.value,
        });
        Ok(Reply::Done)
    }

    /// Why `Command::LeaseTransfer` is refused: it is retired.
    pub(crate) fn lease_transfer_retired() -> Rejection {
        Rejection::HandoverMismatch {
            detail: "LeaseTransfer is retired: mastership moves only when the old master relinquishes".into(),
        }
    }

    pub(crate) fn handover_abort_cmd(&mut self, name: &str, epoch: u64, reason: String, ctx: &mut Ctx) -> Response {
        self.handover_of(name, epoch)?;
        self.abort_handover(name, reason, ctx);
        Ok(Reply::Done)
    }

    /// Ends a handover without transfer; the master keeps its role.
    pub(crate) fn abort_handover(&mut self, name: &str, reason: String, ctx: &mut Ctx) {
        let Some(e) = self.elections.get_mut(name) else { return };
        let Some(h) = e.handover.take() else { return };
        self.timers.remove(&(h.deadline_us, Timer::Handover(name.to_owned())));
        ctx.events.push(Event::HandoverAborted {
            election: name.to_owned(),
            epoch: h.epoch,
            reason,
        });
        self.succeed(name, ctx);
    }

    fn handover_of(&self, name: &str, epoch: u64) -> Result<&Handover, Rejection> {
        let e = self.elections.get(name).ok_or(Rejection::UnknownElection)?;
        match &e.handover {
            Some(h) if h.epoch == epoch => Ok(h),
            Some(h) => Err(Rejection::HandoverMismatch {
                detail: format!("handover is for epoch {}", h.epoch),
            }),
            None => Err(Rejection::HandoverMismatch {
                detail: "no handover in progress".into(),
            }),
        }
    }

    fn handover_of_mut(&mut self, name: &str) -> Result<&mut Handover, Rejection> {
        self.elections
            .get_mut(name)
            .and_then(|e| e.handover.as_mut())
            .ok_or(Rejection::HandoverMismatch {
                detail: "no handover in progress".into(),
            })
    }
}
