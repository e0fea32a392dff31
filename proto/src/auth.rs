//! Authorization (docs/security.md, "Policy model"): who is asking
//! ([`Principal`]), what the replicated [`AccessPolicy`] lets them do, what
//! a request needs ([`Action`], [`Right`]) and the typed refusal
//! ([`Denied`]), plus the per-session secret ([`SessionSecret`]) that ties
//! a session to the client that opened it.
//!
//! Nothing here does I/O: the node checks a request against the policy
//! before proposing it, and the state machine checks the same command again
//! against the policy in force when the entry is applied, so every replica
//! decides alike.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits;
use crate::ops::SessionOp;

/// Who is on the other end of a client connection: what the node knows from
/// the verified certificate (`driftlock_proto::tls::principal_of`), and what
/// a command carries as its proposer. The node sets it from the TLS
/// handshake, never from anything the client sends.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Principal {
    /// A cluster node, by Raft id (certificate OU `node`). Nodes get no
    /// client rights from `"*"`; they may report their own health.
    Node(u64),
    /// A client, by the name in its certificate; `admin` for a
    /// certificate issued with the admin role (OU `admin`).
    Client {
        /// The certificate's common name.
        name: String,
        /// Issued with OU `admin`: an administrator whatever the policy.
        admin: bool,
    },
    /// No certificate: a node started with `--insecure` (tests only). It
    /// is treated as a full administrator, since such a node has no way to
    /// tell one caller from another.
    Anonymous,
}

impl Principal {
    /// An ordinary client named `name` (what a certificate with OU `client`
    /// gives).
    pub fn client(name: &str) -> Principal {
        Principal::Client {
            name: name.to_owned(),
            admin: false,
        }
    }

    /// A client named `name` whose certificate carries the admin role.
    pub fn admin(name: &str) -> Principal {
        Principal::Client {
            name: name.to_owned(),
            admin: true,
        }
    }

    /// The name policies and sessions refer to the principal by: a
    /// client's certificate name, `node-<id>`, or `anonymous`.
    pub fn name(&self) -> String {
        match self {
            Principal::Node(id) => format!("node-{id}"),
            Principal::Client { name, .. } => name.clone(),
            Principal::Anonymous => "anonymous".into(),
        }
    }

    /// Whether the certificate itself grants the administrator role.
    pub fn is_admin_by_certificate(&self) -> bool {
        matches!(self, Principal::Client { admin: true, .. })
    }

    /// Whether `self` and `other` are the same party for session ownership:
    /// the same node, the same client name (whether or not either
    /// certificate carries the admin role, so a reissued certificate keeps
    /// its sessions), or both anonymous.
    pub fn same_party(&self, other: &Principal) -> bool {
        match (self, other) {
            (Principal::Node(a), Principal::Node(b)) => a == b,
            (Principal::Client { name: a, .. }, Principal::Client { name: b, .. }) => a == b,
            (Principal::Anonymous, Principal::Anonymous) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Node(id) => write!(f, "node {id}"),
            Principal::Client { name, admin: true } => write!(f, "{name} (admin)"),
            Principal::Client { name, admin: false } => write!(f, "{name}"),
            Principal::Anonymous => write!(f, "anonymous"),
        }
    }
}

/// One right a grant gives on the names under its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Right {
    /// Acquire locks (and read them).
    Lock,
    /// Read keys, locks and elections, and observe their events.
    Read,
    /// Write and delete keys (sessionless or in a session, fenced or not).
    Write,
    /// Campaign in elections, proclaim, hand over (and read them).
    Campaign,
}

impl Right {
    /// Every right, in display order.
    pub const ALL: [Right; 4] = [Right::Lock, Right::Read, Right::Write, Right::Campaign];

    /// The right's name in policies and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Lock => "lock",
            Right::Read => "read",
            Right::Write => "write",
            Right::Campaign => "campaign",
        }
    }
}

/// The rights of one grant. Only what is set is given; a grant with none
/// is refused by [`AccessPolicy::validate`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rights {
    /// May acquire locks under the prefix.
    pub lock: bool,
    /// May read keys, locks and elections under the prefix.
    pub read: bool,
    /// May write keys under the prefix.
    pub write: bool,
    /// May campaign in elections under the prefix.
    pub campaign: bool,
}

impl Rights {
    /// Every right.
    pub const ALL: Rights = Rights {
        lock: true,
        read: true,
        write: true,
        campaign: true,
    };

