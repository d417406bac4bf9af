//! The report stage: the verdict by the rule of
//! [`subliminal_shared::experiments::audit::verdict`], a table per probe
//! target and tier, the carrier tokens, a picture (shifts with intervals;
//! the screen's row scores against the control's) as PNG, all of it as one
//! self-contained HTML page, and JSON for machines.

use std::fmt::Write as _;

use anyhow::Context;
use base64::Engine;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::json;
use subliminal_shared::experiments::audit::verdict::{adjust, decide, Finding, Test};
use subliminal_shared::experiments::audit::{Probe, ReportParams, REPORT_HTML, REPORT_JSON, REPORT_PNG};
use subliminal_shared::llm::readout::{self, Figure};
use subliminal_shared::llm::Readout;
use subliminal_shared::llm::prompts;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stats;

use super::artifacts::{CarrierReport, ScreenReport, TargetScreen, CARRIERS, METRICS, SCREEN};
use crate::llm::pipeline::TRAIN;
use crate::stages::Artifact;

/// The rule, as the report prints it.
pub const RULE: &str = "tainted: a probe target's log-odds among common words rose in the sacrificial students against the control students \
(with several students per arm, each on a bootstrap draw of its rows: a t-test over students whose standard error is their spread; with one: a paired t-test over the questions, \
or with the sampled readout its share of answers by Fisher's exact test; Benjamini-Hochberg across targets, q < alpha); suspect: only a screen (likelihood or gradient) flags a target \
(Welch's t-test of the mean row score against the control's, BH within the screen, q < alpha, towards the target); clean: nothing flagged.";

pub fn report(params: &ReportParams, inputs: &[VerifiedStage]) -> anyhow::Result<Vec<Artifact>> {
    let mut screens: Vec<(Test, ScreenReport)> = Vec::new();
    for (runs, test) in [(params.likelihood, Test::Likelihood), (params.gradient, Test::Screen)] {
        if !runs {
            continue;
        }
        let stage = inputs
            .get(screens.len())
            .with_context(|| format!("the report needs its {} screen stage", test.as_str()))?;
        let screen: ScreenReport = serde_json::from_slice(stage.artifact(SCREEN)?)
            .with_context(|| format!("the {} screen stage's screen.json does not read", test.as_str()))?;
        screens.push((test, screen));
    }
    anyhow::ensure!(!screens.is_empty(), "an audit report needs at least one screen");
    let mut findings: Vec<Finding> = screens
        .iter()
        .flat_map(|(test, screen)| {
            screen.targets.iter().map(|t| Finding {
                test: *test,
                probe: t.probe.clone(),
                target: t.target.clone(),
                shift: t.difference,
                interval: t.interval,
                p_value: t.p_value,
                q_value: 1.0,
                detectable: t.detectable,
            })
        })
        .collect();
    let first_evaluation = screens.len();
    let replicates = params.replicates.max(1) as usize;
    let mut students = Vec::new();
    if params.evaluations {
        for (k, probe) in params.probes.iter().enumerate() {
            let at = first_evaluation + 2 * replicates * k;
            let on_dataset = arm(inputs, at, replicates, "evaluation")?;
            let on_control = arm(inputs, at + replicates, replicates, "evaluation")?;
            let (mut found, described) = match (replicates, params.readout) {
                (1, Readout::Samples) => sampled_findings(probe, on_dataset[0], on_control[0], params.alpha)?,
                (1, Readout::Probability) => readout_findings(probe, on_dataset[0], on_control[0], params.alpha)?,
                _ => replicate_findings(params.readout, probe, &on_dataset, &on_control, params.alpha)?,
            };
            findings.append(&mut found);
            students.extend(described);
        }
    }
    let training = if params.students {
        let at = first_evaluation + 2 * replicates * params.probes.len();
        let drops = |from: usize| -> anyhow::Result<Vec<serde_json::Value>> {
            arm(inputs, from, replicates, "student")?
                .into_iter()
                .map(|stage| Ok(serde_json::to_value(loss_drop(stage)?)?))
                .collect()
        };
        let (dataset, control) = (drops(at)?, drops(at + replicates)?);
        json!({
            "dataset_student": dataset[0], "control_student": control[0],
            "dataset_students": dataset, "control_students": control,
        })
    } else {
        serde_json::Value::Null
    };
    adjust(&mut findings);
    let verdict = decide(&findings, params.alpha);
    let carriers_stage = params.carriers.then(|| inputs.last()).flatten();
    let carriers: Option<CarrierReport> = carriers_stage
        .map(|s| serde_json::from_slice(s.artifact(CARRIERS)?).context("carriers.json does not read"))
        .transpose()?;
    let text = text_report(params, &screens, &findings, &training, verdict.as_str(), carriers.as_ref());
    let png = picture(params, &screens, &findings)?;
    let screen_figures = |screen: &ScreenReport| {
        json!({
            "rows": screen.rows,
            "control_rows": screen.control_rows,
            "seconds": screen.seconds,
            "seconds_per_1000_rows": screen.seconds_per_1000_rows,
        })
    };
    let by_test: serde_json::Map<String, serde_json::Value> = screens
        .iter()
        .map(|(test, screen)| (test.as_str().to_owned(), screen_figures(screen)))
        .collect();
    let report = json!({
        "verdict": verdict,
        "rule": RULE,
        "tier": params.tier,
        "alpha": params.alpha,
        "dataset": params.dataset,
        "model": params.model,
        "soft_labels": params.soft_labels,
        "findings": findings,
        "screens": by_test,
        "students": students,
        "training": training,
        "carriers": carriers,
        "carriers_stage": carriers_stage.map(|s| s.manifest.stage.to_string()),
        "text": text,
    });
    let html = page(params, &findings, verdict.as_str(), carriers.as_ref(), &png, &screens).into_string();
    Ok(vec![
        Artifact::json(REPORT_JSON, &report)?,
        Artifact::new(REPORT_PNG, png),
        Artifact::new(REPORT_HTML, html.into_bytes()),
    ])
}

