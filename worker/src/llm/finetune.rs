//! Fine-tuning on (prompt → answer) examples, the loss on answer tokens only:
//! LoRA adapters (plain or rank-stabilised) or every weight, of every block or
//! of the listed ones; AdamW or SGD, a linear schedule with warmup, gradient
//! clipping and gradient accumulation.
//!
//! Adapters live in a var store of their own, so the optimiser sees them and
//! nothing else, and a checkpoint of them is small.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

pub use subliminal_shared::llm::Optimizer;

use super::model::{Llama, Lora};
use crate::memory::fitting;
use crate::optim::Optim;
pub use crate::resume::Checkpoints;

/// Which linear layers get adapters, and how large.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    pub rank: i64,
    pub alpha: f64,
    /// Module names such as `q_proj`, `down_proj`.
    pub targets: Vec<String>,
    /// Scale by alpha / sqrt(rank) (rank-stabilised LoRA) instead of alpha / rank.
    #[serde(default)]
    pub rslora: bool,
    /// The blocks that get adapters; empty is every block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<u32>,
}

impl LoraSpec {
    /// Adapters of `rank` on every projection of every block, scaled by
    /// alpha / rank.
    pub fn every_projection(rank: i64, alpha: f64) -> Self {
        Self {
            rank,
            alpha,
            targets: ALL_PROJECTIONS.map(str::to_owned).to_vec(),
            rslora: false,
            layers: Vec::new(),
        }
    }

    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// Checks that every listed block exists in a model of `blocks` blocks.
pub fn check_layers(layers: &[u32], blocks: usize) -> anyhow::Result<()> {
    if let Some(bad) = layers.iter().find(|&&l| l as usize >= blocks) {
        anyhow::bail!(
            "layer {bad} does not exist: this model has blocks 0 to {}",
            blocks.saturating_sub(1)
        );
    }
    Ok(())
}

/// The block index of a parameter or module named `model.layers.N.…`.
fn block_of(name: &str) -> Option<u32> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Freezes every variable of `vs` outside the listed blocks (embeddings,
/// final norm and the other blocks), for full fine-tuning of a few layers.
pub fn freeze_outside(vs: &nn::VarStore, layers: &[u32], blocks: usize) -> anyhow::Result<()> {
    check_layers(layers, blocks)?;
    for (name, var) in vs.variables() {
        if !block_of(&name).is_some_and(|b| layers.contains(&b)) {
            let _ = var.set_requires_grad(false);
        }
    }
    Ok(())
}

/// Every projection of a Llama block: the paper's "all projections".
pub use subliminal_shared::llm::PROJECTIONS as ALL_PROJECTIONS;

/// Adds zero-initialised adapters (B = 0, so the model is unchanged until
/// trained) to the targeted layers; their variables go into `vs`.
pub fn attach_lora(
    model: &mut Llama,
    vs: &nn::VarStore,
    spec: &LoraSpec,
    seed: u64,
) -> anyhow::Result<()> {
    for target in &spec.targets {
        if !ALL_PROJECTIONS.contains(&target.as_str()) {
            anyhow::bail!(
                "LoRA target {target:?} is not a projection of this model: expected any of {}",
                ALL_PROJECTIONS.join(", ")
            );
        }
    }
    check_layers(&spec.layers, model.layers.len())?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let root = vs.root();
    for (name, linear) in model.linears_mut() {
        let module = name.rsplit('.').next().unwrap_or("");
        if !spec.targets.iter().any(|t| t == module) {
            continue;
        }
        if !spec.layers.is_empty() && !block_of(&name).is_some_and(|b| spec.layers.contains(&b)) {
            continue;
        }
        let (inp, out) = (linear.in_features(), linear.out_features());
        // Kaiming-uniform with a = sqrt(5), as PEFT initialises A.
        let bound = 1.0 / (inp as f64).sqrt();
        let values: Vec<f32> = (0..spec.rank * inp)
            .map(|_| rand::Rng::gen_range(&mut rng, -bound..bound) as f32)
            .collect();
        let a0 = Tensor::from_slice(&values).view([spec.rank, inp]);
        let p = name.split('.').fold(root.clone(), |p, part| &p / part);
        let a = (&p / "lora_A").var_copy("weight", &a0);
        let b = (&p / "lora_B").zeros("weight", &[out, spec.rank]);
        linear.lora = Some(Lora {
            a,
            b,
            scale: spec.scale(),
            rows: None,
        });
    }
    Ok(())
}

/// Loads trained adapter values into attached adapters, by name.
pub fn load_lora(vs: &mut nn::VarStore, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    let mut vars = vs.variables();
    if vars.len() != tensors.len() {
        anyhow::bail!(
            "the adapter checkpoint has {} tensors, the model's adapters {}: was it trained with other targets?",
            tensors.len(),
            vars.len()
        );
    }
    tch::no_grad(|| -> anyhow::Result<()> {
        for (name, var) in vars.iter_mut() {
            let saved = tensors
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("the adapter checkpoint has no tensor {name}"))?;
            if saved.size() != var.size() {
                anyhow::bail!(
                    "adapter {name} has shape {:?}: expected {:?}",
                    saved.size(),
                    var.size()
                );
            }
            var.copy_(saved);
        }
        Ok(())
    })
}

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub epochs: u64,
    pub lr: f64,
    pub warmup_steps: u64,
    pub max_grad_norm: f64,
    /// Examples per forward pass.
    pub batch_size: u64,
    /// Forward passes per optimiser step.
    pub grad_accumulation: u64,
    pub weight_decay: f64,
    pub seed: u64,
    #[serde(default)]
    pub optimizer: Optimizer,
}

