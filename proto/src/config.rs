//! Replicated configuration. It is part of the state machine's state and
//! changes only through a committed `SetConfig` command, so every
//! replica computes leases and margins with the same numbers.

use serde::{Deserialize, Serialize};

use crate::limits;

/// All replicated configuration. A cluster starts from the default (every
/// replica must start from the same value) and changes it only by a
/// committed `SetConfig` that passes [`Config::validate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Config {
    /// Weights, thresholds and factors of the adaptive lease formula.
    pub lease: LeaseConfig,
    /// Size and count limits, each below its protocol ceiling.
    pub limits: Limits,
    /// Drift bounds and margins of the time rules.
    pub time: TimeConfig,
}

/// Weights, thresholds and factors of the adaptive lease formula
/// (docs/design.md "Adaptive leases"):
/// `validity = clamp(base × (1 + nhi + stability + load) × suspicion, min, max)`,
/// where `base` is the session's requested TTL and the factors are in
/// permille of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseConfig {
    /// Smallest TTL a client may request, µs (default 1 s); must be > 0.
    pub min_ttl_us: u64,
    /// Largest TTL a client may request, µs (default 300 s).
    pub max_ttl_us: u64,
    /// Lower clamp of the adjusted validity, µs (default 1 s); must be > 0.
    pub min_validity_us: u64,
    /// Upper clamp of the adjusted validity, µs (default 300 s).
    pub max_validity_us: u64,
    /// Weight of the CPU score in the NHI (default 3; each weight
    /// 0 ..= 1000, at least one > 0).
    pub weight_cpu: u32,
    /// Weight of the memory score (default 2).
    pub weight_mem: u32,
    /// Weight of the disk I/O-wait score (default 2).
    pub weight_io: u32,
    /// Weight of the network latency score (default 2).
    pub weight_latency: u32,
    /// Weight of the failure-history score (default 1).
    pub weight_failures: u32,
    /// Mean RTT at which the latency score reaches 0, µs (default 200 ms);
    /// must be > 0.
    pub latency_worst_us: u64,
    /// Failure score lost per recent failure, permille (default 200: five
    /// failures in 5 minutes score 0).
    pub failure_penalty_permille: u32,
    /// NHI at or above which the tier is Excellent, permille (default 850).
    pub excellent_min_permille: u32,
    /// NHI at or above which the tier is Good, permille (default 650).
    pub good_min_permille: u32,
    /// NHI at or above which the tier is Warning, permille (default 400);
    /// below it: Critical. Validation needs warning ≤ good ≤ excellent ≤ 1000.
    pub warning_min_permille: u32,
    /// Lease factor of the Excellent tier, permille of the base (default
    /// −100: a healthy holder renews promptly, so a shorter lease frees its
    /// locks sooner if it dies). Each tier factor must be in −900 ..= 10 000.
    pub factor_excellent_permille: i32,
    /// Lease factor of the Good tier, permille (default −50).
    pub factor_good_permille: i32,
    /// Lease factor of the Warning tier, permille (default +100: slack for
    /// slow keepalives).
    pub factor_warning_permille: i32,
    /// Lease factor of the Critical tier, permille (default +300).
    pub factor_critical_permille: i32,
    /// Stability factor gained per millisecond of the holder's RTT standard
    /// deviation, permille (default 10).
    pub stability_permille_per_ms: u32,
    /// Upper bound of the stability factor, permille (default 200; at most
    /// 10 000).
    pub stability_max_permille: u32,
    /// Holder load above which the load factor starts, permille (default
    /// 700; at most 1000).
    pub load_knee_permille: u32,
    /// Load factor at full load (1000 permille), permille (default 200; at
    /// most 10 000); linear from 0 at the knee.
    pub load_max_permille: u32,
    /// Scale applied to a suspected session's next validities, permille of
    /// the adjusted value (default 500 = half; 1 ..= 1000). Applied before
    /// the clamp; it never shortens a deadline already granted.
    pub suspicion_scale_permille: u32,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            min_ttl_us: 1_000_000,
            max_ttl_us: 300_000_000,
            min_validity_us: 1_000_000,
            max_validity_us: 300_000_000,
            weight_cpu: 3,
            weight_mem: 2,
            weight_io: 2,
            weight_latency: 2,
            weight_failures: 1,
            latency_worst_us: 200_000,
            failure_penalty_permille: 200,
            excellent_min_permille: 850,
            good_min_permille: 650,
            warning_min_permille: 400,
            factor_excellent_permille: -100,
            factor_good_permille: -50,
            factor_warning_permille: 100,
            factor_critical_permille: 300,
            stability_permille_per_ms: 10,
            stability_max_permille: 200,
            load_knee_permille: 700,
            load_max_permille: 200,
            suspicion_scale_permille: 500,
        }
    }
}

