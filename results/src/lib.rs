//! Results: a sweep's measurements, read from the store, as one row per arm
//! (and swept setting) with the mean over seeds, its 95% confidence
//! interval, the test against its control and a verdict; as a table for
//! people and as CSV or JSON for other tools. [`tracking`] logs the same
//! rows to an MLflow server.

pub mod tracking;

use std::collections::{BTreeMap, HashMap, HashSet};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use serde::Serialize;

use subliminal_shared::experiments::{self, Reading};
use subliminal_shared::manifest::{inspect, Failure, StageState};
use subliminal_shared::plan::{Measurement, Plan};
use subliminal_shared::stage::StageId;
use subliminal_shared::stats::{self, summarise, Summary};
use subliminal_shared::store::{keys, Store};

/// What became of one measurement's evaluate stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The figure, and for a share the number of samples it is a share of.
    Done {
        value: f64,
        samples: Option<u64>,
        /// Each item's figure, for a mean over fixed items (questions).
        items: Option<Vec<f64>>,
    },
    /// It, or a stage it needs, failed: the first error found.
    Failed(String),
    Pending,
}

/// Each measurement's outcome, by its stage and metric (one stage may hold
/// several figures).
pub type Outcomes = HashMap<(StageId, String), Outcome>;

/// The outcome of measurement `m`; pending when not collected.
pub fn outcome<'a>(outcomes: &'a Outcomes, m: &Measurement) -> &'a Outcome {
    outcomes
        .get(&(m.stage, m.metric.clone()))
        .unwrap_or(&Outcome::Pending)
}

/// Reads the outcome of every measurement of a plan from the store.
pub async fn collect(store: &Store, plan: &Plan) -> anyhow::Result<Outcomes> {
    let experiment = experiments::get(&plan.experiment)?;
    let index = plan.index();
    let mut outcomes = HashMap::new();
    for m in &plan.measurements {
        let key = (m.stage, m.metric.clone());
        if outcomes.contains_key(&key) {
            continue;
        }
        let outcome = match inspect(store, m.stage).await? {
            StageState::Done(done) => {
                let metrics: serde_json::Value =
                    serde_json::from_slice(done.artifact("metrics.json")?)?;
                match experiment.read_metric(&metrics, &m.metric) {
                    Some(Reading {
                        value,
                        samples,
                        items,
                    }) => Outcome::Done {
                        value,
                        samples,
                        items,
                    },
                    None => Outcome::Failed(format!(
                        "metrics.json of stage {} has no number {:?}",
                        m.stage.short(),
                        m.metric
                    )),
                }
            }
            StageState::Missing | StageState::Corrupt(_) => {
                match first_failure(store, &index, m.stage).await? {
                    Some(error) => Outcome::Failed(error),
                    None => Outcome::Pending,
                }
            }
        };
        outcomes.insert(key, outcome);
    }
    Ok(outcomes)
}

/// The recorded failure of `id` or of the nearest unfinished stage it needs.
async fn first_failure(
    store: &Store,
    index: &HashMap<StageId, &subliminal_shared::stage::StageSpec>,
    id: StageId,
) -> anyhow::Result<Option<String>> {
    let mut queue = vec![id];
    let mut seen = HashSet::new();
    while let Some(id) = queue.pop() {
        if !seen.insert(id) {
            continue;
        }
        if store.get_opt(&keys::manifest(id)).await?.is_some() {
            continue;
        }
        if let Some(bytes) = store.get_opt(&keys::failure(id)).await? {
            if let Ok(f) = serde_json::from_slice::<Failure>(&bytes) {
                return Ok(Some(format!("{} {}: {}", f.kind, id.short(), f.error)));
            }
        }
        if let Some(stage) = index.get(&id) {
            queue.extend(stage.inputs.iter().copied());
        }
    }
    Ok(None)
}

