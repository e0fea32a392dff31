//! The deployment files under `deploy/` against the node they deploy:
//!
//! - every sample config `deploy/cluster-N/nI.toml` loads through the
//!   node's own `driftlock serve --config` path and is a production one
//!   (TLS, the unit's data directory, NTP), and the `# members:` line each
//!   file carries for `driftlock cluster init` is the same in every file of
//!   its cluster and names exactly the cluster's nodes;
//! - the systemd unit runs that command, leaves room for the connection
//!   caps and the shutdown drain;
//! - every `driftlock_*` metric the Prometheus rules and the Grafana
//!   dashboard query is one a running three-node cluster exports, under the
//!   exact series name (a counter is only queryable as `…_total`);
//! - the rules have the agreed alert names, each with a severity, a summary
//!   and a description; `promtool check rules` accepts the file and
//!   `promtool test rules` passes its unit tests
//!   (`deploy/driftlock.rules.test.yml`).
//!
//! `promtool` comes with Debian's `prometheus` package (`.ci/run` installs
//! it). Elsewhere the promtool test prints why it skips; under `CI=true` a
//! missing promtool is a failure, so CI cannot pass by skipping.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Command, FromArgMatches};
use driftlock_node::config::{NodeConfig, ServeArgs};
use driftlock_node::listener::Caps;
use driftlock_testkit::{prom, TestCluster};

