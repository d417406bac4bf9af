//! The text transforms (canonical, shuffle, random): the shared crate's
//! rewrite of each completion, the very code `subliminal sanitize` runs.

use subliminal_shared::llm::dataset;
use subliminal_shared::llm::defense;

use super::{ApplyDefense, Job};
use crate::llm::pipeline::FILTERED;
use crate::stages::Artifact;

/// A text transform.
pub(super) struct Text;

impl ApplyDefense for Text {
    fn apply(&self, job: &Job) -> anyhow::Result<(Vec<Artifact>, serde_json::Value)> {
        let p = job.params;
        let (out, report) = defense::transform(&job.rows, p.defense, &p.banned_numbers, p.seed)?;
        Ok((
            vec![Artifact::new(FILTERED, dataset::to_jsonl(&out))],
            serde_json::to_value(&report)?,
        ))
    }
}
