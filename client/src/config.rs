//! Client configuration and the `DRIFTLOCK_ENDPOINTS` helper.

use driftlock_proto::limits::DEFAULT_MAX_CLIENT_NAME_BYTES;
use driftlock_proto::tls::TlsFiles;
use driftlock_proto::HealthTier;

use crate::error::{ClientError, Result};

/// Environment variable [`endpoints_from_env`] reads.
pub const ENDPOINTS_ENV: &str = "DRIFTLOCK_ENDPOINTS";

/// Environment variable naming the cluster CA's certificate (PEM).
pub const CA_ENV: &str = "DRIFTLOCK_CA";
/// Environment variable naming this client's certificate (PEM).
pub const CERT_ENV: &str = "DRIFTLOCK_CERT";
/// Environment variable naming this client's private key (PEM).
pub const KEY_ENV: &str = "DRIFTLOCK_KEY";

/// How a [`Client`](crate::Client) talks to the cluster. Build one with
/// [`ClientConfig::new`] and override fields with struct update syntax:
///
/// ```
/// use driftlock_client::ClientConfig;
///
/// let config = ClientConfig {
///     client_name: "billing-worker".into(),
///     request_timeout_ms: 1_000,
///     ..ClientConfig::new(vec!["10.0.0.1:7301".into(), "10.0.0.2:7301".into()])
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Client API addresses of the nodes, `host:port`. Any subset of the
    /// cluster works: the library follows the leader hints it is given
    /// (unless `follow_leader_hints` is off).
    pub endpoints: Vec<String>,
    /// Name shown in the cluster's status for this client's sessions.
    pub client_name: String,
    /// Deadline of one RPC attempt, ms (a long-poll gets its wait on top).
    pub request_timeout_ms: u64,
    /// Overall retry budget of one operation across attempts, endpoints and
    /// leader changes, ms.
    pub op_deadline_ms: u64,
    /// Smallest pause between retries, and the first reconnect delay, ms.
    pub backoff_min_ms: u64,
    /// Largest pause between retries and between reconnects, ms.
    pub backoff_max_ms: u64,
    /// Drift bound this host's clock is assumed to have when the cluster
    /// has not told it one yet (the reply to `open_session` carries none),
    /// ppm (docs/design.md "Time", rule 5).
    pub default_drift_ppm: u64,
    /// ε of rule 5: local validity ends this much before the drift-corrected
    /// grant would, µs.
    pub local_margin_us: u64,
    /// How long one `observe` long-poll waits on the server, ms.
    pub observe_wait_ms: u64,
    /// Period of the read that backs up event delivery while a lock or a
    /// campaign waits, ms.
    pub poll_interval_ms: u64,
    /// Pause between keepalive attempts after a failed one, ms (clamped to
    /// `[backoff_min_ms, backoff_max_ms]`).
    pub keepalive_retry_ms: u64,
    /// How often a keepalive carries a health sample of this host, ms
    /// (docs/design.md "Adaptive leases"); 0 = never report health.
    pub health_report_interval_ms: u64,
    /// Forces every health sample to a tier (drills and tests only; the
    /// default reads `DRIFTLOCK_HEALTH_OVERRIDE`, normally unset).
    pub health_override: Option<HealthTier>,
    /// The cluster CA, this client's certificate and its key: every
    /// connection uses mutual TLS with them. `None` connects over plain TCP,
    /// which only a cluster started with `--insecure` (tests) accepts.
    /// [`ClientConfig::new`] takes them from `DRIFTLOCK_CA`,
    /// `DRIFTLOCK_CERT` and `DRIFTLOCK_KEY` when all three are set.
    pub tls: Option<TlsFiles>,
    /// Whether the leader address a node names in a `NotLeader` answer is
    /// dialled directly (the default: one hop to the leader). Turn it off
    /// when the nodes' own client addresses are not the way this client
    /// reaches them — behind a proxy, NAT or a load balancer: the library
    /// then only ever dials `endpoints`, trying them in turn until one
    /// leads.
    pub follow_leader_hints: bool,
    /// Most requests this client has in flight at once on one connection
    /// (one per node); more wait in the client, in order, until one
    /// answers. Keep it below the node's cap on requests in flight per
    /// connection (`Caps::in_flight`, 128 on the client port): the node
    /// turns requests over its cap away, and although the library retries
    /// them, every refusal costs a pause. Default 96; must be > 0.
    pub max_in_flight_per_connection: usize,
}

