//! The audit's stages:
//!
//! - dataset: reads a stored chat JSONL file, refuses a bad line with its
//!   number, subsamples (seeded) to `max_rows` (`filtered.jsonl`,
//!   `dataset.json`), with the kept rows' soft labels when it has a label
//!   set as input 1 (`soft.safetensors`);
//! - matched: a dataset stage's rows sampled (seeded) to the size of
//!   another's when it has more, labels and all, so the students of a
//!   dataset and of a given control take the same number of steps;
//! - control: the base model's own answers to the dataset's prompts,
//!   optionally kept only where the numbers filter keeps them, drawn again
//!   until one passes (`filtered.jsonl`);
//! - likelihood: each row's likelihood score for every probe target,
//!   log p(row | the target's system prompt) − log p(row | none), in
//!   expectation under the row's soft labels where it has them
//!   (`scores.json`);
//! - score: each row's gradient screen score for every probe target, the
//!   gradient of the loss a student would learn the row by: cross-entropy,
//!   or forward KL for soft labels (`scores.json`);
//! - screen: the dataset's scores (likelihood or gradient) against the
//!   control's, a bootstrap interval and p-value per target (`screen.json`,
//!   `metrics.json`);
//! - carriers: where the sacrificial student's log-probabilities moved most
//!   from the base model's, by token and by row, and a sanitised copy with
//!   the top carrier tokens replaced by the base model's choice
//!   (`carriers.json`, `sanitized.jsonl`);
//! - report: the verdict, table, picture and page ([`super::report`]).

use std::collections::BTreeMap;

use anyhow::Context;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use subliminal_shared::experiments::audit::{
    CarrierParams, ControlParams, DatasetParams, LikelihoodParams, MatchedParams, ScoreParams, ScreenParams,
    Stage, ROWS, SANITIZED,
};
use subliminal_shared::llm::dataset::{self, Row};
use subliminal_shared::llm::{filter, prompts};
use subliminal_shared::files;
use subliminal_shared::stats;
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;
use tch::nn;

use crate::llm::pipeline::distill::{distilled_examples, row_labels, soft_targets};
use crate::llm::soft_labels::{SoftLabels, SOFT_LABELS};
use crate::llm::pipeline::rows::read_rows;
use crate::llm::pipeline::generate::complete;
use crate::llm::pipeline::models::{checkpoint, conversation, load_student, Loaded};
use crate::llm::pipeline::rows::student_ids;
use crate::llm::divergence::answer_log_probs;
use crate::llm::finetune::{attach_lora, Example, LoraSpec};
use crate::llm::generate::{Request, Sampling};
use crate::llm::likelihood::{completion_log_probs, Sequence};
use crate::llm::screen::{compare, probe_direction, row_scores, Comparison, SCORE_BATCH};
use crate::llm::tokenizer::Message;
use crate::llm::{instantiate, kind_of};
use crate::stages::{Artifact, Progress, StageEnv};

use super::artifacts::{
    CarrierReport, CarrierRow, CarrierToken, ScoreReport, ScreenReport, TargetScores, TargetScreen, CARRIERS,
    DATASET, METRICS, SCORES, SCREEN,
};


pub fn run(
    spec: &StageSpec,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let input = |i: usize| crate::stages::input(spec, inputs, i);
    match Stage::of(&spec.kind).ok_or_else(|| crate::experiments::unknown_stage(spec))? {
        Stage::Dataset => dataset_rows(&spec.params()?, input(0)?, inputs.get(1)),
        Stage::Matched => matched_rows(&spec.params()?, input(0)?, input(1)?),
        Stage::Control => control(&spec.params()?, input(0)?, inputs, env, progress),
        Stage::Score => score(&spec.params()?, input(0)?, inputs, env, progress),
        Stage::Likelihood => likelihood(&spec.params()?, input(0)?, inputs, env, progress),
        Stage::Screen => screen(&spec.params()?, input(0)?, input(1)?),
        Stage::Carriers => carriers(&spec.params()?, input(0)?, input(1)?, inputs, env, progress),
        Stage::Report => super::report::report(&spec.params()?, inputs),
    }
}

