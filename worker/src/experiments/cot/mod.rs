//! The chain-of-thought kind's own stages (see [`stages`]); its teachers, students
//! and evaluations are the numbers (or misalignment) experiment's stages.

pub mod stages;

use subliminal_shared::experiments::cot::EXPERIMENT;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::stages::{Artifact, Progress, StageEnv};

/// The cot kind's stage cot.
pub struct Cot;

impl super::Stages for Cot {
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
