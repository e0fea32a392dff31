//! The node's authorization checks (docs/security.md, "Policy model"):
//! what the connection's [`Principal`] may ask, decided against the access
//! policy in this node's applied state *before* anything is proposed, so a
//! refused request never reaches the log. Commands that do reach it carry
//! their proposer and the state machine checks them again at apply
//! (state-machine `authz.rs`), so every replica decides alike even if the
//! policy changed in between; reads, `observe`, `status` and admin requests
//! are decided here only, on the serving node.
//!
//! Every function takes the state and the principal as arguments, so tests
//! build both directly.

use driftlock_proto::{
    AccessPolicy, Action, AdminRequest, ApiError, Denied, EventFilter, KvWrite, NodeStatus, Principal, Query,
    SessionId, SessionOp, SessionSecret,
};
use driftlock_state_machine::StateMachine;

/// Checks a session operation before it is proposed: `principal` must have
/// opened the session and `secret` must be the one it was opened with
/// (refused as `use session`), and the operation's rights must be granted
/// (`lock` for an acquire, `write` for KV writes, `campaign` for election
/// steps; giving things up needs none).
///
/// A session this node's applied state does not know yet (a new leader
/// still applying) is let through: the state machine checks the owner at
/// apply and answers `UnknownSession` for one that never existed.
pub fn check_session_op(
    sm: &StateMachine,
    principal: &Principal,
    session: SessionId,
    secret: &SessionSecret,
    op: &SessionOp,
) -> Result<(), ApiError> {
    if let Some((owner, digest)) = sm.session_owner(session) {
        // Both are checked before either answer is chosen, so a caller
        // cannot tell "wrong owner" from "wrong secret".
        let owner_ok = owner.same_party(principal);
        let secret_ok = secret.matches(digest);
        if !(owner_ok && secret_ok) {
            return Err(Denied::new(principal, Action::UseSession, &session.to_string()).into());
        }
    }
    sm.policy().check_op(principal, op)?;
    Ok(())
}

/// Checks a sessionless KV write: the `write` right on its key.
pub fn check_kv_write(policy: &AccessPolicy, principal: &Principal, write: &KvWrite) -> Result<(), ApiError> {
    let key = match write {
        KvWrite::Put { key, .. } | KvWrite::Delete { key } | KvWrite::Cas { key, .. } => key,
    };
    policy.check(principal, Action::Write, key)?;
    Ok(())
}

/// Checks a read: `read` on a key; `read` over a whole prefix for a range
/// (one grant must cover it); `read` or `lock` on a lock; `read` or
/// `campaign` on an election; a session only by its owner or an
/// administrator (a session this node does not know reads as absent, which
/// tells nothing); the policy only by an administrator; counts and the
/// replicated configuration (bounds and weights, no names) by anyone.
pub fn check_query(sm: &StateMachine, principal: &Principal, query: &Query) -> Result<(), ApiError> {
    let policy = sm.policy();
    match query {
        Query::KvGet { key } => policy.check(principal, Action::Read, key)?,
        Query::KvRange { prefix, .. } => policy.check(principal, Action::ReadUnder, prefix)?,
        Query::Lock { name } => policy.check(principal, Action::ReadLock, name)?,
        Query::Election { name } => policy.check(principal, Action::ReadElection, name)?,
        Query::Session { session } => {
            if let Some((owner, _)) = sm.session_owner(*session) {
                if !owner.same_party(principal) && !policy.is_admin(principal) {
                    return Err(Denied::new(principal, Action::UseSession, &session.to_string()).into());
                }
            }
        }
        Query::Policy => policy.check(principal, Action::Admin, "policy")?,
        Query::Stats | Query::Config => {}
    }
    Ok(())
}

/// Checks an `observe` filter. An unfiltered observe (every event) needs
/// an administrator; otherwise each part of the filter must be readable:
/// the session must be the principal's own (or the principal an
/// administrator) — each of `session` and `sessions` alike —, the key
/// prefix readable as a whole, the election readable. A session id beyond this node's last applied revision is not
/// known yet: `Unavailable`, so the caller retries (elsewhere or later); one
/// that existed and ended cannot be attributed any more and is refused.
pub fn check_observe(sm: &StateMachine, principal: &Principal, filter: &EventFilter) -> Result<(), ApiError> {
    let policy = sm.policy();
    if filter.is_unfiltered() {
        policy.check(principal, Action::ObserveAll, "")?;
        return Ok(());
    }
    if !policy.is_admin(principal) {
        for session in filter.all_sessions() {
            match sm.session_owner(session) {
                Some((owner, _)) if owner.same_party(principal) => {}
                None if session > sm.last_revision() => {
                    return Err(ApiError::Unavailable(format!(
                        "session {session} is not applied on this node yet (applied through revision {})",
                        sm.last_revision()
                    )))
                }
                _ => return Err(Denied::new(principal, Action::UseSession, &session.to_string()).into()),
            }
        }
    }
    if let Some(prefix) = &filter.key_prefix {
        policy.check(principal, Action::ReadUnder, prefix)?;
    }
    if let Some(election) = &filter.election {
        policy.check(principal, Action::ReadElection, election)?;
    }
    Ok(())
}

