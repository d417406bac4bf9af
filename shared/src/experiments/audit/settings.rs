//! The audit's settings tables as a sweep writes them (screen, likelihood,
//! control, student, evaluate, carriers), with their defaults.

use serde::{Deserialize, Serialize};

use crate::llm::readout::{self, Figure};
use crate::llm::{self, Readout};


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
    /// Students per arm. With 1, one student per arm and the test is paired
    /// over the probe's questions: it sees the readout's noise but not how
    /// much two students on different clean rows differ, which is as large
    /// as a real shift of a few hundredths. With 2 or more, each student
    /// trains on its own bootstrap draw of its arm's rows (and its own
    /// seed), and the test is over students (see [`crate::stats::replicate_t`]).
    #[serde(default = "d_replicates")]
    pub replicates: u64,
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

pub(super) fn d_readout() -> Readout {
    Readout::Probability
}
pub(super) fn d_answer_prefix() -> String {
    readout::DEFAULT_ANSWER_PREFIX.to_owned()
}
pub(super) fn d_system_prompt() -> String {
    llm::prompts::SYSTEM_PROMPT.to_owned()
}
pub(super) fn d_likelihood_batch() -> u64 {
    16
}
pub(super) fn d_max_rows() -> u64 {
    1000
}
pub(super) fn d_probe_questions() -> u64 {
    10
}
pub(super) fn d_rank() -> u64 {
    8
}
pub(super) fn d_student_rank() -> u64 {
    16
}
pub(super) fn d_resamples() -> u64 {
    2000
}
pub(super) fn d_temperature() -> f64 {
    1.0
}
pub(super) fn d_one() -> f64 {
    1.0
}
pub(super) fn d_control_tokens() -> u64 {
    48
}
pub(super) fn d_batch() -> u64 {
    32
}
pub(super) fn d_none() -> String {
    "none".to_owned()
}
pub(super) fn d_attempts() -> u64 {
    8
}
pub(super) fn d_alpha() -> f64 {
    32.0
}
pub(super) fn d_epochs() -> u64 {
    3
}
pub(super) fn d_lr() -> f64 {
    1e-3
}
pub(super) fn d_train_batch() -> u64 {
    8
}
pub(super) fn d_replicates() -> u64 {
    3
}
pub(super) fn d_warmup() -> u64 {
    5
}
pub(super) fn d_questions() -> u64 {
    50
}
pub(super) fn d_samples() -> u64 {
    10
}
pub(super) fn d_eval_tokens() -> u64 {
    8
}
pub(super) fn d_eval_batch() -> u64 {
    100
}
pub(super) fn d_top() -> u64 {
    20
}
pub(super) fn d_replace_share() -> f64 {
    0.05
}


