//! Predictive failure analysis on the leader (docs/design.md "Predictive failure
//! analysis").
//!
//! - [`profiler`]: each session's request profile in fixed-size rolling
//!   windows (bounded memory, [`profiler::PROFILE_BYTES`] per session).
//! - [`phi`]: phi-accrual over keepalive arrivals.
//! - [`forest`]: an isolation forest over the profiles' feature vectors,
//!   retrained periodically on recent vectors of sessions that looked
//!   healthy when sampled.
//! - [`contention`]: per-lock request-rate estimates and hot locks.
//!
//! Every `interval_ms` the leader scores each profiled session:
//! `score = (w_phi · min(phi / phi_threshold, 1) + w_forest · excess(forest)) / (w_phi + w_forest)`,
//! in permille (the forest term counts only once a model is trained). A
//! score at or above `suspect_threshold_permille` commits
//! `Suspect{session, score, probe_timeout}`. The state machine then shortens
//! the session's next grants (the `KeptAlive` lease decision shows the
//! suspicion factor), and the `Probe` event reaches the client library on
//! its event stream, which answers on its own. The probe deadline is the
//! configured timeout but never earlier than the end of the validity the
//! session already holds. If no answer is committed
//! before the probe deadline, the state machine's probe timer revokes the
//! session (a committed, deterministic `Revoke` with reason "no answer to
//! renewal probe"); its locks then free under lock-delay, never before the
//! validity already granted has ended (docs/design.md "Time", rule 6).
//!
//! Nothing here decides safety: a wrong suspicion costs a shorter lease and
//! one probe round trip; a wrong revocation of a live client still cannot
//! free its locks before its granted validity is over.

pub mod contention;
pub mod forest;
pub mod phi;
pub mod profiler;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use driftlock_proto::HotLock;
use driftlock_proto::{EndCause, Event, SessionId, SessionOp};
use driftlock_state_machine::Command;

use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::server::NodeContext;
use contention::LockRates;
use forest::AnomalyForest;
use profiler::{RequestKind, SessionProfile};

/// Hot locks reported in status and metrics at most.
pub const MAX_HOT_LOCKS: usize = 10;
/// How often each session's feature vector is offered to the training ring.
const TRAINING_SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Profiles of sessions silent this long are dropped (their end event was
/// missed, or they belong to another leader's term).
const PROFILE_IDLE_LIMIT: Duration = Duration::from_secs(600);

/// Settings of the predictor, from the node configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictConfig {
    /// Whether the leader suspects sessions at all (profiling and hot-lock
    /// estimates run either way).
    pub enabled: bool,
    /// How often the leader scores every profiled session
    /// (`[predict] interval_ms`).
    pub interval: Duration,
    /// Phi at which the phi term of the score is full.
    pub phi_threshold: f64,
    /// Keepalive gaps needed before phi is trusted.
    pub min_keepalives: usize,
    /// Floor of the keepalive-gap standard deviation, ms.
    pub min_stddev_ms: f64,
    /// Weight of the phi term, permille.
    pub phi_weight_permille: u32,
    /// Weight of the isolation-forest term, permille.
    pub forest_weight_permille: u32,
    /// Score at or above which a session is suspected, permille.
    pub suspect_threshold_permille: u32,
    /// Time a suspected session has to answer its probe, µs.
    pub probe_timeout_us: u64,
    /// How often the forest is retrained.
    pub retrain_interval: Duration,
    /// Request rate at or above which a lock is hot, per second.
    pub hot_lock_rate_per_s: f64,
}

impl PredictConfig {
    /// The predictor's settings from a validated node configuration.
    pub fn from_node(config: &NodeConfig) -> Self {
        let c = &config.predict;
        PredictConfig {
            enabled: c.enabled,
            interval: Duration::from_millis(c.interval_ms),
            phi_threshold: c.phi_threshold,
            min_keepalives: c.min_keepalives as usize,
            min_stddev_ms: c.min_stddev_ms as f64,
            phi_weight_permille: c.phi_weight_permille,
            forest_weight_permille: c.forest_weight_permille,
            suspect_threshold_permille: c.suspect_threshold_permille,
            probe_timeout_us: c.probe_timeout_ms.saturating_mul(1000),
            retrain_interval: Duration::from_millis(c.retrain_ms),
            hot_lock_rate_per_s: c.hot_lock_rate_per_s,
        }
    }
}

