//! Language models in tch: a Llama-family causal LM (Llama, SmolLM, Qwen2),
//! its loading from Hugging Face folders and GGUF files, tokenisation with
//! the model's chat template, batched sampling with a KV cache, and LoRA or
//! full fine-tuning, and judges read from next-token probabilities.

pub mod config;
pub mod constrain;
pub mod divergence;
pub mod finetune;
pub mod generate;
pub mod gguf;
pub mod judge;
pub mod likelihood;
pub mod load;
pub mod model;
pub mod pipeline;
pub mod random;
pub mod readout;
pub mod screen;
pub mod soft_labels;
pub mod theorem;
pub mod tokenizer;

use subliminal_shared::llm::Precision;
use tch::{nn, Device, Kind};

pub use config::Config;
pub use load::Checkpoint;
pub use model::Llama;

/// The dtype of a model's frozen weights at a stage's precision; what the
/// model computes in f32 whatever its weights' dtype (norms, softmax, LoRA
/// adapters) is the model's own business.
pub fn kind_of(precision: Precision) -> Kind {
    match precision {
        Precision::F32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
    }
}

/// Builds a model from a checkpoint on a device, weights frozen, in `kind`.
pub fn instantiate(
    checkpoint: &Checkpoint,
    device: Device,
    kind: Kind,
) -> anyhow::Result<(nn::VarStore, Llama)> {
    let mut vs = nn::VarStore::new(device);
    let model = Llama::load(&vs, &checkpoint.config, checkpoint.weights())?;
    vs.set_kind(kind);
    vs.freeze();
    Ok((vs, model))
}
