//! Keeping a session alive: renewals, local validity (docs/design.md
//! "Time", rule 5) and the move from [`SessionState::Valid`] to
//! [`SessionState::Jeopardy`] to [`SessionState::Expired`].
//!
//! A keepalive is sent `V/3` after the send time of the last successful one
//! (`V` = the validity it granted). The send instant is taken before the
//! request leaves, and the reply's validity counts from it:
//! `local_expiry = t_send + V × (1 − ρ) − ε`, never moved backwards. A
//! failed keepalive puts the session in `Jeopardy` and is retried every
//! `keepalive_retry_ms` until one succeeds (back to `Valid`) or local
//! validity ends (`Expired`).
//!
//! Each keepalive attempt carries a fresh sequence number and its own send
//! instant: keepalives are idempotent in effect, and a fresh send instant
//! lets the new validity count from the latest attempt rather than from the
//! first one of a long outage.
//!
//! `ρ` is `default_drift_ppm` for the grant of `open_session` (its reply
//! carries no bound), then the cluster's `client_rho_ppm` of each
//! keepalive reply, widened by this host's own measured rate against
//! cluster time once that estimate has settled
//! ([`ClusterRate`](crate::clock::ClusterRate)). A health sample of this
//! host rides along at most every `health_report_interval_ms`
//! (docs/design.md "Adaptive leases").

use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_proto::{ClockSample, Reply, SessionOp};
use driftlock_sensors::clock::RawInstant;

use super::{SessionInner, SessionState};
use crate::clock::{local_expiry, sleep_until_raw};
use crate::error::ClientError;
use crate::sync::lock;
use crate::transport::{CallSpec, Delivery, Route};

/// Shortest keepalive interval, whatever the granted validity.
const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(10);
/// Shortest per-attempt deadline of a keepalive.
const MIN_KEEPALIVE_ATTEMPT: Duration = Duration::from_millis(200);

/// The session's lease as this host measures it.
pub(super) struct Lease {
    /// End of local validity (rule 5): the latest end any open or
    /// keepalive reply has given; never moves backwards.
    local_expiry: RawInstant,
    /// Validity granted by the most recently sent successful open or
    /// keepalive, µs; a third of it is the keepalive interval.
    validity_us: u64,
    /// Send instant of that open or keepalive; the next keepalive is due a
    /// keepalive interval after it.
    last_send: RawInstant,
}

impl Lease {
    /// The lease granted by `open_session`: `validity_us` counted from
    /// `t_send`, shortened by `rho_ppm` and `margin_us` (rule 5).
    pub(super) fn opened(t_send: RawInstant, validity_us: u64, rho_ppm: u64, margin_us: u64) -> Lease {
        Lease {
            local_expiry: local_expiry(t_send, validity_us, rho_ppm, margin_us),
            validity_us,
            last_send: t_send,
        }
    }

    /// End of local validity on this host's raw monotonic clock.
    pub(super) fn local_expiry(&self) -> RawInstant {
        self.local_expiry
    }

    /// When the next keepalive is due: `V/3` (at least
    /// [`MIN_KEEPALIVE_INTERVAL`]) after the last successful one was sent.
    fn next_due(&self) -> RawInstant {
        self.last_send + (Duration::from_micros(self.validity_us) / 3).max(MIN_KEEPALIVE_INTERVAL)
    }

    /// Folds in a grant of `validity_us` from a request sent at `t_send`.
    /// The expiry only moves forward, and the interval follows the grant
    /// of the latest request sent, so a slow reply to an older keepalive
    /// changes neither for the worse.
    fn renew(&mut self, t_send: RawInstant, validity_us: u64, rho_ppm: u64, margin_us: u64) {
        let expiry = local_expiry(t_send, validity_us, rho_ppm, margin_us);
        if expiry > self.local_expiry {
            self.local_expiry = expiry;
        }
        if t_send >= self.last_send {
            self.last_send = t_send;
            self.validity_us = validity_us;
        }
    }
}

