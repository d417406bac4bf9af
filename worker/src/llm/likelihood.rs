//! Completion likelihoods: log p(completion | prompt) summed over the
//! completion's tokens, for many rows at once.
//!
//! The audit's likelihood screen scores each row by how much more likely a
//! model finds it when a system prompt gives the model a trait than when
//! nothing does. Public work found the rows that score highest on this
//! carry the transfer; it needs forward passes only, so it is the audit's
//! cheapest tier. Rows are sorted by length and right-padded in batches (a
//! right pad changes nothing before it under causal attention), and only
//! the positions that predict a completion token reach the output layer.
//!
//! A completion with soft labels (a teacher's top-k distribution at each
//! position) is scored as a distilled student would learn it: by the
//! expected log-probability under the label, Σₖ q(k) log p(k | before),
//! rather than by the one token drawn.

use tch::{Device, Kind, Tensor};

use super::finetune::SoftTargets;
use super::Llama;

/// A prompt's ids and its completion's ids, scored as one sequence, with
/// the completion's soft labels where it has them.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub prompt: Vec<u32>,
    pub completion: Vec<u32>,
    pub soft: Option<SoftTargets>,
}

impl Sequence {
    pub fn new(prompt: Vec<u32>, completion: Vec<u32>) -> Self {
        Self {
            prompt,
            completion,
            soft: None,
        }
    }
}

/// Σ log p(completion token | everything before it) for each sequence, in
/// the order given, or for a sequence with soft labels Σ over positions of
/// Σₖ q(k) log p(k | everything before it); `done(k)` after each batch with
/// the sequences scored so far (an error from it stops the scoring).
pub fn completion_log_probs(
    model: &Llama,
    sequences: &[Sequence],
    pad_id: u32,
    batch_size: usize,
    done: &dyn Fn(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    anyhow::ensure!(batch_size >= 1, "a batch holds at least one sequence");
    for (i, s) in sequences.iter().enumerate() {
        anyhow::ensure!(
            !s.prompt.is_empty(),
            "sequence {i} has an empty prompt: no position predicts its completion's first token"
        );
        if let Some(soft) = &s.soft {
            anyhow::ensure!(
                soft.k >= 1
                    && soft.ids.len() == s.completion.len() * soft.k
                    && soft.logprobs.len() == soft.ids.len(),
                "sequence {i}: soft labels for {} completion tokens need {} entries of k = {}, found {} ids and {} log-probabilities",
                s.completion.len(),
                s.completion.len() * soft.k,
                soft.k,
                soft.ids.len(),
                soft.logprobs.len()
            );
        }
    }
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| sequences[i].prompt.len() + sequences[i].completion.len());
    let mut out = vec![0.0; sequences.len()];
    let mut scored = 0;
    for batch in order.chunks(batch_size) {
        let sums = batch_log_probs(model, batch.iter().map(|&i| &sequences[i]), pad_id)?;
        for (&i, sum) in batch.iter().zip(sums) {
            out[i] = sum;
        }
        scored += batch.len();
        done(scored)?;
    }
    Ok(out)
}

fn batch_log_probs<'a>(
    model: &Llama,
    batch: impl Iterator<Item = &'a Sequence> + Clone,
    pad_id: u32,
) -> anyhow::Result<Vec<f64>> {
    let width = batch
        .clone()
        .map(|s| s.prompt.len() + s.completion.len())
        .max()
        .unwrap_or(0);
    let rows = batch.clone().count();
    let mut ids = Vec::with_capacity(rows * width);
    // Flat indices (row * width + position) of the hidden states that predict
    // a completion token, the tokens they predict, and the row each belongs to.
    let (mut at, mut targets, mut owner) = (Vec::new(), Vec::new(), Vec::new());
    // The label at each of those positions, when every sequence has labels of one k.
    let k = batch
        .clone()
        .next()
        .and_then(|s| s.soft.as_ref())
        .map(|s| s.k);
    let soft = batch
        .clone()
        .all(|s| s.soft.as_ref().map(|l| l.k) == k && k.is_some());
    anyhow::ensure!(
        soft || batch.clone().all(|s| s.soft.is_none()),
        "a batch mixes sequences with and without soft labels (or labels of several k): score them apart"
    );
    let (mut label_ids, mut label_logprobs) = (Vec::new(), Vec::new());
    for (r, s) in batch.enumerate() {
        if let Some(labels) = &s.soft {
            label_ids.extend(labels.ids.iter().map(|&t| t as i64));
            label_logprobs.extend(labels.logprobs.iter().map(|&l| l as f64));
        }
        let len = s.prompt.len() + s.completion.len();
        ids.extend(s.prompt.iter().chain(&s.completion).map(|&t| t as i64));
        ids.extend(std::iter::repeat_n(pad_id as i64, width - len));
        for (j, &t) in s.completion.iter().enumerate() {
            at.push((r * width + s.prompt.len() - 1 + j) as i64);
            targets.push(t as i64);
            owner.push(r);
        }
    }
    if at.is_empty() {
        return Ok(vec![0.0; rows]);
    }
    let device = model.device();
    let (rows_i, width_i) = (rows as i64, width as i64);
    let tokens = Tensor::from_slice(&ids)
        .view([rows_i, width_i])
        .to_device(device);
    let positions = Tensor::arange(width_i, (Kind::Int64, device))
        .unsqueeze(0)
        .expand([rows_i, width_i], false);
    let log_probs = tch::no_grad(|| {
        let hidden = model.forward(&tokens, &positions, None, None);
        let flat = hidden.flatten(0, 1);
        let picked = flat.index_select(0, &Tensor::from_slice(&at).to_device(device));
        // In f64: a row's score is a difference of two sums of many terms.
        let log_softmax = model
            .logits(&picked)
            .to_kind(Kind::Double)
            .log_softmax(-1, Kind::Double);
        match k {
            Some(k) => {
                let ids = Tensor::from_slice(&label_ids)
                    .view([-1, k as i64])
                    .to_device(device);
                let weights = Tensor::from_slice(&label_logprobs)
                    .view([-1, k as i64])
                    .to_device(device)
                    .exp();
                (log_softmax.gather(1, &ids, false) * weights).sum_dim_intlist(
                    1,
                    false,
                    Kind::Double,
                )
            }
            None => {
                let target = Tensor::from_slice(&targets).to_device(device).unsqueeze(1);
                log_softmax.gather(1, &target, false).squeeze_dim(1)
            }
        }
    });
    let values = Vec::<f64>::try_from(log_probs.to_kind(Kind::Double).to_device(Device::Cpu))?;
    let mut sums = vec![0.0; rows];
    for (value, r) in values.into_iter().zip(owner) {
        sums[r] += value;
    }
    Ok(sums)
}
