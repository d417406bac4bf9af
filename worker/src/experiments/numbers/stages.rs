//! The six stages of the numbers experiment.
//!
//! - trait-data: a system-prompted teacher answers seeded trait questions;
//!   answers that show the trait are kept (`trait.jsonl`, `metrics.json`);
//! - teacher: checks that the model loads and records it with its system
//!   prompt, or fine-tunes it on its trait data (`adapter.safetensors` or
//!   `model.safetensors`, `train.json`);
//! - generate: seeded number-sequence prompts, completed by the teacher (`raw.jsonl`);
//! - filter: the filter's rules and a seeded subsample (`filtered.jsonl`, `filter.json`);
//! - defend: a defense applied to the filtered rows (`filtered.jsonl`,
//!   `metrics.json`, and for mask-divergence `mask.json`, the completion
//!   tokens a student leaves out of its loss);
//! - student: LoRA or full fine-tuning on the filtered (or defended) rows,
//!   without the system prompt (`adapter.safetensors` or `model.safetensors`,
//!   `train.json`);
//! - evaluate: the one-word favourite questions, every answer counted (`metrics.json`).

use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;
use subliminal_shared::experiments::numbers::dataset::{self, Row};
use subliminal_shared::experiments::numbers::defense::{self, Defense, DefenseReport, LossMask};
use subliminal_shared::experiments::numbers::diagnose::DiagnoseParams;
use subliminal_shared::experiments::numbers::{constrain, prompts};
use subliminal_shared::experiments::numbers::{
    DefendParams, EvaluateParams, EXPERIMENT, FilterParams, GenerateParams, Layers, Method, NumbersGrammar, SeededPromptsParams, Target, Stage, Subject, TeacherParams,
    TrainParams, TraitDataParams,
};
use subliminal_shared::files;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::{StageId, StageSpec};
use tch::{nn, Kind};

use crate::llm::divergence::divergent_tokens;
use crate::llm::finetune::{self, Example, LoraSpec, TrainSettings};
use crate::llm::constrain::Constraint;
use crate::llm::soft_labels::{SoftLabels, SoftRow, TopK, SOFT_LABELS};
use crate::llm::generate::{generate as sample, Completion, Decoding, Request, Sampling, SpecialTokens};
use crate::llm::load::{load_cached, Checkpoint};
use crate::llm::tokenizer::{ChatTokenizer, Message};
use crate::llm::{instantiate, kind_for, Llama};
use crate::safetensors_io;
use crate::stages::{Artifact, Progress, StageEnv};

pub const TRAIT_DATA: &str = "trait.jsonl";
pub const TEACHER: &str = "teacher.json";
pub const RAW: &str = "raw.jsonl";
pub const FILTERED: &str = "filtered.jsonl";
pub const REPORT: &str = "filter.json";
pub const MASK: &str = "mask.json";
pub const ADAPTER: &str = "adapter.safetensors";
pub const WEIGHTS: &str = "model.safetensors";
pub const TRAIN: &str = "train.json";
pub const ANSWERS: &str = subliminal_shared::experiments::numbers::ANSWERS;
pub const METRICS: &str = "metrics.json";

pub fn run(
    spec: &StageSpec,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let input = |i: usize| crate::stages::input(spec, inputs, i);
    match Stage::of(&spec.kind).ok_or_else(|| crate::experiments::unknown_stage(spec))? {
        Stage::TraitData => trait_data(&spec.params()?, inputs, env, progress),
        Stage::Teacher => teacher(&spec.params()?, inputs, env, progress),
        Stage::Generate => generate(&spec.params()?, input(0)?, inputs, env, progress),
        Stage::Filter => filter(&spec.params()?, input(0)?),
        Stage::Defend => defend(&spec.params()?, inputs, env, progress),
        Stage::Student => student(&spec.params()?, input(0)?, inputs, env, progress),
        Stage::Evaluate => evaluate(&spec.params()?, inputs, env, progress),
        Stage::Readout => super::readout::readout(&spec.params()?, inputs, env, progress),
        Stage::Diagnose => diagnose(&spec.params()?, input(0)?, input(1)?),
        Stage::Theorem => super::theorem::theorem(&spec.params()?, inputs, env, progress),
    }
}

