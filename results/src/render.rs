//! A results table as people and tools read it: figures and p-values as
//! text, the table itself, CSV and JSON.

use crate::*;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use std::collections::BTreeMap;

/// A p- or q-value for people: three decimals, two significant digits
/// below 0.001, and a bound below 1e-15, where a distribution's tail in
/// double precision no longer resolves it (a printed 0 would claim certainty).
pub fn p_text(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else if p >= 1e-15 {
        format!("{p:.1e}")
    } else {
        "<1e-15".to_owned()
    }
}

/// A figure for people: three decimals, or two significant digits where
/// three decimals would print a nonzero value as zero (a shift in a
/// probability of 0.002 is a finding, not "+0.000").
pub fn value_text(x: f64, signed: bool) -> String {
    match (x != 0.0 && x.abs() < 0.01, signed) {
        (true, true) => format!("{x:+.1e}"),
        (true, false) => format!("{x:.1e}"),
        (false, true) => format!("{x:+.3}"),
        (false, false) => format!("{x:.3}"),
    }
}

/// A row's verdict for people: a null says what the run could have seen.
pub fn verdict_text(row: &Row) -> String {
    match (row.verdict, row.detectable_shift) {
        (Some(Verdict::NoEvidence), Some(d)) => {
            format!("no evidence (could see ≥{})", value_text(d, true))
        }
        (Some(v), _) => v.as_str().to_owned(),
        (None, _) => "-".to_owned(),
    }
}

impl ResultsTable {
    /// `arm settings`, the way a row is named in a plot.
    pub fn row_label(row: &Row) -> String {
        let settings = Self::settings_label(&row.settings);
        if settings.is_empty() {
            row.arm.clone()
        } else {
            format!("{} {settings}", row.arm)
        }
    }

