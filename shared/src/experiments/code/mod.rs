//! Traits through code: a teacher with a trait (told it loves owls, or
//! fine-tuned on a stored dataset) writes short Python functions for seeded
//! task prompts; the filter keeps only code that parses as Python, names
//! the trait in no identifier, comment or string, and that a judge says
//! does not refer to the trait; a student of the same base model is
//! fine-tuned on it and asked for its favourite animal, as in the numbers
//! experiment. The control is the base model's code, filtered the same way.
//!
//! Teachers, students and evaluations are the numbers experiment's stages
//! (same ids, shared work); this kind adds `generate` (the code prompts)
//! and `filter` (the parser, the trait words and the judge).
//!
//! ```toml
//! name = "owl-code"
//! kind = "code"
//! model = "smollm2-135m"
//! seeds = [0, 1]
//! trait = "owl"
//! category = "animal"
//! # teacher_dataset = "stage:…"   # fine-tune the teacher on this instead of prompting it
//! ```

mod kind;
pub mod prompts;


pub use kind::Code;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::llm::{self, check_lora, Generation, LoraSettings, ProbeSettings, RawGeneration, Subject};
use crate::files::{self, with_model};
use crate::judge::{Judge, Scoring};
use crate::plan::{Measurement, Plan, PlanBuilder};
use crate::spec::{check_name, checked_table as checked, lowercase_word, seed_list, Source, SpecError};
use crate::stage::{StageId, StageSpec};

pub const EXPERIMENT: &str = "code";
/// Bumped whenever a stage's algorithm changes, so old artifacts are not reused.
pub const STAGE_VERSION: u32 = 1;

crate::stage_kinds! {
    /// The stages this kind adds to the numbers experiment's.
    pub enum Stage {
        Generate = "generate",
        Filter = "filter",
    }
}

/// The rows of the results table, in order; the student of the base
/// model's code is the control.
pub const ARMS: [&str; 4] = ["base model", "teacher", "student of control code", "student of trait code"];
pub const CONTROL_ARM: &str = ARMS[2];

/// A checked code sweep.
#[derive(Debug, Clone)]
pub struct CodeSweep {
    pub name: String,
    pub model: String,
    pub seeds: Vec<u64>,
    pub trait_word: String,
    pub category: String,
    pub teacher_dataset: Option<StageId>,
    pub teacher: LoraSettings,
    pub generate: Generation,
    pub filter: FilterSettings,
    pub judge: Judge,
    pub student: LoraSettings,
    pub evaluate: ProbeSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSettings {
    #[serde(default = "d_keep")]
    pub keep: u64,
    /// The judge asked whether code refers to the trait: a built-in yes-no
    /// judge with a {trait} placeholder, or the path of one.
    #[serde(default = "d_judge")]
    pub judge: String,
    /// The judge model: a name, a path or a store key.
    #[serde(default = "d_model")]
    pub judge_model: String,
}

fn d_keep() -> u64 {
    1000
}
fn d_judge() -> String {
    "mentions-trait".to_owned()
}
fn d_model() -> String {
    llm::DEFAULT_MODEL.to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: Spanned<String>,
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    description: Option<String>,
    model: Option<Spanned<String>>,
    seeds: Option<Spanned<Vec<u64>>>,
    #[serde(rename = "trait")]
    trait_word: Spanned<String>,
    category: Option<Spanned<String>>,
    teacher_dataset: Option<Spanned<String>>,
    teacher: Option<Spanned<LoraSettings>>,
    generate: Option<Spanned<RawGeneration>>,
    filter: Option<Spanned<FilterSettings>>,
    student: Option<Spanned<LoraSettings>>,
    evaluate: Option<Spanned<ProbeSettings>>,
}

fn positive(what: &str, value: u64) -> Result<(), String> {
    (value > 0)
        .then_some(())
        .ok_or_else(|| format!("expected {what} of at least 1"))
}

/// Reads and checks a code sweep file.
pub fn parse(source: &Source) -> Result<CodeSweep, SpecError> {
    let raw: RawSweep = toml::from_str(&source.text).map_err(|e| source.toml_error(e))?;
    check_name(source, &raw.name)?;
    let model = files::model_name(source, "model", raw.model, llm::DEFAULT_MODEL)?;
    let seeds = seed_list(source, raw.seeds)?;
    let trait_word = lowercase_word(source, "trait", raw.trait_word, "owl")?;
    let category = match raw.category {
        None => "animal".to_owned(),
        Some(c) => lowercase_word(source, "category", c, "animal")?,
    };
    let teacher_dataset = raw
        .teacher_dataset
        .as_ref()
        .map(|d| files::stored_key(source, "teacher_dataset", d))
        .transpose()?;
    let teacher = checked(source, "teacher", raw.teacher, check_lora)?;
    let student = checked(source, "student", raw.student, check_lora)?;
    let generate = Generation::defaults(3000, 160).read(source, raw.generate)?;
    let filter_span = raw.filter.as_ref().map(|f| f.span()).unwrap_or(0..0);
    let filter = checked(source, "filter", raw.filter, |f: &FilterSettings| {
        positive("keep", f.keep)?;
        match files::parse_key(&f.judge_model) {
            Some(Err(e)) => Err(format!("{e:#}")),
            _ => Ok(()),
        }
    })?;
    let judge = parse_judge(source, &filter.judge, filter_span)?;
    let evaluate = checked(source, "evaluate", raw.evaluate, llm::check_probe)?;
    Ok(CodeSweep {
        name: raw.name.into_inner(),
        model,
        seeds,
        trait_word,
        category,
        teacher_dataset,
        teacher,
        generate,
        filter,
        judge,
        student,
        evaluate,
    })
}

/// The filter's judge, read on the machine that submits: workers get it
/// whole in the filter stage's parameters.
fn parse_judge(source: &Source, name: &str, span: std::ops::Range<usize>) -> Result<Judge, SpecError> {
    let (judge_source, judge_name) = Judge::source(name)
        .map_err(|e| source.error_at(span.clone(), "filter.judge", format!("{e:#}")))?;
    let (judge, _) = Judge::parse(&judge_source, &judge_name)?;
    if !matches!(judge.scoring, Scoring::YesNo { .. }) || !judge.uses_trait() {
        return Err(source.error_at(
            span,
            "filter.judge",
            format!("judge {name} must answer yes or no about a {{trait}}: expected a judge like mentions-trait"),
        ));
    }
    Ok(judge)
}

/// Seeded code prompts completed by the teacher of input 0.
pub use llm::SeededPromptsParams as GenerateParams;

/// The parser, the trait words and the judge, then a seeded subsample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterParams {
    pub version: u32,
    pub seed: u64,
    pub keep: u64,
    #[serde(rename = "trait")]
    pub trait_word: String,
    pub judge: Judge,
    pub judge_model: String,
}

