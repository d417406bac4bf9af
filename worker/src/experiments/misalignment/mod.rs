//! The misalignment kind's stages: its teachers, numbers and students are
//! the language-model pipeline's, and its free-form answers and their
//! judgement are the pipeline's judged evaluation
//! ([`crate::llm::pipeline::judged`]), filed under this kind's name.

use subliminal_shared::experiments::misalignment::EXPERIMENT;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::llm::pipeline::judged;
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
        judged::run(spec, inputs, env, progress)
    }
}
