//! The KV store: put, compare-and-set and delete, each optionally fenced by
//! a lock's token held by the writing session. Revisions are log indexes.

use driftlock_proto::*;

use crate::apply::Ctx;
use crate::command::Response;
use crate::entities::KvEntry;
use crate::StateMachine;

impl StateMachine {
    /// Accepts a fence only if its token is the lock's newest grant and that
    /// grant is still held, by the writing session: a session cannot borrow
    /// another's token (it is published by reads and events).
    fn check_fence(&self, fence: &Option<(SessionId, Fence)>) -> Result<(), Rejection> {
        let Some((writer, f)) = fence else { return Ok(()) };
        let Some(lock) = self.locks.get(f.lock.as_str()) else {
            return Err(Rejection::FenceNotHeld { token: f.token });
        };
        if f.token < lock.latest_token {
            return Err(Rejection::StaleFencingToken {
                token: f.token,
                latest: lock.latest_token,
            });
        }
        // Shared waiters granted in one entry share its token: the writer
        // must be one of the holders of that grant.
        let grant_holders = || lock.holders.iter().filter(|(_, h)| h.token == f.token).map(|(s, _)| *s);
        if grant_holders().next().is_none() {
            Err(Rejection::FenceNotHeld { token: f.token })
        } else if grant_holders().any(|s| s == *writer) {
            Ok(())
        } else {
            Err(Rejection::FenceNotHolder { token: f.token })
        }
    }

    fn check_kv_write(&self, key: &str, value_len: usize, fence: &Option<(SessionId, Fence)>) -> Result<(), Rejection> {
        self.check_name(key)?;
        self.check_value(value_len)?;
        if let Some((_, f)) = fence {
            self.check_name(&f.lock)?;
        }
        if !self.kv.contains_key(key) && self.kv.len() as u64 >= self.config.limits.max_keys {
            return Err(Rejection::LimitReached {
                limit: LimitKind::Keys,
                max: self.config.limits.max_keys,
            });
        }
        self.check_fence(fence)
    }

    fn write_key(&mut self, key: String, value: Vec<u8>, ctx: &mut Ctx) -> Response {
        let revision = ctx.revision;
        let entry = self.kv.entry(key.clone()).or_insert(KvEntry {
            value: Vec::new(),
            create_revision: revision,
            mod_revision: revision,
            version: 0,
        });
        debug_assert!(revision >= entry.mod_revision);
        entry.value = value;
        entry.mod_revision = revision;
        entry.version += 1;
        ctx.events.push(Event::KvChanged { key, revision });
        Ok(Reply::KvWritten { revision })
    }

    pub(crate) fn kv_put(
        &mut self,
        key: String,
        value: Vec<u8>,
        fence: Option<(SessionId, Fence)>,
        ctx: &mut Ctx,
    ) -> Response {
        self.check_kv_write(&key, value.len(), &fence)?;
        self.write_key(key, value, ctx)
    }

    pub(crate) fn kv_cas(
        &mut self,
        key: String,
        expected_revision: u64,
        value: Vec<u8>,
        fence: Option<(SessionId, Fence)>,
        ctx: &mut Ctx,
    ) -> Response {
        self.check_kv_write(&key, value.len(), &fence)?;
        let actual = self.kv.get(&key).map_or(0, |e| e.mod_revision);
        if actual != expected_revision {
            return Err(Rejection::RevisionMismatch {
                expected: expected_revision,
                actual,
            });
        }
        self.write_key(key, value, ctx)
    }

    pub(crate) fn kv_delete(&mut self, key: String, fence: Option<(SessionId, Fence)>, ctx: &mut Ctx) -> Response {
        self.check_name(&key)?;
        if !self.kv.contains_key(&key) {
            return Err(Rejection::KeyNotFound);
        }
        self.check_fence(&fence)?;
        self.kv.remove(&key);
        ctx.events.push(Event::KvChanged { key, revision: 0 });
        Ok(Reply::KvWritten { revision: ctx.revision })
    }
}
