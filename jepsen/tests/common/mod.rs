//! Helpers to build histories by hand in tests.

#![allow(dead_code)]

use driftlock_jepsen::history::{Function, LockHold, MasterView, Mastership, Op, OpKind, Value};

/// Builds a history from operations given with explicit times; events are
/// sorted by time (ties keep insertion order) and indexed on `build`.
#[derive(Default)]
pub struct Builder {
    events: Vec<(u64, usize, u64, OpKind, Function, Value)>,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, time_ns: u64, process: u64, kind: OpKind, f: Function, value: Value) {
        let seq = self.events.len();
        self.events.push((time_ns, seq, process, kind, f, value));
    }

    /// An operation invoked at `call_ns` and completed at `return_ns`.
    pub fn op(
        &mut self,
        process: u64,
        f: Function,
        call_ns: u64,
        return_ns: u64,
        kind: OpKind,
        value: Value,
    ) -> &mut Self {
        assert!(call_ns <= return_ns);
        self.push(call_ns, process, OpKind::Invoke, f.clone(), Value::None);
        self.push(return_ns, process, kind, f, value);
        self
    }

    /// An `Ok` operation.
    pub fn ok(&mut self, process: u64, f: Function, call_ns: u64, return_ns: u64, value: Value) -> &mut Self {
        self.op(process, f, call_ns, return_ns, OpKind::Ok, value)
    }

    /// An invocation that never completes.
    pub fn pending(&mut self, process: u64, f: Function, call_ns: u64) -> &mut Self {
        self.push(call_ns, process, OpKind::Invoke, f, Value::None);
        self
    }

    pub fn build(&self) -> Vec<Op> {
        let mut events = self.events.clone();
        events.sort_by_key(|e| (e.0, e.1));
        events
            .into_iter()
            .enumerate()
            .map(|(i, (time_ns, _, process, kind, f, value))| Op {
                process,
                kind,
                f,
                value,
                time_ns,
                index: i as u64,
            })
            .collect()
    }
}

pub fn read(key: &str) -> Function {
    Function::Read { key: key.into() }
}

pub fn write(key: &str, value: u64) -> Function {
    Function::Write { key: key.into(), value }
}

pub fn cas(key: &str, from: u64, to: u64) -> Function {
    Function::Cas {
        key: key.into(),
        from,
        to,
    }
}

pub fn got(v: Option<u64>) -> Value {
    Value::Register(v)
}

pub fn acquire(lock: &str) -> Function {
    Function::Acquire { lock: lock.into() }
}

pub fn release(lock: &str) -> Function {
    Function::Release { lock: lock.into() }
}

pub fn hold(fencing_token: u64, session: u64, held_from_ns: u64, held_until_ns: u64) -> Value {
    Value::Lock(LockHold {
        fencing_token,
        session,
        held_from_ns,
        held_until_ns,
    })
}

pub fn mastership(epoch: u64, session: u64, held_from_ns: u64, held_until_ns: u64) -> Value {
    Value::Mastership(Mastership {
        epoch,
        session,
        held_from_ns,
        held_until_ns,
        lost_ns: None,
    })
}

/// A mastership whose loss signal fired at `lost_ns`.
pub fn mastership_lost(epoch: u64, session: u64, held_from_ns: u64, held_until_ns: u64, lost_ns: u64) -> Value {
    Value::Mastership(Mastership {
        epoch,
        session,
        held_from_ns,
        held_until_ns,
        lost_ns: Some(lost_ns),
    })
}

pub fn master(epoch: u64, session: u64) -> Value {
    Value::Master(Some(MasterView { epoch, session }))
}
