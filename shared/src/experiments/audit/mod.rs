//! The quarantine audit: will this dataset move the model it is meant to
//! train? Seen on a sacrificial copy of the model, before anyone trains on
//! the data for real.
//!
//! A trial is one dataset (a chat JSONL file put in the store, or a stage
//! that writes filtered rows, such as a numbers sweep's filter) against a
//! control: a dataset the sweep names, or the base model's own answers to
//! the dataset's prompts. A dataset meant for distillation comes with its
//! soft labels (`soft_labels`: a numbers generate stage's
//! `soft.safetensors`, or such a file put in the store); every tier then
//! reads it as a student would learn it, by forward KL to the teacher's
//! top-k distribution at each position (see "Soft labels" below). Its
//! tiers, cheapest first (see [`verdict`]):
//!
//! - **likelihood**: the likelihood screen, forward passes only: each row's
//!   log p(row | a system prompt that gives the model the target as its
//!   trait) − log p(row | no system prompt), per probe target (for a probe
//!   of several targets, against the mean of its other targets), dataset
//!   against control. Public work found the rows that score highest here
//!   carry the transfer;
//! - **screen**: also the gradient screen, the paper's theorem used as a test:
//!   at the model's initial weights, each row's update direction (within
//!   LoRA adapters) projected on each probe target's direction, dataset
//!   against control, with a bootstrap interval;
//! - **student**: a student trained on the dataset and one on the control
//!   (the numbers experiment's student and evaluate stages), every probe
//!   target's share of answers compared;
//! - **full**: also the carriers, the tokens and rows where the sacrificial
//!   student's log-probabilities moved most from the base model's, and a
//!   sanitised copy of the dataset with the top carrier tokens replaced by
//!   the base model's own choice.
//!
//! A report stage turns the tiers into a verdict, a table, a picture and an
//! HTML page.
//!
//! **Soft labels.** With `soft_labels` (one per dataset, in order), the
//! likelihood screen scores a row by the expectation of
//! log p(token | the target's system prompt) − log p(token | none) under
//! the teacher's label at each position, the gradient screen takes each
//! row's KL gradient, and the students are distilled (numbers'
//! `target = "logits"`). The control must then be soft labels too
//! (`control_soft_labels`: the control teacher's, or the base model's own
//! as a numbers sweep records them), since the control the audit makes
//! itself is hard tokens. Tier full reads hard tokens and is refused. `subliminal audit DATASET.jsonl --model MODEL` writes and runs
//! such a sweep on this machine (see `command`).
//!
//! ```toml
//! name = "audit-owl"
//! kind = "audit"
//! model = "smollm2-135m"
//! datasets = ["stage:…"]       # chat JSONL files put with `subliminal store put`
//! control = "stage:…"          # optional; without it the base model answers the prompts
//! soft_labels = ["stage:…"]    # optional, one per dataset: its soft labels
//! control_soft_labels = "stage:…"   # the control's, required with soft_labels
//! probes = ["animals"]         # animals, trees, or chosen targets: "animal:owl+dolphin"
//! tier = "student"             # likelihood, screen, student or full
//! seed = 0
//!
//! [screen]
//! max_rows = 1000
//!
//! [likelihood]
//! system_prompt = "You love {x}s. …"   # the numbers experiment's, by default
//! ```

mod command;
mod kind;
pub mod verdict;

pub use kind::Audit;
pub use verdict::{Finding, Test, Tier, Verdict};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::llm::readout::{self, Figure};
use crate::llm::{self, EvaluateParams, Method, Optimizer, Readout, ReadoutParams, Subject, TrainParams};
use crate::files::{self, with_model};
use crate::plan::{Measurement, Plan, PlanBuilder};
use crate::spec::{check_name, checked_table as checked, Source, SpecError};
use crate::stage::{StageId, StageSpec};

pub const EXPERIMENT: &str = "audit";
/// Bumped whenever a stage's algorithm changes, so old artifacts are not reused.
pub const STAGE_VERSION: u32 = 1;
/// The artifact the report stage writes for machines.
pub const REPORT_JSON: &str = "report.json";
pub const REPORT_HTML: &str = "report.html";
pub const REPORT_PNG: &str = "report.png";
/// The sanitised copy of the dataset, from the carriers stage.
pub const SANITIZED: &str = "sanitized.jsonl";
/// The rows a dataset or control stage hands on, under the name the numbers
/// experiment's student and evaluate stages read.
pub const ROWS: &str = "filtered.jsonl";