/// One tokenised example: the prompt, then the answer that is learned.
#[derive(Debug, Clone)]
pub struct Example {
    pub prompt: Vec<u32>,
    pub answer: Vec<u32>,
    /// Answer tokens left out of the loss (`true`), one per answer token;
    /// empty when every answer token is learned.
    pub masked: Vec<bool>,
    /// A teacher's distribution to learn at each answer position instead
    /// of the answer token itself (forward KL).
    pub soft: Option<SoftTargets>,
}

/// A teacher's top-k distribution at each answer position: k token ids and
/// k log-probabilities (summing to one in probability) per position.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftTargets {
    pub k: usize,
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
}

impl Example {
    pub fn new(prompt: Vec<u32>, answer: Vec<u32>) -> Self {
        Self {
            prompt,
            answer,
            masked: Vec::new(),
            soft: None,
        }
    }

    /// An example that learns `soft` at its answer positions, one position
    /// per answer token.
    pub fn distilled(
        prompt: Vec<u32>,
        answer: Vec<u32>,
        soft: SoftTargets,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            soft.k >= 1 && soft.ids.len() == answer.len() * soft.k && soft.logprobs.len() == soft.ids.len(),
            "soft labels for {} answer tokens need {} entries of k = {}, found {} ids and {} log-probabilities",
            answer.len(),
            answer.len() * soft.k,
            soft.k,
            soft.ids.len(),
            soft.logprobs.len()
        );
        Ok(Self {
            prompt,
            answer,
            masked: Vec::new(),
            soft: Some(soft),
        })
    }

    /// Whether answer token `j` is learned.
    fn learns(&self, j: usize) -> bool {
        !self.masked.get(j).copied().unwrap_or(false)
    }

    /// How many answer tokens are learned.
    pub fn learned_tokens(&self) -> usize {
        (0..self.answer.len()).filter(|&j| self.learns(j)).count()
    }
}

/// What a training run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub steps: u64,
    /// Mean loss per optimiser step.
    pub losses: Vec<f64>,
    /// Tokens of the examples themselves (prompt and answer).
    pub tokens: u64,
    /// Token positions the model computed, padding included.
    pub padded_tokens: u64,
    /// 1 − tokens / padded_tokens: the compute spent on padding.
    pub padding_share: f64,
    pub seconds: f64,
    pub tokens_per_second: f64,
    /// Examples per forward pass at the end: the setting's batch size, or
    /// less after running out of device memory (see [`crate::memory::fitting`]).
    pub micro_batch: u64,
    /// Steps retried at a smaller micro-batch after running out of memory.
    pub out_of_memory_retries: u32,
}