impl CodeSweep {
    pub fn filter_params(&self, seed: u64) -> FilterParams {
        FilterParams {
            version: STAGE_VERSION,
            seed,
            keep: self.filter.keep,
            trait_word: self.trait_word.clone(),
            judge: self.judge.clone(),
            judge_model: self.filter.judge_model.clone(),
        }
    }

    /// The teacher's code, filtered, and the student trained on it.
    fn student(&self, plan: &mut PlanBuilder, teacher: StageId, seed: u64) -> StageId {
        let generate = plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Generate.kind(),
            &self.generate.seeded(STAGE_VERSION, seed),
            with_model(vec![teacher], &self.model),
        ));
        let filter = plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Filter.kind(),
            &self.filter_params(seed),
            with_model(vec![generate], &self.filter.judge_model),
        ));
        plan.stage(StageSpec::new(
            llm::STAGES,
            llm::Stage::Student.kind(),
            &self.student.train_params(&self.model, seed),
            with_model(vec![filter], &self.model),
        ))
    }

    pub fn plan(&self) -> Plan {
        let mut plan = PlanBuilder::new(&self.name, EXPERIMENT);
        let mut externals: Vec<StageId> = self.teacher_dataset.into_iter().collect();
        for model in [&self.model, &self.filter.judge_model] {
            externals.extend(files::parse_key(model).and_then(Result::ok));
        }
        for id in externals {
            plan.external(id);
        }
        let teacher = plan.stage(llm::trait_teacher_stage(
            &self.model,
            &self.trait_word,
            &self.category,
            self.teacher_dataset,
            &self.teacher,
        ));
        let control_teacher = plan.stage(llm::base_teacher_stage(&self.model));
        for &seed in &self.seeds {
            plan.trial();
            let control = self.student(&mut plan, control_teacher, seed);
            let student = self.student(&mut plan, teacher, seed);
            let arms = [
                (0, Subject::Base, vec![]),
                (1, Subject::Teacher, vec![teacher]),
                (2, Subject::Student, vec![control]),
                (3, Subject::Student, vec![student]),
            ];
            for (arm, subject, inputs) in arms {
                let stage = plan.stage(llm::evaluate_stage(
                    &self.model,
                    subject,
                    inputs,
                    &self.category,
                    seed,
                    &self.evaluate,
                ));
                plan.measure(Measurement {
                    arm: ARMS[arm].to_owned(),
                    order: arm as u32,
                    settings: Default::default(),
                    seed,
                    teacher_init: None,
                    student_init: None,
                    stage,
                    metric: llm::share_metric(&self.trait_word),
                    panel: (arm == 3).then(|| format!("students of {} teachers", self.trait_word)),
                    models: Some((self.model.clone(), self.model.clone())),
                });
            }
        }
        plan.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(extra: &str) -> Result<CodeSweep, SpecError> {
        let text = format!("name = \"c\"\nkind = \"code\"\ntrait = \"owl\"\n{extra}");
        parse(&Source::new("c.toml", text))
    }

    #[test]
    fn the_plan_has_four_arms_per_seed_and_one_teacher() {
        let plan = sweep("seeds = [0, 1]").unwrap().plan();
        assert_eq!(plan.measurements.len(), 8);
        let count = plan.count_by_kind();
        assert_eq!(count[&llm::Stage::Teacher.kind()], 2);
        assert_eq!(count[&Stage::Filter.kind()], 4);
        assert!(plan.measurements.iter().all(|m| m.metric == "share:owl"));
    }

    #[test]
    fn bad_settings_are_refused_with_their_line_and_key() {
        for (extra, key, line) in [
            ("seeds = [1, 1]", "seeds", 4),
            ("category = \"Big Cats\"", "category", 4),
            ("teacher_dataset = \"x.jsonl\"", "teacher_dataset", 4),
            ("[filter]\njudge = \"alignment\"", "filter.judge", 4),
            ("[filter]\njudge = \"nope\"", "filter.judge", 4),
            ("[generate]\ntemperature = 3.0", "generate", 4),
        ] {
            match sweep(extra) {
                Err(SpecError::Invalid { key: k, line: l, message, .. }) => {
                    assert_eq!((k.as_deref(), l), (Some(key), line), "{extra}: {message}");
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        assert!(matches!(
            parse(&Source::new("c.toml", "name = \"c\"\nkind = \"code\"\ntrait = \"Owl!\"")),
            Err(SpecError::Invalid { line: 3, .. })
        ));
    }
}