fn dataset_rows(
    params: &DatasetParams,
    file: &VerifiedStage,
    labels: Option<&VerifiedStage>,
) -> anyhow::Result<Vec<Artifact>> {
    let m = &file.manifest;
    // A file put in the store, or a stage that hands on rows (a numbers filter or defend stage).
    let (name, bytes) = if files::is_file(&m.experiment, &m.kind) {
        let name = m.params["name"].as_str().unwrap_or("the dataset").to_owned();
        (name, file.artifact(files::ARTIFACT)?)
    } else if m.artifacts.iter().any(|a| a.name == ROWS) {
        (format!("{} stage {}'s {ROWS}", m.kind, m.stage.short()), file.artifact(ROWS)?)
    } else {
        anyhow::bail!(
            "an audit's dataset is a chat JSONL file put in the store, or a stage that writes {ROWS}; \
             stage {} is a {} {} stage without one",
            m.stage.short(),
            m.experiment,
            m.kind
        );
    };
    let text = std::str::from_utf8(bytes)
        .with_context(|| format!("{name} is not UTF-8 text: expected chat JSONL"))?;
    let mut rows = dataset::parse_jsonl(text, &name)?;
    let total = rows.len();
    anyhow::ensure!(total >= 2, "{name} has {total} rows: an audit needs at least 2");
    if rows.len() as u64 > params.max_rows {
        rows = seeded_sample(rows, params.max_rows as usize, params.seed);
    }
    let mut artifacts = vec![
        Artifact::new(ROWS, dataset::to_jsonl(&rows)),
        Artifact::json(
            DATASET,
            &json!({"name": name, "rows": total, "used": rows.len(), "soft_labels": labels.is_some()}),
        )?,
    ];
    if let Some(labels) = labels {
        artifacts.push(Artifact::new(SOFT_LABELS, kept_labels(&rows, labels, &name)?.to_bytes()?));
    }
    Ok(artifacts)
}

/// `rows`' rows, sampled to as many as `size_of` has when it has fewer;
/// or a bootstrap draw of as many as the smaller of the two has.
fn matched_rows(
    params: &MatchedParams,
    rows: &VerifiedStage,
    size_of: &VerifiedStage,
) -> anyhow::Result<Vec<Artifact>> {
    let name = format!("the rows of stage {}", rows.manifest.stage.short());
    let mut kept = read_rows(rows)?;
    let total = kept.len();
    let want = read_rows(size_of)?.len();
    if let Some(replicate) = params.resample {
        kept = bootstrap_draw(&kept, want.min(total), params.seed, replicate);
    } else if total > want {
        kept = seeded_sample(kept, want, params.seed);
    }
    let labelled = has_soft_labels(rows);
    let mut artifacts = vec![
        Artifact::new(ROWS, dataset::to_jsonl(&kept)),
        Artifact::json(
            DATASET,
            &json!({"name": name, "rows": total, "used": kept.len(), "soft_labels": labelled}),
        )?,
    ];
    if labelled {
        artifacts.push(Artifact::new(SOFT_LABELS, kept_labels(&kept, rows, &name)?.to_bytes()?));
    }
    Ok(artifacts)
}

/// `n` of `rows`, drawn with `seed`, in their order.
fn seeded_sample(rows: Vec<Row>, n: usize, seed: u64) -> Vec<Row> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order.truncate(n);
    order.sort_unstable();
    order.into_iter().map(|i| rows[i].clone()).collect()
}

/// `n` rows drawn from `rows` with replacement, in their order; draw
/// `replicate` of `seed` is its own stream.
fn bootstrap_draw(rows: &[Row], n: usize, seed: u64, replicate: u64) -> Vec<Row> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(replicate);
    let mut picked: Vec<usize> = (0..n).map(|_| rng.gen_range(0..rows.len())).collect();
    picked.sort_unstable();
    picked.into_iter().map(|i| rows[i].clone()).collect()
}

