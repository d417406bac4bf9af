//! The numbers experiment's stages: the language-model pipeline's
//! ([`crate::llm::pipeline`]), and the two the numbers kind adds, the
//! diagnosis of the teachers' sequences and the theorem's cosines.

mod diagnose;
mod theorem;

use subliminal_shared::experiments::numbers::{NumbersStage, EXPERIMENT};
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::llm::pipeline;
use crate::stages::{Artifact, Progress, StageEnv};

/// The numbers experiment's stage code.
pub static NUMBERS: super::KindStages = super::KindStages {
    experiment: EXPERIMENT,
    run,
};

/// The pipeline's stages, then the kind's own.
fn run(
    spec: &StageSpec,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    if let Some(done) = pipeline::run(spec, inputs, env, progress) {
        return done;
    }
    let input = |i: usize| crate::stages::input(spec, inputs, i);
    match NumbersStage::of(&spec.kind).ok_or_else(|| super::unknown_stage(spec))? {
        NumbersStage::Diagnose => diagnose::diagnose(&spec.params()?, input(0)?, input(1)?),
        NumbersStage::Theorem => theorem::theorem(&spec.params()?, inputs, env, progress),
    }
}
