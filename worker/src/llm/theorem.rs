//! The paper's theorem, measured: a student's first gradient step on a
//! teacher's data moves it toward the teacher's own weight change.
//!
//! For each adapted matrix the teacher's change is ΔW (LoRA: the scaled
//! B·A; full fine-tuning: W_T − W_0). The student's first update is −g,
//! g the gradient of its loss at the base model over the same matrices.
//! The figure is cos(−g, ΔW). Rows are split into blocks; each block's
//! gradient is kept (in bf16) only long enough to take its inner products
//! with the changes and with the other blocks' gradients, so the cosine of
//! any reweighting of blocks (a bootstrap resample) follows from those
//! numbers without another pass.

use std::collections::HashMap;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::finetune::{batch_loss, Example};
use super::model::Llama;

/// A weight change per adapted matrix, by module name
/// (`model.layers.3.self_attn.q_proj`), each [out, in] in f32.
#[derive(Debug, Default)]
pub struct Change(pub HashMap<String, Tensor>);

impl Change {
    /// A LoRA adapter's change: scale · B·A for every adapted module, from
    /// tensors named `MODULE.lora_A.weight` [r, in] and `MODULE.lora_B.weight` [out, r].
    pub fn lora(tensors: &HashMap<String, Tensor>, scale: f64) -> anyhow::Result<Self> {
        let mut out = HashMap::new();
        for (name, a) in tensors {
            let Some(module) = name.strip_suffix(".lora_A.weight") else {
                continue;
            };
            let b = tensors
                .get(&format!("{module}.lora_B.weight"))
                .with_context(|| format!("the adapter has {name} but no lora_B for {module}"))?;
            anyhow::ensure!(
                a.dim() == 2 && b.dim() == 2 && b.size()[1] == a.size()[0],
                "adapter {module}: lora_B {:?} and lora_A {:?} do not multiply",
                b.size(),
                a.size()
            );
            let delta = b.to_kind(Kind::Float).matmul(&a.to_kind(Kind::Float)) * scale;
            out.insert(module.to_owned(), delta);
        }
        anyhow::ensure!(!out.is_empty(), "the adapter holds no lora_A/lora_B pairs");
        Ok(Self(out))
    }

    /// The difference of `self` and `other` over the modules of either.
    pub fn minus(&self, other: &Change) -> Change {
        let mut out: HashMap<String, Tensor> = self
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect();
        for (k, v) in &other.0 {
            let diff = match out.get(k) {
                Some(mine) => mine - v,
                None => -v,
            };
            out.insert(k.clone(), diff);
        }
        Change(out)
    }

