//! The settings a sweep gives the pipeline, as kinds share them: how a model
//! is fine-tuned (method, optimiser, layers, a LoRA table), what generation
//! may write, the favourite-word probe, and the range checks each kind runs on
//! them while it reads its file.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{Target, TrainParams, PROJECTIONS, STAGE_VERSION};

/// How a model is fine-tuned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "method")]
pub enum Method {
    /// Low-rank adapters on the named projections; the base weights stay frozen.
    Lora {
        rank: i64,
        alpha: f64,
        targets: Vec<String>,
        /// Rank-stabilised scaling: alpha / sqrt(rank) instead of alpha / rank.
        #[serde(default, skip_serializing_if = "is_false")]
        rslora: bool,
    },
    /// Every weight (of the trained layers).
    Full,
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// The optimiser of a fine-tune.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    #[default]
    Adamw,
    /// Plain stochastic gradient descent, no momentum.
    Sgd,
}

impl Optimizer {
    pub(crate) fn is_adamw(&self) -> bool {
        *self == Optimizer::Adamw
    }
}

impl fmt::Display for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Optimizer::Adamw => "adamw",
            Optimizer::Sgd => "sgd",
        })
    }
}

/// Which transformer blocks a fine-tune trains: all, or the listed ones
/// (counted from 0, the block nearest the embeddings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Layers {
    #[default]
    All,
    Only(Vec<u32>),
}

impl Layers {
    pub(crate) fn is_all(&self) -> bool {
        *self == Layers::All
    }
}

impl fmt::Display for Layers {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Layers::All => f.write_str("all"),
            Layers::Only(list) => {
                let names: Vec<String> = list.iter().map(u32::to_string).collect();
                f.write_str(&names.join("+"))
            }
        }
    }
}

/// `"all"`, one block number, or a list of block numbers.
impl<'de> Deserialize<'de> for Layers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LayersVisitor;
        impl<'de> Visitor<'de> for LayersVisitor {
            type Value = Layers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"all\", a block number, or a list of block numbers")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Layers, E> {
                if v == "all" {
                    Ok(Layers::All)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Layers, E> {
                u32::try_from(v)
                    .map(|n| Layers::Only(vec![n]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Layers, E> {
                u32::try_from(v)
                    .map(|n| Layers::Only(vec![n]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Layers, A::Error> {
                let mut list = Vec::new();
                while let Some(n) = seq.next_element::<u32>()? {
                    list.push(n);
                }
                list.sort_unstable();
                list.dedup();
                Ok(Layers::Only(list))
            }
        }
        deserializer.deserialize_any(LayersVisitor)
    }
}

/// The dtype a stage runs its model in. It changes the numbers, so it is
/// part of every LLM stage's parameters (and id); f32, the default, is left
/// out of them, which keeps the ids of stages from before the setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Every weight and activation in f32: the results the parity tests and
    /// the paper's references hold to.
    #[default]
    F32,
    /// The frozen base weights in bf16 (about twice as fast on CPUs with
    /// AVX-512 BF16, and on GPUs); norms, softmax, log-probabilities, LoRA
    /// adapters and their optimiser state stay in f32.
    Bf16,
}

impl Precision {
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// What generation may write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Constrain {
    /// Any token.
    #[default]
    None,
    /// Only what the paper's filter keeps.
    Numbers,
}

/// A generate stage's constraint: the paper's filter, with its banned numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumbersGrammar {
    pub banned_numbers: Vec<u32>,
}

/// A LoRA fine-tune on all projections with AdamW, as kinds built on this
/// one configure it: a teacher on its dataset, or a student on numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSettings {
    #[serde(default = "d_lora_rank")]
    pub lora_rank: u64,
    #[serde(default = "d_lora_alpha")]
    pub lora_alpha: f64,
    #[serde(default = "d_lora_epochs")]
    pub epochs: u64,
    #[serde(default = "d_lora_lr")]
    pub lr: f64,
    #[serde(default = "d_lora_batch")]
    pub batch_size: u64,
    #[serde(default = "d_lora_warmup")]
    pub warmup_steps: u64,
}

fn d_lora_rank() -> u64 {
    8
}
fn d_lora_alpha() -> f64 {
    8.0
}
fn d_lora_epochs() -> u64 {
    3
}
fn d_lora_lr() -> f64 {
    2e-4
}
fn d_lora_batch() -> u64 {
    8
}
fn d_lora_warmup() -> u64 {
    5
}

impl LoraSettings {
    /// The fine-tune of `model` with this seed, at `precision`.
    pub fn train_params(&self, model: &str, seed: u64, precision: Precision) -> TrainParams {
        TrainParams {
            version: STAGE_VERSION,
            model: model.to_owned(),
            seed,
            method: Method::Lora {
                rank: self.lora_rank as i64,
                alpha: self.lora_alpha,
                targets: PROJECTIONS.iter().map(|p| p.to_string()).collect(),
                rslora: false,
            },
            epochs: self.epochs,
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            max_grad_norm: 1.0,
            batch_size: self.batch_size,
            grad_accumulation: 1,
            weight_decay: 0.0,
            optimizer: Optimizer::Adamw,
            layers: Layers::All,
            target: Target::Tokens,
            precision,
        }
    }
}

/// Checks a LoRA table's ranges; the message says what was expected.
pub fn check_lora(t: &LoraSettings) -> Result<(), String> {
    for (key, value) in [
        ("lora_rank", t.lora_rank),
        ("epochs", t.epochs),
        ("batch_size", t.batch_size),
    ] {
        if value == 0 {
            return Err(format!("expected {key} of at least 1"));
        }
    }
    if !(t.lr.is_finite() && t.lr > 0.0 && t.lr <= 1.0) {
        return Err("expected a learning rate (lr) greater than 0 and at most 1".to_owned());
    }
    if !(t.lora_alpha.is_finite() && t.lora_alpha > 0.0) {
        return Err("expected a lora_alpha greater than 0".to_owned());
    }
    Ok(())
}

/// The favourite-animal (or tree) questions, as kinds built on this one set them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    #[serde(default = "d_probe_questions")]
    pub questions: u64,
    #[serde(default = "d_probe_samples")]
    pub samples_per_question: u64,
    #[serde(default = "d_probe_temperature")]
    pub temperature: f64,
    #[serde(default = "d_probe_tokens")]
    pub max_new_tokens: u64,
    #[serde(default = "d_probe_batch")]
    pub batch_size: u64,
}

fn d_probe_questions() -> u64 {
    50
}
fn d_probe_samples() -> u64 {
    100
}
fn d_probe_temperature() -> f64 {
    1.0
}
fn d_probe_tokens() -> u64 {
    8
}
fn d_probe_batch() -> u64 {
    64
}

/// Checks a probe table's ranges.
pub fn check_probe(e: &ProbeSettings) -> Result<(), String> {
    for (key, value) in [
        ("questions", e.questions),
        ("samples_per_question", e.samples_per_question),
        ("max_new_tokens", e.max_new_tokens),
        ("batch_size", e.batch_size),
    ] {
        if value == 0 {
            return Err(format!("expected {key} of at least 1"));
        }
    }
    if !(e.temperature.is_finite() && (0.0..=2.0).contains(&e.temperature)) {
        return Err("expected a temperature from 0 (greedy) to 2".to_owned());
    }
    Ok(())
}

/// Checks the settings of a generation: counts of at least 1, a temperature
/// from 0 (greedy) to 2, a top-p in (0, 1].
pub fn check_generation(
    prompts: u64,
    temperature: f64,
    top_p: f64,
    max_new_tokens: u64,
    batch_size: u64,
) -> Result<(), String> {
    for (key, value) in [
        ("prompts", prompts),
        ("max_new_tokens", max_new_tokens),
        ("batch_size", batch_size),
    ] {
        if value == 0 {
            return Err(format!("expected {key} of at least 1"));
        }
    }
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err("expected a temperature from 0 (greedy) to 2".to_owned());
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err("expected a top_p greater than 0 and at most 1".to_owned());
    }
    Ok(())
}