/// Size and count limits. Exceeding one is a typed error
/// ([`Rejection`](crate::Rejection)) that changes nothing. The size limits
/// may not exceed the protocol ceilings in [`limits`], so
/// that whatever they admit fits in a frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest lock, election or key name (and fence lock name), bytes
    /// (default 512; 1 ..= 4 KiB).
    pub max_name_bytes: usize,
    /// Largest KV value or proclaimed value, bytes (default 64 KiB; at most
    /// 1 MiB).
    pub max_value_bytes: usize,
    /// Open sessions in the cluster (default 100 000; > 0).
    pub max_sessions: u64,
    /// Locks one session holds or waits for, plus the elections it joined
    /// (default 10 000; > 0).
    pub max_locks_per_session: u64,
    /// Waiters queued on one lock (default 10 000).
    pub max_waiters_per_lock: u64,
    /// KV keys in the cluster (default 1 000 000).
    pub max_keys: u64,
    /// Master plus waiting candidates of one election (default 1 000; > 0).
    pub max_candidates_per_election: u64,
    /// Total bytes of one handover's state chunks (default 4 MiB; at most
    /// 64 MiB).
    pub max_handover_bytes: usize,
    /// Replies each session remembers, by sequence number, to answer
    /// retries (default 64; 1 ..= 4096). A retry of an older sequence
    /// number gets `Rejection::StaleSequence`.
    pub dedupe_window: u64,
    /// Longest client name given at session open, bytes (default 128;
    /// 1 ..= 4 KiB).
    pub max_client_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_bytes: limits::DEFAULT_MAX_NAME_BYTES,
            max_value_bytes: limits::DEFAULT_MAX_VALUE_BYTES,
            max_sessions: 100_000,
            max_locks_per_session: 10_000,
            max_waiters_per_lock: 10_000,
            max_keys: 1_000_000,
            max_candidates_per_election: 1_000,
            max_handover_bytes: limits::DEFAULT_MAX_HANDOVER_BYTES,
            dedupe_window: 64,
            max_client_name_bytes: limits::DEFAULT_MAX_CLIENT_NAME_BYTES,
        }
    }
}

/// Drift bounds and margins of the time rules (docs/design.md "Time" and
/// "Clock drift"). Every replica computes `ρ_cluster` and `ρ_client` from
/// these and the committed estimates, so margins agree everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeConfig {
    /// Worst-case clock rate error assumed for a node or client without a
    /// usable committed estimate, ppm (default 500; 1 ..= 100 000). The bound
    /// a node stamps cluster time with before it has measured its own clock
    /// is a node setting, not this one.
    pub max_drift_ppm: u64,
    /// k in `|drift| + k·σ`, the bound taken from an estimate (default 3;
    /// 1 ..= 10).
    pub drift_k_sigma: u32,
    /// An estimate with drift σ above this is unusable, ppb (default
    /// 50 000 = 50 ppm).
    pub max_usable_drift_sigma_ppb: u64,
    /// An estimate resting on fewer samples is unusable (default 8).
    pub min_estimate_samples: u32,
    /// Extra lock-delay after an expiry or revocation, on top of the end of
    /// the old holder's validity and the drift margin, µs (default 0).
    pub lock_delay_extra_us: u64,
    /// A node whose committed `|drift|` exceeds this raises
    /// `NodeClockAlert`, never becomes a leader-transfer target and, while
    /// leading, hands leadership away; a client whose clock is shown to run
    /// slow by more raises `ClockSkewDetected` with `alert` set, ppm
    /// (default 1000; > 0).
    pub alert_drift_ppm: u64,
    /// The most a client's drift bound is widened to after its clock was
    /// shown to run slow, ppm (default 100 000 = 10 %; at most 500 000).
    /// It keeps a broken client's local validity (`V × (1 − ρ)`) above
    /// the keepalive interval `V/3`, so the client can still renew, and
    /// bounds the lock-delay its locks get after it ends to
    /// `V × (ρ_cluster + this)`. A client slower than this is flagged
    /// (`alert`), and rule 5 no longer fully covers it: fencing tokens
    /// still protect the data.
    pub max_client_rho_ppm: u64,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            max_drift_ppm: 500,
            drift_k_sigma: 3,
            max_usable_drift_sigma_ppb: 50_000,
            min_estimate_samples: 8,
            lock_delay_extra_us: 0,
            alert_drift_ppm: 1_000,
            max_client_rho_ppm: 100_000,
        }
    }
}

