//! One SVG timeline per scenario: a panel per client and workload, operations over time
//! (latency on a log scale), errors in red, the fault window shaded.
//!
//! Operations are binned (20 ms): each bin draws its slowest success and its slowest failure, so a
//! 64-way workload stays a file a browser opens at once.

use std::path::Path;

use plotters::prelude::*;

use super::report::{Outcome, ScenarioReport};

const BIN_MS: f64 = 20.0;
const Y_MIN_MS: f64 = 0.05;
const Y_MAX_MS: f64 = 20_000.0;

/// Writes `report`'s timeline to `path`.
///
/// # Errors
/// When the file cannot be written.
pub fn write(report: &ScenarioReport, path: &Path) -> Result<(), String> {
    let panels = report.outcomes.len().max(1);
    let end_ms = report
        .outcomes
        .iter()
        .flat_map(|o| o.ops.iter().map(|op| op.end_ms))
        .fold(report.restored_ms, f64::max);
    let root = SVGBackend::new(path, (1100, 40 + 170 * u32::try_from(panels).unwrap_or(1)))
        .into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (title, body) = root.split_vertically(40);
    title
        .draw(&Text::new(
            format!("{}: {}", report.scenario.name(), report.description),
            (10, 12),
            ("sans-serif", 18),
        ))
        .map_err(|e| e.to_string())?;
    for (area, outcome) in body.split_evenly((panels, 1)).iter().zip(&report.outcomes) {
        panel(area, outcome, report, end_ms / 1e3).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn panel(
    area: &Area<'_>,
    outcome: &Outcome,
    report: &ScenarioReport,
    end_s: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let caption = format!(
        "{} / {}: {} ops, {} failed",
        outcome.client.label(),
        outcome.workload.label(),
        outcome.operations,
        outcome.failed
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(6)
        .x_label_area_size(24)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..end_s.max(1.0), (Y_MIN_MS..Y_MAX_MS).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("op latency, ms")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let (fault_s, restored_s) = (report.fault_ms / 1e3, report.restored_ms / 1e3);
    chart.draw_series(std::iter::once(Rectangle::new(
        [
            (fault_s, Y_MIN_MS),
            (restored_s.max(fault_s + 0.02), Y_MAX_MS),
        ],
        RGBColor(255, 224, 178).filled(),
    )))?;
    let (ok, failed) = binned(outcome);
    chart.draw_series(
        ok.into_iter()
            .map(|(x, y)| Circle::new((x, y), 2, RGBColor(46, 125, 50).filled())),
    )?;
    chart.draw_series(
        failed
            .into_iter()
            .map(|(x, y)| Circle::new((x, y), 3, RGBColor(211, 47, 47).filled())),
    )?;
    Ok(())
}

/// Points of a panel: (seconds, milliseconds).
type Points = Vec<(f64, f64)>;

/// Per bin of end time: the slowest success and the slowest failure.
fn binned(outcome: &Outcome) -> (Points, Points) {
    let mut ok = std::collections::BTreeMap::<i64, f64>::new();
    let mut failed = std::collections::BTreeMap::<i64, f64>::new();
    for op in &outcome.ops {
        let bin = (op.end_ms / BIN_MS).floor() as i64;
        let latency = op.duration_ms().clamp(Y_MIN_MS, Y_MAX_MS);
        let slot = if op.error.is_some() {
            &mut failed
        } else {
            &mut ok
        };
        let worst = slot.entry(bin).or_insert(0.0);
        *worst = worst.max(latency);
    }
    let points = |m: std::collections::BTreeMap<i64, f64>| {
        m.into_iter()
            .map(|(bin, ms)| (bin as f64 * BIN_MS / 1e3, ms))
            .collect()
    };
    (points(ok), points(failed))
}
