//! Per-session request profile on the leader: fixed-size rolling windows of
//! inter-request time, keepalive inter-arrival time (and so its jitter),
//! leader-side service time (the RTT the leader sees: request arrival to
//! committed reply), the client-reported RTT that rides on keepalive health
//! samples, and the request-type mix.
//!
//! Memory is bounded: a [`SessionProfile`] is a plain value with no heap
//! allocation, at most [`PROFILE_BYTES`] bytes whatever the session does.

use std::time::Instant;

/// Samples kept in each rolling window.
pub const WINDOW_LEN: usize = 32;

/// Upper bound on the size of one [`SessionProfile`], bytes (592 on
/// x86-64 Linux today). Four windows of `WINDOW_LEN`
/// `f32` samples (4 × 32 × 4 = 512 B plus their cursors), the request-mix
/// counters, and three instants. Checked by a unit test; at 10 000
/// sessions the profiler holds under 7 MB.
pub const PROFILE_BYTES: usize = 680;

/// Kinds of requests counted in the request-type mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `Keepalive`; its arrivals also fill the keepalive-gap window phi reads.
    Keepalive,
    /// `Acquire`; also counted in the lock's request rate.
    Acquire,
    /// `Release`.
    Release,
    /// KV write (fenced or not).
    KvWrite,
    /// `Campaign`, `Resign` or `Proclaim`.
    Election,
    /// `ProbeAnswer`; it also clears the session's pending suspicion.
    ProbeAnswer,
    /// Anything else (close, handover state).
    Other,
}

/// Number of [`RequestKind`]s.
pub const KINDS: usize = 7;

impl RequestKind {
    fn index(self) -> usize {
        self as usize
    }
}

/// A ring buffer of the last [`WINDOW_LEN`] samples.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    samples: [f32; WINDOW_LEN],
    len: u16,
    next: u16,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            samples: [0.0; WINDOW_LEN],
            len: 0,
            next: 0,
        }
    }
}

impl Window {
    /// Adds a sample, dropping the oldest when full.
    pub fn push(&mut self, v: f32) {
        debug_assert!(v.is_finite(), "non-finite sample");
        self.samples[usize::from(self.next)] = v;
        self.next = ((usize::from(self.next) + 1) % WINDOW_LEN) as u16;
        self.len = (usize::from(self.len) + 1).min(WINDOW_LEN) as u16;
    }

    /// Samples held, at most [`WINDOW_LEN`].
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the window holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn values(&self) -> &[f32] {
        &self.samples[..self.len()]
    }

    /// Mean of the samples (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        self.values().iter().map(|v| f64::from(*v)).sum::<f64>() / self.len() as f64
    }

    /// Population standard deviation (0 with fewer than two samples).
    pub fn stddev(&self) -> f64 {
        if self.len() < 2 {
            return 0.0;
        }
        let m = self.mean();
        let var = self.values().iter().map(|v| (f64::from(*v) - m).powi(2)).sum::<f64>() / self.len() as f64;
        var.sqrt()
    }

    /// Median and median absolute deviation of the samples (0, 0 when
    /// empty): robust against a few outliers, unlike mean and stddev.
    pub fn median_and_mad(&self) -> (f64, f64) {
        let n = self.len();
        if n == 0 {
            return (0.0, 0.0);
        }
        let mut v = [0f32; WINDOW_LEN];
        v[..n].copy_from_slice(self.values());
        let v = &mut v[..n];
        v.sort_by(f32::total_cmp);
        let median = median_sorted(v);
        for x in v.iter_mut() {
            *x = (*x - median as f32).abs();
        }
        v.sort_by(f32::total_cmp);
        (median, median_sorted(v))
    }

    /// The newest sample, if any.
    pub fn last(&self) -> Option<f32> {
        if self.is_empty() {
            return None;
        }
        Some(self.samples[(usize::from(self.next) + WINDOW_LEN - 1) % WINDOW_LEN])
    }
}

