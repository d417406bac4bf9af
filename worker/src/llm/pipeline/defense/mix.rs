//! `mix`: this teacher's rows and the other teachers' filtered rows (the
//! stage's further filter inputs), in equal parts.

use serde_json::json;
use subliminal_shared::llm::dataset::{self, Row};
use subliminal_shared::llm::defense::{self, DefenseReport};
use subliminal_shared::llm::Stage;

use super::{ApplyDefense, Job};
use crate::llm::pipeline::rows::read_rows;
use crate::llm::pipeline::FILTERED;
use crate::stages::Artifact;

/// The `mix` defense.
pub(super) struct Mix;

impl ApplyDefense for Mix {
    fn apply(&self, job: &Job) -> anyhow::Result<(Vec<Artifact>, serde_json::Value)> {
        let rows = &job.rows;
        let mut parts = vec![rows.clone()];
        for other in job.inputs[1..]
            .iter()
            .filter(|s| s.manifest.kind == Stage::Filter.kind())
        {
            parts.push(read_rows(other)?);
        }
        anyhow::ensure!(
            parts.len() > 1,
            "mix needs other teachers' filtered rows among its inputs; it has none"
        );
        let mixed = defense::mix(&parts, rows.len(), job.params.seed);
        let key = |r: &Row| serde_json::to_string(r).unwrap_or_default();
        let own: std::collections::HashSet<String> = rows.iter().map(key).collect();
        let report = DefenseReport {
            defense: job.params.defense.to_string(),
            rows_in: rows.len(),
            rows_out: mixed.len(),
            rows_changed: mixed.iter().filter(|r| !own.contains(&key(r))).count(),
            rows_dropped: 0,
        };
        let mut metrics = serde_json::to_value(&report)?;
        metrics["teachers"] = json!(parts.len());
        Ok((
            vec![Artifact::new(FILTERED, dataset::to_jsonl(&mixed))],
            metrics,
        ))
    }
}