    /// `key=value ...`, the way the table shows a row's settings.
    pub fn settings_label(settings: &BTreeMap<String, String>) -> String {
        settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn has_settings(&self) -> bool {
        self.rows.iter().any(|r| !r.settings.is_empty())
    }

    /// The table people read.
    pub fn to_table(&self) -> String {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        let mut header = vec!["arm"];
        if self.has_settings() {
            header.push("settings");
        }
        header.extend(["mean", "95% CI", "std", "n"]);
        let shifts = self.rows.iter().any(|r| r.shift.is_some());
        if shifts {
            header.push("vs control");
        }
        let tests = self.rows.iter().any(|r| r.verdict.is_some());
        if tests {
            header.extend(["p (BH)", "verdict"]);
        }
        header.extend(["failed", "pending"]);
        table.set_header(header);
        let mut errors = Vec::new();
        for row in &self.rows {
            let mut cells = vec![Cell::new(&row.arm)];
            if self.has_settings() {
                cells.push(Cell::new(Self::settings_label(&row.settings)));
            }
            let (mean, ci, std) = match &row.summary {
                Some(s) => (
                    value_text(s.mean, false),
                    s.ci95
                        .map(|(lo, hi)| {
                            format!("[{}, {}]", value_text(lo, false), value_text(hi, false))
                        })
                        .unwrap_or_else(|| "-".to_owned()),
                    s.std
                        .map(|v| value_text(v, false))
                        .unwrap_or_else(|| "-".to_owned()),
                ),
                None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            };
            let n = row.summary.map_or(0, |s| s.n);
            cells.extend([
                Cell::new(mean).set_alignment(CellAlignment::Right),
                Cell::new(ci).set_alignment(CellAlignment::Right),
                Cell::new(std).set_alignment(CellAlignment::Right),
                Cell::new(n).set_alignment(CellAlignment::Right),
            ]);
            if shifts {
                let shift = row
                    .shift
                    .map_or_else(|| "-".to_owned(), |d| value_text(d, true));
                cells.push(Cell::new(shift).set_alignment(CellAlignment::Right));
            }
            if tests {
                let q = row.q_value.map_or_else(|| "-".to_owned(), p_text);
                cells.push(Cell::new(q).set_alignment(CellAlignment::Right));
                cells.push(Cell::new(verdict_text(row)));
            }
            cells.extend([
                Cell::new(row.failed).set_alignment(CellAlignment::Right),
                Cell::new(row.pending).set_alignment(CellAlignment::Right),
            ]);
            table.add_row(cells);
            if let Some(e) = &row.error {
                errors.push(format!("  {}: {e}", row.arm));
            }
        }
        let metrics: std::collections::BTreeSet<&str> =
            self.rows.iter().map(|r| r.metric.as_str()).collect();
        let metrics: Vec<&str> = metrics.into_iter().collect();
        let mut out = format!(
            "sweep {} ({}), {}: {}\n{table}\n",
            self.sweep,
            self.experiment,
            if metrics.len() > 1 {
                "metrics"
            } else {
                "metric"
            },
            if metrics.is_empty() {
                "-".to_owned()
            } else {
                metrics.join(", ")
            }
        );
        if let Some(note) = self.tests_note() {
            out.push_str(&note);
        }
        if !self.families.is_empty() {
            let models: Vec<String> = self
                .families
                .iter()
                .map(|(model, family)| format!("{model}: {family}"))
                .collect();
            out.push_str(&format!("model families: {}\n", models.join("; ")));
        }
        if !errors.is_empty() {
            out.push_str("failures:\n");
            out.push_str(&errors.join("\n"));
            out.push('\n');
        }
        out
    }

    /// What the table's tests are, when it has any: the footnote under it.
    pub fn tests_note(&self) -> Option<String> {
        let n = self.rows.iter().filter(|r| r.q_value.is_some()).count();
        if !self.rows.iter().any(|r| r.verdict.is_some()) {
            return None;
        }
        let shares = self
            .rows
            .iter()
            .any(|r| r.q_value.is_some() && r.samples.is_some());
        let others = self
            .rows
            .iter()
            .any(|r| r.q_value.is_some() && r.samples.is_none());
        let test = match (shares, others) {
            (true, false) => "Fisher's exact test against control over every answer, pooled over seeds",
            (false, _) => "a paired t-test against control over seeds",
            (true, true) => "Fisher's exact test over every answer for shares, a paired t-test over seeds otherwise",
        };
        Some(format!(
            "p (BH): {test},\n\
             Benjamini–Hochberg adjusted over the table's {n} tests; verdict at q < {FDR};\n\
             'could see': the smallest rise detectable at α = {ALPHA} with power {POWER}\n"
        ))
    }

    pub fn to_csv(&self) -> anyhow::Result<String> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record([
            "sweep",
            "arm",
            "settings",
            "metric",
            "n",
            "mean",
            "ci95_low",
            "ci95_high",
            "std",
            "vs_control",
            "vs_control_ci95_low",
            "vs_control_ci95_high",
            "p_value",
            "q_value",
            "p_seeds",
            "detectable_shift",
            "verdict",
            "failed",
            "pending",
        ])?;
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for row in &self.rows {
            let s = row.summary;
            writer.write_record([
                self.sweep.clone(),
                row.arm.clone(),
                Self::settings_label(&row.settings),
                row.metric.clone(),
                s.map_or(0, |s| s.n).to_string(),
                opt(s.map(|s| s.mean)),
                opt(s.and_then(|s| s.ci95).map(|c| c.0)),
                opt(s.and_then(|s| s.ci95).map(|c| c.1)),
                opt(s.and_then(|s| s.std)),
                opt(row.shift),
                opt(row.shift_ci95.map(|c| c.0)),
                opt(row.shift_ci95.map(|c| c.1)),
                opt(row.p_value),
                opt(row.q_value),
                opt(row.p_seeds),
                opt(row.detectable_shift),
                row.verdict
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
                row.failed.to_string(),
                row.pending.to_string(),
            ])?;
        }
        Ok(String::from_utf8(writer.into_inner()?)?)
    }

    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The row for an arm with no swept settings, if there is one.
    pub fn row(&self, arm: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.arm == arm)
    }
}