/// Checks an administrative request: a health report only from the node
/// it is about (or an insecure node's anonymous caller); everything else
/// (init, membership, leader transfer, handover, policy, replicated
/// configuration, reading a snapshot for a backup) only from an
/// administrator.
pub fn check_admin(policy: &AccessPolicy, principal: &Principal, request: &AdminRequest) -> Result<(), ApiError> {
    if let AdminRequest::ReportHealth { node, .. } = request {
        return match principal {
            Principal::Node(id) if id == node => Ok(()),
            Principal::Anonymous => Ok(()),
            _ => Err(Denied::new(principal, Action::ReportHealth, &format!("node {node}")).into()),
        };
    }
    policy.check(principal, Action::Admin, request.kind())?;
    Ok(())
}

/// Whether `principal` sees a node's whole status: administrators and
/// nodes (which read each other's for health and handover).
pub fn sees_full_status(policy: &AccessPolicy, principal: &Principal) -> bool {
    matches!(principal, Principal::Node(_)) || policy.is_admin(principal)
}

/// The basics of a status every authenticated client may see: who the node
/// is, its role, term, leader, log position, membership (client addresses,
/// so clients can find the leader), cluster time, counts and warnings.
/// Raft addresses, health and clock measurements, hot lock names and
/// snapshot counts are for administrators.
pub fn basic_status(status: NodeStatus) -> NodeStatus {
    NodeStatus {
        raft_addr: String::new(),
        health: None,
        nhi_permille: None,
        health_tier: None,
        clock: None,
        hot_locks: Vec::new(),
        snapshots_installed: 0,
        ..status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlock_proto::{Config, Grant, LockMode, Reply, Rights};
    use driftlock_state_machine::{Command, EntryMeta};

    const SEC: u64 = 1_000_000;

    struct World {
        sm: StateMachine,
        index: u64,
    }

    impl World {
        fn new() -> World {
            World {
                sm: StateMachine::new(Config::default()),
                index: 0,
            }
        }

        fn apply(&mut self, command: Command) -> Result<Reply, driftlock_proto::Rejection> {
            self.index += 1;
            let meta = EntryMeta {
                index: self.index,
                ts_us: 1_000 * SEC + self.index,
            };
            self.sm.apply(command, meta).0
        }

        fn open(&mut self, owner: &Principal, secret: &SessionSecret) -> SessionId {
            match self.apply(Command::OpenSession {
                nonce: u128::from(self.index) + 1,
                client_name: "t".into(),
                requested_ttl_us: 10 * SEC,
                owner: owner.clone(),
                secret_sha256: secret.digest(),
            }) {
                Ok(Reply::SessionOpened { session, .. }) => session,
                other => panic!("open failed: {other:?}"),
            }
        }

        fn set_policy(&mut self, policy: AccessPolicy) {
            let r = self.apply(Command::SetPolicy {
                policy,
                expected_revision: None,
                by: Principal::admin("root"),
            });
            assert_eq!(r, Ok(Reply::Done));
        }
    }

    fn acquire(name: &str) -> SessionOp {
        SessionOp::Acquire {
            name: name.into(),
            mode: LockMode::Exclusive,
            wait_us: 0,
        }
    }

    fn denied(r: Result<(), ApiError>) -> String {
        match r {
            Err(e @ ApiError::PermissionDenied { .. }) => e.to_string(),
            other => panic!("expected permission denied, got {other:?}"),
        }
    }

    fn billing_policy() -> AccessPolicy {
        AccessPolicy {
            admins: ["ops".to_string()].into(),
            grants: vec![Grant {
                principal: "alice".into(),
                prefix: "billing/".into(),
                rights: Rights::parse("lock,read").unwrap(),
            }],
        }
    }

    #[test]
    fn a_session_op_needs_the_owner_and_the_secret() {
        let mut w = World::new();
        let alice = Principal::client("alice");
        let secret = SessionSecret([1; 32]);
        let s = w.open(&alice, &secret);
        assert!(check_session_op(&w.sm, &alice, s, &secret, &acquire("x")).is_ok());
        // The same admin-role name keeps its sessions.
        assert!(check_session_op(&w.sm, &Principal::admin("alice"), s, &secret, &acquire("x")).is_ok());
        let stale = SessionSecret([2; 32]);
        assert_eq!(
            denied(check_session_op(&w.sm, &alice, s, &stale, &acquire("x"))),
            format!("permission denied: alice may not use session '{s}'")
        );
        // Another principal, even with the right secret, even an admin.
        let mallory = Principal::client("mallory");
        assert!(denied(check_session_op(&w.sm, &mallory, s, &secret, &SessionOp::Close)).contains("mallory"));
        assert!(check_session_op(&w.sm, &Principal::admin("root"), s, &secret, &SessionOp::Close).is_err());
        // A session not applied here is left to the state machine.
        assert!(check_session_op(&w.sm, &mallory, s + 100, &stale, &SessionOp::Close).is_ok());
    }

    #[test]
    fn a_session_op_needs_the_right_for_its_name() {
        let mut w = World::new();
        w.set_policy(billing_policy());
        let alice = Principal::client("alice");
        let secret = SessionSecret([1; 32]);
        let s = w.open(&alice, &secret);
        assert!(check_session_op(&w.sm, &alice, s, &secret, &acquire("billing/job")).is_ok());
        assert_eq!(
            denied(check_session_op(&w.sm, &alice, s, &secret, &acquire("hr/job"))),
            "permission denied: alice may not lock 'hr/job'"
        );
        let put = SessionOp::KvPut {
            key: "billing/x".into(),
            value: vec![],
            fence: None,
        };
        assert!(denied(check_session_op(&w.sm, &alice, s, &secret, &put)).contains("write key 'billing/x'"));
        // Giving things up needs no right.
        let release = SessionOp::Release { name: "hr/job".into() };
        assert!(check_session_op(&w.sm, &alice, s, &secret, &release).is_ok());
    }

    #[test]
    fn reads_need_read_rights_on_their_names() {
        let mut w = World::new();
        w.set_policy(billing_policy());
        let alice = Principal::client("alice");
        let bob = Principal::client("bob");
        let get = |key: &str| Query::KvGet { key: key.into() };
        assert!(check_query(&w.sm, &alice, &get("billing/x")).is_ok());
        assert!(denied(check_query(&w.sm, &bob, &get("billing/x"))).contains("bob may not read key"));
        let range = |prefix: &str| Query::KvRange {
            prefix: prefix.into(),
            start_after: None,
            limit: 10,
        };
        assert!(check_query(&w.sm, &alice, &range("billing/")).is_ok());
        assert!(denied(check_query(&w.sm, &alice, &range(""))).ends_with("alice may not read every key"));
        assert!(check_query(
            &w.sm,
            &alice,
            &Query::Lock {
                name: "billing/l".into()
            }
        )
        .is_ok());
        assert!(check_query(&w.sm, &alice, &Query::Election { name: "e".into() }).is_err());
        assert!(check_query(&w.sm, &alice, &Query::Policy).is_err());
        assert!(check_query(&w.sm, &Principal::client("ops"), &Query::Policy).is_ok());
        assert!(check_query(&w.sm, &bob, &Query::Stats).is_ok());
        let s = w.open(&alice, &SessionSecret([1; 32]));
        assert!(check_query(&w.sm, &alice, &Query::Session { session: s }).is_ok());
        assert!(check_query(&w.sm, &bob, &Query::Session { session: s }).is_err());
        assert!(check_query(&w.sm, &Principal::admin("root"), &Query::Session { session: s }).is_ok());
    }

    #[test]
    fn observe_needs_a_filter_the_principal_may_read() {
        let mut w = World::new();
        w.set_policy(billing_policy());
        let alice = Principal::client("alice");
        let bob = Principal::client("bob");
        let s = w.open(&alice, &SessionSecret([1; 32]));
        let all = EventFilter::default();
        assert_eq!(
            denied(check_observe(&w.sm, &alice, &all)),
            "permission denied: alice may not observe every event"
        );
        assert!(check_observe(&w.sm, &Principal::admin("root"), &all).is_ok());
        let own = EventFilter {
            session: Some(s),
            ..EventFilter::default()
        };
        assert!(check_observe(&w.sm, &alice, &own).is_ok());
        assert!(denied(check_observe(&w.sm, &bob, &own)).contains("use session"));
        let future = EventFilter {
            session: Some(s + 50),
            ..EventFilter::default()
        };
        assert!(matches!(
            check_observe(&w.sm, &bob, &future),
            Err(ApiError::Unavailable(_))
        ));
        let keys = |p: &str| EventFilter {
            key_prefix: Some(p.into()),
            ..EventFilter::default()
        };
        assert!(check_observe(&w.sm, &alice, &keys("billing/a")).is_ok());
        assert!(check_observe(&w.sm, &alice, &keys("bill")).is_err());
        // Every part must be readable, not just one.
        let mixed = EventFilter {
            session: Some(s),
            election: Some("hr".into()),
            ..EventFilter::default()
        };
        assert!(denied(check_observe(&w.sm, &alice, &mixed)).contains("read election 'hr'"));
        // A list of sessions: every one is checked like the single one.
        let theirs = w.open(&bob, &SessionSecret([2; 32]));
        let list = |sessions: Vec<u64>| EventFilter {
            sessions,
            ..EventFilter::default()
        };
        let s2 = w.open(&alice, &SessionSecret([3; 32]));
        assert!(check_observe(&w.sm, &alice, &list(vec![s, s2])).is_ok());
        assert!(denied(check_observe(&w.sm, &alice, &list(vec![s, theirs, s2]))).contains("use session"));
        assert!(denied(check_observe(&w.sm, &bob, &list(vec![theirs, s2]))).contains("use session"));
        assert!(matches!(
            check_observe(&w.sm, &alice, &list(vec![s, s2 + 50])),
            Err(ApiError::Unavailable(_))
        ));
        assert!(check_observe(&w.sm, &Principal::admin("root"), &list(vec![s, theirs])).is_ok());
    }

    #[test]
    fn admin_requests_need_an_admin_and_health_reports_their_node() {
        let policy = AccessPolicy::default();
        let alice = Principal::client("alice");
        let remove = AdminRequest::ChangeVoters { voters: vec![1, 2] };
        assert_eq!(
            denied(check_admin(&policy, &alice, &remove)),
            "permission denied: alice may not make the admin request 'change_voters'"
        );
        assert!(check_admin(&policy, &Principal::admin("root"), &remove).is_ok());
        assert!(check_admin(&policy, &Principal::Anonymous, &remove).is_ok());
        assert!(check_admin(&policy, &Principal::Node(1), &remove).is_err());
        let named = AccessPolicy {
            admins: ["alice".to_string()].into(),
            ..AccessPolicy::default()
        };
        assert!(check_admin(&named, &alice, &remove).is_ok());
        let set_config = AdminRequest::SetConfig {
            config: Config::default(),
            expected_revision: None,
        };
        assert_eq!(
            denied(check_admin(&policy, &alice, &set_config)),
            "permission denied: alice may not make the admin request 'set_config'"
        );
        assert!(check_admin(&policy, &Principal::Node(1), &set_config).is_err());
        assert!(check_admin(&policy, &Principal::admin("root"), &set_config).is_ok());
        assert!(check_admin(&named, &alice, &set_config).is_ok());
        // A backup reads every value and session digest: administrators
        // only, not even nodes.
        let backup = AdminRequest::ReadSnapshot {
            snapshot: None,
            offset: 0,
        };
        assert_eq!(
            denied(check_admin(&policy, &alice, &backup)),
            "permission denied: alice may not make the admin request 'read_snapshot'"
        );
        assert!(check_admin(&policy, &Principal::Node(1), &backup).is_err());
        assert!(check_admin(&policy, &Principal::admin("root"), &backup).is_ok());
        let report = AdminRequest::ReportHealth {
            node: 2,
            sample: driftlock_proto::HealthSample {
                cpu_load_permille: 0,
                mem_used_permille: 0,
                io_wait_permille: 0,
                rtt_mean_us: 0,
                rtt_stddev_us: 0,
                recent_failures: 0,
                load_permille: 0,
            },
        };
        assert!(check_admin(&policy, &Principal::Node(2), &report).is_ok());
        assert!(denied(check_admin(&policy, &Principal::Node(3), &report)).contains("node 3 may not report"));
        assert!(check_admin(&policy, &Principal::admin("root"), &report).is_err());
    }

    #[test]
    fn sessionless_writes_need_write() {
        let policy = billing_policy();
        let put = KvWrite::Put {
            key: "billing/x".into(),
            value: vec![],
        };
        assert!(denied(check_kv_write(&policy, &Principal::client("alice"), &put)).contains("write key"));
        assert!(check_kv_write(&policy, &Principal::client("ops"), &put).is_ok());
        assert!(check_kv_write(&AccessPolicy::default(), &Principal::client("alice"), &put).is_ok());
    }

    #[test]
    fn only_admins_and_nodes_see_the_whole_status() {
        let policy = AccessPolicy::default();
        assert!(!sees_full_status(&policy, &Principal::client("alice")));
        assert!(sees_full_status(&policy, &Principal::admin("root")));
        assert!(sees_full_status(&policy, &Principal::Node(4)));
        assert!(sees_full_status(&policy, &Principal::Anonymous));
    }
}
