//! Results: medians over runs, `latest.json`, the Markdown table, the
//! machine description and the PNG plots.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::workload::{percentile, Measured, System};

/// One row of `latest.json`: the median over the runs of a workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Workload name, as `compare-etcd --only` takes it (e.g. `contended`).
    pub workload: String,
    /// Concurrent clients (sessions for the keepalive load).
    pub clients: usize,
    /// `driftlock`, `etcd-rr` (etcd, clients pinned round-robin to the
    /// members) or `etcd-leader` (etcd, clients pinned to the leader).
    pub system: String,
    /// Lock+unlock pairs per second (keepalive: renewals per second).
    pub ops_per_sec: f64,
    /// Median lock latency, µs (re-grant: kill → grant).
    pub p50_us: u64,
    /// 99th percentile lock latency, µs.
    pub p99_us: u64,
    /// Largest latency of any op, µs.
    pub max_us: u64,
    /// Operations that returned an error.
    pub failed_ops: u64,
    /// Failover: fault → first successful op started after it, µs;
    /// re-grant: holder's death → waiter's grant, µs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_ok_after_fault_us: Option<u64>,
    /// Failover: the largest latency of ops in flight within
    /// `FAULT_WINDOW` of the fault, µs (`max_us` is the whole run's).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_near_fault_us: Option<u64>,
    /// Failover: Raft term changes from before the fault to the end.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub term_changes: Option<u64>,
    /// Keepalive: the leader's CPU, % of one core.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub leader_cpu_pct: Option<f64>,
    /// Keepalive: the leader's CPU per successful renewal, µs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub leader_cpu_us_per_renewal: Option<f64>,
    /// Keepalive: sessions (etcd: leases) alive at the end.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sessions_kept: Option<u64>,
    /// Keepalive: sessions not opened, expired or ended (0 is the goal).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sessions_lost: Option<u64>,
    /// Uncontended: CPU (user + system) of all three nodes per lock+unlock
    /// pair, µs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cpu_us_per_op: Option<f64>,
    /// How many runs the medians are over.
    pub runs: usize,
}

fn median_f(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn median_u(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// The median row of several runs.
pub fn median_row(workload: &str, clients: usize, system: System, runs: &[Measured]) -> Row {
    let opt_u: Vec<u64> = runs.iter().filter_map(|m| m.first_ok_after_fault_us).collect();
    let opt_f: Vec<f64> = runs.iter().filter_map(|m| m.leader_cpu_pct).collect();
    let opt_median_f = |f: fn(&Measured) -> Option<f64>| {
        let v: Vec<f64> = runs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median_f(v))
    };
    let opt_median_u = |f: fn(&Measured) -> Option<u64>| {
        let v: Vec<u64> = runs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median_u(v))
    };
    Row {
        workload: workload.into(),
        clients,
        system: system.name().into(),
        ops_per_sec: median_f(runs.iter().map(|m| m.ops_per_sec).collect()),
        p50_us: median_u(runs.iter().map(|m| m.p50_us).collect()),
        p99_us: median_u(runs.iter().map(|m| m.p99_us).collect()),
        max_us: median_u(runs.iter().map(|m| m.max_us).collect()),
        failed_ops: median_u(runs.iter().map(|m| m.failed_ops).collect()),
        first_ok_after_fault_us: (!opt_u.is_empty()).then(|| median_u(opt_u)),
        max_near_fault_us: opt_median_u(|m| m.max_near_fault_us),
        term_changes: opt_median_u(|m| m.term_changes),
        leader_cpu_pct: (!opt_f.is_empty()).then(|| median_f(opt_f)),
        leader_cpu_us_per_renewal: opt_median_f(|m| m.leader_cpu_us_per_renewal),
        sessions_kept: opt_median_u(|m| m.sessions_kept),
        sessions_lost: opt_median_u(|m| m.sessions_lost),
        cpu_us_per_op: opt_median_f(|m| m.cpu_us_per_op),
        runs: runs.len(),
    }
}

