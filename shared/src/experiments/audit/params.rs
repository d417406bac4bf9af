//! The parameters of the audit's own stages, as stored in each stage's
//! spec: what defines a stage's work, so its id.

use serde::{Deserialize, Serialize};

use crate::llm::{Precision, Readout};

use super::*;

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

/// Input 0's rows (a dataset stage's), sampled (seeded) to as many as
/// input 1 has when it has fewer, with their soft labels if input 0 has
/// them: a student of either trains the same number of steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedParams {
    pub version: u32,
    pub seed: u64,
    /// `Some(r)`: the r-th bootstrap draw instead: as many rows as the
    /// smaller input has, drawn from input 0 with replacement, so that
    /// students of different draws differ as students of different samples
    /// of the same data would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resample: Option<u64>,
}

/// The base model's own answers to the prompts of the input dataset stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlParams {
    pub version: u32,
    pub model: String,
    pub seed: u64,
    #[serde(flatten)]
    pub answers: ControlSettings,
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
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
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
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
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
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
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
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
    /// After the screens, with R = `replicates`: 2Rk + r is the dataset's
    /// student r's evaluation of `probes[k]`, and 2Rk + R + r the control's
    /// (tiers student and full).
    pub evaluations: bool,
    /// How the evaluations read the students.
    #[serde(default = "samples", skip_serializing_if = "is_samples")]
    pub readout: Readout,
    /// After the evaluations, the dataset's students and the control's, whose
    /// training losses the report shows.
    #[serde(default, skip_serializing_if = "is_false")]
    pub students: bool,
    /// The last input is the carriers stage (tier full).
    pub carriers: bool,
    /// Students per arm: the evaluations are then, per probe, the dataset's
    /// students' and then the control's, and the students the same.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replicates: u64,
    /// The datasets are soft labels, every tier reading them by forward KL.
    #[serde(default, skip_serializing_if = "is_false")]
    pub soft_labels: bool,
    /// The dataset's store key, for the report's heading.
    pub dataset: String,
    pub model: String,
}

pub(super) fn samples() -> Readout {
    Readout::Samples
}
pub(super) fn is_samples(r: &Readout) -> bool {
    *r == Readout::Samples
}
pub(super) fn is_false(b: &bool) -> bool {
    !*b
}
pub(super) fn is_true(b: &bool) -> bool {
    *b
}
pub(super) fn one() -> u64 {
    1
}
pub(super) fn is_one(n: &u64) -> bool {
    *n == 1
}
pub(super) fn yes() -> bool {
    true
}

