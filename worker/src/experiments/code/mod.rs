//! The code kind's own stages (see [`stages`]); its teachers, students and
//! evaluations are the language-model pipeline's stages.

pub mod stages;

use subliminal_shared::experiments::code::EXPERIMENT;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::stages::{Artifact, Progress, StageEnv};

/// The code kind's stage code.
pub struct Code;

impl super::Stages for Code {
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
