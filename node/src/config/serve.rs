//! How `driftlock serve` arrives at a [`NodeConfig`]: its command line
//! (the settings plus the flags that are not settings), the environment
//! and the TOML file, merged flag > environment > file > default, with
//! every unknown file key named.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command, FromArgMatches};

use super::{setting_args, setting_ids, ConfigError, NodeConfig};

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
    fn an_empty_command_line_is_the_defaults() {
        assert_eq!(
            serve(&[]).expect("parses").resolve().expect("valid"),
            NodeConfig::default()
        );
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
        let text = include_str!("../../../docs/node.toml");
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

    /// Fuzz target of the config file parser (a file an operator or a
    /// deployment tool wrote): random text and mutations of docs/node.toml
    /// (bytes overwritten, inserted, removed; huge numbers; truncation),
    /// parsed and validated. It may refuse, never panic.
    /// `DRIFTLOCK_FUZZ_CASES` raises the number of cases (default 512).
    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::Index;

        const SAMPLE: &str = include_str!("../../../docs/node.toml");

        fn mutated() -> impl Strategy<Value = String> {
            let edits = proptest::collection::vec((any::<Index>(), 0u8..4, any::<char>()), 0..6);
            (edits, proptest::option::of(any::<Index>())).prop_map(|(edits, cut)| {
                let mut text: Vec<char> = SAMPLE.chars().collect();
                for (at, kind, c) in edits {
                    if text.is_empty() {
                        text.push(c);
                        continue;
                    }
                    let p = at.index(text.len());
                    match kind {
                        0 => text[p] = c,
                        1 => text.insert(p, c),
                        2 => {
                            text.remove(p);
                        }
                        _ => text.splice(p..p, "99999999999999999999999".chars()).for_each(drop),
                    }
                }
                if let Some(cut) = cut {
                    text.truncate(cut.index(text.len() + 1));
                }
                text.into_iter().collect()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: std::env::var("DRIFTLOCK_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn config_files(text in prop_oneof![any::<String>(), "[a-z_.\\[\\]= \n0-9\"]{0,200}", mutated()]) {
                if let Ok(config) = parse_toml(&text) {
                    let _ = config.validate();
                }
            }
        }
    }
}
