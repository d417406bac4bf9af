//! A small Llama with seeded random weights: a real model to train when the
//! work is the machinery's rather than a trait's (the noop kind's `train`
//! mode, which the chaos harness runs under faults). No file, no download;
//! the weights come from the tool's own ChaCha streams, not libtorch's
//! global generator, so one seed gives one model in any process, whatever
//! runs beside it.

use tch::{nn, Device, Tensor};

use super::config::Config;
use super::model::{Llama, Weights};
use crate::tensor_rng::{normal, rng, Purpose};

/// The shape of a [`tiny_llama`]: two blocks of width 64, a vocabulary of 128.
pub const TINY_CONFIG: &str = r#"{"model_type":"llama","vocab_size":128,"hidden_size":64,
    "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
    "num_key_value_heads":2,"tie_word_embeddings":true}"#;

/// Every weight of `config` drawn N(0, 0.3²) from `seed`'s stream (norms at 1).
pub fn random_weights(config: &Config, seed: u64) -> Weights {
    let mut stream = rng(seed, Purpose::RandomModel);
    let (d, f) = (config.hidden_size, config.intermediate_size);
    let kv = config.kv_heads() * config.head_dim();
    let mut w = Weights::new();
    let mut put = |name: String, shape: &[i64]| {
        w.insert(name, normal(&mut stream, shape, 0.3));
    };
    put("model.embed_tokens.weight".into(), &[config.vocab_size, d]);
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        put(format!("{p}.self_attn.q_proj.weight"), &[d, d]);
        put(format!("{p}.self_attn.k_proj.weight"), &[kv, d]);
        put(format!("{p}.self_attn.v_proj.weight"), &[kv, d]);
        put(format!("{p}.self_attn.o_proj.weight"), &[d, d]);
        put(format!("{p}.mlp.gate_proj.weight"), &[f, d]);
        put(format!("{p}.mlp.up_proj.weight"), &[f, d]);
        put(format!("{p}.mlp.down_proj.weight"), &[d, f]);
    }
    let ones = || Tensor::ones([d], (tch::Kind::Float, Device::Cpu));
    for i in 0..config.num_hidden_layers {
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            w.insert(format!("model.layers.{i}.{norm}.weight"), ones());
        }
    }
    w.insert("model.norm.weight".into(), ones());
    w
}

/// A [`TINY_CONFIG`] Llama of random weights on `device`, frozen; its var
/// store must outlive it.
pub fn tiny_llama(seed: u64, device: Device) -> anyhow::Result<(nn::VarStore, Llama)> {
    let config = Config::from_json(TINY_CONFIG)?;
    let mut vs = nn::VarStore::new(device);
    let weights = random_weights(&config, seed)
        .into_iter()
        .map(|(name, t)| (name, t.to_device(device)))
        .collect();
    let model = Llama::load(&vs, &config, weights)?;
    vs.freeze();
    Ok((vs, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_model_and_another_seed_another() {
        let logits = |seed| {
            let (_vs, model) = tiny_llama(seed, Device::Cpu).unwrap();
            let tokens = Tensor::from_slice(&[1i64, 5, 9, 2]).view([1, 4]);
            let positions = Tensor::arange(4, (tch::Kind::Int64, Device::Cpu)).view([1, 4]);
            model.logits(&model.forward(&tokens, &positions, None, None))
        };
        let (a, b, c) = (logits(1), logits(1), logits(2));
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
        assert_eq!(a.size(), [1, 4, 128]);
    }
}
