//! Node configuration: a TOML file, every field also a command-line flag and
//! an environment variable (flag > env > file > default). Unknown keys in
//! the file are rejected, naming the key.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

/// The settings of one node, after merging file, env and flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Raft node id (> 0, unique in the cluster).
    pub id: u64,
    /// Address for node-to-node Raft traffic, `host:port`.
    pub raft_addr: String,
    /// Address of the client API, `host:port`.
    pub client_addr: String,
    /// Directory of this node's sled store.
    pub data_dir: PathBuf,
    /// Address of the Prometheus endpoint (`GET /metrics`), if any.
    pub metrics_addr: Option<String>,
    /// Raft heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Lower bound of the Raft election timeout, ms.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the Raft election timeout, ms.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every_entries: u64,
    /// Worst-case clock rate error of this node, ppm, used when stamping
    /// cluster time until a measured estimate exists.
    pub max_drift_ppm: u64,
    /// The leader commits a `Tick` after this long without other entries, ms.
    pub tick_interval_ms: u64,
    /// Events kept for `observe` long-polls.
    pub event_buffer_len: usize,
    /// Per-request timeout for Raft RPCs, ms.
    pub raft_rpc_timeout_ms: u64,
    /// How often this node samples its health and reports it to the
    /// leader, ms.
    pub health_interval_ms: u64,
    /// Forces this node's health tier (`excellent`, `good`, `warning`,
    /// `critical`): drills and tests only, unset in production.
    pub health_override: Option<String>,
    /// Whether the leader hands an election's mastership over to a
    /// healthier candidate when the master's health tier is Warning or
    /// Critical, and moves its own Raft leadership when it is Critical.
    pub auto_handover: bool,
    /// How long a handover candidate has to acknowledge the state, ms.
    pub handover_ack_timeout_ms: u64,
    /// Least time between two automatic handovers of one election, and
    /// between two automatic Raft leader transfers, ms (hysteresis).
    pub handover_min_interval_ms: u64,
    /// NTP servers (`host:port`) the clock module queries; empty = peers only.
    pub ntp_servers: Vec<String>,
    /// Clock sampling and gossip interval, ms.
    pub clock_interval_ms: u64,
    /// Samples whose round trip is above this percentile of the recent ones
    /// are dropped (1–100).
    pub clock_rtt_percentile: u8,
    /// Peers each node gossips its clock view to per interval.
    pub clock_gossip_fanout: usize,
    /// Kalman process noise of the drift, ppm² per second.
    pub clock_q_drift_ppm2_per_s: f64,
    /// Kalman process noise of the offset, µs² per second.
    pub clock_q_offset_us2_per_s: f64,
    /// Whether the leader suspects sessions whose behaviour predicts a
    /// failure (shorter validity and a renewal probe; revocation if unanswered).
    pub predict_enabled: bool,
    /// How often the leader scores every session, ms.
    pub predict_interval_ms: u64,
    /// Phi-accrual value at which the phi term of the score is full.
    pub predict_phi_threshold: f64,
    /// Keepalive gaps a session needs before phi is trusted.
    pub predict_min_keepalives: u32,
    /// Floor of the keepalive-gap standard deviation in phi, ms.
    pub predict_min_stddev_ms: u64,
    /// Weight of the phi term in the combined score, permille.
    pub predict_phi_weight_permille: u32,
    /// Weight of the isolation-forest term in the combined score, permille.
    pub predict_forest_weight_permille: u32,
    /// Combined score at or above which a session is suspected, permille.
    pub predict_suspect_threshold_permille: u32,
    /// Time a suspected session has to answer its renewal probe, ms.
    pub predict_probe_timeout_ms: u64,
    /// How often the isolation forest is retrained, ms.
    pub predict_retrain_ms: u64,
    /// Acquire rate at or above which a lock counts as hot, per second.
    pub predict_hot_lock_rate_per_s: f64,
    /// UNSAFE, for the jepsen suite's negative test only: the leader runs
    /// cluster time at [`UNSAFE_CLUSTER_TIME_SPEEDUP`]× its local clock, so
    /// sessions expire on the cluster long before their holders' local
    /// validity ends (breaks docs/design.md "Time", rule 2). Flag only, never
    /// read from a file or the environment.
    #[serde(default)]
    pub unsafe_fast_cluster_time: bool,
}

