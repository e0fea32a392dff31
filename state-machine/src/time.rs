//! The safety arithmetic of time: the drift bounds ρ_cluster and ρ_client,
//! the drift margin of a validity, the lock-delay of docs/design.md "Time"
//! rule 6, and the check of a client's clock ("Clock drift").
//!
//! # Where each rule lives
//!
//! Rules 1–2 (the leader measures elapsed time and stamps cluster time no
//! faster than real time) are the nodes' job; rule 3 (`ts_eff = max`) is
//! [`crate::StateMachine::apply`]; rule 4 (a validity `V` ends at
//! `ts_eff + V`) is `sessions.rs`, where sessions open and renew; rule 5
//! (the client counts `V` from its send, shortened by its drift bound) is
//! the client library's, fed by the ρ_client computed here and returned
//! with every keepalive; rule 7 (fencing tokens) is `locks.rs`; rule 8
//! (reads at the reader's cluster time) is `reads.rs`. This file computes
//! the bounds those rules rely on and rule 6, the one margin the state
//! machine itself adds:
//!
//! ```text
//! lock_delay_until = deadline + V × (ρ_cluster + ρ_client) + time.lock_delay_extra_us
//! ```
//!
//! # Why each term has its form
//!
//! - **`deadline`**, not the time of the expiry or revocation: the end of
//!   the longest validity ever promised to the session (a keepalive never
//!   shortens it). A revoked session's client may still act on that
//!   promise, so nothing it holds is granted again before it ends.
//! - **`V × ρ`**: rules 2 and 5 keep the cluster's and the client's counts
//!   of a validity on the safe side only as far as their drift bounds hold.
//!   The margin covers a rate error of up to ρ_cluster on the cluster's
//!   clocks and ρ_client on the client's over the span both of them
//!   measured, the last granted validity `V`: a rate error accumulates over
//!   a measured span, so the margin is proportional to it. The two bounds
//!   add because the errors can point the same way: a cluster running fast
//!   frees early while a client running slow believes late.
//! - **ρ_cluster** is the largest `|drift| + k·σ` over every node's
//!   committed estimate, not just the current leader's: any node may lead
//!   and stamp cluster time during `V`. A node with an unusable estimate
//!   (too few samples, σ too large), or one that reports health but no
//!   clock, might be anywhere within the configured worst case, so it
//!   counts at `time.max_drift_ppm`, as does a cluster with no estimate at
//!   all. The result is never below 1 ppm, so the margin does not vanish on
//!   estimates that round to zero.
//! - **ρ_client** is the client's own usable estimate (or the worst case),
//!   or the widening its renewals proved necessary when larger: a client
//!   whose clock was shown to run slow is trusted only at the rate it was
//!   seen to drift, up to `time.max_client_rho_ppm`.
//! - **`time.lock_delay_extra_us`**: a fixed allowance an operator may add
//!   for what does not scale with `V` (0 by default).
//!
//! All rounding goes to the safe side: ppb become ppm rounded up, margins
//! are rounded up, and sums saturate (an overflow means "never", not a
//! wrap into the past).

use driftlock_proto::{ClockEstimate, ClockSample, Event, SessionId};

use crate::apply::Ctx;
use crate::entities::{Session, CLOCK_EVIDENCE_PAIRS};
use crate::StateMachine;

/// One million, for ppm arithmetic.
const PPM: u128 = 1_000_000;

impl StateMachine {
    /// The drift bound every replica uses for cluster margins, ppm: the
    /// largest `|drift| + k·σ` among committed node estimates, and the
    /// configured worst case for a node whose estimate is unusable or
    /// missing (docs/design.md "Time").
    pub fn cluster_rho_ppm(&self) -> u64 {
        let t = &self.config.time;
        let mut rho = 0u64;
        let mut any = false;
        for est in self.node_clocks.values() {
            any = true;
            rho = rho.max(self.estimate_rho_ppm(est).unwrap_or(t.max_drift_ppm));
        }
        if !any {
            return t.max_drift_ppm;
        }
        // A node that reports health but never a clock is also unknown.
        if self.node_health.keys().any(|id| !self.node_clocks.contains_key(id)) {
            rho = rho.max(t.max_drift_ppm);
        }
        rho.max(1)
    }

    /// `|drift| + k·σ` of an estimate in ppm (rounded up), or `None` when
    /// the estimate is unusable.
    fn estimate_rho_ppm(&self, est: &ClockEstimate) -> Option<u64> {
        let t = &self.config.time;
        if est.samples < t.min_estimate_samples || est.drift_sigma_ppb > t.max_usable_drift_sigma_ppb {
            return None;
        }
        let ppb =
            u128::from(est.drift_ppb.unsigned_abs()) + u128::from(est.drift_sigma_ppb) * u128::from(t.drift_k_sigma);
        Some(u64::try_from(ppb.div_ceil(1000)).unwrap_or(u64::MAX))
    }