    /// Whether `right` is among these.
    pub fn has(&self, right: Right) -> bool {
        match right {
            Right::Lock => self.lock,
            Right::Read => self.read,
            Right::Write => self.write,
            Right::Campaign => self.campaign,
        }
    }

    /// Adds `right`.
    pub fn add(&mut self, right: Right) {
        match right {
            Right::Lock => self.lock = true,
            Right::Read => self.read = true,
            Right::Write => self.write = true,
            Right::Campaign => self.campaign = true,
        }
    }

    /// Whether no right is set.
    pub fn is_empty(&self) -> bool {
        !(self.lock || self.read || self.write || self.campaign)
    }

    /// These rights plus `other`'s.
    pub fn union(self, other: Rights) -> Rights {
        Rights {
            lock: self.lock || other.lock,
            read: self.read || other.read,
            write: self.write || other.write,
            campaign: self.campaign || other.campaign,
        }
    }

    /// The rights set, by name, in display order.
    pub fn names(&self) -> Vec<&'static str> {
        Right::ALL
            .into_iter()
            .filter(|r| self.has(*r))
            .map(Right::as_str)
            .collect()
    }

    /// Parses a comma-separated list of `lock`, `read`, `write`,
    /// `campaign`, or `all`; refuses an empty list or an unknown word.
    pub fn parse(text: &str) -> Result<Rights, String> {
        let mut rights = Rights::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => rights = rights.union(Rights::ALL),
                other => match Right::ALL.into_iter().find(|r| r.as_str() == other) {
                    Some(r) => rights.add(r),
                    None => {
                        return Err(format!(
                            "unknown right '{other}' (expected lock, read, write, campaign or all)"
                        ))
                    }
                },
            }
        }
        if rights.is_empty() {
            return Err("no right given (expected lock, read, write, campaign or all)".into());
        }
        Ok(rights)
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.names().join(","))
    }
}

/// The principal name a grant gives to every authenticated client.
pub const ANY_CLIENT: &str = "*";

/// One grant: `principal` may use `rights` on every name starting with
/// `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grant {
    /// A client's certificate name, `node-<id>` for a node, or
    /// [`ANY_CLIENT`] (`*`) for every authenticated client (not nodes).
    /// Non-empty, at most [`MAX_PRINCIPAL_BYTES`](limits::MAX_PRINCIPAL_BYTES).
    pub principal: String,
    /// Names (locks, keys, elections) starting with this; empty = every
    /// name. At most [`MAX_NAME_BYTES_CEILING`](limits::MAX_NAME_BYTES_CEILING).
    pub prefix: String,
    /// What the grant allows; at least one right.
    pub rights: Rights,
}

impl Grant {
    /// Whether this grant names `principal` (by name, or `*` for a client).
    fn names(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Client { name, .. } => self.principal == ANY_CLIENT || self.principal == *name,
            Principal::Node(_) => self.principal == principal.name(),
            Principal::Anonymous => false,
        }
    }
}

/// The replicated access policy: which principals may lock, read, write
/// and campaign under which name prefixes, and which are administrators.
/// It is part of the state machine's state and changes only through a
/// committed `SetPolicy` from an administrator, so every node enforces the
/// same one.
///
/// Grants only add: a principal may do what any grant naming it (or `*`)
/// allows, and nothing else. Administrators (certificates with the admin
/// role, the names in `admins`, and `Anonymous` on an insecure node) may do
/// everything: every right on every name, and every admin request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPolicy {
    /// Client names that are administrators besides admin-role
    /// certificates; at most [`MAX_POLICY_ADMINS`](limits::MAX_POLICY_ADMINS).
    pub admins: BTreeSet<String>,
    /// The grants, in the order shown; at most
    /// [`MAX_POLICY_GRANTS`](limits::MAX_POLICY_GRANTS), no two for the same
    /// principal and prefix.
    pub grants: Vec<Grant>,
}

impl Default for AccessPolicy {
    /// A new cluster's policy: every authenticated client may do everything
    /// on every name; only admin-role certificates are administrators.
    fn default() -> Self {
        AccessPolicy {
            admins: BTreeSet::new(),
            grants: vec![Grant {
                principal: ANY_CLIENT.into(),
                prefix: String::new(),
                rights: Rights::ALL,
            }],
        }
    }
}

