//! Cluster time (docs/design.md "Time", rules 1–2): the leader stamps each entry
//! with the anchor's time (the newest stamped entry or snapshot this node
//! knows) plus the time elapsed since the anchor's instant, on the raw
//! monotonic clock (never slewed by NTP), slowed by this node's drift upper
//! bound, so cluster time never runs faster than real time.

use driftlock_sensors::clock::RawInstant;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Stamps cluster time from the log store's newest stamp.
#[derive(Clone, Debug)]
pub struct ClusterClock {
    /// Upper bound of this node's clock rate error, ppm (ρ_hi), kept
    /// current by the clock module.
    rho_hi_ppm: Arc<AtomicU64>,
    /// Elapsed time is multiplied by this (1 unless the node runs the
    /// unsafe `--unsafe-fast-cluster-time` mode).
    speedup: u64,
}

impl ClusterClock {
    /// A clock using the fixed `rho_hi_ppm` as its drift bound.
    pub fn new(rho_hi_ppm: u64) -> Self {
        ClusterClock::with_bound(Arc::new(AtomicU64::new(rho_hi_ppm)))
    }

    /// A clock whose bound is updated by someone else (the clock module).
    pub fn with_bound(rho_hi_ppm: Arc<AtomicU64>) -> Self {
        assert!(
            rho_hi_ppm.load(Ordering::Relaxed) < 1_000_000,
            "drift bound must be below 100 %"
        );
        ClusterClock { rho_hi_ppm, speedup: 1 }
    }

    /// UNSAFE (jepsen negative test only): cluster time runs `factor`×
    /// faster than this node's clock, breaking the safety argument.
    pub fn with_unsafe_speedup(mut self, factor: u64) -> Self {
        self.speedup = factor.max(1);
        self
    }

    /// The bound in force, ppm.
    pub fn rho_hi_ppm(&self) -> u64 {
        self.rho_hi_ppm.load(Ordering::Relaxed)
    }

    /// `ts = T_last + elapsed × (1 − ρ_hi)`, µs, where `last` is the anchor
    /// (`StampHandle::last_stamp`): the newest stamped position's time and a
    /// raw instant no earlier than its stamping.
    pub fn stamp(&self, last: (u64, RawInstant), now: RawInstant) -> u64 {
        let (ts_last_us, appended_at) = last;
        let elapsed_us = now.saturating_duration_since(appended_at).as_micros() * u128::from(self.speedup);
        let rho = self.rho_hi_ppm().min(999_999);
        let slowed_us = elapsed_us * u128::from(1_000_000 - rho) / 1_000_000;
        ts_last_us.saturating_add(u64::try_from(slowed_us).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps_are_slower_than_real_time() {
        let c = ClusterClock::new(500);
        let t0 = RawInstant::now();
        let ts = c.stamp((1_000, t0), t0 + Duration::from_secs(10));
        assert_eq!(ts, 1_000 + 10_000_000 - 5_000);
    }

    #[test]
    fn a_clock_behind_the_append_instant_adds_nothing() {
        let c = ClusterClock::new(500);
        let t0 = RawInstant::now();
        assert_eq!(c.stamp((7, t0 + Duration::from_secs(1)), t0), 7);
    }
}
