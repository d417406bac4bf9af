//! The student: LoRA or full fine-tuning on filtered (or defended) rows,
//! without the system prompt, by cross-entropy on the tokens or forward KL
//! on the teacher's soft labels.

use std::sync::Arc;

use anyhow::Context;
use subliminal_shared::llm::dataset::Row;
use subliminal_shared::llm::defense::LossMask;
use subliminal_shared::llm::{Layers, Method, Target, TrainParams};
use subliminal_shared::manifest::VerifiedStage;
use tch::{nn, Kind};

use super::models::{checkpoint, Loaded};
use super::rows::student_ids;
use super::rows::{read_mask, read_rows};
use super::*;
use crate::llm::finetune::{self, Example, LoraSpec, TrainSettings};
use crate::llm::load::Checkpoint;
use crate::llm::soft_labels::SOFT_LABELS;
use crate::llm::{instantiate, kind_of, Llama};
use crate::safetensors_io;
use crate::stages::{Artifact, Progress, StageEnv};

pub(crate) fn student(
    params: &TrainParams,
    filtered: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let rows = read_rows(filtered)?;
    let mask = read_mask(filtered)?;
    if let Some(mask) = &mask {
        anyhow::ensure!(
            mask.tokenizer == params.model,
            "the loss mask of stage {} was computed with {}'s tokenizer; this student is {}",
            filtered.manifest.stage.short(),
            mask.tokenizer,
            params.model
        );
    }
    let checkpoint = checkpoint(env, inputs, &params.model)?;
    let trained = match params.target {
        Target::Tokens => fine_tune(params, &rows, mask.as_ref(), &checkpoint, env, progress)?,
        Target::Logits => {
            anyhow::ensure!(
                mask.is_none(),
                "soft labels take no loss mask: leave the defense out"
            );
            // The rows carry their own labels (an audit's dataset stage), or
            // the generate stage that recorded them is input 1.
            let generated = if filtered
                .manifest
                .artifacts
                .iter()
                .any(|a| a.name == SOFT_LABELS)
            {
                filtered
            } else {
                inputs
                    .get(1)
                    .context("a soft-label student needs its generate stage as input 1")?
            };
            let examples =
                super::distill::distilled_examples(&checkpoint.tokenizer, &rows, generated)?;
            train_examples(params, examples, &checkpoint, env, progress)?
        }
    };
    Ok(vec![
        trained.weights,
        Artifact::json(TRAIN, &serde_json::to_value(&trained.report)?)?,
    ])
}

pub(crate) fn layer_list(layers: &Layers) -> Vec<u32> {
    match layers {
        Layers::All => Vec::new(),
        Layers::Only(list) => list.clone(),
    }
}

/// What a fine-tune gives: the checkpoint's artifact, what training did,
/// and the trained model itself.
pub(crate) struct Trained {
    pub(crate) weights: Artifact,
    pub(crate) report: finetune::TrainReport,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) model: Loaded,
}

