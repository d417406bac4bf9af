//! The code kind's own stages (see [`stages`]); its teachers, students and
//! evaluations are the language-model pipeline's stages.

pub mod stages;

use subliminal_shared::experiments::code::EXPERIMENT;

/// The code kind's stage code.
pub static CODE: super::KindStages = super::KindStages {
    experiment: EXPERIMENT,
    run: stages::run,
};
