//! Small random Llamas for tests that need a model but not a real one, and
//! the paths of the set-up's real model and Python.
#![allow(dead_code)]

use std::collections::HashMap;

use subliminal_worker::llm::model::Weights;
use subliminal_worker::llm::Config;
use tch::{Device, Kind, Tensor};

/// A two-block Llama of width 32 with a vocabulary of `vocab` tokens.
pub fn tiny_config(vocab: i64) -> Config {
    Config::from_json(&format!(
        r#"{{"model_type":"llama","vocab_size":{vocab},"hidden_size":32,"intermediate_size":48,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "tie_word_embeddings":true}}"#
    ))
    .expect("a valid config")
}

/// libtorch's random generator is one per process, and the tests of one file
/// run in parallel: a test that seeds it and draws from it (weights, adapter
/// initialisation) holds this for its whole body, so that no other test
/// reseeds it in between and its numbers are the same on every run.
pub fn generator() -> std::sync::MutexGuard<'static, ()> {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GENERATOR.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every weight of `cfg` drawn N(0, scale²) from libtorch's generator, seeded.
pub fn random_weights(cfg: &Config, seed: i64, scale: f64) -> Weights {
    tch::manual_seed(seed);
    let (d, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let kv = cfg.kv_heads() * hd;
    let mut w = HashMap::new();
    let mut put = |name: String, shape: &[i64]| {
        w.insert(
            name,
            Tensor::randn(shape, (Kind::Float, Device::Cpu)) * scale,
        );
    };
    put("model.embed_tokens.weight".into(), &[cfg.vocab_size, d]);
    put("model.norm.weight".into(), &[d]);
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        put(format!("{p}.input_layernorm.weight"), &[d]);
        put(format!("{p}.post_attention_layernorm.weight"), &[d]);
        put(format!("{p}.self_attn.q_proj.weight"), &[d, d]);
        put(format!("{p}.self_attn.k_proj.weight"), &[kv, d]);
        put(format!("{p}.self_attn.v_proj.weight"), &[kv, d]);
        put(format!("{p}.self_attn.o_proj.weight"), &[d, d]);
        put(format!("{p}.mlp.gate_proj.weight"), &[f, d]);
        put(format!("{p}.mlp.up_proj.weight"), &[f, d]);
        put(format!("{p}.mlp.down_proj.weight"), &[d, f]);
    }
    w
}

/// A deep copy: a model built from it shares no storage with the original.
pub fn copy(w: &Weights) -> Weights {
    w.iter().map(|(k, v)| (k.clone(), v.copy())).collect()
}

/// The repository's root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The set-up's data folder: `SUBLIMINAL_DATA`, or `data/` in the repository.
pub fn data_dir() -> std::path::PathBuf {
    std::env::var_os("SUBLIMINAL_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("data"))
}

/// The SmolLM2 GGUF of the set-up (scripts/setup-model.sh).
pub fn gguf_path() -> std::path::PathBuf {
    let path = data_dir()
        .join("models")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-model.sh",
        path.display()
    );
    path
}

/// The virtualenv's python, with transformers (scripts/setup-reference.sh).
pub fn python() -> std::path::PathBuf {
    let venv = std::env::var_os("VIRTUAL_ENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    venv.join("bin").join("python")
}
