//! Range and consistency checks of a [`NodeConfig`]: each error names the
//! setting's file key and its flag.

use super::{setting_args, ConfigError, NodeConfig};

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
        positive(r.store_cache_mib, "raft.store_cache_mib")?;

        positive(self.events.buffer_len as u64, "events.buffer_len")?;
        positive(self.events.buffer_mib, "events.buffer_mib")?;

        let t = &self.tls;
        positive(t.handshake_timeout_ms, "tls.handshake_timeout_ms")?;
        let files = [("tls.ca", &t.ca), ("tls.cert", &t.cert), ("tls.key", &t.key)];
        for (field, file) in files {
            check(!(t.insecure && file.is_some()), field, || {
                "cannot be given with --insecure (plain TCP has no certificates)".into()
            })?;
        }
        if files.iter().any(|(_, f)| f.is_some()) {
            for (field, file) in files {
                check(file.is_some(), field, || {
                    "is missing: TLS needs the CA certificate, this node's certificate and its key".into()
                })?;
            }
        }

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
        check(
            (c.local_drift_bound_ppm..=500_000).contains(&c.unmeasured_drift_bound_ppm),
            "clock.unmeasured_drift_bound_ppm",
            || "must be in [clock.local_drift_bound_ppm, 500000]".into(),
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

    /// Breaks one rule of a default configuration.
    type Breaker = fn(&mut NodeConfig);

    #[test]
    fn each_check_names_its_setting_and_flag() {
        let cases: &[(&str, Breaker)] = &[
            ("node.id", |c| c.node.id = 0),
            ("node.raft_addr", |c| c.node.raft_addr = "nowhere".into()),
            ("node.client_addr", |c| c.node.client_addr = "127.0.0.1".into()),
            ("node.metrics_addr", |c| c.node.metrics_addr = Some("host:x".into())),
            ("raft.heartbeat_ms", |c| c.raft.heartbeat_ms = 0),
            ("raft.election_timeout_min_ms", |c| c.raft.election_timeout_min_ms = 100),
            ("raft.election_timeout_max_ms", |c| c.raft.election_timeout_max_ms = 300),
            ("raft.snapshot_every_entries", |c| c.raft.snapshot_every_entries = 0),
            ("raft.rpc_timeout_ms", |c| c.raft.rpc_timeout_ms = 0),
            ("raft.tick_interval_ms", |c| c.raft.tick_interval_ms = 0),
            ("raft.store_cache_mib", |c| c.raft.store_cache_mib = 0),
            ("events.buffer_len", |c| c.events.buffer_len = 0),
            ("events.buffer_mib", |c| c.events.buffer_mib = 0),
            ("clock.interval_ms", |c| c.clock.interval_ms = 0),
            ("clock.ntp_servers", |c| {
                c.clock.ntp_servers = vec!["pool.example".into()]
            }),
            ("clock.rtt_percentile", |c| c.clock.rtt_percentile = 101),
            ("clock.q_drift_ppm2_per_s", |c| c.clock.q_drift_ppm2_per_s = 0.0),
            ("clock.q_offset_us2_per_s", |c| {
                c.clock.q_offset_us2_per_s = f64::INFINITY
            }),
            ("clock.local_drift_bound_ppm", |c| c.clock.local_drift_bound_ppm = 0),
            ("clock.local_drift_bound_ppm", |c| {
                c.clock.local_drift_bound_ppm = 100_001
            }),
            ("health.interval_ms", |c| c.health.interval_ms = 0),
            ("health.override", |c| c.health.override_tier = Some("superb".into())),
            ("handover.ack_timeout_ms", |c| c.handover.ack_timeout_ms = 0),
            ("predict.interval_ms", |c| c.predict.interval_ms = 0),
            ("predict.phi_threshold", |c| c.predict.phi_threshold = f64::NAN),
            ("predict.min_keepalives", |c| c.predict.min_keepalives = 1),
            ("predict.min_stddev_ms", |c| c.predict.min_stddev_ms = 0),
            ("predict.phi_weight_permille", |c| c.predict.phi_weight_permille = 0),
            ("predict.phi_weight_permille", |c| c.predict.phi_weight_permille = 1001),
            ("predict.forest_weight_permille", |c| {
                c.predict.forest_weight_permille = 1001
            }),
            ("predict.suspect_threshold_permille", |c| {
                c.predict.suspect_threshold_permille = 0
            }),
            ("predict.probe_timeout_ms", |c| c.predict.probe_timeout_ms = 0),
            ("predict.retrain_ms", |c| c.predict.retrain_ms = 0),
            ("predict.hot_lock_rate_per_s", |c| c.predict.hot_lock_rate_per_s = -1.0),
        ];
        let ids = crate::config::setting_ids();
        for (expected, break_it) in cases {
            let mut config = NodeConfig::default();
            break_it(&mut config);
            match config.validate() {
                Err(ConfigError::Invalid { field, flag, .. }) => {
                    assert_eq!(field, *expected);
                    assert!(ids.iter().any(|id| id == field), "{field} is declared");
                    assert_eq!(flag, flag_of(field));
                    assert_ne!(flag, field, "{field} has a flag");
                }
                other => panic!("{expected}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_error_names_key_and_flag() {
        let mut config = NodeConfig::default();
        config.raft.election_timeout_min_ms = 50;
        let message = config.validate().unwrap_err().to_string();
        assert_eq!(
            message,
            "invalid setting raft.election_timeout_min_ms (--election-timeout-min-ms): must exceed raft.heartbeat_ms"
        );
    }
}