    /// Drift bound for a session's client, ppm: its own usable estimate (or
    /// the configured worst case), or the widening its renewals proved
    /// necessary when that is larger.
    pub(crate) fn client_rho_ppm(&self, s: &Session) -> u64 {
        let own = s
            .clock
            .as_ref()
            .and_then(|e| self.estimate_rho_ppm(e))
            .unwrap_or(self.config.time.max_drift_ppm);
        own.max(s.client_clock.widened_ppm)
    }

    /// Margin to add after `duration_us` of validity so that it has surely
    /// ended on every clock involved, µs (rounded up).
    pub(crate) fn drift_margin_us(&self, duration_us: u64, rho_ppm: u64) -> u64 {
        let m = (u128::from(duration_us) * u128::from(rho_ppm)).div_ceil(PPM);
        u64::try_from(m).unwrap_or(u64::MAX)
    }

    /// Cluster time until which a resource held by `s` must stay unavailable
    /// after an expiry or revocation (docs/design.md "Time", rule 6).
    pub(crate) fn lock_delay_until(&self, s: &Session) -> u64 {
        let rho = self.cluster_rho_ppm().saturating_add(self.client_rho_ppm(s));
        let until = s
            .deadline_us
            .saturating_add(self.drift_margin_us(s.validity_us, rho))
            .saturating_add(self.config.time.lock_delay_extra_us);
        // Rule 6: never before the validity already promised has ended.
        debug_assert!(until >= s.deadline_us);
        until
    }

    /// Folds one clock sample of a session's client into what the
    /// cluster knows of that clock, and widens the client's drift bound
    /// when several renewals in a row show it runs slow (docs/design.md
    /// "Clock drift", checking a client's clock).
    ///
    /// Two samples `a` (older) and `b` bound the client-clock time between
    /// their renewing entries: each entry was stamped between its sample's
    /// send and receipt, so on the client's clock at most
    /// `hi = b.received − a.sent` passed between the stampings. Cluster
    /// time never runs ahead of real time (rule 2), so at least
    /// `Δc = b.cluster_ts − a.cluster_ts` of real time passed. A client
    /// whose clock runs at rate `1 − r` measured that as `(1 − r)·D ≤ hi`
    /// with `D ≥ Δc`, hence `r ≥ (Δc − hi)/Δc`: a lower bound on its
    /// slowness that network delay, queueing and retries can only loosen
    /// (they widen `[send, receipt]`), never inflate. Only slowness is
    /// looked for: a fast client expires early, which is safe.
    pub(crate) fn observe_client_clock(&mut self, id: SessionId, sample: ClockSample, ctx: &mut Ctx) {
        let base_ppm = self.config.time.max_drift_ppm;
        let cap_ppm = self.config.time.max_client_rho_ppm;
        let alert_ppm = self.config.time.alert_drift_ppm;
        let Some(s) = self.sessions.get_mut(&id) else { return };
        let c = &mut s.client_clock;
        let previous = c.last.replace(sample);
        let Some(a) = previous else { return };
        if sample.cluster_ts_us <= a.cluster_ts_us {
            // The same renewal reported again (its successor's reply was
            // lost), or an older one: nothing new to compare; keep the
            // newer sample.
            c.last = Some(a);
            return;
        }
        if sample.sent_us < a.sent_us {
            // Not one monotonic clock: drop what was gathered and start
            // again from this sample.
            c.evidence_len = 0;
            return;
        }
        let delta_c_us = sample.cluster_ts_us - a.cluster_ts_us;
        let hi_us = sample.received_us - a.sent_us;
        let slow_ppm = if delta_c_us > hi_us {
            // Rounded down: a lower bound stays one.
            let p = u128::from(delta_c_us - hi_us) * PPM / u128::from(delta_c_us);
            u64::try_from(p).unwrap_or(u64::MAX)
        } else {
            0
        };
        let len = usize::from(c.evidence_len);
        if len < CLOCK_EVIDENCE_PAIRS {
            c.evidence_ppm[len] = slow_ppm;
            c.evidence_len += 1;
        } else {
            c.evidence_ppm.rotate_left(1);
            c.evidence_ppm[CLOCK_EVIDENCE_PAIRS - 1] = slow_ppm;
        }
        if usize::from(c.evidence_len) < CLOCK_EVIDENCE_PAIRS {
            return;
        }
        // Act only on what every recent pair agrees on.
        let filtered_ppm = c.evidence_ppm.iter().copied().min().unwrap_or(0);
        let alert = filtered_ppm > alert_ppm;
        let old_widened = c.widened_ppm;
        if filtered_ppm > base_ppm {
            c.widened_ppm = c.widened_ppm.max(filtered_ppm.min(cap_ppm));
        }
        let grew = c.widened_ppm > old_widened;
        if old_widened == 0 && c.widened_ppm > 0 {
            self.counts.skewed_sessions += 1;
        }
        let alert_raised = alert && !c.alerted;
        c.alerted = alert;
        debug_assert!(c.widened_ppm <= cap_ppm.max(old_widened));
        if grew || alert_raised {
            let client_rho_ppm = self.sessions.get(&id).map_or(base_ppm, |s| self.client_rho_ppm(s));
            ctx.events.push(Event::ClockSkewDetected {
                session: id,
                slow_ppm: filtered_ppm,
                client_rho_ppm,
                alert,
            });
        }
    }
}
