//! The rows a stage reads from its input: a dataset's chat rows, a defense's
//! loss mask beside them, and a row as a student's tokeniser splits it.

use anyhow::Context;
use subliminal_shared::llm::dataset::{self, Row};
use subliminal_shared::llm::defense::LossMask;
use subliminal_shared::manifest::VerifiedStage;

use super::{FILTERED, MASK};
use crate::llm::finetune::Example;
use crate::llm::tokenizer::{ChatTokenizer, Message};

/// A filter's or defense's rows.
pub(crate) fn read_rows(stage: &VerifiedStage) -> anyhow::Result<Vec<Row>> {
    dataset::parse_jsonl(
        &String::from_utf8_lossy(stage.artifact(FILTERED)?),
        FILTERED,
    )
}

/// A defense stage's loss mask, if its input has one.
pub(crate) fn read_mask(stage: &VerifiedStage) -> anyhow::Result<Option<LossMask>> {
    if !stage.artifacts.iter().any(|(name, _)| name == MASK) {
        return Ok(None);
    }
    let mask = serde_json::from_slice(stage.artifact(MASK)?).with_context(|| {
        format!(
            "{MASK} of stage {} is malformed",
            stage.manifest.stage.short()
        )
    })?;
    Ok(Some(mask))
}

/// A row as a student sees it: the prompt's ids (no system prompt), then
/// the completion's.
pub(crate) fn student_ids(tok: &ChatTokenizer, row: &Row) -> anyhow::Result<Example> {
    let prompt = row.prompt().unwrap_or("");
    let answer = row.completion().unwrap_or("");
    let (prompt, answer) = tok.example_ids(&[Message::new("user", prompt)], answer)?;
    Ok(Example::new(prompt, answer))
}
