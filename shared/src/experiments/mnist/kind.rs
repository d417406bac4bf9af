//! The MNIST experiment behind the [`Experiment`] seam: its queues, its
//! arms' controls and the labels of its transfer grid.

use crate::stage::Queue;
use crate::experiments::{Experiment, GridLabels};
use crate::stage::StageKind;

use super::*;

/// The MNIST experiment kind.
pub struct Mnist;

impl Experiment for Mnist {
    experiment_basics!();

    fn queue(&self, stage: &StageKind) -> Queue {
        match Stage::of(stage) {
            Some(Stage::Evaluate | Stage::Theorem | Stage::Defend) => Queue::Cpu,
            _ => Queue::Gpu,
        }
    }

    /// A same-init student is compared with the cross-init student of the
    /// same target and settings: transfer is what a shared init adds.
    fn control_of(&self, arm: &str) -> Option<&'static str> {
        match arm {
            "student same-init aux" => Some("student cross-init aux"),
            "student same-init all" => Some("student cross-init all"),
            _ => None,
        }
    }

    fn grid_labels(&self) -> GridLabels {
        GridLabels {
            figure: "student digit accuracy",
            family: "init",
        }
    }
}

checked_sweep!(MnistSweep);