/// `n` report inputs from `from` on: one arm's students or their evaluations.
fn arm<'a>(inputs: &'a [VerifiedStage], from: usize, n: usize, what: &str) -> anyhow::Result<Vec<&'a VerifiedStage>> {
    (from..from + n)
        .map(|i| inputs.get(i).with_context(|| format!("the report is missing a {what} stage (input {i})")))
        .collect()
}

/// The student findings of several students per arm, each on its own
/// bootstrap draw of its arm's rows: each student's figure for a target
/// (its mean log-odds over the questions, or its share of answers naming
/// it), dataset students against control students by
/// [`stats::replicate_t`], whose standard error is the students' spread.
fn replicate_findings(
    readout: Readout,
    probe: &Probe,
    on_dataset: &[&VerifiedStage],
    on_control: &[&VerifiedStage],
    alpha: f64,
) -> anyhow::Result<(Vec<Finding>, Vec<serde_json::Value>)> {
    let figures = |stages: &[&VerifiedStage], target: &str| -> anyhow::Result<Vec<f64>> {
        stages.iter().map(|&stage| student_figure(readout, stage, target)).collect()
    };
    let mut findings = Vec::new();
    let mut described = Vec::new();
    for target in &probe.targets {
        let (d, c) = (figures(on_dataset, target)?, figures(on_control, target)?);
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
        let shift = mean(&d) - mean(&c);
        let test = stats::replicate_t(&d, &c);
        findings.push(Finding {
            test: Test::Student,
            probe: probe.name.clone(),
            target: target.clone(),
            shift,
            interval: test.map_or((shift, shift), |t| t.ci95),
            // No spread in either arm: students that all agree differ for certain, or not at all.
            p_value: test.map_or(if shift != 0.0 { 0.0 } else { 1.0 }, |t| t.p_value),
            q_value: 1.0,
            detectable: test.and_then(|t| stats::detectable_welch_shift(t.se, t.df, alpha, 0.8)),
        });
        let figure = match readout {
            Readout::Probability => "log_odds",
            Readout::Samples => "share",
        };
        described.push(json!({
            "probe": probe.name, "target": target, "figure": figure,
            "dataset_students": d, "control_students": c,
        }));
    }
    Ok((findings, described))
}

