//! A table's numeric axis as curves: one line per arm over the swept
//! setting, the shape a results plot draws.

use crate::*;
use std::collections::BTreeMap;

/// The results table as curves: one figure against one numeric swept
/// setting (auxiliary logits, width, epochs, a noise scale), a line per arm
/// and per combination of the other settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    /// The setting on the x axis, as the table labels it.
    pub x: String,
    pub metric: String,
    pub lines: Vec<Curve>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    /// A row that does not depend on the x setting (a teacher, a reference
    /// model): drawn flat across the plot.
    pub flat: bool,
    pub points: Vec<CurvePoint>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    pub x: f64,
    pub mean: f64,
    pub ci95: Option<(f64, f64)>,
    pub n: usize,
}

/// Curves of the table, when a swept setting is numeric: the one with most
/// values (at least two) is the x axis; the figure is the student arms'
/// metric. `None` when no setting is numeric.
pub fn curves(table: &ResultsTable) -> Option<Curves> {
    let students: Vec<&str> = table
        .rows
        .iter()
        .filter(|r| r.student)
        .map(|r| r.metric.as_str())
        .collect();
    let metric = if students.is_empty() {
        most_common(table.rows.iter().map(|r| r.metric.as_str()))
    } else {
        most_common(students.into_iter())
    }?;
    let rows: Vec<&Row> = table
        .rows
        .iter()
        .filter(|r| r.metric == metric && r.summary.is_some())
        .collect();
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut numeric: BTreeMap<&str, bool> = BTreeMap::new();
    for row in &rows {
        for (k, v) in &row.settings {
            let parsed = v.parse::<f64>().ok().filter(|x| x.is_finite());
            *numeric.entry(k).or_insert(true) &= parsed.is_some();
            if let Some(x) = parsed {
                let seen = values.entry(k).or_default();
                if !seen.contains(&x) {
                    seen.push(x);
                }
            }
        }
    }
    let x = values
        .iter()
        .filter(|(k, v)| numeric[*k] && v.len() >= 2)
        .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0)))
        .map(|(k, _)| k.to_string())?;
    let mut lines: Vec<Curve> = Vec::new();
    for row in rows {
        let mut others = row.settings.clone();
        let at = others.remove(&x).and_then(|v| v.parse::<f64>().ok());
        let label = ResultsTable::row_label(&Row {
            settings: others,
            ..row.clone()
        });
        let summary = row.summary.expect("filtered on a summary");
        let point = |x: f64| CurvePoint {
            x,
            mean: summary.mean,
            ci95: summary.ci95,
            n: summary.n,
        };
        let line = match lines.iter_mut().position(|l| l.label == label) {
            Some(i) => &mut lines[i],
            None => {
                lines.push(Curve {
                    label,
                    flat: at.is_none(),
                    points: Vec::new(),
                });
                lines.last_mut().expect("just pushed")
            }
        };
        match at {
            Some(v) => line.points.push(point(v)),
            None => {
                let range = &values[x.as_str()];
                let lo = range.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = range.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                line.points = vec![point(lo), point(hi)];
            }
        }
    }
    for line in &mut lines {
        line.points.sort_by(|a, b| a.x.total_cmp(&b.x));
    }
    Some(Curves {
        x,
        metric: metric.to_owned(),
        lines,
    })
}

fn most_common<'a>(items: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(k, _)| k)
}
