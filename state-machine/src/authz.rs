//! Authorization at apply (docs/security.md, "Policy model"): every
//! command a client caused carries its proposer, and the state machine
//! checks it against the access policy in force at this entry, so every
//! replica decides alike even when the policy changed between the node's
//! own check and the commit. Also here: `SetPolicy`, and the digest that
//! lets the dedupe cache tell a retry from a different operation under a
//! reused sequence number.

use driftlock_proto::{AccessPolicy, Action, Denied, Event, Principal, Rejection, Reply, SessionId, SessionOp};
use sha2::{Digest, Sha256};

use crate::apply::Ctx;
use crate::command::Response;
use crate::StateMachine;

impl StateMachine {
    /// Checks that `by` owns `session` (which must exist): `Ok`, or the
    /// refusal to answer without touching the session.
    pub(crate) fn check_owner(&self, session: SessionId, by: &Principal) -> Result<(), Rejection> {
        match self.sessions.get(&session) {
            None => Err(Rejection::UnknownSession { session }),
            Some(s) if s.owner.same_party(by) => Ok(()),
            Some(_) => Err(Denied::new(by, Action::UseSession, &session.to_string()).into()),
        }
    }

    /// Checks `by` may run `action` on `name` under the policy in force.
    pub(crate) fn authorize(&self, by: &Principal, action: Action, name: &str) -> Result<(), Rejection> {
        self.policy.check(by, action, name).map_err(Rejection::from)
    }

    /// Checks `by` has the rights session operation `op` needs.
    pub(crate) fn authorize_op(&self, by: &Principal, op: &SessionOp) -> Result<(), Rejection> {
        self.policy.check_op(by, op).map_err(Rejection::from)
    }

    /// `SetPolicy`: an administrator (under the policy before this entry)
    /// replaces the policy, if it validates and, when asked, nothing
    /// changed it since `expected_revision`.
    pub(crate) fn set_policy(
        &mut self,
        policy: AccessPolicy,
        expected_revision: Option<u64>,
        by: &Principal,
        ctx: &mut Ctx,
    ) -> Response {
        self.authorize(by, Action::Admin, "set_policy")?;
        if let Some(expected) = expected_revision {
            if expected != self.policy_revision {
                return Err(Rejection::RevisionMismatch {
                    expected,
                    actual: self.policy_revision,
                });
            }
        }
        policy
            .validate()
            .map_err(|detail| Rejection::InvalidPolicy { detail })?;
        self.policy = policy;
        self.policy_revision = ctx.revision;
        ctx.events.push(Event::PolicyChanged { revision: ctx.revision });
        Ok(Reply::Done)
    }
}

/// The digest a cached response is stored with: the first 16 bytes of the
/// SHA-256 of the operation's bincode encoding. Only the owner's
/// operations reach the cache (ownership is checked first), so the digest
/// guards against a client reusing a sequence number for another request,
/// not against an adversary; 128 bits make an accidental collision
/// impossible in practice at half the memory of the full hash.
pub(crate) fn op_digest(op: &SessionOp) -> u128 {
    let mut hasher = Sha256::new();
    // Encoding into a hash cannot fail (the writer never errors and every
    // type of an operation encodes); were it to, it would fail alike on
    // every replica, which keeps the digest deterministic.
    let _ = bincode::serialize_into(&mut hasher, op);
    let hash = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_le_bytes(first)
}
