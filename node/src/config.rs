//! Node settings, each declared once. A setting is a field of one of the
//! groups below ([`NodeSettings`] `[node]`, [`RaftSettings`] `[raft]`,
//! [`EventSettings`] `[events]`, [`ClockSettings`] `[clock]`,
//! [`HealthSettings`] `[health]`, [`HandoverSettings`] `[handover]`,
//! [`PredictSettings`] `[predict]`); that field carries its flag, its
//! `DRIFTLOCK_*` environment variable, its default and its help. clap builds
//! `driftlock serve` and its `--help` from it, serde the `[group] key` of the
//! TOML file, and a missing key takes the default clap declares (the
//! defaults are what an empty command line parses to, as openraft's own
//! `Config` does). The clap id of a setting is its TOML path, `group.key`.
//!
//! Precedence: flag > environment > file > default. clap's
//! [`ArgMatches::value_source`] tells which settings the user gave on the
//! command line or in the environment; only those override the file.
//! Unknown keys in the file are refused, all of them named; a flat key of
//! the old ungrouped format is named with the group it moved to. Values out
//! of range are refused by [`NodeConfig::validate`], naming the setting.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches};
use serde::{Deserialize, Serialize};

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
    /// Health sampling.
    #[command(flatten)]
    pub health: HealthSettings,
    /// Automatic warm handover and leader transfer.
    #[command(flatten)]
    pub handover: HandoverSettings,
    /// Predictive failure analysis.
    #[command(flatten)]
    pub predict: PredictSettings,
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
    /// Address (ip:port) of the Prometheus endpoint (`GET /metrics`); unset
    /// = no endpoint.
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
    /// Accepted and checked (> 0) but not read: openraft derives its RPC
    /// deadlines from heartbeat_ms (replication) and its snapshot timeout,
    /// ms.
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
    /// Worst-case rate error of this node's own clock, ppm (1–100000),
    /// assumed until an NTP-anchored estimate is usable: the bound this node
    /// stamps cluster time with as leader (ρ_hi), and the least a peers-only
    /// estimate is widened to. Not the replicated `time.max_drift_ppm`, the
    /// worst case the state machine assumes for a node or client without a
    /// usable committed estimate.
    #[arg(
        id = "clock.local_drift_bound_ppm",
        long = "clock-local-drift-bound-ppm",
        env = "DRIFTLOCK_CLOCK_LOCAL_DRIFT_BOUND_PPM",
        default_value_t = 500
    )]
    pub local_drift_bound_ppm: u64,
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
    /// Time a handover candidate has to acknowledge the master's state, ms.
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
);

/// How much faster than the local clock cluster time runs under
/// `--unsafe-fast-cluster-time`.
pub const UNSAFE_CLUSTER_TIME_SPEEDUP: u64 = 4;

/// The command line of `driftlock serve` as clap declares it.
#[derive(Args, Clone, Debug)]
struct ServeFlags {
    /// TOML configuration file: `[group]` tables of the keys shown as
    /// `[file: group.key]` below (docs/node.toml lists them all).
    #[arg(long, env = "DRIFTLOCK_CONFIG")]
    config: Option<PathBuf>,
    /// UNSAFE, for the jepsen suite's negative test only: the leader runs
    /// cluster time 4× faster than its clock, so locks overlap (breaks
    /// docs/design.md "Time", rule 2). Flag only: never read from the file
    /// or the environment.
    #[arg(long)]
    unsafe_fast_cluster_time: bool,
    /// Exit when the process that started this one exits (used by `dev`).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
    /// Last, so that the group headings it sets do not spill onto the flags
    /// above.
    #[command(flatten)]
    settings: NodeConfig,
}

