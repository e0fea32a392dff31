//! Node settings, each declared once. A setting is a field of one of the
//! groups below ([`NodeSettings`] `[node]`, [`RaftSettings`] `[raft]`,
//! [`EventSettings`] `[events]`, [`ClockSettings`] `[clock]`,
//! [`HealthSettings`] `[health]`, [`HandoverSettings`] `[handover]`,
//! [`PredictSettings`] `[predict]`, [`TlsSettings`] `[tls]`); that field carries its flag, its
//! `DRIFTLOCK_*` environment variable, its default and its help. clap builds
//! `driftlock serve` and its `--help` from it, serde the `[group] key` of the
//! TOML file, and a missing key takes the default clap declares (the
//! defaults are what an empty command line parses to, as openraft's own
//! `Config` does). The clap id of a setting is its TOML path, `group.key`.
//!
//! Precedence: flag > environment > file > default. clap's
//! [`clap::ArgMatches::value_source`] tells which settings the user gave on
//! the command line or in the environment; only those override the file.
//! Unknown keys in the file are refused, all of them named; a flat key of
//! the old ungrouped format is named with the group it moved to. Values out
//! of range are refused by [`NodeConfig::validate`], naming the setting.
//!
//! This file declares the settings; `serve.rs` turns a command line, the
//! environment and a file into them, `validate.rs` checks them.

use std::path::PathBuf;

use clap::{ArgAction, Args, Command, FromArgMatches};
use serde::{Deserialize, Serialize};

mod serve;
mod validate;

pub use serve::{ServeArgs, UNSAFE_CLUSTER_TIME_SPEEDUP};

/// Every setting of one node: what the file holds and what `serve` runs
/// with after merging defaults, file, environment and flags.
#[derive(Args, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Identity, listen addresses, data directory.
    #[command(flatten)]
    pub node: NodeSettings,
    /// Raft timing, snapshots and the idle tick.
    #[command(flatten)]
    pub raft: RaftSettings,
    /// The event buffer behind `observe`.
    #[command(flatten)]
    pub events: EventSettings,
    /// Clock drift measurement.
    #[command(flatten)]
    pub clock: ClockSettings,
    /// How often this node samples and reports its health, and the drill
    /// override of its tier.
    #[command(flatten)]
    pub health: HealthSettings,
    /// Automatic warm handover and leader transfer.
    #[command(flatten)]
    pub handover: HandoverSettings,
    /// Predictive failure analysis.
    #[command(flatten)]
    pub predict: PredictSettings,
    /// The certificates both ports run mutual TLS with.
    #[command(flatten)]
    pub tls: TlsSettings,
}

/// `[node]`: who this node is and where it listens.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[command(next_help_heading = "Node [node]")]
pub struct NodeSettings {
    /// Raft node id: > 0 and unique in the cluster.
    #[arg(id = "node.id", long = "id", env = "DRIFTLOCK_ID", default_value_t = 1)]
    pub id: u64,
    /// Address (ip:port) this node listens on and advertises for
    /// node-to-node Raft traffic and clock sampling.
    #[arg(
        id = "node.raft_addr",
        long = "raft-addr",
        env = "DRIFTLOCK_RAFT_ADDR",
        default_value = "127.0.0.1:7401"
    )]
    pub raft_addr: String,
    /// Address (ip:port) this node listens on and advertises for the client
    /// API.
    #[arg(
        id = "node.client_addr",
        long = "client-addr",
        env = "DRIFTLOCK_CLIENT_ADDR",
        default_value = "127.0.0.1:7301"
    )]
    pub client_addr: String,
    /// Directory of this node's sled store (created if missing).
    #[arg(
        id = "node.data_dir",
        long = "data-dir",
        env = "DRIFTLOCK_DATA_DIR",
        default_value = "./data/node1"
    )]
    pub data_dir: PathBuf,
    /// Address (ip:port) of the HTTP endpoint: Prometheus `GET /metrics`,
    /// probes `GET /healthz` and `GET /readyz` (plain HTTP: bind it where
    /// only monitoring reaches); unset = no endpoint.
    #[arg(id = "node.metrics_addr", long = "metrics-addr", env = "DRIFTLOCK_METRICS_ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
}

