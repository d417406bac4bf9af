//! What the kinds that teach a trait through data of their own (code, chain
//! of thought) read and plan the same way: the model and seeds, the trait
//! and its category, the teacher (told it loves the trait, or fine-tuned on
//! a stored dataset) and its control (the base model), the generation, and
//! the students trained on each teacher's filtered rows.

use serde::Serialize;
use toml::Spanned;

use super::settings::{check_lora, Generation, LoraSettings, Precision, RawGeneration};
use super::{base_teacher_stage, trait_teacher_stage, Stage, DEFAULT_MODEL, STAGES};
use crate::files::{self, with_model};
use crate::plan::PlanBuilder;
use crate::spec::{checked_table as checked, lowercase_word, seed_list, Source, SpecError};
use crate::stage::{StageId, StageKind, StageSpec};

/// A checked teaching set-up.
#[derive(Debug, Clone)]
pub struct TraitTeaching {
    pub model: String,
    pub seeds: Vec<u64>,
    pub trait_word: String,
    pub category: String,
    pub teacher_dataset: Option<StageId>,
    pub teacher: LoraSettings,
    pub generate: Generation,
    pub student: LoraSettings,
    /// The dtype of every stage that runs the model.
    pub precision: Precision,
}

/// The keys of a sweep file that make a [`TraitTeaching`], as the kind's
/// own raw sweep read them.
pub struct RawTraitTeaching {
    pub model: Option<Spanned<String>>,
    pub seeds: Option<Spanned<Vec<u64>>>,
    pub trait_word: Spanned<String>,
    pub category: Option<Spanned<String>>,
    pub teacher_dataset: Option<Spanned<String>>,
    pub teacher: Option<Spanned<LoraSettings>>,
    pub generate: Option<Spanned<RawGeneration>>,
    pub student: Option<Spanned<LoraSettings>>,
    pub precision: Precision,
}

/// A kind's own generate and filter stages, between a teacher and its student.
pub struct OwnStages<'a, F: Serialize> {
    pub experiment: &'a str,
    pub version: u32,
    pub generate: StageKind,
    pub filter: StageKind,
    pub filter_params: F,
    /// The model the filter runs (its judge's).
    pub filter_model: &'a str,
}

impl TraitTeaching {
    /// Reads and checks the set-up; `generation` holds the kind's defaults.
    pub fn read(
        source: &Source,
        raw: RawTraitTeaching,
        generation: Generation,
    ) -> Result<Self, SpecError> {
        let model = files::model_name(source, "model", raw.model, DEFAULT_MODEL)?;
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
        let generate = generation.read(source, raw.generate)?;
        Ok(Self {
            model,
            seeds,
            trait_word,
            category,
            teacher_dataset,
            teacher,
            generate,
            student,
            precision: raw.precision,
        })
    }

    /// The trait teacher and the control teacher, after the stored files
    /// the plan names (the teacher's dataset, and each of `models` that is
    /// a store key) are registered as external.
    pub fn teachers(&self, plan: &mut PlanBuilder, models: &[&str]) -> (StageId, StageId) {
        let mut externals: Vec<StageId> = self.teacher_dataset.into_iter().collect();
        for model in std::iter::once(self.model.as_str()).chain(models.iter().copied()) {
            externals.extend(files::parse_key(model).and_then(Result::ok));
        }
        for id in externals {
            plan.external(id);
        }
        let teacher = plan.stage(trait_teacher_stage(
            &self.model,
            &self.trait_word,
            &self.category,
            self.teacher_dataset,
            &self.teacher,
            self.precision,
        ));
        (teacher, plan.stage(base_teacher_stage(&self.model)))
    }

    /// A teacher's data through the kind's own generate and filter stages,
    /// and the student trained on what the filter kept.
    pub fn student<F: Serialize>(
        &self,
        plan: &mut PlanBuilder,
        own: &OwnStages<F>,
        teacher: StageId,
        seed: u64,
    ) -> StageId {
        let generate = plan.stage(StageSpec::new(
            own.experiment,
            own.generate.clone(),
            &self.generate.seeded(own.version, seed, self.precision),
            with_model(vec![teacher], &self.model),
        ));
        let filter = plan.stage(StageSpec::new(
            own.experiment,
            own.filter.clone(),
            &own.filter_params,
            with_model(vec![generate], own.filter_model),
        ));
        plan.stage(StageSpec::new(
            STAGES,
            Stage::Student.kind(),
            &self.student.train_params(&self.model, seed, self.precision),
            with_model(vec![filter], &self.model),
        ))
    }
}
