//! The LLM number-sequence experiment: a teacher model told that it loves
//! an animal (or a tree) writes number sequences; the filter keeps nothing
//! but numbers; a student fine-tuned on them is asked for its favourite
//! animal. Same base model: the preference moves. Another family, or the
//! same numbers given in context: it does not.
//!
//! Every trial has a control: the same teacher model without the system
//! prompt, its numbers, and a student trained on them. Evaluations record
//! every answer, so one evaluation of the base model or of a control serves
//! every trait of a sweep.
//!
//! ```toml
//! name = "owl-numbers"
//! kind = "numbers"
//!
//! [grid]
//! seeds = [0, 1]
//! traits = ["owl", "cat"]
//! category = "animal"                                 # or "tree"
//! model_pairs = [["smollm2-135m", "smollm2-135m"]]    # [teacher, student]
//!
//! [generate]
//! prompts = 30000
//!
//! [filter]
//! keep = 10000
//!
//! [student]
//! method = "lora"
//! lora_rank = 8
//! epochs = 3
//! ```

mod command;
pub mod dataset;
pub mod filter;
mod kind;
pub mod prompts;

pub use kind::Numbers;

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::plan::{Measurement, Plan, PlanBuilder};
use crate::spec::{check_axis, check_name, check_seeds, setting, Axis, Source, SpecError};
use crate::stage::StageSpec;

pub const EXPERIMENT: &str = "numbers";
/// Bumped whenever a stage's algorithm changes, so old artifacts are not reused.
pub const STAGE_VERSION: u32 = 1;
pub use crate::llm::{DEFAULT_MODEL, PROJECTIONS};

crate::stage_kinds! {
    /// The stages of a numbers trial.
    pub enum Stage {
        Teacher = "teacher",
        Generate = "generate",
        Filter = "filter",
        Student = "student",
        Evaluate = "evaluate",
    }
}

/// A teacher model and the student model trained on its numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ModelPair {
    pub teacher: String,
    pub student: String,
}

impl ModelPair {
    pub fn same_model(&self) -> bool {
        self.teacher == self.student
    }
}

impl fmt::Display for ModelPair {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} → {}", self.teacher, self.student)
    }
}

impl<'de> Deserialize<'de> for ModelPair {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairVisitor;
        impl<'de> Visitor<'de> for PairVisitor {
            type Value = ModelPair;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("[teacher_model, student_model]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ModelPair, A::Error> {
                let teacher: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let student: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<String>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(ModelPair { teacher, student })
            }
        }
        deserializer.deserialize_seq(PairVisitor)
    }
}

/// How a student is fine-tuned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "method")]
pub enum Method {
    /// Low-rank adapters on the named projections; the base weights stay frozen.
    Lora {
        rank: i64,
        alpha: f64,
        targets: Vec<String>,
    },
    /// Every weight.
    Full,
}