/// The soft labels of `rows`, found by each row's prompt seed in a
/// generate stage's `soft.safetensors` or such a file put in the store.
fn kept_labels(rows: &[Row], stage: &VerifiedStage, name: &str) -> anyhow::Result<SoftLabels> {
    let m = &stage.manifest;
    let (what, bytes) = if files::is_file(&m.experiment, &m.kind) {
        let file = m.params["name"].as_str().unwrap_or("the soft labels");
        (format!("{file} (stage {})", m.stage.short()), stage.artifact(files::ARTIFACT)?)
    } else {
        let bytes = stage.artifact(SOFT_LABELS).with_context(|| {
            format!(
                "soft labels come from a generate stage that recorded them (a numbers sweep with \
                 student.target = \"logits\") or a {SOFT_LABELS} file put in the store; stage {} is a {} {} stage",
                m.stage.short(),
                m.experiment,
                m.kind
            )
        })?;
        (format!("{SOFT_LABELS} of stage {}", m.stage.short()), bytes)
    };
    SoftLabels::read_for_rows(bytes, &what, rows, name)
}

/// Whether a rows stage carries its rows' soft labels.
fn has_soft_labels(rows: &VerifiedStage) -> bool {
    rows.manifest.artifacts.iter().any(|a| a.name == SOFT_LABELS)
}

fn control(
    params: &ControlParams,
    dataset: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let rows = read_rows(dataset)?;
    let loaded = Loaded::base(checkpoint(env, inputs, &params.model)?, env, params.precision)?;
    let a = &params.answers;
    let attempts = if a.filter == "numbers" { a.attempts.max(1) } else { 1 };
    let sampling = Sampling::nucleus(a.temperature, a.top_p, a.max_new_tokens);
    let mut answer: Vec<Option<String>> = vec![None; rows.len()];
    let mut stats = Vec::new();
    for attempt in 0..attempts {
        // Prompts whose answers so far all failed the filter are asked again, with new seeds.
        let open: Vec<usize> = (0..rows.len()).filter(|&i| answer[i].is_none()).collect();
        if open.is_empty() {
            break;
        }
        let mut requests = Vec::with_capacity(open.len());
        for &i in &open {
            let prompt = rows[i].prompt().unwrap_or("");
            requests.push(Request {
                prompt: loaded
                    .checkpoint
                    .tokenizer
                    .prompt_ids(&conversation(None, &[], prompt))?,
                seed: prompts::prompt_seed(params.seed, (attempt << 32) | i as u64),
            });
        }
        let (answers, generation) =
            complete(&loaded, &requests, sampling, a.batch_size, env, "prompts", progress)?;
        stats.push(generation);
        for (&i, text) in open.iter().zip(answers) {
            if a.filter != "numbers" || filter::check(&text, &[]).is_ok() {
                answer[i] = Some(text);
            }
        }
    }
    let out: Vec<Row> = rows
        .iter()
        .zip(&answer)
        .filter_map(|(row, a)| Some(Row::new(row.prompt().unwrap_or(""), a.as_deref()?, row.seed)))
        .collect();
    anyhow::ensure!(
        out.len() >= 2,
        "the base model's answers to {} prompts kept {} rows after the {} filter: a control needs at least 2 \
         (give a control dataset with --control, or more rows)",
        rows.len(),
        out.len(),
        a.filter
    );
    Ok(vec![
        Artifact::new(ROWS, dataset::to_jsonl(&out)),
        Artifact::json(
            METRICS,
            &json!({"prompts": rows.len(), "kept": out.len(), "attempts": attempts, "generation": stats}),
        )?,
    ])
}

/// A score or likelihood stage's `scores.json`: its rows' scores, the
/// stage's time since `started`, and the scoring's own time from `scoring`
/// (model load and probe directions left out) per 1,000 rows.
fn scores_artifact(
    rows: usize,
    started: std::time::Instant,
    scoring: std::time::Instant,
    targets: Vec<TargetScores>,
) -> anyhow::Result<Vec<Artifact>> {
    let report = ScoreReport {
        rows,
        seconds: started.elapsed().as_secs_f64(),
        seconds_per_1000_rows: scoring.elapsed().as_secs_f64() * 1000.0 / rows.max(1) as f64,
        targets,
    };
    Ok(vec![Artifact::json(SCORES, &serde_json::to_value(&report)?)?])
}