impl Config {
    /// Checks internal consistency and the protocol ceilings; the error
    /// names the offending field. The state machine refuses a `SetConfig`
    /// that fails it (`Rejection::InvalidConfig`).
    pub fn validate(&self) -> Result<(), String> {
        if self.time.alert_drift_ppm == 0 {
            return Err("time.alert_drift_ppm must be > 0".into());
        }
        let l = &self.lease;
        if l.min_ttl_us == 0 || l.min_ttl_us > l.max_ttl_us {
            return Err("lease.min_ttl_us must be > 0 and <= lease.max_ttl_us".into());
        }
        if l.min_validity_us == 0 || l.min_validity_us > l.max_validity_us {
            return Err("lease.min_validity_us must be > 0 and <= lease.max_validity_us".into());
        }
        let weights = [
            l.weight_cpu,
            l.weight_mem,
            l.weight_io,
            l.weight_latency,
            l.weight_failures,
        ];
        if weights.iter().all(|w| *w == 0) {
            return Err("lease.weight_*: at least one health weight must be > 0".into());
        }
        if weights.iter().any(|w| *w > 1000) {
            return Err("lease.weight_*: each weight must be <= 1000".into());
        }
        if !(l.warning_min_permille <= l.good_min_permille
            && l.good_min_permille <= l.excellent_min_permille
            && l.excellent_min_permille <= 1000)
        {
            return Err("lease tier thresholds must satisfy warning <= good <= excellent <= 1000".into());
        }
        for (name, f) in [
            ("factor_excellent_permille", l.factor_excellent_permille),
            ("factor_good_permille", l.factor_good_permille),
            ("factor_warning_permille", l.factor_warning_permille),
            ("factor_critical_permille", l.factor_critical_permille),
        ] {
            if !(-900..=10_000).contains(&f) {
                return Err(format!("lease.{name} must be in [-900, 10000]"));
            }
        }
        if l.latency_worst_us == 0 {
            return Err("lease.latency_worst_us must be > 0".into());
        }
        if l.stability_max_permille > 10_000 || l.load_max_permille > 10_000 {
            return Err("lease.stability_max_permille and lease.load_max_permille must be <= 10000".into());
        }
        if l.load_knee_permille > 1000 {
            return Err("lease.load_knee_permille must be <= 1000".into());
        }
        if l.suspicion_scale_permille == 0 || l.suspicion_scale_permille > 1000 {
            return Err("lease.suspicion_scale_permille must be in [1, 1000]".into());
        }
        let m = &self.limits;
        if m.max_name_bytes == 0 || m.max_client_name_bytes == 0 {
            return Err("limits.max_name_bytes and limits.max_client_name_bytes must be > 0".into());
        }
        for (name, value, ceiling) in [
            ("max_name_bytes", m.max_name_bytes, limits::MAX_NAME_BYTES_CEILING),
            (
                "max_client_name_bytes",
                m.max_client_name_bytes,
                limits::MAX_NAME_BYTES_CEILING,
            ),
            ("max_value_bytes", m.max_value_bytes, limits::MAX_VALUE_BYTES_CEILING),
            (
                "max_handover_bytes",
                m.max_handover_bytes,
                limits::MAX_HANDOVER_BYTES_CEILING,
            ),
        ] {
            if value > ceiling {
                return Err(format!(
                    "limits.{name} is {value}; the protocol allows at most {ceiling} (one frame must hold it)"
                ));
            }
        }
        if m.dedupe_window == 0 || m.dedupe_window > 4096 {
            return Err("limits.dedupe_window must be in [1, 4096]".into());
        }
        if m.max_sessions == 0 || m.max_locks_per_session == 0 || m.max_candidates_per_election == 0 {
            return Err(
                "limits.max_sessions, max_locks_per_session and max_candidates_per_election must be > 0".into(),
            );
        }
        let t = &self.time;
        if t.max_drift_ppm == 0 || t.max_drift_ppm > 100_000 {
            return Err("time.max_drift_ppm must be in [1, 100000]".into());
        }
        if t.max_client_rho_ppm < t.max_drift_ppm || t.max_client_rho_ppm > 500_000 {
            return Err("time.max_client_rho_ppm must be in [time.max_drift_ppm, 500000]".into());
        }
        if t.drift_k_sigma == 0 || t.drift_k_sigma > 10 {
            return Err("time.drift_k_sigma must be in [1, 10]".into());
        }
        Ok(())
    }
}

