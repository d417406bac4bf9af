//! The filter and the defenses: the filter's rules and a seeded subsample,
//! then a defense applied to the rows a student would see.

use anyhow::Context;
use serde_json::json;
use subliminal_shared::llm::dataset::{self, Row};
use subliminal_shared::llm::defense::{self, Defense, DefenseReport, LossMask};
use subliminal_shared::llm::{DefendParams, FilterParams, Stage};
use subliminal_shared::manifest::VerifiedStage;

use super::models::load_teacher;
use super::models::{load_model, Loaded};
use super::rows::read_rows;
use super::rows::student_ids;
use super::*;
use crate::llm::divergence::divergent_tokens;
use crate::llm::tokenizer::Message;
use crate::stages::{Artifact, Progress, StageEnv};

pub(crate) fn filter(
    params: &FilterParams,
    generated: &VerifiedStage,
) -> anyhow::Result<Vec<Artifact>> {
    let text = String::from_utf8_lossy(generated.artifact(RAW)?);
    let rows = dataset::parse_jsonl(&text, RAW)?;
    let (kept, report) = dataset::filter_rows(
        &rows,
        params.rule,
        &params.banned_numbers,
        params.keep as usize,
        params.seed,
    );
    Ok(vec![
        Artifact::new(FILTERED, dataset::to_jsonl(&kept)),
        Artifact::json(REPORT, &serde_json::to_value(&report)?)?,
    ])
}

/// Applies a defense to the filtered rows of input 0.
pub(crate) fn defend(
    params: &DefendParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let filtered = inputs
        .first()
        .context("a defense needs the filtered rows as its first input")?;
    let rows = read_rows(filtered)?;
    let mut artifacts = Vec::new();
    let metrics = match params.defense {
        Defense::Canonical | Defense::Shuffle | Defense::Random => {
            let (out, report) =
                defense::transform(&rows, params.defense, &params.banned_numbers, params.seed)?;
            artifacts.push(Artifact::new(FILTERED, dataset::to_jsonl(&out)));
            serde_json::to_value(&report)?
        }
        Defense::Mix => {
            let mut parts = vec![rows.clone()];
            for other in inputs[1..]
                .iter()
                .filter(|s| s.manifest.kind == Stage::Filter.kind())
            {
                parts.push(read_rows(other)?);
            }
            anyhow::ensure!(
                parts.len() > 1,
                "mix needs other teachers' filtered rows among its inputs; it has none"
            );
            let mixed = defense::mix(&parts, rows.len(), params.seed);
            let key = |r: &Row| serde_json::to_string(r).unwrap_or_default();
            let own: std::collections::HashSet<String> = rows.iter().map(key).collect();
            let report = DefenseReport {
                defense: params.defense.to_string(),
                rows_in: rows.len(),
                rows_out: mixed.len(),
                rows_changed: mixed.iter().filter(|r| !own.contains(&key(r))).count(),
                rows_dropped: 0,
            };
            artifacts.push(Artifact::new(FILTERED, dataset::to_jsonl(&mixed)));
            let mut value = serde_json::to_value(&report)?;
            value["teachers"] = json!(parts.len());
            value
        }
        Defense::MaskDivergence => {
            let model = params
                .model
                .as_deref()
                .context("mask-divergence needs the base model to compare the teacher with")?;
            let teacher = inputs
                .get(1)
                .context("mask-divergence needs the teacher stage as its second input")?;
            let (teacher, system) = load_teacher(teacher, inputs, env)?;
            let base = load_model(env, inputs, model)?;
            let mask = divergence_mask(&teacher, system.as_deref(), &base, &rows, env, progress)?;
            let tokens: usize = mask.iter().map(Vec::len).sum();
            let masked: usize = mask.iter().map(|m| m.iter().filter(|&&b| b).count()).sum();
            artifacts.push(Artifact::new(FILTERED, dataset::to_jsonl(&rows)));
            artifacts.push(Artifact::json(
                MASK,
                &serde_json::to_value(LossMask {
                    tokenizer: model.to_owned(),
                    rows: mask,
                })?,
            )?);
            json!({
                "defense": params.defense.to_string(),
                "rows_in": rows.len(),
                "rows_out": rows.len(),
                "tokens": tokens,
                "masked_tokens": masked,
                "masked_share": masked as f64 / tokens.max(1) as f64,
            })
        }
        Defense::None | Defense::Paraphrase => {
            anyhow::bail!(
                "{} is not a defense a numbers stage applies",
                params.defense
            )
        }
    };
    artifacts.push(Artifact::json(METRICS, &metrics)?);
    Ok(artifacts)
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