/// Optimiser steps of a batch size's examples taken from windows of this
/// many steps, sorted by length within the window.
const LENGTH_WINDOW_STEPS: usize = 16;

/// One epoch's optimiser steps: a seeded shuffle, each window of
/// [`LENGTH_WINDOW_STEPS`] steps sorted by length and cut into steps, and
/// the steps shuffled again. A right-padded batch costs its longest row
/// times its size; rows of like length waste little on padding (on numbers
/// rows about 13% of positions at random, under 2% grouped) while each
/// step still draws from the whole shuffled dataset.
pub fn length_grouped_steps(
    lengths: &[usize],
    per_step: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<usize>> {
    let per_step = per_step.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(rng);
    let mut steps: Vec<Vec<usize>> = Vec::with_capacity(lengths.len().div_ceil(per_step));
    for window in order.chunks_mut(per_step * LENGTH_WINDOW_STEPS) {
        window.sort_by_key(|&i| lengths[i]);
        steps.extend(window.chunks(per_step).map(<[usize]>::to_vec));
    }
    steps.shuffle(rng);
    steps
}

/// The learning rate factor at optimiser step `step` of `total`: a linear ramp
/// over the warmup steps, then a linear decay to zero.
pub fn schedule(step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        step as f64 / warmup.max(1) as f64
    } else {
        (total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64
    }
}

/// What steers a training run from outside its maths, and hears from it.
pub struct Hooks<'a> {
    /// Asked before each step; `true` stops the run (saving its state, with checkpoints).
    pub stop: &'a dyn Fn() -> bool,
    /// `(step, total, loss, tokens/s)` after each step.
    pub progress: &'a mut dyn FnMut(u64, u64, f64, f64),
    pub checkpoints: Option<&'a dyn Checkpoints>,
}

/// How far a run had come when its state was saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    /// Optimiser steps taken.
    steps: u64,
    losses: Vec<f64>,
    tokens: u64,
    padded_tokens: u64,
    /// Seconds of training that led here, over every run before.
    seconds: f64,
}

const POSITION: &str = "position";

/// The run's state as bytes: the optimiser's (every trainable variable and
/// its moments) and the position.
fn save_state(opt: &Optim, report: &TrainReport, seconds: f64) -> anyhow::Result<Vec<u8>> {
    let position = Position {
        steps: report.steps,
        losses: report.losses.clone(),
        tokens: report.tokens,
        padded_tokens: report.padded_tokens,
        seconds,
    };
    let meta = [(POSITION.to_owned(), serde_json::to_string(&position)?)].into();
    crate::safetensors_io::named_to_bytes(&opt.state(), meta)
}

/// Restores a saved state into `opt`; the position it was saved at.
fn restore_state(opt: &mut Optim, bytes: &[u8]) -> anyhow::Result<Position> {
    let loaded = crate::safetensors_io::parse(bytes, "the progress checkpoint")?;
    let position: Position = loaded.meta(POSITION)?;
    let device = opt.device();
    opt.restore(position.steps, &|name| loaded.tensor(name, device))?;
    Ok(position)
}

