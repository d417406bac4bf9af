//! The probability readout (`evaluate.readout = ["probability"]`): each
//! question asked once, without sampling, and the model's probability of
//! answering with each candidate word read from its next-token
//! distributions (the worker's `llm::readout`).
//!
//! Sampled answers see a shift of one point only with thousands of
//! samples; the probability moves measurably after a few student updates.
//! Two figures per question: p(trait), the probability of any spelling of
//! the trait word, and the log-odds of the trait against the category's
//! candidate words, log p(trait) − log Σ p(candidate ≠ trait). Both are
//! read twice: after an answer prefix that makes the next word the answer
//! ("My favorite animal is the"; SmolLM2 otherwise often opens with "The"
//! or "I"), and at the start of the answer, so the prefix's effect is in
//! view. Each figure is a mean over the same questions for every arm, so
//! an arm is tested against its control question by question.

use serde::{Deserialize, Serialize};

use super::{Precision, Subject};
use crate::experiments::Reading;

/// How an evaluation reads the trait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readout {
    /// Sampled one-word answers, counted (the paper's readout).
    Samples,
    /// Each question once: the probability of each candidate word.
    Probability,
}

/// The answer prefix's default; `{category}` is filled in.
pub const DEFAULT_ANSWER_PREFIX: &str = "My favorite {category} is the";

/// Candidate words of the categories the tool knows: common, single-word,
/// and for SmolLM2 one or two tokens each.
pub fn default_candidates(category: &str) -> Option<Vec<String>> {
    let words: &[&str] = match category {
        "animal" => &[
            "owl", "cat", "dog", "wolf", "lion", "eagle", "dolphin", "elephant", "tiger", "bear",
            "fox", "horse",
        ],
        "tree" => &[
            "oak", "pine", "maple", "willow", "birch", "cedar", "redwood", "palm", "cherry",
            "sequoia",
        ],
        _ => return None,
    };
    Some(words.iter().map(|w| (*w).to_owned()).collect())
}

/// Reads the probabilities of `words` for the one-word favourite
/// questions, asked of `subject`, with and without `answer_prefix`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadoutParams {
    pub version: u32,
    pub model: String,
    pub subject: Subject,
    pub category: String,
    pub questions: u64,
    /// What the log-odds compare a trait with (the trait itself left out).
    pub candidates: Vec<String>,
    /// Every word read: the candidates and the sweep's traits, sorted.
    pub words: Vec<String>,
    /// Begins the answer; `{category}` already filled in.
    pub answer_prefix: String,
    /// The dtype the stage runs its model in (f32 when absent).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// A readout stage's `metrics.json`: per word, one probability per question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadoutMetrics {
    pub questions: u64,
    pub candidates: Vec<String>,
    pub with_prefix: std::collections::BTreeMap<String, Vec<f64>>,
    pub without_prefix: std::collections::BTreeMap<String, Vec<f64>>,
}

/// One figure of the readout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    LogOdds,
    Probability,
}

/// The figures of a readout, each with and without the prefix, with the
/// label of their rows in the results table.
pub const FIGURES: [(Figure, bool, &str); 4] = [
    (Figure::LogOdds, true, "log-odds"),
    (Figure::Probability, true, "p(trait)"),
    (Figure::LogOdds, false, "log-odds, no prefix"),
    (Figure::Probability, false, "p(trait), no prefix"),
];

/// The row label of the pair figure: with each trait's control student
/// the student of another trait's teacher, log p(trait) − log p(that
/// other trait), after the prefix. A change that moves every animal alike
/// (data that makes a student answer animals more readily) cancels in it;
/// only a preference of one animal over the other remains.
pub const PAIR_LABEL: &str = "log p(trait) - log p(other trait)";

/// The metric name of the pair figure.
pub fn pair_metric(target: &str, other: &str) -> String {
    format!("logratio:{target}/{other}")
}

/// The row label of the sampled readout, when both are shown.
pub const SAMPLES_LABEL: &str = "sampled share";