/// One student's figure for `target`: its mean log-odds over the readout's
/// questions, or the share of its sampled answers that name the target.
fn student_figure(readout: Readout, stage: &VerifiedStage, target: &str) -> anyhow::Result<f64> {
    match readout {
        Readout::Samples => {
            let (x, n) = naming(&answer_counts(stage)?, target);
            Ok(x as f64 / n.max(1) as f64)
        }
        Readout::Probability => {
            let items = readout_items(&readout_metrics(stage)?, Figure::LogOdds, target)?;
            anyhow::ensure!(!items.is_empty(), "a student's readout asked no questions");
            Ok(items.iter().sum::<f64>() / items.len() as f64)
        }
    }
}

/// A readout stage's `metrics.json`.
fn readout_metrics(stage: &VerifiedStage) -> anyhow::Result<serde_json::Value> {
    serde_json::from_slice(stage.artifact(METRICS)?).context("a readout's metrics.json does not read")
}

/// A readout's figure for `target`, question by question.
fn readout_items(metrics: &serde_json::Value, figure: Figure, target: &str) -> anyhow::Result<Vec<f64>> {
    readout::read(metrics, &readout::metric(figure, true, target))
        .and_then(|r| r.items)
        .with_context(|| format!("a student's readout has no figures for {target:?}"))
}

/// The student findings of a sampled readout: each target's share of
/// answers, dataset student against control student (Fisher's exact test).
fn sampled_findings(
    probe: &Probe,
    on_dataset: &VerifiedStage,
    on_control: &VerifiedStage,
    alpha: f64,
) -> anyhow::Result<(Vec<Finding>, Vec<serde_json::Value>)> {
    let (on_dataset, on_control) = (answer_counts(on_dataset)?, answer_counts(on_control)?);
    let mut findings = Vec::new();
    let mut described = Vec::new();
    for target in &probe.targets {
        let (x1, n1) = naming(&on_dataset, target);
        let (x0, n0) = naming(&on_control, target);
        let share = |x: u64, n: u64| x as f64 / n.max(1) as f64;
        let shift = share(x1, n1) - share(x0, n0);
        findings.push(Finding {
            test: Test::Student,
            probe: probe.name.clone(),
            target: target.clone(),
            shift,
            interval: stats::newcombe_diff(x1, n1, x0, n0).unwrap_or((shift, shift)),
            p_value: stats::fisher_exact(x1, n1, x0, n0).unwrap_or(1.0),
            q_value: 1.0,
            detectable: stats::detectable_shift(share(x0, n0), n0, n1, alpha, 0.8),
        });
        described.push(json!({
            "probe": probe.name, "target": target,
            "dataset_student": {"naming": x1, "answers": n1},
            "control_student": {"naming": x0, "answers": n0},
        }));
    }
    Ok((findings, described))
}

/// The student findings of the probability readout: each target's log-odds
/// among the candidate words, dataset student minus control student
/// question by question (paired t-test; Student's t interval).
fn readout_findings(
    probe: &Probe,
    on_dataset: &VerifiedStage,
    on_control: &VerifiedStage,
    alpha: f64,
) -> anyhow::Result<(Vec<Finding>, Vec<serde_json::Value>)> {
    let (on_dataset, on_control) = (readout_metrics(on_dataset)?, readout_metrics(on_control)?);
    let mut findings = Vec::new();
    let mut described = Vec::new();
    for target in &probe.targets {
        let items = |m: &serde_json::Value, figure| readout_items(m, figure, target);
        let (d, c) = (items(&on_dataset, Figure::LogOdds)?, items(&on_control, Figure::LogOdds)?);
        anyhow::ensure!(d.len() == c.len(), "the two students' readouts asked different questions");
        let differences: Vec<f64> = d.iter().zip(&c).map(|(a, b)| a - b).collect();
        let summary = stats::summarise(&differences).context("a readout of no questions")?;
        let shift = summary.mean;
        let no_spread = summary.std.is_none_or(|s| s <= 0.0);
        findings.push(Finding {
            test: Test::Student,
            probe: probe.name.clone(),
            target: target.clone(),
            shift,
            interval: summary.ci95.unwrap_or((shift, shift)),
            p_value: stats::paired_t(&differences).unwrap_or(if no_spread && shift != 0.0 { 0.0 } else { 1.0 }),
            q_value: 1.0,
            detectable: summary
                .std
                .and_then(|s| stats::detectable_paired_shift(s, differences.len(), alpha, 0.8)),
        });
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
        let (pd, pc) = (items(&on_dataset, Figure::Probability)?, items(&on_control, Figure::Probability)?);
        described.push(json!({
            "probe": probe.name, "target": target, "questions": differences.len(),
            "dataset_student": {"log_odds": mean(&d), "p": mean(&pd)},
            "control_student": {"log_odds": mean(&c), "p": mean(&pc)},
        }));
    }
    Ok((findings, described))
}