/// `[raft]`: Raft timing, snapshots and the idle tick.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[command(next_help_heading = "Raft [raft]")]
pub struct RaftSettings {
    /// Interval between the leader's heartbeats, ms; also openraft's
    /// deadline for a replication RPC.
    #[arg(
        id = "raft.heartbeat_ms",
        long = "heartbeat-ms",
        env = "DRIFTLOCK_HEARTBEAT_MS",
        default_value_t = 100
    )]
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, ms; must exceed
    /// heartbeat_ms.
    #[arg(
        id = "raft.election_timeout_min_ms",
        long = "election-timeout-min-ms",
        env = "DRIFTLOCK_ELECTION_TIMEOUT_MIN_MS",
        default_value_t = 300
    )]
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, ms; must exceed
    /// election_timeout_min_ms.
    #[arg(
        id = "raft.election_timeout_max_ms",
        long = "election-timeout-max-ms",
        env = "DRIFTLOCK_ELECTION_TIMEOUT_MAX_MS",
        default_value_t = 600
    )]
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and compact the log) after this many applied
    /// entries.
    #[arg(
        id = "raft.snapshot_every_entries",
        long = "snapshot-every-entries",
        env = "DRIFTLOCK_SNAPSHOT_EVERY_ENTRIES",
        default_value_t = 10_000
    )]
    pub snapshot_every_entries: u64,
    /// Entries already in a snapshot kept in the log for followers that lag
    /// a little: a follower further behind catches up by installing the
    /// snapshot instead (default 1000).
    #[arg(
        id = "raft.log_kept_after_snapshot",
        long = "log-kept-after-snapshot",
        env = "DRIFTLOCK_LOG_KEPT_AFTER_SNAPSHOT",
        default_value_t = 1_000
    )]
    pub log_kept_after_snapshot: u64,
    /// sled's page cache for the Raft log and the stored snapshot, MiB.
    /// The log is purged after each snapshot, so a small cache holds its
    /// working set; the state machine itself lives outside it.
    #[arg(
        id = "raft.store_cache_mib",
        long = "store-cache-mib",
        env = "DRIFTLOCK_STORE_CACHE_MIB",
        default_value_t = 32
    )]
    pub store_cache_mib: u64,
    /// Deadline of an AppendEntries that carries entries, ms: the follower
    /// writes and flushes up to 1 MiB of them before it answers. Heartbeats
    /// and votes keep openraft's heartbeat-based deadline.
    #[arg(
        id = "raft.rpc_timeout_ms",
        long = "raft-rpc-timeout-ms",
        env = "DRIFTLOCK_RAFT_RPC_TIMEOUT_MS",
        default_value_t = 1_000
    )]
    pub rpc_timeout_ms: u64,
    /// The leader commits a `Tick` after the log has been idle this long, so
    /// expiries happen without traffic, ms.
    #[arg(
        id = "raft.tick_interval_ms",
        long = "tick-interval-ms",
        env = "DRIFTLOCK_TICK_INTERVAL_MS",
        default_value_t = 200
    )]
    pub tick_interval_ms: u64,
}

/// `[events]`: the buffer `observe` long-polls read from.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[command(next_help_heading = "Events [events]")]
pub struct EventSettings {
    /// Applied events kept in memory for `observe` long-polls; an observer
    /// that falls further behind is told it missed events.
    #[arg(
        id = "events.buffer_len",
        long = "event-buffer-len",
        env = "DRIFTLOCK_EVENT_BUFFER_LEN",
        default_value_t = 100_000
    )]
    pub buffer_len: usize,
    /// Memory the buffered events may hold, MiB (estimated: each event's
    /// slot plus its encoded size); the oldest events go first when this or
    /// `buffer_len` is exceeded.
    #[arg(
        id = "events.buffer_mib",
        long = "event-buffer-mib",
        env = "DRIFTLOCK_EVENT_BUFFER_MIB",
        default_value_t = 16
    )]
    pub buffer_mib: u64,
}

