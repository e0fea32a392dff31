//! The clock drift module (docs/design.md "Clock drift"): samples this
//! node's clock against NTP servers and its peers, estimates offset and
//! drift with a Kalman filter per source, gossips the estimates, and feeds
//! the two places where drift matters:
//!
//! - the leader's **stamping bound** `ρ_hi` (docs/design.md "Time", rule 2),
//!   shared with [`ClusterClock`](crate::clock::ClusterClock);
//! - the **committed `ClockReport`s**, which set the state machine's
//!   margins (lock-delay, succession delay) on every replica.
//!
//! Sources:
//! Every local reading is on the raw monotonic clock
//! ([`RawInstant`]), the clock that stamps cluster time: NTP daemons slew
//! the wall and ordinary monotonic clocks, so their rate is not the rate
//! that matters.
//!
//! - **NTP** (`rsntp`): the server's time against the raw clock. rsntp
//!   measures the wall clock's offset; adding the raw clock's distance from
//!   the wall clock, read at the same moment, turns it into the raw clock's
//!   offset (less a constant taken at start), whose drift is the rate error
//!   of the clock that stamps cluster time, whatever the NTP daemon does to
//!   the wall clock.
//! - **Peers** (Cristian's method over the Raft port): `t1`, the peer's
//!   raw reading `T`, `t4`; offset `(t1 + t4)/2 − T`, standard deviation
//!   `rtt/2`. Samples with a round trip above the configured percentile of
//!   recent ones are dropped.
//!
//! **Absolute vs relative.** Only NTP measures a rate against true time. An
//! estimate from peers alone is the rate relative to the cluster's median
//! clock: it finds the odd clock out but cannot see a drift all nodes share.
//! Such an estimate is therefore *widened*: its σ is raised until
//! `|drift| + k·σ ≥ local_drift_bound_ppm` (the `[clock]` setting), so
//! peers can only ever widen a margin beyond the configured worst case,
//! never narrow it. With NTP, a usable estimate (enough samples, small σ)
//! may narrow `ρ_hi` below the configured bound, as the design intends.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftlock_proto::{ClockEstimate, Subject, TimeConfig};
use driftlock_sensors::clock::RawInstant;
use driftlock_sensors::drift::{DriftFilter, DriftFilterConfig, SampleOutcome};
use driftlock_state_machine::Command;
use openraft::type_config::async_runtime::WatchReceiver;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::server::NodeContext;

/// Round trips remembered per source for the percentile filter.
const RTT_WINDOW: usize = 64;
/// Samples before the percentile filter starts dropping.
const RTT_FILTER_MIN: usize = 10;
/// A gossiped estimate older than this many intervals is ignored.
const STALE_INTERVALS: u32 = 10;
/// The leader re-commits an unchanged estimate after this long.
const COMMIT_REFRESH: Duration = Duration::from_secs(30);
/// A drift change smaller than this (and within 2σ) is not worth a commit, ppm.
const COMMIT_STEP_PPM: f64 = 5.0;

/// One node's clock estimate as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipEntry {
    /// The node the estimate is of. A node gossips every fresh estimate it
    /// knows, but under TLS a receiver keeps only the sender's own: an
    /// estimate of node X is believed only from X (docs/security.md).
    pub node: u64,
    /// Its estimate (relative-only estimates already widened).
    pub estimate: ClockEstimate,
    /// How old the estimate is, ms, when sent.
    pub age_ms: u64,
}

/// Settings of the clock module.
#[derive(Clone, Debug)]
pub struct ClockSyncConfig {
    /// This node's id (`[node] id`): its own estimate is gossiped under it, and
    /// what peers say about it never replaces that estimate.
    pub node_id: u64,
    /// Time between sampling rounds (NTP and every peer) and gossip rounds
    /// (`[clock] interval_ms`); also the timeout of each exchange.
    pub interval: Duration,
    /// NTP servers, `host:port`.
    pub ntp_servers: Vec<String>,
    /// RTT percentile above which samples are dropped.
    pub rtt_percentile: u8,
    /// Random peers this node exchanges views with per interval
    /// (`[clock] gossip_fanout`).
    pub fanout: usize,
    /// Kalman filter tuning.
    pub filter: DriftFilterConfig,
    /// The configured worst-case rate error of this node's clock once
    /// measured, ppm (`[clock] local_drift_bound_ppm`): the least `ρ_hi`
    /// unless a usable NTP-anchored estimate proves less, and the floor a
    /// peers-only estimate is widened to.
    pub local_drift_bound_ppm: u64,
    /// `ρ_hi` while this node has no usable estimate of its own rate
    /// (`[clock] unmeasured_drift_bound_ppm`): after a start, and after a
    /// step restarted its filters.
    pub unmeasured_drift_bound_ppm: u64,
}

