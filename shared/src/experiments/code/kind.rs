//! The code kind behind the [`Experiment`] seam: its queues, and its
//! figures, which are the pipeline's evaluations' (`share:WORD` of an
//! evaluation's answers), read the same way.

use crate::llm::answers;
use crate::experiments::{AnswerRecord, Experiment, GridLabels, Reading};
use crate::manifest::VerifiedStage;

use super::{parse, CodeSweep, CONTROL_ARM, EXPERIMENT};

/// The traits-through-code experiment kind.
pub struct Code;

impl Experiment for Code {
    experiment_basics!();

    fn read_metric(&self, metrics: &serde_json::Value, metric: &str) -> Option<Reading> {
        answers::read_metric(metrics, metric)
    }

    fn answers(&self, stage: &VerifiedStage, metric: &str) -> Option<anyhow::Result<Vec<AnswerRecord>>> {
        answers::answers(stage, metric)
    }

    fn control_arm(&self) -> Option<&'static str> {
        Some(CONTROL_ARM)
    }

    fn grid_labels(&self) -> GridLabels {
        GridLabels {
            figure: "share of student answers naming the trait",
            family: "model",
        }
    }
}

checked_sweep!(CodeSweep);