/// `driftlock serve`'s arguments: the flags that are not settings, and the
/// settings given on the command line or in the environment, which
/// [`ServeArgs::resolve`] lays over the file.
#[derive(Clone, Debug)]
pub struct ServeArgs {
    /// The TOML file (`--config` / `DRIFTLOCK_CONFIG`), if any.
    pub config: Option<PathBuf>,
    /// `--unsafe-fast-cluster-time`: the jepsen suite's deliberately broken
    /// mode; see [`UNSAFE_CLUSTER_TIME_SPEEDUP`].
    pub unsafe_fast_cluster_time: bool,
    /// `--exit-with-parent`: stop when the parent process is gone.
    pub exit_with_parent: bool,
    /// The parsed command line with every setting that took its default
    /// cleared, so only what the user set explicitly is left.
    explicit: ArgMatches,
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = ServeFlags::from_arg_matches(matches)?;
        let mut explicit = matches.clone();
        for id in setting_ids() {
            let given = matches!(
                matches.value_source(&id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !given {
                // The id is declared in this very command, so the only error
                // (an unknown id) cannot happen.
                let _ = explicit.try_clear_id(&id);
            }
        }
        Ok(ServeArgs {
            config: flags.config,
            unsafe_fast_cluster_time: flags.unsafe_fast_cluster_time,
            exit_with_parent: flags.exit_with_parent,
            explicit,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = ServeArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for ServeArgs {
    fn augment_args(cmd: Command) -> Command {
        show_file_keys(ServeFlags::augment_args(cmd))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        show_file_keys(ServeFlags::augment_args_for_update(cmd))
    }
}

/// Names the value of every setting after its key and adds
/// `[file: group.key]` to its help.
fn show_file_keys(cmd: Command) -> Command {
    cmd.mut_args(|arg| {
        let id = arg.get_id().as_str().to_owned();
        let Some((_, key)) = id.split_once('.') else {
            return arg;
        };
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let long_help = arg.get_long_help().map(ToString::to_string);
        let arg = arg.value_name(key.to_uppercase()).help(format!("{help} [file: {id}]"));
        match long_help {
            Some(long) => arg.long_help(format!("{long}\n[file: {id}]")),
            None => arg,
        }
    })
}

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
        /// Cause.
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
        /// What is wrong.
        message: String,
    },
}

impl ServeArgs {
    /// Merges defaults, the file (if any), the environment and the flags
    /// into a checked configuration.
    pub fn resolve(&self) -> Result<NodeConfig, ConfigError> {
        let config = self.merge()?;
        config.validate()?;
        Ok(config)
    }

    /// The flags that are not settings, for [`crate::app::run`].
    pub fn run_options(&self) -> crate::app::RunOptions {
        crate::app::RunOptions {
            exit_with_parent: self.exit_with_parent,
            unsafe_fast_cluster_time: self.unsafe_fast_cluster_time,
        }
    }

    /// The file (or the defaults) with the explicitly given settings laid
    /// over it, unchecked.
    fn merge(&self) -> Result<NodeConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => parse_file(path)?,
            None => NodeConfig::default(),
        };
        config
            .update_from_arg_matches(&self.explicit)
            .map_err(|e| ConfigError::Flags(e.to_string().trim().to_owned()))?;
        Ok(config)
    }
}

fn parse_file(path: &Path) -> Result<NodeConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Parses a config file's text; missing keys take their defaults.
fn parse_toml(text: &str) -> Result<NodeConfig, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.to_string().trim().to_owned())?;
    let unknown = unknown_keys(&table);
    if !unknown.is_empty() {
        return Err(unknown.join("; "));
    }
    // serde's own refusal of unknown fields stays as a second line of
    // defence; it names only the first one, hence the walk above.
    toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())
}

/// Old flat keys that were renamed, not just grouped.
const RENAMED_KEYS: &[(&str, &str)] = &[("max_drift_ppm", "clock.local_drift_bound_ppm")];

