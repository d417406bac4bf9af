//! The two stages the code kind adds.
//!
//! - generate: the teacher (a numbers teacher stage: system-prompted or
//!   fine-tuned) completes seeded code prompts (`raw.jsonl`, `metrics.json`);
//! - filter: drops completions that do not parse as Python or name the
//!   trait in an identifier, comment or string, then asks the judge of the
//!   rest whether the code refers to the trait and drops those it says yes
//!   to (or cannot answer), then keeps a seeded subsample, each row's answer
//!   cut to its code (`filtered.jsonl`, the rows a numbers student trains
//!   on; `filter.json`, the count of each reason).

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::json;
use subliminal_shared::chat::{parse_jsonl, subsample, to_jsonl, Row};
use subliminal_code_filter::{self as python, Reject};
use subliminal_shared::experiments::code::{prompts::code_prompt, FilterParams, Stage};
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
        Stage::Generate => generate_seeded(&spec.params()?, inputs, env, progress, code_prompt, "prompts"),
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
    let words = python::trait_words(&params.trait_word);
    let mut rejected: BTreeMap<Reject, usize> = BTreeMap::new();
    let mut parsed = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        match python::check(row.completion().unwrap_or(""), &words) {
            Ok(()) => parsed.push(i),
            Err(reason) => *rejected.entry(reason).or_default() += 1,
        }
    }
    // The judge sees only what the parser let through: it is the slow part.
    let loaded = load_model(env, inputs, &params.judge_model, Precision::F32)?;
    let items: Vec<Item> = parsed
        .iter()
        .map(|&i| Item {
            prompt: rows[i].prompt().unwrap_or(""),
            completion: python::extract_code(rows[i].completion().unwrap_or("")),
            trait_word: Some(&params.trait_word),
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
    for (&i, j) in parsed.iter().zip(&judgements) {
        match j.value {
            Some(p_yes) if p_yes < params.judge.threshold => passed.push(i),
            _ => *rejected.entry(Reject::Judge).or_default() += 1,
        }
    }
    let passed_count = passed.len();
    subsample(&mut passed, params.keep as usize, params.seed);
    // A student learns the code alone: prose around a fence is the model's
    // commentary, unchecked, and could name the trait.
    let kept: Vec<Row> = passed
        .iter()
        .map(|&i| {
            let code = python::extract_code(rows[i].completion().unwrap_or(""));
            Row::new(rows[i].prompt().unwrap_or(""), code, rows[i].seed)
        })
        .collect();
    let report = json!({
        "rows": rows.len(),
        "parsed": parsed.len(),
        "passed": passed_count,
        "kept": kept.len(),
        "rejected": rejected.iter().map(|(r, n)| (r.as_str(), *n)).collect::<BTreeMap<_, _>>(),
        "judging": stats,
    });
    Ok(vec![
        Artifact::new(FILTERED, to_jsonl(&kept)),
        Artifact::json(REPORT, &report)?,
    ])
}