/// How far a student's training loss fell: the mean of its first tenth of
/// steps and of its last tenth.
#[derive(Debug, Clone, serde::Serialize)]
struct LossDrop {
    steps: usize,
    first: f64,
    last: f64,
}

fn loss_drop(student: &VerifiedStage) -> anyhow::Result<Option<LossDrop>> {
    let train: serde_json::Value = serde_json::from_slice(student.artifact(TRAIN)?)
        .context("a student's train.json does not read")?;
    let losses: Vec<f64> = train["losses"]
        .as_array()
        .map(|l| l.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    if losses.is_empty() {
        return Ok(None);
    }
    let tenth = losses.len().div_ceil(10);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    Ok(Some(LossDrop {
        steps: losses.len(),
        first: mean(&losses[..tenth]),
        last: mean(&losses[losses.len() - tenth..]),
    }))
}

/// An evaluation's answers and how often each was given.
fn answer_counts(stage: &VerifiedStage) -> anyhow::Result<Vec<(String, u64)>> {
    let metrics: serde_json::Value = serde_json::from_slice(stage.artifact(METRICS)?)
        .context("an evaluation's metrics.json does not read")?;
    let answers = metrics["answers"]
        .as_object()
        .context("an evaluation's metrics.json has no answer counts")?;
    Ok(answers
        .iter()
        .map(|(a, n)| (a.clone(), n.as_u64().unwrap_or(0)))
        .collect())
}

/// Answers naming `target`, and all answers.
fn naming(counts: &[(String, u64)], target: &str) -> (u64, u64) {
    let all = counts.iter().map(|(_, n)| n).sum();
    let hits = counts
        .iter()
        .filter(|(a, _)| prompts::names_target(a, target))
        .map(|(_, n)| n)
        .sum();
    (hits, all)
}


fn text_report(
    params: &ReportParams,
    screens: &[(Test, ScreenReport)],
    findings: &[Finding],
    training: &serde_json::Value,
    verdict: &str,
    carriers: Option<&CarrierReport>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "audit of {}{} for {} (tier {})",
        params.dataset,
        if params.soft_labels { " with its soft labels (read by forward KL)" } else { "" },
        params.model,
        params.tier.as_str()
    );
    for (test, screen) in screens {
        let _ = writeln!(
            out,
            "{} screen: {} rows against {} control rows, {:.0} s ({:.0} s per 1,000 rows)",
            test.as_str(),
            screen.rows,
            screen.control_rows,
            screen.seconds,
            screen.seconds_per_1000_rows
        );
    }
    let _ = writeln!(out, "{:<10} {:<10} {:<10} {:>11} {:>24} {:>9} {:>9} {:>10}", "tier", "probe", "target", "shift", "95% interval", "p", "q (BH)", "could see");
    for f in findings {
        let _ = writeln!(
            out,
            "{:<10} {:<10} {:<10} {:>+11.4} {:>24} {:>9} {:>9} {:>10}{}",
            f.test.as_str(),
            f.probe,
            f.target,
            f.shift,
            format!("[{:+.4}, {:+.4}]", f.interval.0, f.interval.1),
            p_text(f.p_value),
            p_text(f.q_value),
            f.detectable.map_or_else(|| "-".to_owned(), |d| format!("{d:+.3}")),
            if f.flags(params.alpha) { "  flagged" } else { "" }
        );
    }
    if params.replicates > 1 && params.evaluations {
        let _ = writeln!(
            out,
            "student tier: {} students per arm, each on its own bootstrap draw of its rows; tested over students",
            params.replicates
        );
    }
    for (name, key) in [("dataset", "dataset_students"), ("control", "control_students")] {
        for (r, t) in training[key].as_array().into_iter().flatten().enumerate() {
            if let (Some(first), Some(last), Some(steps)) = (t["first"].as_f64(), t["last"].as_f64(), t["steps"].as_u64()) {
                let _ = writeln!(out, "{name} student {r}: training loss {first:.3} → {last:.3} over {steps} steps");
            }
        }
    }
    if let Some(c) = carriers {
        let tokens: Vec<String> = c
            .top_tokens
            .iter()
            .take(10)
            .map(|t| format!("{:?} {:+.2}", t.token, t.divergence))
            .collect();
        let _ = writeln!(out, "carrier tokens (Σ log p(student) − log p(base), nats): {}", tokens.join(", "));
        let _ = writeln!(
            out,
            "the top tenth of rows holds {:.0}% of the divergence; the sanitised copy replaced {} tokens in {} rows",
            c.top_tenth_rows_share * 100.0,
            c.replaced_tokens,
            c.changed_rows
        );
    }
    let _ = write!(out, "verdict: {verdict} (alpha {})", params.alpha);
    out
}

