//! Limits checked before proposing: a request whose names, values, chunk
//! or wait exceed the replicated limits in force (`state.config().limits`,
//! `lease`) or the protocol limits (`driftlock_proto::limits`) is refused
//! by the handler, so it never reaches the log — no append, no fsync on
//! every node, no apply (docs/security.md, "Bounded input").
//!
//! The checks mirror the state machine's own, with the same
//! [`Rejection`]s, so a client sees the answer it saw when the log refused
//! the command: where the state machine checks a name or value against the
//! replicated limits, so does this module; where it checks none (a release,
//! a resign: the name may have been admitted under larger limits), the name
//! is bounded only by the protocol ceiling, which nothing can exceed. The
//! state machine keeps its checks: it is the authority, and the limits may
//! change between this check and the apply.
//!
//! Count limits (sessions, keys, locks per session, waiters, candidates,
//! handover bytes so far) depend on the state at apply time and stay with
//! the state machine; a request refused there costs one small entry.
//!
//! A retry the state machine answers from memory (a session operation
//! whose `seq` is in its dedupe cache, an open whose nonce it knows) is not
//! checked: it must get its first answer even if the limits shrank since.

use driftlock_proto::limits;
use driftlock_proto::{AdminRequest, ApiError, Config, KvWrite, LimitKind, Rejection, SessionId, SessionOp};

use crate::server::NodeContext;

/// Checks an `open_session` before it is proposed: the client name's
/// length and the requested time-to-live.
pub fn open_session(ctx: &NodeContext, nonce: u128, client_name: &str, requested_ttl_us: u64) -> Result<(), ApiError> {
    ctx.state.with_state(|sm| {
        if sm.remembers_open(nonce) {
            return Ok(());
        }
        let config = sm.config();
        let max = config.limits.max_client_name_bytes;
        if client_name.len() > max {
            return Err(rejected(Rejection::NameTooLong {
                len: client_name.len(),
                max,
            }));
        }
        let lease = &config.lease;
        if requested_ttl_us < lease.min_ttl_us || requested_ttl_us > lease.max_ttl_us {
            return Err(rejected(Rejection::TtlOutOfRange {
                requested_us: requested_ttl_us,
                min_us: lease.min_ttl_us,
                max_us: lease.max_ttl_us,
            }));
        }
        Ok(())
    })
}

/// Checks a session operation before it is proposed: the protocol's
/// longest wait, the sequence number, and every name, value and chunk it
/// carries.
pub fn session_op(ctx: &NodeContext, session: SessionId, seq: u64, op: &SessionOp) -> Result<(), ApiError> {
    if let SessionOp::Acquire { wait_us, .. } = op {
        if *wait_us > limits::MAX_WAIT_US {
            return Err(ApiError::InvalidRequest(format!(
                "wait_us {wait_us} is above the protocol's longest wait ({} µs)",
                limits::MAX_WAIT_US
            )));
        }
    }
    if seq == 0 {
        return Err(ApiError::InvalidRequest("sequence numbers start at 1".into()));
    }
    ctx.state.with_state(|sm| {
        if sm.remembers_op(session, seq) {
            return Ok(());
        }
        session_op_limits(sm.config(), op).map_err(rejected)
    })
}

/// Checks a sessionless KV write before it is proposed: the key and the
/// value against the replicated limits.
pub fn kv_write(ctx: &NodeContext, write: &KvWrite) -> Result<(), ApiError> {
    ctx.state
        .with_state(|sm| kv_write_limits(sm.config(), write))
        .map_err(rejected)
}

/// Checks an administrative request before it does anything: the election
/// name of a handover (bounded by the protocol ceiling; the election must
/// exist, so a longer name cannot name one).
pub fn admin(request: &AdminRequest) -> Result<(), ApiError> {
    match request {
        AdminRequest::Handover { election, .. } => ceiling_name(election).map_err(rejected),
        AdminRequest::Init { .. }
        | AdminRequest::AddLearner { .. }
        | AdminRequest::ChangeVoters { .. }
        | AdminRequest::ReportHealth { .. }
        | AdminRequest::TransferLeader { .. } => Ok(()),
        // Validated (`AccessPolicy::validate`, `Config::validate`) where it
        // is served, before proposing.
        AdminRequest::SetPolicy { .. } | AdminRequest::SetConfig { .. } => Ok(()),
        // The offset is checked against the snapshot where it is served.
        AdminRequest::ReadSnapshot { .. } => Ok(()),
    }
}

fn rejected(rejection: Rejection) -> ApiError {
    ApiError::Rejected(rejection)
}

/// The limits a session operation must meet under `config`, in the order
/// the state machine checks them.
pub(crate) fn session_op_limits(config: &Config, op: &SessionOp) -> Result<(), Rejection> {
    match op {
        SessionOp::Keepalive { .. } | SessionOp::Close | SessionOp::ProbeAnswer => Ok(()),
        SessionOp::Acquire { name, .. } => name_limit(config, name),
        SessionOp::Release { name } => ceiling_name(name),
        SessionOp::KvPut { key, value, fence } | SessionOp::KvCas { key, value, fence, .. } => {
            name_limit(config, key)?;
            value_limit(config, value.len())?;
            match fence {
                Some(f) => name_limit(config, &f.lock),
                None => Ok(()),
            }
        }
        SessionOp::KvDelete { key, fence } => {
            name_limit(config, key)?;
            match fence {
                Some(f) => ceiling_name(&f.lock),
                None => Ok(()),
            }
        }
        SessionOp::Campaign { election, value } => {
            name_limit(config, election)?;
            value_limit(config, value.len())
        }
        SessionOp::Proclaim { election, value, .. } => {
            value_limit(config, value.len())?;
            ceiling_name(election)
        }
        SessionOp::HandoverState { election, data, .. } => {
            if data.len() > limits::MAX_VALUE_BYTES_CEILING {
                return Err(Rejection::ValueTooLarge {
                    len: data.len(),
                    max: limits::MAX_VALUE_BYTES_CEILING,
                });
            }
            ceiling_name(election)?;
            // One chunk above the whole handover's budget can never fit.
            let max = config.limits.max_handover_bytes;
            if data.len() > max {
                return Err(Rejection::LimitReached {
                    limit: LimitKind::HandoverBytes,
                    max: max as u64,
                });
            }
            Ok(())
        }
        SessionOp::Resign { election }
        | SessionOp::HandoverAck { election, .. }
        | SessionOp::Relinquish { election, .. } => ceiling_name(election),
    }
}

