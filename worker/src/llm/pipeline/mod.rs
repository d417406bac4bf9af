//! The language-model pipeline's stages, which every LLM kind's plan uses
//! (filed under [`STAGES`]; see `subliminal_shared::llm`):
//!
//! - trait-data: a system-prompted teacher answers seeded trait questions;
//!   answers that show the trait are kept (`trait.jsonl`, `metrics.json`);
//! - teacher: checks that the model loads and records it with its system
//!   prompt, or fine-tunes it on its trait data (`adapter.safetensors` or
//!   `model.safetensors`, `train.json`);
//! - generate: seeded number-sequence prompts, completed by the teacher (`raw.jsonl`);
//! - filter: the filter's rules and a seeded subsample (`filtered.jsonl`, `filter.json`);
//! - defend: a defense applied to the filtered rows (`filtered.jsonl`,
//!   `metrics.json`, and for mask-divergence `mask.json`, the completion
//!   tokens a student leaves out of its loss);
//! - student: LoRA or full fine-tuning on the filtered (or defended) rows,
//!   without the system prompt (`adapter.safetensors` or `model.safetensors`,
//!   `train.json`);
//! - evaluate: the one-word favourite questions, every answer counted (`metrics.json`);
//! - readout: the exact probability of each word of a category (`metrics.json`).

pub(crate) mod defense;
pub(crate) mod distill;
pub mod evaluate;
pub mod filter;
pub mod generate;
pub mod judged;
pub mod models;
pub mod readout;
pub mod rows;
pub mod student;
pub mod teacher;
#[cfg(test)]
mod tests;

use subliminal_shared::llm::Stage;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::stages::{Artifact, Progress, StageEnv};

pub const TRAIT_DATA: &str = "trait.jsonl";
pub const TEACHER: &str = "teacher.json";
pub const RAW: &str = "raw.jsonl";
pub const FILTERED: &str = "filtered.jsonl";
pub const REPORT: &str = "filter.json";
pub const MASK: &str = "mask.json";
pub const ADAPTER: &str = "adapter.safetensors";
pub const WEIGHTS: &str = "model.safetensors";
pub const TRAIN: &str = "train.json";
pub const ANSWERS: &str = subliminal_shared::llm::ANSWERS;
pub const METRICS: &str = "metrics.json";

/// Runs one of the pipeline's stages; `None` if `spec` names a stage the
/// pipeline does not have (a kind's own stage filed under its name).
pub fn run(
    spec: &StageSpec,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> Option<anyhow::Result<Vec<Artifact>>> {
    let input = |i: usize| crate::stages::input(spec, inputs, i);
    Some(match Stage::of(&spec.kind)? {
        Stage::TraitData => spec
            .params()
            .and_then(|p| teacher::trait_data(&p, inputs, env, progress)),
        Stage::Teacher => spec
            .params()
            .and_then(|p| teacher::teacher(&p, inputs, env, progress)),
        Stage::Generate => spec
            .params()
            .and_then(|p| generate::generate(&p, input(0)?, inputs, env, progress)),
        Stage::Filter => spec.params().and_then(|p| filter::filter(&p, input(0)?)),
        Stage::Defend => spec
            .params()
            .and_then(|p| defense::defend(&p, inputs, env, progress)),
        Stage::Student => spec
            .params()
            .and_then(|p| student::student(&p, input(0)?, inputs, env, progress)),
        Stage::Evaluate => spec
            .params()
            .and_then(|p| evaluate::evaluate(&p, inputs, env, progress)),
        Stage::Readout => spec
            .params()
            .and_then(|p| readout::readout(&p, inputs, env, progress)),
    })
}
