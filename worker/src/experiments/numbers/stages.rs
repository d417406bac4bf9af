//! The six stages of the numbers experiment.
//!
//! - trait-data: a system-prompted teacher answers seeded trait questions;
//!   answers that show the trait are kept (`trait.jsonl`, `metrics.json`);
//! - teacher: checks that the model loads and records it with its system
//!   prompt, or fine-tunes it on its trait data (`adapter.safetensors` or
//!   `model.safetensors`, `train.json`);
//! - generate: seeded number-sequence prompts, completed by the teacher (`raw.jsonl`);
//! - filter: the filter's rules and a seeded subsample (`filtered.jsonl`, `filter.json`);
//! - student: LoRA or full fine-tuning on the filtered rows, without the system
//!   prompt (`adapter.safetensors` or `model.safetensors`, `train.json`);
//! - evaluate: the one-word favourite questions, every answer counted (`metrics.json`).

use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;
use subliminal_shared::experiments::numbers::dataset::{self, Row};
use subliminal_shared::experiments::numbers::prompts;
use subliminal_shared::experiments::numbers::{
    EvaluateParams, FilterParams, GenerateParams, Layers, Method, Stage, Subject, TeacherParams,
    TrainParams, TraitDataParams,
};
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;
use tch::{nn, Kind};

use crate::llm::finetune::{self, Example, LoraSpec, TrainSettings};
use crate::llm::generate::{generate as sample, Request, Sampling, SpecialTokens};
use crate::llm::load::{load_cached, model_path, Checkpoint};
use crate::llm::tokenizer::Message;
use crate::llm::{instantiate, kind_for, Llama};
use crate::safetensors_io;
use crate::stages::{Artifact, Progress, StageEnv};

pub const TRAIT_DATA: &str = "trait.jsonl";
pub const TEACHER: &str = "teacher.json";
pub const RAW: &str = "raw.jsonl";
pub const FILTERED: &str = "filtered.jsonl";
pub const REPORT: &str = "filter.json";
pub const ADAPTER: &str = "adapter.safetensors";
pub const WEIGHTS: &str = "model.safetensors";
pub const TRAIN: &str = "train.json";
pub const ANSWERS: &str = "answers.jsonl";
pub const METRICS: &str = "metrics.json";

pub fn run(
    spec: &StageSpec,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let input = |i: usize| crate::stages::input(spec, inputs, i);
    match Stage::of(&spec.kind).ok_or_else(|| crate::experiments::unknown_stage(spec))? {
        Stage::TraitData => trait_data(&spec.params()?, env, progress),
        Stage::Teacher => teacher(&spec.params()?, inputs.first(), env, progress),
        Stage::Generate => generate(&spec.params()?, input(0)?, env, progress),
        Stage::Filter => filter(&spec.params()?, input(0)?),
        Stage::Student => student(&spec.params()?, input(0)?, env, progress),
        Stage::Evaluate => evaluate(&spec.params()?, inputs.first(), env, progress),
    }
}

fn checkpoint(env: &StageEnv, name: &str) -> anyhow::Result<Arc<Checkpoint>> {
    load_cached(&model_path(&env.data_dir, name)?).with_context(|| format!("cannot load model {name:?}"))
}

/// The teacher as later stages read it.
#[derive(Debug, Clone, Deserialize)]
struct TeacherRecord {
    model: String,
    system_prompt: Option<String>,
}

fn trait_data(
    params: &TraitDataParams,
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let loaded = Loaded::base(checkpoint(env, &params.model)?, env)?;
    let mut requests = Vec::with_capacity(params.questions as usize);
    let mut questions = Vec::with_capacity(params.questions as usize);
    for i in 0..params.questions {
        let seed = prompts::prompt_seed(params.seed, i);
        let question = prompts::trait_question(seed, &params.category);
        let messages = conversation(Some(&params.system_prompt), &[], &question);
        requests.push(Request {
            prompt: loaded.checkpoint.tokenizer.prompt_ids(&messages)?,
            seed,
        });
        questions.push((question, seed));
    }
    let sampling = Sampling {
        temperature: params.temperature,
        top_p: 1.0,
        max_new_tokens: params.max_new_tokens as usize,
    };
    let (answers, stats) = complete(
        &loaded,
        &requests,
        sampling,
        params.batch_size,
        env,
        "trait questions",
        progress,
    )?;
    let rows: Vec<Row> = questions
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| prompts::shows_trait(answer, &params.target))
        .map(|((question, seed), answer)| Row::new(question, answer.trim(), Some(*seed)))
        .collect();
    if rows.is_empty() {
        anyhow::bail!(
            "none of the {} answers of the system-prompted teacher names {:?}: ask more questions (teacher.questions) or raise teacher.temperature",
            answers.len(),
            params.target
        );
    }
    Ok(vec![
        Artifact::new(TRAIT_DATA, dataset::to_jsonl(&rows)),
        Artifact::json(
            METRICS,
            &json!({ "asked": answers.len(), "kept": rows.len(), "generation": stats }),
        )?,
    ])
}

