//! The audit's own stages (see [`stages`] and [`report`]); its students and
//! their evaluations are the numbers experiment's stages. The artifacts
//! they hand each other are typed in [`artifacts`], which both read, so
//! the report does not depend on the stages.

pub mod artifacts;
pub mod report;
pub mod stages;

use subliminal_shared::experiments::audit::EXPERIMENT;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::stages::{Artifact, Progress, StageEnv};

/// The audit's stage code.
pub struct Audit;

impl super::Stages for Audit {
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
