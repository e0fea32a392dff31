//! Locking the crate's std mutexes without poisoning.

use std::sync::{Mutex, MutexGuard};

/// Locks a std mutex, ignoring poisoning (the data stays consistent: every
/// critical section in this crate is a plain field update that cannot
/// panic halfway).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
