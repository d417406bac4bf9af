//! The curve plot: the figure against a numeric swept setting (auxiliary
//! logits, width, init noise, epochs), one line per arm with its 95% band.
//! Rows that do not depend on the setting (a teacher, a reference model)
//! are drawn flat and dashed across the plot. A setting whose positive values
//! span more than a factor of 20 (none negative) is drawn on a log axis, a
//! swept 0 one decade below the smallest positive value.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use subliminal_results::Curves;

const PALETTE: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
];

pub fn curves(curves: &Curves, sweep: &str, path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        curves.lines.iter().any(|l| !l.points.is_empty()),
        "sweep {sweep} has no finished measurements to draw yet"
    );
    crate::plot::register_font()?;
    let longest = curves
        .lines
        .iter()
        .map(|l| l.label.chars().count())
        .max()
        .unwrap_or(10);
    let legend = (longest as u32 * 7 + 50).clamp(160, 600);
    let size = (860 + legend, 600.max(80 + 22 * curves.lines.len() as u32));
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            curves,
            sweep,
            legend,
        ),
        Some("svg") => draw(
            SVGBackend::new(path, size).into_drawing_area(),
            curves,
            sweep,
            legend,
        ),
        _ => anyhow::bail!(
            "cannot plot to {}: expected a .png or .svg file name",
            path.display()
        ),
    }
}

/// How the x setting maps onto the axis.
#[derive(Clone, Copy)]
enum Scale {
    Linear,
    /// Log10; a swept 0 sits one decade below the smallest positive value.
    Log {
        zero_at: f64,
    },
}

impl Scale {
    /// Log when the positive values span more than a factor of 20 and none is negative.
    fn of(curves: &Curves) -> Self {
        let xs: Vec<f64> = curves
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.x))
            .collect();
        let positive = xs.iter().copied().filter(|x| *x > 0.0);
        let lo = positive.clone().fold(f64::INFINITY, f64::min);
        let hi = positive.fold(f64::NEG_INFINITY, f64::max);
        if xs.iter().all(|x| *x >= 0.0) && lo.is_finite() && hi / lo > 20.0 {
            Scale::Log {
                zero_at: lo.log10() - 1.0,
            }
        } else {
            Scale::Linear
        }
    }

    fn at(self, x: f64) -> f64 {
        match self {
            Scale::Linear => x,
            Scale::Log { zero_at } if x <= 0.0 => zero_at,
            Scale::Log { .. } => x.log10(),
        }
    }

    /// The swept value at axis position `t` (one of the ticks).
    fn value(self, t: f64) -> f64 {
        match self {
            Scale::Linear => t,
            Scale::Log { zero_at } if t <= zero_at => 0.0,
            Scale::Log { .. } => 10f64.powf(t),
        }
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    curves: &Curves,
    sweep: &str,
    legend_width: u32,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err =
        |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("cannot draw the plot: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let (width, _) = root.dim_in_pixel();
    let (plot, legend) = root.split_horizontally(width - legend_width);
    let scale = Scale::of(curves);
    let log = matches!(scale, Scale::Log { .. });
    let at = |x: f64| scale.at(x);
    let points = || curves.lines.iter().flat_map(|l| l.points.iter());
    let (x_lo, x_hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(at(p.x)), hi.max(at(p.x)))
    });
    let (y_lo, y_hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        let (a, b) = p.ci95.unwrap_or((p.mean, p.mean));
        (lo.min(a.min(p.mean)), hi.max(b.max(p.mean)))
    });
    // Shares and accuracies keep their natural scale.
    let (y_lo, y_hi) = if y_lo >= 0.0 && y_hi <= 1.0 {
        (0.0, 1.0)
    } else {
        let pad = ((y_hi - y_lo) * 0.08).max(1e-9);
        (y_lo - pad, y_hi + pad)
    };
    let x_pad = ((x_hi - x_lo) * 0.03).max(1e-9);
    // Ticks at the swept values themselves.
    let mut ticks: Vec<f64> = points().map(|p| at(p.x)).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            format!(
                "{sweep}: {} vs {} (mean over seeds, 95% band)",
                curves.metric, curves.x
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x_lo - x_pad)..(x_hi + x_pad), y_lo..y_hi)
        .map_err(err)?;
    let x_desc = if log {
        format!("{} (log scale)", curves.x)
    } else {
        curves.x.clone()
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(&curves.metric)
        .disable_x_mesh()
        .x_labels(0)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    // Ticks and grid lines at the swept values, labelled with the values as swept.
    let tick_font = ("sans-serif", 14).into_font();
    for &t in &ticks {
        chart
            .draw_series([PathElement::new(
                vec![(t, y_lo), (t, y_hi)],
                BLACK.mix(0.12).stroke_width(1),
            )])
            .map_err(err)?;
        let (px, py) = chart.backend_coord(&(t, y_lo));
        let v = scale.value(t);
        let text = if (v - v.round()).abs() < 1e-9 * v.abs().max(1.0) {
            format!("{}", v.round())
        } else {
            format!("{}", (v * 1e6).round() / 1e6)
        };
        plot.draw(&PathElement::new(
            vec![(px, py), (px, py + 5)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
        plot.draw(&Text::new(
            text,
            (px, py + 8),
            tick_font
                .clone()
                .into_text_style(&plot)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(err)?;
    }
    for (i, line) in curves.lines.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let band: Vec<(f64, f64)> = line
            .points
            .iter()
            .filter_map(|p| p.ci95.map(|(lo, _)| (at(p.x), lo)))
            .chain(
                line.points
                    .iter()
                    .rev()
                    .filter_map(|p| p.ci95.map(|(_, hi)| (at(p.x), hi))),
            )
            .collect();
        if band.len() >= 4 {
            chart
                .draw_series([Polygon::new(band, colour.mix(0.15).filled())])
                .map_err(err)?;
        }
        let xy: Vec<(f64, f64)> = line.points.iter().map(|p| (at(p.x), p.mean)).collect();
        if line.flat {
            chart
                .draw_series(DashedLineSeries::new(
                    xy.clone(),
                    8,
                    6,
                    colour.stroke_width(2),
                ))
                .map_err(err)?;
        } else {
            chart
                .draw_series(LineSeries::new(xy.clone(), colour.stroke_width(2)))
                .map_err(err)?;
        }
        if !line.flat {
            chart
                .draw_series(xy.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(err)?;
        }
    }
    // The legend has its own panel, so it never hides a line.
    let font = ("sans-serif", 13).into_font();
    for (i, line) in curves.lines.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let y = 60 + 22 * i as i32;
        let style = colour.stroke_width(3);
        if line.flat {
            legend
                .draw(&PathElement::new(vec![(5, y), (14, y)], style))
                .map_err(err)?;
            legend
                .draw(&PathElement::new(vec![(20, y), (29, y)], style))
                .map_err(err)?;
        } else {
            legend
                .draw(&PathElement::new(vec![(5, y), (29, y)], style))
                .map_err(err)?;
        }
        legend
            .draw(&Text::new(line.label.clone(), (36, y - 7), font.clone()))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