impl ClockSyncConfig {
    /// The `[node] id` and `[clock]` settings of a validated node
    /// configuration; the filter takes the two process noises from `[clock]`
    /// and its defaults for the rest.
    pub fn from_node(config: &NodeConfig) -> Self {
        ClockSyncConfig {
            node_id: config.node.id,
            interval: Duration::from_millis(config.clock.interval_ms),
            ntp_servers: config.clock.ntp_servers.clone(),
            rtt_percentile: config.clock.rtt_percentile,
            fanout: config.clock.gossip_fanout,
            filter: DriftFilterConfig {
                q_drift_ppm2_per_s: config.clock.q_drift_ppm2_per_s,
                q_offset_us2_per_s: config.clock.q_offset_us2_per_s,
                ..DriftFilterConfig::default()
            },
            local_drift_bound_ppm: config.clock.local_drift_bound_ppm,
            unmeasured_drift_bound_ppm: config.clock.unmeasured_drift_bound_ppm,
        }
    }
}

/// One measured source (an NTP server or a peer).
struct Track {
    filter: DriftFilter,
    rtts_us: VecDeque<u64>,
}

impl Track {
    fn new(cfg: &DriftFilterConfig) -> Self {
        Track {
            filter: DriftFilter::new(cfg.clone()),
            rtts_us: VecDeque::with_capacity(RTT_WINDOW),
        }
    }

    /// Records `rtt_us` and says whether a sample with it is kept.
    fn admit(&mut self, rtt_us: u64, percentile: u8) -> bool {
        let keep = if self.rtts_us.len() < RTT_FILTER_MIN {
            true
        } else {
            let mut sorted: Vec<u64> = self.rtts_us.iter().copied().collect();
            sorted.sort_unstable();
            let rank = (sorted.len() * usize::from(percentile)).div_ceil(100).saturating_sub(1);
            rtt_us <= sorted[rank.min(sorted.len() - 1)]
        };
        if self.rtts_us.len() == RTT_WINDOW {
            self.rtts_us.pop_front();
        }
        self.rtts_us.push_back(rtt_us);
        keep
    }
}

#[derive(Default)]
struct State {
    ntp: BTreeMap<String, Track>,
    peers: BTreeMap<u64, Track>,
    /// Freshest estimate per node (including this one) and when it was made.
    view: BTreeMap<u64, (ClockEstimate, Instant)>,
    /// The cluster's members as the sampler last saw them: the tables keep
    /// no other node (empty until the first sampling round).
    members: std::collections::BTreeSet<u64>,
    /// Whether this node's own estimate rests on NTP.
    anchored: bool,
    steps: u64,
}

/// The clock module of one node. Shared by the sampler task, the Raft RPC
/// server (probes and gossip) and the cluster clock.
pub struct ClockSync {
    cfg: ClockSyncConfig,
    /// The raw-clock origin of this module's readings ([`ClockSync::now_us`]).
    anchor: RawInstant,
    /// Wall clock minus raw clock at start, µs: removes the (arbitrary)
    /// distance between the two clocks from NTP offsets, leaving numbers
    /// the size of the true offset.
    wall_minus_raw_at_start_us: i128,
    rho_hi_ppm: Arc<AtomicU64>,
    state: Mutex<State>,
}

impl std::fmt::Debug for ClockSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClockSync")
            .field("node_id", &self.cfg.node_id)
            .field("rho_hi_ppm", &self.rho_hi_ppm())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Estimates combined by inverse-variance weighting: (drift ppm, σ ppm).
fn combine(parts: &[(f64, f64)]) -> Option<(f64, f64)> {
    let mut w_sum = 0.0;
    let mut wx = 0.0;
    for (x, sigma) in parts {
        let w = 1.0 / (sigma * sigma).max(1e-9);
        w_sum += w;
        wx += w * x;
    }
    (w_sum > 0.0).then(|| (wx / w_sum, (1.0 / w_sum).sqrt()))
}