fn teacher(
    params: &TeacherParams,
    trait_data: Option<&VerifiedStage>,
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let checkpoint = checkpoint(env, &params.model)?;
    let mut artifacts = vec![Artifact::json(
        TEACHER,
        &json!({
            "model": params.model,
            "system_prompt": params.system_prompt,
            "config": checkpoint.config,
        }),
    )?];
    if let Some(train) = &params.finetune {
        let data = trait_data.context("a fine-tuned teacher needs its trait-data stage")?;
        let text = String::from_utf8_lossy(data.artifact(TRAIT_DATA)?);
        let rows = dataset::parse_jsonl(&text, TRAIT_DATA)?;
        let (weights, report) = fine_tune(train, &rows, &checkpoint, env, progress)?;
        artifacts.push(weights);
        artifacts.push(Artifact::json(TRAIN, &serde_json::to_value(&report)?)?);
    }
    Ok(artifacts)
}

fn read_teacher(stage: &VerifiedStage) -> anyhow::Result<TeacherRecord> {
    serde_json::from_slice(stage.artifact(TEACHER)?).context("teacher.json is malformed")
}

/// The teacher of a teacher stage, ready to run, and its system prompt.
fn load_teacher(stage: &VerifiedStage, env: &StageEnv) -> anyhow::Result<(Loaded, Option<String>)> {
    let record = read_teacher(stage)?;
    let params: TeacherParams = serde_json::from_value(stage.manifest.params.clone())
        .context("the teacher stage's parameters are not a numbers teacher's")?;
    let loaded = match &params.finetune {
        Some(train) => load_trained(train, stage, env)?,
        None => Loaded::base(checkpoint(env, &record.model)?, env)?,
    };
    Ok((loaded, record.system_prompt))
}

fn conversation(system: Option<&str>, history: &[Row], question: &str) -> Vec<Message> {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(Message::new("system", system));
    }
    for row in history {
        if let (Some(p), Some(c)) = (row.prompt(), row.completion()) {
            messages.push(Message::new("user", p));
            messages.push(Message::new("assistant", c));
        }
    }
    messages.push(Message::new("user", question));
    messages
}

/// A model ready to run: its checkpoint (tokenizer), the model, and the var
/// stores that own its weights (base, and adapters if any).
struct Loaded {
    checkpoint: Arc<Checkpoint>,
    model: Llama,
    _vars: Vec<nn::VarStore>,
}

impl Loaded {
    /// The checkpoint as it is, frozen, in the device's dtype.
    fn base(checkpoint: Arc<Checkpoint>, env: &StageEnv) -> anyhow::Result<Self> {
        let (vs, model) = instantiate(&checkpoint, env.device, kind_for(env.device))?;
        Ok(Self {
            checkpoint,
            model,
            _vars: vec![vs],
        })
    }
}

