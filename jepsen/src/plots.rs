//! The pictures of a run, as Jepsen draws them: `latency.png` (every
//! operation a point at its invocation time, its latency on a log scale,
//! coloured by ok / fail / info, one panel per op type) and
//! `throughput.png` (completions per second by kind), both with the
//! nemesis intervals shaded. Bitmap backend; the font is embedded from the
//! `dejavu` crate, so no system font is needed.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::history::{Completion, PairedOp};
use crate::verdict::{op_type, FaultRecord};

const FONT: &str = "sans-serif";

/// An error of drawing or encoding a picture.
pub type PlotError = Box<dyn std::error::Error>;

fn register_font() {
    let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
}

fn colour(c: Completion) -> RGBColor {
    match c {
        Completion::Ok => RGBColor(31, 119, 180),
        Completion::Fail => RGBColor(214, 39, 40),
        Completion::Info => RGBColor(255, 127, 14),
    }
}

/// A pale colour per nemesis, for its shaded intervals.
fn shade(name: &str) -> RGBColor {
    let palette = [
        RGBColor(255, 224, 224),
        RGBColor(224, 240, 255),
        RGBColor(224, 255, 224),
        RGBColor(255, 245, 204),
        RGBColor(240, 224, 255),
        RGBColor(224, 255, 255),
        RGBColor(255, 230, 245),
        RGBColor(235, 235, 235),
    ];
    let h = name
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
    palette[h % palette.len()]
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The end of the plotted time axis: the last completion or fault end, s.
fn end_s(pairs: &[PairedOp], faults: &[FaultRecord]) -> f64 {
    let ops = pairs.iter().filter_map(|p| p.complete_ns).max().unwrap_or(0);
    let f = faults.iter().map(|f| f.end_ns.unwrap_or(f.start_ns)).max().unwrap_or(0);
    secs(ops.max(f)).max(1.0)
}

/// Latencies of completed ops per op type: (invoke s, latency ms, kind).
pub fn latency_points(pairs: &[PairedOp]) -> BTreeMap<&'static str, Vec<(f64, f64, Completion)>> {
    let mut out: BTreeMap<&'static str, Vec<(f64, f64, Completion)>> = BTreeMap::new();
    for p in pairs {
        let (Some(t), Some(done)) = (op_type(&p.f), p.complete_ns) else {
            continue;
        };
        // Observations are recorded as an invoke and its instant ok.
        if t == "observe" {
            continue;
        }
        let ms = (done.saturating_sub(p.invoke_ns) as f64 / 1e6).max(0.01);
        out.entry(t).or_default().push((secs(p.invoke_ns), ms, p.completion));
    }
    out
}

/// Completions per whole second by kind: (second, ok, fail, info).
pub fn throughput(pairs: &[PairedOp]) -> Vec<(u64, u64, u64, u64)> {
    let mut per: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for p in pairs {
        let (Some(_), Some(done)) = (op_type(&p.f), p.complete_ns) else {
            continue;
        };
        let e = per.entry(done / 1_000_000_000).or_default();
        match p.completion {
            Completion::Ok => e.0 += 1,
            Completion::Fail => e.1 += 1,
            Completion::Info => e.2 += 1,
        }
    }
    let last = per.keys().next_back().copied().unwrap_or(0);
    (0..=last)
        .map(|s| {
            let (ok, fail, info) = per.get(&s).copied().unwrap_or_default();
            (s, ok, fail, info)
        })
        .collect()
}

/// Writes `latency.png` and `throughput.png` into `dir`.
pub fn write_plots(pairs: &[PairedOp], faults: &[FaultRecord], dir: &Path) -> Result<(), PlotError> {
    register_font();
    plot_latency(pairs, faults, &dir.join("latency.png"))?;
    plot_throughput(pairs, faults, &dir.join("throughput.png"))
}

fn shade_faults<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, impl Ranged<ValueType = f64>>>,
    faults: &[FaultRecord],
    end: f64,
    y: (f64, f64),
    label: bool,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    for f in faults {
        let (a, b) = (secs(f.start_ns), f.end_ns.map_or(end, secs));
        chart.draw_series(std::iter::once(Rectangle::new(
            [(a, y.0), (b, y.1)],
            shade(f.nemesis.name()).filled(),
        )))?;
        if label {
            chart.draw_series(std::iter::once(Text::new(
                f.nemesis.name().to_owned(),
                (a, y.1),
                (FONT, 11).into_font().color(&BLACK),
            )))?;
        }
    }
    Ok(())
}

fn plot_latency(pairs: &[PairedOp], faults: &[FaultRecord], path: &Path) -> Result<(), PlotError> {
    let points = latency_points(pairs);
    let panels = points.len().max(1);
    let height = u32::try_from(60 + 180 * panels).unwrap_or(4000);
    let root = BitMapBackend::new(path, (1400, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "latency by op (blue ok, red fail, orange info; shaded: faults)",
        (FONT, 20),
    )?;
    let end = end_s(pairs, faults);
    let max_ms = points.values().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.5;
    for (area, (name, pts)) in root.split_evenly((panels, 1)).iter().zip(&points) {
        let mut chart = ChartBuilder::on(area)
            .margin(8)
            .x_label_area_size(25)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end, (0.01f64..max_ms).log_scale())?;
        shade_faults(&mut chart, faults, end, (0.01, max_ms), true)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .y_desc(format!("{name} ms"))
            .label_style((FONT, 12))
            .draw()?;
        for kind in [Completion::Ok, Completion::Info, Completion::Fail] {
            let c = colour(kind);
            chart.draw_series(
                pts.iter()
                    .filter(|p| p.2 == kind)
                    .map(|p| Circle::new((p.0, p.1), 2, c.filled())),
            )?;
        }
    }
    root.present()?;
    Ok(())
}

fn plot_throughput(pairs: &[PairedOp], faults: &[FaultRecord], path: &Path) -> Result<(), PlotError> {
    let per = throughput(pairs);
    let root = BitMapBackend::new(path, (1400, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let end = end_s(pairs, faults);
    let max = per.iter().map(|r| r.1.max(r.2).max(r.3)).max().unwrap_or(1) as f64 * 1.15 + 1.0;
    let mut chart = ChartBuilder::on(&root)
        .caption("completions per second (shaded: faults)", (FONT, 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..max)?;
    shade_faults(&mut chart, faults, end, (0.0, max), true)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("s")
        .y_desc("ops/s")
        .label_style((FONT, 12))
        .draw()?;
    type Pick = fn(&(u64, u64, u64, u64)) -> u64;
    let series: [(&str, Completion, Pick); 3] = [
        ("ok", Completion::Ok, |r| r.1),
        ("fail", Completion::Fail, |r| r.2),
        ("info", Completion::Info, |r| r.3),
    ];
    for (label, kind, pick) in series {
        let c = colour(kind);
        chart
            .draw_series(LineSeries::new(
                per.iter().map(|r| (r.0 as f64 + 0.5, pick(r) as f64)),
                c.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
