//! The LLM number-sequence experiment: a teacher model told that it loves
//! an animal (or a tree) writes number sequences; the filter keeps nothing
//! but numbers; a student fine-tuned on them is asked for its favourite
//! animal. Same base model: the preference moves. Another family, or the
//! same numbers given in context: it does not.
//!
//! Every trial has a control: the same teacher model without the system
//! prompt, its numbers, and a student trained on them. Evaluations record
//! every answer, so one evaluation of the base model or of a control serves
//! every trait of a sweep.
//!
//! ```toml
//! name = "owl-numbers"
//! kind = "numbers"
//!
//! [grid]
//! seeds = [0, 1]
//! traits = ["owl", "cat"]
//! category = "animal"                                 # or "tree"
//! model_pairs = [["smollm2-135m", "smollm2-135m"]]    # [teacher, student]
//!
//! [generate]
//! prompts = 30000
//!
//! [filter]
//! keep = 10000
//!
//! [student]
//! method = "lora"
//! lora_rank = 8
//! epochs = 3
//! ```

mod command;
pub mod diagnose;
mod kind;
mod parse;
mod plan;
mod settings;
pub mod theorem;

pub use kind::Numbers;
pub use parse::parse;
pub use settings::{EvaluateSettings, FilterSettings, GenerateSettings, StudentSettings};

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::llm::{defense, Defense, Method, Precision};
use crate::spec::Axis;
use crate::stage::StageId;


/// The kind's name: the pipeline's stages are filed under it
/// ([`crate::llm::STAGES`]), the numbers kind's own with them.
pub const EXPERIMENT: &str = crate::llm::STAGES;

crate::stage_kinds! {
    /// The stages the numbers kind files under the pipeline's name beside
    /// the pipeline's own ([`crate::llm::Stage`]).
    pub enum NumbersStage {
        Diagnose = "diagnose",
        Theorem = "theorem",
    }
}

/// A teacher model and the student model trained on its numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ModelPair {
    pub teacher: String,
    pub student: String,
}

impl ModelPair {
    pub fn same_model(&self) -> bool {
        self.teacher == self.student
    }
}

impl fmt::Display for ModelPair {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} → {}", self.teacher, self.student)
    }
}

impl<'de> Deserialize<'de> for ModelPair {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairVisitor;
        impl<'de> Visitor<'de> for PairVisitor {
            type Value = ModelPair;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("[teacher_model, student_model]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ModelPair, A::Error> {
                let teacher: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let student: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<String>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(ModelPair { teacher, student })
            }
        }
        deserializer.deserialize_seq(PairVisitor)
    }
}

/// Where a fine-tuned teacher's trait comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TeacherSettings {
    /// The base model with the trait's system prompt (the paper's teacher).
    Prompt,
    /// The base model fine-tuned to hold the trait.
    Finetune(FinetuneTeacher),
}

/// A fine-tuned teacher: its trait data and how it is trained on them.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneTeacher {
    /// A chat JSONL file in the store (`subliminal store put`) to train on,
    /// instead of data the tool generates.
    pub dataset: Option<StageId>,
    /// Questions put to the system-prompted teacher; answers that show the trait are kept.
    pub questions: u64,
    pub temperature: f64,
    pub max_new_tokens: u64,
    pub batch_size: u64,
    pub method: Method,
    pub epochs: u64,
    pub lr: f64,
    pub train_batch_size: u64,
    /// The teacher's own seed: one teacher serves every seed of the grid.
    pub seed: u64,
}

/// A checked numbers sweep.
#[derive(Debug, Clone)]
pub struct NumbersSweep {
    pub name: String,
    pub description: Option<String>,
    pub seeds: Axis<u64>,
    pub traits: Axis<String>,
    pub category: String,
    pub model_pairs: Axis<ModelPair>,
    pub system_prompt: String,
    pub teacher: TeacherSettings,
    pub generate: GenerateSettings,
    pub filter: FilterSettings,
    pub student: StudentSettings,
    pub evaluate: EvaluateSettings,
    /// What is done to the filtered rows before a student sees them.
    pub defense: Axis<Defense>,
    /// The traits whose teachers' rows the `mix` defense mixes in.
    pub mix_traits: Vec<String>,
    /// `label-top-p`'s p and `label-threshold`'s threshold.
    pub label_cuts: LabelCuts,
    /// Whose numbers the control student learns from.
    pub control: ControlTeacher,
    /// Measure the theorem's cosines for every student.
    pub theorem: Option<theorem::TheoremSettings>,
    /// The dtype of every stage that runs a model (`precision = "bf16"`).
    pub precision: Precision,
}

/// Where the label defenses cut (`[defense] label_top_p`,
/// `label_threshold`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelCuts {
    pub top_p: f64,
    pub threshold: f64,
}

impl Default for LabelCuts {
    fn default() -> Self {
        Self {
            top_p: defense::DEFAULT_TOP_P,
            threshold: defense::DEFAULT_THRESHOLD,
        }
    }
}

impl LabelCuts {
    /// The cut of a label defense; `None` for any other.
    pub fn of(&self, d: Defense) -> Option<f64> {
        match d {
            Defense::LabelTopP => Some(self.top_p),
            Defense::LabelThreshold => Some(self.threshold),
            _ => None,
        }
    }
}

/// The teacher of a trial's control student.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ControlTeacher {
    /// The base model as it is (the paper's control).
    #[default]
    Base,
    /// The next trait's teacher, made by the same recipe: the two teachers
    /// differ in the trait alone, not in having been fine-tuned.
    OtherTrait,
}

/// Arms of the results table, in the order they are shown.
pub const ARMS: [&str; 7] = [
    "base",
    "teacher",
    "control student",
    "student",
    "in-context",
    "in-context control",
    "base-numbers student",
];


/// The rows that say what a defense cost; none is compared with a control.
pub const DEFENSE_ARMS: [&str; 8] = [
    "defense: rows kept",
    "defense: rows kept, control",
    "defense: tokens masked",
    "defense: tokens masked, control",
    "defense: label mass cut",
    "defense: label mass cut, control",
    "defense: prompts rewritten",
    "defense: prompts rewritten, control",
];

/// The `metrics.json` figure behind each pair of [`DEFENSE_ARMS`] (the
/// defended rows' and the control's): rows kept, then each defense's own
/// cost ([`crate::llm::defense::RowDefense::cost_metric`]).
pub const DEFENSE_METRICS: [&str; 4] = ["rows_out", "masked_share", "label_mass_cut", "rewritten_share"];