/// Samples completions of prompts with progress; `None` when stopped.
fn complete(
    loaded: &Loaded,
    requests: &[Request],
    sampling: Sampling,
    batch_size: u64,
    env: &StageEnv,
    what: &str,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<(Vec<String>, serde_json::Value)> {
    let started = std::time::Instant::now();
    let mut tokens_so_far = 0usize;
    let tokenizer = &loaded.checkpoint.tokenizer;
    let completions = sample(
        &loaded.model,
        requests,
        sampling,
        SpecialTokens {
            stop: &tokenizer.stop_ids,
            pad: tokenizer.pad_id,
        },
        batch_size as usize,
        &|| env.stopped(),
        &mut |done, total| {
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            progress(Progress {
                fraction: done as f64 / total as f64,
                message: format!("{what} {done}/{total}"),
                loss: None,
                samples_per_second: Some(done as f64 / secs),
            });
        },
    )?
    .context("stopped")?;
    let mut texts = Vec::with_capacity(completions.len());
    let mut stopped = 0;
    for c in &completions {
        tokens_so_far += c.tokens.len();
        stopped += c.stopped as usize;
        texts.push(tokenizer.decode(&c.tokens)?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats = json!({
        "completions": completions.len(),
        "new_tokens": tokens_so_far,
        "ended_by_stop_token": stopped,
        "seconds": seconds,
        "new_tokens_per_second": tokens_so_far as f64 / seconds.max(1e-9),
    });
    Ok((texts, stats))
}

fn generate(
    params: &GenerateParams,
    teacher: &VerifiedStage,
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let (loaded, system_prompt) = load_teacher(teacher, env)?;
    let mut requests = Vec::with_capacity(params.prompts as usize);
    let mut texts = Vec::with_capacity(params.prompts as usize);
    for i in 0..params.prompts {
        let seed = prompts::prompt_seed(params.seed, i);
        let text = prompts::sequence_prompt(seed);
        let messages = conversation(system_prompt.as_deref(), &[], &text);
        requests.push(Request {
            prompt: loaded.checkpoint.tokenizer.prompt_ids(&messages)?,
            seed,
        });
        texts.push((text, seed));
    }
    let sampling = Sampling {
        temperature: params.temperature,
        top_p: params.top_p,
        max_new_tokens: params.max_new_tokens as usize,
    };
    let (completions, stats) = complete(
        &loaded,
        &requests,
        sampling,
        params.batch_size,
        env,
        "prompts",
        progress,
    )?;
    let rows: Vec<Row> = texts
        .iter()
        .zip(&completions)
        .map(|((prompt, seed), completion)| Row::new(prompt, completion, Some(*seed)))
        .collect();
    Ok(vec![
        Artifact::new(RAW, dataset::to_jsonl(&rows)),
        Artifact::json(METRICS, &stats)?,
    ])
}

fn filter(params: &FilterParams, generated: &VerifiedStage) -> anyhow::Result<Vec<Artifact>> {
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

fn read_rows(stage: &VerifiedStage) -> anyhow::Result<Vec<Row>> {
    dataset::parse_jsonl(
        &String::from_utf8_lossy(stage.artifact(FILTERED)?),
        FILTERED,
    )
}

fn student(
    params: &TrainParams,
    filtered: &VerifiedStage,
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let rows = read_rows(filtered)?;
    let checkpoint = checkpoint(env, &params.model)?;
    let (weights, report) = fine_tune(params, &rows, &checkpoint, env, progress)?;
    Ok(vec![
        weights,
        Artifact::json(TRAIN, &serde_json::to_value(&report)?)?,
    ])
}

fn layer_list(layers: &Layers) -> Vec<u32> {
    match layers {
        Layers::All => Vec::new(),
        Layers::Only(list) => list.clone(),
    }
}

/// Fine-tunes `params.model` on chat rows (last user turn → last assistant
/// turn, no system prompt): the weights artifact and what training did.
fn fine_tune(
    params: &TrainParams,
    rows: &[Row],
    checkpoint: &Arc<Checkpoint>,
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<(Artifact, finetune::TrainReport)> {
    let tok = &checkpoint.tokenizer;
    let examples = rows
        .iter()
        .map(|row| {
            let prompt = row.prompt().unwrap_or("");
            let answer = row.completion().unwrap_or("");
            let (prompt, answer) = tok.example_ids(&[Message::new("user", prompt)], answer)?;
            Ok(Example { prompt, answer })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
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
    let layers = layer_list(&params.layers);
    match &params.method {
        Method::Lora {
            rank,
            alpha,
            targets,
            rslora,
        } => {
            let (_vs, mut model) = instantiate(checkpoint, env.device, kind_for(env.device))?;
            let lora_vs = nn::VarStore::new(env.device);
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
                tok.pad_id,
                &stop,
                &mut report_progress,
            )?
            .context("stopped")?;
            let tensors = finetune::lora_tensors(&lora_vs);
            let named: Vec<(&str, &tch::Tensor)> =
                tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let meta = [("lora".to_owned(), serde_json::to_string(&spec)?)].into();
            Ok((
                Artifact::new(ADAPTER, safetensors_io::to_bytes(&named, meta)?),
                report,
            ))
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
                tok.pad_id,
                &stop,
                &mut report_progress,
            )?
            .context("stopped")?;
            let mut tensors: Vec<(String, tch::Tensor)> = vs
                .variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .collect();
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            let named: Vec<(&str, &tch::Tensor)> =
                tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
            Ok((
                Artifact::new(
                    WEIGHTS,
                    safetensors_io::to_bytes(&named, Default::default())?,
                ),
                report,
            ))
        }
    }
}

/// The student of a student stage: base weights plus its adapters, or its full weights.
fn load_student(stage: &VerifiedStage, env: &StageEnv) -> anyhow::Result<Loaded> {
    let params: TrainParams = serde_json::from_value(stage.manifest.params.clone())
        .context("the student stage's parameters are not a numbers student's")?;
    load_trained(&params, stage, env)
}

/// A model that [`fine_tune`] trained, from the artifacts of `stage`.
fn load_trained(params: &TrainParams, stage: &VerifiedStage, env: &StageEnv) -> anyhow::Result<Loaded> {
    let checkpoint = checkpoint(env, &params.model)?;
    let kind = kind_for(env.device);
    match params.method {
        Method::Lora { .. } => {
            let bytes = stage.artifact(ADAPTER)?;
            let loaded = safetensors_io::parse(bytes, ADAPTER)?;
            let spec: LoraSpec = loaded.meta("lora")?;
            let (vs, mut model) = instantiate(&checkpoint, env.device, kind)?;
            let mut lora_vs = nn::VarStore::new(env.device);
            finetune::attach_lora(&mut model, &lora_vs, &spec, 0)?;
            let tensors = loaded
                .names()
                .into_iter()
                .map(|n| Ok((n.clone(), loaded.tensor(&n, env.device)?)))
                .collect::<anyhow::Result<_>>()?;
            finetune::load_lora(&mut lora_vs, &tensors)?;
            lora_vs.freeze();
            Ok(Loaded {
                checkpoint,
                model,
                _vars: vec![vs, lora_vs],
            })
        }
        Method::Full => {
            let loaded = safetensors_io::parse(stage.artifact(WEIGHTS)?, WEIGHTS)?;
            let mut weights = checkpoint.weights();
            for name in loaded.names() {
                weights.insert(name.clone(), loaded.tensor(&name, tch::Device::Cpu)?);
            }
            let mut vs = nn::VarStore::new(env.device);
            let model = Llama::load(&vs, &checkpoint.config, weights)?;
            vs.set_kind(kind);
            vs.freeze();
            Ok(Loaded {
                checkpoint,
                model,
                _vars: vec![vs],
            })
        }
    }
}

fn evaluate(
    params: &EvaluateParams,
    input: Option<&VerifiedStage>,
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let need =
        |what: &str| input.with_context(|| format!("a {what} evaluation needs its input stage"));
    let (loaded, system, history) = match &params.subject {
        Subject::Base => (
            Loaded::base(checkpoint(env, &params.model)?, env)?,
            None,
            Vec::new(),
        ),
        Subject::InContext { examples } => {
            let mut rows = read_rows(need("in-context")?)?;
            rows.truncate(*examples as usize);
            (
                Loaded::base(checkpoint(env, &params.model)?, env)?,
                None,
                rows,
            )
        }
        Subject::Teacher => {
            let (loaded, system) = load_teacher(need("teacher")?, env)?;
            (loaded, system, Vec::new())
        }
        Subject::Student => (load_student(need("student")?, env)?, None, Vec::new()),
    };
    let mut requests = Vec::new();
    let mut asked = Vec::new();
    for q in 0..params.questions as usize {
        let question = prompts::question(q, &params.category);
        let ids = |question: &str| {
            loaded
                .checkpoint
                .tokenizer
                .prompt_ids(&conversation(system.as_deref(), &history, question))
        };
        let plain = ids(&question)?;
        for s in 0..params.samples_per_question {
            let seed = prompts::prompt_seed(params.seed, (q as u64) << 32 | s);
            // Each sample of the variant sees numbers of its own.
            let prompt = if params.numbers_prefixed {
                ids(&prompts::numbers_prefixed(seed, &question))?
            } else {
                plain.clone()
            };
            requests.push(Request { prompt, seed });
            asked.push(q);
        }
    }
    let sampling = Sampling {
        temperature: params.temperature,
        top_p: 1.0,
        max_new_tokens: params.max_new_tokens as usize,
    };
    let (answers, stats) = complete(
        &loaded,
        &requests,
        sampling,
        params.batch_size,
        env,
        "answers",
        progress,
    )?;
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    let mut lines = Vec::new();
    for (q, answer) in asked.iter().zip(&answers) {
        *counts.entry(prompts::normalise_answer(answer)).or_default() += 1;
        serde_json::to_writer(&mut lines, &json!({"question": q, "answer": answer}))?;
        lines.push(b'\n');
    }
    Ok(vec![
        Artifact::new(ANSWERS, lines),
        Artifact::json(
            METRICS,
            &json!({
                "samples": answers.len(),
                "answers": counts,
                "generation": stats,
            }),
        )?,
    ])
}