/// Median of `values` (mean of the middle two for an even count).
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// Whether an estimate is usable under the replicated rules.
pub fn usable(est: &ClockEstimate, t: &TimeConfig) -> bool {
    est.samples >= t.min_estimate_samples && est.drift_sigma_ppb <= t.max_usable_drift_sigma_ppb
}

/// `|drift| + k·σ` in ppm, rounded up.
pub fn rho_of(est: &ClockEstimate, k_sigma: u32) -> u64 {
    let ppb = u128::from(est.drift_ppb.unsigned_abs()) + u128::from(est.drift_sigma_ppb) * u128::from(k_sigma);
    u64::try_from(ppb.div_ceil(1000)).unwrap_or(u64::MAX)
}

impl ClockSync {
    /// A clock module that has measured nothing yet: `ρ_hi` is the
    /// configured worst case.
    pub fn new(cfg: ClockSyncConfig) -> Self {
        // Nothing measured yet: stamp with the bound that covers an
        // unmeasured clock (docs/design.md "Clock drift").
        let rho = cfg.unmeasured_drift_bound_ppm.max(cfg.local_drift_bound_ppm);
        ClockSync {
            cfg,
            anchor: RawInstant::now(),
            wall_minus_raw_at_start_us: wall_minus_raw_us(),
            rho_hi_ppm: Arc::new(AtomicU64::new(rho)),
            state: Mutex::new(State::default()),
        }
    }

    /// The shared stamping bound, for [`ClusterClock`](crate::clock::ClusterClock).
    pub fn rho_hi_handle(&self) -> Arc<AtomicU64> {
        self.rho_hi_ppm.clone()
    }

    /// The current stamping bound, ppm.
    pub fn rho_hi_ppm(&self) -> u64 {
        self.rho_hi_ppm.load(Ordering::Relaxed)
    }

