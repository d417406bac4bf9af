//! The numbers experiment's stages on the tch LLM (see [`stages`]).

pub(crate) mod distill;
pub mod readout;
pub mod stages;
mod theorem;

use subliminal_shared::experiments::numbers::EXPERIMENT;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::stages::{Artifact, Progress, StageEnv};

/// The numbers experiment's stage code.
pub struct Numbers;

impl super::Stages for Numbers {
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
}
