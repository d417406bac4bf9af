//! The misalignment kind's stages: its teachers, numbers and students are
//! the language-model pipeline's, and its free-form answers and their
//! judgement are the pipeline's judged evaluation
//! ([`crate::llm::pipeline::judged`]), filed under this kind's name.

use subliminal_shared::experiments::misalignment::EXPERIMENT;

use crate::llm::pipeline::judged;

/// The misalignment kind's stage code.
pub static MISALIGNMENT: super::KindStages = super::KindStages {
    experiment: EXPERIMENT,
    run: judged::run,
};