/// How much faster than the local clock cluster time runs under
/// [`NodeConfig::unsafe_fast_cluster_time`].
pub const UNSAFE_CLUSTER_TIME_SPEEDUP: u64 = 4;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            raft_addr: "127.0.0.1:7401".into(),
            client_addr: "127.0.0.1:7301".into(),
            data_dir: PathBuf::from("./data/node1"),
            metrics_addr: None,
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_every_entries: 10_000,
            max_drift_ppm: 500,
            tick_interval_ms: 200,
            event_buffer_len: 100_000,
            raft_rpc_timeout_ms: 1_000,
            health_interval_ms: 2_000,
            health_override: None,
            auto_handover: true,
            handover_ack_timeout_ms: 5_000,
            handover_min_interval_ms: 30_000,
            ntp_servers: Vec::new(),
            clock_interval_ms: 1_000,
            clock_rtt_percentile: 90,
            clock_gossip_fanout: 2,
            clock_q_drift_ppm2_per_s: 0.01,
            clock_q_offset_us2_per_s: 1.0,
            predict_enabled: true,
            predict_interval_ms: 100,
            predict_phi_threshold: 8.0,
            predict_min_keepalives: 4,
            predict_min_stddev_ms: 100,
            predict_phi_weight_permille: 800,
            predict_forest_weight_permille: 200,
            predict_suspect_threshold_permille: 800,
            predict_probe_timeout_ms: 1_500,
            predict_retrain_ms: 10_000,
            predict_hot_lock_rate_per_s: 2.0,
            unsafe_fast_cluster_time: false,
        }
    }
}

/// The same fields as they may appear in a TOML file: all optional, unknown
/// keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    raft_addr: Option<String>,
    client_addr: Option<String>,
    data_dir: Option<PathBuf>,
    metrics_addr: Option<String>,
    heartbeat_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    snapshot_every_entries: Option<u64>,
    max_drift_ppm: Option<u64>,
    tick_interval_ms: Option<u64>,
    event_buffer_len: Option<usize>,
    raft_rpc_timeout_ms: Option<u64>,
    health_interval_ms: Option<u64>,
    health_override: Option<String>,
    auto_handover: Option<bool>,
    handover_ack_timeout_ms: Option<u64>,
    handover_min_interval_ms: Option<u64>,
    ntp_servers: Option<Vec<String>>,
    clock_interval_ms: Option<u64>,
    clock_rtt_percentile: Option<u8>,
    clock_gossip_fanout: Option<usize>,
    clock_q_drift_ppm2_per_s: Option<f64>,
    clock_q_offset_us2_per_s: Option<f64>,
    predict_enabled: Option<bool>,
    predict_interval_ms: Option<u64>,
    predict_phi_threshold: Option<f64>,
    predict_min_keepalives: Option<u32>,
    predict_min_stddev_ms: Option<u64>,
    predict_phi_weight_permille: Option<u32>,
    predict_forest_weight_permille: Option<u32>,
    predict_suspect_threshold_permille: Option<u32>,
    predict_probe_timeout_ms: Option<u64>,
    predict_retrain_ms: Option<u64>,
    predict_hot_lock_rate_per_s: Option<f64>,
}