fn median_sorted(v: &[f32]) -> f64 {
    let n = v.len();
    debug_assert!(n > 0);
    if n % 2 == 1 {
        f64::from(v[n / 2])
    } else {
        (f64::from(v[n / 2 - 1]) + f64::from(v[n / 2])) / 2.0
    }
}

/// Rolling profile of one session, as the leader sees it.
#[derive(Clone, Copy, Debug)]
pub struct SessionProfile {
    /// Time between consecutive requests of any kind, ms.
    pub inter_request_ms: Window,
    /// Time between consecutive keepalives, ms (phi-accrual input).
    pub keepalive_gap_ms: Window,
    /// Leader-side service time (arrival to reply), ms.
    pub service_ms: Window,
    /// RTT the client reported with its keepalive health samples, ms.
    pub client_rtt_ms: Window,
    /// Requests per kind in the current mix period (halved when any count
    /// reaches 1024, so the mix follows recent behaviour).
    pub mix: [u16; KINDS],
    /// When the profile was created.
    pub created: Instant,
    /// Arrival of the last request.
    pub last_request: Instant,
    /// Arrival of the last keepalive, if any.
    pub last_keepalive: Option<Instant>,
}

impl SessionProfile {
    /// A fresh profile whose first request arrives `now`.
    pub fn new(now: Instant) -> Self {
        SessionProfile {
            inter_request_ms: Window::default(),
            keepalive_gap_ms: Window::default(),
            service_ms: Window::default(),
            client_rtt_ms: Window::default(),
            mix: [0; KINDS],
            created: now,
            last_request: now,
            last_keepalive: None,
        }
    }

    /// Records a request's arrival.
    pub fn arrival(&mut self, kind: RequestKind, now: Instant, client_rtt_us: Option<u64>) {
        let gap_ms = now.saturating_duration_since(self.last_request).as_secs_f64() * 1e3;
        if self.mix.iter().any(|c| *c > 0) {
            self.inter_request_ms.push(gap_ms as f32);
        }
        self.last_request = now;
        if kind == RequestKind::Keepalive {
            if let Some(prev) = self.last_keepalive {
                let gap = now.saturating_duration_since(prev).as_secs_f64() * 1e3;
                self.keepalive_gap_ms.push(gap as f32);
            }
            self.last_keepalive = Some(now);
        } else if kind == RequestKind::ProbeAnswer {
            // Proof of life: silence counts from here, but the answer is not
            // a keepalive gap sample (it would distort the gap model).
            self.last_keepalive = Some(now);
        }
        if let Some(rtt) = client_rtt_us {
            self.client_rtt_ms.push((rtt as f64 / 1e3) as f32);
        }
        let i = kind.index();
        self.mix[i] = self.mix[i].saturating_add(1);
        if self.mix[i] >= 1024 {
            for c in &mut self.mix {
                *c /= 2;
            }
        }
    }

    /// Records how long the leader took to answer a request.
    pub fn served(&mut self, service_ms: f64) {
        self.service_ms.push(service_ms as f32);
    }

    /// Share of keepalives in the request mix, 0..=1.
    pub fn keepalive_share(&self) -> f64 {
        let total: u32 = self.mix.iter().map(|c| u32::from(*c)).sum();
        if total == 0 {
            return 1.0;
        }
        f64::from(self.mix[RequestKind::Keepalive.index()]) / f64::from(total)
    }

    /// Keepalive jitter: standard deviation of keepalive gaps, ms.
    pub fn keepalive_jitter_ms(&self) -> f64 {
        self.keepalive_gap_ms.stddev()
    }