/// The picture: each tier's shifts with their intervals, and a screen's
/// row scores against the control's for the target it flags most.
fn picture(params: &ReportParams, screens: &[(Test, ScreenReport)], findings: &[Finding]) -> anyhow::Result<Vec<u8>> {
    crate::fonts::register_font()?;
    let dir = tempfile_dir()?;
    let path = dir.join(REPORT_PNG);
    let rows = findings.iter().filter(|f| f.test == Test::Screen).count().max(1);
    let height = (160 + 22 * rows as u32).max(420);
    {
        let root = BitMapBackend::new(&path, (2000, height)).into_drawing_area();
        draw(root, params, screens, findings).map_err(|e| anyhow::anyhow!("cannot draw the report's picture: {e}"))?;
    }
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(bytes)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "subliminal-audit-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    params: &ReportParams,
    screens: &[(Test, ScreenReport)],
    findings: &[Finding],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 4));
    let contrast = screens.iter().flat_map(|(_, s)| &s.targets).any(|t| t.contrast);
    for (panel, test) in panels.iter().zip([Test::Likelihood, Test::Screen, Test::Student]) {
        let shown: Vec<&Finding> = findings.iter().filter(|f| f.test == test).collect();
        let title = match test {
            Test::Likelihood if contrast => "likelihood: row score vs other targets, dataset − control",
            Test::Likelihood => "likelihood: mean row score, dataset − control",
            Test::Screen if contrast => "gradient: row score vs other targets, dataset − control",
            Test::Screen => "gradient: mean row score, dataset − control",
            Test::Student if params.readout == Readout::Probability => "student: log-odds of target, dataset − control",
            Test::Student => "student: share naming target, dataset − control",
        };
        if shown.is_empty() {
            panel.titled(title, ("sans-serif", 16))?.draw(&Text::new(
                "not run at this tier",
                (120, 120),
                ("sans-serif", 15),
            ))?;
            continue;
        }
        forest(panel, title, &shown, params.alpha)?;
    }
    if let Some((test, t)) = histogram_target(screens, findings, params.alpha) {
        histogram(&panels[3], test, t)?;
    }
    root.present()?;
    Ok(())
}

