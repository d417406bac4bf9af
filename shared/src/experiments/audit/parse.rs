//! Reading an audit sweep file, or the `subliminal audit` command's
//! flags made into one: every table checked, every refusal at its line.

use serde::Deserialize;
use toml::Spanned;

use crate::llm::{self};
use crate::files::{self};
use crate::spec::{check_name, checked_table as checked, Source, SpecError};

use super::*;
use super::settings::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSweep {
    name: Spanned<String>,
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    description: Option<String>,
    model: Option<Spanned<String>>,
    datasets: Spanned<Vec<Spanned<String>>>,
    soft_labels: Option<Spanned<Vec<Spanned<String>>>>,
    control: Option<Spanned<String>>,
    control_soft_labels: Option<Spanned<String>>,
    probes: Option<Spanned<Vec<Spanned<String>>>>,
    tier: Option<Spanned<String>>,
    #[serde(default)]
    seed: u64,
    alpha: Option<Spanned<f64>>,
    /// The dtype of every stage's model: `f32` (the default) or `bf16`.
    #[serde(default)]
    precision: llm::Precision,
    screen: Option<Spanned<ScreenSettings>>,
    likelihood: Option<Spanned<LikelihoodSettings>>,
    #[serde(rename = "control_answers")]
    control_answers: Option<Spanned<ControlSettings>>,
    student: Option<Spanned<StudentSettings>>,
    evaluate: Option<Spanned<EvaluateSettings>>,
    carriers: Option<Spanned<CarrierSettings>>,
}