/// Fine-tunes `params.model` on chat rows (last user turn → last assistant
/// turn, no system prompt), leaving out of the loss the tokens `mask` names.
pub(crate) fn fine_tune(
    params: &TrainParams,
    rows: &[Row],
    mask: Option<&LossMask>,
    checkpoint: &Arc<Checkpoint>,
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Trained> {
    let tok = &checkpoint.tokenizer;
    let mut examples = rows
        .iter()
        .map(|row| student_ids(tok, row))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(mask) = mask {
        apply_mask(&mut examples, mask)?;
    }
    train_examples(params, examples, checkpoint, env, progress)
}

/// Leaves out of each example's loss the tokens `mask` names.
pub(crate) fn apply_mask(examples: &mut [Example], mask: &LossMask) -> anyhow::Result<()> {
    anyhow::ensure!(
        mask.rows.len() == examples.len(),
        "the loss mask has {} rows, the dataset {}",
        mask.rows.len(),
        examples.len()
    );
    for (i, (example, masked)) in examples.iter_mut().zip(&mask.rows).enumerate() {
        anyhow::ensure!(
            masked.len() == example.answer.len(),
            "row {}: the loss mask covers {} completion tokens, the tokenizer makes {}",
            i + 1,
            masked.len(),
            example.answer.len()
        );
        example.masked = masked.clone();
    }
    Ok(())
}

/// Fine-tunes `params.model` on tokenised examples.
pub(crate) fn train_examples(
    params: &TrainParams,
    examples: Vec<Example>,
    checkpoint: &Arc<Checkpoint>,
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Trained> {
    let settings = TrainSettings {
        epochs: params.epochs,
        lr: params.lr,
        warmup_steps: params.warmup_steps,
        max_grad_norm: params.max_grad_norm,
        batch_size: params.batch_size,
        grad_accumulation: params.grad_accumulation,
        weight_decay: params.weight_decay,
        seed: params.seed,
        optimizer: params.optimizer,
    };
    let mut report_progress = |step: u64, total: u64, loss: f64, tokens_per_second: f64| {
        progress(Progress {
            fraction: step as f64 / total.max(1) as f64,
            message: format!("step {step}/{total}"),
            loss: Some(loss),
            samples_per_second: Some(tokens_per_second),
        })
    };
    let stop = || env.stopped();
    let saved = env.checkpoints("train");
    let layers = layer_list(&params.layers);
    match &params.method {
        Method::Lora {
            rank,
            alpha,
            targets,
            rslora,
        } => {
            let (base_vs, mut model) =
                instantiate(checkpoint, env.device, kind_of(params.precision))?;
            let mut lora_vs = nn::VarStore::new(env.device);
            let spec = LoraSpec {
                rank: *rank,
                alpha: *alpha,
                targets: targets.clone(),
                rslora: *rslora,
                layers,
            };
            finetune::attach_lora(&mut model, &lora_vs, &spec, params.seed)?;
            let report = finetune::train(
                &model,
                &lora_vs,
                &examples,
                &settings,
                checkpoint.tokenizer.pad_id,
                finetune::Hooks {
                    stop: &stop,
                    progress: &mut report_progress,
                    checkpoints: saved.as_ref().map(|p| p as &dyn finetune::Checkpoints),
                },
            )?
            .context("stopped")?;
            let meta = [("lora".to_owned(), serde_json::to_string(&spec)?)].into();
            let weights = Artifact::new(
                ADAPTER,
                safetensors_io::named_to_bytes(&finetune::lora_tensors(&lora_vs), meta)?,
            );
            lora_vs.freeze();
            Ok(Trained {
                weights,
                report,
                model: Loaded {
                    checkpoint: checkpoint.clone(),
                    model,
                    _vars: vec![base_vs, lora_vs],
                },
            })
        }
        Method::Full => {
            // Full fine-tuning keeps f32 master weights whatever the device.
            let mut vs = nn::VarStore::new(env.device);
            let model = Llama::load(&vs, &checkpoint.config, checkpoint.weights())?;
            vs.set_kind(Kind::Float);
            if !layers.is_empty() {
                finetune::freeze_outside(&vs, &layers, model.layers.len())?;
            }
            let report = finetune::train(
                &model,
                &vs,
                &examples,
                &settings,
                checkpoint.tokenizer.pad_id,
                finetune::Hooks {
                    stop: &stop,
                    progress: &mut report_progress,
                    checkpoints: saved.as_ref().map(|p| p as &dyn finetune::Checkpoints),
                },
            )?
            .context("stopped")?;
            let mut tensors: Vec<(String, tch::Tensor)> = vs
                .variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .collect();
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            let weights = Artifact::new(
                WEIGHTS,
                safetensors_io::named_to_bytes(&tensors, Default::default())?,
            );
            drop(tensors);
            vs.freeze();
            Ok(Trained {
                weights,
                report,
                model: Loaded {
                    checkpoint: checkpoint.clone(),
                    model,
                    _vars: vec![vs],
                },
            })
        }
    }
}