/// One row of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub arm: String,
    pub settings: BTreeMap<String, String>,
    pub metric: String,
    pub summary: Option<Summary>,
    pub failed: usize,
    pub pending: usize,
    /// The first error among this row's failed measurements.
    pub error: Option<String>,
    pub values: Vec<Value>,
    /// For a share: how many answers each measurement counted.
    pub samples: Option<u64>,
    /// The mean minus the mean of the control arm with the same settings.
    pub shift: Option<f64>,
    /// 95% interval of the shift for shares, over every answer pooled
    /// across seeds (Newcombe's hybrid score interval).
    pub shift_ci95: Option<(f64, f64)>,
    /// Against the control arm with the same settings, for shares: Fisher's
    /// exact test (two-sided) over every answer, pooled over seeds.
    pub p_value: Option<f64>,
    /// `p_value` adjusted (Benjamini–Hochberg) across every tested row of
    /// the table, traits and settings alike.
    pub q_value: Option<f64>,
    /// A paired t-test over seeds (arm minus control, seed by seed), where
    /// two or more seeds have both.
    pub p_seeds: Option<f64>,
    /// The smallest rise above control that the answer-level test would
    /// detect (two-sided α = 0.05, power 0.8) with these sample sizes.
    pub detectable_shift: Option<f64>,
    pub verdict: Option<Verdict>,
    #[serde(skip)]
    order: u32,
    /// A student arm (one drawn in the transfer grid): a rise above control
    /// is transfer; for any other arm it is only a rise.
    #[serde(skip)]
    student: bool,
}

/// What the test against control says of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A student arm significantly above control after correction (q < 0.05).
    Transfers,
    /// Any other arm (a teacher, a model shown the data in context)
    /// significantly above control.
    Above,
    /// Significantly below control after correction.
    Below,
    /// Not significant; `detectable_shift` says what the run could have seen.
    NoEvidence,
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Transfers => "transfers",
            Verdict::Above => "above control",
            Verdict::Below => "below control",
            Verdict::NoEvidence => "no evidence",
        }
    }
}

/// The false discovery rate at which a row's difference counts.
pub const FDR: f64 = 0.05;
/// The level and power at which `detectable_shift` is computed.
pub const ALPHA: f64 = 0.05;
pub const POWER: f64 = 0.8;

/// One measured figure, for tools that want more than the mean.
#[derive(Debug, Clone, Serialize)]
pub struct Value {
    pub seed: u64,
    pub teacher_init: Option<u64>,
    pub student_init: Option<u64>,
    pub stage: StageId,
    pub value: f64,
    /// For a share: the answers it is a share of.
    pub samples: Option<u64>,
    /// For a mean over fixed items: each item's figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultsTable {
    pub sweep: String,
    pub experiment: String,
    pub rows: Vec<Row>,
}

/// One cell of a transfer grid: a teacher family (init seed or model), a
/// student family, the mean figure.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferCell {
    pub panel: String,
    pub teacher: String,
    pub student: String,
    pub mean: f64,
    pub n: usize,
}