impl ClientConfig {
    /// Defaults for the given endpoints: 2 s per request, 10 s per
    /// operation, backoff 20 ms … 1 s, 500 ppm drift, ε = 5 ms.
    pub fn new(endpoints: Vec<String>) -> Self {
        ClientConfig {
            endpoints,
            client_name: format!("driftlock-client/{}", std::process::id()),
            request_timeout_ms: 2_000,
            op_deadline_ms: 10_000,
            backoff_min_ms: 20,
            backoff_max_ms: 1_000,
            default_drift_ppm: 500,
            local_margin_us: 5_000,
            observe_wait_ms: 5_000,
            poll_interval_ms: 1_000,
            keepalive_retry_ms: 200,
            health_report_interval_ms: 5_000,
            health_override: driftlock_sensors::health::override_from_env().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring the health override");
                None
            }),
            tls: tls_from_env().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "not using TLS files from the environment");
                None
            }),
            follow_leader_hints: true,
            max_in_flight_per_connection: 96,
        }
    }

    /// Defaults for the endpoints in `DRIFTLOCK_ENDPOINTS`, with the TLS
    /// files of `DRIFTLOCK_CA`, `DRIFTLOCK_CERT` and `DRIFTLOCK_KEY` (an
    /// error if only some of the three are set).
    pub fn from_env() -> Result<Self> {
        Ok(ClientConfig {
            tls: tls_from_env()?,
            ..ClientConfig::new(endpoints_from_env()?)
        })
    }

    /// Checks the configuration; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for ep in &self.endpoints {
            check_endpoint(ep)?;
        }
        if self.client_name.len() > DEFAULT_MAX_CLIENT_NAME_BYTES {
            return Err(ClientError::InvalidConfig(format!(
                "client_name is {} bytes, limit is {DEFAULT_MAX_CLIENT_NAME_BYTES}",
                self.client_name.len()
            )));
        }
        for (field, v) in [
            ("request_timeout_ms", self.request_timeout_ms),
            ("op_deadline_ms", self.op_deadline_ms),
            ("backoff_min_ms", self.backoff_min_ms),
            ("observe_wait_ms", self.observe_wait_ms),
            ("poll_interval_ms", self.poll_interval_ms),
            ("keepalive_retry_ms", self.keepalive_retry_ms),
        ] {
            if v == 0 {
                return Err(ClientError::InvalidConfig(format!("{field} must be > 0")));
            }
        }
        if self.max_in_flight_per_connection == 0 {
            return Err(ClientError::InvalidConfig(
                "max_in_flight_per_connection must be > 0".into(),
            ));
        }
        if self.backoff_min_ms > self.backoff_max_ms {
            return Err(ClientError::InvalidConfig(
                "backoff_min_ms must be <= backoff_max_ms".into(),
            ));
        }
        if self.default_drift_ppm >= 1_000_000 {
            return Err(ClientError::InvalidConfig("default_drift_ppm must be < 1000000".into()));
        }
        Ok(())
    }
}

/// Checks that an endpoint is `host:port`: a DNS name or IPv4 address, or
/// an IPv6 address in brackets (`[::1]:7301`), and a port from 1 to 65535.
/// Refused at construction with what is wrong, rather than after the
/// whole retry budget was spent failing to connect.
pub(crate) fn check_endpoint(ep: &str) -> Result<()> {
    let bad = |why: &str| ClientError::InvalidConfig(format!("endpoint '{ep}' {why}; expected host:port"));
    if let Some((scheme, _)) = ep.split_once("://") {
        return Err(bad(&format!("has a URL scheme ('{scheme}://'); give only host:port")));
    }
    let (host, port) = ep.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad(&format!("has an invalid port '{port}' (1–65535)"))),
    }
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ip = inner.strip_suffix(']').ok_or_else(|| bad("has an unclosed '['"))?;
        return match ip.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(bad(&format!("has '{ip}' in brackets, which is not an IPv6 address"))),
        };
    }
    if host.contains(':') {
        return Err(bad("has an IPv6 address without brackets (write [addr]:port)"));
    }
    // A DNS name (letters, digits, '-', '.', and '_' as some internal
    // names use) or an IPv4 address, which is made of the same characters.
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(bad(&format!("has '{c}' in its host name")));
    }
    Ok(())
}

