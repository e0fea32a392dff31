//! Contention prediction: a per-lock request-rate estimate (exponentially
//! weighted, time constant [`RATE_TAU_S`]) from the acquires the leader
//! receives, and the list of hot locks for metrics and `driftlock status`.
//!
//! Handing a released lock to its next waiter needs nothing here: the state
//! machine grants the head waiter inside the very entry that frees the lock
//! (a "speculative" grant with its own fresh validity, no extra round trip).

use std::collections::BTreeMap;
use std::time::Instant;

/// Time constant of the rate estimate, seconds.
pub const RATE_TAU_S: f64 = 10.0;
/// Locks tracked at most; beyond, the coldest is forgotten.
pub const MAX_TRACKED_LOCKS: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Rate {
    per_s: f64,
    at: Instant,
}

impl Rate {
    fn at(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.per_s * (-dt / RATE_TAU_S).exp()
    }
}

/// Request-rate estimates per lock name.
#[derive(Default)]
pub struct LockRates {
    rates: BTreeMap<String, Rate>,
}

impl LockRates {
    /// Records one acquire of `name` at `now`.
    pub fn record(&mut self, name: &str, now: Instant) {
        if let Some(r) = self.rates.get_mut(name) {
            r.per_s = r.at(now) + 1.0 / RATE_TAU_S;
            r.at = now;
            return;
        }
        if self.rates.len() >= MAX_TRACKED_LOCKS {
            self.forget_coldest(now);
        }
        self.rates.insert(
            name.to_owned(),
            Rate {
                per_s: 1.0 / RATE_TAU_S,
                at: now,
            },
        );
        debug_assert!(self.rates.len() <= MAX_TRACKED_LOCKS);
    }

    fn forget_coldest(&mut self, now: Instant) {
        let coldest = self
            .rates
            .iter()
            .min_by(|a, b| a.1.at(now).total_cmp(&b.1.at(now)))
            .map(|(k, _)| k.clone());
        if let Some(k) = coldest {
            self.rates.remove(&k);
        }
    }

    /// Current estimate for `name`, requests per second.
    pub fn rate_per_s(&self, name: &str, now: Instant) -> f64 {
        self.rates.get(name).map_or(0.0, |r| r.at(now))
    }

    /// Locks at or above `threshold_per_s`, hottest first, at most `limit`.
    pub fn hot(&self, now: Instant, threshold_per_s: f64, limit: usize) -> Vec<(String, f64)> {
        let mut hot: Vec<(String, f64)> = self
            .rates
            .iter()
            .map(|(k, r)| (k.clone(), r.at(now)))
            .filter(|(_, r)| *r >= threshold_per_s)
            .collect();
        hot.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        hot.truncate(limit);
        hot
    }

    /// Drops estimates that decayed below `floor_per_s`.
    pub fn prune(&mut self, now: Instant, floor_per_s: f64) {
        self.rates.retain(|_, r| r.at(now) >= floor_per_s);
    }

    /// Locks with a rate estimate, at most [`MAX_TRACKED_LOCKS`]; shrinks as
    /// [`LockRates::prune`] drops decayed estimates.
    pub fn len(&self) -> usize {
        self.rates.len()
    }

    /// Whether no lock is tracked.
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn steady_rate_converges_and_decays() {
        let t0 = Instant::now();
        let mut r = LockRates::default();
        // 20 requests per second for 60 s (6 time constants).
        for i in 0..1200u64 {
            r.record("hot", t0 + Duration::from_millis(50 * i));
        }
        let end = t0 + Duration::from_millis(50 * 1199);
        let est = r.rate_per_s("hot", end);
        assert!((est - 20.0).abs() < 1.0, "estimate {est}");
        let later = r.rate_per_s("hot", end + Duration::from_secs(10));
        assert!((later - est / std::f64::consts::E).abs() < 0.5, "decayed {later}");
    }

    #[test]
    fn hot_list_is_ordered_and_thresholded() {
        let t0 = Instant::now();
        let mut r = LockRates::default();
        for i in 0..100u64 {
            r.record("a", t0 + Duration::from_millis(10 * i));
            if i % 2 == 0 {
                r.record("b", t0 + Duration::from_millis(10 * i));
            }
        }
        r.record("cold", t0);
        let now = t0 + Duration::from_secs(1);
        let hot = r.hot(now, 1.0, 10);
        let names: Vec<&str> = hot.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(r.hot(now, 1.0, 1).len(), 1);
    }

    #[test]
    fn tracked_locks_are_bounded() {
        let t0 = Instant::now();
        let mut r = LockRates::default();
        for i in 0..(MAX_TRACKED_LOCKS + 50) {
            r.record(&format!("l{i}"), t0);
        }
        assert_eq!(r.len(), MAX_TRACKED_LOCKS);
    }
}