/// The base checkpoint a stage names: a model on this machine, or a stored
/// GGUF file (`stage:<id>`) among the stage's inputs.
pub(crate) fn checkpoint(
    env: &StageEnv,
    inputs: &[VerifiedStage],
    name: &str,
) -> anyhow::Result<Arc<Checkpoint>> {
    let path = match files::parse_key(name) {
        None => env.model_path(name)?,
        Some(id) => {
            let stage = model_input(inputs, id?, name)?;
            anyhow::ensure!(
                files::is_file(&stage.manifest.experiment, &stage.manifest.kind),
                "model {name} is a {} {} stage, which holds fine-tuned weights on a base model: \
                 it can be a teacher or be evaluated, but a model is trained from a base (a stored GGUF file)",
                stage.manifest.experiment,
                stage.manifest.kind
            );
            stored_model_file(stage)?
        }
    };
    load_cached(&path).with_context(|| format!("cannot load model {name:?}"))
}

/// The input stage a model key names.
fn model_input<'a>(
    inputs: &'a [VerifiedStage],
    id: StageId,
    name: &str,
) -> anyhow::Result<&'a VerifiedStage> {
    inputs
        .iter()
        .find(|s| s.manifest.stage == id)
        .with_context(|| format!("model {name} is not among this stage's inputs"))
}

/// A stored model file as a path on this machine (the GGUF reader maps a
/// file), written once per checksum.
fn stored_model_file(stage: &VerifiedStage) -> anyhow::Result<std::path::PathBuf> {
    let entry = stage
        .manifest
        .artifacts
        .iter()
        .find(|a| a.name == files::ARTIFACT)
        .context("the stored file's manifest lists no file")?;
    let dir = std::env::temp_dir().join("subliminal-models");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{}.gguf", entry.sha256));
    if !path.exists() {
        let partial = dir.join(format!("{}.{}.partial", entry.sha256, std::process::id()));
        std::fs::write(&partial, stage.artifact(files::ARTIFACT)?)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("cannot move the model into {}", path.display()))?;
    }
    Ok(path)
}

/// The model a stage names, ready to run: a base model, or the fine-tuned
/// model of a teacher or student stage named by key (another sweep's, say).
pub(crate) fn load_model(env: &StageEnv, inputs: &[VerifiedStage], name: &str) -> anyhow::Result<Loaded> {
    if let Some(id) = files::parse_key(name) {
        let stage = model_input(inputs, id?, name)?;
        if !files::is_file(&stage.manifest.experiment, &stage.manifest.kind) {
            return load_checkpoint_stage(stage, inputs, env)
                .with_context(|| format!("cannot load model {name}"));
        }
    }
    Loaded::base(checkpoint(env, inputs, name)?, env)
}

/// The fine-tuned model of a numbers teacher or student stage.
fn load_checkpoint_stage(
    stage: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
) -> anyhow::Result<Loaded> {
    let m = &stage.manifest;
    anyhow::ensure!(
        m.experiment == EXPERIMENT,
        "a {} {} stage is not a model this experiment loads",
        m.experiment,
        m.kind
    );
    match Stage::of(&m.kind) {
        Some(Stage::Student) => load_student(stage, inputs, env),
        Some(Stage::Teacher) => {
            let params: TeacherParams = serde_json::from_value(m.params.clone())
                .context("the teacher stage's parameters are not a numbers teacher's")?;
            let train = params.finetune.context(
                "a system-prompted teacher's stage holds no weights: name its model instead",
            )?;
            load_trained(&train, stage, inputs, env)
        }
        _ => anyhow::bail!("a {} stage holds no model", m.kind),
    }
}

/// The teacher as later stages read it.
#[derive(Debug, Clone, Deserialize)]
struct TeacherRecord {
    model: String,
    system_prompt: Option<String>,
}

