//! The clock every safety margin measures elapsed time with:
//! `CLOCK_MONOTONIC_RAW`.
//!
//! `std::time::Instant` (and tokio's) read `CLOCK_MONOTONIC`, which NTP
//! daemons *slew*: to correct an offset, chrony speeds the clock up or slows
//! it down by up to its `maxslewrate` (83 333 ppm by default). A node
//! correcting a 0.5 s error would then count 0.5 s of extra elapsed time
//! within seconds, and cluster time stamped from it would run ahead of real
//! time (docs/design.md "Time", rule 2). `CLOCK_MONOTONIC_RAW` counts the
//! hardware oscillator without any adjustment: its rate error is the
//! oscillator's own (tens of ppm), steady, and what the drift estimates
//! measure. Stamping, the cluster-time anchor, the clock module's samples
//! and a client's local validity all read this clock.
//!
//! Timers (tokio's `sleep`) still run on `CLOCK_MONOTONIC`; code that must
//! not act late against a raw deadline sleeps in shrinking steps and
//! re-reads this clock (see the client library's session timers).
//!
//! Written by hand on `nix::time::clock_gettime`: no maintained crate offers
//! a raw-monotonic `Instant`.

use std::sync::OnceLock;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// A reading of the raw monotonic clock, nanoseconds since an arbitrary
/// point (boot, on Linux). Only differences between readings mean anything,
/// and only between readings of one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawInstant {
    nanos: u64,
}

/// The clock [`RawInstant::now`] reads: `CLOCK_MONOTONIC_RAW` when the
/// kernel offers it (every Linux since 2.6.28), else `CLOCK_MONOTONIC` for
/// the whole life of the process, so readings never mix two clocks.
fn source() -> ClockId {
    static SOURCE: OnceLock<ClockId> = OnceLock::new();
    *SOURCE.get_or_init(|| {
        if clock_gettime(ClockId::CLOCK_MONOTONIC_RAW).is_ok() {
            ClockId::CLOCK_MONOTONIC_RAW
        } else {
            tracing::warn!(
                "CLOCK_MONOTONIC_RAW is not available: elapsed time is measured on CLOCK_MONOTONIC, \
                 which NTP may slew; keep slewing slow (chrony maxslewrate) on this host"
            );
            ClockId::CLOCK_MONOTONIC
        }
    })
}

impl RawInstant {
    /// The clock now.
    pub fn now() -> RawInstant {
        // Both clocks exist on every system this builds for; a failure
        // here is a broken kernel interface, and a monotonic reading of 0
        // would only make every elapsed time read as zero (the safe side:
        // cluster time and validities then stand still instead of racing).
        let nanos = match clock_gettime(source()) {
            Ok(ts) => u64::try_from(ts.tv_sec())
                .unwrap_or(0)
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::try_from(ts.tv_nsec()).unwrap_or(0)),
            Err(_) => 0,
        };
        RawInstant { nanos }
    }

    /// A reading `nanos` after the clock's origin (tests and arithmetic).
    pub const fn from_nanos(nanos: u64) -> RawInstant {
        RawInstant { nanos }
    }

    /// Nanoseconds since the clock's origin.
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// Microseconds since the clock's origin: the unit clock samples and
    /// probes exchange.
    pub const fn as_micros(self) -> u64 {
        self.nanos / 1_000
    }

    /// Time from `earlier` to `self`; zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: RawInstant) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }

    /// Time since this reading.
    pub fn elapsed(self) -> Duration {
        RawInstant::now().saturating_duration_since(self)
    }

    /// This reading moved `d` later, saturating at the end of the clock's
    /// range (centuries away).
    pub fn saturating_add(self, d: Duration) -> RawInstant {
        let add = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        RawInstant {
            nanos: self.nanos.saturating_add(add),
        }
    }

    /// This reading moved `d` earlier, or `None` before the clock's origin.
    pub fn checked_sub(self, d: Duration) -> Option<RawInstant> {
        let sub = u64::try_from(d.as_nanos()).ok()?;
        self.nanos.checked_sub(sub).map(|nanos| RawInstant { nanos })
    }
}

impl std::ops::Add<Duration> for RawInstant {
    type Output = RawInstant;

    fn add(self, d: Duration) -> RawInstant {
        self.saturating_add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_never_go_backwards_and_follow_sleep() {
        let a = RawInstant::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = RawInstant::now();
        assert!(b > a);
        let d = b.saturating_duration_since(a);
        assert!(d >= Duration::from_millis(19), "{d:?}");
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = RawInstant::from_nanos(5_000);
        assert_eq!((t + Duration::from_micros(3)).as_nanos(), 8_000);
        assert_eq!(t.as_micros(), 5);
        assert_eq!(t.checked_sub(Duration::from_micros(6)), None);
        assert_eq!(t.checked_sub(Duration::from_micros(5)), Some(RawInstant::from_nanos(0)));
        assert_eq!(
            RawInstant::from_nanos(u64::MAX - 1) + Duration::from_secs(1),
            RawInstant::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn the_raw_clock_is_used_where_the_kernel_has_it() {
        // Every kernel CI runs on has CLOCK_MONOTONIC_RAW: a silent fallback
        // there would hide slewing from every margin.
        if cfg!(target_os = "linux") {
            assert_eq!(source(), ClockId::CLOCK_MONOTONIC_RAW);
        }
    }
}
