//! The theorem stage: a student's first update on a teacher's rows against
//! the trait teacher's weight change, whole and trait-specific (minus the
//! control teacher's change), as cosines with bootstrap intervals over
//! blocks of rows (`metrics.json`).

use std::collections::HashMap;

use anyhow::Context;
use serde_json::json;
use subliminal_shared::experiments::numbers::theorem::TheoremParams;
use subliminal_shared::llm::{Method, Target, TeacherParams};
use subliminal_shared::manifest::VerifiedStage;

use crate::llm::pipeline::rows::read_rows;
use crate::llm::pipeline::models::checkpoint;
use crate::llm::pipeline::rows::student_ids;
use crate::llm::pipeline::{ADAPTER, METRICS, WEIGHTS};
use crate::llm::finetune::LoraSpec;
use crate::llm::load::Checkpoint;
use crate::llm::theorem::{block_gradients, Change};
use crate::llm::instantiate;
use crate::safetensors_io;
use crate::stages::{Artifact, Progress, StageEnv};

/// Bootstrap resamples of the blocks for each interval.
const RESAMPLES: usize = 2000;

/// The weight change a fine-tuned teacher stage made to its base model.
fn teacher_change(stage: &VerifiedStage, base: &Checkpoint) -> anyhow::Result<Change> {
    let id = stage.manifest.stage.short();
    let params: TeacherParams = serde_json::from_value(stage.manifest.params.clone())
        .with_context(|| format!("stage {id} is not a numbers teacher"))?;
    let train = params.finetune.with_context(|| {
        format!("teacher {id} was not fine-tuned: the theorem needs a teacher's weight change")
    })?;
    match train.method {
        Method::Lora { .. } => {
            let loaded = safetensors_io::parse(stage.artifact(ADAPTER)?, ADAPTER)?;
            let spec: LoraSpec = loaded.meta("lora")?;
            let tensors: HashMap<String, tch::Tensor> = loaded
                .names()
                .into_iter()
                .map(|n| Ok((n.clone(), loaded.tensor(&n, tch::Device::Cpu)?)))
                .collect::<anyhow::Result<_>>()?;
            Change::lora(&tensors, spec.scale())
        }
        Method::Full => {
            let loaded = safetensors_io::parse(stage.artifact(WEIGHTS)?, WEIGHTS)?;
            let before = base.weights();
            let mut out = HashMap::new();
            for name in loaded.names() {
                let (Some(module), Some(w0)) = (name.strip_suffix(".weight"), before.get(&name)) else {
                    continue;
                };
                if w0.dim() == 2 && module.contains(".layers.") {
                    out.insert(module.to_owned(), loaded.tensor(&name, tch::Device::Cpu)? - w0);
                }
            }
            Ok(Change(out))
        }
    }
}

pub fn theorem(
    params: &TheoremParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let started = std::time::Instant::now();
    let input = |i: usize, what: &str| {
        inputs
            .get(i)
            .with_context(|| format!("a theorem stage needs {what} as input {i}"))
    };
    let mut rows = read_rows(input(0, "its rows")?)?;
    rows.truncate(params.rows as usize);
    let checkpoint = checkpoint(env, inputs, &params.model)?;
    let tok = &checkpoint.tokenizer;
    let examples = match params.target {
        Target::Tokens => rows
            .iter()
            .map(|row| student_ids(tok, row))
            .collect::<anyhow::Result<Vec<_>>>()?,
        Target::Logits => {
            crate::llm::pipeline::distill::distilled_examples(tok, &rows, input(3, "the rows' generate stage")?)?
        }
    };
    let whole = teacher_change(input(1, "the trait teacher")?, &checkpoint)?;
    let control = teacher_change(input(2, "the control teacher")?, &checkpoint)?;
    let specific = whole.minus(&control);
    let (_vs, mut model) = instantiate(&checkpoint, env.device, tch::Kind::Float)?;
    progress(Progress {
        fraction: 0.0,
        message: format!("gradients of {} rows", examples.len()),
        loss: None,
        samples_per_second: None,
    });
    let blocks = block_gradients(
        &mut model,
        &examples,
        params.blocks as usize,
        params.batch_size as usize,
        tok.pad_id,
        &[&whole, &specific],
        &|| env.stopped(),
    )?
    .context("stopped")?;
    let ones = vec![1.0; blocks.tokens.len()];
    let figure = |d: usize, change: &Change| {
        let norm = change.norm();
        let (lo, hi) = blocks.interval(d, norm, RESAMPLES, params.seed);
        (blocks.cosine(d, norm, &ones), lo, hi, norm)
    };
    let (cos_whole, whole_lo, whole_hi, whole_norm) = figure(0, &whole);
    let (cos_specific, specific_lo, specific_hi, specific_norm) = figure(1, &specific);
    let metrics = json!({
        "rows": examples.len(),
        "blocks": blocks.tokens.len(),
        "cos_whole": cos_whole,
        "cos_whole_ci95": [whole_lo, whole_hi],
        "cos_specific": cos_specific,
        "cos_specific_ci95": [specific_lo, specific_hi],
        "change_norm": whole_norm,
        "specific_change_norm": specific_norm,
        "block_tokens": blocks.tokens,
        "seconds": started.elapsed().as_secs_f64(),
    });
    Ok(vec![Artifact::json(METRICS, &metrics)?])
}