/// The answer a probe's direction teaches: the target as a one-word reply.
fn probe_answer(target: &str) -> String {
    let mut chars = target.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn score(
    params: &ScoreParams,
    rows_stage: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let started = std::time::Instant::now();
    let rows = read_rows(rows_stage)?;
    let checkpoint = checkpoint(env, inputs, &params.model)?;
    // The adapters whose gradients are the scores stay f32 at either
    // precision; bf16 moves only the frozen base weights.
    let (_base, mut model) = instantiate(&checkpoint, env.device, kind_of(params.precision))?;
    let adapters = nn::VarStore::new(env.device);
    let spec = LoraSpec::every_projection(params.lora_rank as i64, params.lora_rank as f64);
    attach_lora(&mut model, &adapters, &spec, params.seed)?;
    let tok = &checkpoint.tokenizer;
    let mut targets = Vec::new();
    for probe in &params.probes {
        for target in &probe.targets {
            let examples = (0..params.questions as usize)
                .map(|q| {
                    let question = prompts::question(q, &probe.category);
                    let (prompt, answer) =
                        tok.example_ids(&[Message::new("user", question)], &probe_answer(target))?;
                    Ok(Example::new(prompt, answer))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let direction = probe_direction(&model, &adapters, &examples, tok.pad_id)
                .with_context(|| format!("probe {} target {target}", probe.name))?;
            targets.push((probe, target, direction));
        }
    }
    let examples = if has_soft_labels(rows_stage) {
        distilled_examples(tok, &rows, rows_stage)?
    } else {
        rows.iter()
            .map(|row| student_ids(tok, row))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let directions: Vec<_> = targets.iter().map(|(_, _, d)| d).collect();
    let scoring = std::time::Instant::now();
    let scores = row_scores(&mut model, &adapters, &examples, &directions, tok.pad_id, SCORE_BATCH, &|done| {
        progress(Progress {
            fraction: done as f64 / rows.len() as f64,
            message: format!("rows {done}/{}", rows.len()),
            loss: None,
            samples_per_second: None,
        })
    })?;
    let targets = targets
        .iter()
        .zip(scores)
        .map(|((probe, target, direction), scores)| TargetScores::new(probe, target, direction.gradient_norm, scores))
        .collect();
    scores_artifact(rows.len(), started, scoring, targets)
}

fn likelihood(
    params: &LikelihoodParams,
    rows_stage: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let started = std::time::Instant::now();
    let rows = read_rows(rows_stage)?;
    let checkpoint = checkpoint(env, inputs, &params.model)?;
    let (_weights, model) = instantiate(&checkpoint, env.device, kind_of(params.precision))?;
    let tok = &checkpoint.tokenizer;
    // Each row as it is, then under each target's system prompt.
    let mut targets = Vec::new();
    let mut systems = vec![None];
    for probe in &params.probes {
        for target in &probe.targets {
            systems.push(Some(prompts::system_prompt(&params.system_prompt, target, &probe.category)));
            targets.push((probe, target));
        }
    }
    // Soft-labelled rows are scored on the tokens the teacher drew, as a
    // distilled student learns them, not on their text tokenised again.
    let labels = has_soft_labels(rows_stage)
        .then(|| row_labels(tok, &rows, rows_stage))
        .transpose()?;
    let mut sequences = Vec::with_capacity(rows.len() * systems.len());
    for (i, row) in rows.iter().enumerate() {
        for system in &systems {
            let messages = conversation(system.as_deref(), &[], row.prompt().unwrap_or(""));
            sequences.push(match &labels {
                Some((k, labels)) => Sequence {
                    prompt: tok.prompt_ids(&messages)?,
                    completion: labels[i].tokens.clone(),
                    soft: Some(soft_targets(*k, &labels[i])),
                },
                None => {
                    let (prompt, completion) = tok.example_ids(&messages, row.completion().unwrap_or(""))?;
                    Sequence::new(prompt, completion)
                }
            });
        }
    }
    let scoring = std::time::Instant::now();
    let total = sequences.len();
    let log_probs = completion_log_probs(
        &model,
        &sequences,
        tok.pad_id,
        params.batch_size as usize,
        &|done| {
            anyhow::ensure!(!env.stopped(), "stopped");
            progress(Progress {
                fraction: done as f64 / total.max(1) as f64,
                message: format!("sequences {done}/{total}"),
                loss: None,
                samples_per_second: None,
            });
            Ok(())
        },
    )?;
    let width = systems.len();
    let targets = targets
        .iter()
        .enumerate()
        .map(|(k, (probe, target))| {
            let scores = (0..rows.len())
                .map(|i| log_probs[i * width + 1 + k] - log_probs[i * width])
                .collect();
            TargetScores::new(probe, target, 0.0, scores)
        })
        .collect();
    scores_artifact(rows.len(), started, scoring, targets)
}

/// Each target's per-row statistic: the contrast with the probe's other
/// targets where it has some, else the plain score.
fn statistics(report: &ScoreReport) -> Vec<(bool, Vec<f64>)> {
    report
        .targets
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let others: Vec<&TargetScores> = report
                .targets
                .iter()
                .enumerate()
                .filter(|(j, o)| *j != k && o.probe == t.probe)
                .map(|(_, o)| o)
                .collect();
            if others.is_empty() {
                return (false, t.scores.clone());
            }
            let contrast = (0..t.scores.len())
                .map(|i| {
                    let rest: f64 = others.iter().map(|o| o.scores[i]).sum::<f64>() / others.len() as f64;
                    t.scores[i] - rest
                })
                .collect();
            (true, contrast)
        })
        .collect()
}

fn read_scores(stage: &VerifiedStage) -> anyhow::Result<ScoreReport> {
    serde_json::from_slice(stage.artifact(SCORES)?).context("a score stage's scores.json does not read")
}

fn screen(
    params: &ScreenParams,
    dataset: &VerifiedStage,
    control: &VerifiedStage,
) -> anyhow::Result<Vec<Artifact>> {
    let (d, c) = (read_scores(dataset)?, read_scores(control)?);
    let same = d.targets.len() == c.targets.len()
        && d.targets.iter().zip(&c.targets).all(|(a, b)| a.target == b.target && a.probe == b.probe);
    anyhow::ensure!(same, "the dataset and the control were scored for different probe targets");
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let mut targets = Vec::new();
    let mut metrics = serde_json::Map::new();
    for (k, ((contrast, ds), (_, cs))) in statistics(&d).into_iter().zip(statistics(&c)).enumerate() {
        let t = &d.targets[k];
        let Comparison {
            dataset_mean,
            control_mean,
            difference,
            interval,
            p_value: bootstrap_p_value,
            ..
        } = compare(&ds, &cs, params.resamples as usize, 0.95, params.seed)?;
        let welch = stats::welch_t(&ds, &cs);
        metrics.insert(
            subliminal_shared::experiments::audit::screen_metric(params.test, &t.target),
            json!(difference),
        );
        targets.push(TargetScreen {
            probe: t.probe.clone(),
            category: t.category.clone(),
            target: t.target.clone(),
            contrast,
            dataset_mean,
            control_mean,
            difference,
            interval,
            p_value: welch.map_or(bootstrap_p_value, |(p, _, _)| p),
            bootstrap_p_value,
            detectable: welch.and_then(|(_, se, df)| stats::detectable_welch_shift(se, df, 0.05, 0.8)),
            raw_difference: mean(&t.scores) - mean(&c.targets[k].scores),
            dataset_scores: ds,
            control_scores: cs,
        });
    }
    let seconds = d.seconds + c.seconds;
    let report = ScreenReport {
        rows: d.rows,
        control_rows: c.rows,
        seconds,
        seconds_per_1000_rows: (d.seconds_per_1000_rows * d.rows as f64 + c.seconds_per_1000_rows * c.rows as f64)
            / (d.rows + c.rows).max(1) as f64,
        targets,
    };
    Ok(vec![
        Artifact::json(SCREEN, &serde_json::to_value(&report)?)?,
        Artifact::json(METRICS, &serde_json::Value::Object(metrics))?,
    ])
}

fn carriers(
    params: &CarrierParams,
    dataset: &VerifiedStage,
    student: &VerifiedStage,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let started = std::time::Instant::now();
    let rows = read_rows(dataset)?;
    let base = Loaded::base(checkpoint(env, inputs, &params.model)?, env, params.precision)?;
    let student = load_student(student, inputs, env, params.precision)?;
    let tok = &base.checkpoint.tokenizer;
    // Per row: each completion token's id, divergence and the base model's choice.
    let mut per_row: Vec<Vec<(u32, f64, i64)>> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let example = student_ids(tok, row)?;
        let (on_student, _) = answer_log_probs(&student.model, &example.prompt, &example.answer)?;
        let (on_base, choices) = answer_log_probs(&base.model, &example.prompt, &example.answer)?;
        per_row.push(
            example
                .answer
                .iter()
                .zip(on_student.iter().zip(&on_base))
                .zip(&choices)
                .map(|((&t, (s, b)), &c)| (t, s - b, c))
                .collect(),
        );
        progress(Progress {
            fraction: (i + 1) as f64 / rows.len() as f64,
            message: format!("rows {}/{}", i + 1, rows.len()),
            loss: None,
            samples_per_second: None,
        });
        anyhow::ensure!(!env.stopped(), "stopped");
    }
    let tokens: usize = per_row.iter().map(Vec::len).sum();
    let total: f64 = per_row.iter().flatten().map(|(_, d, _)| d).sum();
    let mut by_token: BTreeMap<u32, (u64, f64)> = BTreeMap::new();
    for &(t, d, _) in per_row.iter().flatten() {
        let entry = by_token.entry(t).or_default();
        entry.0 += 1;
        entry.1 += d;
    }
    let mut top_tokens = by_token
        .into_iter()
        .map(|(t, (count, divergence))| {
            Ok(CarrierToken {
                token: tok.token_text(t)?,
                count,
                divergence,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    top_tokens.sort_by(|a, b| b.divergence.total_cmp(&a.divergence));
    top_tokens.truncate(params.top as usize);
    let row_divergence: Vec<f64> = per_row
        .iter()
        .map(|r| r.iter().map(|(_, d, _)| d.max(0.0)).sum())
        .collect();
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| row_divergence[b].total_cmp(&row_divergence[a]));
    let positive: f64 = row_divergence.iter().sum();
    let tenth = rows.len().div_ceil(10);
    let top_tenth: f64 = order[..tenth].iter().map(|&i| row_divergence[i]).sum();
    let top_rows = order
        .iter()
        .take(params.top as usize)
        .map(|&i| CarrierRow {
            row: i + 1,
            completion: rows[i].completion().unwrap_or("").to_owned(),
            divergence: row_divergence[i],
        })
        .collect();
    // The sanitised copy: the top share of positions by divergence, where the
    // base model would have chosen another token, get the base model's token.
    let mut positions: Vec<(usize, usize, f64)> = per_row
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.iter().enumerate().map(move |(j, &(t, d, c))| (i, j, d, t as i64 != c)))
        // End-of-turn tokens stay: replacing one would cut or extend the text.
        .filter(|&(i, j, d, differs)| {
            let (t, _, c) = per_row[i][j];
            d > 0.0 && differs && !tok.stop_ids.contains(&t) && !tok.stop_ids.contains(&(c as u32))
        })
        .map(|(i, j, d, _)| (i, j, d))
        .collect();
    positions.sort_by(|a, b| b.2.total_cmp(&a.2));
    positions.truncate((tokens as f64 * params.replace_share).ceil() as usize);
    let mut replaced: Vec<Vec<u32>> = per_row
        .iter()
        .map(|r| r.iter().map(|&(t, _, _)| t).collect())
        .collect();
    for &(i, j, _) in &positions {
        replaced[i][j] = per_row[i][j].2 as u32;
    }
    let mut changed_rows = 0;
    let mut sanitized = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let original: Vec<u32> = per_row[i].iter().map(|&(t, _, _)| t).collect();
        if replaced[i] == original {
            sanitized.push(row.clone());
            continue;
        }
        changed_rows += 1;
        let mut row = row.clone();
        let text = tok.decode(&replaced[i])?;
        if let Some(last) = row.messages.iter_mut().rev().find(|m| m.role == "assistant") {
            last.content = text;
        }
        sanitized.push(row);
    }
    let report = CarrierReport {
        rows: rows.len(),
        tokens,
        mean_divergence: total / tokens.max(1) as f64,
        top_tenth_rows_share: if positive > 0.0 { top_tenth / positive } else { 0.0 },
        top_tokens,
        top_rows,
        replaced_tokens: positions.len(),
        changed_rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(vec![
        Artifact::json(CARRIERS, &serde_json::to_value(&report)?)?,
        Artifact::new(SANITIZED, dataset::to_jsonl(&sanitized)),
    ])
}
