//! The numbers experiment behind the [`Experiment`] seam: which queue each
//! stage waits in, how a `share:WORD` measurement is read from an
//! evaluation's answer counts, and the `filter numbers` command.

use crate::stage::Queue;

use crate::experiments::{
    AnswerRecord, Experiment, GridLabels, Reading, Tool,
};
use crate::manifest::VerifiedStage;
use crate::stage::StageKind;

use super::{
    command, diagnose, parse, theorem, NumbersStage, NumbersSweep, ARMS, DEFENSE_ARMS, EXPERIMENT,
};
use crate::llm::{answers, Stage};

/// The numbers experiment kind.
pub struct Numbers;

impl Experiment for Numbers {
    experiment_basics!();

    fn queue(&self, stage: &StageKind) -> Queue {
        match (Stage::of(stage), NumbersStage::of(stage)) {
            (Some(pipeline), _) => pipeline.queue(),
            (None, Some(NumbersStage::Diagnose)) => Queue::Cpu,
            (None, _) => Queue::Gpu,
        }
    }

    /// The pipeline's evaluation figures ([`answers::read_metric`]).
    fn read_metric(&self, metrics: &serde_json::Value, metric: &str) -> Option<Reading> {
        answers::read_metric(metrics, metric)
    }

    fn answers(&self, stage: &VerifiedStage, metric: &str) -> Option<anyhow::Result<Vec<AnswerRecord>>> {
        answers::answers(stage, metric)
    }

    fn control_arm(&self) -> Option<&'static str> {
        Some(ARMS[2])
    }

    /// The in-context arm is compared with the base model shown the control
    /// teacher's rows: what numbers in context do, whoever wrote them, is
    /// not the trait's doing.
    fn control_of(&self, arm: &str) -> Option<&'static str> {
        match arm {
            a if a == ARMS[2] || a == ARMS[5] || DEFENSE_ARMS.contains(&a) => None,
            a if diagnose::FIGURES.iter().any(|(arm, _)| *arm == a) => None,
            a if theorem::FIGURES.iter().any(|(arm, _, _)| *arm == a) => None,
            a if a == ARMS[4] => Some(ARMS[5]),
            _ => Some(ARMS[2]),
        }
    }

    fn grid_labels(&self) -> GridLabels {
        GridLabels {
            figure: "share of student answers naming the trait",
            family: "model",
        }
    }

    fn tools(&self) -> Vec<Tool> {
        vec![command::filter_tool(), command::sanitize_tool()]
    }
}

checked_sweep!(NumbersSweep);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_share_counts_every_answer_that_names_the_word() {
        let metrics = json!({"samples": 8, "answers": {"owl": 3, "owls": 1, "cat": 4}});
        let share = Numbers.read_metric(&metrics, "share:owl").unwrap();
        assert_eq!(share.value, 0.5);
        assert_eq!(share.samples, Some(8));
        assert_eq!(
            Numbers.read_metric(&json!({"loss": 1.5}), "loss").unwrap().value,
            1.5
        );
        assert!(Numbers
            .read_metric(&json!({"samples": 0, "answers": {}}), "share:owl")
            .is_none());
    }
}

