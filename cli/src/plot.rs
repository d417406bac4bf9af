//! The transfer grid: for each panel (distillation target), a heat map of
//! teacher init (rows) × student init (columns), coloured by the mean student
//! accuracy, with the figure written in each cell. Same-init cells lie on the
//! diagonal.

use std::collections::BTreeSet;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use subliminal_results::TransferCell;
use subliminal_shared::experiments::GridLabels;

pub use subliminal_worker::fonts::register_font;

pub fn transfer_grid(
    cells: &[TransferCell],
    sweep: &str,
    text: &GridLabels,
    path: &Path,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !cells.is_empty(),
        "sweep {sweep} has no finished student evaluations to plot yet"
    );
    register_font()?;
    let panels: Vec<String> = cells
        .iter()
        .map(|c| c.panel.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let teachers = axis(cells.iter().map(|c| &c.teacher));
    let students = axis(cells.iter().map(|c| &c.student));
    let cell = (480 / students.len().max(teachers.len()).max(1)).clamp(24, 90) as u32;
    let left = left_margin(&teachers) as u32;
    let panel_w = left + cell * students.len() as u32 + 30;
    let title = (sweep.chars().count() + text.figure.len() + 20) as u32 * 11;
    let width = (panel_w * panels.len() as u32 + 160).max(title);
    // Tall enough for the colour scale beside a one-row grid.
    let height = (110 + cell * teachers.len() as u32 + 60).max(320);
    let size = (width, height);
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            cells,
            (sweep, text),
            &panels,
            &teachers,
            &students,
            cell,
            panel_w,
        ),
        Some("svg") => draw(
            SVGBackend::new(path, size).into_drawing_area(),
            cells,
            (sweep, text),
            &panels,
            &teachers,
            &students,
            cell,
            panel_w,
        ),
        _ => anyhow::bail!(
            "cannot plot to {}: expected a .png or .svg file name",
            path.display()
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    cells: &[TransferCell],
    (sweep, text): (&str, &GridLabels),
    panels: &[String],
    teachers: &[String],
    students: &[String],
    cell: u32,
    panel_w: u32,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err =
        |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("cannot draw the plot: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let title = ("sans-serif", 20).into_font();
    let label = ("sans-serif", 14).into_font();
    let small = ("sans-serif", (cell / 4).clamp(9, 14)).into_font();
    let centred = |font: &FontDesc<'static>| {
        font.clone()
            .into_text_style(&root)
            .pos(Pos::new(HPos::Center, VPos::Center))
    };
    root.draw(&Text::new(
        format!("{sweep}: {} (mean over seeds)", text.figure),
        (20, 15),
        title,
    ))
    .map_err(err)?;
    let c = cell as i32;
    for (p, panel) in panels.iter().enumerate() {
        let x0 = left_margin(teachers) + p as i32 * panel_w as i32;
        let y0 = 95;
        root.draw(&Text::new(panel.clone(), (x0, 50), label.clone()))
            .map_err(err)?;
        root.draw(&Text::new(
            format!("student {} →", text.family),
            (x0, 72),
            small.clone(),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            format!("teacher {} ↓", text.family),
            (x0 - left_margin(teachers) + 5, 72),
            small.clone(),
        ))
        .map_err(err)?;
        for (j, s) in students.iter().enumerate() {
            let at = (x0 + j as i32 * c + c / 2, y0 - 8);
            root.draw(&Text::new(s.to_string(), at, centred(&small)))
                .map_err(err)?;
        }
        for (i, t) in teachers.iter().enumerate() {
            let y = y0 + i as i32 * c;
            let right_aligned = small
                .clone()
                .into_text_style(&root)
                .pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(
                t.to_string(),
                (x0 - 6, y + c / 2),
                right_aligned,
            ))
            .map_err(err)?;
            for (j, s) in students.iter().enumerate() {
                let x = x0 + j as i32 * c;
                let found = cells
                    .iter()
                    .find(|k| &k.panel == panel && k.teacher == *t && k.student == *s);
                let (fill, text) = match found {
                    Some(k) => (colour(k.mean), format!("{:.2}", k.mean)),
                    None => (RGBColor(235, 235, 235), String::new()),
                };
                root.draw(&Rectangle::new(
                    [(x, y), (x + c - 1, y + c - 1)],
                    fill.filled(),
                ))
                .map_err(err)?;
                if !text.is_empty() {
                    let ink = if found.is_some_and(|k| k.mean > 0.6) {
                        BLACK
                    } else {
                        WHITE
                    };
                    let style = small
                        .clone()
                        .into_text_style(&root)
                        .pos(Pos::new(HPos::Center, VPos::Center))
                        .color(&ink);
                    root.draw(&Text::new(text, (x + c / 2, y + c / 2), style))
                        .map_err(err)?;
                }
            }
        }
    }
    // Colour scale.
    let right = left_margin(teachers) + panels.len() as i32 * panel_w as i32;
    for k in 0..=100 {
        let y = 95 + (100 - k) * 2;
        root.draw(&Rectangle::new(
            [(right, y), (right + 16, y + 2)],
            colour(k as f64 / 100.0).filled(),
        ))
        .map_err(err)?;
    }
    for (v, y) in [(1.0, 95), (0.5, 195), (0.0, 295)] {
        root.draw(&Text::new(
            format!("{v:.1}"),
            (right + 22, y - 6),
            small.clone(),
        ))
        .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Room left of a panel for its row labels (init seeds or model names).
fn left_margin(teachers: &[String]) -> i32 {
    let longest = teachers
        .iter()
        .map(|t| t.chars().count())
        .max()
        .unwrap_or(1) as i32;
    (longest * 8 + 40).max(90)
}

/// The distinct labels of an axis, numbers in numeric order, then names.
fn axis<'a>(labels: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = labels
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    out.sort_by_key(|l| {
        (
            l.parse::<u64>().ok().is_none(),
            l.parse::<u64>().unwrap_or(0),
            l.clone(),
        )
    });
    out
}

/// A dark-blue → teal → yellow scale over [0, 1].
fn colour(v: f64) -> RGBColor {
    let stops = [
        (0.0, (48, 18, 110)),
        (0.5, (33, 145, 140)),
        (1.0, (250, 230, 35)),
    ];
    let v = v.clamp(0.0, 1.0);
    let (a, b) = if v <= 0.5 {
        (stops[0], stops[1])
    } else {
        (stops[1], stops[2])
    };
    let t = (v - a.0) / (b.0 - a.0);
    let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round() as u8;
    RGBColor(
        mix(a.1 .0, b.1 .0),
        mix(a.1 .1, b.1 .1),
        mix(a.1 .2, b.1 .2),
    )
}
