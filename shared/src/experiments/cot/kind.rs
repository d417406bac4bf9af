//! The chain-of-thought kind behind the [`Experiment`] seam. Its figures
//! are those of its probe: the pipeline's `share:WORD`, or the
//! misalignment kind's share of coherent answers judged misaligned.

use crate::stage::Queue;
use crate::llm::judged;
use crate::llm::{answers, SHARE_PREFIX};
use crate::experiments::{AnswerRecord, CheckedSweep, Experiment, GridLabels, Reading};
use crate::manifest::VerifiedStage;
use crate::plan::Plan;
use crate::spec::{Source, SpecError};
use crate::stage::StageKind;

use super::{parse, CotSweep, CONTROL_ARM, EXPERIMENT};

/// The traits-through-chain-of-thought experiment kind.
pub struct Cot;

impl Experiment for Cot {
    fn name(&self) -> &'static str {
        EXPERIMENT
    }

    fn parse(&self, source: &Source) -> Result<Box<dyn CheckedSweep>, SpecError> {
        Ok(Box::new(parse(source)?))
    }

    /// Both stages run a model (the filter runs its judge).
    fn queue(&self, _stage: &StageKind) -> Queue {
        Queue::Gpu
    }

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

impl CheckedSweep for CotSweep {
    fn name(&self) -> &str {
        &self.name
    }

    fn plan(&self) -> Plan {
        CotSweep::plan(self)
    }
}
