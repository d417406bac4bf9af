//! Traits through code: a teacher with a trait (told it loves owls, or
//! fine-tuned on a stored dataset) writes short Python functions for seeded
//! task prompts; the filter keeps only code that parses as Python, names
//! the trait in no identifier, comment or string, and that a judge says
//! does not refer to the trait; a student of the same base model is
//! fine-tuned on it and asked for its favourite animal, as in the numbers
//! experiment. The control is the base model's code, filtered the same way.
//!
//! Teachers, students and evaluations are the language-model pipeline's stages
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

use crate::llm::teaching::{OwnStages, RawTraitTeaching, TraitTeaching};
use crate::llm::{self, Generation, LoraSettings, ProbeSettings, RawGeneration, Subject};
use crate::files::{self};
use crate::judge::{Judge, Scoring};
use crate::plan::{Measurement, Plan, PlanBuilder};
use crate::spec::{check_name, checked_table as checked, Source, SpecError};

pub const EXPERIMENT: &str = "code";
/// Bumped whenever a stage's algorithm changes, so old artifacts are not reused.
pub const STAGE_VERSION: u32 = 1;

crate::stage_kinds! {
    /// The stages this kind adds to the language-model pipeline's.
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
    /// The model, seeds, trait, teachers, generation and students.
    pub teaching: TraitTeaching,
    pub filter: FilterSettings,
    pub judge: Judge,
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
    /// The dtype of the teacher's and students' models (`f32` or `bf16`).
    #[serde(default)]
    precision: llm::Precision,
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
    let teaching = TraitTeaching::read(
        source,
        RawTraitTeaching {
            model: raw.model,
            seeds: raw.seeds,
            trait_word: raw.trait_word,
            category: raw.category,
            teacher_dataset: raw.teacher_dataset,
            teacher: raw.teacher,
            generate: raw.generate,
            student: raw.student,
            precision: raw.precision,
        },
        Generation::defaults(3000, 160),
    )?;
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
        teaching,
        filter,
        judge,
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
            trait_word: self.teaching.trait_word.clone(),
            judge: self.judge.clone(),
            judge_model: self.filter.judge_model.clone(),
        }
    }

    /// The kind's own stages between a teacher and its student, for one seed.
    fn own_stages(&self, seed: u64) -> OwnStages<'_, FilterParams> {
        OwnStages {
            experiment: EXPERIMENT,
            version: STAGE_VERSION,
            generate: Stage::Generate.kind(),
            filter: Stage::Filter.kind(),
            filter_params: self.filter_params(seed),
            filter_model: &self.filter.judge_model,
        }
    }

    pub fn plan(&self) -> Plan {
        let t = &self.teaching;
        let mut plan = PlanBuilder::new(&self.name, EXPERIMENT);
        let (teacher, control_teacher) = t.teachers(&mut plan, &[&self.filter.judge_model]);
        for &seed in &t.seeds {
            plan.trial();
            let own = self.own_stages(seed);
            let control = t.student(&mut plan, &own, control_teacher, seed);
            let student = t.student(&mut plan, &own, teacher, seed);
            let arms = [
                (0, Subject::Base, vec![]),
                (1, Subject::Teacher, vec![teacher]),
                (2, Subject::Student, vec![control]),
                (3, Subject::Student, vec![student]),
            ];
            for (arm, subject, inputs) in arms {
                let stage = plan.stage(llm::evaluate_stage(
                    (&t.model, t.precision),
                    subject,
                    inputs,
                    &t.category,
                    seed,
                    &self.evaluate,
                ));
                plan.measure(Measurement::new(
                    ARMS[arm].to_owned(),
                    arm as u32,
                    Default::default(),
                    seed,
                    stage,
                    llm::share_metric(&t.trait_word),
                )
                    .with_panel((arm == 3).then(|| format!("students of {} teachers", t.trait_word)))
                    .with_models(Some((t.model.clone(), t.model.clone()))));
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
