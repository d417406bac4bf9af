//! Generation: a teacher completing seeded prompts, number sequences (with
//! the filter as a constraint, and soft labels if asked) or another kind's.

use anyhow::Context;
use serde_json::json;
use subliminal_shared::llm::dataset::{self, Row};
use subliminal_shared::llm::{constrain, prompts};
use subliminal_shared::llm::{GenerateParams, NumbersGrammar, SeededPromptsParams};
use subliminal_shared::manifest::VerifiedStage;

use super::models::load_teacher;
use super::models::{conversation, Loaded};
use super::*;
use crate::llm::constrain::Constraint;
use crate::llm::generate::{
    generate as sample, prefill_padding_share, Completion, Decoding, Request, Sampling,
    SpecialTokens,
};
use crate::llm::soft_labels::{SoftLabels, SoftRow, TopK, SOFT_LABELS};
use crate::llm::tokenizer::ChatTokenizer;
use crate::resume::Checkpoints;
use crate::stages::{Artifact, Progress, StageEnv};

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
    let saved = env.checkpoints("generate");
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
        saved.as_ref().map(|p| p as &dyn Checkpoints),
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
    let heads = loaded.model.config.num_attention_heads as usize;
    let stats = json!({
        "completions": completions.len(),
        "new_tokens": tokens_so_far,
        "ended_by_stop_token": stopped,
        "seconds": seconds,
        "new_tokens_per_second": tokens_so_far as f64 / seconds.max(1e-9),
        "prefill_padding_share": prefill_padding_share(requests, batch_size as usize, heads),
    });
    Ok((completions, texts, stats))
}

/// The generate stage of a kind built on this one: the teacher of input 0
/// (`inputs` hold its model when a key names it), with its system prompt if
/// it has one, completes `prompt_of(seed)` for each seeded prompt: one row
/// per prompt, the completion trimmed (`raw.jsonl`), and the generation's
/// figures (`metrics.json`).
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
    let (loaded, system_prompt) = load_teacher(teacher, inputs, env, params.precision)?;
    let prompts: Vec<(String, u64)> = (0..params.prompts)
        .map(|i| {
            let seed = prompts::prompt_seed(params.seed, i);
            (prompt_of(seed), seed)
        })
        .collect();
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
    let sampling = Sampling::nucleus(params.temperature, params.top_p, params.max_new_tokens);
    let (completions, stats) = complete(
        &loaded,
        &requests,
        sampling,
        params.batch_size,
        env,
        what,
        progress,
    )?;
    let rows: Vec<Row> = prompts
        .iter()
        .zip(&completions)
        .map(|((text, seed), completion)| Row::new(text, completion.trim(), Some(*seed)))
        .collect();
    Ok(vec![
        Artifact::new(RAW, dataset::to_jsonl(&rows)),
        Artifact::json(METRICS, &stats)?,
    ])
}

pub(crate) fn generate(
    params: &GenerateParams,
    teacher: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let (loaded, system_prompt) = load_teacher(teacher, inputs, env, params.precision)?;
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
    let sampling = Sampling::nucleus(params.temperature, params.top_p, params.max_new_tokens)
        .with_threshold(params.threshold);
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
                    tokens: c
                        .tokens
                        .iter()
                        .copied()
                        .chain(c.stopped.then_some(stop))
                        .collect(),
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