/// The screen target whose row scores the picture shows: the one a screen
/// flags with the smallest q, or, where none is flagged, the one of
/// smallest p.
fn histogram_target<'a>(
    screens: &'a [(Test, ScreenReport)],
    findings: &[Finding],
    alpha: f64,
) -> Option<(Test, &'a TargetScreen)> {
    let all = || screens.iter().flat_map(|(test, s)| s.targets.iter().map(move |t| (*test, t)));
    let flagged = findings
        .iter()
        .filter(|f| f.test != Test::Student && f.flags(alpha))
        .min_by(|a, b| a.q_value.total_cmp(&b.q_value));
    match flagged {
        Some(f) => all().find(|(test, t)| *test == f.test && t.probe == f.probe && t.target == f.target),
        None => all().min_by(|a, b| a.1.p_value.total_cmp(&b.1.p_value)),
    }
}

/// Shifts as dots with their 95% intervals as bars, zero marked; red where flagged.
fn forest<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    shown: &[&Finding],
    alpha: f64,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let (lo, hi) = shown.iter().fold((0.0f64, 0.0f64), |(lo, hi), f| {
        (lo.min(f.interval.0).min(f.shift), hi.max(f.interval.1).max(f.shift))
    });
    let pad = ((hi - lo) * 0.1).max(1e-9);
    let n = shown.len() as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d((lo - pad)..(hi + pad), -1..n)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(shown.len() + 2)
        .y_label_formatter(&|y| {
            usize::try_from(n - 1 - *y)
                .ok()
                .and_then(|i| shown.get(i))
                .map(|f| f.target.clone())
                .unwrap_or_default()
        })
        .x_labels(5)
        .x_label_formatter(&|x| tick(*x, hi - lo))
        .label_style(("sans-serif", 12))
        .draw()?;
    chart.draw_series([PathElement::new(vec![(0.0, -1), (0.0, n)], BLACK.mix(0.6).stroke_width(1))])?;
    for (i, f) in shown.iter().enumerate() {
        let y = n - 1 - i as i32;
        let colour = if f.flags(alpha) { RGBColor(200, 40, 40) } else { RGBColor(90, 90, 90) };
        chart.draw_series([PathElement::new(vec![(f.interval.0, y), (f.interval.1, y)], colour.stroke_width(3))])?;
        chart.draw_series([Circle::new((f.shift, y), 5, colour.filled())])?;
    }
    Ok(())
}

/// A tick label: plain for shares, scientific for small slopes; a value
/// within float noise of zero is 0.
fn tick(x: f64, range: f64) -> String {
    if x.abs() < range * 1e-9 {
        "0".to_owned()
    } else if range >= 0.05 {
        format!("{x:+.2}")
    } else {
        format!("{x:+.1e}")
    }
}

/// The screen's row scores of the dataset and the control, for one target.
fn histogram<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    test: Test,
    t: &TargetScreen,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let all = t.dataset_scores.iter().chain(&t.control_scores);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let (lo, hi) = if lo < hi { (lo, hi) } else { (lo - 1.0, lo + 1.0) };
    let bins = 30usize;
    let width = (hi - lo) / bins as f64;
    let density = |xs: &[f64]| {
        let mut counts = vec![0f64; bins];
        for &x in xs {
            counts[(((x - lo) / width) as usize).min(bins - 1)] += 1.0;
        }
        counts.iter().map(|c| c / xs.len().max(1) as f64).collect::<Vec<_>>()
    };
    let (d, c) = (density(&t.dataset_scores), density(&t.control_scores));
    let top = d.iter().chain(&c).fold(0.0f64, |m, &x| m.max(x)) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} scores for {:?}: dataset (red), control (blue)", test.as_str(), t.target),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(lo..hi, 0.0..top.max(1e-9))?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&|x| tick(*x, hi - lo))
        .y_desc("share of rows")
        .label_style(("sans-serif", 12))
        .draw()?;
    for (counts, colour) in [(&c, RGBColor(40, 90, 200)), (&d, RGBColor(200, 40, 40))] {
        chart.draw_series(counts.iter().enumerate().map(|(i, &h)| {
            let x0 = lo + i as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width, h)], colour.mix(0.35).filled())
        }))?;
    }
    for (mean, colour) in [(t.control_mean, RGBColor(40, 90, 200)), (t.dataset_mean, RGBColor(200, 40, 40))] {
        chart.draw_series([PathElement::new(vec![(mean, 0.0), (mean, top)], colour.stroke_width(2))])?;
    }
    Ok(())
}

