//! Soft-label students: each kept row's completion as the teacher drew it,
//! token for token, with the teacher's top-k distribution at each
//! position, read from the generate stage's `soft.safetensors`.
//!
//! The student trains on the generated tokens rather than on the text
//! tokenised again, so each label sits at the position it was recorded
//! at, whatever the tokenizer would make of the text.

use anyhow::Context;
use subliminal_shared::chat::Row;
use subliminal_shared::manifest::VerifiedStage;

use crate::llm::finetune::{Example, SoftTargets};
use crate::llm::soft_labels::{SoftLabels, SoftRow, SOFT_LABELS};
use crate::llm::tokenizer::{ChatTokenizer, Message};

/// Each of `rows`' (a filter's kept rows, each with the seed of its
/// prompt) labels as `labelled` recorded them, checked against `tok`'s
/// vocabulary, and the labels' k.
pub(crate) fn row_labels(
    tok: &ChatTokenizer,
    rows: &[Row],
    labelled: &VerifiedStage,
) -> anyhow::Result<(usize, Vec<SoftRow>)> {
    let id = labelled.manifest.stage.short();
    let what = format!("{SOFT_LABELS} of stage {id}");
    let labels = SoftLabels::read_for_rows(
        labelled.artifact(SOFT_LABELS).with_context(|| {
            format!("stage {id} recorded no soft labels: is it a generate stage with soft_labels?")
        })?,
        &what,
        rows,
        "the rows",
    )?;
    let vocab = tok.vocab_size() as u32;
    let rows = labels.rows;
    for soft in &rows {
        anyhow::ensure!(
            soft.tokens.iter().chain(&soft.top_ids).all(|&t| t < vocab),
            "{what}: the row of seed {} names tokens beyond this tokenizer's {vocab}",
            soft.seed
        );
    }
    Ok((labels.k, rows))
}

/// A row's labels as a student learns them.
pub(crate) fn soft_targets(k: usize, labels: &SoftRow) -> SoftTargets {
    SoftTargets {
        k,
        ids: labels.top_ids.clone(),
        logprobs: labels.top_logprobs.clone(),
    }
}

/// The examples of `rows` with the labels `generated` recorded for them.
pub(crate) fn distilled_examples(
    tok: &ChatTokenizer,
    rows: &[Row],
    generated: &VerifiedStage,
) -> anyhow::Result<Vec<Example>> {
    let (k, labels) = row_labels(tok, rows, generated)?;
    rows.iter()
        .zip(&labels)
        .map(|(row, soft)| {
            let prompt = tok.prompt_ids(&[Message::new("user", row.prompt().unwrap_or(""))])?;
            Example::distilled(prompt, soft.tokens.clone(), soft_targets(k, soft))
        })
        .collect()
}