/// The alert names docs/operations.md explains, in the rules file's order.
const ALERTS: [&str; 10] = [
    "DriftlockNodeDown",
    "DriftlockNoLeader",
    "DriftlockLeaderFlapping",
    "DriftlockClockDriftHigh",
    "DriftlockClockUnmeasured",
    "DriftlockFsyncSlow",
    "DriftlockSessionsLost",
    "DriftlockDiskFilling",
    "DriftlockCertificateExpiring",
    "DriftlockFollowerLagging",
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `path` as `driftlock serve --config PATH` resolves it: the node's own
/// file parser (unknown keys refused by name), defaults, then validation.
/// The environment is ignored, so a `DRIFTLOCK_*` variable of the machine
/// running the test cannot change what the file says.
fn load(path: &Path) -> NodeConfig {
    let command = ServeArgs::augment_args(Command::new("serve")).mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(["serve".as_ref(), "--config".as_ref(), path.as_os_str()])
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let args = ServeArgs::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    args.resolve().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One member as `driftlock cluster init --members` takes it:
/// `ID=RAFT_ADDR/CLIENT_ADDR`.
fn parse_member(spec: &str) -> (u64, String, String) {
    let (id, addrs) = spec.split_once('=').unwrap_or_else(|| panic!("{spec}: no '='"));
    let (raft, client) = addrs.split_once('/').unwrap_or_else(|| panic!("{spec}: no '/'"));
    let id = id.trim().parse().unwrap_or_else(|e| panic!("{spec}: id: {e}"));
    (id, raft.trim().to_owned(), client.trim().to_owned())
}

/// The `# members: …` line of a sample config, parsed.
fn members_line(path: &Path, text: &str) -> BTreeSet<(u64, String, String)> {
    let lines: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# members:")).collect();
    assert_eq!(lines.len(), 1, "{}: one `# members:` line", path.display());
    lines[0].trim().split(',').map(parse_member).collect()
}

/// `deploy/cluster-N` directories with their N.
fn cluster_dirs() -> Vec<(PathBuf, u64)> {
    let mut dirs: Vec<(PathBuf, u64)> = std::fs::read_dir(deploy_dir())
        .expect("read deploy/")
        .map(|e| e.expect("deploy/ entry").path())
        .filter_map(|p| {
            let n = p.file_name()?.to_str()?.strip_prefix("cluster-")?.parse().ok()?;
            Some((p, n))
        })
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn sample_configs_load_and_agree_on_their_members() {
    let dirs = cluster_dirs();
    let sizes: Vec<u64> = dirs.iter().map(|(_, n)| *n).collect();
    assert_eq!(sizes, vec![3, 5], "deploy/cluster-3 and deploy/cluster-5");
    let unit = read(&deploy_dir().join("driftlock.service"));
    for (dir, n) in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("read cluster dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        let expected: Vec<PathBuf> = (1..=n).map(|i| dir.join(format!("n{i}.toml"))).collect();
        assert_eq!(
            files,
            expected,
            "{}: n1.toml … n{n}.toml and nothing else",
            dir.display()
        );

        let mut nodes = BTreeSet::new();
        let mut members = None;
        for (i, path) in (1..=n).zip(&files) {
            let text = read(path);
            let config = load(path);
            let at = path.display();
            assert_eq!(config.node.id, i, "{at}: node.id");
            nodes.insert((
                config.node.id,
                config.node.raft_addr.clone(),
                config.node.client_addr.clone(),
            ));
            // Production: TLS with the node's own certificate, the unit's
            // data directory, metrics, NTP.
            let t = &config.tls;
            assert!(!t.insecure, "{at}: TLS on");
            let tls = Path::new("/etc/driftlock/tls");
            assert_eq!(t.ca.as_deref(), Some(tls.join("ca.pem").as_path()), "{at}");
            assert_eq!(
                t.cert.as_deref(),
                Some(tls.join(format!("node-{i}.pem")).as_path()),
                "{at}"
            );
            assert_eq!(
                t.key.as_deref(),
                Some(tls.join(format!("node-{i}.key")).as_path()),
                "{at}"
            );
            assert_eq!(config.node.data_dir, Path::new("/var/lib/driftlock"), "{at}: data_dir");
            assert!(
                unit.lines()
                    .any(|l| l == format!("ReadWritePaths={}", config.node.data_dir.display())),
                "{at}: the unit's ReadWritePaths is the data directory"
            );
            assert!(config.node.metrics_addr.is_some(), "{at}: metrics_addr");
            assert!(config.clock.ntp_servers.len() >= 2, "{at}: at least two NTP servers");
            assert_eq!(config.health.override_tier, None, "{at}: no drill override");

            let listed = members_line(path, &text);
            match &members {
                None => members = Some(listed),
                Some(first) => assert_eq!(&listed, first, "{at}: members differ from n1.toml's"),
            }
        }
        assert_eq!(
            members.as_ref(),
            Some(&nodes),
            "{}: members = the files' nodes",
            dir.display()
        );
        let raft: BTreeSet<&String> = nodes.iter().map(|(_, r, _)| r).collect();
        let client: BTreeSet<&String> = nodes.iter().map(|(_, _, c)| c).collect();
        assert_eq!(raft.len() as u64, n, "{}: distinct raft addresses", dir.display());
        assert_eq!(client.len() as u64, n, "{}: distinct client addresses", dir.display());
    }
}

/// `Key=value` of the unit file (the last one, as systemd takes it).
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .unwrap_or_else(|| panic!("driftlock.service has no {key}="))
}

/// Seconds of a systemd time span written as `N` or `Ns`.
fn seconds(value: &str) -> u64 {
    value
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|e| panic!("{value}: {e}"))
}

#[test]
fn the_unit_runs_the_config_and_fits_the_node() {
    let unit = read(&deploy_dir().join("driftlock.service"));
    let exec = unit_value(&unit, "ExecStart");
    assert!(
        exec.ends_with("/driftlock serve --config /etc/driftlock/node.toml"),
        "{exec}"
    );
    assert_eq!(unit_value(&unit, "User"), "driftlock");
    assert_eq!(unit_value(&unit, "Restart"), "on-failure");
    // Every connection both ports admit, and room for the rest.
    let nofile: usize = unit_value(&unit, "LimitNOFILE").parse().expect("LimitNOFILE");
    let caps = Caps::CLIENT.connections + Caps::RAFT.connections;
    assert!(nofile >= 2 * caps, "LimitNOFILE={nofile} for {caps} connections");
    // SIGTERM's drain must end before systemd's SIGKILL.
    let stop_s = seconds(unit_value(&unit, "TimeoutStopSec"));
    assert!(
        stop_s > 2 * driftlock_node::app::DRAIN_LIMIT.as_secs(),
        "TimeoutStopSec={stop_s}"
    );
    assert_eq!(unit_value(&unit, "CapabilityBoundingSet"), "");
    assert_eq!(unit_value(&unit, "KillSignal"), "SIGTERM");
    for line in [
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "ProtectHome=true",
    ] {
        assert!(unit.lines().any(|l| l == line), "driftlock.service lacks {line}");
    }
    let after = unit_value(&unit, "After");
    for dep in ["network-online.target", "chrony.service", "time-sync.target"] {
        assert!(after.split_whitespace().any(|d| d == dep), "After= lacks {dep}");
    }
}

/// One rule of the rules file, as far as the tests need it.
#[derive(Debug, Default)]
struct Rule {
    alert: String,
    expr: String,
    severity: String,
    summary: String,
    description: String,
}

/// Indentation of a line, in spaces.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The value of `key:` on `lines[i]`, with a block scalar (`>-`, `|`, …)
/// gathered from the more indented lines after it; the index after it.
fn value_at(lines: &[&str], i: usize, key: &str) -> (String, usize) {
    let line = lines[i];
    let rest = line.trim_start().strip_prefix(key).expect("the key");
    let rest = rest.trim();
    if !rest.starts_with(['>', '|']) {
        return (rest.trim_matches('"').to_owned(), i + 1);
    }
    let own = indent(line);
    let mut j = i + 1;
    let mut text = Vec::new();
    while j < lines.len() && (lines[j].trim().is_empty() || indent(lines[j]) > own) {
        text.push(lines[j].trim());
        j += 1;
    }
    (text.join(" ").trim().to_owned(), j)
}

/// The rules of `deploy/driftlock.rules.yml`: a line scan of the
/// one shape the file uses (`- alert:` items with `expr:`, `labels:` and
/// `annotations:`, values inline or as block scalars). promtool checks
/// that the file is valid YAML and PromQL.
fn rules() -> Vec<Rule> {
    let text = read(&deploy_dir().join("driftlock.rules.yml"));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    let mut rules: Vec<Rule> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let key = ["- alert:", "expr:", "severity:", "summary:", "description:"]
            .into_iter()
            .find(|k| trimmed.starts_with(k));
        let Some(key) = key else {
            i += 1;
            continue;
        };
        let (value, next) = value_at(&lines, i, key);
        if key == "- alert:" {
            rules.push(Rule {
                alert: value,
                ..Rule::default()
            });
        } else {
            let rule = rules.last_mut().unwrap_or_else(|| panic!("{key} before any alert"));
            let field = match key {
                "expr:" => &mut rule.expr,
                "severity:" => &mut rule.severity,
                "summary:" => &mut rule.summary,
                _ => &mut rule.description,
            };
            assert!(field.is_empty(), "{}: {key} twice", rule.alert);
            *field = value;
        }
        i = next;
    }
    rules
}