impl AccessPolicy {
    /// A policy with no grant and no named administrator: only admin-role
    /// certificates may do anything.
    pub fn closed() -> AccessPolicy {
        AccessPolicy {
            admins: BTreeSet::new(),
            grants: Vec::new(),
        }
    }

    /// Whether `principal` is an administrator.
    pub fn is_admin(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Anonymous => true,
            Principal::Client { admin: true, .. } => true,
            Principal::Client { name, admin: false } => self.admins.contains(name),
            Principal::Node(_) => false,
        }
    }

    /// Whether `principal` has `right` on `name`.
    pub fn allows(&self, principal: &Principal, right: Right, name: &str) -> bool {
        self.is_admin(principal)
            || self
                .grants
                .iter()
                .any(|g| g.rights.has(right) && name.starts_with(g.prefix.as_str()) && g.names(principal))
    }

    /// Whether `principal` has `right` on every name starting with
    /// `prefix`: one grant must cover the whole prefix.
    pub fn allows_under(&self, principal: &Principal, right: Right, prefix: &str) -> bool {
        self.is_admin(principal)
            || self
                .grants
                .iter()
                .any(|g| g.rights.has(right) && prefix.starts_with(g.prefix.as_str()) && g.names(principal))
    }

    /// Checks `principal` may run `action` on `name`: `Ok` or the refusal
    /// to send back.
    pub fn check(&self, principal: &Principal, action: Action, name: &str) -> Result<(), Denied> {
        let allowed = match action {
            Action::Lock => self.allows(principal, Right::Lock, name),
            Action::Write => self.allows(principal, Right::Write, name),
            Action::Campaign => self.allows(principal, Right::Campaign, name),
            Action::Read => self.allows(principal, Right::Read, name),
            Action::ReadLock => self.allows(principal, Right::Read, name) || self.allows(principal, Right::Lock, name),
            Action::ReadElection => {
                self.allows(principal, Right::Read, name) || self.allows(principal, Right::Campaign, name)
            }
            Action::ReadUnder => self.allows_under(principal, Right::Read, name),
            Action::UseSession | Action::ObserveAll | Action::Admin | Action::ReportHealth => self.is_admin(principal),
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied::new(principal, action, name))
        }
    }

    /// Checks a session operation against the rights it needs (see
    /// [`op_action`]).
    pub fn check_op(&self, principal: &Principal, op: &SessionOp) -> Result<(), Denied> {
        match op_action(op) {
            Some((action, name)) => self.check(principal, action, name),
            None => Ok(()),
        }
    }

    /// Checks that the policy can be put in force: bounded counts and
    /// sizes, non-empty names, at least one right per grant, no two grants
    /// for the same principal and prefix. The message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.admins.len() > limits::MAX_POLICY_ADMINS {
            return Err(format!(
                "{} admins, at most {} allowed",
                self.admins.len(),
                limits::MAX_POLICY_ADMINS
            ));
        }
        for admin in &self.admins {
            check_principal_name(admin, "admin")?;
            if admin == ANY_CLIENT {
                return Err("'*' cannot be an admin: name the administrators".into());
            }
        }
        if self.grants.len() > limits::MAX_POLICY_GRANTS {
            return Err(format!(
                "{} grants, at most {} allowed",
                self.grants.len(),
                limits::MAX_POLICY_GRANTS
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, g) in self.grants.iter().enumerate() {
            check_principal_name(&g.principal, &format!("grant {}", i + 1))?;
            if g.prefix.len() > limits::MAX_NAME_BYTES_CEILING {
                return Err(format!(
                    "grant {}: prefix is {} bytes, at most {} allowed",
                    i + 1,
                    g.prefix.len(),
                    limits::MAX_NAME_BYTES_CEILING
                ));
            }
            if g.rights.is_empty() {
                return Err(format!(
                    "grant {} ({} on '{}') gives no right",
                    i + 1,
                    g.principal,
                    g.prefix
                ));
            }
            if !seen.insert((g.principal.as_str(), g.prefix.as_str())) {
                return Err(format!(
                    "two grants for {} on '{}': merge their rights into one",
                    g.principal, g.prefix
                ));
            }
        }
        Ok(())
    }

    /// This policy with `rights` added for `principal` on `prefix` (merged
    /// into an existing grant for the same pair, else appended).
    pub fn with_grant(mut self, principal: &str, prefix: &str, rights: Rights) -> AccessPolicy {
        match self
            .grants
            .iter_mut()
            .find(|g| g.principal == principal && g.prefix == prefix)
        {
            Some(g) => g.rights = g.rights.union(rights),
            None => self.grants.push(Grant {
                principal: principal.to_owned(),
                prefix: prefix.to_owned(),
                rights,
            }),
        }
        self
    }

    /// This policy without the grant for `principal` on `prefix`, and
    /// whether there was one.
    pub fn without_grant(mut self, principal: &str, prefix: &str) -> (AccessPolicy, bool) {
        let before = self.grants.len();
        self.grants
            .retain(|g| !(g.principal == principal && g.prefix == prefix));
        let removed = self.grants.len() != before;
        (self, removed)
    }
}

