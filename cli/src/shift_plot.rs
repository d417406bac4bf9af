//! The shift plot: one line per row of the results table that was tested
//! against its control, its shift (arm minus control) as a dot and its 95%
//! interval as a bar, with zero marked. A bar clear of zero is a shift the
//! run resolved; its colour is the row's verdict.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use subliminal_results::{ResultsTable, Row, Verdict};

/// The rows to draw: those with a shift and its interval.
fn drawn(table: &ResultsTable) -> Vec<&Row> {
    table
        .rows
        .iter()
        .filter(|r| r.shift.is_some() && r.shift_ci95.is_some())
        .collect()
}

pub fn shifts(table: &ResultsTable, path: &Path) -> anyhow::Result<()> {
    let rows = drawn(table);
    anyhow::ensure!(
        !rows.is_empty(),
        "sweep {} has no rows tested against a control yet (shares with answer counts)",
        table.sweep
    );
    crate::plot::register_font()?;
    let labels: Vec<String> = rows.iter().map(|r| ResultsTable::row_label(r)).collect();
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(10);
    let left = (longest as u32 * 7 + 20).clamp(120, 900);
    let size = (left + 560, 110 + 30 * rows.len() as u32);
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            table,
            &rows,
            &labels,
            left,
        ),
        Some("svg") => draw(
            SVGBackend::new(path, size).into_drawing_area(),
            table,
            &rows,
            &labels,
            left,
        ),
        _ => anyhow::bail!(
            "cannot plot to {}: expected a .png or .svg file name",
            path.display()
        ),
    }
}

fn colour(verdict: Option<Verdict>) -> RGBColor {
    match verdict {
        Some(Verdict::Transfers) => RGBColor(200, 40, 40),
        Some(Verdict::Above) => RGBColor(230, 130, 20),
        Some(Verdict::Below) => RGBColor(40, 90, 200),
        _ => RGBColor(90, 90, 90),
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    table: &ResultsTable,
    rows: &[&Row],
    labels: &[String],
    left: u32,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err =
        |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("cannot draw the plot: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let (lo, hi) = rows.iter().fold((0.0f64, 0.0f64), |(lo, hi), r| {
        let (a, b) = r.shift_ci95.unwrap_or((0.0, 0.0));
        (lo.min(a), hi.max(b))
    });
    let pad = ((hi - lo) * 0.08).max(0.01);
    let n = rows.len() as i32;
    // Shares are tested over answers; any other figure (an accuracy) over seeds.
    let x_desc = if rows.iter().all(|r| r.samples.is_some()) {
        "arm minus control (share of answers)".to_owned()
    } else {
        let metrics: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r.metric.as_str()).collect();
        format!(
            "arm minus control ({}, paired over seeds)",
            metrics.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: shift vs control with 95% intervals (red: transfers)",
                table.sweep
            ),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(left)
        .build_cartesian_2d((lo - pad)..(hi + pad), -1..n)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len() + 2)
        .y_label_formatter(&|y| {
            usize::try_from(n - 1 - *y)
                .ok()
                .and_then(|i| labels.get(i).cloned())
                .unwrap_or_default()
        })
        .x_desc(x_desc.as_str())
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    chart
        .draw_series([PathElement::new(
            vec![(0.0, -1), (0.0, n)],
            BLACK.mix(0.6).stroke_width(1),
        )])
        .map_err(err)?;
    for (i, row) in rows.iter().enumerate() {
        let y = n - 1 - i as i32;
        let (a, b) = row.shift_ci95.unwrap_or((0.0, 0.0));
        let c = colour(row.verdict);
        chart
            .draw_series([PathElement::new(vec![(a, y), (b, y)], c.stroke_width(3))])
            .map_err(err)?;
        chart
            .draw_series([Circle::new((row.shift.unwrap_or(0.0), y), 5, c.filled())])
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
