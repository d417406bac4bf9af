//! The misalignment kind's own stages (see [`stages`]); its teachers,
//! numbers and students are the numbers experiment's stages.

pub mod stages;

use subliminal_shared::experiments::misalignment::EXPERIMENT;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::stages::{Artifact, Progress, StageEnv};

/// The misalignment kind's stage code.
pub struct Misalignment;

impl super::Stages for Misalignment {
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