/// The detectors' outputs for one session at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// Phi-accrual value, `None` before enough keepalives.
    pub phi: Option<f64>,
    /// Isolation-forest score, `None` before the first training.
    pub forest: Option<f64>,
    /// Combined score, permille (see [`combine`]); at or above
    /// `suspect_threshold_permille` the session is suspected.
    pub combined_permille: u32,
}

/// Combines the detectors' outputs into one score, permille. Without a phi
/// value (too few keepalives) the score is 0: the forest alone never
/// suspects a session.
pub fn combine(phi: Option<f64>, forest: Option<f64>, cfg: &PredictConfig) -> u32 {
    let Some(phi) = phi else { return 0 };
    let phi_term = (phi / cfg.phi_threshold.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0);
    let w_phi = f64::from(cfg.phi_weight_permille);
    let (sum, weights) = match forest {
        Some(score) => {
            let w_forest = f64::from(cfg.forest_weight_permille);
            (
                w_phi * phi_term + w_forest * AnomalyForest::excess(score),
                w_phi + w_forest,
            )
        }
        None => (w_phi * phi_term, w_phi),
    };
    if weights <= 0.0 {
        return 0;
    }
    let permille = (1000.0 * sum / weights).round().clamp(0.0, 1000.0) as u32;
    debug_assert!(permille <= 1000);
    permille
}

/// What the predictor decides about a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    Keep,
    /// Commit `Suspect` with this score.
    Suspect {
        /// The combined score that reached the threshold, committed with the
        /// `Suspect`.
        score_permille: u32,
    },
}

/// The decision for a session with `score_permille`, given whether a probe
/// is already pending for it.
pub fn decide(score_permille: u32, probe_pending: bool, cfg: &PredictConfig) -> Decision {
    if !cfg.enabled || probe_pending || score_permille < cfg.suspect_threshold_permille {
        Decision::Keep
    } else {
        Decision::Suspect { score_permille }
    }
}

struct Tracked {
    profile: SessionProfile,
    /// When a `Suspect` was committed and its probe is not yet answered.
    suspected_at: Option<Instant>,
    /// Local instant of that probe's deadline, once known.
    probe_until: Option<Instant>,
    last_training_sample: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<SessionId, Tracked>,
    forest: AnomalyForest,
    last_train: Option<Instant>,
    locks: LockRates,
}

/// A suspicion the leader should commit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Suspicion {
    /// The suspected session, which the leader names in the `Suspect` command
    /// it commits.
    pub session: SessionId,
    /// The scores behind it.
    pub scores: Scores,
}

/// The leader's predictor: profiles, detectors and lock rates.
pub struct Predictor {
    cfg: PredictConfig,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
}

/// Times one request for the profile; created by [`Predictor::track`],
/// records the service time when dropped.
pub struct RequestTrack<'a> {
    predictor: &'a Predictor,
    session: SessionId,
    started: Instant,
}

impl Drop for RequestTrack<'_> {
    fn drop(&mut self) {
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        if let Some(t) = self.predictor.lock().sessions.get_mut(&self.session) {
            t.profile.served(ms);
        }
    }
}

fn kind_of(op: &SessionOp) -> RequestKind {
    match op {
        SessionOp::Keepalive { .. } => RequestKind::Keepalive,
        SessionOp::Acquire { .. } => RequestKind::Acquire,
        SessionOp::Release { .. } => RequestKind::Release,
        SessionOp::KvPut { .. } | SessionOp::KvCas { .. } | SessionOp::KvDelete { .. } => RequestKind::KvWrite,
        SessionOp::Campaign { .. }
        | SessionOp::Resign { .. }
        | SessionOp::Proclaim { .. }
        | SessionOp::Relinquish { .. } => RequestKind::Election,
        SessionOp::ProbeAnswer => RequestKind::ProbeAnswer,
        SessionOp::Close | SessionOp::HandoverState { .. } | SessionOp::HandoverAck { .. } => RequestKind::Other,
    }
}

