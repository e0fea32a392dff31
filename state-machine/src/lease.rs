//! The adaptive lease formula (docs/design.md "Adaptive leases"), in
//! integer permille arithmetic so every replica computes the same result.
//!
//! `validity = clamp(base × (1 + nhi + stability + load) × suspicion, min, max)`

use driftlock_proto::health::{health_index_permille, tier_of};
use driftlock_proto::{HealthSample, HealthTier, LeaseConfig, LeaseDecision};

const PERMILLE: u64 = 1000;

/// The configured lease factor of a health tier (`factor_*_permille` of
/// [`LeaseConfig`]), permille added to the 1000 of the multiplier: negative
/// shortens the lease, positive lengthens it.
pub fn tier_factor_permille(tier: HealthTier, cfg: &LeaseConfig) -> i32 {
    match tier {
        HealthTier::Excellent => cfg.factor_excellent_permille,
        HealthTier::Good => cfg.factor_good_permille,
        HealthTier::Warning => cfg.factor_warning_permille,
        HealthTier::Critical => cfg.factor_critical_permille,
    }
}

/// Network stability factor from the RTT standard deviation, permille.
pub fn stability_factor_permille(rtt_stddev_us: u64, cfg: &LeaseConfig) -> i32 {
    let f = rtt_stddev_us.saturating_mul(u64::from(cfg.stability_permille_per_ms)) / 1000;
    f.min(u64::from(cfg.stability_max_permille)) as i32
}

/// Load factor, permille: 0 up to the knee, then linear up to
/// `load_max_permille` at full load.
pub fn load_factor_permille(load_permille: u32, cfg: &LeaseConfig) -> i32 {
    let load = u64::from(load_permille.min(1000));
    let knee = u64::from(cfg.load_knee_permille.min(1000));
    if load <= knee || knee >= PERMILLE {
        return 0;
    }
    ((load - knee) * u64::from(cfg.load_max_permille) / (PERMILLE - knee)) as i32
}

/// Computes a validity from a base duration and the holder's committed
/// health sample (if any), recording every factor.
pub fn decide(base_us: u64, sample: Option<&HealthSample>, suspected: bool, cfg: &LeaseConfig) -> LeaseDecision {
    let (nhi, tier, f_nhi, f_stab, f_load) = match sample {
        Some(s) => {
            let nhi = health_index_permille(s, cfg);
            let tier = tier_of(nhi, cfg);
            (
                Some(nhi),
                Some(tier),
                tier_factor_permille(tier, cfg),
                stability_factor_permille(s.rtt_stddev_us, cfg),
                load_factor_permille(s.load_permille, cfg),
            )
        }
        None => (None, None, 0, 0, 0),
    };
    let multiplier_permille = (1000i64 + i64::from(f_nhi) + i64::from(f_stab) + i64::from(f_load)).max(0) as u128;
    let suspicion = if suspected { cfg.suspicion_scale_permille } else { 1000 };
    let adjusted = u128::from(base_us) * multiplier_permille / 1000 * u128::from(suspicion) / 1000;
    let adjusted = u64::try_from(adjusted).unwrap_or(u64::MAX);
    let validity_us = adjusted.clamp(cfg.min_validity_us, cfg.max_validity_us.max(cfg.min_validity_us));
    LeaseDecision {
        base_us,
        nhi_permille: nhi,
        tier,
        nhi_factor_permille: f_nhi,
        stability_factor_permille: f_stab,
        load_factor_permille: f_load,
        suspicion_scale_permille: suspicion,
        clamped: validity_us != adjusted,
        validity_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu: u32) -> HealthSample {
        HealthSample {
            cpu_load_permille: cpu,
            mem_used_permille: cpu,
            io_wait_permille: cpu,
            rtt_mean_us: 0,
            rtt_stddev_us: 0,
            recent_failures: 0,
            load_permille: 0,
        }
    }

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            weight_latency: 0,
            weight_failures: 0,
            ..LeaseConfig::default()
        }
    }

    #[test]
    fn each_tier_applies_its_factor() {
        let c = cfg();
        // With latency and failure weights 0, NHI = 1000 - cpu.
        let cases = [
            (0, HealthTier::Excellent, 9_000_000),
            (300, HealthTier::Good, 9_500_000),
            (500, HealthTier::Warning, 11_000_000),
            (900, HealthTier::Critical, 13_000_000),
        ];
        for (cpu, tier, validity) in cases {
            let d = decide(10_000_000, Some(&sample(cpu)), false, &c);
            assert_eq!(d.nhi_permille, Some(1000 - cpu));
            assert_eq!(d.tier, Some(tier), "cpu {cpu}");
            assert_eq!(d.validity_us, validity, "cpu {cpu}");
            assert!(!d.clamped);
        }
    }

    #[test]
    fn no_report_means_no_factor() {
        let d = decide(10_000_000, None, false, &cfg());
        assert_eq!(d.tier, None);
        assert_eq!(d.validity_us, 10_000_000);
    }

    #[test]
    fn clamps_at_both_ends() {
        let mut c = cfg();
        c.min_validity_us = 5_000_000;
        c.max_validity_us = 12_000_000;
        let low = decide(2_000_000, Some(&sample(0)), false, &c);
        assert_eq!(low.validity_us, 5_000_000);
        assert!(low.clamped);
        let high = decide(10_000_000, Some(&sample(900)), false, &c);
        assert_eq!(high.validity_us, 12_000_000);
        assert!(high.clamped);
    }

    #[test]
    fn stability_and_load_add_up_and_saturate() {
        let c = cfg();
        let mut s = sample(300); // Good: -50
        s.rtt_stddev_us = 5_000; // 5 ms × 10 = +50
        s.load_permille = 850; // halfway from 700 to 1000 → +100
        let d = decide(10_000_000, Some(&s), false, &c);
        assert_eq!(d.stability_factor_permille, 50);
        assert_eq!(d.load_factor_permille, 100);
        assert_eq!(d.validity_us, 11_000_000);
        s.rtt_stddev_us = 1_000_000_000;
        assert_eq!(
            stability_factor_permille(s.rtt_stddev_us, &c),
            c.stability_max_permille as i32
        );
    }

    #[test]
    fn suspicion_halves_before_clamping() {
        let d = decide(10_000_000, None, true, &cfg());
        assert_eq!(d.validity_us, 5_000_000);
        assert_eq!(d.suspicion_scale_permille, 500);
    }

    #[test]
    fn latency_and_failures_lower_the_index() {
        let c = LeaseConfig::default();
        let mut s = sample(0);
        assert_eq!(health_index_permille(&s, &c), 1000);
        s.rtt_mean_us = c.latency_worst_us * 10;
        s.recent_failures = 100;
        // Both scores at 0: weights 2 + 1 of 10 lost.
        assert_eq!(health_index_permille(&s, &c), 700);
    }
}