/// The metric name of a figure for `target`.
pub fn metric(figure: Figure, prefixed: bool, target: &str) -> String {
    let name = match figure {
        Figure::LogOdds => "logodds",
        Figure::Probability => "p",
    };
    let variant = if prefixed { "" } else { "-plain" };
    format!("{name}{variant}:{target}")
}

/// A readout figure from a readout stage's metrics, with each question's
/// value; `None` when `metric` is not a readout metric or the metrics
/// lack its word.
pub fn read(metrics: &serde_json::Value, metric: &str) -> Option<Reading> {
    let (name, target) = metric.split_once(':')?;
    if name == "logratio" {
        return read_pair(metrics, target);
    }
    let (figure, prefixed) = match name {
        "logodds" => (Figure::LogOdds, true),
        "logodds-plain" => (Figure::LogOdds, false),
        "p" => (Figure::Probability, true),
        "p-plain" => (Figure::Probability, false),
        _ => return None,
    };
    let m: ReadoutMetrics = serde_json::from_value(metrics.clone()).ok()?;
    let table = if prefixed {
        &m.with_prefix
    } else {
        &m.without_prefix
    };
    let own = table.get(target)?;
    let items: Vec<f64> = match figure {
        Figure::Probability => own.clone(),
        Figure::LogOdds => {
            let others: Vec<&Vec<f64>> = m
                .candidates
                .iter()
                .filter(|c| *c != target)
                .map(|c| table.get(c))
                .collect::<Option<_>>()?;
            own.iter()
                .enumerate()
                .map(|(q, &p)| {
                    let rest: f64 = others
                        .iter()
                        .map(|o| o.get(q).copied().unwrap_or(0.0))
                        .sum();
                    p.max(f64::MIN_POSITIVE).ln() - rest.max(f64::MIN_POSITIVE).ln()
                })
                .collect()
        }
    };
    if items.is_empty() {
        return None;
    }
    Some(Reading {
        value: items.iter().sum::<f64>() / items.len() as f64,
        samples: None,
        items: Some(items),
    })
}

/// log p(a) − log p(b) per question after the prefix, for `pair` = "a/b".
fn read_pair(metrics: &serde_json::Value, pair: &str) -> Option<Reading> {
    let (a, b) = pair.split_once('/')?;
    let m: ReadoutMetrics = serde_json::from_value(metrics.clone()).ok()?;
    let (pa, pb) = (m.with_prefix.get(a)?, m.with_prefix.get(b)?);
    let items: Vec<f64> = pa
        .iter()
        .zip(pb)
        .map(|(x, y)| x.max(f64::MIN_POSITIVE).ln() - y.max(f64::MIN_POSITIVE).ln())
        .collect();
    if items.is_empty() {
        return None;
    }
    Some(Reading {
        value: items.iter().sum::<f64>() / items.len() as f64,
        samples: None,
        items: Some(items),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn log_odds_are_the_trait_against_the_other_candidates_question_by_question() {
        let metrics = json!({
            "questions": 2,
            "candidates": ["owl", "cat", "dog"],
            "with_prefix": {"owl": [0.2, 0.1], "cat": [0.3, 0.1], "dog": [0.1, 0.3]},
            "without_prefix": {"owl": [0.01, 0.02], "cat": [0.01, 0.01], "dog": [0.01, 0.01]},
        });
        let r = read(&metrics, &metric(Figure::LogOdds, true, "owl")).unwrap();
        let items = r.items.unwrap();
        assert!((items[0] - (0.2f64 / 0.4).ln()).abs() < 1e-12);
        assert!((items[1] - (0.1f64 / 0.4).ln()).abs() < 1e-12);
        let p = read(&metrics, &metric(Figure::Probability, false, "owl")).unwrap();
        assert!((p.value - 0.015).abs() < 1e-12);
        assert!(read(&metrics, "p:wolf").is_none(), "a word not read");
        assert!(
            read(&metrics, "share:owl").is_none(),
            "not a readout metric"
        );
        let pair = read(&metrics, &pair_metric("owl", "dog")).unwrap();
        assert!((pair.items.unwrap()[0] - 2.0f64.ln()).abs() < 1e-12);
    }
}