pub fn build(plan: &Plan, outcomes: &Outcomes) -> ResultsTable {
    let mut rows: Vec<Row> = Vec::new();
    for m in &plan.measurements {
        let row = match rows
            .iter_mut()
            .position(|r| r.arm == m.arm && r.settings == m.settings)
        {
            Some(i) => &mut rows[i],
            None => {
                rows.push(Row {
                    arm: m.arm.clone(),
                    settings: m.settings.clone(),
                    metric: m.metric.clone(),
                    summary: None,
                    failed: 0,
                    pending: 0,
                    error: None,
                    values: Vec::new(),
                    samples: None,
                    shift: None,
                    shift_ci95: None,
                    p_value: None,
                    q_value: None,
                    p_seeds: None,
                    detectable_shift: None,
                    verdict: None,
                    order: m.order,
                    student: m.panel.is_some(),
                });
                rows.last_mut().expect("just pushed")
            }
        };
        match outcome(outcomes, m) {
            Outcome::Done {
                value,
                samples,
                items,
            } => {
                row.values
                    .push(value_of(m, *value, *samples, items.clone()));
                row.samples = *samples;
            }
            Outcome::Failed(e) => {
                row.failed += 1;
                row.error.get_or_insert_with(|| e.clone());
            }
            Outcome::Pending => row.pending += 1,
        }
    }
    for row in &mut rows {
        let values: Vec<f64> = row.values.iter().map(|v| v.value).collect();
        row.summary = summarise(&values);
        // One measured share: its own sampling interval stands in for the
        // between-seed one.
        if let (Some(s), Some(n), 1) = (row.summary.as_mut(), row.samples, values.len()) {
            s.ci95 = Some(subliminal_shared::stats::wilson(s.mean, n));
        }
        // A share's interval over seeds stays within what a share can be.
        if let (Some(s), Some(_)) = (row.summary.as_mut(), row.samples) {
            s.ci95 = s.ci95.map(|(lo, hi)| (lo.max(0.0), hi.min(1.0)));
        }
    }
    let kind = experiments::find(&plan.experiment);
    let control_of = |arm: &str| kind.and_then(|k| k.control_of(arm));
    // The figures as measured, before any row is compared.
    let measured = rows.clone();
    for row in &mut rows {
        let Some(control) = control_of(&row.arm) else {
            continue;
        };
        let Some((mean, values)) = control_row(&measured, control, &row.settings)
            .and_then(|c| Some((c.summary?.mean, &c.values)))
        else {
            continue;
        };
        row.shift = row.summary.map(|s| s.mean - mean);
        compare(row, values);
    }
    correct(&mut rows);
    rows.sort_by(|a, b| {
        a.order
            .cmp(&b.order)
            .then_with(|| compare_settings(&a.settings, &b.settings))
    });
    ResultsTable {
        sweep: plan.sweep.clone(),
        experiment: plan.experiment.clone(),
        rows,
    }
}

/// The control row of a row with `settings`: the one with the same
/// settings, else the one whose settings are the most of them. A control
/// shared by several rows (one control student for every dataset of an
/// audit) is measured once, labelled only by what it depends on.
fn control_row<'a>(
    measured: &'a [Row],
    control: &str,
    settings: &BTreeMap<String, String>,
) -> Option<&'a Row> {
    measured
        .iter()
        .filter(|c| c.arm == control)
        .filter(|c| c.settings.iter().all(|(k, v)| settings.get(k) == Some(v)))
        .max_by_key(|c| c.settings.len())
}

