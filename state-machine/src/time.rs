//! The safety arithmetic of time: the drift bounds ρ_cluster and ρ_client,
//! the drift margin of a validity, the lock-delay of docs/design.md "Time"
//! rule 6, and the client clock check of "Client clock validation".
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
//! - **ρ_client** is the client's own usable estimate (or the worst case)
//!   plus `rho_extra_ppm`, the widening left by a detected skew: a client
//!   whose measured hold disagreed with cluster time is trusted only at
//!   the rate it was seen to drift.
//! - **`time.lock_delay_extra_us`**: a fixed allowance an operator may add
//!   for what does not scale with `V` (0 by default).
//!
//! All rounding goes to the safe side: ppb become ppm rounded up, margins
//! are rounded up, and sums saturate (an overflow means "never", not a
//! wrap into the past).

use driftlock_proto::{ClockEstimate, Event, SessionId};

use crate::apply::Ctx;
use crate::entities::Session;
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
    /// the configured worst case) plus any widening after a detected skew.
    pub(crate) fn client_rho_ppm(&self, s: &Session) -> u64 {
        let own = s
            .clock
            .as_ref()
            .and_then(|e| self.estimate_rho_ppm(e))
            .unwrap_or(self.config.time.max_drift_ppm);
        own.saturating_add(s.rho_extra_ppm)
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

    /// Compares the hold time the client measured on its own clock with the
    /// hold time in cluster time; beyond the allowed deviation
    /// (`hold × (ρ_cluster + ρ_client) + time.clock_check_slack_us`, the
    /// drift margin of rule 6 plus network slack), widens the client's drift
    /// bound to the observed excess rate and raises `ClockSkewDetected`
    /// (docs/design.md "Client clock validation").
    pub(crate) fn check_client_clock(
        &mut self,
        session: SessionId,
        name: &str,
        acquire_clock_us: u64,
        release_clock_us: u64,
        granted_ts_us: u64,
        ctx: &mut Ctx,
    ) {
        let Some(s) = self.sessions.get(&session) else { return };
        let cluster_hold_us = ctx.now_us.saturating_sub(granted_ts_us);
        let client_hold_us = release_clock_us.saturating_sub(acquire_clock_us);
        let deviation_us = cluster_hold_us.abs_diff(client_hold_us);
        let rho_ppm = self.cluster_rho_ppm().saturating_add(self.client_rho_ppm(s));
        let allowed_us = self
            .drift_margin_us(cluster_hold_us.max(client_hold_us), rho_ppm)
            .saturating_add(self.config.time.clock_check_slack_us);
        if deviation_us <= allowed_us {
            return;
        }
        let excess_us = deviation_us - self.config.time.clock_check_slack_us.min(deviation_us);
        let observed_ppm = (u128::from(excess_us) * 1_000_000).div_ceil(u128::from(cluster_hold_us.max(1)));
        let observed_ppm = u64::try_from(observed_ppm).unwrap_or(u64::MAX);
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.rho_extra_ppm = s.rho_extra_ppm.max(observed_ppm);
        let widened_rho_ppm = s.rho_extra_ppm;
        ctx.events.push(Event::ClockSkewDetected {
            session,
            name: name.to_owned(),
            client_hold_us,
            cluster_hold_us,
            widened_rho_ppm,
        });
    }
}