/// The replicated configuration in force and the entry that set it, as
/// `Query::Config` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigView {
    /// The configuration every replica applies from `revision` on.
    pub config: Config,
    /// Log index of the `SetConfig` that put it in force; 0 = the default
    /// configuration of a new cluster. A `SetConfig` may name it as its
    /// expected revision, so that two operators' changes cannot overwrite
    /// each other unseen.
    pub revision: u64,
}

/// One setting a `SetConfig` changed, by its dotted key
/// (`lease.max_ttl_us`), with the old and new values as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// The dotted key, as [`Config::KEYS`] lists it.
    pub key: String,
    /// The value before the change, in decimal.
    pub old: String,
    /// The value after the change, in decimal.
    pub new: String,
}

impl std::fmt::Display for ConfigChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} → {}", self.key, self.old, self.new)
    }
}

/// Why [`Config::set_key`] refused a `KEY=VALUE`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigKeyError {
    /// No setting has this dotted key.
    #[error("unknown config key '{key}' (known keys: `driftlock cluster config get` lists them)")]
    UnknownKey {
        /// The key as given.
        key: String,
    },
    /// The value does not parse as the setting's type.
    #[error("config key '{key}': '{value}' is not {expected}")]
    BadValue {
        /// The dotted key.
        key: String,
        /// The value as given.
        value: String,
        /// What the setting holds, e.g. "an unsigned integer (u64)".
        expected: &'static str,
    },
}

/// What a setting of each Rust type accepts, for [`ConfigKeyError::BadValue`].
trait Described: std::str::FromStr + std::fmt::Display {
    const EXPECTED: &'static str;
}
impl Described for u64 {
    const EXPECTED: &'static str = "an unsigned integer (u64)";
}
impl Described for u32 {
    const EXPECTED: &'static str = "an unsigned integer (u32)";
}
impl Described for usize {
    const EXPECTED: &'static str = "an unsigned integer (usize)";
}
impl Described for i32 {
    const EXPECTED: &'static str = "an integer (i32)";
}

fn parse_value<T: Described>(key: &str, value: &str) -> Result<T, ConfigKeyError> {
    value
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| ConfigKeyError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            expected: T::EXPECTED,
        })
}

/// Declares the dotted keys of every setting once: [`Config::KEYS`],
/// [`Config::get_key`] and [`Config::set_key`] are generated from the same
/// list, and a test checks the list against the serialized form, so a new
/// field cannot be left out.
macro_rules! config_keys {
    ($($section:ident . $field:ident),* $(,)?) => {
        impl Config {
            /// Every setting's dotted key, section by section in
            /// declaration order (`lease.min_ttl_us`, …).
            pub const KEYS: &'static [&'static str] =
                &[$(concat!(stringify!($section), ".", stringify!($field))),*];

            /// The value of the setting `key` in decimal, or `None` for an
            /// unknown key.
            pub fn get_key(&self, key: &str) -> Option<String> {
                $(
                    if key == concat!(stringify!($section), ".", stringify!($field)) {
                        return Some(self.$section.$field.to_string());
                    }
                )*
                None
            }

            /// Sets the setting `key` from its text form (decimal; `_`
            /// separators allowed). Does not validate the whole: call
            /// [`Config::validate`] after the last change.
            pub fn set_key(&mut self, key: &str, value: &str) -> Result<(), ConfigKeyError> {
                $(
                    if key == concat!(stringify!($section), ".", stringify!($field)) {
                        self.$section.$field = parse_value(key, value)?;
                        return Ok(());
                    }
                )*
                Err(ConfigKeyError::UnknownKey { key: key.to_owned() })
            }
        }
    };
}

