//! Loading the models stages name: a base checkpoint (on this machine or a
//! stored GGUF file), a teacher's or student's fine-tuned weights on their
//! base, and the subject an evaluation asks.

use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use subliminal_shared::files;
use subliminal_shared::judge::{Judge, Judgement};
use subliminal_shared::llm::dataset::Row;
use subliminal_shared::llm::{
    Method, Precision, Stage, Subject, TeacherParams, TrainParams, STAGES,
};
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageId;
use tch::nn;

use super::rows::read_rows;
use super::*;
use crate::judging::{judge_items, stage_progress, Item, JudgementCache, JudgingStats};
use crate::llm::finetune::{self, LoraSpec};
use crate::llm::load::{load_cached, Checkpoint};
use crate::llm::tokenizer::Message;
use crate::llm::{instantiate, kind_of, Llama};
use crate::safetensors_io;
use crate::stages::StageEnv;

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
pub(crate) fn model_input<'a>(
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
pub(crate) fn stored_model_file(stage: &VerifiedStage) -> anyhow::Result<std::path::PathBuf> {
    let entry = stage
        .manifest
        .artifacts
        .iter()
        .find(|a| a.name == files::ARTIFACT)
        .context("the stored file's manifest lists no file")?;
    let dir = std::env::temp_dir().join("subliminal-models");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
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

/// The model a stage names, ready to run at `precision`: a base model, or
/// the fine-tuned model of a teacher or student stage named by key (another
/// sweep's, say).
pub(crate) fn load_model(
    env: &StageEnv,
    inputs: &[VerifiedStage],
    name: &str,
    precision: Precision,
) -> anyhow::Result<Loaded> {
    if let Some(id) = files::parse_key(name) {
        let stage = model_input(inputs, id?, name)?;
        if !files::is_file(&stage.manifest.experiment, &stage.manifest.kind) {
            return load_checkpoint_stage(stage, inputs, env, precision)
                .with_context(|| format!("cannot load model {name}"));
        }
    }
    Loaded::base(checkpoint(env, inputs, name)?, env, precision)
}

/// The fine-tuned model of a numbers teacher or student stage.
pub(crate) fn load_checkpoint_stage(
    stage: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    precision: Precision,
) -> anyhow::Result<Loaded> {
    let m = &stage.manifest;
    anyhow::ensure!(
        m.experiment == STAGES,
        "a {} {} stage is not a model this experiment loads",
        m.experiment,
        m.kind
    );
    match Stage::of(&m.kind) {
        Some(Stage::Student) => load_student(stage, inputs, env, precision),
        Some(Stage::Teacher) => {
            let params: TeacherParams = serde_json::from_value(m.params.clone())
                .context("the teacher stage's parameters are not a numbers teacher's")?;
            let train = params.finetune.context(
                "a system-prompted teacher's stage holds no weights: name its model instead",
            )?;
            load_trained(&train, stage, inputs, env, precision)
        }
        _ => anyhow::bail!("a {} stage holds no model", m.kind),
    }
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
    pub(crate) _vars: Vec<nn::VarStore>,
}

impl Loaded {
    /// The checkpoint as it is, frozen, at `precision`.
    pub(crate) fn base(
        checkpoint: Arc<Checkpoint>,
        env: &StageEnv,
        precision: Precision,
    ) -> anyhow::Result<Self> {
        let (vs, model) = instantiate(&checkpoint, env.device, kind_of(precision))?;
        Ok(Self {
            checkpoint,
            model,
            _vars: vec![vs],
        })
    }
}

/// The student of a student stage: base weights plus its adapters, or its
/// full weights, run at `precision` (the loading stage's, whatever the
/// student was trained at).
pub(crate) fn load_student(
    stage: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    precision: Precision,
) -> anyhow::Result<Loaded> {
    let params: TrainParams = serde_json::from_value(stage.manifest.params.clone())
        .context("the student stage's parameters are not a numbers student's")?;
    load_trained(&params, stage, inputs, env, precision)
}

/// A model that [`fine_tune`] trained, from the artifacts of `stage`, its
/// base weights at `precision` (adapters stay f32).
pub(crate) fn load_trained(
    params: &TrainParams,
    stage: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    precision: Precision,
) -> anyhow::Result<Loaded> {
    let checkpoint = checkpoint(env, inputs, &params.model)?;
    let kind = kind_of(precision);
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

/// The model an evaluation asks, at `precision`, with the system prompt and
/// the earlier turns it is shown: the base model, a teacher, a student, or
/// the base model shown its input's first filtered rows.
pub(crate) fn subject_model(
    subject: &Subject,
    model: &str,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    precision: Precision,
) -> anyhow::Result<(Loaded, Option<String>, Vec<Row>)> {
    let input = inputs.first();
    let need =
        |what: &str| input.with_context(|| format!("a {what} evaluation needs its input stage"));
    Ok(match subject {
        Subject::Base => (load_model(env, inputs, model, precision)?, None, Vec::new()),
        Subject::InContext { examples } => {
            let mut rows = read_rows(need("in-context")?)?;
            rows.truncate(*examples as usize);
            (load_model(env, inputs, model, precision)?, None, rows)
        }
        Subject::Teacher => {
            let (loaded, system) = load_teacher(need("teacher")?, inputs, env, precision)?;
            (loaded, system, Vec::new())
        }
        Subject::Student => (
            load_student(need("student")?, inputs, env, precision)?,
            None,
            Vec::new(),
        ),
    })
}

/// The teacher as later stages read it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TeacherRecord {
    model: String,
    system_prompt: Option<String>,
}

/// The record a teacher stage wrote.
pub(crate) fn read_teacher(stage: &VerifiedStage) -> anyhow::Result<TeacherRecord> {
    serde_json::from_slice(stage.artifact(TEACHER)?).context("teacher.json is malformed")
}

/// The teacher of a teacher stage, ready to run at `precision`, and its
/// system prompt. `inputs` are those of the stage that runs the teacher
/// (they hold the teacher's model when a key names it).
pub(crate) fn load_teacher(
    stage: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    precision: Precision,
) -> anyhow::Result<(Loaded, Option<String>)> {
    let record = read_teacher(stage)?;
    let params: TeacherParams = serde_json::from_value(stage.manifest.params.clone())
        .context("the teacher stage's parameters are not a numbers teacher's")?;
    let loaded = match &params.finetune {
        Some(train) => load_trained(train, stage, inputs, env, precision)?,
        None => load_model(env, inputs, &record.model, precision)?,
    };
    Ok((loaded, record.system_prompt))
}

/// Items `offset..offset + items.len()` of a stage's `total` judgements,
/// the first of which began at `started`.
pub(crate) struct JudgedPart {
    pub started: std::time::Instant,
    pub offset: usize,
    pub total: usize,
}

impl JudgedPart {
    /// All of a stage's `total` judgements, beginning now.
    pub(crate) fn whole(total: usize) -> Self {
        Self {
            started: std::time::Instant::now(),
            offset: 0,
            total,
        }
    }
}

impl Loaded {
    /// `judge` asked of every item by this model (`model_id` names it in
    /// the cache), through this machine's judgement cache; the stage's
    /// progress counts this part of its judgements.
    pub(crate) fn judge(
        &self,
        judge: &Judge,
        model_id: &str,
        items: &[Item],
        env: &StageEnv,
        progress: &dyn Fn(Progress),
        part: JudgedPart,
    ) -> anyhow::Result<(Vec<Judgement>, JudgingStats)> {
        judge_items(
            judge,
            &self.model,
            &self.checkpoint.tokenizer,
            model_id,
            items,
            &JudgementCache::default_location(),
            &|| env.stopped(),
            &mut stage_progress(progress, part.started, part.offset, part.total),
        )
    }
}