/// `driftlock serve` flags; each also reads `DRIFTLOCK_<NAME>`.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "DRIFTLOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Raft node id.
    #[arg(long, env = "DRIFTLOCK_ID")]
    pub id: Option<u64>,
    /// Raft listen/advertise address.
    #[arg(long, env = "DRIFTLOCK_RAFT_ADDR")]
    pub raft_addr: Option<String>,
    /// Client API listen/advertise address.
    #[arg(long, env = "DRIFTLOCK_CLIENT_ADDR")]
    pub client_addr: Option<String>,
    /// Data directory.
    #[arg(long, env = "DRIFTLOCK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Prometheus endpoint address.
    #[arg(long, env = "DRIFTLOCK_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Raft heartbeat interval, ms.
    #[arg(long, env = "DRIFTLOCK_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Election timeout lower bound, ms.
    #[arg(long, env = "DRIFTLOCK_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,
    /// Election timeout upper bound, ms.
    #[arg(long, env = "DRIFTLOCK_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    /// Snapshot after this many entries.
    #[arg(long, env = "DRIFTLOCK_SNAPSHOT_EVERY_ENTRIES")]
    pub snapshot_every_entries: Option<u64>,
    /// Worst-case clock drift, ppm.
    #[arg(long, env = "DRIFTLOCK_MAX_DRIFT_PPM")]
    pub max_drift_ppm: Option<u64>,
    /// Idle tick interval, ms.
    #[arg(long, env = "DRIFTLOCK_TICK_INTERVAL_MS")]
    pub tick_interval_ms: Option<u64>,
    /// Events kept for observers.
    #[arg(long, env = "DRIFTLOCK_EVENT_BUFFER_LEN")]
    pub event_buffer_len: Option<usize>,
    /// Raft RPC timeout, ms.
    #[arg(long, env = "DRIFTLOCK_RAFT_RPC_TIMEOUT_MS")]
    pub raft_rpc_timeout_ms: Option<u64>,
    /// Health sampling and reporting interval, ms.
    #[arg(long, env = "DRIFTLOCK_HEALTH_INTERVAL_MS")]
    pub health_interval_ms: Option<u64>,
    /// Force this node's health tier (drills and tests only).
    #[arg(long, env = "DRIFTLOCK_HEALTH_OVERRIDE")]
    pub health_override: Option<String>,
    /// Automatic warm handover and leader transfer on poor health (true/false).
    #[arg(long, env = "DRIFTLOCK_AUTO_HANDOVER")]
    pub auto_handover: Option<bool>,
    /// Time a handover candidate has to acknowledge, ms.
    #[arg(long, env = "DRIFTLOCK_HANDOVER_ACK_TIMEOUT_MS")]
    pub handover_ack_timeout_ms: Option<u64>,
    /// Least time between automatic handovers / leader transfers, ms.
    #[arg(long, env = "DRIFTLOCK_HANDOVER_MIN_INTERVAL_MS")]
    pub handover_min_interval_ms: Option<u64>,
    /// NTP servers, comma-separated host:port.
    #[arg(long, env = "DRIFTLOCK_NTP_SERVERS", value_delimiter = ',')]
    pub ntp_servers: Option<Vec<String>>,
    /// Clock sampling and gossip interval, ms.
    #[arg(long, env = "DRIFTLOCK_CLOCK_INTERVAL_MS")]
    pub clock_interval_ms: Option<u64>,
    /// RTT percentile above which clock samples are dropped.
    #[arg(long, env = "DRIFTLOCK_CLOCK_RTT_PERCENTILE")]
    pub clock_rtt_percentile: Option<u8>,
    /// Peers to gossip clock estimates to per interval.
    #[arg(long, env = "DRIFTLOCK_CLOCK_GOSSIP_FANOUT")]
    pub clock_gossip_fanout: Option<usize>,
    /// Kalman drift process noise, ppm²/s.
    #[arg(long, env = "DRIFTLOCK_CLOCK_Q_DRIFT_PPM2_PER_S")]
    pub clock_q_drift_ppm2_per_s: Option<f64>,
    /// Kalman offset process noise, µs²/s.
    #[arg(long, env = "DRIFTLOCK_CLOCK_Q_OFFSET_US2_PER_S")]
    pub clock_q_offset_us2_per_s: Option<f64>,
    /// Predictive failure analysis on the leader (true/false).
    #[arg(long, env = "DRIFTLOCK_PREDICT_ENABLED")]
    pub predict_enabled: Option<bool>,
    /// Session scoring interval, ms.
    #[arg(long, env = "DRIFTLOCK_PREDICT_INTERVAL_MS")]
    pub predict_interval_ms: Option<u64>,
    /// Phi at which the phi term is full.
    #[arg(long, env = "DRIFTLOCK_PREDICT_PHI_THRESHOLD")]
    pub predict_phi_threshold: Option<f64>,
    /// Keepalive gaps needed before phi is trusted.
    #[arg(long, env = "DRIFTLOCK_PREDICT_MIN_KEEPALIVES")]
    pub predict_min_keepalives: Option<u32>,
    /// Floor of the keepalive-gap standard deviation, ms.
    #[arg(long, env = "DRIFTLOCK_PREDICT_MIN_STDDEV_MS")]
    pub predict_min_stddev_ms: Option<u64>,
    /// Weight of phi in the combined score, permille.
    #[arg(long, env = "DRIFTLOCK_PREDICT_PHI_WEIGHT_PERMILLE")]
    pub predict_phi_weight_permille: Option<u32>,
    /// Weight of the isolation forest in the combined score, permille.
    #[arg(long, env = "DRIFTLOCK_PREDICT_FOREST_WEIGHT_PERMILLE")]
    pub predict_forest_weight_permille: Option<u32>,
    /// Score at which a session is suspected, permille.
    #[arg(long, env = "DRIFTLOCK_PREDICT_SUSPECT_THRESHOLD_PERMILLE")]
    pub predict_suspect_threshold_permille: Option<u32>,
    /// Renewal probe deadline, ms.
    #[arg(long, env = "DRIFTLOCK_PREDICT_PROBE_TIMEOUT_MS")]
    pub predict_probe_timeout_ms: Option<u64>,
    /// Isolation forest retraining interval, ms.
    #[arg(long, env = "DRIFTLOCK_PREDICT_RETRAIN_MS")]
    pub predict_retrain_ms: Option<u64>,
    /// Acquire rate of a hot lock, per second.
    #[arg(long, env = "DRIFTLOCK_PREDICT_HOT_LOCK_RATE_PER_S")]
    pub predict_hot_lock_rate_per_s: Option<f64>,
    /// UNSAFE, tests only: run cluster time fast so that locks overlap
    /// (the jepsen suite proves its checkers catch it).
    #[arg(long)]
    pub unsafe_fast_cluster_time: bool,
    /// Exit when the process that started this one exits (used by `dev`).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

