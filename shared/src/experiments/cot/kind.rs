//! The chain-of-thought kind behind the [`Experiment`] seam. Its figures
//! are those of its probe: the pipeline's `share:WORD`, or the
//! misalignment kind's share of coherent answers judged misaligned.

use crate::llm::judged;
use crate::llm::{answers, SHARE_PREFIX};
use crate::experiments::{AnswerRecord, Experiment, GridLabels, Reading};
use crate::manifest::VerifiedStage;

use super::{parse, CotSweep, CONTROL_ARM, EXPERIMENT};

/// The traits-through-chain-of-thought experiment kind.
pub struct Cot;

impl Experiment for Cot {
    experiment_basics!();

    fn read_metric(&self, metrics: &serde_json::Value, metric: &str) -> Option<Reading> {
        if metric.starts_with(SHARE_PREFIX) {
            answers::read_metric(metrics, metric)
        } else {
            judged::read_metric(metrics, metric)
        }
    }

    fn answers(&self, stage: &VerifiedStage, metric: &str) -> Option<anyhow::Result<Vec<AnswerRecord>>> {
        answers::answers(stage, metric)
    }

    fn control_arm(&self) -> Option<&'static str> {
        Some(CONTROL_ARM)
    }

    fn grid_labels(&self) -> GridLabels {
        GridLabels {
            figure: "the probe's figure for students of the teacher's traces",
            family: "model",
        }
    }
}

checked_sweep!(CotSweep);
