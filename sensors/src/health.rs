//! Host health sampling for the adaptive lease (docs/design.md "Adaptive leases").
//!
//! A [`HealthMonitor`] turns what this host measures — CPU load, memory in
//! use, time waiting for disk I/O, round-trip times to the cluster and
//! recent failures — into the [`HealthSample`] the state machine's formula
//! reads. The client library attaches one to a keepalive at a bounded rate;
//! nodes report their own through the leader. The weighting into a Node
//! Health Index happens in the state machine, on committed samples only, so
//! every replica agrees on the tier.
//!
//! CPU and memory come from `sysinfo`. I/O wait is read from `/proc/stat` by
//! hand because `sysinfo` does not expose it; on other systems it reads 0.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use driftlock_proto::{HealthSample, HealthTier};

/// Environment variable that forces a health tier (tests and drills only).
pub const HEALTH_OVERRIDE_ENV: &str = "DRIFTLOCK_HEALTH_OVERRIDE";

/// How many RTT samples the stability window keeps.
const RTT_WINDOW: usize = 64;
/// How long a failure (missed keepalive, restart) counts against health.
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Upper bound on remembered failures (the state machine caps their effect
/// far below this anyway).
const MAX_FAILURES: usize = 64;

/// Parses a tier name (`excellent`, `good`, `warning`, `critical`).
///
/// # Errors
/// A message naming the accepted values.
pub fn parse_tier(s: &str) -> Result<HealthTier, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "excellent" => Ok(HealthTier::Excellent),
        "good" => Ok(HealthTier::Good),
        "warning" => Ok(HealthTier::Warning),
        "critical" => Ok(HealthTier::Critical),
        other => Err(format!(
            "unknown health tier '{other}'; expected excellent, good, warning or critical"
        )),
    }
}

/// The tier forced by `DRIFTLOCK_HEALTH_OVERRIDE`, if set.
///
/// # Errors
/// When the variable is set to something that is not a tier name.
pub fn override_from_env() -> Result<Option<HealthTier>, String> {
    match std::env::var(HEALTH_OVERRIDE_ENV) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => parse_tier(&v)
            .map(Some)
            .map_err(|e| format!("{HEALTH_OVERRIDE_ENV}: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(format!("{HEALTH_OVERRIDE_ENV}: {e}")),
    }
}

/// A synthetic sample that lands in `tier` under the default lease
/// configuration: every resource at the same fraction `f` busy, so the
/// index is about `1000 − f`. Used only for the documented override.
pub fn synthetic_sample(tier: HealthTier) -> HealthSample {
    let f: u32 = match tier {
        HealthTier::Excellent => 50,
        HealthTier::Good => 250,
        HealthTier::Warning => 480,
        HealthTier::Critical => 850,
    };
    HealthSample {
        cpu_load_permille: f,
        mem_used_permille: f,
        io_wait_permille: f,
        // f permille of the default worst latency (200 ms).
        rtt_mean_us: u64::from(f) * 200,
        rtt_stddev_us: 0,
        recent_failures: f / 200,
        load_permille: 0,
    }
}

/// Measures this host's health. Not thread-safe by itself; wrap it in a
/// mutex to share.
pub struct HealthMonitor {
    /// `None` when the platform gives no readings (then CPU and memory
    /// read as 0: unknown must not look unhealthy).
    system: Option<sysinfo::System>,
    rtt_us: VecDeque<u64>,
    failures: VecDeque<Instant>,
    last_cpu_times: Option<CpuTimes>,
    forced: Option<HealthTier>,
    load_permille: u32,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("rtt_samples", &self.rtt_us.len())
            .field("failures", &self.failures.len())
            .field("forced", &self.forced)
            .finish()
    }
}

impl HealthMonitor {
    /// A monitor; `forced` pins every sample to a tier (tests only).
    pub fn new(forced: Option<HealthTier>) -> Self {
        let system = match sysinfo::System::new() {
            Ok(mut system) => {
                // The first CPU reading is a baseline; usage is measured
                // between refreshes.
                system.refresh_cpu_usage();
                Some(system)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no CPU or memory readings on this host");
                None
            }
        };
        HealthMonitor {
            system,
            rtt_us: VecDeque::with_capacity(RTT_WINDOW),
            failures: VecDeque::new(),
            last_cpu_times: read_cpu_times(),
            forced,
            load_permille: 0,
        }
    }

    /// The forced tier, if any.
    pub fn forced(&self) -> Option<HealthTier> {
        self.forced
    }

    /// Records one round trip to the cluster, µs.
    pub fn record_rtt_us(&mut self, rtt_us: u64) {
        if self.rtt_us.len() == RTT_WINDOW {
            self.rtt_us.pop_front();
        }
        self.rtt_us.push_back(rtt_us);
    }