fn check_principal_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what}: empty principal name"));
    }
    if name.len() > limits::MAX_PRINCIPAL_BYTES {
        return Err(format!(
            "{what}: principal name is {} bytes, at most {} allowed",
            name.len(),
            limits::MAX_PRINCIPAL_BYTES
        ));
    }
    Ok(())
}

/// The policy in force and the entry that set it, as `Query::Policy`
/// answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    /// The policy every node enforces now.
    pub policy: AccessPolicy,
    /// Log index of the `SetPolicy` that put it in force; 0 = the default
    /// policy of a new cluster. A `SetPolicy` may name it as its expected
    /// revision, so that two administrators' edits cannot overwrite each
    /// other unseen.
    pub revision: u64,
}

/// What a refused request tried to do; with [`Denied`]'s name it makes the
/// message "`<principal>` may not `<action>` '`<name>`'".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Acquire a lock (needs [`Right::Lock`]); the name is the lock.
    Lock,
    /// Read a key (needs [`Right::Read`]); the name is the key.
    Read,
    /// Read a lock (needs [`Right::Read`] or [`Right::Lock`]).
    ReadLock,
    /// Read an election or observe its events (needs [`Right::Read`] or
    /// [`Right::Campaign`]).
    ReadElection,
    /// Read or observe every key under a prefix (needs [`Right::Read`] from
    /// one grant covering the whole prefix); the name is the prefix.
    ReadUnder,
    /// Write or delete a key (needs [`Right::Write`]); the name is the key.
    Write,
    /// Campaign, proclaim or hand over in an election (needs
    /// [`Right::Campaign`]); the name is the election.
    Campaign,
    /// Use a session the principal did not open, or with the wrong secret;
    /// the name is the session id.
    UseSession,
    /// Observe every event (no filter): administrators only.
    ObserveAll,
    /// An administrative request or read (membership, leader transfer,
    /// handover, policy); the name is the request's kind.
    Admin,
    /// Report health for a node: only the node itself; the name is the
    /// node the report was about.
    ReportHealth,
}

impl Action {
    /// The verb phrase of the refusal message.
    pub fn phrase(self) -> &'static str {
        match self {
            Action::Lock => "lock",
            Action::Read => "read key",
            Action::ReadLock => "read lock",
            Action::ReadElection => "read election",
            Action::ReadUnder => "read keys under",
            Action::Write => "write key",
            Action::Campaign => "campaign in election",
            Action::UseSession => "use session",
            Action::ObserveAll => "observe every event",
            Action::Admin => "make the admin request",
            Action::ReportHealth => "report the health of",
        }
    }
}

/// A refusal: `principal` may not run `action` on `name`. Carried by
/// `ApiError::PermissionDenied` (refused by the node, before proposing)
/// and `Rejection::PermissionDenied` (refused by the state machine at
/// apply, changing nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denied {
    /// Who asked, as [`Principal`]'s display form (`alice`, `ops (admin)`,
    /// `node 3`).
    pub principal: String,
    /// What was refused.
    pub action: Action,
    /// The lock, key, prefix, election, session or request it was refused
    /// on; empty when the action names nothing.
    pub name: String,
}