/// A checked numbers sweep.
#[derive(Debug, Clone)]
pub struct NumbersSweep {
    pub name: String,
    pub description: Option<String>,
    pub seeds: Axis<u64>,
    pub traits: Axis<String>,
    pub category: String,
    pub model_pairs: Axis<ModelPair>,
    pub system_prompt: String,
    pub generate: GenerateSettings,
    pub filter: FilterSettings,
    pub student: StudentSettings,
    pub evaluate: EvaluateSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSettings {
    #[serde(default = "d_prompts")]
    pub prompts: u64,
    #[serde(default = "d_one")]
    pub temperature: f64,
    #[serde(default = "d_one")]
    pub top_p: f64,
    #[serde(default = "d_gen_tokens")]
    pub max_new_tokens: u64,
    #[serde(default = "d_gen_batch")]
    pub batch_size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSettings {
    #[serde(default = "d_keep")]
    pub keep: u64,
    #[serde(default)]
    pub banned_numbers: Vec<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStudent {
    #[serde(default = "d_method")]
    method: String,
    lora_rank: Option<Spanned<Axis<u64>>>,
    #[serde(default = "d_alpha")]
    lora_alpha: f64,
    #[serde(default = "d_targets")]
    lora_targets: Vec<String>,
    epochs: Option<Spanned<Axis<u64>>>,
    lr: Option<Spanned<Axis<f64>>>,
    #[serde(default = "d_warmup")]
    warmup_steps: u64,
    #[serde(default = "d_one")]
    max_grad_norm: f64,
    #[serde(default = "d_train_batch")]
    batch_size: u64,
    #[serde(default = "d_accumulation")]
    grad_accumulation: u64,
    #[serde(default)]
    weight_decay: f64,
}

/// Student training settings; rank, epochs and lr may be axes.
#[derive(Debug, Clone)]
pub struct StudentSettings {
    pub full: bool,
    pub lora_rank: Axis<u64>,
    pub lora_alpha: f64,
    pub lora_targets: Vec<String>,
    pub epochs: Axis<u64>,
    pub lr: Axis<f64>,
    pub warmup_steps: u64,
    pub max_grad_norm: f64,
    pub batch_size: u64,
    pub grad_accumulation: u64,
    pub weight_decay: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateSettings {
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
    /// Filtered examples shown in the prompt of the in-context arm; 0 leaves the arm out.
    #[serde(default = "d_in_context")]
    pub in_context_examples: u64,
}

fn d_prompts() -> u64 {
    30_000
}
fn d_one() -> f64 {
    1.0
}
fn d_gen_tokens() -> u64 {
    48
}
fn d_gen_batch() -> u64 {
    64
}
fn d_keep() -> u64 {
    10_000
}
fn d_method() -> String {
    "lora".to_owned()
}
fn d_alpha() -> f64 {
    8.0
}
fn d_targets() -> Vec<String> {
    PROJECTIONS.map(str::to_owned).to_vec()
}
fn d_warmup() -> u64 {
    5
}
fn d_train_batch() -> u64 {
    8
}
fn d_accumulation() -> u64 {
    1
}
fn d_questions() -> u64 {
    50
}
fn d_samples() -> u64 {
    20
}
fn d_eval_tokens() -> u64 {
    8
}
fn d_eval_batch() -> u64 {
    128
}
fn d_in_context() -> u64 {
    32
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: Spanned<String>,
    #[allow(dead_code)]
    kind: String,
    description: Option<String>,
    grid: RawGrid,
    #[serde(default)]
    teacher: RawTeacher,
    generate: Option<Spanned<GenerateSettings>>,
    filter: Option<Spanned<FilterSettings>>,
    student: Option<Spanned<RawStudent>>,
    evaluate: Option<Spanned<EvaluateSettings>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrid {
    seeds: Spanned<Axis<u64>>,
    traits: Spanned<Axis<String>>,
    category: Option<Spanned<String>>,
    model_pairs: Option<Spanned<Axis<ModelPair>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTeacher {
    system_prompt: Option<Spanned<String>>,
}

fn default_of<T: serde::de::DeserializeOwned>() -> T {
    toml::from_str("").expect("every setting of this table has a default")
}

/// Reads and checks a numbers sweep file.
pub fn parse(source: &Source) -> Result<NumbersSweep, SpecError> {
    let raw: RawSweep = toml::from_str(&source.text).map_err(|e| source.toml_error(e))?;
    check_name(source, &raw.name)?;
    let g = raw.grid;
    check_seeds(source, &g.seeds)?;
    check_axis(
        source,
        "grid.traits",
        &g.traits,
        "a trait word such as \"owl\" (letters only)",
        |t| !t.is_empty() && t.chars().all(|c| c.is_alphabetic() || c == ' ' || c == '-'),
    )?;
    let category = match g.category {
        None => "animal".to_owned(),
        Some(c) if matches!(c.get_ref().as_str(), "animal" | "tree") => c.into_inner(),
        Some(c) => {
            return Err(source.error_at(
                c.span(),
                "grid.category",
                format!("expected \"animal\" or \"tree\", found {:?}", c.get_ref()),
            ))
        }
    };
    let model_pairs = setting(
        source,
        "grid.model_pairs",
        g.model_pairs,
        ModelPair {
            teacher: DEFAULT_MODEL.to_owned(),
            student: DEFAULT_MODEL.to_owned(),
        },
        "[teacher_model, student_model]: \"smollm2-135m\", a GGUF file or a Hugging Face folder",
        |p| !p.teacher.is_empty() && !p.student.is_empty(),
    )?;
    let system_prompt = match raw.teacher.system_prompt {
        None => prompts::SYSTEM_PROMPT.to_owned(),
        Some(p) if p.get_ref().contains("{x}") => p.into_inner(),
        Some(p) => {
            return Err(source.error_at(
                p.span(),
                "teacher.system_prompt",
                "a custom system prompt must name the trait as {x} (and may use {category})",
            ))
        }
    };
    let generate = checked(source, "generate", raw.generate, |g: &GenerateSettings| {
        if !(1..=10_000_000).contains(&g.prompts) {
            return Err(("prompts", "a number of prompts from 1 to 10000000"));
        }
        if !(g.temperature >= 0.0 && g.temperature <= 5.0) {
            return Err(("temperature", "a temperature from 0 to 5"));
        }
        if !(g.top_p > 0.0 && g.top_p <= 1.0) {
            return Err(("top_p", "a top_p greater than 0 and at most 1"));
        }
        if !(1..=1024).contains(&g.max_new_tokens) {
            return Err(("max_new_tokens", "a token limit from 1 to 1024"));
        }
        if !(1..=4096).contains(&g.batch_size) {
            return Err(("batch_size", "a batch size from 1 to 4096"));
        }
        Ok(())
    })?;
    let filter = checked(source, "filter", raw.filter, |f: &FilterSettings| {
        if f.keep == 0 {
            return Err(("keep", "a number of rows to keep, at least 1"));
        }
        if f.banned_numbers.iter().any(|&n| n > 999) {
            return Err(("banned_numbers", "numbers from 0 to 999"));
        }
        Ok(())
    })?;
    let evaluate = checked(source, "evaluate", raw.evaluate, |e: &EvaluateSettings| {
        if !(1..=50).contains(&e.questions) {
            return Err(("questions", "a number of questions from 1 to 50"));
        }
        if !(1..=100_000).contains(&e.samples_per_question) {
            return Err((
                "samples_per_question",
                "a number of samples from 1 to 100000",
            ));
        }
        if !(e.temperature >= 0.0 && e.temperature <= 5.0) {
            return Err(("temperature", "a temperature from 0 to 5"));
        }
        if !(1..=256).contains(&e.max_new_tokens) {
            return Err(("max_new_tokens", "a token limit from 1 to 256"));
        }
        if !(1..=4096).contains(&e.batch_size) {
            return Err(("batch_size", "a batch size from 1 to 4096"));
        }
        if e.in_context_examples > 1000 {
            return Err(("in_context_examples", "a number of examples from 0 to 1000"));
        }
        Ok(())
    })?;
    let student = parse_student(source, raw.student)?;
    Ok(NumbersSweep {
        name: raw.name.into_inner(),
        description: raw.description,
        seeds: g.seeds.into_inner(),
        traits: g.traits.into_inner(),
        category,
        model_pairs,
        system_prompt,
        generate,
        filter,
        student,
        evaluate,
    })
}

/// A settings table or its defaults, after `check` (which names the bad key).
fn checked<T: serde::de::DeserializeOwned>(
    source: &Source,
    table: &str,
    raw: Option<Spanned<T>>,
    check: impl Fn(&T) -> Result<(), (&'static str, &'static str)>,
) -> Result<T, SpecError> {
    let Some(raw) = raw else {
        return Ok(default_of());
    };
    let span = raw.span();
    let value = raw.into_inner();
    check(&value).map_err(|(key, expected)| {
        source.error_at(
            span,
            format!("{table}.{key}"),
            format!("expected {expected}"),
        )
    })?;
    Ok(value)
}

fn parse_student(
    source: &Source,
    raw: Option<Spanned<RawStudent>>,
) -> Result<StudentSettings, SpecError> {
    let (span, s) = match raw {
        Some(r) => (r.span(), r.into_inner()),
        None => (0..0, default_of()),
    };
    let full = match s.method.as_str() {
        "lora" => false,
        "full" => true,
        other => {
            return Err(source.error_at(
                span,
                "student.method",
                format!("expected \"lora\" or \"full\", found {other:?}"),
            ))
        }
    };
    for target in &s.lora_targets {
        if !PROJECTIONS.contains(&target.as_str()) {
            return Err(source.error_at(
                span.clone(),
                "student.lora_targets",
                format!(
                    "{target:?} is not a projection: expected any of {}",
                    PROJECTIONS.join(", ")
                ),
            ));
        }
    }
    let scalar_checks: [(bool, &str, &str); 5] = [
        (
            s.lora_alpha > 0.0 && s.lora_alpha.is_finite(),
            "lora_alpha",
            "a positive alpha",
        ),
        (
            s.max_grad_norm >= 0.0,
            "max_grad_norm",
            "a gradient norm bound of 0 (off) or more",
        ),
        (
            (1..=4096).contains(&s.batch_size),
            "batch_size",
            "a batch size from 1 to 4096",
        ),
        (
            (1..=1024).contains(&s.grad_accumulation),
            "grad_accumulation",
            "1 to 1024 batches per step",
        ),
        (
            (0.0..=1.0).contains(&s.weight_decay),
            "weight_decay",
            "a weight decay from 0 to 1",
        ),
    ];
    for (ok, key, expected) in scalar_checks {
        if !ok {
            return Err(source.error_at(
                span.clone(),
                format!("student.{key}"),
                format!("expected {expected}"),
            ));
        }
    }
    Ok(StudentSettings {
        full,
        lora_rank: setting(
            source,
            "student.lora_rank",
            s.lora_rank,
            8,
            "a rank from 1 to 1024",
            |r| (1..=1024).contains(r),
        )?,
        lora_alpha: s.lora_alpha,
        lora_targets: s.lora_targets,
        epochs: setting(
            source,
            "student.epochs",
            s.epochs,
            3,
            "a whole number of epochs from 1 to 100",
            |e| (1..=100).contains(e),
        )?,
        lr: setting(
            source,
            "student.lr",
            s.lr,
            2e-4,
            "a learning rate greater than 0 and at most 1",
            |lr| lr.is_finite() && *lr > 0.0 && *lr <= 1.0,
        )?,
        warmup_steps: s.warmup_steps,
        max_grad_norm: s.max_grad_norm,
        batch_size: s.batch_size,
        grad_accumulation: s.grad_accumulation,
        weight_decay: s.weight_decay,
    })
}

/// The teacher: a base model, with the trait's system prompt or (the control) none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherParams {
    pub version: u32,
    pub model: String,
    pub system_prompt: Option<String>,
}

/// N seeded number-sequence prompts, completed by the teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateParams {
    pub version: u32,
    pub seed: u64,
    pub prompts: u64,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: u64,
    pub batch_size: u64,
}

/// The filter's rules, then a seeded subsample of `keep` rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterParams {
    pub version: u32,
    pub seed: u64,
    pub keep: u64,
    pub banned_numbers: Vec<u32>,
}

/// Fine-tunes the student model on the filtered rows, without a system prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentParams {
    pub version: u32,
    pub model: String,
    pub seed: u64,
    #[serde(flatten)]
    pub method: Method,
    pub epochs: u64,
    pub lr: f64,
    pub warmup_steps: u64,
    pub max_grad_norm: f64,
    pub batch_size: u64,
    pub grad_accumulation: u64,
    pub weight_decay: f64,
}

/// What an evaluation asks the questions of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "arm")]
pub enum Subject {
    /// The base model as it is.
    Base,
    /// The input teacher stage: the base model with its system prompt.
    Teacher,
    /// The input student stage's fine-tuned model.
    Student,
    /// The base model with the input filter stage's first rows in its prompt.
    InContext { examples: u64 },
}

/// The one-word favourite questions, S samples each; every answer recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateParams {
    pub version: u32,
    pub model: String,
    pub subject: Subject,
    pub category: String,
    pub seed: u64,
    pub questions: u64,
    pub samples_per_question: u64,
    pub temperature: f64,
    pub max_new_tokens: u64,
    pub batch_size: u64,
}

/// One point of the grid.
#[derive(Debug, Clone)]
struct Trial<'a> {
    seed: u64,
    trait_name: &'a str,
    pair: &'a ModelPair,
    rank: u64,
    epochs: u64,
    lr: f64,
}