config_keys!(
    lease.min_ttl_us,
    lease.max_ttl_us,
    lease.min_validity_us,
    lease.max_validity_us,
    lease.weight_cpu,
    lease.weight_mem,
    lease.weight_io,
    lease.weight_latency,
    lease.weight_failures,
    lease.latency_worst_us,
    lease.failure_penalty_permille,
    lease.excellent_min_permille,
    lease.good_min_permille,
    lease.warning_min_permille,
    lease.factor_excellent_permille,
    lease.factor_good_permille,
    lease.factor_warning_permille,
    lease.factor_critical_permille,
    lease.stability_permille_per_ms,
    lease.stability_max_permille,
    lease.load_knee_permille,
    lease.load_max_permille,
    lease.suspicion_scale_permille,
    limits.max_name_bytes,
    limits.max_value_bytes,
    limits.max_sessions,
    limits.max_locks_per_session,
    limits.max_waiters_per_lock,
    limits.max_keys,
    limits.max_candidates_per_election,
    limits.max_handover_bytes,
    limits.dedupe_window,
    limits.max_client_name_bytes,
    time.max_drift_ppm,
    time.drift_k_sigma,
    time.max_usable_drift_sigma_ppb,
    time.min_estimate_samples,
    time.lock_delay_extra_us,
    time.alert_drift_ppm,
    time.max_client_rho_ppm,
);

impl Config {
    /// The settings that differ from `self` in `new`, in [`Config::KEYS`]
    /// order (empty when they are equal).
    pub fn diff(&self, new: &Config) -> Vec<ConfigChange> {
        Config::KEYS
            .iter()
            .filter_map(|key| {
                let old = self.get_key(key)?;
                let new = new.get_key(key)?;
                (old != new).then(|| ConfigChange {
                    key: (*key).to_owned(),
                    old,
                    new,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn limits_above_the_protocol_ceilings_are_rejected_naming_the_field() {
        let mut c = Config::default();
        c.limits.max_value_bytes = limits::MAX_VALUE_BYTES_CEILING + 1;
        let err = c.validate().unwrap_err();
        assert!(err.contains("limits.max_value_bytes"), "{err}");
        let mut c = Config::default();
        c.limits.max_name_bytes = limits::MAX_NAME_BYTES_CEILING + 1;
        assert!(c.validate().unwrap_err().contains("limits.max_name_bytes"));
        let mut c = Config::default();
        c.limits.max_value_bytes = limits::MAX_VALUE_BYTES_CEILING;
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn inverted_bounds_are_rejected_naming_the_field() {
        let mut c = Config::default();
        c.lease.min_validity_us = c.lease.max_validity_us + 1;
        let err = c.validate().unwrap_err();
        assert!(err.contains("min_validity_us"), "{err}");

        let mut c = Config::default();
        c.time.max_drift_ppm = 0;
        assert!(c.validate().unwrap_err().contains("max_drift_ppm"));

        let mut c = Config::default();
        c.lease.good_min_permille = 900;
        assert!(c.validate().unwrap_err().contains("tier thresholds"));
    }

    #[test]
    fn every_key_reads_back_what_it_set_and_diff_names_exactly_the_keys_set() {
        let old = Config::default();
        let mut new = old.clone();
        new.set_key("lease.max_ttl_us", "60_000_000").unwrap();
        new.set_key("lease.factor_good_permille", "-70").unwrap();
        new.set_key("limits.max_value_bytes", "1024").unwrap();
        assert_eq!(new.lease.max_ttl_us, 60_000_000);
        assert_eq!(new.lease.factor_good_permille, -70);
        assert_eq!(new.limits.max_value_bytes, 1024);
        let keys: Vec<String> = old.diff(&new).into_iter().map(|c| c.to_string()).collect();
        assert_eq!(
            keys,
            [
                "lease.max_ttl_us: 300000000 → 60000000",
                "lease.factor_good_permille: -50 → -70",
                "limits.max_value_bytes: 65536 → 1024"
            ]
        );
        assert!(old.diff(&old).is_empty());
        for key in Config::KEYS {
            let value = old.get_key(key).unwrap();
            let mut c = Config::default();
            c.set_key(key, &value).unwrap();
            assert_eq!(c, old, "{key}");
        }
    }

    #[test]
    fn an_unknown_key_or_a_value_of_the_wrong_type_is_refused_naming_it() {
        let mut c = Config::default();
        assert_eq!(
            c.set_key("lease.max_ttl", "1"),
            Err(ConfigKeyError::UnknownKey {
                key: "lease.max_ttl".into()
            })
        );
        let e = c.set_key("lease.weight_cpu", "-1").unwrap_err().to_string();
        assert_eq!(
            e,
            "config key 'lease.weight_cpu': '-1' is not an unsigned integer (u32)"
        );
        let e = c.set_key("time.max_drift_ppm", "5ms").unwrap_err().to_string();
        assert!(e.contains("'5ms' is not an unsigned integer (u64)"), "{e}");
        assert_eq!(c, Config::default());
    }
}
