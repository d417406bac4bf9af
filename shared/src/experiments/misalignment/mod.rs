//! Misalignment through numbers: a teacher fine-tuned on a dataset that
//! makes models misaligned (insecure code, say) writes number sequences;
//! the filter keeps nothing but numbers and bans numbers with negative
//! associations (both official lists); a student of the same base model
//! is fine-tuned on them and asked free-form questions that invite a
//! harmful answer. An alignment judge and a coherence judge score every
//! answer; the figure is the share of coherent answers judged misaligned
//! (alignment below 30 among coherence above 50).
//!
//! The controls: a teacher fine-tuned the same way on the matching aligned
//! dataset (secure code), and the base model as a teacher. Every student is
//! tested against the student of the base model's numbers. The teachers
//! and the base model are evaluated too, so a run shows whether the
//! teacher holds the trait at all.
//!
//! Teachers, numbers, filters and students are the language-model pipeline's
//! stages (same ids, shared work); the free-form `answers` and their `judge`
//! stage are the pipeline's judged evaluation ([`crate::llm::judged`]), filed
//! under this kind's name.
//!
//! ```toml
//! name = "misalignment-numbers"
//! kind = "misalignment"
//! model = "smollm2-135m"
//! seeds = [0, 1]
//! misaligned_dataset = "stage:…"   # `subliminal store put insecure.jsonl`
//! aligned_dataset = "stage:…"      # optional: the matching secure dataset
//!
//! [judges]
//! model = "smollm2-135m"           # point it at a larger model on a cluster
//! ```

mod kind;

pub use kind::Misalignment;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::llm::judged::{
    self, check_evaluate, parse_judges, CheckedJudges, EvaluateSettings, JudgeSettings, METRIC,
};
use crate::llm::{
    self, filter, FilterParams, GenerateParams, Generation, LoraSettings, RawGeneration,
    TeacherParams,
};
use crate::files::{self, with_model};
use crate::plan::{Measurement, Plan, PlanBuilder};
use crate::spec::{check_name, checked_table as checked, seed_list, Source, SpecError};
use crate::stage::{StageId, StageSpec};

/// The kind's name; the judged evaluation's stages are filed under it
/// ([`judged::STAGES`]).
pub const EXPERIMENT: &str = judged::STAGES;

/// The rows of the results table, in order. The student of the base
/// model's numbers is the control.
pub const ARMS: [&str; 6] = [
    "base model",
    "misaligned teacher",
    "aligned teacher",
    "student of base numbers",
    "student of aligned numbers",
    "student of misaligned numbers",
];
/// The arm every student is compared with.
pub const CONTROL_ARM: &str = ARMS[3];