/// The machine the numbers come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// Median latency of a 4 KiB write + fdatasync in the data directory's
    /// file system, µs.
    pub fdatasync_p50_us: u64,
    /// 99th percentile of the same, µs.
    pub fdatasync_p99_us: u64,
    /// First line of `etcd --version` of the etcd binary the comparison ran
    /// (`etcd version unknown` if it could not be run).
    pub etcd_version: String,
    /// How the driftlock nodes were reached: `mutual TLS` (the default) or
    /// `plain TCP` (`--plain-tcp`). Empty in reports from before TLS.
    #[serde(default)]
    pub driftlock_transport: String,
    /// Median round trip of a 64-byte message over a loopback TCP
    /// connection, µs (0 in reports from before it was measured).
    #[serde(default)]
    pub loopback_rtt_p50_us: u64,
    /// `git rev-parse HEAD` of the source tree the benchmark was built
    /// from, with `-dirty` when tracked files differ from it; `unknown`
    /// when git cannot tell (empty in older reports).
    #[serde(default)]
    pub git_revision: String,
    /// SHA-256 (hex) of the `driftlock` binary the nodes ran; empty if it
    /// could not be read.
    #[serde(default)]
    pub driftlock_sha256: String,
    /// `release` or `debug`: the profile the benchmark and (from the same
    /// target directory) the nodes were built with; debug figures of
    /// driftlock are not comparable (empty in older reports).
    #[serde(default)]
    pub build_profile: String,
}

impl Machine {
    /// This machine's limit for a chain of durable lock handoffs, pairs/s:
    /// each handoff needs at least one fdatasync and two loopback round
    /// trips (leader → follower append and back), one after another, so
    /// `1 / (fdatasync p50 + 2 × loopback RTT p50)`. `None` when either was
    /// not measured.
    pub fn handoff_limit_per_sec(&self) -> Option<f64> {
        let us = self.fdatasync_p50_us + 2 * self.loopback_rtt_p50_us;
        (self.fdatasync_p50_us > 0 && self.loopback_rtt_p50_us > 0).then(|| 1e6 / us as f64)
    }
}

/// Round trips of a 64-byte message over one loopback TCP connection to an
/// echo thread (`samples` of them); returns the p50 and p99, µs.
pub fn loopback_rtt(samples: usize) -> std::io::Result<(u64, u64)> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let msg = [0xa5u8; 64];
    let mut buf = [0u8; 64];
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        c.write_all(&msg)?;
        c.read_exact(&mut buf)?;
        lat.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    drop(c);
    let _ = echo.join();
    lat.sort_unstable();
    Ok((percentile(&lat, 50.0), percentile(&lat, 99.0)))
}

/// `git rev-parse HEAD` of `dir`, plus `-dirty` when tracked files differ
/// from it; `unknown` when git cannot tell.
pub fn git_revision(dir: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.trim().is_empty());
            format!("{}{}", rev.trim(), if dirty { "-dirty" } else { "" })
        }
        None => "unknown".into(),
    }
}

/// SHA-256 of the file at `path`, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    let mut hex = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(hex, "{b:02x}");
    }
    Ok(hex)
}

/// Measures fdatasync latency in `dir` (`samples` 4 KiB write + fdatasync).
pub fn fdatasync_latency(dir: &Path, samples: usize) -> std::io::Result<(u64, u64)> {
    let path = dir.join("fdatasync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = [0x5au8; 4096];
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        lat.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    lat.sort_unstable();
    Ok((percentile(&lat, 50.0), percentile(&lat, 99.0)))
}

fn fmt_ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

/// Whether a larger or a smaller value of a measure is better.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// The better of the etcd rows' values of `value` (over `etcd-rr` and
/// `etcd-leader`, and plain `etcd` in old reports), with its system name.
fn best_etcd<'a>(
    rows: &'a [Row],
    workload: &str,
    clients: Option<usize>,
    better: Better,
    value: impl Fn(&Row) -> Option<f64>,
) -> Option<(f64, &'a str)> {
    rows.iter()
        .filter(|r| r.workload == workload && clients.is_none_or(|c| r.clients == c) && r.system.starts_with("etcd"))
        .filter_map(|r| value(r).map(|v| (v, r.system.as_str())))
        .reduce(|a, b| {
            let b_wins = match better {
                Better::Higher => b.0 > a.0,
                Better::Lower => b.0 < a.0,
            };
            if b_wins {
                b
            } else {
                a
            }
        })
}

