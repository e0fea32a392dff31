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
    /// `driftlock` or `etcd`.
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
    /// Keepalive: the leader's CPU, % of one core.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub leader_cpu_pct: Option<f64>,
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
        leader_cpu_pct: (!opt_f.is_empty()).then(|| median_f(opt_f)),
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

fn find<'a>(rows: &'a [Row], workload: &str, clients: usize, system: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.workload == workload && r.clients == clients && r.system == system)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

/// The Markdown results section.
pub fn markdown(rows: &[Row], machine: &Machine, command: &str, when: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Run: `{command}` at {when}. Machine: {} logical cores; 4 KiB write + fdatasync p50 {} µs, p99 {} µs; {}; \
         driftlock over {}.\n\n",
        machine.cores,
        machine.fdatasync_p50_us,
        machine.fdatasync_p99_us,
        machine.etcd_version,
        if machine.driftlock_transport.is_empty() {
            "plain TCP"
        } else {
            &machine.driftlock_transport
        }
    ));
    s.push_str("| workload | clients | system | ops/s | p50 ms | p99 ms | max ms | failed | fault→first ok ms | leader CPU % | runs |\n");
    s.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.workload,
            r.clients,
            r.system,
            r.ops_per_sec,
            fmt_ms(r.p50_us),
            fmt_ms(r.p99_us),
            fmt_ms(r.max_us),
            r.failed_ops,
            r.first_ok_after_fault_us.map(fmt_ms).unwrap_or_else(|| "–".into()),
            r.leader_cpu_pct
                .map(|c| format!("{c:.0}"))
                .unwrap_or_else(|| "–".into()),
            r.runs
        ));
    }
    s.push_str("\nRatios driftlock / etcd (medians):\n\n| measure | driftlock | etcd | ratio | goal |\n|---|---:|---:|---:|---|\n");
    let mut line = |name: &str, d: Option<f64>, e: Option<f64>, goal: &str| {
        if let (Some(d), Some(e)) = (d, e) {
            s.push_str(&format!("| {name} | {d:.1} | {e:.1} | {} | {goal} |\n", ratio(d, e)));
        }
    };
    for c in [1, 16, 64] {
        line(
            &format!("uncontended pairs/s, {c} clients"),
            find(rows, "uncontended", c, "driftlock").map(|r| r.ops_per_sec),
            find(rows, "uncontended", c, "etcd").map(|r| r.ops_per_sec),
            if c == 64 { "≥ 3" } else { "" },
        );
    }
    line(
        "lock p99 ms, 16 clients",
        find(rows, "uncontended", 16, "driftlock").map(|r| r.p99_us as f64 / 1000.0),
        find(rows, "uncontended", 16, "etcd").map(|r| r.p99_us as f64 / 1000.0),
        "≤ 0.5",
    );
    line(
        "contended pairs/s, 16 clients",
        find(rows, "contended", 16, "driftlock").map(|r| r.ops_per_sec),
        find(rows, "contended", 16, "etcd").map(|r| r.ops_per_sec),
        "≥ 10",
    );
    line(
        "keepalive leader CPU %",
        find(rows, "keepalive", 0, "driftlock")
            .or_else(|| {
                rows.iter()
                    .find(|r| r.workload == "keepalive" && r.system == "driftlock")
            })
            .and_then(|r| r.leader_cpu_pct),
        rows.iter()
            .find(|r| r.workload == "keepalive" && r.system == "etcd")
            .and_then(|r| r.leader_cpu_pct),
        "",
    );
    line(
        "SIGKILL → first ok op, ms",
        find(rows, "failover-sigkill", 16, "driftlock")
            .and_then(|r| r.first_ok_after_fault_us.map(|u| u as f64 / 1000.0)),
        find(rows, "failover-sigkill", 16, "etcd").and_then(|r| r.first_ok_after_fault_us.map(|u| u as f64 / 1000.0)),
        "≤ 0.33 and < 500 ms",
    );
    line(
        "SIGKILL failed ops",
        find(rows, "failover-sigkill", 16, "driftlock").map(|r| r.failed_ops as f64),
        find(rows, "failover-sigkill", 16, "etcd").map(|r| r.failed_ops as f64),
        "",
    );
    line(
        "planned transfer max latency ms",
        find(rows, "failover-planned", 16, "driftlock").map(|r| r.max_us as f64 / 1000.0),
        find(rows, "failover-planned", 16, "etcd").map(|r| r.max_us as f64 / 1000.0),
        "< 50 ms",
    );
    line(
        "planned transfer failed ops",
        find(rows, "failover-planned", 16, "driftlock").map(|r| r.failed_ops as f64),
        find(rows, "failover-planned", 16, "etcd").map(|r| r.failed_ops as f64),
        "0",
    );
    line(
        "dead holder → waiter granted, ms",
        find(rows, "regrant", 1, "driftlock").map(|r| r.p50_us as f64 / 1000.0),
        find(rows, "regrant", 1, "etcd").map(|r| r.p50_us as f64 / 1000.0),
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
    for (system, color) in [("driftlock", BLUE), ("etcd", RED)] {
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

/// Pause helper for settling between runs.
pub async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}
