//! The misalignment kind behind the [`Experiment`] seam: its queues, and how
//! the figure is read from a judge stage's counts (a share of the coherent
//! answers, with their number, so results give it an interval and a test).

use crate::experiments::{Experiment, GridLabels, Reading};
use crate::llm::judged;

use super::{parse, MisalignmentSweep, CONTROL_ARM, EXPERIMENT};

/// The misalignment-through-numbers experiment kind.
pub struct Misalignment;

impl Experiment for Misalignment {
    experiment_basics!();

    /// The judged evaluation's figure ([`judged::read_metric`]).
    fn read_metric(&self, metrics: &serde_json::Value, metric: &str) -> Option<Reading> {
        judged::read_metric(metrics, metric)
    }

    fn control_arm(&self) -> Option<&'static str> {
        Some(CONTROL_ARM)
    }

    /// Students are compared with the student of the base model's numbers;
    /// the base model and the teachers are shown, not tested.
    fn control_of(&self, arm: &str) -> Option<&'static str> {
        (arm.starts_with("student of ") && arm != CONTROL_ARM).then_some(CONTROL_ARM)
    }

    fn grid_labels(&self) -> GridLabels {
        GridLabels {
            figure: "share of coherent student answers judged misaligned",
            family: "model",
        }
    }
}

checked_sweep!(MisalignmentSweep);