impl Denied {
    /// A refusal of `action` on `name` to `principal`.
    pub fn new(principal: &Principal, action: Action, name: &str) -> Denied {
        Denied {
            principal: principal.to_string(),
            action,
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_denied(f, &self.principal, self.action, &self.name)
    }
}

/// "permission denied: alice may not write key 'billing/x'": the message of
/// every refusal, whichever type carries it.
pub(crate) fn write_denied(
    f: &mut std::fmt::Formatter<'_>,
    principal: &str,
    action: Action,
    name: &str,
) -> std::fmt::Result {
    if name.is_empty() && action == Action::ReadUnder {
        write!(f, "permission denied: {principal} may not read every key")
    } else if name.is_empty() {
        write!(f, "permission denied: {principal} may not {}", action.phrase())
    } else {
        write!(f, "permission denied: {principal} may not {} '{name}'", action.phrase())
    }
}

/// What a session operation needs, beyond being its session's owner: the
/// action and the name it is checked on, or `None` for operations any
/// owner may always send (keepalive, close, release, resign, relinquish,
/// probe answers: giving things up is never refused).
pub fn op_action(op: &SessionOp) -> Option<(Action, &str)> {
    match op {
        SessionOp::Acquire { name, .. } => Some((Action::Lock, name)),
        SessionOp::KvPut { key, .. } | SessionOp::KvCas { key, .. } | SessionOp::KvDelete { key, .. } => {
            Some((Action::Write, key))
        }
        SessionOp::Campaign { election, .. }
        | SessionOp::Proclaim { election, .. }
        | SessionOp::HandoverState { election, .. }
        | SessionOp::HandoverAck { election, .. } => Some((Action::Campaign, election)),
        SessionOp::Keepalive { .. }
        | SessionOp::Close
        | SessionOp::Release { .. }
        | SessionOp::Resign { .. }
        | SessionOp::Relinquish { .. }
        | SessionOp::ProbeAnswer => None,
    }
}

/// Bytes of a [`SessionSecret`].
pub const SESSION_SECRET_BYTES: usize = 32;

/// The secret a client library draws (32 random bytes) when it opens a
/// session, keeps, and sends with every operation of the session. The node
/// stores only its SHA-256 ([`SessionSecret::digest`]) in the session and
/// refuses an operation whose secret does not hash to it, so knowing a
/// session's id (which reads and events publish) is not enough to use it.
/// Its `Debug` shows nothing of it; it appears in no view, event, status or
/// log line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSecret(pub [u8; SESSION_SECRET_BYTES]);

impl SessionSecret {
    /// SHA-256 of the secret: what the session stores and the node compares.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }

    /// Whether this secret hashes to `expected` (compared in constant time).
    pub fn matches(&self, expected: &[u8; 32]) -> bool {
        let digest = self.digest();
        digest.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AccessPolicy {
        AccessPolicy {
            admins: ["ops".to_string()].into(),
            grants: vec![
                Grant {
                    principal: "alice".into(),
                    prefix: "billing/".into(),
                    rights: Rights::parse("lock,read").unwrap(),
                },
                Grant {
                    principal: ANY_CLIENT.into(),
                    prefix: "public/".into(),
                    rights: Rights::parse("read").unwrap(),
                },
            ],
        }
    }

    #[test]
    fn the_default_policy_lets_every_client_do_everything_and_makes_no_admin() {
        let p = AccessPolicy::default();
        let alice = Principal::client("alice");
        for right in Right::ALL {
            assert!(p.allows(&alice, right, "any/name"));
        }
        assert!(p.allows_under(&alice, Right::Read, ""));
        assert!(!p.is_admin(&alice));
        assert!(p.is_admin(&Principal::admin("root")));
        assert!(p.is_admin(&Principal::Anonymous));
        // `*` is every client, not a node.
        assert!(!p.allows(&Principal::Node(1), Right::Write, "k"));
        assert!(p.validate().is_ok());
    }

    #[test]
    fn grants_give_only_their_rights_under_their_prefix() {
        let p = policy();
        let alice = Principal::client("alice");
        assert!(p.allows(&alice, Right::Lock, "billing/jobs"));
        assert!(!p.allows(&alice, Right::Write, "billing/jobs"));
        assert!(!p.allows(&alice, Right::Lock, "other/jobs"));
        assert!(p.allows(&alice, Right::Read, "public/x"));
        assert!(!p.allows(&Principal::client("bob"), Right::Read, "billing/x"));
        // A prefix read needs one grant covering the whole prefix.
        assert!(p.allows_under(&alice, Right::Read, "billing/2026/"));
        assert!(!p.allows_under(&alice, Right::Read, "bill"));
        assert!(!p.allows_under(&alice, Right::Read, ""));
        // Named admins and admin-role certificates may do everything.
        assert!(p.allows(&Principal::client("ops"), Right::Write, "billing/x"));
        assert!(p.is_admin(&Principal::client("ops")));
        assert!(p.allows(&Principal::admin("root"), Right::Campaign, "e"));
    }

    #[test]
    fn a_refusal_says_who_may_not_do_what_where() {
        let p = policy();
        let denied = p
            .check(&Principal::client("alice"), Action::Write, "billing/x")
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "permission denied: alice may not write key 'billing/x'"
        );
        let denied = p
            .check(&Principal::client("bob"), Action::ReadUnder, "billing/")
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "permission denied: bob may not read keys under 'billing/'"
        );
        let denied = p.check(&Principal::client("bob"), Action::ObserveAll, "").unwrap_err();
        assert_eq!(denied.to_string(), "permission denied: bob may not observe every event");
        // Reading a lock is allowed with the lock right alone.
        assert!(p
            .check(&Principal::client("alice"), Action::ReadLock, "billing/j")
            .is_ok());
    }

