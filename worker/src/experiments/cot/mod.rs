//! The chain-of-thought kind's own stages (see [`stages`]); its teachers, students
//! and evaluations are the language-model pipeline's (its misalignment probe the judged
//! evaluation).

pub mod stages;

use subliminal_shared::experiments::cot::EXPERIMENT;

/// The chain-of-thought kind's stage code.
pub static COT: super::KindStages = super::KindStages {
    experiment: EXPERIMENT,
    run: stages::run,
};
