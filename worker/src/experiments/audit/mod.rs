//! The audit's own stages (see [`stages`] and [`report`]); its students and
//! their evaluations are the language-model pipeline's stages. The artifacts
//! they hand each other are typed in [`artifacts`], which both read, so
//! the report does not depend on the stages.

pub mod artifacts;
pub mod report;
pub mod stages;

use subliminal_shared::experiments::audit::EXPERIMENT;

/// The audit's stage code.
pub static AUDIT: super::KindStages = super::KindStages {
    experiment: EXPERIMENT,
    run: stages::run,
};
