//! The client's clock: the local-validity formula of docs/design.md
//! "Time", rule 5, measured on the raw monotonic clock (unslewed by NTP),
//! the estimate of this host's rate against cluster time that rule 5 uses
//! once it is trustworthy, and the conversions between raw deadlines and
//! the ordinary clock that timers and callers use.

use std::time::{Duration, Instant};

use driftlock_sensors::clock::RawInstant;
use driftlock_sensors::drift::{DriftFilter, DriftFilterConfig, SampleOutcome};

/// One million, for ppm arithmetic.
const PPM: u128 = 1_000_000;

/// The `std::time::Instant` that is `deadline` away from now, as the raw
/// clock counts it: exact at the moment of the call. `Instant` runs on the
/// ordinary monotonic clock, which NTP may slew; callers that must not act
/// late use [`sleep_until_raw`] or compare [`RawInstant`]s instead.
pub(crate) fn to_instant(deadline: RawInstant) -> Instant {
    let (now_raw, now) = (RawInstant::now(), Instant::now());
    if deadline >= now_raw {
        now + deadline.saturating_duration_since(now_raw)
    } else {
        now.checked_sub(now_raw.saturating_duration_since(deadline))
            .unwrap_or(now)
    }
}

/// Sleeps until the raw clock reaches `deadline`. Tokio's timers run on the
/// ordinary monotonic clock, which an NTP daemon may slew by up to 8 % (its
/// `maxslewrate`); sleeping nine tenths of what is left and reading the raw
/// clock again reaches the deadline without overshooting it by more than a
/// slew's share of the last short step.
pub(crate) async fn sleep_until_raw(deadline: RawInstant) {
    loop {
        let left = deadline.saturating_duration_since(RawInstant::now());
        if left.is_zero() {
            return;
        }
        let step = if left <= Duration::from_millis(2) {
            left
        } else {
            left.mul_f64(0.9)
        };
        tokio::time::sleep(step).await;
    }
}

/// End of a grant's validity on this host's clock (rule 5):
/// `t_send + V × (1 − ρ/10⁶) − ε`, with the drift term rounded up so the
/// result is never later than the exact value. `t_send` must be taken
/// before the *first* attempt of the request that produced the grant.
pub(crate) fn local_expiry(t_send: RawInstant, validity_us: u64, rho_ppm: u64, margin_us: u64) -> RawInstant {
    let v = u128::from(validity_us);
    let drift = (v * u128::from(rho_ppm).min(PPM)).div_ceil(PPM);
    let usable = v.saturating_sub(drift).saturating_sub(u128::from(margin_us));
    debug_assert!(usable <= v);
    t_send + Duration::from_micros(u64::try_from(usable).unwrap_or(u64::MAX))
}

/// Samples before the own-rate estimate is consulted at all.
const RATE_MIN_SAMPLES: u32 = 8;
/// The own-rate estimate is consulted only once its drift σ is below this.
const RATE_MAX_SIGMA_PPM: f64 = 100.0;
/// Standard deviations added to the measured drift for the bound.
const RATE_K_SIGMA: f64 = 3.0;

/// This host's clock rate measured against cluster time.
///
/// Every keepalive reply carries the cluster time of the entry that renewed
/// the session; that entry was stamped between the request's send and the
/// reply's arrival, so `cluster_ts − local midpoint` is an offset sample
/// with σ ≤ RTT/2. A Kalman filter turns those into a drift estimate; the
/// bound `|drift| + 3σ` replaces the cluster's `client_rho_ppm` in rule 5
/// when it is larger — measurement can only widen the margin, never narrow
/// it below what the cluster asks for.
#[derive(Debug)]
pub(crate) struct ClusterRate {
    filter: DriftFilter,
    steps: u64,
    /// The raw instant the filter's time axis starts at (the first sample).
    epoch: Option<RawInstant>,
}

impl ClusterRate {
    /// No samples yet.
    pub(crate) fn new() -> Self {
        ClusterRate {
            filter: DriftFilter::new(DriftFilterConfig::default()),
            steps: 0,
            epoch: None,
        }
    }

    /// Folds in one keepalive: sent at `t_send`, answered at `t_recv`, its
    /// entry stamped with `cluster_ts_us`.
    pub(crate) fn observe(&mut self, t_send: RawInstant, t_recv: RawInstant, cluster_ts_us: u64) {
        let epoch = *self.epoch.get_or_insert(t_send);
        let send_s = t_send.saturating_duration_since(epoch).as_secs_f64();
        let recv_s = t_recv.saturating_duration_since(epoch).as_secs_f64();
        if recv_s < send_s {
            return;
        }
        let mid_s = (send_s + recv_s) / 2.0;
        let half_rtt_us = (recv_s - send_s) * 1e6 / 2.0;
        let offset_us = cluster_ts_us as f64 - mid_s * 1e6;
        if let SampleOutcome::StepDetected { step_us } = self.filter.update(mid_s, offset_us, half_rtt_us) {
            // Cluster time jumps forward across some leader changes; the
            // filter restarts and the cluster's bound applies meanwhile.
            self.steps += 1;
            tracing::debug!(step_us, "cluster time stepped against this host's clock");
        }
    }

