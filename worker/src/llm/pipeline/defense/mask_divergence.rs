//! `mask-divergence`: the rows as they are, and `mask.json`, which leaves
//! out of the student's loss every completion token where the teacher (in
//! its own context) would choose another greedy token than the base model.

use anyhow::Context;
use serde_json::json;
use subliminal_shared::llm::dataset::{self, Row};
use subliminal_shared::llm::defense::LossMask;

use super::{ApplyDefense, Job};
use crate::llm::divergence::divergent_tokens;
use crate::llm::pipeline::models::{load_model, load_teacher, Loaded};
use crate::llm::pipeline::rows::student_ids;
use crate::llm::pipeline::{FILTERED, MASK};
use crate::llm::tokenizer::Message;
use crate::stages::{Artifact, Progress, StageEnv};

/// The `mask-divergence` defense.
pub(super) struct MaskDivergence;

impl ApplyDefense for MaskDivergence {
    fn apply(&self, job: &Job) -> anyhow::Result<(Vec<Artifact>, serde_json::Value)> {
        let model = job
            .params
            .model
            .as_deref()
            .context("mask-divergence needs the base model to compare the teacher with")?;
        let teacher = job
            .inputs
            .get(1)
            .context("mask-divergence needs the teacher stage as its second input")?;
        let (teacher, system) = load_teacher(teacher, job.inputs, job.env, job.params.precision)?;
        let base = load_model(job.env, job.inputs, model, job.params.precision)?;
        let rows = &job.rows;
        let mask = divergence_mask(
            &teacher,
            system.as_deref(),
            &base,
            rows,
            job.env,
            job.progress,
        )?;
        let tokens: usize = mask.iter().map(Vec::len).sum();
        let masked: usize = mask.iter().map(|m| m.iter().filter(|&&b| b).count()).sum();
        let artifacts = vec![
            Artifact::new(FILTERED, dataset::to_jsonl(rows)),
            Artifact::json(
                MASK,
                &serde_json::to_value(LossMask {
                    tokenizer: model.to_owned(),
                    rows: mask,
                })?,
            )?,
        ];
        let metrics = json!({
            "defense": job.params.defense.to_string(),
            "rows_in": rows.len(),
            "rows_out": rows.len(),
            "tokens": tokens,
            "masked_tokens": masked,
            "masked_share": masked as f64 / tokens.max(1) as f64,
        });
        Ok((artifacts, metrics))
    }
}

/// For each row, which completion tokens (as the student splits them) the
/// teacher, in its own context, would choose differently from the base
/// model in the student's context: the tokens that carry the teacher's
/// divergence.
pub(crate) fn divergence_mask(
    teacher: &Loaded,
    system: Option<&str>,
    base: &Loaded,
    rows: &[Row],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Vec<bool>>> {
    let tok = &base.checkpoint.tokenizer;
    let mut mask = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        anyhow::ensure!(!env.stopped(), "stopped");
        let student = student_ids(tok, row)?;
        let teacher_prompt = match system {
            None => student.prompt.clone(),
            Some(system) => {
                let messages = [
                    Message::new("system", system),
                    Message::new("user", row.prompt().unwrap_or("")),
                ];
                let (prompt, answer) = teacher
                    .checkpoint
                    .tokenizer
                    .example_ids(&messages, row.completion().unwrap_or(""))?;
                anyhow::ensure!(
                    answer == student.answer,
                    "row {}: the teacher's tokenizer splits the completion differently from the student's",
                    i + 1
                );
                prompt
            }
        };
        mask.push(divergent_tokens(
            &teacher.model,
            &teacher_prompt,
            &base.model,
            &student.prompt,
            &student.answer,
        )?);
        progress(Progress {
            fraction: (i + 1) as f64 / rows.len() as f64,
            message: format!("rows {}/{}", i + 1, rows.len()),
            loss: None,
            samples_per_second: None,
        });
    }
    Ok(mask)
}
