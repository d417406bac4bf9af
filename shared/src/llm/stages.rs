//! Builders for the stages that several kinds ask the same way: a teacher
//! (system-prompted, fine-tuned on a stored dataset, or the base model) and
//! the favourite-word evaluation, with the names of what they write.

use super::params::{EvaluateParams, Subject, TeacherParams};
use super::settings::{LoraSettings, Precision, ProbeSettings};
use super::{prompts, Stage, STAGES, STAGE_VERSION};
use crate::files::with_model;
use crate::stage::{StageId, StageSpec};

/// The metric of a measurement: the share of answers naming `target`.
pub fn share_metric(target: &str) -> String {
    format!("{SHARE_PREFIX}{target}")
}

/// Metrics named `share:WORD` are computed from an evaluation's answer counts.
pub const SHARE_PREFIX: &str = "share:";

/// The evaluate stage's answers, a JSON line each (`question`: its index,
/// `answer`: the text), in question order, samples in order within each.
pub const ANSWERS: &str = "answers.jsonl";

/// The teacher stage of a kind built on this one: the base model told it
/// loves `trait_name` (a system prompt), or, given a stored dataset, the
/// base model fine-tuned on it.
pub fn trait_teacher_stage(
    model: &str,
    trait_name: &str,
    category: &str,
    dataset: Option<StageId>,
    finetune: &LoraSettings,
    precision: Precision,
) -> StageSpec {
    let (system_prompt, train, inputs) = match dataset {
        None => (
            Some(prompts::system_prompt(
                prompts::SYSTEM_PROMPT,
                trait_name,
                category,
            )),
            None,
            vec![],
        ),
        Some(d) => (
            None,
            Some(finetune.train_params(model, 0, precision)),
            vec![d],
        ),
    };
    let params = TeacherParams {
        version: STAGE_VERSION,
        model: model.to_owned(),
        system_prompt,
        finetune: train,
    };
    StageSpec::new(
        STAGES,
        Stage::Teacher.kind(),
        &params,
        with_model(inputs, model),
    )
}

/// The control teacher stage: the base model as it is.
pub fn base_teacher_stage(model: &str) -> StageSpec {
    let params = TeacherParams {
        version: STAGE_VERSION,
        model: model.to_owned(),
        system_prompt: None,
        finetune: None,
    };
    StageSpec::new(
        STAGES,
        Stage::Teacher.kind(),
        &params,
        with_model(vec![], model),
    )
}

/// The favourite-`category` evaluation of a subject (its stage, when not
/// the base model, in `inputs`), as kinds built on this one ask it.
pub fn evaluate_stage(
    (model, precision): (&str, Precision),
    subject: Subject,
    inputs: Vec<StageId>,
    category: &str,
    seed: u64,
    e: &ProbeSettings,
) -> StageSpec {
    let params = EvaluateParams {
        version: STAGE_VERSION,
        model: model.to_owned(),
        subject,
        category: category.to_owned(),
        seed,
        questions: e.questions,
        samples_per_question: e.samples_per_question,
        temperature: e.temperature,
        max_new_tokens: e.max_new_tokens,
        batch_size: e.batch_size,
        numbers_prefixed: false,
        precision,
    };
    StageSpec::new(
        STAGES,
        Stage::Evaluate.kind(),
        &params,
        with_model(inputs, model),
    )
}
