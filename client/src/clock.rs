//! The client's clock: a process-wide monotonic epoch for the clock values
//! sent with acquires and releases, and the local-validity formula of
//! DESIGN.md "Time" rule 5.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// One million, for ppm arithmetic.
const PPM: u128 = 1_000_000;

/// This process's monotonic clock, µs since a process-wide epoch (the first
/// call). Sent as `client_clock_us` with acquires and releases so the
/// cluster can compare the hold time this host measures with cluster time.
pub fn client_clock_us() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// End of a grant's validity on this host's clock (rule 5):
/// `t_send + V × (1 − ρ/10⁶) − ε`, with the drift term rounded up so the
/// result is never later than the exact value. `t_send` must be taken
/// before the *first* attempt of the request that produced the grant.
pub(crate) fn local_expiry(t_send: Instant, validity_us: u64, rho_ppm: u64, margin_us: u64) -> Instant {
    let v = u128::from(validity_us);
    let drift = (v * u128::from(rho_ppm).min(PPM)).div_ceil(PPM);
    let usable = v.saturating_sub(drift).saturating_sub(u128::from(margin_us));
    debug_assert!(usable <= v);
    t_send + Duration::from_micros(u64::try_from(usable).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_five_shortens_by_drift_and_margin() {
        let t = Instant::now();
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
    fn client_clock_is_monotonic() {
        let a = client_clock_us();
        let b = client_clock_us();
        assert!(b >= a);
    }
}
