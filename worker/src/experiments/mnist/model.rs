//! The paper's MLP: 784 → 256 → 256 → 10 + m, ReLU, weights N(0, 1/sqrt(d_in)),
//! biases 0. The init seed is the model's "family".
//!
//! Loading (from an init seed or from a checkpoint) is kept apart from the
//! maths in [`Mlp::forward`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::safetensors_io;
use crate::tensor_rng::{self, Purpose};

/// The shape of the network; stored in every checkpoint's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    pub input: i64,
    pub hidden: Vec<i64>,
    pub digits: i64,
    pub aux_logits: i64,
}

impl MlpConfig {
    pub fn paper(aux_logits: u64) -> Self {
        Self::with_width(aux_logits, subliminal_shared::experiments::mnist::PAPER_WIDTH)
    }

    /// The paper's two hidden layers, each `width` wide.
    pub fn with_width(aux_logits: u64, width: u64) -> Self {
        Self {
            input: 784,
            hidden: vec![width as i64, width as i64],
            digits: 10,
            aux_logits: aux_logits as i64,
        }
    }

    pub fn outputs(&self) -> i64 {
        self.digits + self.aux_logits
    }

    /// (name, in, out) of each layer, first to last.
    fn layers(&self) -> Vec<(String, i64, i64)> {
        let mut dims = vec![self.input];
        dims.extend(&self.hidden);
        dims.push(self.outputs());
        dims.windows(2)
            .enumerate()
            .map(|(i, w)| (format!("layers.{i}"), w[0], w[1]))
            .collect()
    }
}

/// One fully connected layer.
#[derive(Debug)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.weight, Some(&self.bias))
    }
}

#[derive(Debug)]
pub struct Mlp {
    pub config: MlpConfig,
    vars: nn::VarStore,
    layers: Vec<Linear>,
}

impl Mlp {
    /// A fresh model drawn from `init_seed`: the same seed, the same weights.
    pub fn init(config: MlpConfig, init_seed: u64, device: Device) -> Self {
        Self::init_perturbed(config, init_seed, 0.0, device)
    }

    /// The init of `init_seed` plus ε·N(0, σ²) on every weight, σ = 1/sqrt(d_in)
    /// (the init's own scale), drawn from the seed's init-noise stream. The
    /// noise is the same draw for every ε, so ε alone moves along one line
    /// away from the init; ε = 0 is the plain init, bit for bit.
    pub fn init_perturbed(config: MlpConfig, init_seed: u64, epsilon: f64, device: Device) -> Self {
        let mut rng = tensor_rng::rng(init_seed, Purpose::Init);
        let mut noise = tensor_rng::rng(init_seed, Purpose::InitNoise);
        let mut weights = HashMap::new();
        for (name, d_in, d_out) in config.layers() {
            let std = 1.0 / (d_in as f64).sqrt();
            let mut w = tensor_rng::normal(&mut rng, &[d_out, d_in], std);
            if epsilon != 0.0 {
                w += tensor_rng::normal(&mut noise, &[d_out, d_in], std) * epsilon;
            }
            weights.insert(format!("{name}.weight"), w);
            weights.insert(
                format!("{name}.bias"),
                Tensor::zeros([d_out], (tch::Kind::Float, Device::Cpu)),
            );
        }
        Self::from_tensors(config, &weights, device).expect("init draws every layer")
    }