    /// This node's raw monotonic clock, µs since the module started.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.anchor.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn t_s(&self) -> f64 {
        self.anchor.elapsed().as_secs_f64()
    }

    /// This node's own estimate, if it has one.
    pub fn own(&self) -> Option<ClockEstimate> {
        lock(&self.state).view.get(&self.cfg.node_id).map(|(e, _)| e.clone())
    }

    /// Whether this node's estimate rests on NTP.
    pub fn anchored(&self) -> bool {
        lock(&self.state).anchored
    }

    /// Clock steps detected since start.
    pub fn steps(&self) -> u64 {
        lock(&self.state).steps
    }

    /// Every fresh estimate this node knows, with its age.
    pub fn view(&self) -> Vec<GossipEntry> {
        let now = Instant::now();
        let stale = self.cfg.interval * STALE_INTERVALS;
        lock(&self.state)
            .view
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) < stale)
            .map(|(node, (estimate, at))| GossipEntry {
                node: *node,
                estimate: estimate.clone(),
                age_ms: u64::try_from(now.saturating_duration_since(*at).as_millis()).unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// Folds in a peer's view: per node, the fresher estimate wins; nothing
    /// a peer says about this node replaces its own, and nothing about a
    /// node outside the membership is kept. With `only_about` (the sender
    /// authenticated by its certificate), only the sender's estimate of
    /// itself is taken: a node cannot speak for another.
    pub fn merge_view(&self, entries: Vec<GossipEntry>, only_about: Option<u64>) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        for e in entries {
            if e.node == self.cfg.node_id || only_about.is_some_and(|sender| sender != e.node) {
                continue;
            }
            if !st.members.contains(&e.node) {
                continue;
            }
            let Some(at) = now.checked_sub(Duration::from_millis(e.age_ms)) else {
                continue;
            };
            let fresher = st.view.get(&e.node).is_none_or(|(_, old)| at > *old);
            if fresher {
                st.view.insert(e.node, (e.estimate, at));
            }
        }
    }

    /// Sets the membership the tables are bounded by, dropping what they
    /// held about nodes outside it.
    pub fn set_members(&self, members: std::collections::BTreeSet<u64>) {
        let mut st = lock(&self.state);
        let own = self.cfg.node_id;
        st.view.retain(|node, _| *node == own || members.contains(node));
        st.peers.retain(|node, _| members.contains(node));
        st.members = members;
    }

    fn note_outcome(st: &mut State, source: &str, outcome: &SampleOutcome) {
        if let SampleOutcome::StepDetected { step_us } = outcome {
            st.steps += 1;
            tracing::warn!(source, step_us, "clock step detected: the estimate restarts");
        }
    }

    /// Records one peer probe: `t1_us` and `t4_us` on this clock around the
    /// call, `peer_us` the peer's reading.
    pub fn record_peer(&self, peer: u64, t1_us: u64, peer_us: u64, t4_us: u64) {
        let rtt_us = t4_us.saturating_sub(t1_us);
        let offset_us = (t1_us as f64 + t4_us as f64) / 2.0 - peer_us as f64;
        let t_s = t4_us as f64 / 1e6;
        let mut st = lock(&self.state);
        let track = st.peers.entry(peer).or_insert_with(|| Track::new(&self.cfg.filter));
        if !track.admit(rtt_us, self.cfg.rtt_percentile) {
            return;
        }
        let outcome = track.filter.update(t_s, offset_us, rtt_us as f64 / 2.0);
        Self::note_outcome(&mut st, "peer", &outcome);
    }

    /// Records one NTP exchange: `offset_us` = local wall clock minus the
    /// server's, `rtt_us` its round trip.
    pub fn record_ntp(&self, server: &str, offset_us: f64, rtt_us: u64) {
        let t_s = self.t_s();
        let mut st = lock(&self.state);
        let track = st
            .ntp
            .entry(server.to_owned())
            .or_insert_with(|| Track::new(&self.cfg.filter));
        if !track.admit(rtt_us, self.cfg.rtt_percentile) {
            return;
        }
        let outcome = track.filter.update(t_s, offset_us, rtt_us as f64 / 2.0);
        Self::note_outcome(&mut st, "ntp", &outcome);
    }

    /// Recomputes this node's estimate and `ρ_hi` under the replicated time
    /// rules `t`.
    pub fn recompute(&self, t: &TimeConfig) {
        let min_samples = t.min_estimate_samples;
        let mut st = lock(&self.state);
        let ntp_parts: Vec<(f64, f64)> = st
            .ntp
            .values()
            .filter(|tr| tr.filter.samples() >= min_samples)
            .map(|tr| (tr.filter.drift_ppm(), tr.filter.drift_sigma_ppm()))
            .collect();
        let samples = st
            .ntp
            .values()
            .chain(st.peers.values())
            .map(|tr| tr.filter.samples())
            .max()
            .unwrap_or(0);
        // `measured`: the stamping bound this node's own measurements
        // support, if they support one — a usable NTP-anchored estimate, or
        // peers' relative rates with enough samples and a small σ (judged
        // before the widening below, which makes a peers-only estimate look
        // uncertain on purpose; such a bound is never below the configured
        // one).
        let ntp = combine(&ntp_parts).map(|(drift, sigma)| {
            let offset = st
                .ntp
                .values()
                .filter(|tr| tr.filter.samples() >= min_samples)
                .map(|tr| (tr.filter.offset_us(), tr.filter.offset_sigma_us()))
                .collect::<Vec<_>>();
            let (offset_us, offset_sigma_us) = combine(&offset).unwrap_or((0.0, 0.0));
            to_estimate(drift, sigma, offset_us, offset_sigma_us, samples)
        });
        // Relative to the cluster's median clock: this node counts as 0.
        let peers_parts: Vec<(f64, f64)> = st
            .peers
            .values()
            .filter(|tr| tr.filter.samples() >= min_samples)
            .map(|tr| (tr.filter.drift_ppm(), tr.filter.drift_sigma_ppm()))
            .collect();
        let peers = (!peers_parts.is_empty()).then(|| {
            let mut rel: Vec<f64> = peers_parts.iter().map(|(d, _)| *d).collect();
            rel.push(0.0);
            let drift = median(&mut rel).unwrap_or(0.0);
            let sigma = peers_parts.iter().map(|(_, s)| *s).fold(0.0, f64::max);
            // Widen: relative measurements cannot narrow the margin.
            let k = f64::from(t.drift_k_sigma.max(1));
            let floor = (self.cfg.local_drift_bound_ppm as f64 - drift.abs()).max(0.0) / k;
            let measured = (sigma * 1_000.0 <= t.max_usable_drift_sigma_ppb as f64).then(|| {
                let raw = rho_of(&to_estimate(drift, sigma, 0.0, 0.0, samples), t.drift_k_sigma);
                raw.max(self.cfg.local_drift_bound_ppm)
            });
            (to_estimate(drift, sigma.max(floor), 0.0, 0.0, samples), measured)
        });
        // What this node reports (NTP when it has any) and the stamping bound
        // its measurements support, if they support one: a usable
        // NTP-anchored estimate, else peers' relative rates with enough
        // samples and a small σ (judged before the widening, which makes a
        // peers-only estimate look uncertain on purpose; its bound is never
        // below the configured one).
        let ntp_measured = ntp
            .as_ref()
            .filter(|e| usable(e, t))
            .map(|e| rho_of(e, t.drift_k_sigma).max(1));
        let anchored = ntp.is_some();
        let measured = ntp_measured.or_else(|| peers.as_ref().and_then(|(_, m)| *m));
        let estimate = ntp.or_else(|| peers.map(|(e, _)| e));
        st.anchored = anchored;
        // Not measured (too few samples since the start or the last step):
        // assume the worst this clock may be.
        let rho = measured.unwrap_or_else(|| self.cfg.unmeasured_drift_bound_ppm.max(self.cfg.local_drift_bound_ppm));
        if let Some(e) = estimate {
            st.view.insert(self.cfg.node_id, (e, Instant::now()));
        }
        drop(st);
        debug_assert!(rho > 0 && rho < 1_000_000);
        self.rho_hi_ppm.store(rho.clamp(1, 999_999), Ordering::Relaxed);
    }
}