/// Trains the variables of `trainable` (adapters, or the whole model) on
/// `examples`; returns `None` when the hooks' `stop()` turns true.
///
/// With `checkpoints`, the run starts from the state saved there, if any,
/// saves its state whenever a save is due and when stopped, and so ends
/// exactly as a run never stopped would: the order of examples is replayed
/// from the seed, the optimiser's moments and step count are restored.
pub fn train(
    model: &Llama,
    trainable: &nn::VarStore,
    examples: &[Example],
    settings: &TrainSettings,
    pad_id: u32,
    hooks: Hooks,
) -> anyhow::Result<Option<TrainReport>> {
    let Hooks {
        stop,
        progress,
        checkpoints,
    } = hooks;
    if examples.is_empty() {
        anyhow::bail!("no training examples: the filter kept nothing");
    }
    let per_step = (settings.batch_size * settings.grad_accumulation).max(1) as usize;
    let steps_per_epoch = examples.len().div_ceil(per_step) as u64;
    let total = steps_per_epoch * settings.epochs;
    let mut opt = Optim::new(
        trainable,
        settings.optimizer,
        settings.lr,
        settings.weight_decay,
    );
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let started = std::time::Instant::now();
    let mut report = TrainReport {
        steps: 0,
        losses: Vec::new(),
        tokens: 0,
        padded_tokens: 0,
        padding_share: 0.0,
        seconds: 0.0,
        tokens_per_second: 0.0,
        micro_batch: settings.batch_size.max(1),
        out_of_memory_retries: 0,
    };
    let mut micro = settings.batch_size.max(1) as usize;
    // Training seconds of earlier runs of this stage, for the checkpoints.
    let mut earlier = 0.0;
    let restored = checkpoints.and_then(|c| c.load()).and_then(|saved| {
        match restore_state(&mut opt, &saved) {
            Ok(position) => Some(position),
            Err(e) => {
                tracing::warn!(
                    "the progress checkpoint does not fit this run ({e:#}); starting over"
                );
                None
            }
        }
    });
    if let Some(position) = restored {
        report.steps = position.steps;
        report.losses = position.losses;
        report.tokens = position.tokens;
        report.padded_tokens = position.padded_tokens;
        earlier = position.seconds;
        if let Some(c) = checkpoints {
            c.resumed(report.steps, total, earlier);
        }
    }
    let trained = |started: std::time::Instant| earlier + started.elapsed().as_secs_f64();
    let lengths: Vec<usize> = examples
        .iter()
        .map(|e| e.prompt.len() + e.answer.len())
        .collect();
    let mut last_save = std::time::Instant::now();
    let mut step_index = 0u64;
    for _ in 0..settings.epochs {
        // Drawn even for epochs already done, so the stream stays where it was.
        for step_examples in length_grouped_steps(&lengths, per_step, &mut rng) {
            step_index += 1;
            if step_index <= report.steps {
                continue;
            }
            if stop() {
                if let Some(c) = checkpoints {
                    c.save(save_state(&opt, &report, trained(started))?)?;
                }
                return Ok(None);
            }
            opt.set_lr(settings.lr * schedule(report.steps, settings.warmup_steps, total));
            let answer_tokens: usize = step_examples
                .iter()
                .map(|&i| examples[i].learned_tokens())
                .sum();
            let gradients = |micro: usize| {
                opt.zero_grad();
                let (mut step_loss, mut tokens_seen, mut padded) = (0.0, 0u64, 0u64);
                for chunk in step_examples.chunks(micro) {
                    let batch: Vec<&Example> = chunk.iter().map(|&i| &examples[i]).collect();
                    let Some((loss, tokens)) = batch_loss(model, &batch, pad_id) else {
                        // Every answer token of this micro-batch is masked: nothing to learn.
                        continue;
                    };
                    // Weighted by tokens so the step's loss is the mean over all its answer tokens.
                    let weight = tokens as f64 / answer_tokens.max(1) as f64;
                    (&loss * weight).backward();
                    step_loss += loss.double_value(&[]) * weight;
                    let batch_lengths = chunk.iter().map(|&i| lengths[i] as u64);
                    tokens_seen += batch_lengths.clone().sum::<u64>();
                    padded += batch_lengths.max().unwrap_or(0) * chunk.len() as u64;
                }
                (step_loss, tokens_seen, padded)
            };
            let (step_loss, tokens_seen, padded) =
                fitting(&mut micro, &mut report.out_of_memory_retries, gradients)?;
            report.tokens += tokens_seen;
            report.padded_tokens += padded;
            if settings.max_grad_norm > 0.0 {
                opt.clip_grad_norm(settings.max_grad_norm);
            }
            opt.step();
            report.steps += 1;
            report.losses.push(step_loss);
            let seconds = started.elapsed().as_secs_f64();
            progress(
                report.steps,
                total,
                step_loss,
                report.tokens as f64 / seconds.max(1e-9),
            );
            if let Some(c) = checkpoints.filter(|c| c.due(last_save.elapsed())) {
                if report.steps < total {
                    opt.zero_grad();
                    c.save(save_state(&opt, &report, trained(started))?)?;
                    last_save = std::time::Instant::now();
                }
            }
        }
    }
    opt.zero_grad();
    report.micro_batch = micro as u64;
    report.seconds = started.elapsed().as_secs_f64();
    report.tokens_per_second = report.tokens as f64 / report.seconds.max(1e-9);
    report.padding_share = 1.0 - report.tokens as f64 / report.padded_tokens.max(1) as f64;
    Ok(Some(report))
}

