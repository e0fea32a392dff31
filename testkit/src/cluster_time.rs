//! Cluster time as an observer on the nodes' host sees it: a node's applied
//! cluster time (`NodeStatus::cluster_ts_us`) set against the caller's own
//! raw monotonic clock (`CLOCK_MONOTONIC_RAW`, the clock the nodes stamp
//! with; same host, so the same oscillator).
//!
//! docs/design.md "Time", rule 3, in observable form: the cluster time that
//! passes between an entry `E` and a later entry `F` is never more than the
//! real time between `E`'s stamping and `F`'s application. A [`StartMark`]
//! pins `ts_eff(E)` for a KV write `E` sent after a raw instant `before`
//! (so stamped after it); an [`EndMark`] reads a node's applied cluster time
//! with a status call that returned before the raw instant `after` (so its
//! last applied entry `F` was applied before it). On a correct cluster
//!
//! ```text
//! end.cluster_ts_us − start.cluster_ts_us ≤ end.after − start.before
//! ```
//!
//! [`ahead_us`] is the excess (≤ 0 when the rule holds) and [`rate`] the
//! ratio of the two spans, the cluster's clock rate as a client would
//! measure it. [`end_mark_by_write`] ends at a fresh write, so that an idle
//! cluster's last entry does not make the rate look slower than it is.

use std::time::Duration;

use driftlock_proto::Security;
use driftlock_proto::{ApiError, KvWrite, Reply, RpcError};
use driftlock_sensors::clock::RawInstant;

/// How many writes [`start_mark`] tries before giving up on a quiet moment.
pub const START_MARK_ATTEMPTS: usize = 20;

/// Why a mark could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    /// The node could not be reached, or answered with an error (a follower
    /// answers `NotLeader` to the write of [`start_mark`]).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The write was answered with something other than `KvWritten`.
    #[error("the marking write to {addr} was answered with {reply:?}")]
    Unexpected {
        /// The node written to.
        addr: String,
        /// What it answered.
        reply: Reply,
    },
    /// Every attempt found another entry applied between the write and the
    /// status read, so the status did not show the write's own cluster time.
    #[error("{attempts} marking writes to {addr}: each time another entry was applied right after it")]
    Busy {
        /// The node written to.
        addr: String,
        /// Writes tried ([`START_MARK_ATTEMPTS`]).
        attempts: usize,
    },
}

/// The cluster time of an entry stamped after a known raw instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartMark {
    /// Read before the write was sent: no later than the write's stamping.
    pub before: RawInstant,
    /// `ts_eff` of the write's entry (the state machine's clock after
    /// applying it), µs.
    pub cluster_ts_us: u64,
    /// Revision of the write (its KV revision): the last command the
    /// status showed applied.
    pub revision: u64,
}

/// A node's applied cluster time, read before a known raw instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndMark {
    /// Read after the status reply arrived: no earlier than the
    /// application of the node's last applied entry.
    pub after: RawInstant,
    /// The node's applied cluster time (`NodeStatus::cluster_ts_us`), µs.
    pub cluster_ts_us: u64,
    /// The node's applied revision when it answered.
    pub applied_revision: u64,
}

/// A KV write through the leader at `addr` whose own cluster time a status
/// read showed: the raw instants before it was sent and after the status
/// arrived, `ts_eff` of its entry and its revision.
struct MarkedWrite {
    before: RawInstant,
    after: RawInstant,
    cluster_ts_us: u64,
    revision: u64,
}

/// Writes `key` (an empty value) through the leader at `addr` and reads the
/// leader's status until the status shows exactly that write as the last
/// applied entry; retries with a new write when another entry slipped in
/// between (idle ticks, health reports), up to [`START_MARK_ATTEMPTS`].
async fn marked_write(addr: &str, key: &str, timeout: Duration, security: &Security) -> Result<MarkedWrite, MarkError> {
    let api = driftlock_proto::connect(addr, timeout, security).await?;
    let call_failed = |e: tarpc::client::RpcError| RpcError::Call {
        addr: addr.to_string(),
        message: e.to_string(),
    };
    for _ in 0..START_MARK_ATTEMPTS {
        let before = RawInstant::now();
        let put = KvWrite::Put {
            key: key.to_string(),
            value: Vec::new(),
        };
        let reply = api
            .kv_write(driftlock_proto::context(timeout), put)
            .await
            .map_err(call_failed)?
            .map_err(|e: ApiError| RpcError::Api(e))?;
        let Reply::KvWritten { revision } = reply else {
            return Err(MarkError::Unexpected {
                addr: addr.to_string(),
                reply,
            });
        };
        // The leader answers a write after applying it, so its applied
        // revision is at least the write's; equal when no command was
        // applied after it (in its own entry or a later one).
        let status = api
            .status(driftlock_proto::context(timeout))
            .await
            .map_err(call_failed)?;
        let after = RawInstant::now();
        if status.applied_revision == revision {
            return Ok(MarkedWrite {
                before,
                after,
                cluster_ts_us: status.cluster_ts_us,
                revision,
            });
        }
    }
    Err(MarkError::Busy {
        addr: addr.to_string(),
        attempts: START_MARK_ATTEMPTS,
    })
}