/// A teacher's sampling of seeded prompts, as a sweep's `[generate]` table
/// sets it for a kind whose generate stage completes its own prompts (code
/// tasks, word problems) or the numbers prompts at one temperature. Each
/// kind passes its defaults in ([`Generation::defaults`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub prompts: u64,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: u64,
    pub batch_size: u64,
}

/// A `[generate]` table as written: what it leaves out takes the kind's default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeneration {
    prompts: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_new_tokens: Option<u64>,
    batch_size: Option<u64>,
}

impl Generation {
    /// A kind's defaults: its prompt count and completion length, sampled
    /// at temperature 1 and top-p 1, 64 prompts a batch.
    pub const fn defaults(prompts: u64, max_new_tokens: u64) -> Self {
        Self {
            prompts,
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens,
            batch_size: 64,
        }
    }

    /// The `[generate]` table of `source` over these defaults, checked by
    /// [`check_generation`]; a refusal names the table's line.
    pub fn read(
        self,
        source: &crate::spec::Source,
        raw: Option<toml::Spanned<RawGeneration>>,
    ) -> Result<Self, crate::spec::SpecError> {
        let Some(raw) = raw else {
            return Ok(self);
        };
        let span = raw.span();
        let r = raw.into_inner();
        let g = Self {
            prompts: r.prompts.unwrap_or(self.prompts),
            temperature: r.temperature.unwrap_or(self.temperature),
            top_p: r.top_p.unwrap_or(self.top_p),
            max_new_tokens: r.max_new_tokens.unwrap_or(self.max_new_tokens),
            batch_size: r.batch_size.unwrap_or(self.batch_size),
        };
        check_generation(
            g.prompts,
            g.temperature,
            g.top_p,
            g.max_new_tokens,
            g.batch_size,
        )
        .map_err(|message| source.error_at(span, "generate", message))?;
        Ok(g)
    }

    /// The parameters of a kind's generate stage (at its stage `version`)
    /// for one seed, the teacher run at `precision`.
    pub fn seeded(
        &self,
        version: u32,
        seed: u64,
        precision: Precision,
    ) -> super::SeededPromptsParams {
        super::SeededPromptsParams {
            version,
            seed,
            prompts: self.prompts,
            temperature: self.temperature,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
            batch_size: self.batch_size,
            precision,
        }
    }
}
