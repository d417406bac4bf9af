//! The parameters of the pipeline's stages, as stored in each stage's spec:
//! whatever defines a stage's work is here, since its id is derived from them.

use serde::{Deserialize, Serialize};

use super::defense::Defense;
use super::distill::{SoftLabelParams, Target};
use super::filter;
use super::settings::{is_false, Layers, Method, NumbersGrammar, Optimizer, Precision};

/// The teacher: a base model with the trait's system prompt, the base model
/// fine-tuned on its input trait-data stage's rows, or (the control) the
/// base model as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherParams {
    pub version: u32,
    pub model: String,
    pub system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<TrainParams>,
}

/// A system-prompted teacher's answers to seeded trait questions, kept
/// where they show the trait: the data a fine-tuned teacher learns from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitDataParams {
    pub version: u32,
    pub model: String,
    pub system_prompt: String,
    pub target: String,
    pub category: String,
    pub seed: u64,
    pub questions: u64,
    pub temperature: f64,
    pub max_new_tokens: u64,
    pub batch_size: u64,
    /// The dtype the stage runs its model in (f32 when absent).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// N seeded number-sequence prompts, completed by the teacher; temperature 0 is greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateParams {
    pub version: u32,
    pub seed: u64,
    pub prompts: u64,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: u64,
    pub batch_size: u64,
    /// Tokens of probability below it are never sampled; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Sampling limited to completions the filter keeps; absent: any token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constrain: Option<NumbersGrammar>,
    /// Also record the teacher's distribution for soft-label students.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_labels: Option<SoftLabelParams>,
    /// The dtype the stage runs its model in (f32 when absent).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// The filter's rules, then a seeded subsample of `keep` rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterParams {
    pub version: u32,
    pub seed: u64,
    pub keep: u64,
    pub banned_numbers: Vec<u32>,
    #[serde(default, skip_serializing_if = "filter::Rule::is_paper")]
    pub rule: filter::Rule,
}

/// A defense applied to a filtered dataset (input 0). `mix` takes the
/// other teachers' filtered datasets as further inputs; `mask-divergence`
/// takes the teacher stage (input 1) and runs it against its base `model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefendParams {
    pub version: u32,
    pub defense: Defense,
    pub seed: u64,
    /// Numbers `random` never draws (the filter's banned list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub banned_numbers: Vec<u32>,
    /// The base model `mask-divergence` compares the teacher with, or the
    /// model `paraphrase` rewrites prompts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Where a label defense cuts: `label-top-p`'s p, `label-threshold`'s
    /// threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<f64>,
    /// The dtype the stage runs its model in (f32 when absent).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// Fine-tunes a model on its input's rows, without a system prompt: a
/// student on filtered numbers, or a teacher on trait data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
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
    #[serde(default, skip_serializing_if = "Optimizer::is_adamw")]
    pub optimizer: Optimizer,
    #[serde(default, skip_serializing_if = "Layers::is_all")]
    pub layers: Layers,
    /// Tokens (cross-entropy) or the teacher's soft labels (forward KL),
    /// which a `logits` student reads from its input 1, the generate stage.
    #[serde(default, skip_serializing_if = "Target::is_tokens")]
    pub target: Target,
    /// The dtype the stage runs its model in (f32 when absent).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// What an evaluation asks the questions of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "arm")]
pub enum Subject {
    /// The base model as it is.
    Base,
    /// The input teacher stage: the base model with its system prompt, or fine-tuned.
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
    /// Each question follows a seeded run of numbers (the paper's variant).
    #[serde(default, skip_serializing_if = "is_false")]
    pub numbers_prefixed: bool,
    /// The dtype the stage runs its model in (f32 when absent).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// Seeded prompts of another kind (code tasks, word problems) completed by
/// the teacher stage of input 0: the generate stage of the kinds built on
/// this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeededPromptsParams {
    pub version: u32,
    pub seed: u64,
    pub prompts: u64,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: u64,
    pub batch_size: u64,
    /// The dtype the stage runs its model in (f32 when absent).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}