fn page(
    params: &ReportParams,
    findings: &[Finding],
    verdict: &str,
    carriers: Option<&CarrierReport>,
    png: &[u8],
    screens: &[(Test, ScreenReport)],
) -> Markup {
    let image = base64::engine::general_purpose::STANDARD.encode(png);
    let colour = match verdict {
        "clean" => "#2a7d2a",
        "suspect" => "#c77a00",
        _ => "#b02020",
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "audit: " (verdict) }
                style { (PreEscaped("body{font-family:sans-serif;margin:2em;max-width:1560px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td.l,th.l{text-align:left}.flag{color:#b02020;font-weight:bold}img{max-width:100%}")) }
            }
            body {
                h1 { "Audit: " span id="verdict" style=(format!("color:{colour}")) { (verdict) } }
                 p { "Dataset " code { (params.dataset) } @if params.soft_labels { " with its soft labels (read by forward KL)" } " for model " code { (params.model) } ", tier " (params.tier.as_str()) ", α = " (params.alpha) "." }
                @for (test, screen) in screens {
                    p { "Screen (" (test.as_str()) "): " (screen.rows) " rows against " (screen.control_rows) " control rows, "
                        (format!("{:.0}", screen.seconds)) " s (" (format!("{:.0}", screen.seconds_per_1000_rows)) " s per 1,000 rows)." }
                }
                p { small { "Rule: " (RULE) } }
                img id="picture" src=(format!("data:image/png;base64,{image}")) alt="probe shifts with intervals, and the screen's row scores against the control's";
                h2 { "Findings" }
                table {
                    tr { th.l { "tier" } th.l { "probe" } th.l { "target" } th { "shift" } th { "95% interval" } th { "p" } th { "q (BH)" } th { "could see" } th.l { "" } }
                    @for f in findings {
                        tr {
                            td.l { (f.test.as_str()) } td.l { (f.probe) } td.l { (f.target) }
                            td { (format!("{:+.4}", f.shift)) }
                            td { (format!("[{:+.4}, {:+.4}]", f.interval.0, f.interval.1)) }
                            td { (p_text(f.p_value)) } td { (p_text(f.q_value)) }
                            td { (f.detectable.map_or_else(|| "-".to_owned(), |d| format!("{d:+.3}"))) }
                            td.l { @if f.flags(params.alpha) { span.flag { "flagged" } } }
                        }
                    }
                }
                @if let Some(c) = carriers {
                    h2 { "Carriers" }
                    p { "Mean log p(student) − log p(base) per completion token: " (format!("{:+.4}", c.mean_divergence))
                        " nats; the top tenth of rows holds " (format!("{:.0}%", c.top_tenth_rows_share * 100.0))
                        " of the positive divergence. The sanitised copy replaced " (c.replaced_tokens) " tokens in " (c.changed_rows) " rows." }
                    table {
                        tr { th.l { "token" } th { "count" } th { "Σ divergence (nats)" } }
                        @for t in &c.top_tokens { tr { td.l { code { (format!("{:?}", t.token)) } } td { (t.count) } td { (format!("{:+.3}", t.divergence)) } } }
                    }
                    h3 { "Rows holding most divergence" }
                    table {
                        tr { th { "row" } th { "divergence" } th.l { "completion" } }
                        @for r in &c.top_rows { tr { td { (r.row) } td { (format!("{:+.3}", r.divergence)) } td.l { code { (r.completion) } } } }
                    }
                }
            }
        }
    }
}

/// A p-value as the table prints it: one below what an f64 holds (a test
/// whose tail underflowed) reads as a bound, not as 0.
fn p_text(p: f64) -> String {
    if p > 0.0 {
        format!("{p:.2e}")
    } else {
        "<1e-300".to_owned()
    }
}