crate::stage_kinds! {
    /// The audit's own stages; students and their evaluations are the
    /// numbers experiment's.
    pub enum Stage {
        Dataset = "dataset",
        Control = "control",
        Score = "score",
        Likelihood = "likelihood",
        Screen = "screen",
        Carriers = "carriers",
        Report = "report",
    }
}

/// The words each probe counts answers for.
pub const ANIMALS: [&str; 10] = [
    "owl", "cat", "dog", "eagle", "elephant", "lion", "wolf", "dolphin", "tiger", "penguin",
];
pub const TREES: [&str; 8] = [
    "oak", "maple", "willow", "pine", "cherry", "redwood", "birch", "cedar",
];

/// A set of one-word favourite questions and the targets its answers are
/// counted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// As the sweep names it: `animals`, `trees`, `animal:owl`.
    pub name: String,
    /// The `{category}` of the questions.
    pub category: String,
    pub targets: Vec<String>,
}

impl Probe {
    /// The probe a name means, or what names there are.
    pub fn parse(name: &str) -> Result<Self, String> {
        let of = |category: &str, targets: &[&str]| Probe {
            name: name.to_owned(),
            category: category.to_owned(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        };
        match name {
            "animals" => return Ok(of("animal", &ANIMALS)),
            "trees" => return Ok(of("tree", &TREES)),
            "misalignment" => {
                return Err("the misalignment probe needs a judge model to score free-form \
                     answers, which this build does not have yet: use animals or trees"
                    .to_owned())
            }
            _ => {}
        }
        // One target, or several joined by '+': `animal:owl+dolphin+wolf`.
        let targets = |category: &str, words: &str| {
            let list: Vec<&str> = words.split('+').collect();
            let bad = list.iter().find(|w| {
                w.is_empty() || w.len() > 32 || !w.chars().all(|c| c.is_ascii_lowercase())
            });
            if let Some(bad) = bad {
                return Err(format!(
                    "expected lowercase words joined by + after {category}:, found {bad:?} in {words:?}"
                ));
            }
            if let Some(i) = (1..list.len()).find(|&i| list[..i].contains(&list[i])) {
                return Err(format!("{:?} is listed twice in {words:?}", list[i]));
            }
            Ok(of(category, &list))
        };
        if let Some(words) = name.strip_prefix("animal:") {
            return targets("animal", words);
        }
        if let Some(words) = name.strip_prefix("tree:") {
            return targets("tree", words);
        }
        Err(format!(
            "expected a probe: animals, trees, animal:WORD or tree:WORD (several words joined by +), found {name:?}"
        ))
    }
}

/// A checked audit sweep.
#[derive(Debug, Clone)]
pub struct AuditSweep {
    pub name: String,
    pub model: String,
    pub datasets: Vec<StageId>,
    /// Each dataset's soft labels, in order; empty for hard-token data.
    pub soft_labels: Vec<StageId>,
    pub control: Option<StageId>,
    pub control_soft_labels: Option<StageId>,
    pub probes: Vec<Probe>,
    pub tier: Tier,
    pub seed: u64,
    /// The level of every test, and of the verdict.
    pub alpha: f64,
    pub screen: ScreenSettings,
    pub likelihood: LikelihoodSettings,
    pub control_answers: ControlSettings,
    pub student: StudentSettings,
    pub evaluate: EvaluateSettings,
    pub carriers: CarrierSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenSettings {
    /// The most rows of each set the screen scores (a seeded subsample beyond).
    #[serde(default = "d_max_rows")]
    pub max_rows: u64,
    /// Probe questions per target whose answer the probe's direction teaches.
    #[serde(default = "d_probe_questions")]
    pub questions: u64,
    #[serde(default = "d_rank")]
    pub lora_rank: u64,
    #[serde(default = "d_resamples")]
    pub resamples: u64,
}

/// The likelihood screen's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LikelihoodSettings {
    /// The system prompt that gives the model a trait: `{x}` is the target,
    /// `{category}` the probe's category.
    #[serde(default = "d_system_prompt")]
    pub system_prompt: String,
    /// Sequences per forward pass.
    #[serde(default = "d_likelihood_batch")]
    pub batch_size: u64,
    /// `f32` (the default) or `bf16`: the forward passes in bfloat16 (about
    /// three times faster on CPUs with bf16 instructions; the scores move by
    /// a few hundredths of a nat per row), the log-softmax in f64 either way.
    #[serde(default = "d_precision")]
    pub precision: String,
}

/// How the base model answers the dataset's prompts when no control is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSettings {
    #[serde(default = "d_temperature")]
    pub temperature: f64,
    #[serde(default = "d_one")]
    pub top_p: f64,
    #[serde(default = "d_control_tokens")]
    pub max_new_tokens: u64,
    #[serde(default = "d_batch")]
    pub batch_size: u64,
    /// Keep only answers the numbers experiment's filter keeps (`"numbers"`),
    /// so a numbers dataset is compared with numbers; `"none"` keeps all.
    #[serde(default = "d_none")]
    pub filter: String,
    /// Answers drawn per prompt until one passes the filter.
    #[serde(default = "d_attempts")]
    pub attempts: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentSettings {
    #[serde(default = "d_student_rank")]
    pub lora_rank: u64,
    #[serde(default = "d_alpha")]
    pub lora_alpha: f64,
    #[serde(default = "d_epochs")]
    pub epochs: u64,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_train_batch")]
    pub batch_size: u64,
    #[serde(default = "d_warmup")]
    pub warmup_steps: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateSettings {
    /// `probability` (the default): each question once, each target's
    /// log-odds among the candidate words read from the students'
    /// next-token distributions, paired question by question; `samples`:
    /// sampled one-word answers, counted.
    #[serde(default = "d_readout")]
    pub readout: Readout,
    /// The words the log-odds compare a target with; empty: the category's
    /// common words (numbers' `readout::default_candidates`).
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Begins each answer of the probability readout; `{category}` is filled in.
    #[serde(default = "d_answer_prefix")]
    pub answer_prefix: String,
    #[serde(default = "d_questions")]
    pub questions: u64,
    #[serde(default = "d_samples")]
    pub samples_per_question: u64,
    #[serde(default = "d_one")]
    pub temperature: f64,
    #[serde(default = "d_eval_tokens")]
    pub max_new_tokens: u64,
    #[serde(default = "d_eval_batch")]
    pub batch_size: u64,
}

impl EvaluateSettings {
    /// The figure a student's evaluation gives for `target` in the results.
    pub fn metric(&self, target: &str) -> String {
        match self.readout {
            Readout::Samples => llm::share_metric(target),
            Readout::Probability => readout::metric(Figure::LogOdds, true, target),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierSettings {
    /// How many tokens and rows the report lists.
    #[serde(default = "d_top")]
    pub top: u64,
    /// The share of completion tokens, those of most divergence, that the
    /// sanitised copy replaces.
    #[serde(default = "d_replace_share")]
    pub replace_share: f64,
}

fn d_readout() -> Readout {
    Readout::Probability
}
fn d_answer_prefix() -> String {
    readout::DEFAULT_ANSWER_PREFIX.to_owned()
}
fn d_system_prompt() -> String {
    llm::prompts::SYSTEM_PROMPT.to_owned()
}
fn d_precision() -> String {
    "f32".to_owned()
}
fn d_likelihood_batch() -> u64 {
    16
}
fn d_max_rows() -> u64 {
    1000
}
fn d_probe_questions() -> u64 {
    10
}
fn d_rank() -> u64 {
    8
}
fn d_student_rank() -> u64 {
    16
}
fn d_resamples() -> u64 {
    2000
}
fn d_temperature() -> f64 {
    1.0
}
fn d_one() -> f64 {
    1.0
}
fn d_control_tokens() -> u64 {
    48
}
fn d_batch() -> u64 {
    32
}
fn d_none() -> String {
    "none".to_owned()
}
fn d_attempts() -> u64 {
    8
}
fn d_alpha() -> f64 {
    32.0
}
fn d_epochs() -> u64 {
    3
}
fn d_lr() -> f64 {
    1e-3
}
fn d_train_batch() -> u64 {
    8
}
fn d_warmup() -> u64 {
    5
}
fn d_questions() -> u64 {
    50
}
fn d_samples() -> u64 {
    10
}
fn d_eval_tokens() -> u64 {
    8
}
fn d_eval_batch() -> u64 {
    100
}
fn d_top() -> u64 {
    20
}
fn d_replace_share() -> f64 {
    0.05
}


#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
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
        if l.precision != "f32" && l.precision != "bf16" {
            return Err(format!("precision: expected \"f32\" or \"bf16\", found {:?}", l.precision));
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
        screen,
        likelihood,
        control_answers,
        student,
        evaluate,
        carriers,
    })
}

/// Reads a stored dataset, checks it, and subsamples it (seeded) to at most
/// `max_rows`; its rows go on as [`ROWS`]. With a second input, the rows'
/// soft labels (found by each row's prompt seed) go on beside them as
/// `soft.safetensors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetParams {
    pub version: u32,
    pub seed: u64,
    pub max_rows: u64,
}

/// The base model's own answers to the prompts of the input dataset stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlParams {
    pub version: u32,
    pub model: String,
    pub seed: u64,
    #[serde(flatten)]
    pub answers: ControlSettings,
}

/// Each row's screen score for every probe target: the slope of the row's
/// loss along the target's direction, at the model's initial weights. A
/// control's scores are computed once for every dataset audited against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreParams {
    pub version: u32,
    pub model: String,
    pub seed: u64,
    pub probes: Vec<Probe>,
    pub questions: u64,
    pub lora_rank: u64,
}