/// Mean loss over the learned answer tokens of a right-padded batch, and
/// their count; `None` when the batch has none. The loss is cross-entropy
/// on the answer tokens, or, where every example of the batch has soft
/// targets, the forward KL from the teacher's top-k distribution to the
/// model's: Σ p (log p − log q) over the k tokens, q renormalised over
/// the whole vocabulary (so mass the model puts elsewhere is penalised).
pub fn batch_loss(model: &Llama, batch: &[&Example], pad_id: u32) -> Option<(Tensor, usize)> {
    let device = model.device();
    let width = batch
        .iter()
        .map(|e| e.prompt.len() + e.answer.len())
        .max()
        .unwrap_or(0);
    let mut ids = Vec::with_capacity(batch.len() * width);
    // Position (flat index) of each token that predicts an answer token, and that token.
    let mut from = Vec::new();
    let mut target = Vec::new();
    let soft = batch.iter().all(|e| e.soft.is_some());
    let k = batch
        .iter()
        .find_map(|e| e.soft.as_ref().map(|s| s.k))
        .unwrap_or(1);
    let (mut soft_ids, mut soft_logprobs): (Vec<i64>, Vec<f32>) = (Vec::new(), Vec::new());
    for (row, e) in batch.iter().enumerate() {
        let seq: Vec<i64> = e
            .prompt
            .iter()
            .chain(&e.answer)
            .map(|&t| t as i64)
            .collect();
        for (j, &t) in e.answer.iter().enumerate() {
            if e.learns(j) {
                from.push((row * width + e.prompt.len() + j - 1) as i64);
                target.push(t as i64);
                if let (true, Some(s)) = (soft, &e.soft) {
                    soft_ids.extend(s.ids[j * s.k..(j + 1) * s.k].iter().map(|&i| i as i64));
                    soft_logprobs.extend(&s.logprobs[j * s.k..(j + 1) * s.k]);
                }
            }
        }
        ids.extend(&seq);
        ids.extend(std::iter::repeat_n(pad_id as i64, width - seq.len()));
    }
    if target.is_empty() {
        return None;
    }
    let shape = [batch.len() as i64, width as i64];
    let tokens = Tensor::from_slice(&ids).view(shape).to_device(device);
    let positions = Tensor::arange(width as i64, (Kind::Int64, device))
        .unsqueeze(0)
        .expand(shape, true);
    let hidden = model.forward(&tokens, &positions, None, None);
    let d = hidden.size()[2];
    let from = Tensor::from_slice(&from).to_device(device);
    // Only the positions that predict answer tokens go through the (large) output head.
    let picked = hidden.reshape([-1, d]).index_select(0, &from);
    let logits = model.logits(&picked);
    let count = target.len();
    if soft
        && batch
            .iter()
            .all(|e| e.soft.as_ref().is_some_and(|s| s.k == k))
    {
        let ids = Tensor::from_slice(&soft_ids)
            .view([-1, k as i64])
            .to_device(device);
        let teacher = Tensor::from_slice(&soft_logprobs)
            .view([-1, k as i64])
            .to_device(device);
        let student = logits.log_softmax(-1, Kind::Float).gather(1, &ids, false);
        // A label defense leaves cut tokens at −∞ (probability 0): clamped,
        // they add 0 · finite instead of 0 · ∞.
        let kl = (teacher.exp() * (teacher.clamp_min(-1e4) - student)).sum_dim_intlist(
            1,
            false,
            Kind::Float,
        );
        return Some((kl.mean(Kind::Float), count));
    }
    let target = Tensor::from_slice(&target).to_device(device);
    let loss = logits.cross_entropy_for_logits(&target);
    Some((loss, count))
}