/// Deadline of one keepalive attempt: a third of the current validity,
/// at least [`MIN_KEEPALIVE_ATTEMPT`] and at most `request_timeout` (which
/// wins when it is the smaller: it is the user's bound on any one call).
fn attempt_timeout(validity_us: u64, request_timeout: Duration) -> Duration {
    (Duration::from_micros(validity_us) / 3)
        .max(MIN_KEEPALIVE_ATTEMPT)
        .min(request_timeout)
}

/// Applies the outcome of one keepalive sent at `t_send` and puts the
/// session back in `Valid`.
fn renewed(inner: &SessionInner, t_send: RawInstant, validity_us: u64, rho_ppm: u64) {
    let margin_us = inner.client.config().local_margin_us;
    lock(&inner.lease).renew(t_send, validity_us, rho_ppm, margin_us);
    inner.set_state(SessionState::Valid);
}

/// Keeps the session alive until it expires or is shut down; the task
/// that runs this is one of the session's two background tasks.
pub(super) async fn run(inner: Arc<SessionInner>) {
    let mut state_rx = inner.state_tx.subscribe();
    let c = inner.client.config().clone();
    let retry_pause = Duration::from_millis(c.keepalive_retry_ms.clamp(c.backoff_min_ms, c.backoff_max_ms));
    let request_timeout = Duration::from_millis(c.request_timeout_ms);
    let mut retry_at: Option<RawInstant> = None;
    // The previous renewal's clock sample, sent with the next keepalive so
    // the cluster can check this host's clock (docs/design.md "Clock drift").
    let mut last_sample: Option<ClockSample> = None;
    let health_every = (c.health_report_interval_ms > 0).then(|| Duration::from_millis(c.health_report_interval_ms));
    let mut last_health: Option<Instant> = None;
    loop {
        let (expiry, next_at, validity_us) = {
            let l = lock(&inner.lease);
            (l.local_expiry, retry_at.unwrap_or_else(|| l.next_due()), l.validity_us)
        };
        tokio::select! {
            () = sleep_until_raw(next_at.min(expiry)) => {}
            _ = state_rx.wait_for(|s| *s == SessionState::Expired) => return,
        }
        let now = RawInstant::now();
        if now >= expiry {
            inner.expire("local validity ended");
            return;
        }
        if now < next_at {
            continue;
        }
        // A fresh sequence number and send instant per attempt (see the
        // module documentation).
        let t_send = RawInstant::now();
        let t_send_std = Instant::now();
        let attempt_timeout = attempt_timeout(validity_us, request_timeout);
        let spec = CallSpec {
            what: "keepalive",
            route: Route::Leader,
            delivery: Delivery::Idempotent,
            deadline: (t_send_std + attempt_timeout).min(crate::clock::to_instant(expiry)),
            attempt_timeout,
        };
        // A health sample rides along at most every `health_report_interval_ms`.
        let health = match health_every {
            Some(every) if last_health.is_none_or(|t| t_send_std.saturating_duration_since(t) >= every) => {
                last_health = Some(t_send_std);
                Some(lock(&inner.client.inner.health).sample(t_send_std))
            }
            _ => None,
        };
        let op = SessionOp::Keepalive {
            health,
            clock: last_sample,
        };
        let result = tokio::select! {
            r = inner.op_with(inner.next_seq(), op, spec) => r,
            () = sleep_until_raw(expiry) => {
                inner.expire("local validity ended during a keepalive");
                return;
            }
            _ = state_rx.wait_for(|s| *s == SessionState::Expired) => return,
        };
        match result {
            Ok(Reply::KeptAlive {
                validity_us,
                client_rho_ppm,
                cluster_ts_us,
                ..
            }) => {
                let t_recv = RawInstant::now();
                last_sample = Some(ClockSample {
                    sent_us: t_send.as_micros(),
                    received_us: t_recv.as_micros(),
                    cluster_ts_us,
                });
                let rho_ppm = {
                    let mut rate = lock(&inner.client.inner.rate);
                    rate.observe(t_send, t_recv, cluster_ts_us);
                    rate.rho_ppm(client_rho_ppm)
                };
                renewed(&inner, t_send, validity_us, rho_ppm);
                let rtt_us = u64::try_from(t_recv.saturating_duration_since(t_send).as_micros()).unwrap_or(u64::MAX);
                lock(&inner.client.inner.health).record_rtt_us(rtt_us);
                retry_at = None;
            }
            Err(ClientError::SessionExpired) => return,
            other => {
                let why = match other {
                    Ok(reply) => format!("unexpected reply {reply:?}"),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(session = inner.id, error = %why, "keepalive failed");
                lock(&inner.client.inner.health).record_failure(Instant::now());
                inner.set_state(SessionState::Jeopardy);
                retry_at = Some(RawInstant::now() + retry_pause);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_lease_counts_from_the_open_send_instant() {
        let t = RawInstant::from_nanos(1_000_000_000);
        // 3 s at 500 ppm loses 1.5 ms; ε = 5 ms.
        let lease = Lease::opened(t, 3_000_000, 500, 5_000);
        assert_eq!(lease.local_expiry(), t + Duration::from_micros(2_993_500));
        assert_eq!(lease.next_due(), t + 1_000 * MS);
    }

    #[test]
    fn renewals_never_move_the_expiry_backwards() {
        let t = RawInstant::from_nanos(1_000_000_000);
        let mut lease = Lease::opened(t, 3_000_000, 0, 0);
        // A later keepalive granting much less (e.g. a suspected session's
        // halved grant) keeps the end already earned...
        lease.renew(t + 1_000 * MS, 1_000_000, 0, 0);
        assert_eq!(lease.local_expiry(), t + 3_000 * MS);
        // ...but renews on the new, shorter interval from its send instant.
        assert_eq!(lease.next_due(), t + 1_000 * MS + Duration::from_secs(1) / 3);
        // A grant reaching further moves the end forward.
        lease.renew(t + 2_000 * MS, 3_000_000, 0, 0);
        assert_eq!(lease.local_expiry(), t + 5_000 * MS);
        assert_eq!(lease.next_due(), t + 3_000 * MS);
    }

    #[test]
    fn a_late_reply_to_an_older_keepalive_does_not_rewind_the_schedule() {
        let t = RawInstant::from_nanos(1_000_000_000);
        let mut lease = Lease::opened(t, 3_000_000, 0, 0);
        lease.renew(t + 2_000 * MS, 3_000_000, 0, 0);
        // The reply to a keepalive sent before the last one arrives late,
        // with a longer grant: it may extend nothing and reschedule nothing.
        lease.renew(t + 1_000 * MS, 3_900_000, 0, 0);
        assert_eq!(lease.local_expiry(), t + 5_000 * MS);
        assert_eq!(lease.next_due(), t + 3_000 * MS);
        // A longer grant from an older request that still reaches further
        // extends the expiry, but not the schedule.
        lease.renew(t + 1_500 * MS, 6_000_000, 0, 0);
        assert_eq!(lease.local_expiry(), t + 7_500 * MS);
        assert_eq!(lease.next_due(), t + 3_000 * MS);
    }

    #[test]
    fn keepalive_intervals_and_attempts_have_floors() {
        let t = RawInstant::from_nanos(1_000_000_000);
        let lease = Lease::opened(t, 3_000, 0, 0);
        assert_eq!(lease.next_due(), t + MIN_KEEPALIVE_INTERVAL);
        let request_timeout = 2_000 * MS;
        assert_eq!(attempt_timeout(3_000, request_timeout), MIN_KEEPALIVE_ATTEMPT);
        assert_eq!(attempt_timeout(3_000_000, request_timeout), 1_000 * MS);
        assert_eq!(attempt_timeout(60_000_000, request_timeout), request_timeout);
    }

    #[test]
    fn a_request_timeout_below_the_attempt_floor_bounds_the_attempt() {
        // `ClientConfig::validate` accepts any request timeout above 0; one
        // below the attempt floor must cap the attempt, not panic.
        let request_timeout = 100 * MS;
        assert_eq!(attempt_timeout(3_000, request_timeout), request_timeout);
        assert_eq!(attempt_timeout(60_000_000, request_timeout), request_timeout);
    }
}