/// One measure, `value`, of the driftlock row and of the better etcd row
/// of `workload` at `clients` (any count when `None`).
fn measure<'a>(
    rows: &'a [Row],
    workload: &str,
    clients: Option<usize>,
    better: Better,
    value: impl Fn(&Row) -> Option<f64>,
) -> (Option<f64>, Option<(f64, &'a str)>) {
    let driftlock = rows
        .iter()
        .find(|r| r.workload == workload && clients.is_none_or(|c| r.clients == c) && r.system == "driftlock");
    (
        driftlock.and_then(&value),
        best_etcd(rows, workload, clients, better, value),
    )
}

fn opt_cell<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

/// The Markdown results section: every row, then driftlock against the
/// better etcd variant for each measure.
pub fn markdown(rows: &[Row], machine: &Machine, command: &str, when: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Run: `{command}` at {when}, revision `{}`. Machine: {} logical cores; 4 KiB write + fdatasync p50 {} µs, \
         p99 {} µs; loopback TCP round trip p50 {} µs; {}; driftlock over {}{}.\n\n",
        if machine.git_revision.is_empty() {
            "unknown"
        } else {
            &machine.git_revision
        },
        machine.cores,
        machine.fdatasync_p50_us,
        machine.fdatasync_p99_us,
        machine.loopback_rtt_p50_us,
        machine.etcd_version,
        if machine.driftlock_transport.is_empty() {
            "plain TCP"
        } else {
            &machine.driftlock_transport
        },
        if machine.build_profile == "debug" {
            "; **debug build** (driftlock figures not comparable)"
        } else {
            ""
        }
    ));
    s.push_str(
        "etcd runs twice: `etcd-rr` pins client *i* to member *i* mod 3 (etcd's client default; followers \
         forward), `etcd-leader` pins every client to the leader.\n\n",
    );
    s.push_str(
        "| workload | clients | system | ops/s | p50 ms | p99 ms | max ms | failed | fault→first ok ms \
         | CPU µs per pair (3 nodes) | sessions kept / lost | leader CPU µs per renewal | machine limit pairs/s | runs |\n",
    );
    s.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let limit = machine.handoff_limit_per_sec();
    for r in rows {
        let kept_lost = match (r.sessions_kept, r.sessions_lost) {
            (Some(k), Some(l)) => format!("{k} / {l}"),
            _ => "–".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.workload,
            r.clients,
            r.system,
            r.ops_per_sec,
            fmt_ms(r.p50_us),
            fmt_ms(r.p99_us),
            fmt_ms(r.max_us),
            r.failed_ops,
            opt_cell(r.first_ok_after_fault_us, fmt_ms),
            opt_cell(r.cpu_us_per_op, |c| format!("{c:.0}")),
            kept_lost,
            opt_cell(r.leader_cpu_us_per_renewal, |c| format!("{c:.0}")),
            opt_cell(limit.filter(|_| r.workload == "contended"), |l| format!("{l:.0}")),
            r.runs
        ));
    }
    if let Some(l) = limit {
        s.push_str(&format!(
            "\nMachine limit for a chain of durable handoffs (the contended workload): 1 / (fdatasync p50 {} µs + \
             2 × loopback RTT p50 {} µs) = {l:.0} pairs/s.\n",
            machine.fdatasync_p50_us, machine.loopback_rtt_p50_us
        ));
    }
    s.push_str(
        "\nRatios driftlock / etcd (medians; etcd is the better of `etcd-rr` and `etcd-leader` for each measure):\n\n\
         | measure | driftlock | etcd | etcd variant | ratio | goal |\n|---|---:|---:|---|---:|---|\n",
    );
    let mut line = |name: &str, (d, e): (Option<f64>, Option<(f64, &str)>), goal: &str| {
        if let (Some(d), Some((e, variant))) = (d, e) {
            s.push_str(&format!(
                "| {name} | {d:.1} | {e:.1} | {variant} | {} | {goal} |\n",
                ratio(d, e)
            ));
        }
    };
    use Better::{Higher, Lower};
    let ms = |us: u64| us as f64 / 1000.0;
    for c in [1, 16, 64] {
        line(
            &format!("uncontended pairs/s, {c} clients"),
            measure(rows, "uncontended", Some(c), Higher, |r| Some(r.ops_per_sec)),
            if c == 64 { "≥ 3" } else { "" },
        );
    }
    line(
        "CPU µs per pair (3 nodes), 16 clients",
        measure(rows, "uncontended", Some(16), Lower, |r| r.cpu_us_per_op),
        "",
    );
    line(
        "lock p99 ms, 16 clients",
        measure(rows, "uncontended", Some(16), Lower, |r| Some(ms(r.p99_us))),
        "≤ 0.5",
    );
    line(
        "contended pairs/s, 16 clients",
        measure(rows, "contended", Some(16), Higher, |r| Some(r.ops_per_sec)),
        "≥ 10",
    );
    line(
        "keepalive leader CPU µs per renewal",
        measure(rows, "keepalive", None, Lower, |r| r.leader_cpu_us_per_renewal),
        "",
    );
    line(
        "keepalive sessions lost",
        measure(rows, "keepalive", None, Lower, |r| r.sessions_lost.map(|l| l as f64)),
        "0",
    );
    line(
        "SIGKILL → first ok op, ms",
        measure(rows, "failover-sigkill", Some(16), Lower, |r| {
            r.first_ok_after_fault_us.map(ms)
        }),
        "≤ 0.33 and < 500 ms",
    );
    line(
        "SIGKILL failed ops",
        measure(rows, "failover-sigkill", Some(16), Lower, |r| Some(r.failed_ops as f64)),
        "",
    );
    line(
        "SIGSTOP 2 s → first ok op, ms",
        measure(rows, "failover-pause", Some(16), Lower, |r| {
            r.first_ok_after_fault_us.map(ms)
        }),
        "",
    );
    line(
        "SIGSTOP 2 s: Raft term changes",
        measure(rows, "failover-pause", Some(16), Lower, |r| {
            r.term_changes.map(|t| t as f64)
        }),
        "no storm",
    );
    line(
        "planned transfer run: max latency ms (whole run)",
        measure(rows, "failover-planned", Some(16), Lower, |r| Some(ms(r.max_us))),
        "",
    );
    line(
        "planned transfer: worst op within 1 s of it, ms",
        measure(rows, "failover-planned", Some(16), Lower, |r| {
            r.max_near_fault_us.map(ms)
        }),
        "< 50 ms",
    );
    line(
        "planned transfer failed ops",
        measure(rows, "failover-planned", Some(16), Lower, |r| Some(r.failed_ops as f64)),
        "0",
    );
    line(
        "dead holder → waiter granted, ms",
        measure(rows, "regrant", Some(1), Lower, |r| Some(ms(r.p50_us))),
        "same TTL",
    );
    s
}