fn to_estimate(drift_ppm: f64, sigma_ppm: f64, offset_us: f64, offset_sigma_us: f64, samples: u32) -> ClockEstimate {
    let clamp_i64 = |x: f64| x.clamp(i64::MIN as f64, i64::MAX as f64).round() as i64;
    let clamp_u64 = |x: f64| x.clamp(0.0, u64::MAX as f64).ceil() as u64;
    ClockEstimate {
        offset_us: clamp_i64(offset_us),
        offset_sigma_us: clamp_u64(offset_sigma_us),
        drift_ppb: clamp_i64(drift_ppm * 1000.0),
        drift_sigma_ppb: clamp_u64(sigma_ppm * 1000.0),
        samples,
    }
}

/// Whether the leader should commit `new` for a node whose committed
/// estimate is `old` (committed by this leader at `at`, if it did).
fn worth_committing(old: Option<&ClockEstimate>, at: Option<Instant>, new: &ClockEstimate, t: &TimeConfig) -> bool {
    let Some(old) = old else { return true };
    if at.is_none_or(|at| at.elapsed() >= COMMIT_REFRESH) {
        return true;
    }
    if usable(old, t) != usable(new, t) {
        return true;
    }
    let d_old = old.drift_ppb as f64 / 1000.0;
    let d_new = new.drift_ppb as f64 / 1000.0;
    let sigma = new.drift_sigma_ppb as f64 / 1000.0;
    let margin_change = rho_of(old, t.drift_k_sigma).abs_diff(rho_of(new, t.drift_k_sigma));
    (d_new - d_old).abs() > COMMIT_STEP_PPM.max(2.0 * sigma) || margin_change as f64 > COMMIT_STEP_PPM
}