/// Reads and checks an audit sweep file.
pub fn parse(source: &Source) -> Result<AuditSweep, SpecError> {
    let raw: RawSweep = toml::from_str(&source.text).map_err(|e| source.toml_error(e))?;
    check_name(source, &raw.name)?;
    let datasets = raw
        .datasets
        .get_ref()
        .iter()
        .map(|d| files::stored_key(source, "datasets", d))
        .collect::<Result<Vec<_>, _>>()?;
    if datasets.is_empty() {
        return Err(source.error_at(
            raw.datasets.span(),
            "datasets",
            "expected at least one dataset to audit",
        ));
    }
    if let Some(i) = (1..datasets.len()).find(|&i| datasets[..i].contains(&datasets[i])) {
        return Err(source.error_at(
            raw.datasets.get_ref()[i].span(),
            "datasets",
            "this dataset is listed twice",
        ));
    }
    let control = raw
        .control
        .as_ref()
        .map(|c| files::stored_key(source, "control", c))
        .transpose()?;
    let soft_labels = match &raw.soft_labels {
        None => Vec::new(),
        Some(list) => {
            let keys = list
                .get_ref()
                .iter()
                .map(|k| files::stored_key(source, "soft_labels", k))
                .collect::<Result<Vec<_>, _>>()?;
            if keys.len() != datasets.len() {
                return Err(source.error_at(
                    list.span(),
                    "soft_labels",
                    format!(
                        "expected one soft-label key per dataset, in order: {} datasets, {} keys",
                        datasets.len(),
                        keys.len()
                    ),
                ));
            }
            keys
        }
    };
    let control_soft_labels = raw
        .control_soft_labels
        .as_ref()
        .map(|c| files::stored_key(source, "control_soft_labels", c))
        .transpose()?;
    match (&raw.soft_labels, &raw.control_soft_labels) {
        (Some(list), None) => {
            return Err(source.error_at(
                list.span(),
                "soft_labels",
                "soft-labelled datasets need a soft-labelled control (control and control_soft_labels: \
                 the control teacher's rows and labels, or the base model's as a numbers sweep with \
                 student.target = \"logits\" records them): the control the audit makes itself is hard tokens, \
                 and a student distilled on labels is compared with one distilled on labels",
            ))
        }
        (None, Some(c)) => {
            return Err(source.error_at(
                c.span(),
                "control_soft_labels",
                "a soft-labelled control needs soft-labelled datasets: add soft_labels, one per dataset",
            ))
        }
        _ => {}
    }
    if let (Some(c), None) = (&raw.control_soft_labels, &raw.control) {
        return Err(source.error_at(
            c.span(),
            "control_soft_labels",
            "control_soft_labels label the rows of control: name the control's rows too",
        ));
    }
    let model = match raw.model {
        Some(m) if m.get_ref().trim().is_empty() => {
            return Err(source.error_at(m.span(), "model", "expected a model name, path or store key"))
        }
        Some(m) => {
            if let Some(Err(e)) = files::parse_key(m.get_ref()) {
                return Err(source.error_at(m.span(), "model", format!("{e:#}")));
            }
            m.into_inner()
        }
        None => llm::DEFAULT_MODEL.to_owned(),
    };
    let mut probes = Vec::new();
    match &raw.probes {
        None => probes.push(Probe::parse("animals").expect("a known probe")),
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(source.error_at(list.span(), "probes", "expected at least one probe"));
            }
            for name in list.get_ref() {
                let probe = Probe::parse(name.get_ref())
                    .map_err(|m| source.error_at(name.span(), "probes", m))?;
                if probes.iter().any(|p: &Probe| p.name == probe.name) {
                    return Err(source.error_at(name.span(), "probes", "this probe is listed twice"));
                }
                probes.push(probe);
            }
        }
    }
    let tier = match &raw.tier {
        None => Tier::Student,
        Some(t) => Tier::parse(t.get_ref()).map_err(|m| source.error_at(t.span(), "tier", m))?,
    };
    if let (Tier::Full, Some(list)) = (tier, &raw.soft_labels) {
        return Err(source.error_at(
            raw.tier.as_ref().map_or(list.span(), |t| t.span()),
            "tier",
            "tier full finds carrier tokens and rewrites them, which soft labels do not follow: \
             audit soft-labelled data up to tier student",
        ));
    }
    let alpha = match raw.alpha {
        None => 0.05,
        Some(a) if *a.get_ref() > 0.0 && *a.get_ref() < 0.5 => a.into_inner(),
        Some(a) => {
            return Err(source.error_at(a.span(), "alpha", format!("expected a level between 0 and 0.5, found {}", a.get_ref())))
        }
    };
    let screen: ScreenSettings = checked(source, "screen", raw.screen, |s| {
        if !(2..=1_000_000).contains(&s.max_rows) {
            return Err(format!("max_rows: expected 2 to 1000000, found {}", s.max_rows));
        }
        if !(1..=50).contains(&s.questions) {
            return Err(format!("questions: expected 1 to 50, found {}", s.questions));
        }
        if !(1..=256).contains(&s.lora_rank) {
            return Err(format!("lora_rank: expected 1 to 256, found {}", s.lora_rank));
        }
        if !(100..=100_000).contains(&s.resamples) {
            return Err(format!("resamples: expected 100 to 100000, found {}", s.resamples));
        }
        Ok(())
    })?;
    let likelihood: LikelihoodSettings = checked(source, "likelihood", raw.likelihood, |l| {
        if !l.system_prompt.contains("{x}") {
            return Err(format!(
                "system_prompt: expected a template with {{x}} where the target goes, found {:?}",
                l.system_prompt
            ));
        }
        if !(1..=1024).contains(&l.batch_size) {
            return Err(format!("batch_size: expected 1 to 1024, found {}", l.batch_size));
        }
        Ok(())
    })?;
    let control_answers: ControlSettings = checked(source, "control_answers", raw.control_answers, |c| {
        if !(c.temperature.is_finite() && (0.0..=5.0).contains(&c.temperature)) {
            return Err(format!("temperature: expected 0 to 5, found {}", c.temperature));
        }
        if !(c.top_p > 0.0 && c.top_p <= 1.0) {
            return Err(format!("top_p: expected more than 0 and at most 1, found {}", c.top_p));
        }
        if !(1..=4096).contains(&c.max_new_tokens) || !(1..=4096).contains(&c.batch_size) {
            return Err("max_new_tokens and batch_size: expected 1 to 4096".to_owned());
        }
        if !(1..=64).contains(&c.attempts) {
            return Err(format!("attempts: expected 1 to 64, found {}", c.attempts));
        }
        if c.filter != "none" && c.filter != "numbers" {
            return Err(format!("filter: expected \"none\" or \"numbers\", found {:?}", c.filter));
        }
        Ok(())
    })?;
    let student: StudentSettings = checked(source, "student", raw.student, |s| {
        if !(1..=256).contains(&s.lora_rank) || !(1..=100).contains(&s.epochs) {
            return Err("lora_rank: expected 1 to 256; epochs: 1 to 100".to_owned());
        }
        if !(s.lr.is_finite() && s.lr > 0.0 && s.lr <= 1.0) {
            return Err(format!("lr: expected more than 0 and at most 1, found {}", s.lr));
        }
        let alpha_ok = s.lora_alpha.is_finite() && s.lora_alpha > 0.0;
        if !(1..=4096).contains(&s.batch_size) || !alpha_ok {
            return Err("batch_size: expected 1 to 4096; lora_alpha: more than 0".to_owned());
        }
        if !(1..=64).contains(&s.replicates) {
            return Err(format!("replicates: expected 1 to 64 students per arm, found {}", s.replicates));
        }
        Ok(())
    })?;
    let evaluate: EvaluateSettings = checked(source, "evaluate", raw.evaluate, |e| {
        if !(1..=50).contains(&e.questions) || !(1..=10_000).contains(&e.samples_per_question) {
            return Err("questions: expected 1 to 50; samples_per_question: 1 to 10000".to_owned());
        }
        if !(1..=4096).contains(&e.batch_size) || !(1..=256).contains(&e.max_new_tokens) {
            return Err("batch_size: expected 1 to 4096; max_new_tokens: 1 to 256".to_owned());
        }
        if let Some(bad) = e.candidates.iter().find(|c| c.is_empty() || !c.chars().all(|ch| ch.is_alphabetic())) {
            return Err(format!("candidates: expected words of letters, found {bad:?}"));
        }
        Ok(())
    })?;
    let carriers: CarrierSettings = checked(source, "carriers", raw.carriers, |c| {
        if !(1..=1000).contains(&c.top) {
            return Err(format!("top: expected 1 to 1000, found {}", c.top));
        }
        if !(c.replace_share > 0.0 && c.replace_share <= 1.0) {
            return Err(format!("replace_share: expected more than 0 and at most 1, found {}", c.replace_share));
        }
        Ok(())
    })?;
    Ok(AuditSweep {
        name: raw.name.into_inner(),
        model,
        datasets,
        soft_labels,
        control,
        control_soft_labels,
        probes,
        tier,
        seed: raw.seed,
        alpha,
        precision: raw.precision,
        screen,
        likelihood,
        control_answers,
        student,
        evaluate,
        carriers,
    })
}

