//! The parameters of the MNIST stages, as stored in each stage's spec.


use serde::{Deserialize, Serialize};


use super::*;

/// The paper's hidden width; stage parameters leave it out, so the paper's
/// stages keep their ids.
pub const PAPER_WIDTH: u64 = 256;

pub(super) fn is_paper_width(w: &u64) -> bool {
    *w == PAPER_WIDTH
}

pub(super) fn paper_width() -> u64 {
    PAPER_WIDTH
}

pub(super) fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Trains a teacher from an init seed on MNIST digits (the 10 digit logits only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherParams {
    pub version: u32,
    pub dataset: String,
    pub init: u64,
    pub seed: u64,
    pub aux_logits: u64,
    pub epochs: u64,
    pub lr: f64,
    pub batch_size: u64,
    pub train_samples: u64,
    #[serde(default = "paper_width", skip_serializing_if = "is_paper_width")]
    pub hidden: u64,
}

/// Draws noise images from a seed and records the teacher's logits on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateParams {
    pub version: u32,
    pub noise_seed: u64,
    pub noise_samples: u64,
}

/// A defense applied to a generated dataset's logits (input 0: the
/// dataset; input 1: its teacher, whose test accuracy under the same
/// defense is the defense's cost).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefendParams {
    pub version: u32,
    pub defense: LogitDefense,
    pub seed: u64,
}

/// Distils a teacher's logits on noise into a student from its own init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentParams {
    pub version: u32,
    pub init: u64,
    pub seed: u64,
    pub aux_logits: u64,
    pub target: Target,
    pub epochs: u64,
    pub lr: f64,
    pub batch_size: u64,
    #[serde(default = "paper_width", skip_serializing_if = "is_paper_width")]
    pub hidden: u64,
    /// ε of the init noise; 0 (left out) is the plain init.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub init_noise: f64,
}

/// The paper's theorem, measured: the student's first gradient step on the
/// distillation loss (its first batch, at its init) against the teacher's
/// whole update (trained weights minus the teacher's init). Inputs: the
/// teacher, the generated dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TheoremParams {
    pub version: u32,
    pub teacher_init: u64,
    /// The student's first step is taken as its student stage takes it.
    pub student: StudentParams,
}

/// Digit accuracy on the 10,000 test images: of the input stage's model, or of
/// an untrained model (`reference`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateParams {
    pub version: u32,
    pub dataset: String,
    pub reference: Option<ReferenceModel>,
}

/// An untrained model, evaluated as the chance baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceModel {
    pub init: u64,
    pub aux_logits: u64,
    #[serde(default = "paper_width", skip_serializing_if = "is_paper_width")]
    pub hidden: u64,
}
