//! Reading an evaluation's answers: `share:WORD` figures from its answer
//! counts, probability-readout figures, and each recorded answer with its
//! question, for any kind whose figures are the pipeline's evaluations.

use anyhow::Context;

use super::{prompts, readout, EvaluateParams, ANSWERS, SHARE_PREFIX};
use crate::experiments::{number_metric, AnswerRecord, Reading};
use crate::manifest::VerifiedStage;

/// `share:WORD` is the share of recorded answers that name the word, out
/// of every answer counted; `logodds:WORD`, `p:WORD` (and their `-plain`
/// variants) are a probability readout's means over questions; any other
/// metric is a number by its name.
pub fn read_metric(metrics: &serde_json::Value, metric: &str) -> Option<Reading> {
    let Some(word) = metric.strip_prefix(SHARE_PREFIX) else {
        return readout::read(metrics, metric).or_else(|| number_metric(metrics, metric));
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
        items: None,
        value: naming / samples,
        samples: Some(samples as u64),
    })
}

/// Each line of an evaluation's `answers.jsonl`, with the question's text
/// and whether the answer names the `share:WORD` metric's word; `None` for
/// any other metric.
pub fn answers(stage: &VerifiedStage, metric: &str) -> Option<anyhow::Result<Vec<AnswerRecord>>> {
    let word = metric.strip_prefix(SHARE_PREFIX)?;
    Some(read_answers(stage, word))
}

/// One line of `answers.jsonl`.
#[derive(serde::Deserialize)]
struct AnswerLine {
    question: u64,
    answer: String,
}

fn read_answers(stage: &VerifiedStage, word: &str) -> anyhow::Result<Vec<AnswerRecord>> {
    let id = stage.manifest.stage.short();
    let params: EvaluateParams = serde_json::from_value(stage.manifest.params.clone())
        .with_context(|| {
            format!("stage {id} is not an evaluation of the language-model pipeline")
        })?;
    let text = std::str::from_utf8(stage.artifact(ANSWERS)?)
        .with_context(|| format!("{ANSWERS} of stage {id} is not UTF-8"))?;
    let mut samples_so_far = std::collections::HashMap::new();
    let mut records = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: AnswerLine = serde_json::from_str(line)
            .with_context(|| format!("{ANSWERS} of stage {id}, line {}", n + 1))?;
        let sample = samples_so_far.entry(row.question).or_insert(0u64);
        records.push(AnswerRecord {
            question_index: row.question,
            question: prompts::question(row.question as usize, &params.category),
            sample: *sample,
            matched: prompts::names_target(&row.answer, word),
            answer: row.answer,
        });
        *sample += 1;
    }
    Ok(records)
}