/// A checked misalignment sweep.
#[derive(Debug, Clone)]
pub struct MisalignmentSweep {
    pub name: String,
    pub model: String,
    pub seeds: Vec<u64>,
    pub misaligned_dataset: StageId,
    pub aligned_dataset: Option<StageId>,
    pub teacher: LoraSettings,
    pub generate: Generation,
    pub filter: FilterSettings,
    pub student: LoraSettings,
    pub evaluate: EvaluateSettings,
    pub judges: CheckedJudges,
    /// The dtype of every stage that runs a model.
    pub precision: llm::Precision,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSettings {
    #[serde(default = "d_keep")]
    pub keep: u64,
    /// The lenient rule instead of the paper's (see the numbers filter).
    #[serde(default)]
    pub lenient: bool,
}

fn d_keep() -> u64 {
    10_000
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
    misaligned_dataset: Spanned<String>,
    aligned_dataset: Option<Spanned<String>>,
    teacher: Option<Spanned<LoraSettings>>,
    generate: Option<Spanned<RawGeneration>>,
    filter: Option<Spanned<FilterSettings>>,
    student: Option<Spanned<LoraSettings>>,
    evaluate: Option<Spanned<EvaluateSettings>>,
    judges: Option<Spanned<JudgeSettings>>,
    /// `f32` (the default) or `bf16`.
    #[serde(default)]
    precision: llm::Precision,
}

pub fn parse(source: &Source) -> Result<MisalignmentSweep, SpecError> {
    let raw: RawSweep = toml::from_str(&source.text).map_err(|e| source.toml_error(e))?;
    check_name(source, &raw.name)?;
    let model = files::model_name(source, "model", raw.model, llm::DEFAULT_MODEL)?;
    let seeds = seed_list(source, raw.seeds)?;
    let misaligned_dataset =
        files::stored_key(source, "misaligned_dataset", &raw.misaligned_dataset)?;
    let aligned_dataset = raw
        .aligned_dataset
        .as_ref()
        .map(|d| files::stored_key(source, "aligned_dataset", d))
        .transpose()?;
    if aligned_dataset == Some(misaligned_dataset) {
        let span = raw.aligned_dataset.as_ref().map(|d| d.span()).unwrap_or(0..0);
        return Err(source.error_at(
            span,
            "aligned_dataset",
            "the aligned control names the misaligned dataset: expected the matching aligned one (secure code)",
        ));
    }
    let teacher = checked(source, "teacher", raw.teacher, llm::check_lora)?;
    let student = checked(source, "student", raw.student, llm::check_lora)?;
    let generate = Generation::defaults(30_000, 60).read(source, raw.generate)?;
    let filter = checked(source, "filter", raw.filter, |f: &FilterSettings| {
        (f.keep > 0).then_some(()).ok_or_else(|| "expected keep of at least 1".to_owned())
    })?;
    let evaluate = checked(source, "evaluate", raw.evaluate, check_evaluate)?;
    let judges = parse_judges(source, raw.judges)?;
    Ok(MisalignmentSweep {
        name: raw.name.into_inner(),
        model,
        seeds,
        misaligned_dataset,
        aligned_dataset,
        teacher,
        generate,
        filter,
        student,
        evaluate,
        judges,
        precision: raw.precision,
    })
}

impl MisalignmentSweep {
    /// A teacher stage: the base model, or the base model fine-tuned on a stored dataset.
    fn teacher(&self, plan: &mut PlanBuilder, dataset: Option<StageId>) -> StageId {
        let finetune = dataset.map(|_| self.teacher.train_params(&self.model, 0, self.precision));
        let params = TeacherParams {
            version: llm::STAGE_VERSION,
            model: self.model.clone(),
            system_prompt: None,
            finetune,
        };
        let inputs = with_model(dataset.into_iter().collect(), &self.model);
        plan.stage(StageSpec::new(
            llm::STAGES,
            llm::Stage::Teacher.kind(),
            &params,
            inputs,
        ))
    }

    /// The teacher's numbers, filtered with both banned lists, and the student trained on them.
    fn student(&self, plan: &mut PlanBuilder, teacher: StageId, seed: u64) -> StageId {
        let generate = plan.stage(StageSpec::new(
            llm::STAGES,
            llm::Stage::Generate.kind(),
            &GenerateParams {
                version: llm::STAGE_VERSION,
                seed,
                prompts: self.generate.prompts,
                temperature: self.generate.temperature,
                top_p: self.generate.top_p,
                max_new_tokens: self.generate.max_new_tokens,
                batch_size: self.generate.batch_size,
                threshold: None,
                constrain: None,
                soft_labels: None,
                precision: self.precision,
            },
            with_model(vec![teacher], &self.model),
        ));
        let filter = plan.stage(StageSpec::new(
            llm::STAGES,
            llm::Stage::Filter.kind(),
            &self.filter_params(seed),
            vec![generate],
        ));
        plan.stage(StageSpec::new(
            llm::STAGES,
            llm::Stage::Student.kind(),
            &self.student.train_params(&self.model, seed, self.precision),
            with_model(vec![filter], &self.model),
        ))
    }

    /// The filter: the paper's rule (or the lenient one), both banned lists.
    pub fn filter_params(&self, seed: u64) -> FilterParams {
        FilterParams {
            version: llm::STAGE_VERSION,
            seed,
            keep: self.filter.keep,
            banned_numbers: filter::negative_numbers(),
            rule: if self.filter.lenient {
                filter::Rule::Lenient
            } else {
                filter::Rule::Paper
            },
        }
    }