    /// The feature vector the isolation forest scores, computed at `now`
    /// so that a session gone silent keeps moving away from normal:
    ///
    /// 0. ln(1 + silence since the last request / mean inter-request gap)
    /// 1. ln(1 + silence since the last keepalive / mean keepalive gap)
    /// 2. keepalive jitter as a coefficient of variation
    /// 3. ln(1 + newest service time / mean service time)
    /// 4. keepalive share of the request mix
    ///
    /// Every feature is a ratio, so sessions with different TTLs and request
    /// rates share one model.
    pub fn features(&self, now: Instant) -> [f64; FEATURES] {
        let ratio = |num: f64, den: f64| if den > 0.0 { (num / den).min(1e3) } else { 0.0 };
        let since_req = now.saturating_duration_since(self.last_request).as_secs_f64() * 1e3;
        let since_ka = self
            .last_keepalive
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64() * 1e3);
        let ka_mean = self.keepalive_gap_ms.mean();
        let svc_last = self.service_ms.last().map_or(0.0, f64::from);
        [
            ratio(since_req, self.inter_request_ms.mean()).ln_1p(),
            ratio(since_ka, ka_mean).ln_1p(),
            ratio(self.keepalive_jitter_ms(), ka_mean),
            ratio(svc_last, self.service_ms.mean()).ln_1p(),
            self.keepalive_share(),
        ]
    }
}

/// Length of [`SessionProfile::features`].
pub const FEATURES: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn profile_size_is_bounded_and_heap_free() {
        assert!(
            std::mem::size_of::<SessionProfile>() <= PROFILE_BYTES,
            "SessionProfile is {} bytes, documented bound {PROFILE_BYTES}",
            std::mem::size_of::<SessionProfile>()
        );
        // Fixed arrays only: a profile fed a million requests is the same value size
        // and its windows never hold more than WINDOW_LEN samples.
        let t0 = Instant::now();
        let mut p = SessionProfile::new(t0);
        for i in 0..1_000_000u64 {
            let kind = if i % 3 == 0 {
                RequestKind::Keepalive
            } else {
                RequestKind::Acquire
            };
            p.arrival(kind, t0 + Duration::from_millis(i), Some(1_000));
            p.served(1.0);
        }
        for w in [p.inter_request_ms, p.keepalive_gap_ms, p.service_ms, p.client_rtt_ms] {
            assert_eq!(w.len(), WINDOW_LEN);
        }
        assert!(p.mix.iter().all(|c| *c < 1024));
        let share = p.keepalive_share();
        assert!((share - 1.0 / 3.0).abs() < 0.05, "share {share}");
    }

    #[test]
    fn window_keeps_the_newest_samples() {
        let mut w = Window::default();
        for i in 0..(WINDOW_LEN as u32 + 8) {
            w.push(i as f32);
        }
        assert_eq!(w.len(), WINDOW_LEN);
        assert_eq!(w.last(), Some((WINDOW_LEN + 7) as f32));
        // Newest WINDOW_LEN values: 8 ..= WINDOW_LEN + 7.
        let expected_mean = (8.0 + (WINDOW_LEN + 7) as f64) / 2.0;
        assert!((w.mean() - expected_mean).abs() < 1e-9);
    }

    #[test]
    fn median_and_mad_ignore_a_few_outliers() {
        let mut w = Window::default();
        for g in [2000.0, 2010.0, 1990.0, 2000.0, 2005.0, 1995.0, 7000.0, 6000.0] {
            w.push(g);
        }
        let (median, mad) = w.median_and_mad();
        assert!((median - 2002.5).abs() < 1e-6, "{median}");
        assert!(mad < 10.0, "{mad}");
        assert!(w.stddev() > 1000.0, "the plain stddev is dominated by the outliers");
    }

    #[test]
    fn silence_moves_the_features() {
        let t0 = Instant::now();
        let mut p = SessionProfile::new(t0);
        for i in 0..20u64 {
            p.arrival(RequestKind::Keepalive, t0 + Duration::from_millis(1_000 * i), None);
            p.served(2.0);
        }
        let last = t0 + Duration::from_millis(19_000);
        let fresh = p.features(last + Duration::from_millis(500));
        let silent = p.features(last + Duration::from_millis(5_000));
        assert!(silent[0] > fresh[0] && silent[1] > fresh[1]);
        assert!((silent[1] - (1.0f64 + 5.0).ln()).abs() < 0.01, "{silent:?}");
    }
}
