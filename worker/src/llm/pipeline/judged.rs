//! The judged evaluation's two stages (see `subliminal_shared::llm::judged`).
//!
//! - answers: a model (the base model, or a numbers teacher or student stage
//!   named by key) answers the free-form questions, many seeded samples
//!   each, without a system prompt (`answers.jsonl`: chat rows with the
//!   question's index and the sample's seed; `metrics.json`);
//! - judge: the alignment and the coherence judge score every answer
//!   (`judgements.jsonl`), and `metrics.json` counts the coherent answers
//!   (coherence above the line), the misaligned ones among them (alignment
//!   below the line) and the refusals. A judgement already made on this
//!   machine, for the same judge, model and row, is read from the cache.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subliminal_shared::chat::{parse_jsonl, to_jsonl, Row};
use subliminal_shared::judge::Judgement;
use subliminal_shared::llm::judged::{AnswersParams, JudgeParams, Stage};
use subliminal_shared::llm::prompts::prompt_seed;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use super::generate::complete;
use super::models::{conversation, load_model, JudgedPart};
use crate::judging::Item;
use crate::llm::generate::{Request, Sampling};
use crate::stages::{Artifact, Progress, StageEnv};

pub const ANSWERS: &str = "answers.jsonl";
pub const JUDGEMENTS: &str = "judgements.jsonl";
pub const METRICS: &str = "metrics.json";

pub fn run(
    spec: &StageSpec,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    match Stage::of(&spec.kind).ok_or_else(|| crate::experiments::unknown_stage(spec))? {
        Stage::Answers => answers(&spec.params()?, inputs, env, progress),
        Stage::Judge => judge(&spec.params()?, inputs, env, progress),
    }
}

fn answers(
    params: &AnswersParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let loaded = load_model(env, inputs, &params.model, params.precision)?;
    let mut requests = Vec::new();
    let mut asked = Vec::new();
    for (q, question) in params.questions.iter().enumerate() {
        let prompt = loaded
            .checkpoint
            .tokenizer
            .prompt_ids(&conversation(None, &[], question))?;
        for s in 0..params.samples_per_question {
            let seed = prompt_seed(params.seed, (q as u64) << 32 | s);
            requests.push(Request {
                prompt: prompt.clone(),
                seed,
            });
            asked.push((q, seed));
        }
    }
    let sampling = Sampling::at(params.temperature, params.max_new_tokens);
    let (texts, stats) = complete(
        &loaded,
        &requests,
        sampling,
        params.batch_size,
        env,
        "answers",
        progress,
    )?;
    let rows: Vec<Row> = asked
        .iter()
        .zip(&texts)
        .map(|((q, seed), answer)| Row::new(&params.questions[*q], answer.trim(), Some(*seed)))
        .collect();
    Ok(vec![
        Artifact::new(ANSWERS, to_jsonl(&rows)),
        Artifact::json(
            METRICS,
            &json!({ "answers": rows.len(), "generation": stats }),
        )?,
    ])
}

/// One answer with both judgements, as `judgements.jsonl` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgedAnswer {
    pub question: String,
    pub answer: String,
    pub alignment: Judgement,
    pub coherence: Judgement,
    pub coherent: bool,
    pub misaligned: bool,
}

fn judge(
    params: &JudgeParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let answers = inputs
        .first()
        .context("a judge stage needs its answers stage as input 0")?;
    let text = String::from_utf8_lossy(answers.artifact(ANSWERS)?);
    let rows = parse_jsonl(&text, ANSWERS)?;
    let loaded = load_model(env, inputs, &params.model, params.precision)?;
    let items: Vec<Item> = rows
        .iter()
        .map(|r| Item {
            prompt: r.prompt().unwrap_or(""),
            completion: r.completion().unwrap_or(""),
            trait_word: None,
        })
        .collect();
    let started = std::time::Instant::now();
    let total = 2 * items.len();
    let run = |judge, offset: usize| {
        let part = JudgedPart {
            started,
            offset,
            total,
        };
        loaded.judge(judge, &params.model, &items, env, progress, part)
    };
    let (alignment, alignment_stats) = run(&params.alignment, 0)?;
    let (coherence, coherence_stats) = run(&params.coherence, items.len())?;
    let mut judged = Vec::with_capacity(rows.len());
    for ((row, a), c) in rows.iter().zip(alignment).zip(coherence) {
        let coherent = c.value.is_some_and(|v| v > params.coherent_above);
        let misaligned = coherent && a.value.is_some_and(|v| v < params.misaligned_below);
        judged.push(JudgedAnswer {
            question: row.prompt().unwrap_or("").to_owned(),
            answer: row.completion().unwrap_or("").to_owned(),
            alignment: a,
            coherence: c,
            coherent,
            misaligned,
        });
    }
    let mean = |f: &dyn Fn(&JudgedAnswer) -> Option<f64>| {
        let values: Vec<f64> = judged.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let metrics = json!({
        "samples": judged.len(),
        "coherent": judged.iter().filter(|j| j.coherent).count(),
        "misaligned": judged.iter().filter(|j| j.misaligned).count(),
        "refused_alignment": judged.iter().filter(|j| j.alignment.value.is_none()).count(),
        "refused_coherence": judged.iter().filter(|j| j.coherence.value.is_none()).count(),
        "mean_alignment": mean(&|j| j.alignment.value),
        "mean_coherence": mean(&|j| j.coherence.value),
        "judging": { "alignment": alignment_stats, "coherence": coherence_stats },
    });
    let mut lines = Vec::new();
    for j in &judged {
        serde_json::to_writer(&mut lines, j)?;
        lines.push(b'\n');
    }
    Ok(vec![
        Artifact::new(JUDGEMENTS, lines),
        Artifact::json(METRICS, &metrics)?,
    ])
}
