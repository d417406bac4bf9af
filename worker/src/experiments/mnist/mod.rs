//! The MNIST auxiliary-logit experiment's stages: the IDX loader, the MLP,
//! the batched ensemble of K MLPs, and the stages (teacher, generate,
//! student, evaluate, theorem).

mod defense;
pub mod ensemble;
pub mod idx;
pub mod model;
pub mod stages;
mod theorem;
mod train;

use subliminal_shared::experiments::mnist::EXPERIMENT;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::stages::{Artifact, Progress, StageEnv};

/// A trained model's weights.
pub const MODEL: &str = "model.safetensors";
/// A generate (or defend) stage's logits, with the noise they were taken on.
pub const LOGITS: &str = "logits.safetensors";
pub const METRICS: &str = "metrics.json";

/// The MNIST experiment's stage code.
pub struct Mnist;

impl super::Stages for Mnist {
    fn experiment(&self) -> &'static str {
        EXPERIMENT
    }

    fn run(
        &self,
        spec: &StageSpec,
        inputs: &[VerifiedStage],
        env: &StageEnv,
        progress: &dyn Fn(Progress),
    ) -> anyhow::Result<Vec<Artifact>> {
        stages::run(spec, inputs, env, progress)
    }

    fn group_key(&self, spec: &StageSpec) -> Option<String> {
        stages::group_key(spec)
    }

    fn run_group(
        &self,
        group: &[(&StageSpec, &[VerifiedStage])],
        env: &StageEnv,
        progress: &dyn Fn(Progress),
    ) -> anyhow::Result<Vec<Vec<Artifact>>> {
        stages::run_group(group, env, progress)
    }
}