/// A configuration problem, naming the file, key or field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {field}: {message}")]
    Invalid {
        /// Field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl ServeArgs {
    /// Merges defaults, the file (if any) and the flags/env into a checked
    /// configuration.
    pub fn resolve(&self) -> Result<NodeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => parse_file(path)?,
            None => FileConfig::default(),
        };
        let d = NodeConfig::default();
        let cfg = NodeConfig {
            id: self.id.or(file.id).unwrap_or(d.id),
            raft_addr: self.raft_addr.clone().or(file.raft_addr).unwrap_or(d.raft_addr),
            client_addr: self.client_addr.clone().or(file.client_addr).unwrap_or(d.client_addr),
            data_dir: self.data_dir.clone().or(file.data_dir).unwrap_or(d.data_dir),
            metrics_addr: self.metrics_addr.clone().or(file.metrics_addr),
            heartbeat_ms: self.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(d.heartbeat_ms),
            election_timeout_min_ms: self
                .election_timeout_min_ms
                .or(file.election_timeout_min_ms)
                .unwrap_or(d.election_timeout_min_ms),
            election_timeout_max_ms: self
                .election_timeout_max_ms
                .or(file.election_timeout_max_ms)
                .unwrap_or(d.election_timeout_max_ms),
            snapshot_every_entries: self
                .snapshot_every_entries
                .or(file.snapshot_every_entries)
                .unwrap_or(d.snapshot_every_entries),
            max_drift_ppm: self.max_drift_ppm.or(file.max_drift_ppm).unwrap_or(d.max_drift_ppm),
            tick_interval_ms: self
                .tick_interval_ms
                .or(file.tick_interval_ms)
                .unwrap_or(d.tick_interval_ms),
            event_buffer_len: self
                .event_buffer_len
                .or(file.event_buffer_len)
                .unwrap_or(d.event_buffer_len),
            raft_rpc_timeout_ms: self
                .raft_rpc_timeout_ms
                .or(file.raft_rpc_timeout_ms)
                .unwrap_or(d.raft_rpc_timeout_ms),
            health_interval_ms: self
                .health_interval_ms
                .or(file.health_interval_ms)
                .unwrap_or(d.health_interval_ms),
            health_override: self.health_override.clone().or(file.health_override),
            auto_handover: self.auto_handover.or(file.auto_handover).unwrap_or(d.auto_handover),
            handover_ack_timeout_ms: self
                .handover_ack_timeout_ms
                .or(file.handover_ack_timeout_ms)
                .unwrap_or(d.handover_ack_timeout_ms),
            handover_min_interval_ms: self
                .handover_min_interval_ms
                .or(file.handover_min_interval_ms)
                .unwrap_or(d.handover_min_interval_ms),
            ntp_servers: self.ntp_servers.clone().or(file.ntp_servers).unwrap_or(d.ntp_servers),
            clock_interval_ms: self
                .clock_interval_ms
                .or(file.clock_interval_ms)
                .unwrap_or(d.clock_interval_ms),
            clock_rtt_percentile: self
                .clock_rtt_percentile
                .or(file.clock_rtt_percentile)
                .unwrap_or(d.clock_rtt_percentile),
            clock_gossip_fanout: self
                .clock_gossip_fanout
                .or(file.clock_gossip_fanout)
                .unwrap_or(d.clock_gossip_fanout),
            clock_q_drift_ppm2_per_s: self
                .clock_q_drift_ppm2_per_s
                .or(file.clock_q_drift_ppm2_per_s)
                .unwrap_or(d.clock_q_drift_ppm2_per_s),
            clock_q_offset_us2_per_s: self
                .clock_q_offset_us2_per_s
                .or(file.clock_q_offset_us2_per_s)
                .unwrap_or(d.clock_q_offset_us2_per_s),
            predict_enabled: self
                .predict_enabled
                .or(file.predict_enabled)
                .unwrap_or(d.predict_enabled),
            predict_interval_ms: self
                .predict_interval_ms
                .or(file.predict_interval_ms)
                .unwrap_or(d.predict_interval_ms),
            predict_phi_threshold: self
                .predict_phi_threshold
                .or(file.predict_phi_threshold)
                .unwrap_or(d.predict_phi_threshold),
            predict_min_keepalives: self
                .predict_min_keepalives
                .or(file.predict_min_keepalives)
                .unwrap_or(d.predict_min_keepalives),
            predict_min_stddev_ms: self
                .predict_min_stddev_ms
                .or(file.predict_min_stddev_ms)
                .unwrap_or(d.predict_min_stddev_ms),
            predict_phi_weight_permille: self
                .predict_phi_weight_permille
                .or(file.predict_phi_weight_permille)
                .unwrap_or(d.predict_phi_weight_permille),
            predict_forest_weight_permille: self
                .predict_forest_weight_permille
                .or(file.predict_forest_weight_permille)
                .unwrap_or(d.predict_forest_weight_permille),
            predict_suspect_threshold_permille: self
                .predict_suspect_threshold_permille
                .or(file.predict_suspect_threshold_permille)
                .unwrap_or(d.predict_suspect_threshold_permille),
            predict_probe_timeout_ms: self
                .predict_probe_timeout_ms
                .or(file.predict_probe_timeout_ms)
                .unwrap_or(d.predict_probe_timeout_ms),
            predict_retrain_ms: self
                .predict_retrain_ms
                .or(file.predict_retrain_ms)
                .unwrap_or(d.predict_retrain_ms),
            predict_hot_lock_rate_per_s: self
                .predict_hot_lock_rate_per_s
                .or(file.predict_hot_lock_rate_per_s)
                .unwrap_or(d.predict_hot_lock_rate_per_s),
            unsafe_fast_cluster_time: self.unsafe_fast_cluster_time,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

fn parse_file(path: &PathBuf) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    parse_toml(&text).map_err(|message| ConfigError::Parse {
        path: path.clone(),
        message,
    })
}

