//! Results: a sweep's measurements, read from the store, as one row per arm
//! (and swept setting) with the mean over seeds, its 95% confidence
//! interval, the test against its control and a verdict; as a table for
//! people and as CSV or JSON for other tools. [`tracking`] logs the same
//! rows to an MLflow server.

mod curves;
mod render;
pub mod tracking;

pub use curves::{curves, Curve, CurvePoint, Curves};
pub use render::{p_text, value_text, verdict_text};

use std::collections::{BTreeMap, HashMap, HashSet};

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
    /// The architecture of each model the sweep names, where the machine
    /// that built the table could read it (empty when no arm names models).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub families: BTreeMap<String, String>,
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
        families: BTreeMap::new(),
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