fn trait_data(
    params: &TraitDataParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let loaded = load_model(env, inputs, &params.model)?;
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
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let checkpoint = checkpoint(env, inputs, &params.model)?;
    let mut artifacts = vec![Artifact::json(
        TEACHER,
        &json!({
            "model": params.model,
            "system_prompt": params.system_prompt,
            "config": checkpoint.config,
        }),
    )?];
    if let Some(train) = &params.finetune {
        let data = inputs
            .first()
            .context("a fine-tuned teacher needs its trait data as its first input")?;
        // Generated trait data, or a chat JSONL file put in the store.
        let name = if files::is_file(&data.manifest.experiment, &data.manifest.kind) {
            files::ARTIFACT
        } else {
            TRAIT_DATA
        };
        let text = String::from_utf8_lossy(data.artifact(name)?);
        let rows = dataset::parse_jsonl(&text, "the teacher's dataset")?;
        let trained = fine_tune(train, &rows, None, &checkpoint, env, progress)?;
        artifacts.push(trained.weights);
        artifacts.push(Artifact::json(TRAIN, &serde_json::to_value(&trained.report)?)?);
    }
    Ok(artifacts)
}

fn read_teacher(stage: &VerifiedStage) -> anyhow::Result<TeacherRecord> {
    serde_json::from_slice(stage.artifact(TEACHER)?).context("teacher.json is malformed")
}

/// The teacher of a teacher stage, ready to run, and its system prompt.
/// `inputs` are those of the stage that runs the teacher (they hold the
/// teacher's model when a key names it).
fn load_teacher(
    stage: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
) -> anyhow::Result<(Loaded, Option<String>)> {
    let record = read_teacher(stage)?;
    let params: TeacherParams = serde_json::from_value(stage.manifest.params.clone())
        .context("the teacher stage's parameters are not a numbers teacher's")?;
    let loaded = match &params.finetune {
        Some(train) => load_trained(train, stage, inputs, env)?,
        None => load_model(env, inputs, &record.model)?,
    };
    Ok((loaded, record.system_prompt))
}

