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
pub mod diagnose;
mod kind;
pub mod theorem;

pub use kind::Numbers;

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::files::{self, with_model};
use crate::llm::{
    distill, filter, prompts, readout, share_metric, Constrain, DefendParams, Defense,
    EvaluateParams, FilterParams, GenerateParams, Layers, Method, NumbersGrammar, Optimizer,
    Readout, ReadoutParams, SoftLabelParams, Stage, Subject, Target, TeacherParams, TrainParams,
    TraitDataParams, DEFAULT_MODEL, PROJECTIONS, STAGE_VERSION,
};
use crate::plan::{Measurement, Plan, PlanBuilder};
use crate::spec::{
    check_axis, check_name, check_seeds, default_of, named_axis, setting, Axis, Source, SpecError,
};
use crate::stage::{StageId, StageSpec};

/// The kind's name: the pipeline's stages are filed under it
/// ([`crate::llm::STAGES`]), the numbers kind's own with them.
pub const EXPERIMENT: &str = crate::llm::STAGES;

crate::stage_kinds! {
    /// The stages the numbers kind files under the pipeline's name beside
    /// the pipeline's own ([`crate::llm::Stage`]).
    pub enum NumbersStage {
        Diagnose = "diagnose",
        Theorem = "theorem",
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

/// Where a fine-tuned teacher's trait comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TeacherSettings {
    /// The base model with the trait's system prompt (the paper's teacher).
    Prompt,
    /// The base model fine-tuned to hold the trait.
    Finetune(FinetuneTeacher),
}

/// A fine-tuned teacher: its trait data and how it is trained on them.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneTeacher {
    /// A chat JSONL file in the store (`subliminal store put`) to train on,
    /// instead of data the tool generates.
    pub dataset: Option<StageId>,
    /// Questions put to the system-prompted teacher; answers that show the trait are kept.
    pub questions: u64,
    pub temperature: f64,
    pub max_new_tokens: u64,
    pub batch_size: u64,
    pub method: Method,
    pub epochs: u64,
    pub lr: f64,
    pub train_batch_size: u64,
    /// The teacher's own seed: one teacher serves every seed of the grid.
    pub seed: u64,
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
    pub teacher: TeacherSettings,
    pub generate: GenerateSettings,
    pub filter: FilterSettings,
    pub student: StudentSettings,
    pub evaluate: EvaluateSettings,
    /// What is done to the filtered rows before a student sees them.
    pub defense: Axis<Defense>,
    /// The traits whose teachers' rows the `mix` defense mixes in.
    pub mix_traits: Vec<String>,
    /// Whose numbers the control student learns from.
    pub control: ControlTeacher,
    /// Measure the theorem's cosines for every student.
    pub theorem: Option<theorem::TheoremSettings>,
}

/// The teacher of a trial's control student.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ControlTeacher {
    /// The base model as it is (the paper's control).
    #[default]
    Base,
    /// The next trait's teacher, made by the same recipe: the two teachers
    /// differ in the trait alone, not in having been fine-tuned.
    OtherTrait,
}

/// Number generation; the temperature may be an axis, and 0 is greedy decoding.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSettings {
    #[serde(default = "d_prompts")]
    pub prompts: u64,
    #[serde(default = "d_one_axis")]
    pub temperature: Axis<f64>,
    #[serde(default = "d_one")]
    pub top_p: f64,
    #[serde(default = "d_gen_tokens")]
    pub max_new_tokens: u64,
    #[serde(default = "d_gen_batch")]
    pub batch_size: u64,
    /// `"numbers"`: sample only tokens that keep a completion one the
    /// filter keeps ([`constrain`]), so no generation is thrown away.
    #[serde(default)]
    pub constrain: Constrain,
}