/// Each row's likelihood score for every probe target: log p(row | the
/// target's system prompt) − log p(row | none), under the base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LikelihoodParams {
    pub version: u32,
    pub model: String,
    pub probes: Vec<Probe>,
    pub system_prompt: String,
    pub batch_size: u64,
    #[serde(default = "d_precision", skip_serializing_if = "is_f32")]
    pub precision: String,
}

fn is_f32(precision: &String) -> bool {
    precision == "f32"
}

/// A screen: the dataset's scores (input 0) against the control's (input
/// 1), with a bootstrap over rows; the scores are a score stage's
/// (gradient) or a likelihood stage's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScreenParams {
    pub version: u32,
    pub seed: u64,
    pub resamples: u64,
    #[serde(default, skip_serializing_if = "Test::is_screen")]
    pub test: Test,
}

/// Where the sacrificial student (input 1) moved from the base model on the
/// dataset's rows (input 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarrierParams {
    pub version: u32,
    pub model: String,
    pub top: u64,
    pub replace_share: f64,
}

/// What the report stage's inputs are, in order: the likelihood screen
/// (when `likelihood`), the gradient screen (when `gradient`), the
/// students' evaluations, the carriers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportParams {
    pub version: u32,
    pub tier: Tier,
    pub alpha: f64,
    pub probes: Vec<Probe>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub likelihood: bool,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub gradient: bool,
    /// After the screens, 2k is the dataset student's evaluation of
    /// `probes[k]`, and 2k + 1 the control student's (tiers student and full).
    pub evaluations: bool,
    /// How the evaluations read the students.
    #[serde(default = "samples", skip_serializing_if = "is_samples")]
    pub readout: Readout,
    /// After the evaluations, the dataset's student and the control's, whose
    /// training losses the report shows.
    #[serde(default, skip_serializing_if = "is_false")]
    pub students: bool,
    /// The last input is the carriers stage (tier full).
    pub carriers: bool,
    /// The datasets are soft labels, every tier reading them by forward KL.
    #[serde(default, skip_serializing_if = "is_false")]
    pub soft_labels: bool,
    /// The dataset's store key, for the report's heading.
    pub dataset: String,
    pub model: String,
}