/// The adapters' tensors by name, for a checkpoint.
pub fn lora_tensors(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::config::Config;
    use crate::llm::model::Weights;
    use crate::resume::Memory;
    use std::cell::Cell;
    use tch::{Device, Kind};

    /// A two-block Llama with random weights, frozen, adapters on every projection.
    fn tiny() -> (nn::VarStore, nn::VarStore, Llama) {
        let config = Config::from_json(
            r#"{"vocab_size":40,"hidden_size":16,"intermediate_size":24,"num_hidden_layers":2,
                "num_attention_heads":2,"tie_word_embeddings":true}"#,
        )
        .unwrap();
        tch::manual_seed(3);
        let random = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.3;
        let mut w = Weights::new();
        w.insert("model.embed_tokens.weight".into(), random(&[40, 16]));
        w.insert(
            "model.norm.weight".into(),
            Tensor::ones([16], (Kind::Float, Device::Cpu)),
        );
        for l in 0..2 {
            for (name, shape) in [
                ("input_layernorm.weight", &[16][..]),
                ("post_attention_layernorm.weight", &[16]),
                ("self_attn.q_proj.weight", &[16, 16]),
                ("self_attn.k_proj.weight", &[16, 16]),
                ("self_attn.v_proj.weight", &[16, 16]),
                ("self_attn.o_proj.weight", &[16, 16]),
                ("mlp.gate_proj.weight", &[24, 16]),
                ("mlp.up_proj.weight", &[24, 16]),
                ("mlp.down_proj.weight", &[16, 24]),
            ] {
                w.insert(format!("model.layers.{l}.{name}"), random(shape));
            }
        }
        let mut base = nn::VarStore::new(Device::Cpu);
        let mut model = Llama::load(&base, &config, w).unwrap();
        base.freeze();
        let adapters = nn::VarStore::new(Device::Cpu);
        let spec = LoraSpec::every_projection(2, 4.0);
        attach_lora(&mut model, &adapters, &spec, 5).unwrap();
        (base, adapters, model)
    }

    fn examples() -> Vec<Example> {
        (0..10u32)
            .map(|i| {
                let prompt = (0..3 + i % 4).map(|j| (i * 7 + j * 3) % 40).collect();
                let answer = (0..2 + i % 3).map(|j| (i * 5 + j * 11 + 1) % 40).collect();
                Example::new(prompt, answer)
            })
            .collect()
    }

    fn settings() -> TrainSettings {
        TrainSettings {
            epochs: 2,
            lr: 1e-2,
            warmup_steps: 2,
            max_grad_norm: 1.0,
            batch_size: 2,
            grad_accumulation: 1,
            weight_decay: 0.01,
            seed: 7,
            optimizer: Optimizer::Adamw,
        }
    }

    /// Trains a fresh tiny model; stopped before step `stop_at` (if given)
    /// with `memory` as its checkpoints. The adapters and the report.
    fn run(
        memory: Option<&Memory>,
        stop_at: Option<u64>,
    ) -> (Vec<(String, Tensor)>, Option<TrainReport>) {
        let (_base, adapters, model) = tiny();
        let calls = Cell::new(0u64);
        let stop = || {
            calls.set(calls.get() + 1);
            stop_at.is_some_and(|s| calls.get() > s)
        };
        let report = train(
            &model,
            &adapters,
            &examples(),
            &settings(),
            0,
            Hooks {
                stop: &stop,
                progress: &mut |_, _, _, _| {},
                checkpoints: memory.map(|m| m as &dyn Checkpoints),
            },
        )
        .unwrap();
        (lora_tensors(&adapters), report)
    }

    #[test]
    fn half_the_micro_batch_with_twice_the_accumulation_gives_the_same_adapters() {
        let train_with = |settings: &TrainSettings| {
            let (_base, adapters, model) = tiny();
            let hooks = Hooks {
                stop: &|| false,
                progress: &mut |_, _, _, _| {},
                checkpoints: None,
            };
            let report = train(&model, &adapters, &examples(), settings, 0, hooks)
                .unwrap()
                .unwrap();
            (lora_tensors(&adapters), report)
        };
        let (whole, report) = train_with(&settings());
        assert_eq!((report.micro_batch, report.out_of_memory_retries), (2, 0));
        let halves = TrainSettings {
            batch_size: 1,
            grad_accumulation: 2,
            ..settings()
        };
        let (split, _) = train_with(&halves);
        let mut moved = 0.0f64;
        for ((name, a), (_, b)) in whole.iter().zip(&split) {
            let difference = (a - b).abs().max().double_value(&[]);
            assert!(difference < 1e-6, "{name} differs by {difference}");
            if name.contains("lora_B") {
                moved = moved.max(a.abs().max().double_value(&[]));
            }
        }
        assert!(moved > 1e-3, "training moved the adapters by {moved} only");
    }

    #[test]
    fn a_run_stopped_and_resumed_ends_bit_for_bit_as_one_never_stopped() {
        let (whole, report) = run(None, None);
        let report = report.unwrap();
        assert_eq!(report.steps, 10);
        for every_step in [false, true] {
            let memory = Memory {
                every_step,
                ..Default::default()
            };
            let (_, stopped) = run(Some(&memory), Some(6));
            assert!(stopped.is_none(), "the run stopped");
            assert!(
                memory.saved.borrow().is_some(),
                "it saved its state when stopped"
            );
            let (resumed, again) = run(Some(&memory), None);
            assert_eq!(memory.resumed_at.get(), Some(6));
            let again = again.unwrap();
            assert_eq!(again.steps, 10);
            assert_eq!(
                again.losses, report.losses,
                "every step's loss, before and after"
            );
            for ((name, a), (_, b)) in whole.iter().zip(&resumed) {
                assert!(a.equal(b), "{name} differs after resuming");
            }
        }
        // Saved at each of the first 6 steps and when stopped; then each step but the last.
        let memory = Memory {
            every_step: true,
            ..Default::default()
        };
        run(Some(&memory), Some(6));
        assert_eq!(memory.saves.get(), 7);
    }

    fn padding(lengths: &[usize], steps: &[Vec<usize>]) -> f64 {
        let real: usize = lengths.iter().sum();
        let padded: usize = steps
            .iter()
            .map(|s| s.iter().map(|&i| lengths[i]).max().unwrap_or(0) * s.len())
            .sum();
        1.0 - real as f64 / padded as f64
    }

    #[test]
    fn length_grouped_steps_take_every_row_once_with_little_padding() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let lengths: Vec<usize> = (0..1000).map(|i| 40 + (i * 37) % 50).collect();
        let steps = length_grouped_steps(&lengths, 8, &mut rng);
        let mut seen: Vec<usize> = steps.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert!(steps.iter().all(|s| !s.is_empty() && s.len() <= 8));
        let mut order: Vec<usize> = (0..1000).collect();
        order.shuffle(&mut rng);
        let random: Vec<Vec<usize>> = order.chunks(8).map(<[usize]>::to_vec).collect();
        let (grouped, random) = (padding(&lengths, &steps), padding(&lengths, &random));
        assert!(
            grouped < random / 4.0,
            "grouped {grouped} vs random {random}"
        );
        // Another epoch draws other steps.
        assert_ne!(steps, length_grouped_steps(&lengths, 8, &mut rng));
    }
}