/// The filter; `keep` (the dataset size the student sees) may be an axis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSettings {
    #[serde(default = "d_keep")]
    pub keep: Axis<u64>,
    #[serde(default)]
    pub banned_numbers: Vec<u32>,
    /// The lenient rule instead of the paper's (see [`filter`]).
    #[serde(default)]
    pub lenient: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStudent {
    method: Option<Spanned<Axis<String>>>,
    lora_rank: Option<Spanned<Axis<u64>>>,
    #[serde(default = "d_alpha")]
    lora_alpha: f64,
    #[serde(default = "d_targets")]
    lora_targets: Vec<String>,
    #[serde(default)]
    rslora: bool,
    epochs: Option<Spanned<Axis<u64>>>,
    lr: Option<Spanned<Axis<f64>>>,
    full_lr: Option<f64>,
    optimizer: Option<Spanned<Axis<String>>>,
    layers: Option<Spanned<Axis<Layers>>>,
    target: Option<Spanned<Axis<String>>>,
    soft_top_k: Option<u64>,
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

/// Student training settings; method, rank, epochs, lr, optimiser and
/// layers may be axes.
#[derive(Debug, Clone)]
pub struct StudentSettings {
    /// `false` is LoRA, `true` full fine-tuning.
    pub full: Axis<bool>,
    pub lora_rank: Axis<u64>,
    pub lora_alpha: f64,
    pub lora_targets: Vec<String>,
    pub rslora: bool,
    pub epochs: Axis<u64>,
    pub lr: Axis<f64>,
    /// The learning rate of full fine-tuning, when it differs from LoRA's
    /// (full fine-tuning wants one 10–100 times smaller).
    pub full_lr: Option<f64>,
    pub optimizer: Axis<Optimizer>,
    pub layers: Axis<Layers>,
    /// What the student learns: the teacher's tokens or its soft labels.
    pub target: Axis<Target>,
    /// Tokens per position of the soft labels.
    pub soft_top_k: u64,
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
    /// Also ask every question after a seeded run of numbers (the paper's
    /// numbers-prefixed variant), as arms of their own.
    #[serde(default)]
    pub numbers_prefixed: bool,
    /// How the trait is read: sampled answers (the paper's), the exact
    /// probability ([`readout`]), or both.
    #[serde(default = "d_readout")]
    pub readout: Vec<Readout>,
    /// The words the probability readout's log-odds compare the trait
    /// with; empty: the category's own list.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Begins each answer of the probability readout, so that the next
    /// word is the answer; `{category}` is filled in.
    #[serde(default = "d_answer_prefix")]
    pub answer_prefix: String,
}

impl EvaluateSettings {
    fn reads(&self, readout: Readout) -> bool {
        self.readout.contains(&readout)
    }
}

fn d_readout() -> Vec<Readout> {
    vec![Readout::Samples]
}
fn d_answer_prefix() -> String {
    readout::DEFAULT_ANSWER_PREFIX.to_owned()
}

fn d_prompts() -> u64 {
    30_000
}
fn d_one() -> f64 {
    1.0
}
fn d_one_axis() -> Axis<f64> {
    Axis::single(1.0)
}
fn d_gen_tokens() -> u64 {
    48
}
fn d_gen_batch() -> u64 {
    64
}
fn d_keep() -> Axis<u64> {
    Axis::single(10_000)
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
    teacher: Option<Spanned<RawTeacher>>,
    generate: Option<Spanned<GenerateSettings>>,
    filter: Option<Spanned<FilterSettings>>,
    student: Option<Spanned<RawStudent>>,
    evaluate: Option<Spanned<EvaluateSettings>>,
    defense: Option<Spanned<RawDefense>>,
    theorem: Option<Spanned<theorem::TheoremSettings>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefense {
    mix_traits: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrid {
    seeds: Spanned<Axis<u64>>,
    traits: Spanned<Axis<String>>,
    category: Option<Spanned<String>>,
    model_pairs: Option<Spanned<Axis<ModelPair>>>,
    defense: Option<Spanned<Axis<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTeacher {
    system_prompt: Option<Spanned<String>>,
    #[serde(default = "d_teacher_method")]
    method: String,
    dataset: Option<String>,
    #[serde(default = "d_trait_questions")]
    questions: u64,
    #[serde(default = "d_one")]
    temperature: f64,
    #[serde(default = "d_trait_tokens")]
    max_new_tokens: u64,
    #[serde(default = "d_gen_batch")]
    batch_size: u64,
    #[serde(default = "d_finetune")]
    finetune: String,
    #[serde(default = "d_teacher_rank")]
    lora_rank: u64,
    #[serde(default = "d_teacher_alpha")]
    lora_alpha: f64,
    #[serde(default = "d_teacher_epochs")]
    epochs: u64,
    #[serde(default = "d_teacher_lr")]
    lr: f64,
    #[serde(default = "d_train_batch")]
    train_batch_size: u64,
    #[serde(default)]
    seed: u64,
    control: Option<Spanned<String>>,
}

fn d_teacher_method() -> String {
    "prompt".to_owned()
}
fn d_trait_questions() -> u64 {
    2_000
}
fn d_trait_tokens() -> u64 {
    32
}
fn d_finetune() -> String {
    "lora".to_owned()
}
fn d_teacher_rank() -> u64 {
    16
}
fn d_teacher_alpha() -> f64 {
    32.0
}
fn d_teacher_epochs() -> u64 {
    3
}
fn d_teacher_lr() -> f64 {
    5e-4
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
    let model_pairs_span = g.model_pairs.as_ref().map(|p| p.span());
    let model_pairs = setting(
        source,
        "grid.model_pairs",
        g.model_pairs,
        ModelPair {
            teacher: DEFAULT_MODEL.to_owned(),
            student: DEFAULT_MODEL.to_owned(),
        },
        "[teacher_model, student_model]: \"smollm2-135m\", a GGUF file, a Hugging Face folder, or a store key (stage:...)",
        |p| !p.teacher.is_empty() && !p.student.is_empty(),
    )?;
    for model in model_pairs.values().iter().flat_map(|p| [&p.teacher, &p.student]) {
        if let Some(Err(e)) = files::parse_key(model) {
            let span = model_pairs_span.clone().unwrap_or(0..0);
            return Err(source.error_at(span, "grid.model_pairs", format!("{e:#}")));
        }
    }
    let (teacher_span, raw_teacher) = match raw.teacher {
        Some(t) => (t.span(), t.into_inner()),
        None => (0..0, RawTeacher {
            method: d_teacher_method(),
            ..default_of()
        }),
    };
    let system_prompt = match raw_teacher.system_prompt.clone() {
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
    let mut raw_teacher = raw_teacher;
    let control = match raw_teacher.control.take() {
        None => ControlTeacher::Base,
        Some(c) => match c.get_ref().as_str() {
            "base" => ControlTeacher::Base,
            "other-trait" if g.traits.get_ref().values().len() >= 2 => ControlTeacher::OtherTrait,
            "other-trait" => {
                return Err(source.error_at(
                    c.span(),
                    "teacher.control",
                    "\"other-trait\" makes each trait's teacher the control of another's, so grid.traits needs two or more traits",
                ))
            }
            other => {
                return Err(source.error_at(
                    c.span(),
                    "teacher.control",
                    format!("expected \"base\" or \"other-trait\", found {other:?}"),
                ))
            }
        },
    };
    let teacher = parse_teacher(source, teacher_span, raw_teacher)?;
    let generate = checked(source, "generate", raw.generate, |g: &GenerateSettings| {
        if !(1..=10_000_000).contains(&g.prompts) {
            return Err(("prompts", "a number of prompts from 1 to 10000000"));
        }
        if g.temperature.values().is_empty()
            || g.temperature.values().iter().any(|t| !(*t >= 0.0 && *t <= 5.0))
        {
            return Err(("temperature", "a temperature from 0 (greedy) to 5, or a list of them"));
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
        if f.keep.values().is_empty() || f.keep.values().contains(&0) {
            return Err(("keep", "a number of rows to keep, at least 1, or a list of them"));
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
        let repeated = e.readout.iter().enumerate().any(|(i, r)| e.readout[..i].contains(r));
        if e.readout.is_empty() || repeated {
            return Err(("readout", "\"samples\", \"probability\" or both, each once"));
        }
        let words = |w: &String| !w.is_empty() && w.chars().all(|c| c.is_lowercase());
        if !e.candidates.is_empty() && (e.candidates.len() < 2 || !e.candidates.iter().all(words)) {
            return Err(("candidates", "two or more lowercase words (the category's own list if empty)"));
        }
        if e.answer_prefix.trim().is_empty() || e.answer_prefix.ends_with(' ') {
            return Err(("answer_prefix", "the start of an answer, not ending in a space (the answer word brings its own)"));
        }
        Ok(())
    })?;
    let theorem = match raw.theorem {
        None => None,
        Some(t) => {
            let span = t.span();
            let settings = t.into_inner();
            let refuse = |key: &str, expected: &str| {
                source.error_at(span.clone(), format!("theorem.{key}"), format!("expected {expected}"))
            };
            settings.check().map_err(|(key, expected)| refuse(key, expected))?;
            if !matches!(teacher, TeacherSettings::Finetune(_)) {
                return Err(refuse(
                    "",
                    "fine-tuned teachers (teacher.method = \"finetune\"): the theorem compares a student's update with the teacher's weight change",
                ));
            }
            Some(settings)
        }
    };
    let student_span = raw.student.as_ref().map_or(0..0, |s| s.span());
    let student = parse_student(source, raw.student)?;
    let defense = parse_defense(source, g.defense)?;
    let mix_traits = parse_mix_traits(source, raw.defense, &defense)?;
    if student.target.values().contains(&Target::Logits)
        && defense.values().iter().any(|d| *d != Defense::None)
    {
        return Err(source.error_at(
            student_span.clone(),
            "student.target",
            "soft labels belong to the rows as the teacher wrote them, so \"logits\" takes no defense (leave grid.defense out)",
        ));
    }
    if defense.values().contains(&Defense::MaskDivergence) {
        if let Some(pair) = model_pairs.values().iter().find(|p| !p.same_model()) {
            return Err(source.error_at(
                model_pairs_span.clone().unwrap_or(0..0),
                "grid.model_pairs",
                format!(
                    "mask-divergence masks tokens as the teacher's tokenizer splits them, so every pair must train the teacher's own model; {pair} does not"
                ),
            ));
        }
    }
    Ok(NumbersSweep {
        name: raw.name.into_inner(),
        description: raw.description,
        seeds: g.seeds.into_inner(),
        traits: g.traits.into_inner(),
        category,
        model_pairs,
        system_prompt,
        teacher,
        generate,
        filter,
        student,
        evaluate,
        defense,
        mix_traits,
        control,
        theorem,
    })
}

/// The `grid.defense` axis; an unknown name is refused at its own place in
/// the file, with the list of known ones.
fn parse_defense(
    source: &Source,
    raw: Option<Spanned<Axis<String>>>,
) -> Result<Axis<Defense>, SpecError> {
    let Some(raw) = raw else {
        return Ok(Axis::single(Defense::None));
    };
    named_axis(source, "grid.defense", raw, &Defense::names(), |name| {
        match Defense::parse(name) {
            Some(Defense::Paraphrase) => Err("paraphrase rewrites free text, and a number completion has none: \
                 expected none, canonical, shuffle, random, mix or mask-divergence"
                .to_owned()),
            Some(d) => Ok(d),
            None => Err(format!(
                "unknown defense {name:?}: expected one of {}",
                Defense::names()
            )),
        }
    })
}

/// `defense.mix_traits`: needed by `mix`, and only by it.
fn parse_mix_traits(
    source: &Source,
    raw: Option<Spanned<RawDefense>>,
    defense: &Axis<Defense>,
) -> Result<Vec<String>, SpecError> {
    let mixes = defense.values().contains(&Defense::Mix);
    let (span, traits) = match raw.and_then(|r| r.into_inner().mix_traits) {
        Some(t) => (t.span(), t.into_inner()),
        None if mixes => {
            return Err(source.error_at_top(
                "`grid.defense` names mix: expected `[defense] mix_traits = [\"eagle\", ...]`, \
                 the traits of the teachers whose rows are mixed in",
            ))
        }
        None => return Ok(Vec::new()),
    };
    if !mixes {
        return Err(source.error_at(
            span,
            "defense.mix_traits",
            "only the mix defense reads it: add \"mix\" to grid.defense, or remove this key",
        ));
    }
    let ok = |t: &String| !t.is_empty() && t.chars().all(|c| c.is_alphabetic() || c == ' ' || c == '-');
    if traits.is_empty() || !traits.iter().all(ok) {
        return Err(source.error_at(
            span,
            "defense.mix_traits",
            "expected a list of one or more trait words such as \"eagle\" (letters only)",
        ));
    }
    Ok(traits)
}

fn parse_teacher(
    source: &Source,
    span: std::ops::Range<usize>,
    t: RawTeacher,
) -> Result<TeacherSettings, SpecError> {
    let err = |key: &str, expected: String| {
        source.error_at(span.clone(), format!("teacher.{key}"), expected)
    };
    match t.method.as_str() {
        "prompt" => return Ok(TeacherSettings::Prompt),
        "finetune" => {}
        other => {
            return Err(err(
                "method",
                format!("expected \"prompt\" or \"finetune\", found {other:?}"),
            ))
        }
    }
    let method = match t.finetune.as_str() {
        "lora" => Method::Lora {
            rank: t.lora_rank as i64,
            alpha: t.lora_alpha,
            targets: d_targets(),
            rslora: false,
        },
        "full" => Method::Full,
        other => {
            return Err(err(
                "finetune",
                format!("expected \"lora\" or \"full\", found {other:?}"),
            ))
        }
    };
    let checks: [(bool, &str, &str); 9] = [
        ((1..=10_000_000).contains(&t.questions), "questions", "a number of questions from 1 to 10000000"),
        ((0.0..=5.0).contains(&t.temperature), "temperature", "a temperature from 0 to 5"),
        ((1..=1024).contains(&t.max_new_tokens), "max_new_tokens", "a token limit from 1 to 1024"),
        ((1..=4096).contains(&t.batch_size), "batch_size", "a batch size from 1 to 4096"),
        ((1..=1024).contains(&t.lora_rank), "lora_rank", "a rank from 1 to 1024"),
        (t.lora_alpha > 0.0 && t.lora_alpha.is_finite(), "lora_alpha", "a positive alpha"),
        ((1..=100).contains(&t.epochs), "epochs", "a whole number of epochs from 1 to 100"),
        (t.lr.is_finite() && t.lr > 0.0 && t.lr <= 1.0, "lr", "a learning rate greater than 0 and at most 1"),
        ((1..=4096).contains(&t.train_batch_size), "train_batch_size", "a batch size from 1 to 4096"),
    ];
    for (ok, key, expected) in checks {
        if !ok {
            return Err(err(key, format!("expected {expected}")));
        }
    }
    let dataset = match t.dataset.as_deref().map(|d| (d, files::parse_key(d))) {
        None => None,
        Some((_, Some(Ok(id)))) => Some(id),
        Some((_, Some(Err(e)))) => return Err(err("dataset", format!("{e:#}"))),
        Some((d, None)) => {
            return Err(err(
                "dataset",
                format!("{d:?} is not a store key: put the file with `subliminal store put {d}` and name the key it prints (stage:...)"),
            ))
        }
    };
    Ok(TeacherSettings::Finetune(FinetuneTeacher {
        dataset,
        questions: t.questions,
        temperature: t.temperature,
        max_new_tokens: t.max_new_tokens,
        batch_size: t.batch_size,
        method,
        epochs: t.epochs,
        lr: t.lr,
        train_batch_size: t.train_batch_size,
        seed: t.seed,
    }))
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
    let full = match s.method {
        None => Axis::single(false),
        Some(methods) => {
            check_axis(
                source,
                "student.method",
                &methods,
                "\"lora\" or \"full\"",
                |m| matches!(m.as_str(), "lora" | "full"),
            )?;
            Axis(methods.into_inner().values().iter().map(|m| m == "full").collect())
        }
    };
    let optimizer = match s.optimizer {
        None => Axis::single(Optimizer::Adamw),
        Some(names) => {
            check_axis(
                source,
                "student.optimizer",
                &names,
                "\"adamw\" or \"sgd\"",
                |m| matches!(m.as_str(), "adamw" | "sgd"),
            )?;
            Axis(
                names
                    .into_inner()
                    .values()
                    .iter()
                    .map(|m| if m == "sgd" { Optimizer::Sgd } else { Optimizer::Adamw })
                    .collect(),
            )
        }
    };
    let target = match s.target {
        None => Axis::single(Target::Tokens),
        Some(names) => {
            check_axis(
                source,
                "student.target",
                &names,
                "\"tokens\" or \"logits\"",
                |m| matches!(m.as_str(), "tokens" | "logits"),
            )?;
            Axis(
                names
                    .into_inner()
                    .values()
                    .iter()
                    .map(|m| if m == "logits" { Target::Logits } else { Target::Tokens })
                    .collect(),
            )
        }
    };
    let layers = setting(
        source,
        "student.layers",
        s.layers,
        Layers::All,
        "\"all\", a block number, or a list of block numbers such as [[0, 1]]",
        |l| match l {
            Layers::All => true,
            Layers::Only(list) => !list.is_empty() && list.iter().all(|&n| n < 1024),
        },
    )?;
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
    let scalar_checks: [(bool, &str, &str); 7] = [
        (
            s.soft_top_k.is_none_or(|k| (1..=1024).contains(&k)),
            "soft_top_k",
            "1 to 1024 tokens per position",
        ),
        (
            s.full_lr.is_none_or(|lr| lr.is_finite() && lr > 0.0 && lr <= 1.0),
            "full_lr",
            "a learning rate greater than 0 and at most 1",
        ),
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
        rslora: s.rslora,
        full_lr: s.full_lr,
        optimizer,
        layers,
        target,
        soft_top_k: s.soft_top_k.unwrap_or(distill::DEFAULT_TOP_K),
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

/// How one student is trained: a point of the student axes.
#[derive(Debug, Clone, PartialEq)]
struct StudentPoint {
    full: bool,
    /// `None` for full fine-tuning, where a rank means nothing.
    rank: Option<u64>,
    epochs: u64,
    lr: f64,
    optimizer: Optimizer,
    layers: Layers,
    target: Target,
}

/// One point of the grid.
#[derive(Debug, Clone)]
struct Trial<'a> {
    seed: u64,
    trait_name: &'a str,
    pair: &'a ModelPair,
    temperature: f64,
    keep: u64,
    defense: Defense,
    student: StudentPoint,
}

/// Arms of the results table, in the order they are shown.
pub const ARMS: [&str; 7] = [
    "base",
    "teacher",
    "control student",
    "student",
    "in-context",
    "in-context control",
    "base-numbers student",
];

impl NumbersSweep {
    /// Every student the axes describe; full fine-tuning crosses no rank.
    fn student_points(&self) -> Vec<StudentPoint> {
        let s = &self.student;
        let mut out = Vec::new();
        for &full in s.full.values() {
            let ranks: Vec<Option<u64>> = if full {
                vec![None]
            } else {
                s.lora_rank.values().iter().map(|&r| Some(r)).collect()
            };
            for rank in ranks {
                for &epochs in s.epochs.values() {
                    for &lr in s.lr.values() {
                        for &optimizer in s.optimizer.values() {
                            for layers in s.layers.values() {
                                for &target in s.target.values() {
                                    out.push(StudentPoint {
                                        full,
                                        rank,
                                        epochs,
                                        lr,
                                        optimizer,
                                        layers: layers.clone(),
                                        target,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn trials(&self) -> Vec<Trial<'_>> {
        let points = self.student_points();
        let mut out = Vec::new();
        for &seed in self.seeds.values() {
            for trait_name in self.traits.values() {
                for pair in self.model_pairs.values() {
                    for &temperature in self.generate.temperature.values() {
                        for &keep in self.filter.keep.values() {
                            for &defense in self.defense.values() {
                                for student in &points {
                                    out.push(Trial {
                                        seed,
                                        trait_name,
                                        pair,
                                        temperature,
                                        keep,
                                        defense,
                                        student: student.clone(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn student_params(&self, trial: &Trial) -> TrainParams {
        let s = &self.student;
        let p = &trial.student;
        TrainParams {
            version: STAGE_VERSION,
            model: trial.pair.student.clone(),
            seed: trial.seed,
            method: match p.rank {
                Some(rank) if !p.full => Method::Lora {
                    rank: rank as i64,
                    alpha: s.lora_alpha,
                    targets: s.lora_targets.clone(),
                    rslora: s.rslora,
                },
                _ => Method::Full,
            },
            epochs: p.epochs,
            lr: match s.full_lr {
                Some(lr) if p.full => lr,
                _ => p.lr,
            },
            warmup_steps: s.warmup_steps,
            max_grad_norm: s.max_grad_norm,
            batch_size: s.batch_size,
            grad_accumulation: s.grad_accumulation,
            weight_decay: s.weight_decay,
            optimizer: p.optimizer,
            layers: p.layers.clone(),
            target: p.target,
        }
    }

    fn evaluate_params(
        &self,
        model: &str,
        subject: Subject,
        seed: u64,
        numbers_prefixed: bool,
    ) -> EvaluateParams {
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
            numbers_prefixed,
        }
    }

    /// The settings that label an arm's rows: an evaluation of the base
    /// model or a teacher serves every student setting and every defense,
    /// so it is labelled by none of them.
    fn arm_settings(&self, trial: &Trial, subject: &Subject) -> BTreeMap<String, String> {
        let mut settings = self.settings(trial);
        if !matches!(subject, Subject::Student) {
            settings.retain(|key, _| !key.starts_with("student."));
        }
        if matches!(subject, Subject::Base | Subject::Teacher) {
            settings.remove("defense");
        }
        settings
    }

    /// The probability readout of `subject`: the category's candidates and
    /// every trait of the sweep.
    fn readout_params(&self, model: &str, subject: Subject) -> ReadoutParams {
        let e = &self.evaluate;
        let candidates = if e.candidates.is_empty() {
            readout::default_candidates(&self.category).unwrap_or_default()
        } else {
            e.candidates.clone()
        };
        let mut words: Vec<String> = candidates.iter().chain(self.traits.values()).cloned().collect();
        words.sort();
        words.dedup();
        ReadoutParams {
            version: STAGE_VERSION,
            model: model.to_owned(),
            subject,
            category: self.category.clone(),
            questions: e.questions,
            candidates,
            words,
            answer_prefix: e.answer_prefix.replace("{category}", &self.category),
        }
    }

    /// The trait teacher of a trial: a system prompt, or a fine-tune on
    /// trait data (written by the system-prompted model, or a stored file).
    fn trait_teacher(&self, plan: &mut PlanBuilder, trait_name: &str, model: &str) -> StageId {
        let model = &model.to_owned();
        let prompt = prompts::system_prompt(&self.system_prompt, trait_name, &self.category);
        let TeacherSettings::Finetune(f) = &self.teacher else {
            return plan.stage(StageSpec::new(
                EXPERIMENT,
                Stage::Teacher.kind(),
                &TeacherParams {
                    version: STAGE_VERSION,
                    model: model.clone(),
                    system_prompt: Some(prompt),
                    finetune: None,
                },
                with_model(vec![], model),
            ));
        };
        let data = match f.dataset {
            Some(dataset) => dataset,
            None => plan.stage(StageSpec::new(
                EXPERIMENT,
                Stage::TraitData.kind(),
                &TraitDataParams {
                    version: STAGE_VERSION,
                    model: model.clone(),
                    system_prompt: prompt,
                    target: trait_name.to_owned(),
                    category: self.category.clone(),
                    seed: f.seed,
                    questions: f.questions,
                    temperature: f.temperature,
                    max_new_tokens: f.max_new_tokens,
                    batch_size: f.batch_size,
                },
                with_model(vec![], model),
            )),
        };
        let s = &self.student;
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Teacher.kind(),
            &TeacherParams {
                version: STAGE_VERSION,
                model: model.clone(),
                system_prompt: None,
                finetune: Some(TrainParams {
                    version: STAGE_VERSION,
                    model: model.clone(),
                    seed: f.seed,
                    method: f.method.clone(),
                    epochs: f.epochs,
                    lr: f.lr,
                    warmup_steps: s.warmup_steps,
                    max_grad_norm: s.max_grad_norm,
                    batch_size: f.train_batch_size,
                    grad_accumulation: 1,
                    weight_decay: 0.0,
                    optimizer: Optimizer::Adamw,
                    layers: Layers::All,
                    target: Target::Tokens,
                }),
            },
            with_model(vec![data], model),
        ))
    }

    /// The trait whose teacher is `trait_name`'s control, with
    /// `teacher.control = "other-trait"`: the next one of the sweep.
    fn control_trait(&self, trait_name: &str) -> Option<&str> {
        if self.control != ControlTeacher::OtherTrait {
            return None;
        }
        let traits = self.traits.values();
        let at = traits.iter().position(|t| t == trait_name)?;
        Some(traits[(at + 1) % traits.len()].as_str())
    }

    /// The control teacher of a trial: the base model as it is, or (with
    /// `teacher.control = "other-trait"`) the teacher of the next trait of
    /// the sweep, made by the same recipe.
    fn control_teacher(&self, plan: &mut PlanBuilder, trial: &Trial) -> StageId {
        let model = &trial.pair.teacher;
        match self.control_trait(trial.trait_name) {
            Some(other) => self.trait_teacher(plan, other, model),
            None => self.base_teacher(plan, model),
        }
    }

    /// The base model as it is, as a teacher.
    fn base_teacher(&self, plan: &mut PlanBuilder, model: &str) -> StageId {
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Teacher.kind(),
            &TeacherParams {
                version: STAGE_VERSION,
                model: model.to_owned(),
                system_prompt: None,
                finetune: None,
            },
            with_model(vec![], model),
        ))
    }

    /// Generate → filter for one teacher: the filter stage.
    fn numbers_chain(&self, plan: &mut PlanBuilder, teacher: StageId, trial: &Trial) -> StageId {
        self.chain(plan, teacher, trial).1
    }

    /// Generate → filter for one teacher: both stages.
    fn chain(&self, plan: &mut PlanBuilder, teacher: StageId, trial: &Trial) -> (StageId, StageId) {
        let g = &self.generate;
        let generate = plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Generate.kind(),
            &GenerateParams {
                version: STAGE_VERSION,
                seed: trial.seed,
                prompts: g.prompts,
                temperature: trial.temperature,
                top_p: g.top_p,
                max_new_tokens: g.max_new_tokens,
                batch_size: g.batch_size,
                constrain: (g.constrain == Constrain::Numbers).then(|| NumbersGrammar {
                    banned_numbers: self.filter.banned_numbers.clone(),
                }),
                soft_labels: self.student.target.values().contains(&Target::Logits).then(|| {
                    SoftLabelParams {
                        top_k: self.student.soft_top_k,
                        exclude: self.traits.values().to_vec(),
                    }
                }),
            },
            with_model(vec![teacher], &trial.pair.teacher),
        ));
        let filter = plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Filter.kind(),
            &FilterParams {
                version: STAGE_VERSION,
                seed: trial.seed,
                keep: trial.keep,
                banned_numbers: self.filter.banned_numbers.clone(),
                rule: if self.filter.lenient {
                    filter::Rule::Lenient
                } else {
                    filter::Rule::Paper
                },
            },
            vec![generate],
        ));
        (generate, filter)
    }

    /// A student of one teacher's rows (`filter`, possibly defended); a
    /// soft-label student also reads the generate stage's labels.
    fn student(
        &self,
        plan: &mut PlanBuilder,
        trial: &Trial,
        rows: StageId,
        generate: StageId,
    ) -> StageId {
        let params = self.student_params(trial);
        let mut inputs = vec![rows];
        if params.target == Target::Logits {
            inputs.push(generate);
        }
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Student.kind(),
            &params,
            with_model(inputs, &trial.pair.student),
        ))
    }

    /// The rows a student of `filter` learns from: the filtered rows as they
    /// are, or a defense stage's output. Applied alike to the trait
    /// teacher's and the control teacher's rows, so the control differs
    /// from the student only in the teacher.
    fn defended(
        &self,
        plan: &mut PlanBuilder,
        filter: StageId,
        teacher: StageId,
        trial: &Trial,
    ) -> StageId {
        let mut inputs = vec![filter];
        let mut model = None;
        match trial.defense {
            Defense::None => return filter,
            Defense::Mix => {
                for other in self.mix_traits.iter().filter(|t| *t != trial.trait_name) {
                    let teacher = self.trait_teacher(plan, other, &trial.pair.teacher);
                    inputs.push(self.numbers_chain(plan, teacher, trial));
                }
            }
            Defense::MaskDivergence => {
                inputs.push(teacher);
                model = Some(trial.pair.teacher.clone());
                inputs = with_model(inputs, &trial.pair.teacher);
            }
            Defense::Canonical | Defense::Shuffle | Defense::Random | Defense::Paraphrase => {}
        }
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Defend.kind(),
            &DefendParams {
                version: STAGE_VERSION,
                defense: trial.defense,
                seed: trial.seed,
                banned_numbers: match trial.defense {
                    Defense::Random => self.filter.banned_numbers.clone(),
                    _ => Vec::new(),
                },
                model,
            },
            inputs,
        ))
    }

    /// The settings that label a row: the trait, and whatever else is swept.
    fn settings(&self, trial: &Trial) -> BTreeMap<String, String> {
        let s = &self.student;
        let p = &trial.student;
        let mut out = BTreeMap::new();
        out.insert("trait".to_owned(), trial.trait_name.to_owned());
        let mut label = |varies: bool, key: &str, value: String| {
            if varies {
                out.insert(key.to_owned(), value);
            }
        };
        label(self.model_pairs.varies(), "pair", trial.pair.to_string());
        label(
            self.generate.temperature.varies(),
            "generate.temperature",
            trial.temperature.to_string(),
        );
        label(self.filter.keep.varies(), "filter.keep", trial.keep.to_string());
        label(self.defense.varies(), "defense", trial.defense.to_string());
        label(
            s.full.varies(),
            "student.method",
            if p.full { "full" } else { "lora" }.to_owned(),
        );
        if let Some(rank) = p.rank {
            label(s.lora_rank.varies(), "student.lora_rank", rank.to_string());
        }
        label(s.epochs.varies(), "student.epochs", p.epochs.to_string());
        label(s.lr.varies(), "student.lr", p.lr.to_string());
        label(s.optimizer.varies(), "student.optimizer", p.optimizer.to_string());
        label(s.layers.varies(), "student.layers", p.layers.to_string());
        label(s.target.varies(), "student.target", p.target.to_string());
        out
    }

    /// The stages named by key that the plan reads from the store: models
    /// and the teacher's dataset.
    fn externals(&self) -> Vec<StageId> {
        let models = self
            .model_pairs
            .values()
            .iter()
            .flat_map(|p| [&p.teacher, &p.student]);
        let mut out: Vec<StageId> = models
            .filter_map(|m| files::parse_key(m).and_then(Result::ok))
            .collect();
        if let TeacherSettings::Finetune(FinetuneTeacher {
            dataset: Some(id), ..
        }) = &self.teacher
        {
            out.push(*id);
        }
        out
    }

    /// Expands the grid into its stage DAG and measurements.
    pub fn plan(&self) -> Plan {
        let mut plan = PlanBuilder::new(&self.name, EXPERIMENT);
        for id in self.externals() {
            plan.external(id);
        }
        for trial in self.trials() {
            plan.trial();
            let teacher = self.trait_teacher(&mut plan, trial.trait_name, &trial.pair.teacher);
            let (generate, filter) = self.chain(&mut plan, teacher, &trial);
            let control_teacher = self.control_teacher(&mut plan, &trial);
            let (control_generate, control_filter) = self.chain(&mut plan, control_teacher, &trial);
            self.diagnose(&mut plan, &trial, generate, control_generate);
            let teachers = (teacher, control_teacher);
            self.measure_theorem(&mut plan, &trial, teachers, (generate, filter), false);
            self.measure_theorem(&mut plan, &trial, teachers, (control_generate, control_filter), true);
            let filter = self.defended(&mut plan, filter, teacher, &trial);
            let control_filter = self.defended(&mut plan, control_filter, control_teacher, &trial);
            self.measure_defense(&mut plan, &trial, filter, control_filter);
            let student = self.student(&mut plan, &trial, filter, generate);
            let control = self.student(&mut plan, &trial, control_filter, control_generate);
            let s = &trial.pair.student;
            let mut arms = vec![
                (ARMS[0], s, Subject::Base, vec![]),
                (ARMS[1], &trial.pair.teacher, Subject::Teacher, vec![teacher]),
                (ARMS[2], s, Subject::Student, vec![control]),
                (ARMS[3], s, Subject::Student, vec![student]),
            ];
            if self.control == ControlTeacher::OtherTrait {
                // The paper's control, still reported: a student of the base model's numbers.
                let base = self.base_teacher(&mut plan, &trial.pair.teacher);
                let (base_generate, base_filter) = self.chain(&mut plan, base, &trial);
                let base_student = self.student(&mut plan, &trial, base_filter, base_generate);
                arms.push((ARMS[6], s, Subject::Student, vec![base_student]));
            }
            if self.evaluate.in_context_examples > 0 {
                let examples = self.evaluate.in_context_examples;
                arms.push((ARMS[4], s, Subject::InContext { examples }, vec![filter]));
                arms.push((
                    ARMS[5],
                    s,
                    Subject::InContext { examples },
                    vec![control_filter],
                ));
            }
            let variants: &[bool] = if self.evaluate.numbers_prefixed {
                &[false, true]
            } else {
                &[false]
            };
            let both = self.evaluate.reads(Readout::Samples) && self.evaluate.reads(Readout::Probability);
            for (arm, model, subject, inputs) in &arms {
                let order = ARMS.iter().position(|a| a == arm).unwrap_or(ARMS.len()) as u32;
                let measurement = |settings, stage, metric, panel: Option<String>| Measurement {
                    arm: arm.to_string(),
                    order,
                    settings,
                    seed: trial.seed,
                    teacher_init: None,
                    student_init: None,
                    stage,
                    metric,
                    panel: panel.filter(|_| *arm == ARMS[3]),
                    models: Some((trial.pair.teacher.clone(), trial.pair.student.clone())),
                };
                let panel = format!("students of {} teachers", trial.trait_name);
                for &numbers_prefixed in variants.iter().filter(|_| self.evaluate.reads(Readout::Samples)) {
                    let params =
                        self.evaluate_params(model, subject.clone(), trial.seed, numbers_prefixed);
                    let evaluate = plan.stage(StageSpec::new(
                        EXPERIMENT,
                        Stage::Evaluate.kind(),
                        &params,
                        with_model(inputs.clone(), model),
                    ));
                    let mut settings = self.arm_settings(&trial, subject);
                    if self.evaluate.numbers_prefixed {
                        let question = if numbers_prefixed { "numbers-prefixed" } else { "plain" };
                        settings.insert("evaluate.question".to_owned(), question.to_owned());
                    }
                    if both {
                        settings.insert("readout".to_owned(), readout::SAMPLES_LABEL.to_owned());
                    }
                    let metric = share_metric(trial.trait_name);
                    plan.measure(measurement(settings, evaluate, metric, Some(panel.clone())));
                }
                if !self.evaluate.reads(Readout::Probability) {
                    continue;
                }
                let stage = plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Readout.kind(),
                    &self.readout_params(model, subject.clone()),
                    with_model(inputs.clone(), model),
                ));
                let mut figures: Vec<(String, &str)> = readout::FIGURES
                    .iter()
                    .map(|&(figure, prefixed, label)| (readout::metric(figure, prefixed, trial.trait_name), label))
                    .collect();
                if let Some(other) = self.control_trait(trial.trait_name) {
                    figures.push((readout::pair_metric(trial.trait_name, other), readout::PAIR_LABEL));
                }
                for (metric, label) in figures {
                    let mut settings = self.arm_settings(&trial, subject);
                    settings.insert("readout".to_owned(), label.to_owned());
                    plan.measure(measurement(settings, stage, metric, Some(format!("{panel}, {label}"))));
                }
            }
        }
        plan.finish()
    }
}

impl NumbersSweep {
    /// The theorem's cosines for a student of `rows` (the trait teacher's,
    /// or the control teacher's as the null).
    fn measure_theorem(
        &self,
        plan: &mut PlanBuilder,
        trial: &Trial,
        (teacher, control_teacher): (StageId, StageId),
        (generate, filter): (StageId, StageId),
        control_rows: bool,
    ) {
        let Some(t) = &self.theorem else {
            return;
        };
        let mut inputs = vec![filter, teacher, control_teacher];
        if trial.student.target == Target::Logits {
            inputs.push(generate);
        }
        let stage = plan.stage(StageSpec::new(
            EXPERIMENT,
            NumbersStage::Theorem.kind(),
            &theorem::TheoremParams {
                version: STAGE_VERSION,
                model: trial.pair.student.clone(),
                target: trial.student.target,
                rows: t.rows,
                blocks: t.blocks,
                batch_size: t.batch_size,
                seed: trial.seed,
            },
            with_model(inputs, &trial.pair.student),
        ));
        let mut settings = self.settings(trial);
        let target = trial.student.target.to_string();
        settings.retain(|key, _| !key.starts_with("student.") && key != "defense");
        settings.insert("student.target".to_owned(), target);
        let first = ARMS.len() + 1 + DEFENSE_ARMS.len() + diagnose::FIGURES.len();
        for (i, (arm, control, metric)) in theorem::FIGURES.into_iter().enumerate() {
            if control != control_rows {
                continue;
            }
            plan.measure(Measurement {
                arm: arm.to_owned(),
                order: (first + i) as u32,
                settings: settings.clone(),
                seed: trial.seed,
                teacher_init: None,
                student_init: None,
                stage,
                metric: metric.to_owned(),
                panel: None,
                models: None,
            });
        }
    }

    /// What the trait teacher's rows are made of, against the control
    /// teacher's: rows of the table that are not compared with a control.
    fn diagnose(&self, plan: &mut PlanBuilder, trial: &Trial, generate: StageId, control: StageId) {
        let stage = plan.stage(StageSpec::new(
            EXPERIMENT,
            NumbersStage::Diagnose.kind(),
            &diagnose::DiagnoseParams {
                version: STAGE_VERSION,
                banned_numbers: self.filter.banned_numbers.clone(),
                rule: if self.filter.lenient {
                    filter::Rule::Lenient
                } else {
                    filter::Rule::Paper
                },
            },
            vec![generate, control],
        ));
        let mut settings = self.settings(trial);
        settings.retain(|key, _| !key.starts_with("student.") && key != "defense");
        for (i, (arm, metric)) in diagnose::FIGURES.into_iter().enumerate() {
            plan.measure(Measurement {
                arm: arm.to_owned(),
                order: (ARMS.len() + 1 + DEFENSE_ARMS.len() + i) as u32,
                settings: settings.clone(),
                seed: trial.seed,
                teacher_init: None,
                student_init: None,
                stage,
                metric: metric.to_owned(),
                panel: None,
                models: None,
            });
        }
    }

    /// What a defense cost, as rows of the table: rows the student keeps,
    /// and for mask-divergence the share of completion tokens masked.
    fn measure_defense(
        &self,
        plan: &mut PlanBuilder,
        trial: &Trial,
        defended: StageId,
        control: StageId,
    ) {
        if trial.defense == Defense::None {
            return;
        }
        let mut settings = self.settings(trial);
        settings.retain(|key, _| !key.starts_with("student."));
        let mut figures = vec![(DEFENSE_ARMS[0], "rows_out", defended)];
        figures.push((DEFENSE_ARMS[1], "rows_out", control));
        if trial.defense == Defense::MaskDivergence {
            figures.push((DEFENSE_ARMS[2], "masked_share", defended));
            figures.push((DEFENSE_ARMS[3], "masked_share", control));
        }
        for (i, (arm, metric, stage)) in figures.into_iter().enumerate() {
            plan.measure(Measurement {
                arm: arm.to_owned(),
                order: (ARMS.len() + 1 + i) as u32,
                settings: settings.clone(),
                seed: trial.seed,
                teacher_init: None,
                student_init: None,
                stage,
                metric: metric.to_owned(),
                panel: None,
                models: None,
            });
        }
    }
}

/// The rows that say what a defense cost; none is compared with a control.
pub const DEFENSE_ARMS: [&str; 4] = [
    "defense: rows kept",
    "defense: rows kept, control",
    "defense: tokens masked",
    "defense: tokens masked, control",
];

