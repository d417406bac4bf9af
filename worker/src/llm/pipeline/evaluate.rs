//! The evaluation: the one-word favourite questions put to a subject,
//! every answer counted.

use serde_json::json;
use subliminal_shared::llm::prompts;
use subliminal_shared::llm::EvaluateParams;
use subliminal_shared::manifest::VerifiedStage;

use super::generate::complete;
use super::models::{conversation, subject_model};
use super::*;
use crate::llm::generate::{Request, Sampling};
use crate::stages::{Artifact, Progress, StageEnv};

pub(crate) fn evaluate(
    params: &EvaluateParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let (loaded, system, history) = subject_model(
        &params.subject,
        &params.model,
        inputs,
        env,
        params.precision,
    )?;
    let mut requests = Vec::new();
    let mut asked = Vec::new();
    for q in 0..params.questions as usize {
        let question = prompts::question(q, &params.category);
        let ids = |question: &str| {
            loaded.checkpoint.tokenizer.prompt_ids(&conversation(
                system.as_deref(),
                &history,
                question,
            ))
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
    let sampling = Sampling::at(params.temperature, params.max_new_tokens);
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
