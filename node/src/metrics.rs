//! Prometheus metrics (prometheus-client), served as text on
//! `--metrics-addr` at `GET /metrics`.
//!
//! The HTTP side is a few lines over a tokio listener: one fixed GET is all
//! Prometheus needs, and an HTTP framework would be most of the binary.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of per-method RPC metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// The client API method: `open_session`, `session_op`, `kv_write`, `read`
    /// or `admin`.
    pub method: String,
}

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// Current Raft term.
    pub term: Gauge,
    /// Leader changes seen by this node.
    pub leader_changes: Counter,
    /// Times this follower found its leader's process gone — the
    /// connection it replicated on ended and its Raft port refused a new
    /// one — and ended its lease on it (`driftlock_raft_dead_leader_detections`;
    /// `failover.rs`).
    pub dead_leader_detections: Counter,
    /// Snapshots this node installed from a leader since it started
    /// (`driftlock_raft_snapshots_installed`): it lagged beyond the log the
    /// leader still kept.
    pub snapshots_installed: Counter,
    /// Duration of each flush of this node's Raft log to disk, seconds
    /// (`driftlock_raft_fsync_seconds`): one sled flush, its buffered writes
    /// then fsync, covering every append queued meanwhile (group commit), or
    /// the flush of a saved vote. A follower acknowledges, and the leader
    /// counts its own entries, only after it; buckets from 100 µs to about
    /// 3.3 s.
    pub fsync_seconds: Histogram,
    /// Index of the newest entry in this node's log, committed or not
    /// (`driftlock_raft_last_log_index`).
    pub last_log_index: Gauge,
    /// Commit index as far as this node knows.
    pub committed_index: Gauge,
    /// Index of the newest entry applied to this node's state machine, blank
    /// and membership entries included (`driftlock_raft_applied_index`).
    pub applied_index: Gauge,
    /// Last log index minus applied index.
    pub apply_lag: Gauge,
    /// Whether this node is the leader (1) or not (0).
    pub is_leader: Gauge,
    /// Sessions in this node's applied state (`driftlock_sessions`); one past
    /// its deadline counts until the entry that expires it is applied.
    pub sessions: Gauge,
    /// Sessions ended in this node's applied state, by cause
    /// (`driftlock_sessions_ended_total{cause}`): `released` (the client
    /// closed it), `expired` (its validity ran out: the client stopped
    /// renewing, or could not reach the cluster) or `revoked` (a committed
    /// revocation, e.g. an unanswered renewal probe). Every node applies the
    /// same entries, so every node counts the same. All three series exist
    /// from the start, at 0, so a rate over them sees the first end.
    pub sessions_ended: Family<CauseLabel, Counter>,
    /// Locks with a holder.
    pub held_locks: Gauge,
    /// Waiters across all locks.
    pub waiters: Gauge,
    /// Lock grants applied.
    pub grants: Counter,
    /// The holder's remaining session validity at each applied lock grant,
    /// seconds (`driftlock_grant_validity_seconds`).
    pub grant_validity_seconds: Histogram,
    /// Client RPC latency by method, seconds.
    pub rpc_latency_seconds: Family<MethodLabel, Histogram>,
    /// Commands per entry this node proposed as leader
    /// (`driftlock_proposal_batch_commands`; `batch.rs`): 1 at low load,
    /// more when commands queue behind entries in flight.
    pub batch_commands: Histogram,
    /// Health, adaptive lease and handover metrics.
    pub health: HealthMetrics,
    /// Clock drift metrics.
    pub clock: ClockMetrics,
    /// Predictive failure analysis and contention metrics.
    pub predict: PredictMetrics,
    /// TLS and peer-identity metrics.
    pub security: SecurityMetrics,
    /// Open connections and connections refused for the caps.
    pub connections: ConnectionMetrics,
    /// How long applies held the state machine and what snapshots cost.
    pub store: StoreMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("driftlock");
        let term = Gauge::default();
        let leader_changes = Counter::default();
        let dead_leader_detections = Counter::default();
        let snapshots_installed = Counter::default();
        let fsync_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let last_log_index = Gauge::default();
        let committed_index = Gauge::default();
        let applied_index = Gauge::default();
        let apply_lag = Gauge::default();
        let is_leader = Gauge::default();
        let sessions = Gauge::default();
        let sessions_ended = Family::<CauseLabel, Counter>::default();
        for cause in ["released", "expired", "revoked"] {
            // Creates the series at 0; the guard it returns is not needed.
            drop(sessions_ended.get_or_create(&CauseLabel { cause: cause.into() }));
        }
        let held_locks = Gauge::default();
        let waiters = Gauge::default();
        let grants = Counter::default();
        let grant_validity_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        let rpc_latency_seconds = Family::<MethodLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register("raft_term", "Current Raft term", term.clone());
        registry.register(
            "raft_leader_changes",
            "Leader changes seen by this node",
            leader_changes.clone(),
        );
        registry.register(
            "raft_dead_leader_detections",
            "Times this follower found its leader's process gone (connection ended, port refused)",
            dead_leader_detections.clone(),
        );
        registry.register(
            "raft_snapshots_installed",
            "Snapshots installed from a leader since the node started",
            snapshots_installed.clone(),
        );
        registry.register(
            "raft_fsync_seconds",
            "Duration of each flush (write and fsync) of the Raft log",
            fsync_seconds.clone(),
        );
        registry.register("raft_last_log_index", "Last log index", last_log_index.clone());
        registry.register(
            "raft_committed_index",
            "Committed index known to this node",
            committed_index.clone(),
        );
        registry.register("raft_applied_index", "Applied index", applied_index.clone());
        registry.register(
            "raft_apply_lag",
            "Last log index minus applied index",
            apply_lag.clone(),
        );
        registry.register("raft_is_leader", "1 if this node is the Raft leader", is_leader.clone());
        registry.register("sessions", "Open sessions", sessions.clone());
        registry.register(
            "sessions_ended",
            "Sessions ended, by cause: released, expired or revoked",
            sessions_ended.clone(),
        );
        registry.register("held_locks", "Locks with at least one holder", held_locks.clone());
        registry.register("lock_waiters", "Waiters queued across all locks", waiters.clone());
        registry.register("lock_grants", "Lock grants applied", grants.clone());
        registry.register(
            "grant_validity_seconds",
            "Remaining session validity at each lock grant",
            grant_validity_seconds.clone(),
        );
        registry.register(
            "rpc_latency_seconds",
            "Client API latency by method",
            rpc_latency_seconds.clone(),
        );
        let batch_commands = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "proposal_batch_commands",
            "Commands per entry proposed by this node as leader",
            batch_commands.clone(),
        );
        let health = HealthMetrics::register(&mut registry);
        let clock = ClockMetrics::register(&mut registry);
        let predict = PredictMetrics::register(&mut registry);
        let security = SecurityMetrics::register(&mut registry);
        let connections = ConnectionMetrics::register(&mut registry);
        let store = StoreMetrics::register(&mut registry);
        Metrics {
            store,
            connections,
            security,
            predict,
            clock,
            health,
            registry,
            term,
            leader_changes,
            dead_leader_detections,
            snapshots_installed,
            fsync_seconds,
            last_log_index,
            committed_index,
            applied_index,
            apply_lag,
            is_leader,
            sessions,
            sessions_ended,
            held_locks,
            waiters,
            grants,
            grant_validity_seconds,
            rpc_latency_seconds,
            batch_commands,
        }
    }

    /// Records this host's latest health sample.
    pub fn set_health(&self, s: &driftlock_proto::HealthSample) {
        let h = &self.health;
        h.cpu_load_permille.set(i64::from(s.cpu_load_permille));
        h.mem_used_permille.set(i64::from(s.mem_used_permille));
        h.io_wait_permille.set(i64::from(s.io_wait_permille));
        h.peer_rtt_mean_us.set(i64::try_from(s.rtt_mean_us).unwrap_or(i64::MAX));
        h.peer_rtt_stddev_us
            .set(i64::try_from(s.rtt_stddev_us).unwrap_or(i64::MAX));
    }

    /// Records how a granted lease was computed.
    pub fn observe_lease(&self, d: &driftlock_proto::LeaseDecision) {
        let h = &self.health;
        for (factor, v) in [
            ("nhi", i64::from(d.nhi_factor_permille)),
            ("stability", i64::from(d.stability_factor_permille)),
            ("load", i64::from(d.load_factor_permille)),
            ("suspicion_scale", i64::from(d.suspicion_scale_permille)),
        ] {
            h.lease_factor_permille
                .get_or_create(&FactorLabel { factor: factor.into() })
                .set(v);
        }
        h.lease_base_seconds.observe(d.base_us as f64 / 1e6);
        h.lease_validity_seconds.observe(d.validity_us as f64 / 1e6);
    }

    /// Counts a session ended in the applied state.
    pub fn session_ended(&self, cause: &driftlock_proto::EndCause) {
        let cause = match cause {
            driftlock_proto::EndCause::Released => "released",
            driftlock_proto::EndCause::Expired => "expired",
            driftlock_proto::EndCause::Revoked { .. } => "revoked",
        };
        self.sessions_ended
            .get_or_create(&CauseLabel { cause: cause.into() })
            .inc();
    }

    /// Records one client RPC's latency.
    pub fn observe_rpc(&self, method: &str, elapsed: Duration) {
        self.rpc_latency_seconds
            .get_or_create(&MethodLabel {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Label of `driftlock_sessions_ended_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    /// Why the session ended: `released`, `expired` or `revoked`.
    pub cause: String,
}

/// Label of a lease factor gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FactorLabel {
    /// `nhi`, `stability`, `load` or `suspicion_scale`.
    pub factor: String,
}

/// Label of a handover outcome counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `begun`, `transferred` or `aborted`.
    pub outcome: String,
}

/// Health, adaptive-lease and handover metrics.
pub struct HealthMetrics {
    /// This host's CPU load, permille.
    pub cpu_load_permille: Gauge,
    /// This host's memory in use, permille.
    pub mem_used_permille: Gauge,
    /// This host's I/O wait, permille.
    pub io_wait_permille: Gauge,
    /// Mean RTT to peers, µs.
    pub peer_rtt_mean_us: Gauge,
    /// RTT standard deviation to peers, µs.
    pub peer_rtt_stddev_us: Gauge,
    /// This node's committed Node Health Index, permille.
    pub node_health_index_permille: Gauge,
    /// Factors of the latest granted lease, permille.
    pub lease_factor_permille: Family<FactorLabel, Gauge>,
    /// Requested (base) lease durations, seconds.
    pub lease_base_seconds: Histogram,
    /// Granted lease durations after the formula, seconds.
    pub lease_validity_seconds: Histogram,
    /// Election handovers applied, by outcome.
    pub handovers: Family<OutcomeLabel, Counter>,
    /// Raft leader transfers this node started because of its health.
    pub health_leader_transfers: Counter,
}

impl HealthMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = HealthMetrics {
            cpu_load_permille: Gauge::default(),
            mem_used_permille: Gauge::default(),
            io_wait_permille: Gauge::default(),
            peer_rtt_mean_us: Gauge::default(),
            peer_rtt_stddev_us: Gauge::default(),
            node_health_index_permille: Gauge::default(),
            lease_factor_permille: Family::default(),
            lease_base_seconds: Histogram::new(exponential_buckets(0.5, 2.0, 12)),
            lease_validity_seconds: Histogram::new(exponential_buckets(0.5, 2.0, 12)),
            handovers: Family::default(),
            health_leader_transfers: Counter::default(),
        };
        registry.register(
            "host_cpu_load_permille",
            "CPU load of this host",
            m.cpu_load_permille.clone(),
        );
        registry.register(
            "host_mem_used_permille",
            "Memory in use on this host",
            m.mem_used_permille.clone(),
        );
        registry.register(
            "host_io_wait_permille",
            "I/O wait on this host",
            m.io_wait_permille.clone(),
        );
        registry.register("peer_rtt_mean_us", "Mean RTT to peers", m.peer_rtt_mean_us.clone());
        registry.register(
            "peer_rtt_stddev_us",
            "RTT standard deviation to peers",
            m.peer_rtt_stddev_us.clone(),
        );
        registry.register(
            "node_health_index_permille",
            "This node's committed Node Health Index",
            m.node_health_index_permille.clone(),
        );
        registry.register(
            "lease_factor_permille",
            "Factors of the latest granted lease",
            m.lease_factor_permille.clone(),
        );
        registry.register(
            "lease_base_seconds",
            "Requested lease durations",
            m.lease_base_seconds.clone(),
        );
        registry.register(
            "lease_validity_seconds",
            "Granted lease durations after the adaptive formula",
            m.lease_validity_seconds.clone(),
        );
        registry.register(
            "election_handovers",
            "Election handovers by outcome",
            m.handovers.clone(),
        );
        registry.register(
            "health_leader_transfers",
            "Raft leader transfers started because of this node's health",
            m.health_leader_transfers.clone(),
        );
        m
    }
}

/// Label naming a node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// The node's id, in decimal.
    pub node: String,
}

/// A floating-point gauge.
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Clock drift metrics (the gossiped view of every node).
pub struct ClockMetrics {
    /// Estimated drift per node, ppm (positive: fast).
    pub drift_ppm: Family<NodeLabel, FloatGauge>,
    /// σ of the drift estimate per node, ppm.
    pub drift_sigma_ppm: Family<NodeLabel, FloatGauge>,
    /// σ of the offset estimate per node, µs.
    pub uncertainty_us: Family<NodeLabel, FloatGauge>,
    /// This node's stamping bound ρ_hi, ppm.
    pub rho_hi_ppm: Gauge,
    /// Clock steps this node detected.
    pub steps: Gauge,
    /// Applied `ClockSkewDetected` events (a client's hold time disagreed
    /// with cluster time beyond its bound).
    pub skew_detected: Counter,
    /// Applied `NodeClockAlert` events (a node's drift crossed
    /// `alert_drift_ppm`).
    pub node_alerts: Counter,
}

/// Label of per-port metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabel {
    /// `client` or `raft`.
    pub port: String,
}

/// TLS and peer identity.
pub struct SecurityMetrics {
    /// Seconds until this node's certificate expires, negative once it has
    /// (`driftlock_tls_cert_expiry_seconds`); 0 under `--insecure`, and
    /// until the gauges are first refreshed.
    pub cert_expiry_seconds: Gauge,
    /// Connections dropped before they could send a request: a failed or
    /// timed-out TLS handshake (no certificate, another CA's, garbage), by
    /// port; both ports' series are exported from the start.
    pub handshake_failures: Family<PortLabel, Counter>,
    /// Raft-port requests refused because the peer's certificate names no
    /// current member, or a node other than the one the message claims to
    /// come from (`driftlock_raft_refused_requests`).
    pub raft_refused: Counter,
}

impl SecurityMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = SecurityMetrics {
            cert_expiry_seconds: Gauge::default(),
            handshake_failures: Family::default(),
            raft_refused: Counter::default(),
        };
        // Both ports' series exist from the start, at 0, so a rate over
        // them sees the first failure.
        for port in ["client", "raft"] {
            drop(m.handshake_failures.get_or_create(&PortLabel { port: port.into() }));
        }
        registry.register(
            "tls_cert_expiry_seconds",
            "Seconds until this node's TLS certificate expires (negative once it has)",
            m.cert_expiry_seconds.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Connections dropped in or before the TLS handshake, by port",
            m.handshake_failures.clone(),
        );
        registry.register(
            "raft_refused_requests",
            "Raft-port requests refused for the sender's identity",
            m.raft_refused.clone(),
        );
        m
    }

    /// Counts a connection that failed its handshake on `port`.
    pub fn handshake_failed(&self, port: &str) {
        self.handshake_failures
            .get_or_create(&PortLabel { port: port.into() })
            .inc();
    }
}

/// Label of refused connections: the port and the cap that refused it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabel {
    /// `client` or `raft`.
    pub port: String,
    /// `port_full` (the port's connection cap) or `principal_full` (the
    /// cap on one principal's connections).
    pub reason: String,
}

/// The state machine's hold times and the cost of the last snapshot built
/// on this node (docs/design.md "Snapshots without stalls"), copied from
/// the store's timings by the gauge loop.
pub struct StoreMetrics {
    /// Longest time one entry's apply held the state machine since the
    /// node started, seconds (`driftlock_apply_stall_max_seconds`): reads
    /// and the next apply wait that long.
    pub apply_stall_max_seconds: FloatGauge,
    /// Time the last snapshot built here held the state machine to
    /// capture its view, seconds (`driftlock_snapshot_last_capture_seconds`).
    pub snapshot_capture_seconds: FloatGauge,
    /// Time the last snapshot built here took to encode, off the apply
    /// path, seconds (`driftlock_snapshot_last_encode_seconds`).
    pub snapshot_encode_seconds: FloatGauge,
    /// Time the last snapshot built here took to write and flush, seconds
    /// (`driftlock_snapshot_last_store_seconds`).
    pub snapshot_store_seconds: FloatGauge,
    /// Size of the last snapshot built here, bytes
    /// (`driftlock_snapshot_last_bytes`).
    pub snapshot_bytes: Gauge,
}

impl StoreMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = StoreMetrics {
            apply_stall_max_seconds: FloatGauge::default(),
            snapshot_capture_seconds: FloatGauge::default(),
            snapshot_encode_seconds: FloatGauge::default(),
            snapshot_store_seconds: FloatGauge::default(),
            snapshot_bytes: Gauge::default(),
        };
        registry.register(
            "apply_stall_max_seconds",
            "Longest time one entry's apply held the state machine since the node started",
            m.apply_stall_max_seconds.clone(),
        );
        registry.register(
            "snapshot_last_capture_seconds",
            "Time the last snapshot built here held the state machine to capture it",
            m.snapshot_capture_seconds.clone(),
        );
        registry.register(
            "snapshot_last_encode_seconds",
            "Time the last snapshot built here took to encode, off the apply path",
            m.snapshot_encode_seconds.clone(),
        );
        registry.register(
            "snapshot_last_store_seconds",
            "Time the last snapshot built here took to write and flush",
            m.snapshot_store_seconds.clone(),
        );
        registry.register(
            "snapshot_last_bytes",
            "Size of the last snapshot built here",
            m.snapshot_bytes.clone(),
        );
        m
    }

    /// Copies the store's timings.
    pub fn set(&self, t: &driftlock_raft_store::StoreTimings) {
        let seconds = |us: u64| us as f64 / 1e6;
        self.apply_stall_max_seconds.set(seconds(t.apply_hold_max_us));
        self.snapshot_capture_seconds.set(seconds(t.snapshot_capture_us));
        self.snapshot_encode_seconds.set(seconds(t.snapshot_encode_us));
        self.snapshot_store_seconds.set(seconds(t.snapshot_store_us));
        self.snapshot_bytes
            .set(i64::try_from(t.snapshot_bytes).unwrap_or(i64::MAX));
    }
}

/// Connections per port, against the caps of `crate::listener`.
pub struct ConnectionMetrics {
    /// Connections open now, in or past the TLS handshake, by port
    /// (`driftlock_connections`).
    pub open: Family<PortLabel, Gauge>,
    /// Connections closed at once because a cap was reached, by port and
    /// cap (`driftlock_connections_refused_total`); every port and cap's
    /// series is exported from the start.
    pub refused: Family<RefusedLabel, Counter>,
}

impl ConnectionMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = ConnectionMetrics {
            open: Family::default(),
            refused: Family::default(),
        };
        // Every port and cap's series exists from the start, at 0, so a
        // rate over them sees the first refusal.
        for port in ["client", "raft"] {
            for reason in ["port_full", "principal_full"] {
                drop(m.refused.get_or_create(&RefusedLabel {
                    port: port.into(),
                    reason: reason.into(),
                }));
            }
        }
        registry.register("connections", "Open connections, by port", m.open.clone());
        registry.register(
            "connections_refused",
            "Connections closed at once for a connection cap, by port and cap",
            m.refused.clone(),
        );
        m
    }

    /// The gauge of open connections on `port`.
    pub fn open_on(&self, port: &str) -> Gauge {
        self.open.get_or_create(&PortLabel { port: port.into() }).clone()
    }

    /// Counts a connection refused on `port` for the cap `reason`.
    pub fn refused(&self, port: &str, reason: &str) {
        self.refused
            .get_or_create(&RefusedLabel {
                port: port.into(),
                reason: reason.into(),
            })
            .inc();
    }
}

impl ClockMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = ClockMetrics {
            drift_ppm: Family::default(),
            drift_sigma_ppm: Family::default(),
            uncertainty_us: Family::default(),
            rho_hi_ppm: Gauge::default(),
            steps: Gauge::default(),
            skew_detected: Counter::default(),
            node_alerts: Counter::default(),
        };
        registry.register("clock_drift_ppm", "Estimated clock drift per node", m.drift_ppm.clone());
        registry.register(
            "clock_drift_sigma_ppm",
            "Standard deviation of the drift estimate per node",
            m.drift_sigma_ppm.clone(),
        );
        registry.register(
            "clock_uncertainty_us",
            "Standard deviation of the offset estimate per node",
            m.uncertainty_us.clone(),
        );
        registry.register(
            "clock_rho_hi_ppm",
            "Drift bound this node stamps cluster time with",
            m.rho_hi_ppm.clone(),
        );
        registry.register("clock_steps", "Clock steps detected by this node", m.steps.clone());
        registry.register(
            "clock_skew_detected",
            "Client hold times that disagreed with cluster time beyond the client's drift bound",
            m.skew_detected.clone(),
        );
        registry.register(
            "clock_node_alerts",
            "Nodes whose committed drift crossed alert_drift_ppm",
            m.node_alerts.clone(),
        );
        m
    }
}

/// Label of a per-lock metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LockLabel {
    /// The lock's name as clients gave it (only hot locks get a series).
    pub lock: String,
}

/// Predictive failure analysis and contention metrics (leader-side; the
/// revocation counter counts applied revocations on every node).
pub struct PredictMetrics {
    /// Sessions the leader profiles.
    pub tracked_sessions: Gauge,
    /// `Suspect` commands committed by this node.
    pub suspicions: Counter,
    /// Combined score of each committed suspicion, permille.
    pub suspicion_score_permille: Histogram,
    /// Renewal probes answered while this node was leader.
    pub probe_answers: Counter,
    /// Sessions revoked (applied on this node).
    pub revocations: Counter,
    /// Highest combined score among profiled sessions at the last scoring, permille.
    pub max_score_permille: Gauge,
    /// Highest phi among profiled sessions at the last scoring.
    pub max_phi: FloatGauge,
    /// Times the leader rebuilt the isolation forest (every
    /// `[predict] retrain_ms`, once enough training vectors are held).
    pub forest_trainings: Counter,
    /// Vectors in the forest's training ring.
    pub forest_training_vectors: Gauge,
    /// Locks whose acquire rate is at or above the hot threshold.
    pub hot_locks: Gauge,
    /// Acquire rate of each hot lock, per second (only hot locks are listed).
    pub lock_request_rate: Family<LockLabel, FloatGauge>,
}

impl PredictMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = PredictMetrics {
            tracked_sessions: Gauge::default(),
            suspicions: Counter::default(),
            suspicion_score_permille: Histogram::new([500.0, 600.0, 700.0, 800.0, 900.0, 950.0, 1000.0]),
            probe_answers: Counter::default(),
            revocations: Counter::default(),
            max_score_permille: Gauge::default(),
            max_phi: FloatGauge::default(),
            forest_trainings: Counter::default(),
            forest_training_vectors: Gauge::default(),
            hot_locks: Gauge::default(),
            lock_request_rate: Family::default(),
        };
        registry.register(
            "predict_tracked_sessions",
            "Sessions profiled by the leader",
            m.tracked_sessions.clone(),
        );
        registry.register("predict_suspicions", "Suspect commands committed", m.suspicions.clone());
        registry.register(
            "predict_suspicion_score_permille",
            "Combined score of each committed suspicion",
            m.suspicion_score_permille.clone(),
        );
        registry.register(
            "predict_probe_answers",
            "Renewal probes answered",
            m.probe_answers.clone(),
        );
        registry.register("predict_revocations", "Sessions revoked", m.revocations.clone());
        registry.register(
            "predict_max_score_permille",
            "Highest combined score at the last scoring",
            m.max_score_permille.clone(),
        );
        registry.register("predict_max_phi", "Highest phi at the last scoring", m.max_phi.clone());
        registry.register(
            "predict_forest_trainings",
            "Isolation forest trainings",
            m.forest_trainings.clone(),
        );
        registry.register(
            "predict_forest_training_vectors",
            "Vectors in the isolation forest's training ring",
            m.forest_training_vectors.clone(),
        );
        registry.register(
            "hot_locks",
            "Locks at or above the hot acquire rate",
            m.hot_locks.clone(),
        );
        registry.register(
            "lock_request_rate",
            "Acquire rate of each hot lock, per second",
            m.lock_request_rate.clone(),
        );
        m
    }

    /// Replaces the per-lock rates with the current hot locks.
    pub fn set_hot_locks(&self, hot: &[(String, f64)]) {
        self.lock_request_rate.clear();
        for (name, rate) in hot {
            self.lock_request_rate
                .get_or_create(&LockLabel { lock: name.clone() })
                .set(*rate);
        }
        self.hot_locks.set(hot.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_fixed_labels_and_the_fsync_histogram_are_exported_at_zero() {
        let text = Metrics::new().encode();
        for series in [
            "driftlock_sessions_ended_total{cause=\"released\"} 0",
            "driftlock_sessions_ended_total{cause=\"expired\"} 0",
            "driftlock_sessions_ended_total{cause=\"revoked\"} 0",
            "driftlock_tls_handshake_failures_total{port=\"client\"} 0",
            "driftlock_tls_handshake_failures_total{port=\"raft\"} 0",
            "driftlock_connections_refused_total{port=\"client\",reason=\"port_full\"} 0",
            "driftlock_connections_refused_total{port=\"raft\",reason=\"principal_full\"} 0",
            "driftlock_raft_fsync_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == series), "{series} missing from\n{text}");
        }
    }

    #[test]
    fn ended_sessions_are_counted_by_cause_and_flushes_by_bucket() {
        let m = Metrics::new();
        m.session_ended(&driftlock_proto::EndCause::Expired);
        m.session_ended(&driftlock_proto::EndCause::Revoked { reason: "probe".into() });
        m.session_ended(&driftlock_proto::EndCause::Expired);
        m.fsync_seconds.observe(0.003);
        let text = m.encode();
        for series in [
            "driftlock_sessions_ended_total{cause=\"expired\"} 2",
            "driftlock_sessions_ended_total{cause=\"revoked\"} 1",
            "driftlock_sessions_ended_total{cause=\"released\"} 0",
            "driftlock_raft_fsync_seconds_count 1",
            "driftlock_raft_fsync_seconds_bucket{le=\"0.0016\"} 0",
            "driftlock_raft_fsync_seconds_bucket{le=\"0.0032\"} 1",
        ] {
            assert!(text.lines().any(|l| l == series), "{series} missing from\n{text}");
        }
    }
}