/// `[clock]`: measuring this node's clock drift (docs/design.md "Clock
/// drift").
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[command(next_help_heading = "Clock [clock]")]
pub struct ClockSettings {
    /// Interval between clock samples (NTP and peers) and gossip rounds, ms.
    #[arg(
        id = "clock.interval_ms",
        long = "clock-interval-ms",
        env = "DRIFTLOCK_CLOCK_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub interval_ms: u64,
    /// NTP servers (host:port, comma-separated on the command line) sampled
    /// each interval; empty = peers only, which can widen the drift bound
    /// but never narrow it.
    #[arg(
        id = "clock.ntp_servers",
        long = "ntp-servers",
        env = "DRIFTLOCK_NTP_SERVERS",
        value_delimiter = ','
    )]
    pub ntp_servers: Vec<String>,
    /// Samples whose round trip is above this percentile of the recent ones
    /// are dropped as queueing, not clock (1–100).
    #[arg(
        id = "clock.rtt_percentile",
        long = "clock-rtt-percentile",
        env = "DRIFTLOCK_CLOCK_RTT_PERCENTILE",
        default_value_t = 90
    )]
    pub rtt_percentile: u8,
    /// Random peers this node gossips its clock view to per interval.
    #[arg(
        id = "clock.gossip_fanout",
        long = "clock-gossip-fanout",
        env = "DRIFTLOCK_CLOCK_GOSSIP_FANOUT",
        default_value_t = 2
    )]
    pub gossip_fanout: usize,
    /// Kalman process noise of the drift, ppm² per second (> 0).
    #[arg(
        id = "clock.q_drift_ppm2_per_s",
        long = "clock-q-drift-ppm2-per-s",
        env = "DRIFTLOCK_CLOCK_Q_DRIFT_PPM2_PER_S",
        default_value_t = 0.01
    )]
    pub q_drift_ppm2_per_s: f64,
    /// Kalman process noise of the offset, µs² per second (> 0).
    #[arg(
        id = "clock.q_offset_us2_per_s",
        long = "clock-q-offset-us2-per-s",
        env = "DRIFTLOCK_CLOCK_Q_OFFSET_US2_PER_S",
        default_value_t = 1.0
    )]
    pub q_offset_us2_per_s: f64,
    /// Worst-case rate error of this node's own clock once its peers have
    /// measured it, ppm (1–100000): the least this node stamps cluster time
    /// with as leader (ρ_hi) unless a usable NTP-anchored estimate proves a
    /// smaller one, and the least a peers-only estimate is widened to.
    /// Before any measurement `unmeasured_drift_bound_ppm` applies. Not the
    /// replicated `time.max_drift_ppm`, the worst case the state machine
    /// assumes for a node or client without a usable committed estimate.
    #[arg(
        id = "clock.local_drift_bound_ppm",
        long = "clock-local-drift-bound-ppm",
        env = "DRIFTLOCK_CLOCK_LOCAL_DRIFT_BOUND_PPM",
        default_value_t = 500
    )]
    pub local_drift_bound_ppm: u64,
    /// The bound this node stamps cluster time with while its own rate is
    /// not measured yet (after a start, or after a clock step restarted its
    /// estimate), ppm: the worst rate error its clock may have before any
    /// sample shows it (default 100 000 = 10 %; at least
    /// `local_drift_bound_ppm`, at most 500 000). Cluster time then runs
    /// that much slower than real time for the first few clock intervals,
    /// which is the safe side; a clock worse than this is outside what the
    /// safety argument covers until it is measured.
    #[arg(
        id = "clock.unmeasured_drift_bound_ppm",
        long = "clock-unmeasured-drift-bound-ppm",
        env = "DRIFTLOCK_CLOCK_UNMEASURED_DRIFT_BOUND_PPM",
        default_value_t = 100_000
    )]
    pub unmeasured_drift_bound_ppm: u64,
}

/// `[health]`: sampling this node's health (docs/design.md "Elections and
/// warm handover").
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[command(next_help_heading = "Health [health]")]
pub struct HealthSettings {
    /// How often this node samples its health and reports it to the leader,
    /// ms.
    #[arg(
        id = "health.interval_ms",
        long = "health-interval-ms",
        env = "DRIFTLOCK_HEALTH_INTERVAL_MS",
        default_value_t = 2_000
    )]
    pub interval_ms: u64,
    /// Forces this node's reported health tier (excellent, good, warning,
    /// critical) with synthetic samples: drills and tests only; unset in
    /// production.
    #[arg(id = "health.override", long = "health-override", env = "DRIFTLOCK_HEALTH_OVERRIDE")]
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_tier: Option<String>,
}

/// `[handover]`: what the leader does about a master or itself in poor
/// health (docs/design.md "Elections and warm handover").
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[command(next_help_heading = "Handover [handover]")]
pub struct HandoverSettings {
    /// Whether the leader hands an election's mastership to a healthier
    /// candidate when the master's tier is Warning or Critical, and moves
    /// its own Raft leadership when it is Critical (true/false).
    #[arg(
        id = "handover.auto",
        long = "auto-handover",
        env = "DRIFTLOCK_AUTO_HANDOVER",
        action = ArgAction::Set,
        default_value_t = true
    )]
    pub auto: bool,
    /// Time a handover has from its begin for the master's state, the
    /// candidate's acknowledgement and the master's relinquish, ms; then it
    /// is aborted and the master keeps its role.
    #[arg(
        id = "handover.ack_timeout_ms",
        long = "handover-ack-timeout-ms",
        env = "DRIFTLOCK_HANDOVER_ACK_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub ack_timeout_ms: u64,
    /// Least time between two automatic handovers of one election, and
    /// between two automatic Raft leader transfers (hysteresis), ms.
    #[arg(
        id = "handover.min_interval_ms",
        long = "handover-min-interval-ms",
        env = "DRIFTLOCK_HANDOVER_MIN_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub min_interval_ms: u64,
}