    pub fn norm(&self) -> f64 {
        self.0
            .values()
            .map(|t| t.square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt()
    }
}

/// Inner products of each block's loss gradient with the changes and with
/// every other block's gradient.
#[derive(Debug, Clone)]
pub struct BlockGradients {
    /// Answer tokens per block: a block's weight in the whole gradient.
    pub tokens: Vec<usize>,
    /// `along[d][b]`: <g_b, change d>.
    pub along: Vec<Vec<f64>>,
    /// `gram[b][c]`: <g_b, g_c>.
    pub gram: Vec<Vec<f64>>,
}

/// The gradients of the mean loss over each block of `examples` (split in
/// `blocks` nearly equal runs) with respect to the weights of the modules
/// the changes cover, reduced to inner products. The model's other weights
/// stay frozen. `None` when `stop()` turns true.
pub fn block_gradients(
    model: &mut Llama,
    examples: &[Example],
    blocks: usize,
    batch_size: usize,
    pad_id: u32,
    changes: &[&Change],
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<Option<BlockGradients>> {
    anyhow::ensure!(
        !examples.is_empty() && blocks >= 1,
        "the theorem needs rows"
    );
    let blocks = blocks.min(examples.len());
    let mut weights: Vec<(String, Tensor)> = Vec::new();
    for (name, linear) in model.linears_mut() {
        if changes.iter().any(|c| c.0.contains_key(&name)) {
            linear.weight = linear.weight.detach().set_requires_grad(true);
            weights.push((name, linear.weight.shallow_clone()));
        }
    }
    anyhow::ensure!(
        !weights.is_empty(),
        "no module of the model is one the teacher changed"
    );
    let mut tokens = Vec::with_capacity(blocks);
    let mut along = vec![Vec::with_capacity(blocks); changes.len()];
    let mut kept: Vec<Vec<Tensor>> = Vec::with_capacity(blocks);
    let mut gram = vec![vec![0.0; blocks]; blocks];
    let per = examples.len().div_ceil(blocks);
    for (b, block) in examples.chunks(per).enumerate() {
        if stop() {
            return Ok(None);
        }
        for (_, w) in &weights {
            let mut grad = w.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
        let total: usize = block.iter().map(Example::learned_tokens).sum();
        for micro in block.chunks(batch_size.max(1)) {
            let batch: Vec<&Example> = micro.iter().collect();
            if let Some((loss, n)) = batch_loss(model, &batch, pad_id) {
                (loss * (n as f64 / total.max(1) as f64)).backward();
            }
        }
        let grads: Vec<Tensor> = weights
            .iter()
            .map(|(_, w)| w.grad().to_kind(Kind::Float))
            .collect();
        for (d, change) in changes.iter().enumerate() {
            let mut sum = 0.0;
            for ((name, _), g) in weights.iter().zip(&grads) {
                if let Some(delta) = change.0.get(name) {
                    sum += (g * delta.to_device(g.device()))
                        .sum(Kind::Double)
                        .double_value(&[]);
                }
            }
            along[d].push(sum);
        }
        let stored: Vec<Tensor> = grads.iter().map(|g| g.to_kind(Kind::BFloat16)).collect();
        for (c, other) in kept.iter().enumerate() {
            let dot: f64 = grads
                .iter()
                .zip(other)
                .map(|(g, o)| {
                    (g * o.to_kind(Kind::Float))
                        .sum(Kind::Double)
                        .double_value(&[])
                })
                .sum();
            gram[b][c] = dot;
            gram[c][b] = dot;
        }
        gram[b][b] = grads
            .iter()
            .map(|g| g.square().sum(Kind::Double).double_value(&[]))
            .sum();
        kept.push(stored);
        tokens.push(total);
    }
    let used = kept.len();
    gram.truncate(used);
    for row in &mut gram {
        row.truncate(used);
    }
    for (_, w) in &weights {
        let _ = w.set_requires_grad(false);
    }
    Ok(Some(BlockGradients {
        tokens,
        along,
        gram,
    }))
}

impl BlockGradients {
    /// cos(−g, change d) for g = Σ_b m_b w_b g_b, w_b the block's share of
    /// the answer tokens and m_b its count in a resample (all ones: the data
    /// as it is).
    pub fn cosine(&self, d: usize, change_norm: f64, counts: &[f64]) -> f64 {
        let total: f64 = self
            .tokens
            .iter()
            .zip(counts)
            .map(|(&t, m)| t as f64 * m)
            .sum();
        let w: Vec<f64> = self
            .tokens
            .iter()
            .zip(counts)
            .map(|(&t, m)| t as f64 * m / total.max(1.0))
            .collect();
        let inner: f64 = w.iter().zip(&self.along[d]).map(|(w, a)| w * a).sum();
        let mut sq = 0.0;
        for (i, wi) in w.iter().enumerate() {
            for (j, wj) in w.iter().enumerate() {
                sq += wi * wj * self.gram[i][j];
            }
        }
        -inner / (sq.max(0.0).sqrt() * change_norm).max(f64::MIN_POSITIVE)
    }

    /// A 95% percentile interval of [`cosine`](Self::cosine) over `resamples`
    /// bootstrap resamples of the blocks.
    pub fn interval(&self, d: usize, change_norm: f64, resamples: usize, seed: u64) -> (f64, f64) {
        let n = self.tokens.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut values: Vec<f64> = (0..resamples)
            .map(|_| {
                let mut counts = vec![0.0; n];
                for _ in 0..n {
                    counts[rng.gen_range(0..n)] += 1.0;
                }
                self.cosine(d, change_norm, &counts)
            })
            .collect();
        values.sort_by(f64::total_cmp);
        let at =
            |q: f64| values[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
        (at(0.025), at(0.975))
    }
}
