//! The numbers kind's settings tables as a sweep writes them: generation
//! (whose temperature may be an axis), the filter, the student's axes and
//! the evaluation, with their defaults.


use serde::{Deserialize, Serialize};

use crate::llm::{
    readout, Constrain, Layers, Optimizer,
    Readout, Target, PROJECTIONS,
};
use crate::spec::Axis;

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
    /// Never sample a token of probability below this (the most likely
    /// token always may be): public work's probability threshold.
    #[serde(default)]
    pub threshold: Option<f64>,
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
    pub(super) fn reads(&self, readout: Readout) -> bool {
        self.readout.contains(&readout)
    }
}

pub(super) fn d_readout() -> Vec<Readout> {
    vec![Readout::Samples]
}
pub(super) fn d_answer_prefix() -> String {
    readout::DEFAULT_ANSWER_PREFIX.to_owned()
}

pub(super) fn d_prompts() -> u64 {
    30_000
}
pub(super) fn d_one() -> f64 {
    1.0
}
pub(super) fn d_one_axis() -> Axis<f64> {
    Axis::single(1.0)
}
pub(super) fn d_gen_tokens() -> u64 {
    48
}
pub(super) fn d_gen_batch() -> u64 {
    64
}
pub(super) fn d_keep() -> Axis<u64> {
    Axis::single(10_000)
}
pub(super) fn d_alpha() -> f64 {
    8.0
}
pub(super) fn d_targets() -> Vec<String> {
    PROJECTIONS.map(str::to_owned).to_vec()
}
pub(super) fn d_warmup() -> u64 {
    5
}
pub(super) fn d_train_batch() -> u64 {
    8
}
pub(super) fn d_accumulation() -> u64 {
    1
}
pub(super) fn d_questions() -> u64 {
    50
}
pub(super) fn d_samples() -> u64 {
    20
}
pub(super) fn d_eval_tokens() -> u64 {
    8
}
pub(super) fn d_eval_batch() -> u64 {
    128
}
pub(super) fn d_in_context() -> u64 {
    32
}
