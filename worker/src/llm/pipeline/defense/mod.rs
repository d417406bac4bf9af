//! The defend stage: a defense applied to the filtered rows of input 0 (see
//! `subliminal_shared::llm::defense` for what each one is). Each defense the
//! worker applies is one file behind [`ApplyDefense`], found through
//! [`applier`]; the text transforms share one ([`text`]), since their
//! rewrite is the shared crate's.

mod labels;
mod mask_divergence;
mod mix;
mod paraphrase;
mod text;

use anyhow::Context;
use subliminal_shared::llm::dataset::Row;
use subliminal_shared::llm::defense::Defense;
use subliminal_shared::llm::DefendParams;
use subliminal_shared::manifest::VerifiedStage;

use super::rows::read_rows;
use super::METRICS;
use crate::stages::{Artifact, Progress, StageEnv};

/// What a defense's worker half does to a trial's rows.
pub(crate) trait ApplyDefense: Sync {
    /// The stage's artifacts (the defended rows as `filtered.jsonl`, and
    /// anything a student reads beside them) and its `metrics.json`.
    fn apply(&self, job: &Job) -> anyhow::Result<(Vec<Artifact>, serde_json::Value)>;
}

/// One defend stage's work: its parameters, its inputs, and the filtered
/// rows of input 0, read once.
pub(crate) struct Job<'a> {
    pub params: &'a DefendParams,
    pub inputs: &'a [VerifiedStage],
    pub rows: Vec<Row>,
    pub env: &'a StageEnv,
    pub progress: &'a dyn Fn(Progress),
}

/// The registry: the worker half of each defense a stage can apply. Every
/// text transform (a defense whose shared rule has a rewrite) is [`text`]'s.
fn applier(defense: Defense) -> Option<&'static dyn ApplyDefense> {
    if defense.is_text_transform() {
        return Some(&text::Text);
    }
    if defense.cuts_labels() {
        return Some(&labels::Labels);
    }
    match defense {
        Defense::Mix => Some(&mix::Mix),
        Defense::MaskDivergence => Some(&mask_divergence::MaskDivergence),
        Defense::Paraphrase => Some(&paraphrase::Paraphrase),
        _ => None,
    }
}

/// Applies a defense to the filtered rows of input 0.
pub(crate) fn defend(
    params: &DefendParams,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let filtered = inputs
        .first()
        .context("a defense needs the filtered rows as its first input")?;
    let applier = applier(params.defense).with_context(|| {
        format!(
            "{} is not a defense a numbers stage applies",
            params.defense
        )
    })?;
    let job = Job {
        params,
        inputs,
        rows: read_rows(filtered)?,
        env,
        progress,
    };
    let (mut artifacts, metrics) = applier.apply(&job)?;
    artifacts.push(Artifact::json(METRICS, &metrics)?);
    Ok(artifacts)
}