/// Replaces the text between `<!-- results:begin -->` and
/// `<!-- results:end -->` in `path` (creating the file or the markers).
pub fn splice_markdown(path: &Path, section: &str) -> std::io::Result<()> {
    const BEGIN: &str = "<!-- results:begin -->";
    const END: &str = "<!-- results:end -->";
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let block = format!("{BEGIN}\n{section}{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &old[..b], block, &old[e + END.len()..]),
        _ => format!("{old}\n{block}\n"),
    };
    std::fs::write(path, new)
}

const FONT: &str = "sans-serif";

fn register_font() {
    // The font comes embedded from the `dejavu` crate: no system fonts.
    let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
}

type PlotError = Box<dyn std::error::Error>;

/// Throughput of the uncontended workload against the client count.
pub fn plot_throughput(rows: &[Row], path: &Path) -> Result<(), PlotError> {
    register_font();
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_y = rows
        .iter()
        .filter(|r| r.workload == "uncontended")
        .map(|r| r.ops_per_sec)
        .fold(0.0, f64::max)
        * 1.15
        + 1.0;
    let mut chart = ChartBuilder::on(&root)
        .caption("Uncontended lock+unlock pairs/s vs clients", (FONT, 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..68f64, 0f64..max_y)?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("pairs/s")
        .label_style((FONT, 14))
        .draw()?;
    for (system, color) in [("driftlock", BLUE), ("etcd-rr", RED), ("etcd-leader", MAGENTA)] {
        let mut pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.workload == "uncontended" && r.system == system)
            .map(|r| (r.clients as f64, r.ops_per_sec))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(system)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// CDF of lock latencies (all runs pooled) per system.
pub fn plot_cdf(title: &str, samples: &[(String, Vec<u64>)], path: &Path) -> Result<(), PlotError> {
    register_font();
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_ms = samples
        .iter()
        .filter_map(|(_, v)| {
            let mut v = v.clone();
            v.sort_unstable();
            (!v.is_empty()).then(|| percentile(&v, 99.9) as f64 / 1000.0)
        })
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_ms, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("lock latency, ms")
        .y_desc("fraction of locks")
        .label_style((FONT, 14))
        .draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (k, (label, v)) in samples.iter().enumerate() {
        let mut v = v.clone();
        v.sort_unstable();
        if v.is_empty() {
            continue;
        }
        let n = v.len() as f64;
        let step = (v.len() / 2000).max(1);
        let pts: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .step_by(step)
            .map(|(i, &us)| ((us as f64 / 1000.0).min(max_ms), (i + 1) as f64 / n))
            .collect();
        let color = colors[k % colors.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Where a stored figure came from, for the JSON artifacts of
/// `held-locks-memory` and `snapshot-latency` (the fields machine.json
/// has for `compare-etcd`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    /// The command line as typed (`driftlock-bench …`).
    pub command: String,
    /// When the run started, UTC, RFC 3339 to the second.
    pub date_utc: String,
    /// [`git_revision`] of the source tree the benchmark was built from.
    pub git_revision: String,
    /// SHA-256 (hex) of the `driftlock` binary the nodes ran; empty if it
    /// could not be found or read.
    pub node_binary_sha256: String,
    /// `release` or `debug`: the profile the benchmark and (from the same
    /// target directory) the nodes were built with.
    pub build_profile: String,
    /// How the nodes were reached: `mutual TLS` or `plain TCP`.
    pub transport: String,
    /// Logical CPUs of the machine.
    pub cores: usize,
}

impl RunInfo {
    /// Describes this run of `command`: now, the source tree this crate was
    /// built from, the node binary [`driftlock_testkit::driftlock_exe`]
    /// finds (building it first under cargo).
    pub fn collect(command: String) -> RunInfo {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = source.parent().unwrap_or(source);
        RunInfo {
            command,
            date_utc: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            git_revision: git_revision(workspace),
            node_binary_sha256: driftlock_testkit::driftlock_exe()
                .ok()
                .and_then(|exe| sha256_file(&exe).ok())
                .unwrap_or_default(),
            build_profile: if cfg!(debug_assertions) { "debug" } else { "release" }.into(),
            transport: crate::cluster::transport().into(),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }
    }
}

/// `value` as pretty JSON with a final newline, written to `path` (its
/// directory created when missing).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, json + "\n")
}

/// Pause helper for settling between runs.
pub async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, clients: usize, system: &str, ops_per_sec: f64, p99_us: u64) -> Row {
        Row {
            workload: workload.into(),
            clients,
            system: system.into(),
            ops_per_sec,
            p50_us: p99_us / 2,
            p99_us,
            max_us: p99_us,
            failed_ops: 0,
            first_ok_after_fault_us: None,
            max_near_fault_us: None,
            term_changes: None,
            leader_cpu_pct: None,
            leader_cpu_us_per_renewal: None,
            sessions_kept: None,
            sessions_lost: None,
            cpu_us_per_op: None,
            runs: 1,
        }
    }

    fn machine() -> Machine {
        Machine {
            cores: 2,
            fdatasync_p50_us: 1_000,
            fdatasync_p99_us: 5_000,
            etcd_version: "etcd Version: 3.4.23".into(),
            driftlock_transport: "mutual TLS".into(),
            loopback_rtt_p50_us: 50,
            git_revision: "abc-dirty".into(),
            driftlock_sha256: String::new(),
            build_profile: "release".into(),
        }
    }

    #[test]
    fn the_better_etcd_variant_is_chosen_per_measure() {
        let rows = vec![
            row("uncontended", 16, "driftlock", 900.0, 20_000),
            row("uncontended", 16, "etcd-rr", 500.0, 30_000),
            row("uncontended", 16, "etcd-leader", 700.0, 40_000),
        ];
        let ops = best_etcd(&rows, "uncontended", Some(16), Better::Higher, |r| Some(r.ops_per_sec));
        assert_eq!(ops, Some((700.0, "etcd-leader")));
        let p99 = best_etcd(&rows, "uncontended", Some(16), Better::Lower, |r| Some(r.p99_us as f64));
        assert_eq!(p99, Some((30_000.0, "etcd-rr")));
        assert_eq!(
            best_etcd(&rows, "uncontended", Some(64), Better::Higher, |r| Some(r.ops_per_sec)),
            None
        );
        let md = markdown(&rows, &machine(), "driftlock-bench compare-etcd", "now");
        assert!(
            md.contains("| uncontended pairs/s, 16 clients | 900.0 | 700.0 | etcd-leader | 1.29 |"),
            "{md}"
        );
        assert!(
            md.contains("| lock p99 ms, 16 clients | 20.0 | 30.0 | etcd-rr | 0.67 |"),
            "{md}"
        );
        assert!(md.contains("revision `abc-dirty`"), "{md}");
    }

    #[test]
    fn the_handoff_limit_needs_both_measurements() {
        let m = machine();
        let limit = m.handoff_limit_per_sec().unwrap();
        assert!((limit - 1e6 / 1_100.0).abs() < 1e-9);
        let mut no_rtt = m.clone();
        no_rtt.loopback_rtt_p50_us = 0;
        assert_eq!(no_rtt.handoff_limit_per_sec(), None);
        let rows = vec![row("contended", 16, "driftlock", 200.0, 100_000)];
        let md = markdown(&rows, &m, "c", "now");
        assert!(md.contains("= 909 pairs/s"), "{md}");
        assert!(md.contains("| 909 | 1 |"), "the contended row shows the limit: {md}");
    }

    #[test]
    fn optional_fields_take_the_median_of_the_runs_that_have_them() {
        let runs: Vec<Measured> = [Some(30.0), None, Some(10.0), Some(20.0)]
            .into_iter()
            .map(|c| Measured {
                cpu_us_per_op: c,
                sessions_lost: c.map(|_| 0),
                ..Measured::default()
            })
            .collect();
        let r = median_row("uncontended", 16, System::EtcdLeader, &runs);
        assert_eq!(r.system, "etcd-leader");
        assert_eq!(r.cpu_us_per_op, Some(20.0));
        assert_eq!(r.sessions_lost, Some(0));
        assert_eq!(r.leader_cpu_us_per_renewal, None);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"cpu_us_per_op\":20.0"), "{json}");
        assert!(!json.contains("leader_cpu_us_per_renewal"), "{json}");
    }

    #[test]
    fn sha256_of_a_file_is_the_standard_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn loopback_round_trips_are_measured() {
        let (p50, p99) = loopback_rtt(20).unwrap();
        assert!(p50 <= p99);
    }

    #[test]
    fn git_revision_is_a_commit_or_unknown() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(git_revision(dir.path()), "unknown");
        let here = git_revision(Path::new(env!("CARGO_MANIFEST_DIR")));
        if here != "unknown" {
            let hash = here.trim_end_matches("-dirty");
            assert_eq!(hash.len(), 40, "{here}");
            assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{here}");
        }
    }
}