/// One message per key of `table` that is no setting, with where the key
/// went if it is a flat key of the old ungrouped format.
fn unknown_keys(table: &toml::Table) -> Vec<String> {
    let args = setting_args();
    let ids: Vec<&str> = args.iter().map(|a| a.get_id().as_str()).collect();
    let is_group = |key: &str| ids.iter().any(|id| id.split_once('.').is_some_and(|(g, _)| g == key));
    let mut unknown = Vec::new();
    for (key, value) in table {
        if is_group(key) {
            if let Some(group) = value.as_table() {
                for sub in group.keys() {
                    let path = format!("{key}.{sub}");
                    if !ids.contains(&path.as_str()) {
                        unknown.push(format!("unknown key `{sub}` in [{key}]"));
                    }
                }
            }
            continue;
        }
        // Every old flat key was also the name of its flag.
        let flag = key.replace('_', "-");
        let grouped = args
            .iter()
            .find(|a| a.get_long() == Some(flag.as_str()))
            .map(|a| ("settings are grouped", a.get_id().as_str()));
        let renamed = RENAMED_KEYS
            .iter()
            .find(|(old, _)| old == key)
            .map(|(_, new)| ("renamed and grouped", *new));
        unknown.push(match grouped.or(renamed) {
            Some((why, id)) => {
                let (group, new) = id.split_once('.').unwrap_or(("?", id));
                format!("unknown key `{key}` ({why}: it is now `{new}` in [{group}])")
            }
            None => format!("unknown key `{key}`"),
        });
    }
    unknown
}

/// The command-line flag of the setting with TOML path `id`.
fn flag_of(id: &str) -> String {
    setting_args()
        .iter()
        .find(|a| a.get_id().as_str() == id)
        .and_then(|a| a.get_long().map(str::to_owned))
        .unwrap_or_else(|| id.to_owned())
}

/// The error for setting `field` (its TOML path).
fn invalid(field: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid {
        field,
        flag: flag_of(field),
        message,
    }
}

/// Checks a condition on one setting.
fn check(ok: bool, field: &'static str, message: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(field, message()))
    }
}

fn positive(value: u64, field: &'static str) -> Result<(), ConfigError> {
    check(value > 0, field, || "must be > 0".into())
}

fn positive_number(value: f64, field: &'static str) -> Result<(), ConfigError> {
    check(value.is_finite() && value > 0.0, field, || {
        "must be a positive number".into()
    })
}

fn socket_addr(addr: &str, field: &'static str) -> Result<(), ConfigError> {
    check(addr.parse::<std::net::SocketAddr>().is_ok(), field, || {
        format!("'{addr}' is not an ip:port address")
    })
}

impl NodeConfig {
    /// Checks ranges and relations between settings; an error names the
    /// first setting found wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = &self.node;
        check(n.id > 0, "node.id", || "must be > 0".into())?;
        socket_addr(&n.raft_addr, "node.raft_addr")?;
        socket_addr(&n.client_addr, "node.client_addr")?;
        if let Some(m) = &n.metrics_addr {
            socket_addr(m, "node.metrics_addr")?;
        }

        let r = &self.raft;
        positive(r.heartbeat_ms, "raft.heartbeat_ms")?;
        check(
            r.election_timeout_min_ms > r.heartbeat_ms,
            "raft.election_timeout_min_ms",
            || "must exceed raft.heartbeat_ms".into(),
        )?;
        check(
            r.election_timeout_max_ms > r.election_timeout_min_ms,
            "raft.election_timeout_max_ms",
            || "must exceed raft.election_timeout_min_ms".into(),
        )?;
        positive(r.snapshot_every_entries, "raft.snapshot_every_entries")?;
        positive(r.rpc_timeout_ms, "raft.rpc_timeout_ms")?;
        positive(r.tick_interval_ms, "raft.tick_interval_ms")?;

        positive(self.events.buffer_len as u64, "events.buffer_len")?;

        let c = &self.clock;
        positive(c.interval_ms, "clock.interval_ms")?;
        for server in &c.ntp_servers {
            let ok = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            check(ok, "clock.ntp_servers", || format!("'{server}' is not host:port"))?;
        }
        check((1..=100).contains(&c.rtt_percentile), "clock.rtt_percentile", || {
            "must be in [1, 100]".into()
        })?;
        positive_number(c.q_drift_ppm2_per_s, "clock.q_drift_ppm2_per_s")?;
        positive_number(c.q_offset_us2_per_s, "clock.q_offset_us2_per_s")?;
        check(
            (1..=100_000).contains(&c.local_drift_bound_ppm),
            "clock.local_drift_bound_ppm",
            || "must be in [1, 100000]".into(),
        )?;

        positive(self.health.interval_ms, "health.interval_ms")?;
        if let Some(t) = &self.health.override_tier {
            driftlock_sensors::health::parse_tier(t).map_err(|e| invalid("health.override", e))?;
        }