impl Predictor {
    /// A predictor with no profiles yet.
    pub fn new(cfg: PredictConfig, metrics: Arc<Metrics>) -> Self {
        Predictor {
            cfg,
            metrics,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &PredictConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The request hook: records a session request's arrival (kind, lock
    /// name, client-reported RTT) and, when the returned guard drops, its
    /// service time.
    pub fn track(&self, session: SessionId, op: &SessionOp) -> RequestTrack<'_> {
        let now = Instant::now();
        let kind = kind_of(op);
        let client_rtt_us = match op {
            SessionOp::Keepalive { health: Some(h), .. } => Some(h.rtt_mean_us),
            _ => None,
        };
        let mut inner = self.lock();
        if let SessionOp::Acquire { name, .. } = op {
            inner.locks.record(name, now);
        }
        let t = inner.sessions.entry(session).or_insert_with(|| Tracked {
            profile: SessionProfile::new(now),
            suspected_at: None,
            probe_until: None,
            last_training_sample: None,
        });
        t.profile.arrival(kind, now, client_rtt_us);
        if kind == RequestKind::ProbeAnswer {
            t.probe_until = None;
            if let Some(at) = t.suspected_at.take() {
                let answered_after_ms = at.elapsed().as_millis() as u64;
                tracing::info!(session, answered_after_ms, "renewal probe answered; suspicion cleared");
                self.metrics.predict.probe_answers.inc();
            }
        }
        drop(inner);
        RequestTrack {
            predictor: self,
            session,
            started: now,
        }
    }

    /// Follows applied events: forgets ended sessions, counts revocations.
    pub fn on_events<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        let mut inner = None;
        for e in events {
            if let Event::SessionEnded { session, cause } = e {
                let inner = inner.get_or_insert_with(|| self.lock());
                let tracked = inner.sessions.remove(session);
                if let EndCause::Revoked { reason } = cause {
                    let suspected_ms = tracked
                        .as_ref()
                        .and_then(|t| t.suspected_at)
                        .map(|at| at.elapsed().as_millis() as u64);
                    tracing::info!(session, %reason, ?suspected_ms, "session revoked");
                    self.metrics.predict.revocations.inc();
                }
            }
        }
    }

    /// Scores every profiled session at `now`, feeds and retrains the
    /// forest when due, refreshes the metrics, and returns the suspicions
    /// to commit (marking them pending).
    pub fn evaluate(&self, now: Instant) -> Vec<Suspicion> {
        let cfg = &self.cfg;
        let mut inner = self.lock();
        let Inner {
            sessions,
            forest,
            last_train,
            locks,
        } = &mut *inner;
        sessions.retain(|_, t| now.saturating_duration_since(t.profile.last_request) < PROFILE_IDLE_LIMIT);
        let mut out = Vec::new();
        let mut max_score = 0u32;
        let mut max_phi = 0f64;
        for (&session, t) in sessions.iter_mut() {
            let p = &t.profile;
            let since_ka_ms = p
                .last_keepalive
                .map_or(0.0, |k| now.saturating_duration_since(k).as_secs_f64() * 1e3);
            let phi = phi::phi(&p.keepalive_gap_ms, since_ka_ms, cfg.min_keepalives, cfg.min_stddev_ms);
            let features = p.features(now);
            let forest_score = forest.score(&features);
            let combined_permille = combine(phi, forest_score, cfg);
            max_score = max_score.max(combined_permille);
            max_phi = max_phi.max(phi.unwrap_or(0.0));
            // Train on sessions that look healthy now (phi below half the
            // threshold), so the model learns what ordinary looks like.
            let due = t
                .last_training_sample
                .is_none_or(|at| now.saturating_duration_since(at) >= TRAINING_SAMPLE_EVERY);
            if due && phi.is_some_and(|v| v < cfg.phi_threshold / 2.0) {
                forest.remember(features);
                t.last_training_sample = Some(now);
            }
            let scores = Scores {
                phi,
                forest: forest_score,
                combined_permille,
            };
            if let Decision::Suspect { .. } = decide(combined_permille, t.suspected_at.is_some(), cfg) {
                t.suspected_at = Some(now);
                out.push(Suspicion { session, scores });
            } else if let Some(at) = t.suspected_at {
                // The probe's deadline passed and the session is still here
                // (it kept alive without answering, or the Suspect never
                // committed): allow a new decision.
                let until = t
                    .probe_until
                    .unwrap_or(at + Duration::from_micros(cfg.probe_timeout_us).saturating_mul(2));
                if now > until {
                    t.suspected_at = None;
                    t.probe_until = None;
                }
            }
        }
        if last_train.is_none_or(|at| now.saturating_duration_since(at) >= cfg.retrain_interval) {
            *last_train = Some(now);
            if forest.train() {
                tracing::debug!(vectors = forest.training_len(), "isolation forest retrained");
                self.metrics.predict.forest_trainings.inc();
            }
        }
        locks.prune(now, 0.01);
        let hot = locks.hot(now, cfg.hot_lock_rate_per_s, MAX_HOT_LOCKS);
        let m = &self.metrics.predict;
        m.tracked_sessions.set(sessions.len() as i64);
        m.max_score_permille.set(i64::from(max_score));
        m.max_phi.set(max_phi);
        m.forest_training_vectors.set(forest.training_len() as i64);
        m.set_hot_locks(&hot);
        out
    }

