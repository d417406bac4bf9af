//! The audit behind the [`Experiment`] seam: which queue each stage waits
//! in, how its figures are read, and the `subliminal audit` command.

use crate::stage::Queue;
use crate::experiments::{Experiment, GridLabels, Reading, Tool};
use crate::stage::StageKind;

use super::{command, parse, AuditSweep, Stage, ARMS, EXPERIMENT};
use crate::llm::answers;

/// The audit experiment kind.
pub struct Audit;

impl Experiment for Audit {
    experiment_basics!();

    fn queue(&self, stage: &StageKind) -> Queue {
        match Stage::of(stage) {
            Some(Stage::Dataset | Stage::Matched | Stage::Report) => Queue::Cpu,
            _ => Queue::Gpu,
        }
    }

    /// The students' shares of answers and readout figures are the
    /// pipeline's ([`answers::read_metric`]); the screens' figures are
    /// numbers by name.
    fn read_metric(&self, metrics: &serde_json::Value, metric: &str) -> Option<Reading> {
        answers::read_metric(metrics, metric)
    }

    fn control_of(&self, arm: &str) -> Option<&'static str> {
        (arm == ARMS[3]).then_some(ARMS[2])
    }

    fn grid_labels(&self) -> GridLabels {
        GridLabels {
            figure: "student: log-odds of the target (or share naming it)",
            family: "model",
        }
    }

    fn tools(&self) -> Vec<Tool> {
        vec![command::audit_tool(), command::sanitize_tool()]
    }
}

checked_sweep!(AuditSweep);
