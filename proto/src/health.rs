//! The Node Health Index: how a [`HealthSample`] becomes a score and a
//! [`HealthTier`] under the replicated [`LeaseConfig`]. Integer permille
//! arithmetic, so every replica (and every client checking a synthetic
//! sample) computes the same result.

use crate::config::LeaseConfig;
use crate::types::{HealthSample, HealthTier};

/// One whole in permille.
const PERMILLE: u64 = 1000;

fn score_from_fraction(permille: u32) -> u64 {
    PERMILLE - u64::from(permille.min(1000))
}

/// Node Health Index of a sample, permille (1000 = perfectly healthy): the
/// weighted mean (`cfg.weight_*`) of five scores, each 0 ..= 1000: CPU,
/// memory and I/O wait score `1000 − fraction`; latency scores
/// `1000 − 1000 × rtt_mean / latency_worst_us` (0 at or beyond the worst);
/// failures score `1000 − recent_failures × failure_penalty_permille`
/// (at least 0). Integer arithmetic, rounded down.
pub fn health_index_permille(sample: &HealthSample, cfg: &LeaseConfig) -> u32 {
    let latency_score =
        PERMILLE - (sample.rtt_mean_us.saturating_mul(PERMILLE) / cfg.latency_worst_us.max(1)).min(PERMILLE);
    let failure_score = PERMILLE
        - u64::from(sample.recent_failures)
            .saturating_mul(u64::from(cfg.failure_penalty_permille))
            .min(PERMILLE);
    let parts = [
        (cfg.weight_cpu, score_from_fraction(sample.cpu_load_permille)),
        (cfg.weight_mem, score_from_fraction(sample.mem_used_permille)),
        (cfg.weight_io, score_from_fraction(sample.io_wait_permille)),
        (cfg.weight_latency, latency_score),
        (cfg.weight_failures, failure_score),
    ];
    let weight_sum: u64 = parts.iter().map(|(w, _)| u64::from(*w)).sum();
    if weight_sum == 0 {
        // Config validation forbids this; a neutral answer keeps apply total.
        return PERMILLE as u32;
    }
    let weighted: u64 = parts.iter().map(|(w, s)| u64::from(*w) * s).sum();
    let nhi = weighted / weight_sum;
    debug_assert!(nhi <= PERMILLE);
    nhi as u32
}

/// Tier of an NHI value under the thresholds of `cfg` (at or above
/// `excellent_min_permille`: Excellent, and so on down to Critical).
pub fn tier_of(nhi_permille: u32, cfg: &LeaseConfig) -> HealthTier {
    if nhi_permille >= cfg.excellent_min_permille {
        HealthTier::Excellent
    } else if nhi_permille >= cfg.good_min_permille {
        HealthTier::Good
    } else if nhi_permille >= cfg.warning_min_permille {
        HealthTier::Warning
    } else {
        HealthTier::Critical
    }
}