/// Settings in reading order: numbers by value (m = 2 before m = 10), the
/// rest by text.
fn compare_settings(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> std::cmp::Ordering {
    for ((ka, va), (kb, vb)) in a.iter().zip(b) {
        let by_value = match (va.parse::<f64>(), vb.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.total_cmp(&y),
            _ => va.cmp(vb),
        };
        let order = ka.cmp(kb).then(by_value);
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// The tests of one row against its control's figures.
fn compare(row: &mut Row, control: &[Value]) {
    let paired: Vec<f64> = row
        .values
        .iter()
        .filter_map(|v| {
            let c = control.iter().find(|c| c.seed == v.seed)?;
            Some(v.value - c.value)
        })
        .collect();
    row.p_seeds = stats::paired_t(&paired);
    if let Some(items) = paired_items(&row.values, control) {
        // Means over the same questions: each question against itself.
        if let Some(s) = summarise(&items) {
            row.p_value = stats::paired_t(&items);
            row.shift_ci95 = s.ci95;
            row.detectable_shift = s
                .std
                .and_then(|std| stats::detectable_paired_shift(std, s.n, ALPHA, POWER));
        }
        return;
    }
    let (Some((x1, n1)), Some((x0, n0))) = (counts(&row.values), counts(control)) else {
        // Figures that are not shares (an accuracy, say) are tested over
        // seeds: the paired t-test is the row's test.
        if let Some(s) = summarise(&paired) {
            row.p_value = row.p_seeds;
            row.shift_ci95 = s.ci95;
            row.detectable_shift = s
                .std
                .and_then(|std| stats::detectable_paired_shift(std, s.n, ALPHA, POWER));
        }
        return;
    };
    row.p_value = stats::fisher_exact(x1, n1, x0, n0);
    row.shift_ci95 = stats::newcombe_diff(x1, n1, x0, n0);
    row.detectable_shift = stats::detectable_shift(x0 as f64 / n0 as f64, n0, n1, ALPHA, POWER);
}

/// Item-by-item differences from the control's figure of the same seed and
/// item, over every seed both have; None unless every figure has items.
fn paired_items(values: &[Value], control: &[Value]) -> Option<Vec<f64>> {
    let mut out = Vec::new();
    for v in values {
        let items = v.items.as_ref()?;
        let Some(c) = control.iter().find(|c| c.seed == v.seed) else {
            continue;
        };
        let base = c.items.as_ref()?;
        if base.len() != items.len() {
            return None;
        }
        out.extend(items.iter().zip(base).map(|(a, b)| a - b));
    }
    (!out.is_empty()).then_some(out)
}

/// Answers naming the target, and answers in all, over every measured seed;
/// None unless every figure is a share with its sample count.
fn counts(values: &[Value]) -> Option<(u64, u64)> {
    if values.is_empty() {
        return None;
    }
    values.iter().try_fold((0, 0), |(x, n), v| {
        let samples = v.samples?;
        Some((x + (v.value * samples as f64).round() as u64, n + samples))
    })
}

/// Benjamini–Hochberg over every tested row, and each row's verdict.
fn correct(rows: &mut [Row]) {
    let tested: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].p_value.is_some())
        .collect();
    let p: Vec<f64> = tested.iter().filter_map(|&i| rows[i].p_value).collect();
    for (&i, q) in tested.iter().zip(stats::benjamini_hochberg(&p)) {
        let row = &mut rows[i];
        row.q_value = Some(q);
        row.verdict = Some(match row.shift {
            Some(d) if q < FDR && d > 0.0 && row.student => Verdict::Transfers,
            Some(d) if q < FDR && d > 0.0 => Verdict::Above,
            Some(d) if q < FDR && d < 0.0 => Verdict::Below,
            _ => Verdict::NoEvidence,
        });
    }
}

fn value_of(m: &Measurement, value: f64, samples: Option<u64>, items: Option<Vec<f64>>) -> Value {
    Value {
        samples,
        items,
        seed: m.seed,
        teacher_init: m.teacher_init,
        student_init: m.student_init,
        stage: m.stage,
        value,
    }
}

/// Mean figures per (panel, teacher init, student init), for the transfer-grid plot.
pub fn transfer_cells(plan: &Plan, outcomes: &Outcomes) -> Vec<TransferCell> {
    let mut sums: BTreeMap<(String, String, String), (f64, usize)> = BTreeMap::new();
    for m in &plan.measurements {
        let (t, s) = match (&m.models, m.teacher_init, m.student_init) {
            (Some((t, s)), _, _) => (t.clone(), s.clone()),
            (None, Some(t), Some(s)) => (t.to_string(), s.to_string()),
            _ => continue,
        };
        let Some(panel) = &m.panel else {
            continue;
        };
        if let Outcome::Done { value: v, .. } = outcome(outcomes, m) {
            let entry = sums.entry((panel.clone(), t, s)).or_default();
            entry.0 += v;
            entry.1 += 1;
        }
    }
    sums.into_iter()
        .map(|((panel, teacher, student), (sum, n))| TransferCell {
            panel,
            teacher,
            student,
            mean: sum / n as f64,
            n,
        })
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_never_print_a_nonzero_value_as_zero() {
        assert_eq!(value_text(0.0021, true), "+2.1e-3");
        assert_eq!(value_text(0.0021, false), "2.1e-3");
        assert_eq!(value_text(0.0, true), "+0.000");
        assert_eq!(value_text(-1.1562, true), "-1.156");
        assert_eq!(p_text(0.0), "<1e-15");
        assert_eq!(p_text(2.8e-11), "2.8e-11");
        assert_eq!(p_text(0.2), "0.200");
    }
}