    /// Records a failure (a missed keepalive, a restart) at `now`.
    pub fn record_failure(&mut self, now: Instant) {
        if self.failures.len() == MAX_FAILURES {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
    }

    /// Sets the holder's own load, permille (e.g. how full its work queue
    /// is); it feeds the lease's load factor.
    pub fn set_load_permille(&mut self, load_permille: u32) {
        self.load_permille = load_permille.min(1000);
    }

    /// Mean and standard deviation of the RTT window, µs.
    pub fn rtt_stats_us(&self) -> (u64, u64) {
        rtt_stats(self.rtt_us.iter().copied())
    }

    /// A sample of the host as it is now.
    pub fn sample(&mut self, now: Instant) -> HealthSample {
        if let Some(tier) = self.forced {
            return synthetic_sample(tier);
        }
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > FAILURE_WINDOW)
        {
            self.failures.pop_front();
        }
        let (cpu, mem_used_permille) = match &mut self.system {
            Some(system) => {
                system.refresh_cpu_usage();
                system.refresh_memory();
                let cpu = f64::from(system.global_cpu_usage()).clamp(0.0, 100.0);
                let total_mem = system.total_memory();
                let mem = system
                    .used_memory()
                    .saturating_mul(1000)
                    .checked_div(total_mem)
                    .map_or(0, |m| m.min(1000) as u32);
                (cpu, mem)
            }
            None => (0.0, 0),
        };
        let times = read_cpu_times();
        let io_wait_permille = match (&self.last_cpu_times, &times) {
            (Some(a), Some(b)) => b.io_wait_permille_since(a),
            _ => 0,
        };
        if times.is_some() {
            self.last_cpu_times = times;
        }
        let (rtt_mean_us, rtt_stddev_us) = self.rtt_stats_us();
        HealthSample {
            cpu_load_permille: (cpu * 10.0).round() as u32,
            mem_used_permille,
            io_wait_permille,
            rtt_mean_us,
            rtt_stddev_us,
            recent_failures: u32::try_from(self.failures.len()).unwrap_or(u32::MAX),
            load_permille: self.load_permille,
        }
    }
}

/// Mean and population standard deviation of RTT samples, µs.
pub fn rtt_stats(samples: impl Iterator<Item = u64>) -> (u64, u64) {
    let (mut n, mut sum, mut sum_sq) = (0u64, 0f64, 0f64);
    for s in samples {
        n += 1;
        let x = s as f64;
        sum += x;
        sum_sq += x * x;
    }
    if n == 0 {
        return (0, 0);
    }
    let mean = sum / n as f64;
    let var = (sum_sq / n as f64 - mean * mean).max(0.0);
    (mean.round() as u64, var.sqrt().round() as u64)
}

/// Aggregate CPU time counters from `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CpuTimes {
    total: u64,
    io_wait: u64,
}

impl CpuTimes {
    fn io_wait_permille_since(&self, earlier: &CpuTimes) -> u32 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0;
        }
        (self.io_wait.saturating_sub(earlier.io_wait).saturating_mul(1000) / total).min(1000) as u32
    }
}

fn read_cpu_times() -> Option<CpuTimes> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(text.lines().next()?)
}

/// Parses the aggregate `cpu` line of `/proc/stat`:
/// `cpu user nice system idle iowait irq softirq steal ...`.
fn parse_cpu_line(line: &str) -> Option<CpuTimes> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if values.len() < 5 {
        return None;
    }
    Some(CpuTimes {
        total: values.iter().sum(),
        io_wait: values[4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlock_proto::health::{health_index_permille, tier_of};
    use driftlock_proto::LeaseConfig;

    #[test]
    fn synthetic_samples_land_in_their_tier_under_the_default_config() {
        let cfg = LeaseConfig::default();
        for tier in [
            HealthTier::Excellent,
            HealthTier::Good,
            HealthTier::Warning,
            HealthTier::Critical,
        ] {
            let nhi = health_index_permille(&synthetic_sample(tier), &cfg);
            assert_eq!(tier_of(nhi, &cfg), tier, "nhi {nhi}");
        }
    }

    #[test]
    fn tier_names_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_tier(" Critical "), Ok(HealthTier::Critical));
        assert_eq!(parse_tier("good"), Ok(HealthTier::Good));
        assert!(parse_tier("sick").unwrap_err().contains("expected excellent"));
    }

    #[test]
    fn rtt_window_keeps_the_latest_samples_and_their_spread() {
        let mut m = HealthMonitor::new(None);
        for _ in 0..RTT_WINDOW {
            m.record_rtt_us(1_000_000);
        }
        for i in 0..RTT_WINDOW {
            m.record_rtt_us(if i % 2 == 0 { 900 } else { 1_100 });
        }
        let (mean, sd) = m.rtt_stats_us();
        assert_eq!(mean, 1_000, "old samples must have left the window");
        assert_eq!(sd, 100);
    }

    #[test]
    fn old_failures_stop_counting() {
        let mut m = HealthMonitor::new(None);
        let t0 = Instant::now();
        m.record_failure(t0);
        m.record_failure(t0);
        assert_eq!(m.sample(t0).recent_failures, 2);
        assert_eq!(
            m.sample(t0 + FAILURE_WINDOW + Duration::from_secs(1)).recent_failures,
            0
        );
    }

    #[test]
    fn io_wait_comes_from_the_delta_of_the_cpu_line() {
        let a = parse_cpu_line("cpu  100 0 100 700 100 0 0 0 0 0").unwrap();
        let b = parse_cpu_line("cpu  200 0 200 1300 300 0 0 0 0 0").unwrap();
        assert_eq!(b.io_wait_permille_since(&a), 200);
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5"), None);
        assert_eq!(parse_cpu_line("cpu 1 x 3 4 5"), None);
    }

    #[test]
    fn a_forced_tier_pins_every_sample() {
        let mut m = HealthMonitor::new(Some(HealthTier::Critical));
        m.record_rtt_us(10);
        assert_eq!(m.sample(Instant::now()), synthetic_sample(HealthTier::Critical));
    }
}
