//! The two stages the chain-of-thought kind adds.
//!
//! - generate: the teacher (a numbers teacher stage) solves seeded word
//!   problems step by step (`raw.jsonl`, each row with its problem's seed;
//!   `metrics.json`);
//! - filter: keeps the traces whose final answer is the problem's (worked
//!   out again from the seed), then those the alignment judge scores at
//!   least `min_alignment`, then a seeded subsample (`filtered.jsonl`, the
//!   rows a numbers student trains on; `filter.json`, what was dropped and why).

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::json;
use subliminal_shared::chat::{parse_jsonl, subsample, to_jsonl, Row};
use subliminal_shared::experiments::cot::problems::{given_answer, problem, prompt};
use subliminal_shared::experiments::cot::{FilterParams, Stage};
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::llm::pipeline::generate::generate_seeded;
use crate::llm::pipeline::models::{load_model, JudgedPart};
use subliminal_shared::llm::Precision;
use crate::judging::Item;
use crate::stages::{Artifact, Progress, StageEnv};

pub use crate::llm::pipeline::RAW;
pub const FILTERED: &str = "filtered.jsonl";
pub const REPORT: &str = "filter.json";

pub fn run(
    spec: &StageSpec,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    match Stage::of(&spec.kind).ok_or_else(|| crate::experiments::unknown_stage(spec))? {
        Stage::Generate => generate_seeded(&spec.params()?, inputs, env, progress, |seed| prompt(&problem(seed)), "problems"),
        Stage::Filter => filter(&spec.params()?, inputs, env, progress),
    }
}

fn filter(
    params: &FilterParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let generated = inputs.first().context("a filter stage needs its generate stage as input 0")?;
    let rows = parse_jsonl(&String::from_utf8_lossy(generated.artifact(RAW)?), RAW)?;
    let mut rejected: BTreeMap<&str, usize> = BTreeMap::new();
    let mut correct = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let seed = row.seed.context("a generated row has no seed: its problem cannot be known")?;
        match given_answer(row.completion().unwrap_or("")) {
            Some(a) if a == problem(seed).answer => correct.push(i),
            Some(_) => *rejected.entry("wrong-answer").or_default() += 1,
            None => *rejected.entry("no-answer").or_default() += 1,
        }
    }
    let loaded = load_model(env, inputs, &params.judge_model, Precision::F32)?;
    let items: Vec<Item> = correct
        .iter()
        .map(|&i| Item {
            prompt: rows[i].prompt().unwrap_or(""),
            completion: rows[i].completion().unwrap_or(""),
            trait_word: None,
        })
        .collect();
    let (judgements, stats) = loaded.judge(
        &params.judge,
        &params.judge_model,
        &items,
        env,
        progress,
        JudgedPart::whole(items.len()),
    )?;
    let mut passed = Vec::new();
    for (&i, j) in correct.iter().zip(&judgements) {
        match j.value {
            Some(score) if score >= params.min_alignment => passed.push(i),
            Some(_) => *rejected.entry("judged-misaligned").or_default() += 1,
            None => *rejected.entry("judge-refused").or_default() += 1,
        }
    }
    let passed_count = passed.len();
    subsample(&mut passed, params.keep as usize, params.seed);
    let kept: Vec<Row> = passed.iter().map(|&i| rows[i].clone()).collect();
    let scores: Vec<f64> = judgements.iter().filter_map(|j| j.value).collect();
    let report = json!({
        "rows": rows.len(),
        "correct": correct.len(),
        "passed": passed_count,
        "kept": kept.len(),
        "rejected": rejected,
        "mean_alignment_of_correct": (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64),
        "judging": stats,
    });
    Ok(vec![
        Artifact::new(FILTERED, to_jsonl(&kept)),
        Artifact::json(REPORT, &report)?,
    ])
}