/// Every `driftlock_[a-z0-9_]+` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut from = 0;
    while let Some(at) = text[from..].find("driftlock_") {
        let start = from + at;
        let mut end = start + "driftlock_".len();
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase() || bytes[end].is_ascii_digit() || bytes[end] == b'_')
        {
            end += 1;
        }
        let whole_word = (start == 0 || !ident(bytes[start - 1])) && (end == bytes.len() || !ident(bytes[end]));
        if whole_word {
            names.insert(text[start..end].to_owned());
        }
        from = end;
    }
    names
}

/// The series names a scrape makes queryable: each sample's name, and for
/// each `# TYPE` family the names its type gives its samples (a counter's
/// `_total`, a histogram's `_bucket`, `_sum` and `_count`, …), so a family
/// with no series yet (a labelled counter never incremented) still counts.
/// A counter's bare family name is not in the set: PromQL finds nothing
/// under it.
fn exported_series(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut words = decl.split_whitespace();
            let (Some(family), Some(kind)) = (words.next(), words.next()) else {
                panic!("bad TYPE line: {line}");
            };
            // Only the names a family of this type always has; optional
            // ones (`_created`) count when a sample line shows them.
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        } else if line.starts_with("driftlock_") {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// Every query expression of the dashboard's panels (rows' panels too),
/// with the panel's title; each panel must have at least one.
fn dashboard_exprs() -> Vec<(String, String)> {
    let path = deploy_dir().join("grafana/driftlock.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(dashboard["title"], "driftlock");
    let mut panels: Vec<serde_json::Value> = dashboard["panels"].as_array().expect("a panels array").clone();
    assert!(!panels.is_empty(), "the dashboard has no panels");
    let mut exprs = Vec::new();
    while let Some(panel) = panels.pop() {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        if panel["type"] == "row" {
            panels.extend(panel["panels"].as_array().cloned().unwrap_or_default());
            continue;
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no target");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "panel {title:?} has a target without expr");
            exprs.push((title.clone(), expr.to_owned()));
        }
    }
    exprs
}

#[test]
fn the_rules_have_the_agreed_alerts_each_explained() {
    let rules = rules();
    let names: Vec<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    assert_eq!(names, ALERTS, "the alert names docs/operations.md uses");
    for r in &rules {
        assert!(!r.expr.is_empty(), "{}: no expr", r.alert);
        assert!(
            ["critical", "warning"].contains(&r.severity.as_str()),
            "{}: severity {:?}",
            r.alert,
            r.severity
        );
        assert!(r.summary.len() > 20, "{}: summary {:?}", r.alert, r.summary);
        // What it means and what to do first, and which metric it reads.
        assert!(r.description.contains("First:"), "{}: no first step", r.alert);
        assert!(r.description.contains("Metric"), "{}: no metric named", r.alert);
        let named = metric_names(&r.expr);
        for metric in &named {
            let family = metric.trim_end_matches("_bucket").trim_end_matches("_total");
            assert!(
                r.description.contains(family),
                "{}: the description does not name {metric}",
                r.alert
            );
        }
    }
    let disk = rules
        .iter()
        .find(|r| r.alert == "DriftlockDiskFilling")
        .expect("disk rule");
    assert!(
        disk.expr.contains("node_filesystem_avail_bytes"),
        "node_exporter's metric"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_query_only_exported_metrics() {
    let mut queried: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rules() {
        for name in metric_names(&r.expr) {
            queried.entry(name).or_default().push(format!("rule {}", r.alert));
        }
    }
    for (title, expr) in dashboard_exprs() {
        for name in metric_names(&expr) {
            queried.entry(name).or_default().push(format!("panel {title:?}"));
        }
    }
    // The two files query a good part of what the node exports.
    assert!(
        queried.len() >= 30,
        "only {} metrics queried: {queried:?}",
        queried.len()
    );

    let c = TestCluster::start(3).await;
    c.wait_leader(Duration::from_secs(20)).await;
    // A labelled family appears with its first series: the per-node clock
    // estimates after a few clock rounds. Scrape until every queried name
    // is there, for at most 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (exported, missing) = loop {
        let mut exported = BTreeSet::new();
        for i in 0..c.len() {
            let scrape = prom::scrape(c.metrics_addr(i));
            assert_eq!(prom::status_code(&scrape), 200, "node {}: {scrape}", c.id(i));
            let names = exported_series(&scrape);
            assert!(
                names.contains("driftlock_raft_is_leader") && names.contains("driftlock_raft_leader_changes_total"),
                "node {} exported {names:?}",
                c.id(i)
            );
            exported.extend(names);
        }
        let missing: Vec<String> = queried
            .iter()
            .filter(|(name, _)| !exported.contains(*name))
            .map(|(name, by)| format!("{name} (in {})", by.join(", ")))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (exported, missing);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        missing.is_empty(),
        "queried but not exported by the nodes:\n  {}\nexported: {exported:?}",
        missing.join("\n  ")
    );
}

/// `name` on `PATH`, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

#[test]
fn promtool_accepts_and_tests_the_rules() {
    let Some(promtool) = on_path("promtool") else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI must check the alert rules: promtool is not on PATH; install the `prometheus` package \
                 (apt-get install --no-install-recommends prometheus)"
            );
        }
        eprintln!("skipping promtool check rules: promtool is not on PATH (install the `prometheus` package)");
        return;
    };
    let dir = deploy_dir();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", promtool.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {} failed:\n{text}", args.join(" "));
        text
    };
    let checked = run(&["check", "rules", "driftlock.rules.yml"]);
    assert!(checked.contains(&format!("{} rules found", ALERTS.len())), "{checked}");
    // The unit tests: a healthy cluster raises no alert, each fault exactly
    // its own.
    let tested = run(&["test", "rules", "driftlock.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}