/// Samples, gossips and (on the leader) commits, every interval, for the
/// life of the node.
pub async fn run(ctx: Arc<NodeContext>, clock: Arc<ClockSync>) {
    let mut ticker = tokio::time::interval(clock.cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peers: BTreeMap<u64, (String, crate::network::RaftRpcClient)> = BTreeMap::new();
    let ntp = rsntp::AsyncSntpClient::with_config(rsntp::Config::default().timeout(clock.cfg.interval));
    let mut committed_at: BTreeMap<u64, Instant> = BTreeMap::new();
    loop {
        ticker.tick().await;
        // Peers from the membership (voters and learners).
        let members: Vec<(u64, String)> = {
            let m = ctx.raft.metrics().borrow_watched().clone();
            let membership = m.membership_config.membership();
            membership
                .nodes()
                .filter(|(id, _)| **id != clock.cfg.node_id)
                .map(|(id, n)| (*id, n.raft_addr.clone()))
                .collect()
        };
        clock.set_members(members.iter().map(|(id, _)| *id).collect());
        peers.retain(|id, (addr, _)| members.iter().any(|(i, a)| i == id && a == addr));
        let timeout = clock.cfg.interval;
        for (id, addr) in &members {
            if !peers.contains_key(id) {
                match crate::network::connect(*id, addr, timeout, &ctx.security).await {
                    Ok(c) => {
                        peers.insert(*id, (addr.clone(), c));
                    }
                    Err(e) => {
                        tracing::debug!(peer = id, error = %e, "clock probe: no connection");
                        continue;
                    }
                }
            }
            let Some((_, client)) = peers.get(id) else { continue };
            let mut rpc_ctx = tarpc::context::current();
            rpc_ctx.deadline = Instant::now() + timeout;
            let t1 = clock.now_us();
            match client
                .clock_probe(rpc_ctx)
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
            {
                Ok(peer_us) => {
                    let t4 = clock.now_us();
                    clock.record_peer(*id, t1, peer_us, t4);
                    ctx.health.record_peer_rtt_us(t4.saturating_sub(t1));
                }
                Err(e) => {
                    tracing::debug!(peer = id, error = %e, "clock probe failed");
                    peers.remove(id);
                }
            }
        }
        for server in &clock.cfg.ntp_servers {
            match ntp.synchronize(server.as_str()).await {
                Ok(r) => {
                    // rsntp's offset is server − wall clock; ours is raw
                    // clock − server: wall − server, less (wall − raw) now,
                    // plus the same at start to keep the numbers small.
                    let wall_offset_us = -r.clock_offset().as_secs_f64() * 1e6;
                    let raw_shift_us = (clock.wall_minus_raw_at_start_us - wall_minus_raw_us()) as f64;
                    let offset_us = wall_offset_us + raw_shift_us;
                    let rtt_us = (r.round_trip_delay().as_secs_f64().max(0.0) * 1e6) as u64;
                    clock.record_ntp(server, offset_us, rtt_us);
                }
                Err(e) => tracing::debug!(%server, error = %e, "NTP query failed"),
            }
        }
        let time_cfg = ctx.state.with_state(|sm| sm.config().time.clone());
        clock.recompute(&time_cfg);

        // Gossip to `fanout` random peers (push-pull).
        let targets: Vec<u64> = {
            let ids: Vec<u64> = peers.keys().copied().collect();
            let mut rng = rand::rng();
            ids.choose_multiple(&mut rng, clock.cfg.fanout).copied().collect()
        };
        for id in targets {
            let Some((_, client)) = peers.get(&id) else { continue };
            let mut rpc_ctx = tarpc::context::current();
            rpc_ctx.deadline = Instant::now() + timeout;
            // The answer comes from node `id` (its certificate was verified
            // against `id`'s name when the connection was made).
            let only_about = matches!(ctx.security, crate::tls::NodeSecurity::Tls(_)).then_some(id);
            match client
                .clock_gossip(rpc_ctx, clock.view())
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
            {
                Ok(view) => clock.merge_view(view, only_about),
                Err(e) => tracing::debug!(peer = id, error = %e, "clock gossip failed"),
            }
        }
        export(&ctx, &clock);

        if ctx.raft.is_leader() {
            commit_reports(&ctx, &clock, &time_cfg, &mut committed_at).await;
        } else {
            committed_at.clear();
        }
    }
}

/// Exports every known node's estimate as metrics.
fn export(ctx: &NodeContext, clock: &ClockSync) {
    let m = &ctx.metrics.clock;
    m.rho_hi_ppm.set(i64::try_from(clock.rho_hi_ppm()).unwrap_or(i64::MAX));
    m.steps.set(i64::try_from(clock.steps()).unwrap_or(i64::MAX));
    for e in clock.view() {
        let label = crate::metrics::NodeLabel {
            node: e.node.to_string(),
        };
        m.drift_ppm
            .get_or_create(&label)
            .set(e.estimate.drift_ppb as f64 / 1000.0);
        m.drift_sigma_ppm
            .get_or_create(&label)
            .set(e.estimate.drift_sigma_ppb as f64 / 1000.0);
        m.uncertainty_us
            .get_or_create(&label)
            .set(e.estimate.offset_sigma_us as f64);
    }
}

/// On the leader: commits the estimates that changed meaningfully.
async fn commit_reports(
    ctx: &NodeContext,
    clock: &ClockSync,
    t: &TimeConfig,
    committed_at: &mut BTreeMap<u64, Instant>,
) {
    for entry in clock.view() {
        let due = ctx.state.with_state(|sm| {
            worth_committing(
                sm.node_clock(entry.node),
                committed_at.get(&entry.node).copied(),
                &entry.estimate,
                t,
            )
        });
        if !due {
            continue;
        }
        let r = ctx
            .propose(Command::ClockReport {
                subject: Subject::Node(entry.node),
                estimate: entry.estimate.clone(),
            })
            .await;
        match r {
            Ok(_) => {
                committed_at.insert(entry.node, Instant::now());
                let drift_ppm = entry.estimate.drift_ppb as f64 / 1000.0;
                if drift_ppm.abs() > t.alert_drift_ppm as f64 {
                    tracing::warn!(
                        node = entry.node,
                        drift_ppm,
                        "node clock drift above the alert threshold"
                    );
                }
            }
            Err(e) => {
                tracing::debug!(node = entry.node, error = %e, "clock report not committed");
                return;
            }
        }
    }
}

/// Wall clock minus raw clock, µs, read back to back.
fn wall_minus_raw_us() -> i128 {
    let raw_us = i128::from(RawInstant::now().as_micros());
    let wall_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_micros()).unwrap_or(i128::MAX));
    wall_us - raw_us
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(local_drift_bound_ppm: u64) -> ClockSyncConfig {
        ClockSyncConfig {
            node_id: 1,
            interval: Duration::from_secs(1),
            ntp_servers: Vec::new(),
            rtt_percentile: 90,
            fanout: 2,
            filter: DriftFilterConfig::default(),
            local_drift_bound_ppm,
            unmeasured_drift_bound_ppm: 100_000,
        }
    }

    /// Feeds a peer whose clock runs `rel_ppm` slower than ours.
    fn feed_peer(c: &ClockSync, peer: u64, rel_ppm: f64, n: u32) {
        for i in 1..=n {
            let t1 = u64::from(i) * 1_000_000;
            let t4 = t1 + 200;
            let mid = (t1 + t4) as f64 / 2.0;
            let peer_us = (mid * (1.0 - rel_ppm / 1e6)) as u64 + 5_000_000;
            c.record_peer(peer, t1, peer_us, t4);
        }
    }

    #[test]
    fn peers_alone_find_the_odd_clock_but_never_narrow_the_margin() {
        let t = TimeConfig::default();
        // We run 2000 ppm fast against two peers that agree with each other.
        let c = ClockSync::new(cfg(500));
        feed_peer(&c, 2, 2_000.0, 40);
        feed_peer(&c, 3, 2_000.0, 40);
        c.recompute(&t);
        let own = c.own().expect("estimate");
        assert!((own.drift_ppb - 2_000_000).abs() < 50_000, "{own:?}");
        assert!(!c.anchored());
        assert!(c.rho_hi_ppm() >= 2_000, "rho {}", c.rho_hi_ppm());

        // A good clock among good peers keeps the configured worst case.
        let good = ClockSync::new(cfg(500));
        feed_peer(&good, 2, 0.0, 40);
        feed_peer(&good, 3, -2_000.0, 40);
        good.recompute(&t);
        let own = good.own().expect("estimate");
        assert!(own.drift_ppb.abs() < 50_000, "median ignores the odd one: {own:?}");
        assert_eq!(good.rho_hi_ppm(), 500);
        assert!(rho_of(&own, t.drift_k_sigma) >= 500, "widened: {own:?}");
    }

    #[test]
    fn an_unmeasured_clock_stamps_with_the_unmeasured_bound_until_its_estimate_is_usable() {
        let t = TimeConfig::default();
        let c = ClockSync::new(cfg(500));
        assert_eq!(c.rho_hi_ppm(), 100_000, "nothing measured at start");
        // Too few samples for a usable estimate: still unmeasured.
        feed_peer(&c, 2, 0.0, t.min_estimate_samples - 2);
        c.recompute(&t);
        assert_eq!(c.rho_hi_ppm(), 100_000, "not enough samples yet");
        // Enough: the measured (here: configured) bound applies.
        let measured = ClockSync::new(cfg(500));
        feed_peer(&measured, 2, 0.0, 40);
        measured.recompute(&t);
        assert_eq!(measured.rho_hi_ppm(), 500);
    }

    #[test]
    fn ntp_anchors_the_estimate_and_may_narrow_the_margin() {
        let t = TimeConfig::default();
        let c = ClockSync::new(cfg(500));
        // Wall clock 10 ppm fast: offset grows 10 µs per second. The filter
        // uses the module's own elapsed time, so feed its tracks directly.
        {
            let mut st = lock(&c.state);
            let tr = st.ntp.entry("ntp".into()).or_insert_with(|| Track::new(&c.cfg.filter));
            for i in 0..60 {
                tr.filter.update(f64::from(i), 1_000.0 + 10.0 * f64::from(i), 50.0);
            }
        }
        c.recompute(&t);
        assert!(c.anchored());
        let own = c.own().expect("estimate");
        assert!((own.drift_ppb - 10_000).abs() < 5_000, "{own:?}");
        assert!(c.rho_hi_ppm() < 500, "rho {}", c.rho_hi_ppm());
        assert!(c.rho_hi_ppm() >= 10);
    }

    #[test]
    fn slow_round_trips_are_dropped() {
        let mut tr = Track::new(&DriftFilterConfig::default());
        for _ in 0..20 {
            assert!(tr.admit(100, 90));
        }
        assert!(!tr.admit(10_000, 90), "far above the 90th percentile");
        assert!(tr.admit(100, 90));
    }

    fn est(drift_ppb: i64) -> ClockEstimate {
        ClockEstimate {
            offset_us: 0,
            offset_sigma_us: 1,
            drift_ppb,
            drift_sigma_ppb: 1,
            samples: 9,
        }
    }

    fn entry(node: u64, drift_ppb: i64, age_ms: u64) -> GossipEntry {
        GossipEntry {
            node,
            estimate: est(drift_ppb),
            age_ms,
        }
    }

    #[test]
    fn gossip_keeps_the_freshest_estimate_and_never_overrides_our_own() {
        let c = ClockSync::new(cfg(500));
        c.set_members([1, 2, 3].into());
        c.merge_view(vec![entry(2, 1, 100)], None);
        c.merge_view(vec![entry(2, 2, 5_000)], None);
        c.merge_view(vec![entry(1, 3, 0)], None);
        let view = c.view();
        assert_eq!(view.len(), 1, "{view:?}");
        assert_eq!(view[0].estimate.drift_ppb, 1, "older news lost");
    }

    #[test]
    fn an_authenticated_sender_speaks_only_for_itself_and_only_members_count() {
        let c = ClockSync::new(cfg(500));
        c.set_members([1, 2, 3].into());
        // Node 2 (authenticated) claims estimates of 2, 3 and of a node that
        // is no member: only its own is kept.
        c.merge_view(vec![entry(2, 20, 0), entry(3, 30, 0), entry(99, 990, 0)], Some(2));
        let nodes: Vec<u64> = c.view().iter().map(|e| e.node).collect();
        assert_eq!(nodes, vec![2]);
        // Unauthenticated (insecure) gossip is transitive, but still bounded
        // by the membership.
        c.merge_view(vec![entry(3, 30, 0), entry(99, 990, 0)], None);
        let nodes: Vec<u64> = c.view().iter().map(|e| e.node).collect();
        assert_eq!(nodes, vec![2, 3]);
        // A removed member's estimate is dropped with it.
        c.set_members([1, 2].into());
        let nodes: Vec<u64> = c.view().iter().map(|e| e.node).collect();
        assert_eq!(nodes, vec![2]);
    }

    #[test]
    fn commits_only_meaningful_changes() {
        let t = TimeConfig::default();
        let est = |d_ppb, s_ppb| ClockEstimate {
            offset_us: 0,
            offset_sigma_us: 1,
            drift_ppb: d_ppb,
            drift_sigma_ppb: s_ppb,
            samples: 30,
        };
        let now = Instant::now();
        assert!(worth_committing(None, None, &est(0, 1_000), &t));
        assert!(!worth_committing(
            Some(&est(0, 1_000)),
            Some(now),
            &est(1_000, 1_000),
            &t
        ));
        assert!(worth_committing(
            Some(&est(0, 1_000)),
            Some(now),
            &est(50_000, 1_000),
            &t
        ));
        assert!(worth_committing(Some(&est(0, 1_000)), None, &est(0, 1_000), &t));
    }

    #[test]
    fn combining_weights_by_inverse_variance() {
        let (x, s) = combine(&[(10.0, 1.0), (20.0, 1.0)]).expect("some");
        assert!((x - 15.0).abs() < 1e-9);
        assert!((s - (0.5f64).sqrt()).abs() < 1e-9);
        let (x, _) = combine(&[(10.0, 0.1), (1_000.0, 100.0)]).expect("some");
        assert!((x - 10.0).abs() < 0.01);
    }
}