    /// The drift bound rule 5 should use: the cluster's `cluster_rho_ppm`,
    /// or this host's measured `|drift| + 3σ` when that is larger and the
    /// estimate has settled.
    pub(crate) fn rho_ppm(&self, cluster_rho_ppm: u64) -> u64 {
        let sigma = self.filter.drift_sigma_ppm();
        if self.filter.samples() < RATE_MIN_SAMPLES || sigma > RATE_MAX_SIGMA_PPM {
            return cluster_rho_ppm;
        }
        let bound = (self.filter.drift_ppm().abs() + RATE_K_SIGMA * sigma).ceil();
        if bound.is_finite() && bound > cluster_rho_ppm as f64 {
            bound.min(1_000_000.0) as u64
        } else {
            cluster_rho_ppm
        }
    }

    /// The current estimate (drift of cluster time against this host).
    pub(crate) fn estimate(&self) -> driftlock_proto::ClockEstimate {
        self.filter.estimate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_five_shortens_by_drift_and_margin() {
        let t = RawInstant::from_nanos(1_000_000_000);
        // 2 s at 500 ppm loses 1 ms; ε = 5 ms.
        assert_eq!(
            local_expiry(t, 2_000_000, 500, 5_000),
            t + Duration::from_micros(1_994_000)
        );
        // Rounding of the drift term is upward.
        assert_eq!(local_expiry(t, 1_000_001, 1, 0), t + Duration::from_micros(999_999));
        // Never before t_send.
        assert_eq!(local_expiry(t, 1_000, 500, 5_000), t);
        assert_eq!(local_expiry(t, 1_000, 2_000_000, 0), t);
    }

    #[test]
    fn raw_deadlines_convert_to_instants_both_ways() {
        let now = RawInstant::now();
        let later = to_instant(now + Duration::from_secs(5));
        let left = later.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_millis(4_900) && left <= Duration::from_secs(5),
            "{left:?}"
        );
        let earlier = to_instant(now.checked_sub(Duration::from_secs(1)).expect("after boot"));
        assert!(earlier < Instant::now());
    }

    #[tokio::test]
    async fn sleeping_until_a_raw_deadline_never_wakes_early() {
        let deadline = RawInstant::now() + Duration::from_millis(60);
        sleep_until_raw(deadline).await;
        assert!(RawInstant::now() >= deadline);
    }

    /// Keepalives from a host whose clock runs 2000 ppm fast: cluster time
    /// advances 1 s while the host measures 1.002 s.
    #[test]
    fn a_fast_host_widens_its_own_bound_and_a_true_one_does_not() {
        let epoch = RawInstant::from_nanos(1_000_000_000);
        for (rate, expect_wide) in [(1.002_f64, true), (1.0, false)] {
            let mut r = ClusterRate::new();
            for i in 0..60u64 {
                // Local instants every 3 s of local time, 4 ms round trips.
                let t_send = epoch + Duration::from_millis(1_000 + 3_000 * i);
                let t_recv = t_send + Duration::from_millis(4);
                let local_mid_us = (1_000.0 + 3_000.0 * i as f64 + 2.0) * 1e3;
                let cluster_ts_us = (local_mid_us / rate) as u64 + 7_000_000;
                r.observe(t_send, t_recv, cluster_ts_us);
            }
            let rho = r.rho_ppm(500);
            if expect_wide {
                assert!((2_000..=2_200).contains(&rho), "fast host bound {rho} ppm");
                let d = r.estimate().drift_ppb;
                assert!((-2_050_000..=-1_950_000).contains(&d), "drift {d} ppb");
            } else {
                assert_eq!(rho, 500, "a true clock keeps the cluster's bound");
            }
        }
    }

    #[test]
    fn an_unsettled_estimate_keeps_the_clusters_bound() {
        let epoch = RawInstant::from_nanos(1_000_000_000);
        let mut r = ClusterRate::new();
        r.observe(epoch, epoch + Duration::from_millis(4), 1_000);
        r.observe(
            epoch + Duration::from_secs(1),
            epoch + Duration::from_millis(1_004),
            1_000_000,
        );
        assert_eq!(r.rho_ppm(500), 500);
    }
}