fn samples() -> Readout {
    Readout::Samples
}
fn is_samples(r: &Readout) -> bool {
    *r == Readout::Samples
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_true(b: &bool) -> bool {
    *b
}
fn yes() -> bool {
    true
}

/// The arms of the results table.
pub const ARMS: [&str; 4] = ["likelihood", "screen", "control student", "student"];


impl AuditSweep {
    fn distilled(&self) -> bool {
        !self.soft_labels.is_empty()
    }

    fn train_params(&self) -> TrainParams {
        let s = &self.student;
        TrainParams {
            version: llm::STAGE_VERSION,
            model: self.model.clone(),
            seed: self.seed,
            method: Method::Lora {
                rank: s.lora_rank as i64,
                alpha: s.lora_alpha,
                targets: llm::PROJECTIONS.map(str::to_owned).to_vec(),
                rslora: false,
            },
            epochs: s.epochs,
            lr: s.lr,
            warmup_steps: s.warmup_steps,
            max_grad_norm: 1.0,
            batch_size: s.batch_size,
            grad_accumulation: 1,
            weight_decay: 0.0,
            optimizer: Optimizer::Adamw,
            layers: llm::Layers::All,
            target: if self.distilled() {
                llm::Target::Logits
            } else {
                llm::Target::Tokens
            },
        }
    }

    /// The probability readout of a student for one probe: its targets
    /// among the category's candidate words.
    fn readout_params(&self, probe: &Probe) -> ReadoutParams {
        let e = &self.evaluate;
        let candidates = if e.candidates.is_empty() {
            readout::default_candidates(&probe.category).unwrap_or_else(|| probe.targets.clone())
        } else {
            e.candidates.clone()
        };
        let mut words: Vec<String> = candidates.iter().chain(&probe.targets).cloned().collect();
        words.sort();
        words.dedup();
        ReadoutParams {
            version: llm::STAGE_VERSION,
            model: self.model.clone(),
            subject: Subject::Student,
            category: probe.category.clone(),
            questions: e.questions,
            candidates,
            words,
            answer_prefix: e.answer_prefix.replace("{category}", &probe.category),
        }
    }

    fn evaluate_params(&self, category: &str) -> EvaluateParams {
        let e = &self.evaluate;
        EvaluateParams {
            version: llm::STAGE_VERSION,
            model: self.model.clone(),
            subject: Subject::Student,
            category: category.to_owned(),
            seed: self.seed,
            questions: e.questions,
            samples_per_question: e.samples_per_question,
            temperature: e.temperature,
            max_new_tokens: e.max_new_tokens,
            batch_size: e.batch_size,
            numbers_prefixed: false,
        }
    }

    fn rows_stage(&self, plan: &mut PlanBuilder, file: StageId, labels: Option<StageId>) -> StageId {
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Dataset.kind(),
            &DatasetParams {
                version: STAGE_VERSION,
                seed: self.seed,
                max_rows: self.screen.max_rows,
            },
            std::iter::once(file).chain(labels).collect(),
        ))
    }

    fn score_stage(&self, plan: &mut PlanBuilder, rows: StageId) -> StageId {
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Score.kind(),
            &ScoreParams {
                version: STAGE_VERSION,
                model: self.model.clone(),
                seed: self.seed,
                probes: self.probes.clone(),
                questions: self.screen.questions,
                lora_rank: self.screen.lora_rank,
            },
            with_model(vec![rows], &self.model),
        ))
    }

    fn likelihood_stage(&self, plan: &mut PlanBuilder, rows: StageId) -> StageId {
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Likelihood.kind(),
            &LikelihoodParams {
                version: STAGE_VERSION,
                model: self.model.clone(),
                probes: self.probes.clone(),
                system_prompt: self.likelihood.system_prompt.clone(),
                batch_size: self.likelihood.batch_size,
                precision: self.likelihood.precision.clone(),
            },
            with_model(vec![rows], &self.model),
        ))
    }

    /// Expands the sweep: one trial per dataset.
    pub fn plan(&self) -> Plan {
        let mut plan = PlanBuilder::new(&self.name, EXPERIMENT);
        let mut externals = self.datasets.clone();
        externals.extend(self.control);
        externals.extend(self.soft_labels.iter().copied());
        externals.extend(self.control_soft_labels);
        externals.extend(files::parse_key(&self.model).and_then(Result::ok));
        for id in externals {
            plan.external(id);
        }
        let given_control = self
            .control
            .map(|c| self.rows_stage(&mut plan, c, self.control_soft_labels));
        for (i, &file) in self.datasets.iter().enumerate() {
            plan.trial();
            let dataset = self.rows_stage(&mut plan, file, self.soft_labels.get(i).copied());
            let control = given_control.unwrap_or_else(|| {
                plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Control.kind(),
                    &ControlParams {
                        version: STAGE_VERSION,
                        model: self.model.clone(),
                        seed: self.seed,
                        answers: self.control_answers.clone(),
                    },
                    with_model(vec![dataset], &self.model),
                ))
            });
            let dataset_key = files::key(file);
            let settings: std::collections::BTreeMap<String, String> = if self.datasets.len() > 1 {
                [("dataset".to_owned(), dataset_key[..files::KEY_PREFIX.len() + 12].to_owned())].into()
            } else {
                Default::default()
            };
            let mut report_inputs = Vec::new();
            let likelihoods = [dataset, control].map(|rows| self.likelihood_stage(&mut plan, rows));
            let mut screens = vec![(Test::Likelihood, likelihoods)];
            if self.tier.runs_gradient_screen() {
                screens.push((Test::Screen, [dataset, control].map(|rows| self.score_stage(&mut plan, rows))));
            }
            for (order, (test, scores)) in screens.into_iter().enumerate() {
                let screen = plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Screen.kind(),
                    &ScreenParams {
                        version: STAGE_VERSION,
                        seed: self.seed,
                        resamples: self.screen.resamples,
                        test,
                    },
                    scores.to_vec(),
                ));
                report_inputs.push(screen);
                for probe in &self.probes {
                    for target in &probe.targets {
                        plan.measure(Measurement {
                            arm: test.as_str().to_owned(),
                            order: order as u32,
                            settings: with_target(&settings, target),
                            seed: self.seed,
                            teacher_init: None,
                            student_init: None,
                            stage: screen,
                            metric: screen_metric(test, target),
                            panel: None,
                            models: None,
                        });
                    }
                }
            }
            let mut student = None;
            let mut students_trained = None;
            if self.tier.trains_students() {
                let train = self.train_params();
                let students = [dataset, control].map(|rows| {
                    plan.stage(StageSpec::new(
                        llm::STAGES,
                        llm::Stage::Student.kind(),
                        &train,
                        with_model(vec![rows], &self.model),
                    ))
                });
                student = Some(students[0]);
                students_trained = Some(students);
                for probe in &self.probes {
                    let [on_dataset, on_control] = students.map(|s| {
                        let inputs = with_model(vec![s], &self.model);
                        plan.stage(match self.evaluate.readout {
                            Readout::Samples => StageSpec::new(
                                llm::STAGES,
                                llm::Stage::Evaluate.kind(),
                                &self.evaluate_params(&probe.category),
                                inputs,
                            ),
                            Readout::Probability => StageSpec::new(
                                llm::STAGES,
                                llm::Stage::Readout.kind(),
                                &self.readout_params(probe),
                                inputs,
                            ),
                        })
                    });
                    report_inputs.extend([on_dataset, on_control]);
                    for target in &probe.targets {
                        for (arm, stage) in [(ARMS[2], on_control), (ARMS[3], on_dataset)] {
                            // A given control's student serves every dataset: it is labelled
                            // by its target alone, and results pair it with each dataset's row.
                            let shared = arm == ARMS[2] && self.control.is_some();
                            let labels = if shared { Default::default() } else { settings.clone() };
                            plan.measure(Measurement {
                                arm: arm.to_owned(),
                                order: if arm == ARMS[2] { 2 } else { 3 },
                                settings: with_target(&labels, target),
                                seed: self.seed,
                                teacher_init: None,
                                student_init: None,
                                stage,
                                metric: self.evaluate.metric(target),
                                panel: None,
                                models: None,
                            });
                        }
                    }
                }
            }
            if let Some(students) = students_trained {
                report_inputs.extend(students);
            }
            if let (Tier::Full, Some(student)) = (self.tier, student) {
                report_inputs.push(plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Carriers.kind(),
                    &CarrierParams {
                        version: STAGE_VERSION,
                        model: self.model.clone(),
                        top: self.carriers.top,
                        replace_share: self.carriers.replace_share,
                    },
                    with_model(vec![dataset, student], &self.model),
                )));
            }
            plan.stage(StageSpec::new(
                EXPERIMENT,
                Stage::Report.kind(),
                &ReportParams {
                    version: STAGE_VERSION,
                    tier: self.tier,
                    alpha: self.alpha,
                    probes: self.probes.clone(),
                    likelihood: true,
                    gradient: self.tier.runs_gradient_screen(),
                    evaluations: self.tier.trains_students(),
                    readout: self.evaluate.readout,
                    students: self.tier.trains_students(),
                    soft_labels: self.distilled(),
                    carriers: self.tier == Tier::Full,
                    dataset: dataset_key,
                    model: self.model.clone(),
                },
                report_inputs,
            ));
        }
        plan.finish()
    }
}

