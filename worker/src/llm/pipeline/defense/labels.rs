//! `label-top-p` and `label-threshold`: the rows of input 0 as they are,
//! and their soft labels (recorded by the generate stage among the inputs)
//! cut to each position's head by the shared crate's `cut_label`. The
//! stage writes the labels beside the rows, so the student reads them
//! from here rather than from the generate stage.

use anyhow::Context;
use serde_json::json;
use subliminal_shared::llm::dataset;
use subliminal_shared::llm::defense::{cut_label, Defense, LabelCut};

use super::{ApplyDefense, Job};
use crate::llm::pipeline::FILTERED;
use crate::llm::soft_labels::{SoftLabels, SOFT_LABELS};
use crate::stages::Artifact;

/// A label defense.
pub(super) struct Labels;

impl ApplyDefense for Labels {
    fn apply(&self, job: &Job) -> anyhow::Result<(Vec<Artifact>, serde_json::Value)> {
        let p = job.params;
        let at = p
            .cut
            .with_context(|| format!("{} needs its cut (DefendParams.cut)", p.defense))?;
        let cut = match p.defense {
            Defense::LabelTopP => LabelCut::TopP(at),
            Defense::LabelThreshold => LabelCut::Threshold(at),
            other => anyhow::bail!("{other} does not cut soft labels"),
        };
        let generated = job
            .inputs
            .iter()
            .find(|s| s.manifest.artifacts.iter().any(|a| a.name == SOFT_LABELS))
            .with_context(|| {
                format!("{} needs the generate stage that recorded the rows' soft labels among its inputs", p.defense)
            })?;
        let id = generated.manifest.stage.short();
        let what = format!("{SOFT_LABELS} of stage {id}");
        let SoftLabels { k, mut rows } = SoftLabels::read_for_rows(
            generated.artifact(SOFT_LABELS)?,
            &what,
            &job.rows,
            "the filtered rows",
        )?;
        let (mut positions, mut removed, mut kept_tokens) = (0usize, 0.0f64, 0usize);
        for row in &mut rows {
            for label in row.top_logprobs.chunks_mut(k) {
                removed += cut_label(label, cut);
                kept_tokens += label.iter().filter(|l| l.is_finite()).count();
                positions += 1;
            }
        }
        let cut_labels = SoftLabels { k, rows };
        let metrics = json!({
            "defense": p.defense.to_string(),
            "cut": at,
            "rows_in": job.rows.len(),
            "rows_out": job.rows.len(),
            "positions": positions,
            "label_mass_cut": removed / positions.max(1) as f64,
            "tokens_kept_per_position": kept_tokens as f64 / positions.max(1) as f64,
            "k": k,
        });
        Ok((
            vec![
                Artifact::new(FILTERED, dataset::to_jsonl(&job.rows)),
                Artifact::new(SOFT_LABELS, cut_labels.to_bytes()?),
            ],
            metrics,
        ))
    }
}