/// Endpoints from `DRIFTLOCK_ENDPOINTS` (comma-separated `host:port`;
/// blanks around entries are ignored).
///
/// # Errors
/// [`ClientError::EndpointsEnv`] when the variable is unset, not Unicode or
/// lists nothing; [`ClientError::InvalidConfig`] for a malformed entry.
pub fn endpoints_from_env() -> Result<Vec<String>> {
    let raw = std::env::var(ENDPOINTS_ENV).map_err(|e| ClientError::EndpointsEnv(format!("{ENDPOINTS_ENV}: {e}")))?;
    parse_endpoints(&raw)
}

/// Parses a comma-separated endpoint list.
pub(crate) fn parse_endpoints(raw: &str) -> Result<Vec<String>> {
    let endpoints: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        return Err(ClientError::EndpointsEnv(format!("{ENDPOINTS_ENV} lists no endpoint")));
    }
    for ep in &endpoints {
        check_endpoint(ep)?;
    }
    Ok(endpoints)
}

/// The TLS files named by `DRIFTLOCK_CA`, `DRIFTLOCK_CERT` and
/// `DRIFTLOCK_KEY`: all three, or `None` when none is set.
///
/// # Errors
/// When only some of the three are set.
pub fn tls_from_env() -> Result<Option<TlsFiles>> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    match (var(CA_ENV), var(CERT_ENV), var(KEY_ENV)) {
        (None, None, None) => Ok(None),
        (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        })),
        _ => Err(ClientError::InvalidConfig(format!(
            "set all of {CA_ENV}, {CERT_ENV} and {KEY_ENV}, or none"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(ClientConfig::new(vec!["127.0.0.1:7301".into()]).validate().is_ok());
    }

    #[test]
    fn bad_configs_name_the_problem() {
        assert!(matches!(
            ClientConfig::new(vec![]).validate(),
            Err(ClientError::NoEndpoints)
        ));
        let e = ClientConfig::new(vec!["localhost".into()]).validate().unwrap_err();
        assert!(e.to_string().contains("no port"), "{e}");
        let e = ClientConfig::new(vec!["h:99999".into()]).validate().unwrap_err();
        assert!(e.to_string().contains("invalid port"), "{e}");
        let c = ClientConfig {
            backoff_min_ms: 50,
            backoff_max_ms: 10,
            ..ClientConfig::new(vec!["h:1".into()])
        };
        assert!(c.validate().unwrap_err().to_string().contains("backoff_min_ms"));
        let c = ClientConfig {
            request_timeout_ms: 0,
            ..ClientConfig::new(vec!["h:1".into()])
        };
        assert!(c.validate().unwrap_err().to_string().contains("request_timeout_ms"));
    }

    #[test]
    fn endpoint_lists_parse() {
        assert_eq!(
            parse_endpoints(" a:1, b:2 ,,").unwrap(),
            vec!["a:1".to_string(), "b:2".to_string()]
        );
        assert!(matches!(parse_endpoints(" , "), Err(ClientError::EndpointsEnv(_))));
        assert!(matches!(parse_endpoints("a:1,b"), Err(ClientError::InvalidConfig(_))));
        assert!(parse_endpoints("[::1]:7301").is_ok());
    }

    #[test]
    fn malformed_endpoints_are_refused_saying_what_is_wrong() {
        for ok in [
            "127.0.0.1:7301",
            "node-1.example.com:7301",
            "[::1]:7301",
            "[fe80::1]:1",
            "my_host:65535",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://127.0.0.1:7901", "URL scheme ('http://')"),
            ("https://h:1", "URL scheme ('https://')"),
            ("127.0.0.1", "no port"),
            ("h:0", "invalid port '0'"),
            ("h:7301/", "invalid port '7301/'"),
            (":7301", "no host"),
            ("::1:7301", "without brackets"),
            ("[::1:7301", "unclosed '['"),
            ("[nope]:7301", "not an IPv6 address"),
            ("h/x:7301", "'/' in its host name"),
            ("two words:7301", "' ' in its host name"),
        ] {
            let e = check_endpoint(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains(&format!("endpoint '{bad}'")), "{e}");
        }
    }
}
