//! Checks of command inputs against the replicated limits and the value
//! ranges of reports, shared by every request that takes a name, a value
//! or a health sample. A check that fails rejects the command before it
//! changes anything.

use driftlock_proto::{HealthSample, Rejection};

use crate::StateMachine;

impl StateMachine {
    /// A lock, key or election name: non-empty and at most
    /// `limits.max_name_bytes` long.
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

    /// A KV or election value of `len` bytes: at most
    /// `limits.max_value_bytes`.
    pub(crate) fn check_value(&self, len: usize) -> Result<(), Rejection> {
        let max = self.config.limits.max_value_bytes;
        if len > max {
            return Err(Rejection::ValueTooLarge { len, max });
        }
        Ok(())
    }
}

/// The first permille field of `sample` above 1000, with its name, or
/// `None` when every one is in range. Fields are checked in the order
/// cpu, memory, I/O wait, load.
pub(crate) fn permille_out_of_range(sample: &HealthSample) -> Option<(&'static str, u32)> {
    [
        ("cpu_load_permille", sample.cpu_load_permille),
        ("mem_used_permille", sample.mem_used_permille),
        ("io_wait_permille", sample.io_wait_permille),
        ("load_permille", sample.load_permille),
    ]
    .into_iter()
    .find(|(_, v)| *v > 1000)
}