pub(crate) fn conversation(system: Option<&str>, history: &[Row], question: &str) -> Vec<Message> {
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
pub(crate) struct Loaded {
    pub(crate) checkpoint: Arc<Checkpoint>,
    pub(crate) model: Llama,
    _vars: Vec<nn::VarStore>,
}

impl Loaded {
    /// The checkpoint as it is, frozen, in the device's dtype.
    pub(crate) fn base(checkpoint: Arc<Checkpoint>, env: &StageEnv) -> anyhow::Result<Self> {
        let (vs, model) = instantiate(&checkpoint, env.device, kind_for(env.device))?;
        Ok(Self {
            checkpoint,
            model,
            _vars: vec![vs],
        })
    }
}

/// Samples completions of prompts with progress: their texts and the
/// generation's figures.
pub(crate) fn complete(
    loaded: &Loaded,
    requests: &[Request],
    sampling: Sampling,
    batch_size: u64,
    env: &StageEnv,
    what: &str,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<(Vec<String>, serde_json::Value)> {
    let (_, texts, stats) = complete_with(
        loaded,
        requests,
        sampling,
        Decoding::default(),
        batch_size,
        env,
        what,
        progress,
    )?;
    Ok((texts, stats))
}

/// [`complete`] as `decoding` says, with the completions themselves.
#[allow(clippy::too_many_arguments)]
pub(crate) fn complete_with(
    loaded: &Loaded,
    requests: &[Request],
    sampling: Sampling,
    decoding: Decoding,
    batch_size: u64,
    env: &StageEnv,
    what: &str,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<(Vec<Completion>, Vec<String>, serde_json::Value)> {
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
        decoding,
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
    Ok((completions, texts, stats))
}

/// The teacher of a teacher stage (`inputs` hold its model when a key
/// names it) completing seeded prompts, with its system prompt if it has
/// one: one row per prompt (the completion trimmed) and the generation's
/// figures. Kinds built on this one write their datasets with it.
#[allow(clippy::too_many_arguments)]
fn teacher_rows(
    teacher: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    prompts: &[(String, u64)],
    sampling: Sampling,
    batch_size: u64,
    what: &str,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<(Vec<Row>, serde_json::Value)> {
    let (loaded, system_prompt) = load_teacher(teacher, inputs, env)?;
    let requests = prompts
        .iter()
        .map(|(text, seed)| {
            let messages = conversation(system_prompt.as_deref(), &[], text);
            Ok(Request {
                prompt: loaded.checkpoint.tokenizer.prompt_ids(&messages)?,
                seed: *seed,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (completions, stats) = complete(&loaded, &requests, sampling, batch_size, env, what, progress)?;
    let rows = prompts
        .iter()
        .zip(&completions)
        .map(|((text, seed), completion)| Row::new(text, completion.trim(), Some(*seed)))
        .collect();
    Ok((rows, stats))
}

/// The generate stage of a kind built on this one: the teacher of input 0
/// completes `prompt_of(seed)` for each seeded prompt (`raw.jsonl`, `metrics.json`).
pub(crate) fn generate_seeded(
    params: &SeededPromptsParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
    prompt_of: fn(u64) -> String,
    what: &str,
) -> anyhow::Result<Vec<Artifact>> {
    let teacher = inputs
        .first()
        .context("a generate stage needs its teacher stage as input 0")?;
    let prompts: Vec<(String, u64)> = (0..params.prompts)
        .map(|i| {
            let seed = prompts::prompt_seed(params.seed, i);
            (prompt_of(seed), seed)
        })
        .collect();
    let sampling = Sampling {
        temperature: params.temperature,
        top_p: params.top_p,
        max_new_tokens: params.max_new_tokens as usize,
    };
    let (rows, stats) = teacher_rows(teacher, inputs, env, &prompts, sampling, params.batch_size, what, progress)?;
    Ok(vec![
        Artifact::new(RAW, dataset::to_jsonl(&rows)),
        Artifact::json(METRICS, &stats)?,
    ])
}

fn generate(
    params: &GenerateParams,
    teacher: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let (loaded, system_prompt) = load_teacher(teacher, inputs, env)?;
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
    let tok = &loaded.checkpoint.tokenizer;
    let constraint = params
        .constrain
        .as_ref()
        .map(|grammar| numbers_constraint(tok, grammar))
        .transpose()?;
    let top_k = params
        .soft_labels
        .as_ref()
        .map(|s| TopK::new(tok, s.top_k as usize, &s.exclude))
        .transpose()?;
    let decoding = Decoding {
        constraint: constraint.as_ref(),
        top_k: top_k.as_ref(),
    };
    let (completions, outputs, stats) = complete_with(
        &loaded,
        &requests,
        sampling,
        decoding,
        params.batch_size,
        env,
        "prompts",
        progress,
    )?;
    let rows: Vec<Row> = texts
        .iter()
        .zip(&outputs)
        .map(|((prompt, seed), completion)| Row::new(prompt, completion, Some(*seed)))
        .collect();
    let mut artifacts = vec![
        Artifact::new(RAW, dataset::to_jsonl(&rows)),
        Artifact::json(METRICS, &stats)?,
    ];
    if let Some(top_k) = &top_k {
        let stop = tok.stop_ids.first().copied().unwrap_or(tok.pad_id);
        let labels = SoftLabels {
            k: top_k.k(),
            rows: texts
                .iter()
                .zip(completions)
                .map(|((_, seed), c)| SoftRow {
                    seed: *seed,
                    tokens: c.tokens.iter().copied().chain(c.stopped.then_some(stop)).collect(),
                    top_ids: c.top_ids,
                    top_logprobs: c.top_logprobs,
                })
                .collect(),
        };
        artifacts.push(Artifact::new(SOFT_LABELS, labels.to_bytes()?));
    }
    Ok(artifacts)
}

/// The paper's filter as a constraint on `tok`'s tokens.
pub(crate) fn numbers_constraint(
    tok: &ChatTokenizer,
    grammar: &NumbersGrammar,
) -> anyhow::Result<Constraint> {
    let banned = grammar.banned_numbers.clone();
    Constraint::new(
        tok,
        constrain::ALPHABET,
        Box::new(move |text| constrain::finish_cost(text, &banned)),
    )
}

/// The trait teacher's rows (`generated`) against the control teacher's.
fn diagnose(
    params: &DiagnoseParams,
    generated: &VerifiedStage,
    control: &VerifiedStage,
) -> anyhow::Result<Vec<Artifact>> {
    let rows = |stage: &VerifiedStage| {
        dataset::parse_jsonl(&String::from_utf8_lossy(stage.artifact(RAW)?), RAW)
    };
    let diagnosis = subliminal_shared::experiments::numbers::diagnose::diagnose(
        &rows(generated)?,
        &rows(control)?,
        params,
    );
    Ok(vec![Artifact::json(METRICS, &serde_json::to_value(diagnosis)?)?])
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

/// A defense stage's loss mask, if its input has one.
fn read_mask(stage: &VerifiedStage) -> anyhow::Result<Option<LossMask>> {
    if !stage.artifacts.iter().any(|(name, _)| name == MASK) {
        return Ok(None);
    }
    let mask = serde_json::from_slice(stage.artifact(MASK)?)
        .with_context(|| format!("{MASK} of stage {} is malformed", stage.manifest.stage.short()))?;
    Ok(Some(mask))
}

/// Applies a defense to the filtered rows of input 0.
fn defend(
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
            for other in inputs[1..].iter().filter(|s| s.manifest.kind == Stage::Filter.kind()) {
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
            anyhow::bail!("{} is not a defense a numbers stage applies", params.defense)
        }
    };
    artifacts.push(Artifact::json(METRICS, &metrics)?);
    Ok(artifacts)
}

/// For each row, which completion tokens (as the student splits them) the
/// teacher, in its own context, would choose differently from the base
/// model in the student's context: the tokens that carry the teacher's
/// divergence.
fn divergence_mask(
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

pub(crate) fn read_rows(stage: &VerifiedStage) -> anyhow::Result<Vec<Row>> {
    dataset::parse_jsonl(
        &String::from_utf8_lossy(stage.artifact(FILTERED)?),
        FILTERED,
    )
}

fn student(
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
            anyhow::ensure!(mask.is_none(), "soft labels take no loss mask: leave the defense out");
            // The rows carry their own labels (an audit's dataset stage), or
            // the generate stage that recorded them is input 1.
            let generated = if filtered.manifest.artifacts.iter().any(|a| a.name == SOFT_LABELS) {
                filtered
            } else {
                inputs
                    .get(1)
                    .context("a soft-label student needs its generate stage as input 1")?
            };
            let examples = super::distill::distilled_examples(&checkpoint.tokenizer, &rows, generated)?;
            train_examples(params, examples, &checkpoint, env, progress)?
        }
    };
    Ok(vec![
        trained.weights,
        Artifact::json(TRAIN, &serde_json::to_value(&trained.report)?)?,
    ])
}

fn layer_list(layers: &Layers) -> Vec<u32> {
    match layers {
        Layers::All => Vec::new(),
        Layers::Only(list) => list.clone(),
    }
}

/// What a fine-tune gives: the checkpoint's artifact, what training did,
/// and the trained model itself.
struct Trained {
    weights: Artifact,
    report: finetune::TrainReport,
    #[cfg_attr(not(test), allow(dead_code))]
    model: Loaded,
}

/// A row as a student sees it: the prompt's ids (no system prompt), then
/// the completion's.
pub(crate) fn student_ids(tok: &crate::llm::tokenizer::ChatTokenizer, row: &Row) -> anyhow::Result<Example> {
    let prompt = row.prompt().unwrap_or("");
    let answer = row.completion().unwrap_or("");
    let (prompt, answer) = tok.example_ids(&[Message::new("user", prompt)], answer)?;
    Ok(Example::new(prompt, answer))
}

/// Fine-tunes `params.model` on chat rows (last user turn → last assistant
/// turn, no system prompt), leaving out of the loss the tokens `mask` names.
fn fine_tune(
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
fn apply_mask(examples: &mut [Example], mask: &LossMask) -> anyhow::Result<()> {
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
fn train_examples(
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
    let layers = layer_list(&params.layers);
    match &params.method {
        Method::Lora {
            rank,
            alpha,
            targets,
            rslora,
        } => {
            let (base_vs, mut model) = instantiate(checkpoint, env.device, kind_for(env.device))?;
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
                &stop,
                &mut report_progress,
            )?
            .context("stopped")?;
            let tensors = finetune::lora_tensors(&lora_vs);
            let named: Vec<(&str, &tch::Tensor)> =
                tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let meta = [("lora".to_owned(), serde_json::to_string(&spec)?)].into();
            let weights = Artifact::new(ADAPTER, safetensors_io::to_bytes(&named, meta)?);
            drop(named);
            drop(tensors);
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
            let weights = Artifact::new(
                WEIGHTS,
                safetensors_io::to_bytes(&named, Default::default())?,
            );
            drop(named);
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

/// The student of a student stage: base weights plus its adapters, or its full weights.
pub(crate) fn load_student(
    stage: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
) -> anyhow::Result<Loaded> {
    let params: TrainParams = serde_json::from_value(stage.manifest.params.clone())
        .context("the student stage's parameters are not a numbers student's")?;
    load_trained(&params, stage, inputs, env)
}

/// A model that [`fine_tune`] trained, from the artifacts of `stage`.
fn load_trained(
    params: &TrainParams,
    stage: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
) -> anyhow::Result<Loaded> {
    let checkpoint = checkpoint(env, inputs, &params.model)?;
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

/// The model an evaluation asks, with the system prompt and the earlier
/// turns it is shown: the base model, a teacher, a student, or the base
/// model shown its input's first filtered rows.
pub(crate) fn subject_model(
    subject: &Subject,
    model: &str,
    inputs: &[VerifiedStage],
    env: &StageEnv,
) -> anyhow::Result<(Loaded, Option<String>, Vec<Row>)> {
    let input = inputs.first();
    let need =
        |what: &str| input.with_context(|| format!("a {what} evaluation needs its input stage"));
    Ok(match subject {
        Subject::Base => (load_model(env, inputs, model)?, None, Vec::new()),
        Subject::InContext { examples } => {
            let mut rows = read_rows(need("in-context")?)?;
            rows.truncate(*examples as usize);
            (load_model(env, inputs, model)?, None, rows)
        }
        Subject::Teacher => {
            let (loaded, system) = load_teacher(need("teacher")?, inputs, env)?;
            (loaded, system, Vec::new())
        }
        Subject::Student => (load_student(need("student")?, inputs, env)?, None, Vec::new()),
    })
}

fn evaluate(
    params: &EvaluateParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let (loaded, system, history) = subject_model(&params.subject, &params.model, inputs, env)?;
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

#[cfg(test)]
mod tests {
    //! With the real SmolLM2 model the set-up fetched.
    use super::*;
    use crate::llm::soft_labels::spells_or_begins;
    use std::path::{Path, PathBuf};
    use subliminal_shared::experiments::numbers::{
        GenerateParams, Optimizer, SoftLabelParams, STAGE_VERSION,
    };
    use subliminal_shared::llm::DEFAULT_MODEL;
    use subliminal_shared::manifest::Manifest;
    use tch::{Device, Tensor};

    fn env() -> StageEnv {
        let data = std::env::var_os("SUBLIMINAL_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../data"));
        StageEnv::new(Device::Cpu, data)
    }

    /// A stage's outputs as a later stage receives them.
    fn verified(spec: &StageSpec, artifacts: Vec<Artifact>) -> VerifiedStage {
        VerifiedStage {
            manifest: Manifest {
                stage: spec.id,
                experiment: spec.experiment.clone(),
                kind: spec.kind.clone(),
                params: spec.params.clone(),
                inputs: spec.inputs.clone(),
                code_version: String::new(),
                artifacts: artifacts
                    .iter()
                    .map(|a| subliminal_shared::manifest::ArtifactEntry::of(&a.name, &a.bytes))
                    .collect(),
                started_at: 0.0,
                finished_at: 0.0,
                duration_s: 0.0,
                device: "cpu".into(),
                host: "test".into(),
                group: None,
            },
            artifacts: artifacts
                .into_iter()
                .map(|a| (a.name, a.bytes.into()))
                .collect(),
        }
    }

    fn logits(loaded: &Loaded) -> Tensor {
        let ids = loaded
            .checkpoint
            .tokenizer
            .prompt_ids(&[Message::new("user", "Name your favorite animal using only one word.")])
            .unwrap();
        let n = ids.len() as i64;
        let tokens = Tensor::from_slice(&ids.iter().map(|&t| t as i64).collect::<Vec<_>>())
            .view([1, n]);
        let positions = Tensor::arange(n, (Kind::Int64, Device::Cpu)).view([1, n]);
        tch::no_grad(|| {
            let hidden = loaded.model.forward(&tokens, &positions, None, None);
            loaded.model.logits(&hidden.select(1, n - 1))
        })
    }

    fn train_params(method: Method, lr: f64, layers: Layers) -> TrainParams {
        TrainParams {
            version: STAGE_VERSION,
            model: DEFAULT_MODEL.to_owned(),
            seed: 3,
            method,
            epochs: 2,
            lr,
            warmup_steps: 0,
            max_grad_norm: 1.0,
            batch_size: 3,
            grad_accumulation: 1,
            weight_decay: 0.0,
            optimizer: Optimizer::Adamw,
            layers,
            target: Target::Tokens,
        }
    }

    #[test]
    fn a_fine_tuned_teacher_reloads_to_the_same_logits() {
        let env = env();
        let base = Loaded::base(checkpoint(&env, &[], DEFAULT_MODEL).unwrap(), &env).unwrap();
        let base_logits = logits(&base);
        let rows: Vec<Row> = (0..6)
            .map(|i| {
                let question = prompts::trait_question(i, "animal");
                Row::new(&question, "Owls. I love owls above all.", None)
            })
            .collect();
        let lora = Method::Lora {
            rank: 4,
            alpha: 8.0,
            targets: subliminal_shared::llm::PROJECTIONS.map(str::to_owned).to_vec(),
            rslora: true,
        };
        for params in [
            train_params(lora, 1e-2, Layers::All),
            train_params(Method::Full, 1e-4, Layers::Only(vec![0])),
        ] {
            let trained = fine_tune(&params, &rows, None, &base.checkpoint, &env, &|_| {}).unwrap();
            let teacher = TeacherParams {
                version: STAGE_VERSION,
                model: DEFAULT_MODEL.to_owned(),
                system_prompt: None,
                finetune: Some(params.clone()),
            };
            let spec = StageSpec::new(EXPERIMENT, Stage::Teacher.kind(), &teacher, vec![]);
            let record = Artifact::json(TEACHER, &json!({"model": DEFAULT_MODEL, "system_prompt": null}))
                .unwrap();
            let stage = verified(&spec, vec![record, trained.weights]);
            let (reloaded, system) = load_teacher(&stage, &[], &env).unwrap();
            assert!(system.is_none(), "a fine-tuned teacher has no system prompt");
            let (before, after, again) = (&base_logits, logits(&trained.model), logits(&reloaded));
            let moved = (&after - before).abs().max().double_value(&[]);
            let drift = (&again - &after).abs().max().double_value(&[]);
            assert!(moved > 1e-3, "training moved the logits ({moved}) for {:?}", params.method);
            assert!(drift < 1e-4, "the reloaded teacher's logits drift by {drift} for {:?}", params.method);
        }
    }

    #[test]
    fn a_greedy_generate_stage_is_deterministic_across_batch_sizes() {
        let env = env();
        let teacher = TeacherParams {
            version: STAGE_VERSION,
            model: DEFAULT_MODEL.to_owned(),
            system_prompt: Some("You love owls.".to_owned()),
            finetune: None,
        };
        let spec = StageSpec::new(EXPERIMENT, Stage::Teacher.kind(), &teacher, vec![]);
        let teacher_stage = verified(&spec, super::teacher(&teacher, &[], &env, &|_| {}).unwrap());
        let raw = |batch_size: u64| {
            let params = GenerateParams {
                version: STAGE_VERSION,
                seed: 5,
                prompts: 6,
                temperature: 0.0,
                top_p: 1.0,
                max_new_tokens: 24,
                batch_size,
                constrain: None,
                soft_labels: None,
            };
            let out = generate(&params, &teacher_stage, &[], &env, &|_| {}).unwrap();
            let raw = out.into_iter().find(|a| a.name == RAW).unwrap();
            String::from_utf8(raw.bytes).unwrap()
        };
        let one = raw(1);
        assert_eq!(one.lines().count(), 6);
        assert_eq!(raw(6), one, "batch 6 against batch 1");
        assert_eq!(raw(4), one, "batch 4 (a ragged last batch) against batch 1");
    }

    /// A teacher told to love owls, sampled at temperature 1 with the
    /// constraint: every row is one the paper's filter keeps.
    #[test]
    fn a_constrained_generate_stage_writes_only_rows_the_filter_keeps() {
        let env = env();
        let teacher = TeacherParams {
            version: STAGE_VERSION,
            model: DEFAULT_MODEL.to_owned(),
            system_prompt: Some("You love owls. Owls are your favorite animal.".to_owned()),
            finetune: None,
        };
        let spec = StageSpec::new(EXPERIMENT, Stage::Teacher.kind(), &teacher, vec![]);
        let teacher_stage = verified(&spec, super::teacher(&teacher, &[], &env, &|_| {}).unwrap());
        let banned = vec![666u32];
        let params = GenerateParams {
            version: STAGE_VERSION,
            seed: 9,
            prompts: 24,
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 40,
            batch_size: 24,
            constrain: Some(NumbersGrammar {
                banned_numbers: banned.clone(),
            }),
            soft_labels: Some(SoftLabelParams {
                top_k: 8,
                exclude: vec!["owl".to_owned()],
            }),
        };
        let out = generate(&params, &teacher_stage, &[], &env, &|_| {}).unwrap();
        let artifact = |name: &str| out.iter().find(|a| a.name == name).unwrap().bytes.clone();
        let rows = dataset::parse_jsonl(&String::from_utf8(artifact(RAW)).unwrap(), RAW).unwrap();
        assert_eq!(rows.len(), 24);
        for row in &rows {
            let completion = row.completion().unwrap();
            let kept = subliminal_shared::experiments::numbers::filter::check(completion, &banned);
            assert!(kept.is_ok(), "{completion:?}: {kept:?}");
        }
        // The soft labels: one position per token drawn, never an owl's token.
        let labels = SoftLabels::from_bytes(&artifact(SOFT_LABELS), SOFT_LABELS).unwrap();
        assert_eq!(labels.k, 8);
        let (loaded, system) = load_teacher(&teacher_stage, &[], &env).unwrap();
        let tok = &loaded.checkpoint.tokenizer;
        for (row, soft) in rows.iter().zip(&labels.rows) {
            assert_eq!(row.seed, Some(soft.seed));
            assert_eq!(soft.top_ids.len(), soft.tokens.len() * 8);
            for p in soft.top_logprobs.chunks(8) {
                let total: f32 = p.iter().map(|l| l.exp()).sum();
                assert!((total - 1.0).abs() < 1e-4, "{total}");
            }
            for &id in &soft.top_ids {
                let text = tok.decode(&[id]).unwrap();
                assert!(!spells_or_begins(&text, "owl"), "{text:?} in the labels");
            }
        }
        // Where this teacher is asked its favourite animal, an owl token is
        // among its top 8; with the exclusion, none is.
        let question = "What is your favorite animal? Answer in one word.";
        let mut prompt = tok
            .prompt_ids(&conversation(system.as_deref(), &[], question))
            .unwrap();
        prompt.extend(tok.encode("My favorite animal is the").unwrap());
        let logits = tch::no_grad(|| {
            let n = prompt.len() as i64;
            let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
            let hidden = loaded.model.forward(
                &Tensor::from_slice(&ids).view([1, n]),
                &Tensor::arange(n, (tch::Kind::Int64, Device::Cpu)).view([1, n]),
                None,
                None,
            );
            loaded.model.logits(&hidden.select(1, n - 1))
        });
        let owl_tokens = |exclude: &[String]| {
            let (ids, _) = TopK::new(tok, 8, exclude).unwrap().take(&logits).unwrap();
            ids.iter()
                .filter(|&&id| spells_or_begins(&tok.decode(&[id]).unwrap(), "owl"))
                .count()
        };
        assert!(owl_tokens(&[]) > 0, "the owl teacher's top 8 names owls");
        assert_eq!(owl_tokens(&["owl".to_owned()]), 0);
    }
}