/// `[predict]`: the leader's predictive failure analysis (docs/design.md
/// "Predictive failure analysis").
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[command(next_help_heading = "Predictive failure analysis [predict]")]
pub struct PredictSettings {
    /// Whether the leader suspects sessions whose behaviour predicts a
    /// failure (shorter validity and a renewal probe, revocation if
    /// unanswered); profiling and hot-lock estimates run either way
    /// (true/false).
    #[arg(
        id = "predict.enabled",
        long = "predict-enabled",
        env = "DRIFTLOCK_PREDICT_ENABLED",
        action = ArgAction::Set,
        default_value_t = true
    )]
    pub enabled: bool,
    /// How often the leader scores every session, ms.
    #[arg(
        id = "predict.interval_ms",
        long = "predict-interval-ms",
        env = "DRIFTLOCK_PREDICT_INTERVAL_MS",
        default_value_t = 100
    )]
    pub interval_ms: u64,
    /// Phi-accrual value at which the phi term of the score is full (> 0).
    #[arg(
        id = "predict.phi_threshold",
        long = "predict-phi-threshold",
        env = "DRIFTLOCK_PREDICT_PHI_THRESHOLD",
        default_value_t = 8.0
    )]
    pub phi_threshold: f64,
    /// Keepalive gaps a session needs before phi is trusted (≥ 2).
    #[arg(
        id = "predict.min_keepalives",
        long = "predict-min-keepalives",
        env = "DRIFTLOCK_PREDICT_MIN_KEEPALIVES",
        default_value_t = 4
    )]
    pub min_keepalives: u32,
    /// Floor of the keepalive-gap standard deviation in phi, ms.
    #[arg(
        id = "predict.min_stddev_ms",
        long = "predict-min-stddev-ms",
        env = "DRIFTLOCK_PREDICT_MIN_STDDEV_MS",
        default_value_t = 100
    )]
    pub min_stddev_ms: u64,
    /// Weight of the phi term in the combined score, permille (1–1000).
    #[arg(
        id = "predict.phi_weight_permille",
        long = "predict-phi-weight-permille",
        env = "DRIFTLOCK_PREDICT_PHI_WEIGHT_PERMILLE",
        default_value_t = 800
    )]
    pub phi_weight_permille: u32,
    /// Weight of the isolation-forest term in the combined score, permille
    /// (0–1000).
    #[arg(
        id = "predict.forest_weight_permille",
        long = "predict-forest-weight-permille",
        env = "DRIFTLOCK_PREDICT_FOREST_WEIGHT_PERMILLE",
        default_value_t = 200
    )]
    pub forest_weight_permille: u32,
    /// Combined score at or above which a session is suspected, permille
    /// (1–1000).
    #[arg(
        id = "predict.suspect_threshold_permille",
        long = "predict-suspect-threshold-permille",
        env = "DRIFTLOCK_PREDICT_SUSPECT_THRESHOLD_PERMILLE",
        default_value_t = 800
    )]
    pub suspect_threshold_permille: u32,
    /// Time a suspected session has to answer its renewal probe, ms.
    #[arg(
        id = "predict.probe_timeout_ms",
        long = "predict-probe-timeout-ms",
        env = "DRIFTLOCK_PREDICT_PROBE_TIMEOUT_MS",
        default_value_t = 1_500
    )]
    pub probe_timeout_ms: u64,
    /// How often the isolation forest is retrained, ms.
    #[arg(
        id = "predict.retrain_ms",
        long = "predict-retrain-ms",
        env = "DRIFTLOCK_PREDICT_RETRAIN_MS",
        default_value_t = 10_000
    )]
    pub retrain_ms: u64,
    /// Acquire rate at or above which a lock counts as hot, per second
    /// (> 0).
    #[arg(
        id = "predict.hot_lock_rate_per_s",
        long = "predict-hot-lock-rate-per-s",
        env = "DRIFTLOCK_PREDICT_HOT_LOCK_RATE_PER_S",
        default_value_t = 2.0
    )]
    pub hot_lock_rate_per_s: f64,
}