    #[test]
    fn operations_that_give_things_up_need_no_right() {
        let p = AccessPolicy::closed();
        let nobody = Principal::client("nobody");
        for op in [
            SessionOp::Close,
            SessionOp::Release { name: "a".into() },
            SessionOp::Resign { election: "e".into() },
            SessionOp::ProbeAnswer,
            SessionOp::Keepalive {
                health: None,
                clock: None,
            },
        ] {
            assert!(p.check_op(&nobody, &op).is_ok(), "{op:?}");
        }
        let acquire = SessionOp::Acquire {
            name: "a".into(),
            mode: crate::LockMode::Exclusive,
            wait_us: 0,
        };
        assert_eq!(p.check_op(&nobody, &acquire).unwrap_err().action, Action::Lock);
    }

    #[test]
    fn validation_refuses_what_cannot_be_enforced_sensibly() {
        let mut p = policy();
        p.grants.push(p.grants[0].clone());
        assert!(p.validate().unwrap_err().contains("two grants"));
        let mut p = policy();
        p.grants[0].rights = Rights::default();
        assert!(p.validate().unwrap_err().contains("gives no right"));
        let mut p = policy();
        p.admins.insert("*".into());
        assert!(p.validate().is_err());
        let mut p = policy();
        p.grants[0].principal = String::new();
        assert!(p.validate().unwrap_err().contains("empty principal"));
        let mut p = AccessPolicy::closed();
        for i in 0..=limits::MAX_POLICY_GRANTS {
            p = p.with_grant(&format!("c{i}"), "", Rights::ALL);
        }
        assert!(p.validate().unwrap_err().contains("grants"));
    }

    #[test]
    fn grant_merges_and_revoke_removes() {
        let p = policy().with_grant("alice", "billing/", Rights::parse("write").unwrap());
        assert_eq!(p.grants.len(), 2);
        assert_eq!(p.grants[0].rights.to_string(), "lock,read,write");
        let (p, removed) = p.without_grant("alice", "billing/");
        assert!(removed);
        assert_eq!(p.grants.len(), 1);
        let (_, removed) = p.without_grant("alice", "billing/");
        assert!(!removed);
    }

    #[test]
    fn rights_parse_and_print() {
        assert_eq!(Rights::parse("all").unwrap(), Rights::ALL);
        assert_eq!(Rights::parse("read, write").unwrap().to_string(), "read,write");
        assert!(Rights::parse("").is_err());
        assert!(Rights::parse("fly").unwrap_err().contains("unknown right 'fly'"));
    }

    #[test]
    fn a_secret_matches_only_its_own_digest_and_never_prints() {
        let secret = SessionSecret([7; 32]);
        let other = SessionSecret([8; 32]);
        assert!(secret.matches(&secret.digest()));
        assert!(!other.matches(&secret.digest()));
        assert_eq!(format!("{secret:?}"), "SessionSecret(<redacted>)");
    }

    #[test]
    fn ownership_follows_the_name_not_the_admin_role() {
        assert!(Principal::client("a").same_party(&Principal::admin("a")));
        assert!(!Principal::client("a").same_party(&Principal::client("b")));
        assert!(!Principal::client("node-1").same_party(&Principal::Node(1)));
        assert!(Principal::Anonymous.same_party(&Principal::Anonymous));
    }
}