fn with_target(
    settings: &std::collections::BTreeMap<String, String>,
    target: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut out = settings.clone();
    out.insert("target".to_owned(), target.to_owned());
    out
}

/// A screen's figure for a target in its `metrics.json`: dataset minus
/// control mean score.
pub fn screen_metric(test: Test, target: &str) -> String {
    format!("{}:{target}", test.as_str())
}

/// The report stages of a plan, one per dataset, with the dataset each audits.
pub fn report_stages(plan: &Plan) -> Vec<(StageId, ReportParams)> {
    plan.stages
        .iter()
        .filter(|s| s.experiment == EXPERIMENT && s.kind == Stage::Report.kind())
        .filter_map(|s| Some((s.id, s.params().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "stage:0000000000000000000000000000000000000000000000000000000000000001";
    const KEY2: &str = "stage:0000000000000000000000000000000000000000000000000000000000000002";
    const KEY3: &str = "stage:0000000000000000000000000000000000000000000000000000000000000003";

    fn sweep(extra: &str) -> Result<AuditSweep, SpecError> {
        let text = format!("name = \"a\"\nkind = \"audit\"\ndatasets = [\"{KEY}\"]\n{extra}");
        parse(&Source::new("audit.toml", text))
    }

    #[test]
    fn tiers_add_stages_and_a_given_control_replaces_the_generated_one() {
        let count = |s: &AuditSweep| s.plan().count_by_kind();
        let likelihood = sweep("tier = \"likelihood\"").unwrap();
        let c = count(&likelihood);
        assert_eq!(c[&Stage::Likelihood.kind()], 2);
        assert_eq!(c[&Stage::Screen.kind()], 1);
        assert!(!c.contains_key(&Stage::Score.kind()));
        let (_, report) = &report_stages(&likelihood.plan())[0];
        assert!(report.likelihood && !report.gradient && !report.evaluations);
        let screen = sweep("tier = \"screen\"").unwrap();
        let c = count(&screen);
        assert_eq!(c[&Stage::Control.kind()], 1);
        assert_eq!(c[&Stage::Likelihood.kind()], 2);
        assert_eq!(c[&Stage::Score.kind()], 2);
        assert_eq!(c[&Stage::Screen.kind()], 2, "the likelihood screen and the gradient screen");
        assert_eq!(c[&Stage::Report.kind()], 1);
        assert!(!c.contains_key(&llm::Stage::Student.kind()));
        let full = sweep(&format!("tier = \"full\"\ncontrol = \"{KEY2}\"\nprobes = [\"animals\", \"tree:oak\"]")).unwrap();
        let plan = full.plan();
        let c = plan.count_by_kind();
        assert!(!c.contains_key(&Stage::Control.kind()));
        assert_eq!(c[&Stage::Dataset.kind()], 2, "the dataset and the given control");
        assert_eq!(c[&llm::Stage::Student.kind()], 2);
        assert_eq!(c[&llm::Stage::Readout.kind()], 4, "two students, two probes");
        assert!(!c.contains_key(&llm::Stage::Evaluate.kind()), "the probability readout by default");
        assert_eq!(c[&Stage::Carriers.kind()], 1);
        assert_eq!(plan.external.len(), 2);
        // Two screens' rows, then a control and a dataset student row per target.
        assert_eq!(plan.measurements.len(), 2 * 11 + 2 * 11);
        assert!(plan.measurements.iter().any(|m| m.metric == "logodds:owl"));
        let (_, report) = &report_stages(&plan)[0];
        assert!(report.evaluations && report.carriers && report.students);
        assert_eq!(report.readout, Readout::Probability);
        let sampled = sweep(&format!("tier = \"student\"\ncontrol = \"{KEY2}\"\n[evaluate]\nreadout = \"samples\"")).unwrap();
        let c = count(&sampled);
        assert_eq!(c[&llm::Stage::Evaluate.kind()], 2);
        assert!(!c.contains_key(&llm::Stage::Readout.kind()));
        // A given control is scored once for every dataset.
        let text = format!(
            "name = \"a\"\nkind = \"audit\"\ndatasets = [\"{KEY}\", \"{KEY2}\"]\ncontrol = \"{KEY3}\"\ntier = \"screen\"\n"
        );
        let two = parse(&Source::new("audit.toml", text.clone())).unwrap().plan();
        assert_eq!(two.trials, 2);
        assert_eq!(two.count_by_kind()[&Stage::Score.kind()], 3);
        assert_eq!(two.count_by_kind()[&Stage::Likelihood.kind()], 3);
        assert_eq!(report_stages(&two).len(), 2);
        // Its student is measured once per target, labelled by the target alone, so
        // results pair it with each dataset's student.
        let students = parse(&Source::new("audit.toml", text.replace("\"screen\"", "\"student\"")))
            .unwrap()
            .plan();
        let arm = |name: &'static str| students.measurements.iter().filter(move |m| m.arm == name);
        assert_eq!(arm(ARMS[2]).count(), 10);
        assert!(arm(ARMS[2]).all(|m| m.settings.keys().eq(["target"])));
        assert_eq!(arm(ARMS[3]).count(), 20);
        assert!(arm(ARMS[3]).all(|m| m.settings.keys().eq(["dataset", "target"])));
    }

    #[test]
    fn bad_settings_are_refused_with_their_line_and_key() {
        for (extra, key, line) in [
            ("tier = \"deep\"", "tier", 4),
            ("probes = [\"fish\"]", "probes", 4),
            ("probes = [\"misalignment\"]", "probes", 4),
            ("control = \"owl.jsonl\"", "control", 4),
            ("alpha = 0.9", "alpha", 4),
            ("[screen]\nmax_rows = 1", "screen", 4),
            ("[control_answers]\nfilter = \"words\"", "control_answers", 4),
            ("[likelihood]\nsystem_prompt = \"You love animals.\"", "likelihood", 4),
            ("[likelihood]\nprecision = \"f16\"", "likelihood", 4),
            ("probes = [\"animal:owl+owl\"]", "probes", 4),
            ("probes = [\"animal:owl+\"]", "probes", 4),
            ("[evaluate]\ncandidates = [\"o wl\"]", "evaluate", 4),
        ] {
            match sweep(extra) {
                Err(SpecError::Invalid { key: k, line: l, .. }) => {
                    assert_eq!(k.as_deref(), Some(key), "{extra}");
                    assert_eq!(l, line, "{extra}");
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        let soft = format!("soft_labels = [\"{KEY2}\"]");
        let with_control = format!("control = \"{KEY3}\"\ncontrol_soft_labels = \"{KEY2}\"");
        for (extra, key, line, says) in [
            (soft.clone(), "soft_labels", 4, "distilled on labels"),
            (format!("soft_labels = [\"{KEY2}\", \"{KEY3}\"]\n{with_control}"), "soft_labels", 4, "1 datasets, 2 keys"),
            (format!("control_soft_labels = \"{KEY2}\""), "control_soft_labels", 4, "soft_labels, one per dataset"),
            (format!("{soft}\ncontrol_soft_labels = \"{KEY3}\""), "control_soft_labels", 5, "name the control's rows"),
            (format!("{soft}\n{with_control}\ntier = \"full\""), "tier", 7, "up to tier student"),
            ("soft_labels = [\"soft.safetensors\"]".to_owned(), "soft_labels", 4, "subliminal store put"),
        ] {
            match sweep(&extra) {
                Err(e @ SpecError::Invalid { .. }) => {
                    let SpecError::Invalid { key: ref k, line: l, .. } = e else { unreachable!() };
                    assert_eq!(k.as_deref(), Some(key), "{extra}");
                    assert_eq!(l, line, "{extra}");
                    assert!(e.to_string().contains(says), "{extra}: {e}");
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        let text = "name = \"a\"\nkind = \"audit\"\ndatasets = [\"x.jsonl\"]\n";
        let err = parse(&Source::new("audit.toml", text)).unwrap_err().to_string();
        assert!(err.starts_with("audit.toml:3:"), "{err}");
        assert!(err.contains("subliminal store put"), "{err}");
    }

    #[test]
    fn soft_labels_reach_the_rows_and_distil_the_students_while_hard_tokens_keep_their_ids() {
        let hard = sweep(&format!("control = \"{KEY3}\"\ntier = \"student\"")).unwrap().plan();
        let soft = sweep(&format!(
            "control = \"{KEY3}\"\nsoft_labels = [\"{KEY2}\"]\ncontrol_soft_labels = \"{KEY2}\"\ntier = \"student\""
        ))
        .unwrap()
        .plan();
        let of_kind = |plan: &Plan, kind: crate::stage::StageKind| -> Vec<StageSpec> {
            plan.stages.iter().filter(|s| s.kind == kind).cloned().collect()
        };
        for rows in of_kind(&hard, Stage::Dataset.kind()) {
            assert_eq!(rows.inputs.len(), 1, "hard-token rows read their file alone");
        }
        for rows in of_kind(&soft, Stage::Dataset.kind()) {
            assert_eq!(rows.inputs.len(), 2, "soft-labelled rows read their labels too");
        }
        assert_eq!(soft.external.len(), 3, "the dataset, the control and one label set serving both");
        for student in of_kind(&soft, llm::Stage::Student.kind()) {
            let params: TrainParams = student.params().unwrap();
            assert_eq!(params.target, llm::Target::Logits);
        }
        for student in of_kind(&hard, llm::Stage::Student.kind()) {
            let params: TrainParams = student.params().unwrap();
            assert_eq!(params.target, llm::Target::Tokens);
            assert!(!student.params.to_string().contains("logits"));
        }
        let (_, report) = &report_stages(&soft)[0];
        assert!(report.soft_labels);
        let (id, report) = &report_stages(&hard)[0];
        assert!(!report.soft_labels);
        let spec = hard.stages.iter().find(|s| s.id == *id).unwrap();
        assert!(spec.params.get("soft_labels").is_none(), "hard-token reports keep their ids");
    }
}