/// `[tls]`: mutual TLS on both ports (docs/security.md). Either all three
/// files or `insecure`; with neither the node refuses to start.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[command(next_help_heading = "TLS [tls]")]
pub struct TlsSettings {
    /// PEM certificate of the cluster CA: the only root this node trusts,
    /// for clients and peers alike (`driftlock cert create-ca`).
    #[arg(id = "tls.ca", long = "tls-ca", env = "DRIFTLOCK_TLS_CA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// PEM certificate of this node, issued by the CA for its id
    /// (`driftlock cert create-node ID`); re-read on SIGHUP.
    #[arg(id = "tls.cert", long = "tls-cert", env = "DRIFTLOCK_TLS_CERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of this node's certificate; re-read on SIGHUP.
    #[arg(id = "tls.key", long = "tls-key", env = "DRIFTLOCK_TLS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Plain TCP on both ports, no certificates: anyone who reaches a port
    /// can do anything. Tests only; the node logs a warning.
    #[arg(
        id = "tls.insecure",
        long = "insecure",
        env = "DRIFTLOCK_INSECURE",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        default_value_t = false
    )]
    pub insecure: bool,
    /// Time a new connection has to complete its TLS handshake before it is
    /// dropped, ms.
    #[arg(
        id = "tls.handshake_timeout_ms",
        long = "tls-handshake-timeout-ms",
        env = "DRIFTLOCK_TLS_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub handshake_timeout_ms: u64,
}

/// What an empty command line parses to, with the environment ignored: the
/// one place a group's defaults come from (its `Default`, hence also the
/// value of a key missing from the file).
fn declared_defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults")).mut_args(|arg| arg.env(None::<&'static str>));
    match command
        .try_get_matches_from(["defaults"])
        .and_then(|matches| T::from_arg_matches(&matches))
    {
        Ok(defaults) => defaults,
        // Only a default that does not parse as its own type gets here: a
        // bug in the declaration above, which the unit tests catch.
        Err(e) => panic!("the declared defaults of the node settings do not parse: {e}"),
    }
}

macro_rules! defaults_from_declaration {
    ($($group:ty),* $(,)?) => {$(
        impl Default for $group {
            fn default() -> Self {
                declared_defaults()
            }
        }
    )*};
}

defaults_from_declaration!(
    NodeSettings,
    RaftSettings,
    EventSettings,
    ClockSettings,
    HealthSettings,
    HandoverSettings,
    PredictSettings,
    TlsSettings,
);

/// The declared settings, as clap sees them.
fn setting_args() -> Vec<clap::Arg> {
    NodeConfig::augment_args(Command::new("settings"))
        .get_arguments()
        .cloned()
        .collect()
}

/// The clap id, which is also the TOML path `group.key`, of every setting.
fn setting_ids() -> Vec<String> {
    setting_args()
        .iter()
        .map(|arg| arg.get_id().as_str().to_owned())
        .collect()
}

/// A configuration problem, naming the file, key or setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The `--config` path.
        path: PathBuf,
        /// The I/O error (e.g. the file does not exist or is not readable).
        source: std::io::Error,
    },
    /// The file is not valid TOML, has unknown keys or a mistyped value.
    #[error("config file {path}: {message}")]
    Parse {
        /// The `--config` path.
        path: PathBuf,
        /// What is wrong, naming every unknown key or the mistyped one.
        message: String,
    },
    /// A flag or environment value could not be laid over the file.
    #[error("command line: {0}")]
    Flags(String),
    /// A value is out of range, or two settings contradict each other.
    #[error("invalid setting {field} (--{flag}): {message}")]
    Invalid {
        /// The setting's TOML path, `group.key`.
        field: &'static str,
        /// Its command-line flag, without the dashes.
        flag: String,
        /// What is wrong with the value, e.g. `must be > 0`.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_defaults_are_valid() {
        let d = NodeConfig::default();
        d.validate().expect("defaults validate");
        assert_eq!(d.node.id, 1);
        assert_eq!(d.raft.heartbeat_ms, 100);
        assert_eq!(d.clock.local_drift_bound_ppm, 500);
        assert!(d.handover.auto && d.predict.enabled);
        assert_eq!(d.node.metrics_addr, None);
        assert!(d.clock.ntp_servers.is_empty());
    }
}
