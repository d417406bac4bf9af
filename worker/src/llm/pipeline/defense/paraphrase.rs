//! `paraphrase`: the stage's model (the student's base model) rewrites the
//! prompt of every row of input 0, up to `paraphrase::ATTEMPTS` samples a
//! row, and keeps the first rewrite the shared crate's check accepts; the
//! completions and prompt seeds stay, so a soft-label student still finds
//! its labels. Rows are neither dropped nor reordered.

use anyhow::Context;
use serde_json::json;
use subliminal_shared::llm::dataset;
use subliminal_shared::llm::defense::paraphrase::{
    accepted, conversation, new_word_share, ATTEMPTS, MAX_NEW_TOKENS, TEMPERATURE, TOP_P,
};
use subliminal_shared::llm::prompts::prompt_seed;

use super::{ApplyDefense, Job};
use crate::llm::generate::{Request, Sampling};
use crate::llm::pipeline::generate::complete;
use crate::llm::pipeline::models::{load_model, Loaded};
use crate::llm::pipeline::FILTERED;
use crate::llm::tokenizer::Message;
use crate::stages::{Artifact, Progress};

/// Rewrites sampled at once.
const BATCH_SIZE: u64 = 32;

/// The `paraphrase` defense.
pub(super) struct Paraphrase;

impl ApplyDefense for Paraphrase {
    fn apply(&self, job: &Job) -> anyhow::Result<(Vec<Artifact>, serde_json::Value)> {
        let name =
            job.params.model.as_deref().context(
                "paraphrase needs the model that rewrites the prompts (DefendParams.model)",
            )?;
        let model = load_model(job.env, job.inputs, name, job.params.precision)?;
        let started = std::time::Instant::now();
        let rewrites = rewrite_prompts(&model, job)?;
        let mut rows = job.rows.clone();
        let (mut rewritten, mut new_words) = (0usize, 0.0f64);
        for (row, rewrite) in rows.iter_mut().zip(rewrites) {
            let Some(rewrite) = rewrite else { continue };
            new_words += new_word_share(row.prompt().unwrap_or(""), &rewrite);
            *row = row.with_prompt(&rewrite);
            rewritten += 1;
        }
        let metrics = json!({
            "defense": job.params.defense.to_string(),
            "rows_in": job.rows.len(),
            "rows_out": rows.len(),
            "rewritten": rewritten,
            "rewritten_share": rewritten as f64 / rows.len().max(1) as f64,
            "new_word_share": new_words / rewritten.max(1) as f64,
            "attempts": ATTEMPTS,
            "seconds": started.elapsed().as_secs_f64(),
        });
        Ok((
            vec![Artifact::new(FILTERED, dataset::to_jsonl(&rows))],
            metrics,
        ))
    }
}

/// Each of the job's rows' accepted rewrite of its prompt, or `None` where
/// every attempt failed the check: each round samples the rows still
/// without one, with a seed of the stage's, the row's and the round's.
fn rewrite_prompts(model: &Loaded, job: &Job) -> anyhow::Result<Vec<Option<String>>> {
    let (rows, seed) = (&job.rows, job.params.seed);
    let tok = &model.checkpoint.tokenizer;
    let prompts: Vec<&str> = rows.iter().map(|r| r.prompt().unwrap_or("")).collect();
    let asks = prompts
        .iter()
        .map(|p| {
            let messages: Vec<Message> = conversation(p)
                .into_iter()
                .map(|(role, text)| Message::new(role, text))
                .collect();
            tok.prompt_ids(&messages)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut found: Vec<Option<String>> = vec![None; rows.len()];
    let sampling = Sampling::nucleus(TEMPERATURE, TOP_P, MAX_NEW_TOKENS);
    for attempt in 0..ATTEMPTS {
        let open: Vec<usize> = (0..rows.len()).filter(|&i| found[i].is_none()).collect();
        if open.is_empty() {
            break;
        }
        let requests: Vec<Request> = open
            .iter()
            .map(|&i| Request {
                prompt: asks[i].clone(),
                seed: prompt_seed(seed, i as u64 * ATTEMPTS + attempt),
            })
            .collect();
        let done_before = rows.len() - open.len();
        let progress = |p: Progress| {
            (job.progress)(Progress {
                fraction: (attempt as f64 + p.fraction) / ATTEMPTS as f64,
                message: format!(
                    "attempt {}/{ATTEMPTS}: {}, {done_before} rewritten before it",
                    attempt + 1,
                    p.message
                ),
                ..p
            })
        };
        let what = "rewrites";
        let (texts, _) = complete(
            model, &requests, sampling, BATCH_SIZE, job.env, what, &progress,
        )?;
        for (&i, text) in open.iter().zip(&texts) {
            found[i] = accepted(prompts[i], text);
        }
    }
    Ok(found)
}