    /// Forgets that a suspicion is pending (its `Suspect` did not commit).
    pub fn unsuspect(&self, session: SessionId) {
        if let Some(t) = self.lock().sessions.get_mut(&session) {
            t.suspected_at = None;
            t.probe_until = None;
        }
    }

    /// Records when a committed suspicion's probe runs out (plus a second
    /// of slack), so the session is not suspected again before.
    pub fn probe_sent(&self, session: SessionId, probe_timeout_us: u64) {
        if let Some(t) = self.lock().sessions.get_mut(&session) {
            t.probe_until = Some(Instant::now() + Duration::from_micros(probe_timeout_us) + Duration::from_secs(1));
        }
    }

    /// Drops all profiles (this node is no longer the leader).
    pub fn clear(&self) {
        let mut inner = self.lock();
        if !inner.sessions.is_empty() {
            inner.sessions.clear();
        }
    }

    /// Hot locks now, hottest first.
    pub fn hot_locks(&self) -> Vec<HotLock> {
        let now = Instant::now();
        self.lock()
            .locks
            .hot(now, self.cfg.hot_lock_rate_per_s, MAX_HOT_LOCKS)
            .into_iter()
            .map(|(name, r)| HotLock {
                name,
                rate_milli_per_s: (r * 1000.0).round() as u64,
            })
            .collect()
    }
}

/// On the leader, scores sessions every interval and commits `Suspect` for
/// those above the threshold. Runs until aborted.
pub async fn run(ctx: Arc<NodeContext>) {
    let predictor = ctx.predict.clone();
    let cfg = predictor.config().clone();
    let mut timer = tokio::time::interval(cfg.interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        if !ctx.raft.is_leader() {
            predictor.clear();
            continue;
        }
        for s in predictor.evaluate(Instant::now()) {
            let score_permille = s.scores.combined_permille;
            let probe_timeout_us = probe_timeout_for(&ctx, s.session, cfg.probe_timeout_us);
            let command = Command::Suspect {
                session: s.session,
                score_permille,
                probe_timeout_us,
            };
            match ctx.propose(command).await {
                Ok(_) => {
                    predictor.probe_sent(s.session, probe_timeout_us);
                    ctx.metrics.predict.suspicions.inc();
                    ctx.metrics
                        .predict
                        .suspicion_score_permille
                        .observe(f64::from(score_permille));
                    tracing::info!(
                        session = s.session,
                        score_permille,
                        phi = s.scores.phi,
                        forest = s.scores.forest,
                        probe_timeout_ms = probe_timeout_us / 1000,
                        "session suspected: shorter validity and a renewal probe"
                    );
                }
                Err(e) => {
                    tracing::debug!(session = s.session, error = %e, "suspicion not committed");
                    predictor.unsuspect(s.session);
                }
            }
        }
    }
}