        positive(self.handover.ack_timeout_ms, "handover.ack_timeout_ms")?;

        let p = &self.predict;
        positive(p.interval_ms, "predict.interval_ms")?;
        positive_number(p.phi_threshold, "predict.phi_threshold")?;
        check(p.min_keepalives >= 2, "predict.min_keepalives", || {
            "must be >= 2 (phi needs a spread)".into()
        })?;
        positive(p.min_stddev_ms, "predict.min_stddev_ms")?;
        check(p.phi_weight_permille > 0, "predict.phi_weight_permille", || {
            "must be > 0 (phi is the primary detector)".into()
        })?;
        check(p.phi_weight_permille <= 1000, "predict.phi_weight_permille", || {
            "must be in [1, 1000]".into()
        })?;
        check(
            p.forest_weight_permille <= 1000,
            "predict.forest_weight_permille",
            || "must be in [0, 1000]".into(),
        )?;
        check(
            (1..=1000).contains(&p.suspect_threshold_permille),
            "predict.suspect_threshold_permille",
            || "must be in [1, 1000]".into(),
        )?;
        positive(p.probe_timeout_ms, "predict.probe_timeout_ms")?;
        positive(p.retrain_ms, "predict.retrain_ms")?;
        positive_number(p.hot_lock_rate_per_s, "predict.hot_lock_rate_per_s")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// `driftlock serve` alone, as the binary declares it.
    #[derive(Parser, Debug)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn serve(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
        Serve::try_parse_from(std::iter::once("serve").chain(flags.iter().copied())).map(|s| s.args)
    }

    fn write_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).expect("write");
        let path = path.to_str().expect("utf-8 path").to_owned();
        (dir, path)
    }

    fn table(config: &NodeConfig) -> toml::Table {
        toml::Table::try_from(config).expect("serializes")
    }

    /// The `group.key` paths whose values differ between two configs.
    fn changed_keys(a: &NodeConfig, b: &NodeConfig) -> Vec<String> {
        let (a, b) = (table(a), table(b));
        let empty = toml::Table::new();
        let mut changed = Vec::new();
        for group in a.keys().chain(b.keys()).collect::<std::collections::BTreeSet<_>>() {
            let ga = a.get(group).and_then(|v| v.as_table()).unwrap_or(&empty);
            let gb = b.get(group).and_then(|v| v.as_table()).unwrap_or(&empty);
            for key in ga.keys().chain(gb.keys()).collect::<std::collections::BTreeSet<_>>() {
                if ga.get(key) != gb.get(key) {
                    changed.push(format!("{group}.{key}"));
                }
            }
        }
        changed
    }

    #[test]
    fn declared_defaults_are_valid_and_ignore_the_environment() {
        let d = NodeConfig::default();
        d.validate().expect("defaults validate");
        assert_eq!(d.node.id, 1);
        assert_eq!(d.raft.heartbeat_ms, 100);
        assert_eq!(d.clock.local_drift_bound_ppm, 500);
        assert!(d.handover.auto && d.predict.enabled);
        assert_eq!(d.node.metrics_addr, None);
        assert!(d.clock.ntp_servers.is_empty());
        // An empty command line without a file is the defaults.
        assert_eq!(serve(&[]).expect("parses").resolve().expect("valid"), d);
    }

    /// Walks the declaration: every setting has a flag, the environment
    /// variable named after it and a TOML key, a value given by its flag
    /// changes that key and nothing else, and the value round-trips
    /// through the file. A setting added to only one of clap and serde
    /// fails here.
    #[test]
    fn every_setting_is_reachable_by_flag_env_and_file() {
        let defaults = NodeConfig::default();
        let ids = setting_ids();
        // The 35 settings there were when this walk was written, at least.
        assert!(ids.len() >= 35, "{} settings", ids.len());
        let mut all_flags: Vec<String> = Vec::new();
        for arg in setting_args() {
            let id = arg.get_id().as_str().to_owned();
            let (group, key) = id.split_once('.').expect("id is group.key");
            let long = arg.get_long().unwrap_or_else(|| panic!("{id} has no flag"));
            let env = arg.get_env().unwrap_or_else(|| panic!("{id} has no env name"));
            assert_eq!(
                env.to_str(),
                Some(format!("DRIFTLOCK_{}", long.to_uppercase().replace('-', "_")).as_str()),
                "{id}"
            );
            // Some value the flag accepts that differs from the default.
            let set = ["true", "false", "7"]
                .iter()
                .find_map(|value| {
                    let flag = format!("--{long}");
                    let config = serve(&[&flag, value]).ok()?.merge().ok()?;
                    (config != defaults).then(|| (flag, value.to_string(), config))
                })
                .unwrap_or_else(|| panic!("no flag value changes {id}"));
            let (flag, value, config) = set;
            assert_eq!(changed_keys(&defaults, &config), vec![id.clone()], "{flag} {value}");
            all_flags.extend([flag, value]);
            // The same value written under its key in a file.
            let item = table(&config)[group][key].clone();
            let text = format!("[{group}]\n{key} = {item}\n");
            assert_eq!(parse_toml(&text).expect("parses"), config, "{text}");
        }
        // All at once: every key changes, and the whole file round-trips.
        let flags: Vec<&str> = all_flags.iter().map(String::as_str).collect();
        let everything = serve(&flags).expect("parses").merge().expect("merges");
        let mut changed = changed_keys(&defaults, &everything);
        let mut expected = ids.clone();
        changed.sort();
        expected.sort();
        assert_eq!(changed, expected);
        // And the file has no key without a flag.
        let mut keys: Vec<String> = table(&everything)
            .iter()
            .flat_map(|(group, keys)| {
                let keys = keys.as_table().unwrap_or_else(|| panic!("{group} is not a table"));
                keys.keys().map(move |key| format!("{group}.{key}"))
            })
            .collect();
        keys.sort();
        assert_eq!(keys, expected, "every key of the file is a setting with a flag");
        let text = toml::to_string(&everything).expect("serializes");
        assert_eq!(parse_toml(&text).expect("parses"), everything, "{text}");
    }

    #[test]
    fn the_sample_config_in_the_docs_lists_every_setting_with_its_default() {
        let text = include_str!("../../docs/node.toml");
        let sample = parse_toml(text).expect("docs/node.toml parses");
        sample.validate().expect("docs/node.toml is valid");
        assert_eq!(sample, NodeConfig::default(), "docs/node.toml shows the defaults");
        for id in setting_ids() {
            let (group, key) = id.split_once('.').expect("group.key");
            let section = text
                .split("\n[")
                .find(|s| s.starts_with(&format!("{group}]")))
                .unwrap_or_else(|| panic!("docs/node.toml has no [{group}]"));
            assert!(
                section
                    .lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} ="))),
                "docs/node.toml does not show {id}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name_all_of_them() {
        let err = parse_toml("[raft]\nheartbeat_msec = 5\n[nodes]\nid = 2\n").unwrap_err();
        assert!(err.contains("heartbeat_msec") && err.contains("nodes"), "{err}");
        // A flat key of the old format says where it went.
        let err = parse_toml("id = 1\nclock_interval_ms = 5\nelection_timeout = 5\n").unwrap_err();
        assert!(err.contains("`id` in [node]"), "{err}");
        assert!(err.contains("`interval_ms` in [clock]"), "{err}");
        assert!(err.contains("unknown key `election_timeout`"), "{err}");
        let err = parse_toml("max_drift_ppm = 100\n").unwrap_err();
        assert!(err.contains("`local_drift_bound_ppm` in [clock]"), "{err}");
    }

    /// Every key of the old ungrouped file format, and where it went.
    const OLD_KEYS: &[(&str, &str)] = &[
        ("id", "node.id"),
        ("raft_addr", "node.raft_addr"),
        ("client_addr", "node.client_addr"),
        ("data_dir", "node.data_dir"),
        ("metrics_addr", "node.metrics_addr"),
        ("heartbeat_ms", "raft.heartbeat_ms"),
        ("election_timeout_min_ms", "raft.election_timeout_min_ms"),
        ("election_timeout_max_ms", "raft.election_timeout_max_ms"),
        ("snapshot_every_entries", "raft.snapshot_every_entries"),
        ("raft_rpc_timeout_ms", "raft.rpc_timeout_ms"),
        ("tick_interval_ms", "raft.tick_interval_ms"),
        ("event_buffer_len", "events.buffer_len"),
        ("ntp_servers", "clock.ntp_servers"),
        ("clock_interval_ms", "clock.interval_ms"),
        ("clock_rtt_percentile", "clock.rtt_percentile"),
        ("clock_gossip_fanout", "clock.gossip_fanout"),
        ("clock_q_drift_ppm2_per_s", "clock.q_drift_ppm2_per_s"),
        ("clock_q_offset_us2_per_s", "clock.q_offset_us2_per_s"),
        ("max_drift_ppm", "clock.local_drift_bound_ppm"),
        ("health_interval_ms", "health.interval_ms"),
        ("health_override", "health.override"),
        ("auto_handover", "handover.auto"),
        ("handover_ack_timeout_ms", "handover.ack_timeout_ms"),
        ("handover_min_interval_ms", "handover.min_interval_ms"),
        ("predict_enabled", "predict.enabled"),
        ("predict_interval_ms", "predict.interval_ms"),
        ("predict_phi_threshold", "predict.phi_threshold"),
        ("predict_min_keepalives", "predict.min_keepalives"),
        ("predict_min_stddev_ms", "predict.min_stddev_ms"),
        ("predict_phi_weight_permille", "predict.phi_weight_permille"),
        ("predict_forest_weight_permille", "predict.forest_weight_permille"),
        (
            "predict_suspect_threshold_permille",
            "predict.suspect_threshold_permille",
        ),
        ("predict_probe_timeout_ms", "predict.probe_timeout_ms"),
        ("predict_retrain_ms", "predict.retrain_ms"),
        ("predict_hot_lock_rate_per_s", "predict.hot_lock_rate_per_s"),
    ];

    #[test]
    fn every_old_flat_key_is_pointed_at_its_new_place() {
        let ids = setting_ids();
        for (old, id) in OLD_KEYS {
            assert!(ids.iter().any(|i| i == id), "{id} is a setting");
            let (group, key) = id.split_once('.').expect("group.key");
            let err = parse_toml(&format!("{old} = 1\n")).unwrap_err();
            assert!(err.contains(&format!("it is now `{key}` in [{group}]")), "{old}: {err}");
        }
    }

    #[test]
    fn mistyped_value_is_rejected_naming_the_key() {
        let err = parse_toml("[node]\nid = \"two\"\n").unwrap_err();
        assert!(err.contains("id") && err.contains("invalid type"), "{err}");
        let err = parse_toml("raft = 5\n").unwrap_err();
        assert!(err.contains("raft"), "{err}");
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let (_dir, path) = write_file("[node]\nid = 2\nclient_addr = \"127.0.0.1:9000\"\n[raft]\nheartbeat_ms = 50\n");
        let cfg = serve(&["--config", &path, "--id", "3"])
            .expect("parses")
            .resolve()
            .expect("valid");
        assert_eq!(cfg.node.id, 3);
        assert_eq!(cfg.node.client_addr, "127.0.0.1:9000");
        assert_eq!(cfg.raft.heartbeat_ms, 50);
        assert_eq!(cfg.node.raft_addr, NodeConfig::default().node.raft_addr);
        // A flag that happens to equal the default still beats the file.
        let cfg = serve(&["--config", &path, "--heartbeat-ms", "100"])
            .expect("parses")
            .resolve()
            .expect("valid");
        assert_eq!(cfg.raft.heartbeat_ms, 100);
        assert_eq!(cfg.node.id, 2);
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        // A variable no other test reads, bound to one setting.
        const VAR: &str = "DRIFTLOCK_TEST_ONLY_TICK_INTERVAL_MS";
        std::env::set_var(VAR, "250");
        let command = Serve::command().mut_arg("raft.tick_interval_ms", |a| a.env(VAR));
        let (_dir, path) = write_file("[raft]\ntick_interval_ms = 400\nheartbeat_ms = 50\n");
        let parse = |flags: &[&str]| {
            let matches = command
                .clone()
                .try_get_matches_from(std::iter::once("serve").chain(flags.iter().copied()))
                .expect("parses");
            ServeArgs::from_arg_matches(&matches)
                .expect("args")
                .resolve()
                .expect("valid")
        };
        let cfg = parse(&["--config", &path]);
        assert_eq!(cfg.raft.tick_interval_ms, 250, "env beats file");
        assert_eq!(cfg.raft.heartbeat_ms, 50, "file beats default");
        let cfg = parse(&["--config", &path, "--tick-interval-ms", "300"]);
        assert_eq!(cfg.raft.tick_interval_ms, 300, "flag beats env");
        std::env::remove_var(VAR);
    }

    #[test]
    fn unsafe_fast_cluster_time_is_flag_only() {
        assert!(
            serve(&["--unsafe-fast-cluster-time"])
                .expect("parses")
                .unsafe_fast_cluster_time
        );
        assert!(!serve(&[]).expect("parses").unsafe_fast_cluster_time);
        let arg = Serve::command()
            .get_arguments()
            .find(|a| a.get_id() == "unsafe_fast_cluster_time")
            .cloned()
            .expect("declared");
        assert_eq!(arg.get_env(), None);
        assert!(parse_toml("unsafe_fast_cluster_time = true\n").is_err());
    }

    #[test]
    fn ntp_servers_split_on_commas() {
        let cfg = serve(&["--ntp-servers", "a.example:123,b.example:123"])
            .expect("parses")
            .resolve()
            .expect("valid");
        assert_eq!(cfg.clock.ntp_servers, ["a.example:123", "b.example:123"]);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let invalid = |flags: &[&str]| match serve(flags).expect("parses").resolve() {
            Err(ConfigError::Invalid { field, flag, .. }) => (field, flag),
            other => panic!("{flags:?}: expected Invalid, got {other:?}"),
        };
        assert_eq!(invalid(&["--id", "0"]), ("node.id", "id".to_owned()));
        assert_eq!(invalid(&["--client-addr", "nowhere"]).0, "node.client_addr");
        assert_eq!(
            invalid(&["--election-timeout-min-ms", "50"]).0,
            "raft.election_timeout_min_ms"
        );
        assert_eq!(
            invalid(&["--clock-local-drift-bound-ppm", "0"]),
            ("clock.local_drift_bound_ppm", "clock-local-drift-bound-ppm".to_owned())
        );
        assert_eq!(invalid(&["--health-override", "superb"]).0, "health.override");
        let message = serve(&["--election-timeout-min-ms", "50"])
            .expect("parses")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(message.contains("raft.election_timeout_min_ms") && message.contains("--election-timeout-min-ms"));
        // A value that is not a number is clap's error, naming the flag.
        let err = serve(&["--heartbeat-ms", "fast"]).unwrap_err().to_string();
        assert!(err.contains("--heartbeat-ms"), "{err}");
    }

    #[test]
    fn predict_settings_come_from_file_and_are_checked() {
        let (_dir, path) = write_file("[predict]\nprobe_timeout_ms = 900\nphi_threshold = 5.5\n");
        let cfg = serve(&["--config", &path, "--predict-enabled", "false"])
            .expect("parses")
            .resolve()
            .expect("valid");
        assert_eq!(cfg.predict.probe_timeout_ms, 900);
        assert_eq!(cfg.predict.phi_threshold, 5.5);
        assert!(!cfg.predict.enabled);
        let err = serve(&["--predict-suspect-threshold-permille", "0"])
            .expect("parses")
            .resolve();
        assert!(matches!(
            err,
            Err(ConfigError::Invalid {
                field: "predict.suspect_threshold_permille",
                ..
            })
        ));
        let err = serve(&["--predict-phi-threshold", "NaN"]).expect("parses").resolve();
        assert!(matches!(
            err,
            Err(ConfigError::Invalid {
                field: "predict.phi_threshold",
                ..
            })
        ));
    }

    #[test]
    fn help_lists_every_setting_under_its_group_with_its_key() {
        let help = Serve::command().render_long_help().to_string();
        for heading in [
            "Node [node]",
            "Raft [raft]",
            "Clock [clock]",
            "Predictive failure analysis [predict]",
        ] {
            assert!(help.contains(heading), "{heading}");
        }
        for id in setting_ids() {
            assert!(help.contains(&format!("[file: {id}]")), "{id} in --help");
        }
    }
}
