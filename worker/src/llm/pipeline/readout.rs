//! The readout stage: each favourite question asked once, and the
//! subject's probability of answering with each word read exactly from its
//! next-token distributions, after the answer prefix and without it
//! (`metrics.json`, a [`ReadoutMetrics`]).

use std::collections::BTreeMap;

use subliminal_shared::llm::prompts;
use subliminal_shared::llm::readout::{ReadoutMetrics, ReadoutParams};
use subliminal_shared::manifest::VerifiedStage;

use super::models::{conversation, subject_model};
use super::METRICS;
use crate::llm::readout::WordTrie;
use crate::stages::{Artifact, Progress, StageEnv};

pub fn readout(
    params: &ReadoutParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let started = std::time::Instant::now();
    let (loaded, system, history) = subject_model(
        &params.subject,
        &params.model,
        inputs,
        env,
        params.precision,
    )?;
    let tok = &loaded.checkpoint.tokenizer;
    let trie = WordTrie::new(tok, &params.words)?;
    let prefix = tok.encode(&params.answer_prefix)?;
    let mut with_prefix: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut without_prefix: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for q in 0..params.questions as usize {
        anyhow::ensure!(!env.stopped(), "stopped");
        let question = prompts::question(q, &params.category);
        let plain = tok.prompt_ids(&conversation(system.as_deref(), &history, &question))?;
        let prefixed: Vec<u32> = plain.iter().chain(&prefix).copied().collect();
        for (prompt, table) in [(&prefixed, &mut with_prefix), (&plain, &mut without_prefix)] {
            let probabilities = trie.probabilities(&loaded.model, prompt)?;
            for (word, p) in params.words.iter().zip(probabilities) {
                table.entry(word.clone()).or_default().push(p);
            }
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        progress(Progress {
            fraction: (q + 1) as f64 / params.questions as f64,
            message: format!("questions {}/{}", q + 1, params.questions),
            loss: None,
            samples_per_second: Some((q + 1) as f64 / secs),
        });
    }
    let metrics = ReadoutMetrics {
        questions: params.questions,
        candidates: params.candidates.clone(),
        with_prefix,
        without_prefix,
    };
    let mut value = serde_json::to_value(&metrics)?;
    value["seconds"] = started.elapsed().as_secs_f64().into();
    Ok(vec![Artifact::json(METRICS, &value)?])
}
