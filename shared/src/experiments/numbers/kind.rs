//! The numbers experiment behind the [`Experiment`] seam: which queue each
//! stage waits in, how a `share:WORD` measurement is read from an
//! evaluation's answer counts, and the `filter numbers` command.

use crate::broker::Queue;
use crate::experiments::{CheckedSweep, Experiment, GridLabels, Reading, Tool};
use crate::plan::Plan;
use crate::spec::{Source, SpecError};
use crate::stage::StageKind;

use super::{command, parse, prompts, NumbersSweep, Stage, ARMS, EXPERIMENT, SHARE_PREFIX};

/// The numbers experiment kind.
pub struct Numbers;

impl Experiment for Numbers {
    fn name(&self) -> &'static str {
        EXPERIMENT
    }

    fn parse(&self, source: &Source) -> Result<Box<dyn CheckedSweep>, SpecError> {
        Ok(Box::new(parse(source)?))
    }

    fn queue(&self, stage: &StageKind) -> Queue {
        match Stage::of(stage) {
            Some(Stage::Filter | Stage::Evaluate) => Queue::Cpu,
            _ => Queue::Gpu,
        }
    }

    /// `share:WORD` is the share of recorded answers that name the word, out
    /// of every answer counted; any other metric is a number by its name.
    fn read_metric(&self, metrics: &serde_json::Value, metric: &str) -> Option<Reading> {
        let Some(word) = metric.strip_prefix(SHARE_PREFIX) else {
            return metrics.get(metric)?.as_f64().map(|value| Reading {
                value,
                samples: None,
            });
        };
        let samples = metrics.get("samples")?.as_f64()?;
        let answers = metrics.get("answers")?.as_object()?;
        let naming: f64 = answers
            .iter()
            .filter(|(answer, _)| prompts::names_target(answer, word))
            .filter_map(|(_, count)| count.as_f64())
            // Not `sum()`: it starts at -0.0, and a share of none would print as -0.000.
            .fold(0.0, |sum, count| sum + count);
        (samples > 0.0).then(|| Reading {
            value: naming / samples,
            samples: Some(samples as u64),
        })
    }

    fn control_arm(&self) -> Option<&'static str> {
        Some(ARMS[2])
    }

    fn grid_labels(&self) -> GridLabels {
        GridLabels {
            figure: "share of student answers naming the trait",
            family: "model",
        }
    }

    fn tools(&self) -> Vec<Tool> {
        vec![command::filter_tool()]
    }
}

impl CheckedSweep for NumbersSweep {
    fn name(&self) -> &str {
        &self.name
    }

    fn plan(&self) -> Plan {
        NumbersSweep::plan(self)
    }
}

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
