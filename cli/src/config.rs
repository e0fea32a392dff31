//! `driftlock cluster config get|set|diff`: the replicated configuration
//! (lease weights and bounds, limits, time bounds; docs/design.md
//! "Adaptive leases"). Reading it is open to every client;
//! changing it is for administrators (docs/security.md, "Policy model").
//! A change is made against the revision just read, so two operators
//! changing it at once cannot overwrite each other unseen: the second is
//! refused and runs again on the new configuration.
//!
//! Settings are named by dotted keys matching the TOML that `get` prints
//! (`lease.max_ttl_us`); values are integers of the setting's type, `_`
//! separators allowed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use driftlock_client::Client;
use driftlock_proto::{AdminRequest, Config, ConfigChange, ConfigView, Consistency, Query, QueryResult};

use crate::{connect, CmdResult, Endpoints};

/// The `driftlock cluster config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the replicated configuration in force as TOML, with the
    /// revision it was set at and the revision it was read at.
    Get {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Read the first endpoint's own applied state instead of asking
        /// the leader: what that node applies now (it may lag).
        #[arg(long)]
        serializable: bool,
    },
    /// Change settings (administrators only), e.g.
    /// `lease.max_ttl_us=60000000`; prints each change as key: old → new.
    Set {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Apply the settings of this TOML file first (as `get` prints it;
        /// keys it leaves out keep their value).
        #[arg(long)]
        file: Option<PathBuf>,
        /// KEY=VALUE pairs, applied after --file, in order.
        #[arg(value_parser = parse_setting, required_unless_present = "file")]
        settings: Vec<Setting>,
    },
    /// Show what `set --file FILE` would change, changing nothing; fails
    /// if the result would be refused.
    Diff {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// A TOML file as `get` prints it (keys it leaves out keep their
        /// value).
        file: PathBuf,
    },
}

/// One `KEY=VALUE` of `config set`, checked against the settings when the
/// command line is parsed: the key exists and the value has its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The dotted key, one of `Config::KEYS`.
    pub key: String,
    /// The value as given.
    pub value: String,
}