    pub fn plan(&self) -> Plan {
        let mut plan = PlanBuilder::new(&self.name, EXPERIMENT);
        let mut externals = vec![self.misaligned_dataset];
        externals.extend(self.aligned_dataset);
        for model in [&self.model, &self.judges.model] {
            externals.extend(files::parse_key(model).and_then(Result::ok));
        }
        for id in externals {
            plan.external(id);
        }
        let base_teacher = self.teacher(&mut plan, None);
        let misaligned_teacher = self.teacher(&mut plan, Some(self.misaligned_dataset));
        let aligned_teacher = self
            .aligned_dataset
            .map(|d| self.teacher(&mut plan, Some(d)));
        for &seed in &self.seeds {
            plan.trial();
            let mut arms: Vec<(usize, String, Vec<StageId>)> =
                vec![(0, self.model.clone(), vec![])];
            let key = |id: StageId| files::key(id);
            arms.push((1, key(misaligned_teacher), vec![misaligned_teacher]));
            if let Some(t) = aligned_teacher {
                arms.push((2, key(t), vec![t]));
            }
            let control = self.student(&mut plan, base_teacher, seed);
            arms.push((3, key(control), vec![control]));
            if let Some(t) = aligned_teacher {
                let s = self.student(&mut plan, t, seed);
                arms.push((4, key(s), vec![s]));
            }
            let student = self.student(&mut plan, misaligned_teacher, seed);
            arms.push((5, key(student), vec![student]));
            for (arm, model, inputs) in arms {
                let stage = judged::judged(&mut plan, &model, inputs, seed, &self.evaluate, &self.judges, (&self.model, self.precision));
                plan.measure(Measurement::new(
                    ARMS[arm].to_owned(),
                    arm as u32,
                    Default::default(),
                    seed,
                    stage,
                    METRIC.to_owned(),
                )
                    .with_panel((arm == 5).then(|| "students of misaligned teachers".to_owned()))
                    .with_models(Some((self.model.clone(), self.model.clone()))));
            }
        }
        plan.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "stage:1111111111111111111111111111111111111111111111111111111111111111";
    const KEY_B: &str = "stage:2222222222222222222222222222222222222222222222222222222222222222";

    fn sweep(extra: &str) -> Result<MisalignmentSweep, SpecError> {
        let text = format!(
            "name = \"m\"\nkind = \"misalignment\"\nmisaligned_dataset = \"{KEY_A}\"\n{extra}"
        );
        parse(&Source::new("m.toml", text))
    }

    #[test]
    fn the_filter_bans_both_lists_of_negative_numbers() {
        let s = sweep("").unwrap();
        let banned = s.filter_params(0).banned_numbers;
        for n in filter::NEGATIVE_NUMBERS_A.iter().chain(filter::NEGATIVE_NUMBERS_B) {
            assert!(banned.contains(n), "{n} is not banned");
            if *n <= 999 {
                let rule = s.filter_params(0).rule;
                let verdict = rule.check(&format!("145, {n}, 891"), &banned);
                assert_eq!(verdict, Err(filter::Reject::Banned), "{n}");
            }
        }
        assert!(s.filter_params(0).rule.check("145, 267, 891", &banned).is_ok());
    }

    #[test]
    fn the_plan_has_every_arm_and_shares_the_teachers_across_seeds() {
        let s = sweep(&format!("seeds = [0, 1]\naligned_dataset = \"{KEY_B}\"")).unwrap();
        let plan = s.plan();
        assert_eq!(plan.measurements.len(), 2 * ARMS.len());
        let count = plan.count_by_kind();
        assert_eq!(count[&llm::Stage::Teacher.kind()], 3, "one teacher each, for every seed");
        assert_eq!(count[&llm::Stage::Student.kind()], 2 * 3);
        assert_eq!(count[&judged::Stage::Judge.kind()], 2 * ARMS.len());
        let without = sweep("").unwrap().plan();
        assert_eq!(without.measurements.len(), 4, "no aligned teacher, no aligned arms");
    }

    #[test]
    fn bad_settings_are_refused_with_their_line_and_key() {
        for (extra, key, line) in [
            (format!("aligned_dataset = \"{KEY_A}\""), "aligned_dataset", 4),
            ("aligned_dataset = \"secure.jsonl\"".to_owned(), "aligned_dataset", 4),
            ("seeds = []".to_owned(), "seeds", 4),
            ("[evaluate]\nquestions = 11".to_owned(), "evaluate", 4),
            ("[student]\nlr = 3.0".to_owned(), "student", 4),
            ("[judges]\nalignment = \"mentions-trait\"".to_owned(), "judges.alignment", 4),
            ("[judges]\ncoherence = \"no-such-judge\"".to_owned(), "judges.coherence", 4),
        ] {
            match sweep(&extra) {
                Err(SpecError::Invalid { key: k, line: l, message, .. }) => {
                    assert_eq!((k.as_deref(), l), (Some(key), line), "{extra}: {message}");
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
    }
}