/// The limits a sessionless KV write must meet under `config`.
pub(crate) fn kv_write_limits(config: &Config, write: &KvWrite) -> Result<(), Rejection> {
    match write {
        KvWrite::Put { key, value } | KvWrite::Cas { key, value, .. } => {
            name_limit(config, key)?;
            value_limit(config, value.len())
        }
        KvWrite::Delete { key } => name_limit(config, key),
    }
}

/// A lock, key or election name the state machine checks: non-empty and
/// at most `limits.max_name_bytes`.
fn name_limit(config: &Config, name: &str) -> Result<(), Rejection> {
    if name.is_empty() {
        return Err(Rejection::EmptyName);
    }
    let max = config.limits.max_name_bytes;
    if name.len() > max {
        return Err(Rejection::NameTooLong { len: name.len(), max });
    }
    Ok(())
}

/// A value the state machine checks: at most `limits.max_value_bytes`.
fn value_limit(config: &Config, len: usize) -> Result<(), Rejection> {
    let max = config.limits.max_value_bytes;
    if len > max {
        return Err(Rejection::ValueTooLarge { len, max });
    }
    Ok(())
}

/// A name the state machine looks up without checking it (it may have been
/// admitted under larger limits): at most the protocol's ceiling, which no
/// name in the state can pass.
fn ceiling_name(name: &str) -> Result<(), Rejection> {
    let max = limits::MAX_NAME_BYTES_CEILING;
    if name.len() > max {
        return Err(Rejection::NameTooLong { len: name.len(), max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlock_proto::{Fence, LockMode};

    fn config() -> Config {
        Config::default()
    }

    #[test]
    fn names_and_values_are_held_to_the_replicated_limits() {
        let c = config();
        let max = c.limits.max_name_bytes;
        let long = "n".repeat(max + 1);
        let acquire = |name: &str| SessionOp::Acquire {
            name: name.into(),
            mode: LockMode::Exclusive,
            wait_us: 0,
        };
        assert_eq!(session_op_limits(&c, &acquire("ok")), Ok(()));
        assert_eq!(session_op_limits(&c, &acquire("")), Err(Rejection::EmptyName));
        assert_eq!(
            session_op_limits(&c, &acquire(&long)),
            Err(Rejection::NameTooLong { len: max + 1, max })
        );
        let big = c.limits.max_value_bytes + 1;
        let put = KvWrite::Put {
            key: "k".into(),
            value: vec![0; big],
        };
        assert_eq!(
            kv_write_limits(&c, &put),
            Err(Rejection::ValueTooLarge {
                len: big,
                max: c.limits.max_value_bytes
            })
        );
        let fenced = SessionOp::KvPut {
            key: "k".into(),
            value: vec![],
            fence: Some(Fence {
                lock: long.clone(),
                token: 1,
            }),
        };
        assert!(matches!(
            session_op_limits(&c, &fenced),
            Err(Rejection::NameTooLong { .. })
        ));
    }

    #[test]
    fn names_the_state_machine_only_looks_up_are_bounded_by_the_ceiling() {
        let c = config();
        // Above the replicated limit but within the ceiling: it may name a
        // lock admitted under larger limits, so it goes to the log.
        let legacy = "n".repeat(c.limits.max_name_bytes + 1);
        let release = |name: &str| SessionOp::Release { name: name.into() };
        assert_eq!(session_op_limits(&c, &release(&legacy)), Ok(()));
        let huge = "n".repeat(limits::MAX_NAME_BYTES_CEILING + 1);
        assert!(matches!(
            session_op_limits(&c, &release(&huge)),
            Err(Rejection::NameTooLong { .. })
        ));
        assert!(admin(&AdminRequest::Handover {
            election: huge,
            to: None
        })
        .is_err());
    }

    #[test]
    fn a_handover_chunk_is_held_to_the_ceiling_and_the_handover_budget() {
        let mut c = config();
        c.limits.max_handover_bytes = 1000;
        let chunk = |len: usize| SessionOp::HandoverState {
            election: "e".into(),
            epoch: 1,
            chunk_seq: 0,
            data: vec![0; len],
            crc32: 0,
            last: true,
        };
        assert_eq!(session_op_limits(&c, &chunk(1000)), Ok(()));
        assert_eq!(
            session_op_limits(&c, &chunk(1001)),
            Err(Rejection::LimitReached {
                limit: LimitKind::HandoverBytes,
                max: 1000
            })
        );
        c.limits.max_handover_bytes = limits::MAX_HANDOVER_BYTES_CEILING;
        assert!(matches!(
            session_op_limits(&c, &chunk(limits::MAX_VALUE_BYTES_CEILING + 1)),
            Err(Rejection::ValueTooLarge { .. })
        ));
    }
}