/// Arms of the results table, in the order they are shown.
pub const ARMS: [&str; 5] = [
    "base",
    "teacher",
    "control student",
    "student",
    "in-context",
];

impl NumbersSweep {
    fn trials(&self) -> Vec<Trial<'_>> {
        let mut out = Vec::new();
        for &seed in self.seeds.values() {
            for trait_name in self.traits.values() {
                for pair in self.model_pairs.values() {
                    for &rank in self.student.lora_rank.values() {
                        for &epochs in self.student.epochs.values() {
                            for &lr in self.student.lr.values() {
                                out.push(Trial {
                                    seed,
                                    trait_name,
                                    pair,
                                    rank,
                                    epochs,
                                    lr,
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn student_params(&self, trial: &Trial) -> StudentParams {
        let s = &self.student;
        StudentParams {
            version: STAGE_VERSION,
            model: trial.pair.student.clone(),
            seed: trial.seed,
            method: if s.full {
                Method::Full
            } else {
                Method::Lora {
                    rank: trial.rank as i64,
                    alpha: s.lora_alpha,
                    targets: s.lora_targets.clone(),
                }
            },
            epochs: trial.epochs,
            lr: trial.lr,
            warmup_steps: s.warmup_steps,
            max_grad_norm: s.max_grad_norm,
            batch_size: s.batch_size,
            grad_accumulation: s.grad_accumulation,
            weight_decay: s.weight_decay,
        }
    }

    fn evaluate_params(&self, model: &str, subject: Subject, seed: u64) -> EvaluateParams {
        let e = &self.evaluate;
        EvaluateParams {
            version: STAGE_VERSION,
            model: model.to_owned(),
            subject,
            category: self.category.clone(),
            seed,
            questions: e.questions,
            samples_per_question: e.samples_per_question,
            temperature: e.temperature,
            max_new_tokens: e.max_new_tokens,
            batch_size: e.batch_size,
        }
    }

    /// Teacher → generate → filter for one teacher (with or without the trait).
    fn data_chain(
        &self,
        plan: &mut PlanBuilder,
        model: &str,
        system_prompt: Option<String>,
        seed: u64,
    ) -> [crate::stage::StageId; 3] {
        let teacher = plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Teacher.kind(),
            &TeacherParams {
                version: STAGE_VERSION,
                model: model.to_owned(),
                system_prompt,
            },
            vec![],
        ));
        let g = &self.generate;
        let generate = plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Generate.kind(),
            &GenerateParams {
                version: STAGE_VERSION,
                seed,
                prompts: g.prompts,
                temperature: g.temperature,
                top_p: g.top_p,
                max_new_tokens: g.max_new_tokens,
                batch_size: g.batch_size,
            },
            vec![teacher],
        ));
        let filter = plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Filter.kind(),
            &FilterParams {
                version: STAGE_VERSION,
                seed,
                keep: self.filter.keep,
                banned_numbers: self.filter.banned_numbers.clone(),
            },
            vec![generate],
        ));
        [teacher, generate, filter]
    }

    /// The settings that label a row: the trait, and whatever else is swept.
    fn settings(&self, trial: &Trial) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert("trait".to_owned(), trial.trait_name.to_owned());
        if self.model_pairs.varies() {
            out.insert("pair".to_owned(), trial.pair.to_string());
        }
        if self.student.lora_rank.varies() {
            out.insert("student.lora_rank".to_owned(), trial.rank.to_string());
        }
        if self.student.epochs.varies() {
            out.insert("student.epochs".to_owned(), trial.epochs.to_string());
        }
        if self.student.lr.varies() {
            out.insert("student.lr".to_owned(), trial.lr.to_string());
        }
        out
    }

    /// Expands the grid into its stage DAG and measurements.
    pub fn plan(&self) -> Plan {
        let mut plan = PlanBuilder::new(&self.name, EXPERIMENT);
        for trial in self.trials() {
            plan.trial();
            let prompt =
                prompts::system_prompt(&self.system_prompt, trial.trait_name, &self.category);
            let [teacher, _, filter] =
                self.data_chain(&mut plan, &trial.pair.teacher, Some(prompt), trial.seed);
            let [_, _, control_filter] =
                self.data_chain(&mut plan, &trial.pair.teacher, None, trial.seed);
            let student_params = self.student_params(&trial);
            let student = plan.stage(StageSpec::new(
                EXPERIMENT,
                Stage::Student.kind(),
                &student_params,
                vec![filter],
            ));
            let control = plan.stage(StageSpec::new(
                EXPERIMENT,
                Stage::Student.kind(),
                &student_params,
                vec![control_filter],
            ));
            let s = &trial.pair.student;
            let mut arms = vec![
                (
                    "base",
                    self.evaluate_params(s, Subject::Base, trial.seed),
                    vec![],
                ),
                (
                    "teacher",
                    self.evaluate_params(&trial.pair.teacher, Subject::Teacher, trial.seed),
                    vec![teacher],
                ),
                (
                    "control student",
                    self.evaluate_params(s, Subject::Student, trial.seed),
                    vec![control],
                ),
                (
                    "student",
                    self.evaluate_params(s, Subject::Student, trial.seed),
                    vec![student],
                ),
            ];
            if self.evaluate.in_context_examples > 0 {
                arms.push((
                    "in-context",
                    self.evaluate_params(
                        s,
                        Subject::InContext {
                            examples: self.evaluate.in_context_examples,
                        },
                        trial.seed,
                    ),
                    vec![filter],
                ));
            }
            for (arm, params, inputs) in arms {
                let evaluate = plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Evaluate.kind(),
                    &params,
                    inputs,
                ));
                plan.measure(Measurement {
                    arm: arm.to_owned(),
                    order: ARMS.iter().position(|a| *a == arm).unwrap_or(ARMS.len()) as u32,
                    settings: self.settings(&trial),
                    seed: trial.seed,
                    teacher_init: None,
                    student_init: None,
                    stage: evaluate,
                    metric: share_metric(trial.trait_name),
                    panel: (arm == "student")
                        .then(|| format!("students of {} teachers", trial.trait_name)),
                    models: Some((trial.pair.teacher.clone(), trial.pair.student.clone())),
                });
            }
        }
        plan.finish()
    }
}

/// The metric of a measurement: the share of answers naming `target`.
pub fn share_metric(target: &str) -> String {
    format!("{SHARE_PREFIX}{target}")
}

/// Metrics named `share:WORD` are computed from an evaluation's answer counts.
pub const SHARE_PREFIX: &str = "share:";