fn parse_setting(arg: &str) -> Result<Setting, String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("'{arg}' is not KEY=VALUE (e.g. lease.max_ttl_us=60000000)"))?;
    let (key, value) = (key.trim(), value.trim());
    // Checked on a scratch copy: the key exists and the value parses.
    Config::default().set_key(key, value).map_err(|e| e.to_string())?;
    Ok(Setting {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// Applies a TOML file's settings (sections of integer keys) to `config`.
fn apply_toml(config: &mut Config, text: &str) -> Result<(), String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    for (section, fields) in table {
        let toml::Value::Table(fields) = fields else {
            return Err(format!(
                "'{section}' is not a section: settings live under [lease], [limits] and [time]"
            ));
        };
        for (field, value) in fields {
            let key = format!("{section}.{field}");
            let value = match value {
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::String(s) => s,
                other => return Err(format!("config key '{key}': {other} is not an integer")),
            };
            config.set_key(&key, &value).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn read_toml(config: &mut Config, path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    apply_toml(config, &text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The configuration as `get` prints it: a comment saying which revision
/// and at which revision it was read, then one TOML section per part.
fn render(view: &ConfigView, read_at_index: u64) -> String {
    let origin = if view.revision == 0 {
        "the default of a new cluster".to_owned()
    } else {
        format!("set by log entry {}", view.revision)
    };
    let mut out = format!(
        "# replicated config in force: revision {}, {origin}; read at revision {read_at_index}\n",
        view.revision
    );
    let mut section = "";
    for key in Config::KEYS {
        let Some((s, field)) = key.split_once('.') else {
            continue;
        };
        if s != section {
            section = s;
            out.push_str(&format!("\n[{section}]\n"));
        }
        let value = view.config.get_key(key).unwrap_or_default();
        out.push_str(&format!("{field} = {value}\n"));
    }
    out
}

fn render_changes(changes: &[ConfigChange]) -> String {
    changes.iter().map(|c| format!("{c}\n")).collect()
}

/// The configuration in force, read linearizably from the leader, and the
/// revision it was read at.
async fn current(client: &Client) -> Result<(ConfigView, u64), String> {
    let reply = client
        .read(Query::Config, Consistency::Linearizable)
        .await
        .map_err(|e| e.to_string())?;
    match reply.result {
        QueryResult::Config(view) => Ok((view, reply.revision)),
        other => Err(format!("unexpected answer to a config read: {other:?}")),
    }
}

/// The configuration the first endpoint applies, from its own state.
async fn local(endpoints: &Endpoints) -> Result<(ConfigView, u64), String> {
    let timeout = Duration::from_secs(10);
    let first = endpoints.endpoints.first().ok_or("no endpoint given")?;
    let api = driftlock_proto::connect(first, timeout, &endpoints.security()?)
        .await
        .map_err(|e| e.to_string())?;
    let reply = api
        .read(
            driftlock_proto::context(timeout),
            Query::Config,
            Consistency::Serializable,
        )
        .await
        .map_err(|e| format!("{first}: {e}"))?
        .map_err(|e| format!("{first}: {e}"))?;
    match reply.result {
        QueryResult::Config(view) => Ok((view, reply.revision)),
        other => Err(format!("unexpected answer to a config read: {other:?}")),
    }
}

/// Runs one `driftlock cluster config` subcommand.
pub(crate) async fn config(cmd: ConfigCmd) -> CmdResult {
    match cmd {
        ConfigCmd::Get {
            endpoints,
            serializable,
        } => {
            let (view, index) = if serializable {
                local(&endpoints).await?
            } else {
                current(&connect(&endpoints).await?).await?
            };
            print!("{}", render(&view, index));
        }
        ConfigCmd::Set {
            endpoints,
            file,
            settings,
        } => {
            // A bad file is refused before connecting.
            if let Some(file) = &file {
                read_toml(&mut Config::default(), file)?;
            }
            let client = connect(&endpoints).await?;
            let (before, _) = current(&client).await?;
            let mut config = before.config.clone();
            if let Some(file) = &file {
                read_toml(&mut config, file)?;
            }
            for s in &settings {
                config.set_key(&s.key, &s.value).map_err(|e| e.to_string())?;
            }
            config
                .validate()
                .map_err(|e| format!("the new configuration would be refused: {e}; nothing changed"))?;
            let changes = before.config.diff(&config);
            if changes.is_empty() {
                println!("nothing to change (revision {})", before.revision);
                return Ok(());
            }
            client
                .admin(AdminRequest::SetConfig {
                    config,
                    expected_revision: Some(before.revision),
                })
                .await
                .map_err(|e| e.to_string())?;
            print!("{}", render_changes(&changes));
            let (after, _) = current(&client).await?;
            println!("config revision {}", after.revision);
        }
        ConfigCmd::Diff { endpoints, file } => {
            read_toml(&mut Config::default(), &file)?;
            let (before, index) = current(&connect(&endpoints).await?).await?;
            let mut config = before.config.clone();
            read_toml(&mut config, &file)?;
            let changes = before.config.diff(&config);
            if changes.is_empty() {
                println!(
                    "no change against revision {} (read at revision {index})",
                    before.revision
                );
            } else {
                println!(
                    "# against revision {} (read at revision {index}); nothing was changed",
                    before.revision
                );
                print!("{}", render_changes(&changes));
            }
            config
                .validate()
                .map_err(|e| format!("{}: the cluster would refuse this configuration: {e}", file.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_the_serialized_config_has_a_key() {
        // `Config::KEYS` is a hand-kept list: check it against serde's view.
        let table: toml::Table = toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
        let mut serialized: Vec<String> = table
            .iter()
            .flat_map(|(s, fields)| fields.as_table().unwrap().keys().map(move |f| format!("{s}.{f}")))
            .collect();
        serialized.sort();
        let mut keys: Vec<String> = Config::KEYS.iter().map(|k| k.to_string()).collect();
        keys.sort();
        assert_eq!(keys, serialized);
    }

    #[test]
    fn the_printed_config_reads_back_as_the_same_config() {
        let mut config = Config::default();
        config.set_key("lease.factor_good_permille", "-70").unwrap();
        config.set_key("time.lock_delay_extra_us", "5").unwrap();
        let text = render(
            &ConfigView {
                config: config.clone(),
                revision: 9,
            },
            12,
        );
        assert!(
            text.starts_with("# replicated config in force: revision 9, set by log entry 9; read at revision 12\n"),
            "{text}"
        );
        assert!(text.contains("\n[lease]\nmin_ttl_us = 1000000\n"), "{text}");
        let mut back = Config::default();
        apply_toml(&mut back, &text).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn a_partial_file_changes_only_its_keys_and_a_bad_one_names_what_is_wrong() {
        let mut c = Config::default();
        apply_toml(&mut c, "[lease]\nmax_ttl_us = 60_000_000\n").unwrap();
        let changes = Config::default().diff(&c);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].to_string(), "lease.max_ttl_us: 300000000 → 60000000");

        let e = apply_toml(&mut Config::default(), "[lease]\nmax_tl_us = 1\n").unwrap_err();
        assert!(e.contains("unknown config key 'lease.max_tl_us'"), "{e}");
        let e = apply_toml(&mut Config::default(), "max_ttl_us = 1\n").unwrap_err();
        assert!(e.contains("'max_ttl_us' is not a section"), "{e}");
        let e = apply_toml(&mut Config::default(), "[time]\nmax_drift_ppm = -3\n").unwrap_err();
        assert!(e.contains("'-3' is not an unsigned integer"), "{e}");
        let e = apply_toml(&mut Config::default(), "[time]\nmax_drift_ppm = 1.5\n").unwrap_err();
        assert!(e.contains("is not an integer"), "{e}");
    }

    #[test]
    fn settings_parse_as_key_equals_value() {
        assert_eq!(
            parse_setting("lease.max_ttl_us=60_000_000"),
            Ok(Setting {
                key: "lease.max_ttl_us".into(),
                value: "60_000_000".into()
            })
        );
        assert!(parse_setting("lease.max_ttl_us")
            .unwrap_err()
            .contains("is not KEY=VALUE"));
        assert!(parse_setting("lease.nope=1")
            .unwrap_err()
            .contains("unknown config key 'lease.nope'"));
        assert!(parse_setting("limits.max_keys=many")
            .unwrap_err()
            .contains("'many' is not an unsigned integer (u64)"));
    }
}