/// A start mark from a fresh write of `key` through the leader at `addr`
/// (see the module documentation), reached with `security`.
pub async fn start_mark(addr: &str, key: &str, timeout: Duration, security: &Security) -> Result<StartMark, MarkError> {
    let w = marked_write(addr, key, timeout, security).await?;
    Ok(StartMark {
        before: w.before,
        cluster_ts_us: w.cluster_ts_us,
        revision: w.revision,
    })
}

/// An end mark from a fresh write of `key` through the leader at `addr`:
/// unlike [`end_mark`], it does not lag by the time since the last entry
/// (up to an idle tick interval), so a rate measured with it is not biased
/// low by it.
pub async fn end_mark_by_write(
    addr: &str,
    key: &str,
    timeout: Duration,
    security: &Security,
) -> Result<EndMark, MarkError> {
    let w = marked_write(addr, key, timeout, security).await?;
    Ok(EndMark {
        after: w.after,
        cluster_ts_us: w.cluster_ts_us,
        applied_revision: w.revision,
    })
}

/// The applied cluster time of the node at `addr` (any role): the cluster
/// time of its last applied entry, however long ago that was.
pub async fn end_mark(addr: &str, timeout: Duration, security: &Security) -> Result<EndMark, MarkError> {
    let status = driftlock_proto::status(addr, timeout, security).await?;
    Ok(EndMark {
        after: RawInstant::now(),
        cluster_ts_us: status.cluster_ts_us,
        applied_revision: status.applied_revision,
    })
}

/// Real time from `start.before` to `end.after`, µs.
pub fn real_span_us(start: &StartMark, end: &EndMark) -> u64 {
    u64::try_from(end.after.saturating_duration_since(start.before).as_micros()).unwrap_or(u64::MAX)
}

/// Cluster time from `start` to `end`, µs (negative if `end` reads an
/// older state, e.g. a lagging follower).
pub fn cluster_span_us(start: &StartMark, end: &EndMark) -> i64 {
    i128::from(end.cluster_ts_us)
        .saturating_sub(i128::from(start.cluster_ts_us))
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// By how many µs cluster time ran ahead of real time between the marks:
/// `cluster span − real span`. At most 0 on a correct cluster.
pub fn ahead_us(start: &StartMark, end: &EndMark) -> i64 {
    let real = i64::try_from(real_span_us(start, end)).unwrap_or(i64::MAX);
    cluster_span_us(start, end).saturating_sub(real)
}

/// Cluster time per real time between the marks (1.0 = cluster time kept
/// pace with real time); `None` for an empty real span.
pub fn rate(start: &StartMark, end: &EndMark) -> Option<f64> {
    let real = real_span_us(start, end);
    (real > 0).then(|| cluster_span_us(start, end) as f64 / real as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(start_ts: u64, end_ts: u64, real: Duration) -> (StartMark, EndMark) {
        let before = RawInstant::from_nanos(1_000_000_000);
        (
            StartMark {
                before,
                cluster_ts_us: start_ts,
                revision: 1,
            },
            EndMark {
                after: before + real,
                cluster_ts_us: end_ts,
                applied_revision: 2,
            },
        )
    }

    #[test]
    fn spans_rate_and_excess() {
        let (s, e) = marks(5_000_000, 5_900_000, Duration::from_secs(1));
        assert_eq!(real_span_us(&s, &e), 1_000_000);
        assert_eq!(cluster_span_us(&s, &e), 900_000);
        assert_eq!(ahead_us(&s, &e), -100_000);
        assert_eq!(rate(&s, &e), Some(0.9));

        let (s, e) = marks(5_000_000, 6_250_000, Duration::from_secs(1));
        assert_eq!(ahead_us(&s, &e), 250_000, "cluster time 0.25 s ahead");

        let (s, e) = marks(5_000_000, 4_000_000, Duration::ZERO);
        assert_eq!(cluster_span_us(&s, &e), -1_000_000);
        assert_eq!(rate(&s, &e), None);
    }
}
