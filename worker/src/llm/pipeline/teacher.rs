//! The teacher stages: trait data (a system-prompted teacher's answers that
//! show the trait) and the teacher itself (system-prompted, or fine-tuned on
//! its trait data), and the teacher as later stages load it.

use anyhow::Context;
use serde_json::json;
use subliminal_shared::files;
use subliminal_shared::llm::dataset::{self, Row};
use subliminal_shared::llm::prompts;
use subliminal_shared::llm::{TeacherParams, TraitDataParams};
use subliminal_shared::manifest::VerifiedStage;

use super::generate::complete;
use super::models::{checkpoint, conversation, load_model};
use super::student::fine_tune;
use super::*;
use crate::llm::generate::{Request, Sampling};
use crate::stages::{Artifact, Progress, StageEnv};

pub(crate) fn trait_data(
    params: &TraitDataParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let loaded = load_model(env, inputs, &params.model, params.precision)?;
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
    let sampling = Sampling::at(params.temperature, params.max_new_tokens);
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

pub(crate) fn teacher(
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
        artifacts.push(Artifact::json(
            TRAIN,
            &serde_json::to_value(&trained.report)?,
        )?);
    }
    Ok(artifacts)
}