    /// A model from named tensors (`layers.{i}.weight`, `layers.{i}.bias`),
    /// each checked against the config's shape.
    pub fn from_tensors(
        config: MlpConfig,
        tensors: &HashMap<String, Tensor>,
        device: Device,
    ) -> anyhow::Result<Self> {
        let vars = nn::VarStore::new(device);
        let mut layers = Vec::new();
        for (i, (name, d_in, d_out)) in config.layers().into_iter().enumerate() {
            // VarStore names nest by path; "layers.0.weight" is layers / 0 / weight.
            let path = vars.root() / "layers" / i;
            let get = |suffix: &str, shape: &[i64]| -> anyhow::Result<Tensor> {
                let key = format!("{name}.{suffix}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| anyhow::anyhow!("checkpoint has no tensor {key}"))?;
                anyhow::ensure!(
                    t.size() == shape,
                    "checkpoint tensor {key} has shape {:?}, expected {shape:?}",
                    t.size()
                );
                Ok(path.var_copy(suffix, &t.to_device(device)))
            };
            layers.push(Linear {
                weight: get("weight", &[d_out, d_in])?,
                bias: get("bias", &[d_out])?,
            });
        }
        Ok(Self {
            config,
            vars,
            layers,
        })
    }

    /// Loads a checkpoint written by [`Mlp::to_safetensors`].
    pub fn from_safetensors(bytes: &[u8], device: Device) -> anyhow::Result<Self> {
        let loaded = safetensors_io::parse(bytes, "model checkpoint")?;
        let config: MlpConfig = loaded.meta("config")?;
        let mut tensors = HashMap::new();
        for (name, _, _) in config.layers() {
            for suffix in ["weight", "bias"] {
                let key = format!("{name}.{suffix}");
                tensors.insert(key.clone(), loaded.tensor(&key, Device::Cpu)?);
            }
        }
        Self::from_tensors(config, &tensors, device)
    }

    /// Every parameter by its checkpoint name, first layer first.
    pub fn named_tensors(&self) -> Vec<(String, &Tensor)> {
        let mut named = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            named.push((format!("layers.{i}.weight"), &layer.weight));
            named.push((format!("layers.{i}.bias"), &layer.bias));
        }
        named
    }

    /// Every parameter, flattened into one vector (checkpoint order).
    pub fn flat(&self) -> Tensor {
        let parts: Vec<Tensor> = self
            .named_tensors()
            .iter()
            .map(|(_, t)| t.detach().flatten(0, -1))
            .collect();
        Tensor::cat(&parts, 0)
    }

    pub fn to_safetensors(&self) -> anyhow::Result<Vec<u8>> {
        let named = self.named_tensors();
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let metadata = HashMap::from([("config".to_owned(), serde_json::to_string(&self.config)?)]);
        safetensors_io::to_bytes(&refs, metadata)
    }

    /// The trainable variables, for an optimiser.
    pub fn vars(&self) -> &nn::VarStore {
        &self.vars
    }

    /// Logits, [batch, 10 + m]: digits first, then the auxiliary logits.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let last = self.layers.len() - 1;
        let mut h = xs.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h);
            if i < last {
                h = h.relu();
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_model_and_checkpoints_round_trip() {
        let a = Mlp::init(MlpConfig::paper(3), 5, Device::Cpu);
        let b = Mlp::init(MlpConfig::paper(3), 5, Device::Cpu);
        let c = Mlp::init(MlpConfig::paper(3), 6, Device::Cpu);
        let x = Tensor::ones([2, 784], (tch::Kind::Float, Device::Cpu));
        assert!(a.forward(&x).equal(&b.forward(&x)));
        assert!(!a.forward(&x).equal(&c.forward(&x)));
        assert_eq!(a.forward(&x).size(), vec![2, 13]);
        let bytes = a.to_safetensors().unwrap();
        let reloaded = Mlp::from_safetensors(&bytes, Device::Cpu).unwrap();
        assert!(a.forward(&x).equal(&reloaded.forward(&x)));
        assert!(Mlp::from_safetensors(&bytes[..100], Device::Cpu).is_err());
    }

    #[test]
    fn weights_have_the_papers_scale() {
        let m = Mlp::init(MlpConfig::paper(3), 0, Device::Cpu);
        let std = m.layers[0].weight.std(true).double_value(&[]);
        assert!((std - 1.0 / 28.0).abs() < 0.001, "std {std}");
        assert_eq!(
            m.layers[0]
                .bias
                .abs()
                .sum(tch::Kind::Float)
                .double_value(&[]),
            0.0
        );
    }
}