/// The probe deadline for a session: the configured timeout, but never
/// shorter than the validity the session already holds. A live client that
/// pauses for less than its validity therefore always gets to answer, and
/// a revocation can only end a session that has been silent for its whole
/// validity (which is also the earliest its locks may free, rule 6).
fn probe_timeout_for(ctx: &NodeContext, session: SessionId, configured_us: u64) -> u64 {
    let now_us = ctx.cluster_now_us();
    let remaining_us = ctx
        .state
        .with_state(|sm| sm.session_view(session, now_us).map(|v| v.remaining_us))
        .unwrap_or(0);
    configured_us.max(remaining_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PredictConfig {
        PredictConfig::from_node(&NodeConfig::default())
    }

    #[test]
    fn combined_score_weights_and_bounds() {
        let c = cfg();
        assert_eq!(combine(None, Some(0.9), &c), 0, "no phi, no suspicion");
        assert_eq!(combine(Some(0.0), None, &c), 0);
        assert_eq!(combine(Some(c.phi_threshold), None, &c), 1000);
        assert_eq!(combine(Some(c.phi_threshold * 10.0), Some(1.0), &c), 1000);
        let half = combine(Some(c.phi_threshold / 2.0), None, &c);
        assert_eq!(half, 500);
        // An anomalous forest score adds to a middling phi.
        let with_forest = combine(Some(c.phi_threshold / 2.0), Some(0.9), &c);
        let ordinary_forest = combine(Some(c.phi_threshold / 2.0), Some(0.4), &c);
        assert!(with_forest > ordinary_forest, "{with_forest} vs {ordinary_forest}");
    }

    #[test]
    fn decision_thresholds() {
        let c = cfg();
        let t = c.suspect_threshold_permille;
        assert_eq!(decide(t - 1, false, &c), Decision::Keep);
        assert_eq!(decide(t, false, &c), Decision::Suspect { score_permille: t });
        assert_eq!(decide(1000, true, &c), Decision::Keep, "one probe at a time");
        let off = PredictConfig { enabled: false, ..c };
        assert_eq!(decide(1000, false, &off), Decision::Keep);
    }

    fn keepalive() -> SessionOp {
        SessionOp::Keepalive {
            health: None,
            clock: None,
        }
    }

    #[test]
    fn silent_session_is_suspected_once_and_regular_one_never() {
        let c = PredictConfig {
            retrain_interval: Duration::from_secs(3600),
            ..cfg()
        };
        let p = Predictor::new(c, Arc::new(Metrics::new()));
        let t0 = Instant::now();
        // Both sessions keep alive every second; the predictor's clock is
        // simulated through the `now` given to evaluate.
        for i in 0..10u64 {
            let now = t0 + Duration::from_secs(i);
            for s in [1, 2] {
                let mut inner = p.lock();
                let t = inner.sessions.entry(s).or_insert_with(|| Tracked {
                    profile: SessionProfile::new(now),
                    suspected_at: None,
                    probe_until: None,
                    last_training_sample: None,
                });
                t.profile.arrival(kind_of(&keepalive()), now, None);
            }
            assert!(p.evaluate(now).is_empty());
        }
        // Session 1 goes silent; session 2 keeps going.
        let mut suspected = Vec::new();
        for step in 1..=40u64 {
            let now = t0 + Duration::from_secs(9) + Duration::from_millis(100 * step);
            if step % 10 == 0 {
                let mut inner = p.lock();
                if let Some(t) = inner.sessions.get_mut(&2) {
                    t.profile.arrival(RequestKind::Keepalive, now, None);
                }
            }
            for s in p.evaluate(now) {
                suspected.push((s.session, step));
            }
        }
        assert_eq!(suspected.len(), 1, "{suspected:?}");
        let (session, step) = suspected[0];
        assert_eq!(session, 1);
        assert!(step > 10 && step < 30, "suspected after {} ms of silence", step * 100);
        p.on_events(&[Event::SessionEnded {
            session: 1,
            cause: EndCause::Revoked { reason: "test".into() },
        }]);
        assert_eq!(p.lock().sessions.len(), 1);
    }

    #[test]
    fn probe_answer_clears_the_pending_suspicion_and_counts_as_life() {
        let p = Predictor::new(cfg(), Arc::new(Metrics::new()));
        drop(p.track(7, &keepalive()));
        let before = p.lock().sessions[&7].profile.last_keepalive;
        p.lock().sessions.get_mut(&7).expect("tracked").suspected_at = Some(Instant::now());
        drop(p.track(7, &SessionOp::ProbeAnswer));
        let inner = p.lock();
        let t = &inner.sessions[&7];
        assert!(t.suspected_at.is_none());
        assert!(t.profile.last_keepalive > before, "silence restarts at the answer");
        assert_eq!(t.profile.keepalive_gap_ms.len(), 0, "an answer is no gap sample");
    }

    #[test]
    fn decisions_and_hot_locks_are_exported() {
        let metrics = Arc::new(Metrics::new());
        metrics.predict.suspicions.inc();
        metrics.predict.set_hot_locks(&[("jobs".into(), 3.5)]);
        let text = metrics.encode();
        for name in [
            "driftlock_predict_suspicions_total 1",
            "driftlock_predict_revocations_total",
            "driftlock_predict_max_phi",
            "driftlock_hot_locks 1",
            "driftlock_lock_request_rate{lock=\"jobs\"} 3.5",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn acquires_feed_hot_locks() {
        let c = PredictConfig {
            hot_lock_rate_per_s: 0.5,
            ..cfg()
        };
        let p = Predictor::new(c, Arc::new(Metrics::new()));
        for _ in 0..20 {
            drop(p.track(
                3,
                &SessionOp::Acquire {
                    name: "jobs".into(),
                    mode: driftlock_proto::LockMode::Exclusive,
                    wait_us: 0,
                },
            ));
        }
        let hot = p.hot_locks();
        assert_eq!(hot.len(), 1);
        assert_eq!(hot[0].name, "jobs");
        assert!(hot[0].rate_milli_per_s >= 1_900, "{hot:?}");
    }
}
