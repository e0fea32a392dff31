//! Phi-accrual failure detector (Hayashibara et al., 2004) over a session's
//! keepalive inter-arrival times.
//!
//! `phi = −log10(P(a gap at least this long))`, with the gap distribution
//! modelled as normal. Its centre and spread are the window's median and
//! 1.4826 × median absolute deviation (robust estimates of mean and σ), so
//! a client that slows down step by step cannot teach the detector that
//! long gaps are normal with a few long gaps; the spread is floored at
//! `min_stddev_ms`, so a perfectly regular client does not make every small
//! delay look fatal. The tail probability uses the logistic
//! approximation of the normal CDF that Akka and Cassandra use. phi = 1
//! means a 10 % chance that the session is still alive and merely late,
//! phi = 8 means 10⁻⁸.

use super::profiler::Window;

/// Largest phi reported (the tail probability underflows beyond).
pub const PHI_MAX: f64 = 100.0;

/// Phi of a session whose last keepalive arrived `elapsed_ms` ago, given
/// its window of keepalive gaps; `None` with fewer than `min_samples`.
pub fn phi(gaps_ms: &Window, elapsed_ms: f64, min_samples: usize, min_stddev_ms: f64) -> Option<f64> {
    if gaps_ms.len() < min_samples.max(1) {
        return None;
    }
    let (median, mad) = gaps_ms.median_and_mad();
    let stddev = (1.4826 * mad).max(min_stddev_ms).max(1e-3);
    Some(phi_of(elapsed_ms, median, stddev))
}

/// Phi for a gap of `elapsed_ms` under a normal(mean, stddev) model.
pub fn phi_of(elapsed_ms: f64, mean_ms: f64, stddev_ms: f64) -> f64 {
    let y = (elapsed_ms - mean_ms) / stddev_ms;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let p_later = if elapsed_ms > mean_ms {
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    if p_later <= 0.0 || !p_later.is_finite() {
        return PHI_MAX;
    }
    (-p_later.log10()).clamp(0.0, PHI_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(gaps: &[f32]) -> Window {
        let mut w = Window::default();
        for g in gaps {
            w.push(*g);
        }
        w
    }

    #[test]
    fn phi_grows_with_silence() {
        let w = window(&[1000.0, 1010.0, 990.0, 1005.0, 995.0, 1000.0]);
        let mut last = -1.0;
        for elapsed in [0.0, 500.0, 1000.0, 1200.0, 1500.0, 2000.0, 3000.0] {
            let p = phi(&w, elapsed, 3, 100.0).expect("enough samples");
            assert!(p >= last, "phi fell from {last} to {p} at {elapsed}");
            last = p;
        }
        assert!(last >= 8.0, "3 s of silence after 1 s keepalives: phi {last}");
    }

    #[test]
    fn phi_at_the_mean_is_about_point_three() {
        // P(later than the mean) = 1/2, so phi = log10(2).
        let p = phi_of(1000.0, 1000.0, 100.0);
        assert!((p - 2f64.log10()).abs() < 1e-6, "{p}");
    }

    #[test]
    fn stddev_floor_tolerates_small_delays() {
        // Perfectly regular 1 s keepalives: without a floor, 1.05 s would be
        // fatal; with a 100 ms floor it is unremarkable.
        let w = window(&[1000.0; 10]);
        let p = phi(&w, 1050.0, 3, 100.0).expect("samples");
        assert!(p < 1.0, "{p}");
    }

    #[test]
    fn a_few_long_gaps_do_not_teach_tolerance() {
        // 2 s keepalives with three growing stalls already in the window.
        let w = window(&[
            2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2900.0, 3800.0, 4700.0,
        ]);
        let p = phi(&w, 3500.0, 3, 100.0).expect("samples");
        assert!(p >= 8.0, "a 3.5 s gap after 2 s keepalives: phi {p}");
    }

    #[test]
    fn too_few_samples_give_no_verdict() {
        let w = window(&[1000.0, 1000.0]);
        assert_eq!(phi(&w, 10_000.0, 3, 100.0), None);
    }

    #[test]
    fn irregular_clients_need_longer_silence() {
        let regular = window(&[1000.0, 1000.0, 1000.0, 1000.0]);
        let bursty = window(&[200.0, 1800.0, 300.0, 1700.0]);
        let a = phi(&regular, 2000.0, 3, 50.0).expect("samples");
        let b = phi(&bursty, 2000.0, 3, 50.0).expect("samples");
        assert!(a > b, "regular {a} bursty {b}");
    }
}
