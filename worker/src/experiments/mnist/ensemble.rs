//! K MLPs of one shape as one batched model: each layer's weights stacked
//! into [K, out, in], one batched matmul per layer for all K.
//!
//! A group is a speed-up, never a change of result: the models share no
//! parameter, the summed loss gives each model the gradient of its own loss,
//! and Adam is elementwise, so model k of a group follows the path it would
//! follow alone (to float rounding of the batched matmul). Models go in as
//! [`Mlp`]s and come out as [`Mlp`]s, so checkpoints stay per model.

use std::collections::HashMap;

use tch::{nn, Device, Tensor};

use super::model::{Mlp, MlpConfig};

/// One stacked layer: `weight` [K, out, in], `bias` [K, 1, out].
struct StackedLinear {
    weight: Tensor,
    bias: Tensor,
}

pub struct Ensemble {
    config: MlpConfig,
    size: i64,
    vars: nn::VarStore,
    layers: Vec<StackedLinear>,
}

impl Ensemble {
    /// Stacks models of one config into trainable variables on `device`.
    pub fn stack(models: &[Mlp], device: Device) -> anyhow::Result<Self> {
        let first = models
            .first()
            .ok_or_else(|| anyhow::anyhow!("an ensemble needs at least one model"))?;
        let config = first.config.clone();
        anyhow::ensure!(
            models.iter().all(|m| m.config == config),
            "the models of an ensemble must share one shape"
        );
        let named: Vec<Vec<(String, &Tensor)>> = models.iter().map(|m| m.named_tensors()).collect();
        let vars = nn::VarStore::new(device);
        let mut layers = Vec::new();
        for layer in 0..config.hidden.len() + 1 {
            let path = vars.root() / "layers" / layer;
            let stacked = |j: usize| -> Tensor {
                let parts: Vec<&Tensor> = named.iter().map(|n| n[2 * layer + j].1).collect();
                Tensor::stack(&parts, 0).to_device(device)
            };
            let bias = stacked(1);
            let bias = bias.unsqueeze(1);
            layers.push(StackedLinear {
                weight: path.var_copy("weight", &stacked(0)),
                bias: path.var_copy("bias", &bias),
            });
        }
        Ok(Self {
            config,
            size: models.len() as i64,
            vars,
            layers,
        })
    }

    pub fn size(&self) -> i64 {
        self.size
    }

    /// The trainable variables, for an optimiser.
    pub fn vars(&self) -> &nn::VarStore {
        &self.vars
    }

    /// Logits [K, batch, 10 + m] of inputs [K, batch, 784]: model k sees row k.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let last = self.layers.len() - 1;
        let mut h = xs.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.bias.baddbmm(&h, &layer.weight.transpose(1, 2), 1.0, 1.0);
            if i < last {
                h = h.relu();
            }
        }
        h
    }

    /// Model k of the group, as a model of its own on `device`.
    pub fn model(&self, k: i64, device: Device) -> anyhow::Result<Mlp> {
        let mut tensors = HashMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            tensors.insert(
                format!("layers.{i}.weight"),
                layer.weight.get(k).detach().to_device(Device::Cpu),
            );
            tensors.insert(
                format!("layers.{i}.bias"),
                layer.bias.get(k).squeeze_dim(0).detach().to_device(Device::Cpu),
            );
        }
        Mlp::from_tensors(self.config.clone(), &tensors, device)
    }
}