fn parse_toml(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())
}

impl NodeConfig {
    /// Checks ranges and relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if self.id == 0 {
            return invalid("id", "must be > 0");
        }
        for (field, addr) in [("raft_addr", &self.raft_addr), ("client_addr", &self.client_addr)] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return invalid(field, &format!("'{addr}' is not an ip:port address"));
            }
        }
        if let Some(m) = &self.metrics_addr {
            if m.parse::<std::net::SocketAddr>().is_err() {
                return invalid("metrics_addr", &format!("'{m}' is not an ip:port address"));
            }
        }
        if self.heartbeat_ms == 0 {
            return invalid("heartbeat_ms", "must be > 0");
        }
        if self.election_timeout_min_ms <= self.heartbeat_ms {
            return invalid("election_timeout_min_ms", "must exceed heartbeat_ms");
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return invalid("election_timeout_max_ms", "must exceed election_timeout_min_ms");
        }
        if self.snapshot_every_entries == 0 {
            return invalid("snapshot_every_entries", "must be > 0");
        }
        if self.max_drift_ppm == 0 || self.max_drift_ppm > 100_000 {
            return invalid("max_drift_ppm", "must be in [1, 100000]");
        }
        if self.tick_interval_ms == 0 {
            return invalid("tick_interval_ms", "must be > 0");
        }
        if self.event_buffer_len == 0 {
            return invalid("event_buffer_len", "must be > 0");
        }
        if self.raft_rpc_timeout_ms == 0 {
            return invalid("raft_rpc_timeout_ms", "must be > 0");
        }
        if self.health_interval_ms == 0 {
            return invalid("health_interval_ms", "must be > 0");
        }
        if let Some(t) = &self.health_override {
            if let Err(e) = driftlock_sensors::health::parse_tier(t) {
                return invalid("health_override", &e);
            }
        }
        if self.handover_ack_timeout_ms == 0 {
            return invalid("handover_ack_timeout_ms", "must be > 0");
        }
        for server in &self.ntp_servers {
            let ok = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return invalid("ntp_servers", &format!("'{server}' is not host:port"));
            }
        }
        if self.clock_interval_ms == 0 {
            return invalid("clock_interval_ms", "must be > 0");
        }
        if !(1..=100).contains(&self.clock_rtt_percentile) {
            return invalid("clock_rtt_percentile", "must be in [1, 100]");
        }
        for (field, v) in [
            ("clock_q_drift_ppm2_per_s", self.clock_q_drift_ppm2_per_s),
            ("clock_q_offset_us2_per_s", self.clock_q_offset_us2_per_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return invalid(field, "must be a positive number");
            }
        }
        if self.predict_interval_ms == 0 {
            return invalid("predict_interval_ms", "must be > 0");
        }
        if !(self.predict_phi_threshold.is_finite() && self.predict_phi_threshold > 0.0) {
            return invalid("predict_phi_threshold", "must be a positive number");
        }
        if self.predict_min_keepalives < 2 {
            return invalid("predict_min_keepalives", "must be >= 2 (phi needs a spread)");
        }
        if self.predict_min_stddev_ms == 0 {
            return invalid("predict_min_stddev_ms", "must be > 0");
        }
        if self.predict_phi_weight_permille == 0 {
            return invalid(
                "predict_phi_weight_permille",
                "must be > 0 (phi is the primary detector)",
            );
        }
        if self.predict_phi_weight_permille > 1000 || self.predict_forest_weight_permille > 1000 {
            return invalid("predict_phi_weight_permille", "weights must be in [0, 1000]");
        }
        if !(1..=1000).contains(&self.predict_suspect_threshold_permille) {
            return invalid("predict_suspect_threshold_permille", "must be in [1, 1000]");
        }
        if self.predict_probe_timeout_ms == 0 {
            return invalid("predict_probe_timeout_ms", "must be > 0");
        }
        if self.predict_retrain_ms == 0 {
            return invalid("predict_retrain_ms", "must be > 0");
        }
        if !(self.predict_hot_lock_rate_per_s.is_finite() && self.predict_hot_lock_rate_per_s > 0.0) {
            return invalid("predict_hot_lock_rate_per_s", "must be a positive number");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let err = parse_toml("id = 2\nheartbeat_msec = 5\n").unwrap_err();
        assert!(err.contains("heartbeat_msec"), "{err}");
    }

    #[test]
    fn mistyped_value_is_rejected() {
        let err = parse_toml("id = \"two\"\n").unwrap_err();
        assert!(err.contains("id") || err.contains("invalid type"), "{err}");
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "id = 2\nclient_addr = \"127.0.0.1:9000\"\nheartbeat_ms = 50\n").expect("write");
        let args = ServeArgs {
            config: Some(path),
            id: Some(3),
            ..Default::default()
        };
        let cfg = args.resolve().expect("valid");
        assert_eq!(cfg.id, 3);
        assert_eq!(cfg.client_addr, "127.0.0.1:9000");
        assert_eq!(cfg.heartbeat_ms, 50);
        assert_eq!(cfg.raft_addr, NodeConfig::default().raft_addr);
    }

    #[test]
    fn bad_values_name_the_field() {
        let args = ServeArgs {
            id: Some(0),
            ..Default::default()
        };
        assert!(matches!(args.resolve(), Err(ConfigError::Invalid { field: "id", .. })));
        let args = ServeArgs {
            client_addr: Some("nowhere".into()),
            ..Default::default()
        };
        assert!(matches!(
            args.resolve(),
            Err(ConfigError::Invalid {
                field: "client_addr",
                ..
            })
        ));
        let args = ServeArgs {
            election_timeout_min_ms: Some(50),
            ..Default::default()
        };
        assert!(matches!(
            args.resolve(),
            Err(ConfigError::Invalid {
                field: "election_timeout_min_ms",
                ..
            })
        ));
    }

    #[test]
    fn predict_settings_come_from_file_and_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "predict_probe_timeout_ms = 900\npredict_phi_threshold = 5.5\n").expect("write");
        let args = ServeArgs {
            config: Some(path),
            predict_enabled: Some(false),
            ..Default::default()
        };
        let cfg = args.resolve().expect("valid");
        assert_eq!(cfg.predict_probe_timeout_ms, 900);
        assert_eq!(cfg.predict_phi_threshold, 5.5);
        assert!(!cfg.predict_enabled);
        let args = ServeArgs {
            predict_suspect_threshold_permille: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            args.resolve(),
            Err(ConfigError::Invalid {
                field: "predict_suspect_threshold_permille",
                ..
            })
        ));
        let args = ServeArgs {
            predict_phi_threshold: Some(f64::NAN),
            ..Default::default()
        };
        assert!(matches!(
            args.resolve(),
            Err(ConfigError::Invalid {
                field: "predict_phi_threshold",
                ..
            })
        ));
    }
}
