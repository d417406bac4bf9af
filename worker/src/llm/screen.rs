//! The gradient screen: which way a dataset would push a model, before any
//! training, measured against the direction that teaches a probe's answers.
//!
//! At the starting weights (adapters attached, B = 0), one step of training
//! on row i moves the adapters by −η∇ℓᵢ. To first order that changes the
//! probe's loss L by −η⟨∇ℓᵢ, ∇L⟩. A row's score is ⟨∇ℓᵢ, ∇L⟩ / ‖∇L‖: the
//! slope of its loss along the probe's unit direction. A positive score is a
//! row whose training lowers the probe's loss, raising its target answers
//! (an owl, a misaligned reply). The scores of a dataset are compared with
//! those of a control dataset by [`compare`]: the difference of the means,
//! with a bootstrap interval over rows.
//!
//! The gradients are taken within the adapters only (a few MB for
//! SmolLM2-135M at rank 8), a batch of rows at a time, so memory stays that
//! of one training step. Because B starts at zero, the gradient lies in B's
//! coordinates: the screen sees the dataset through the adapters' random A.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn, Kind, Tensor};

use anyhow::Context;

use super::finetune::{batch_loss, lora_tensors, Example};
use super::model::Llama;

/// The probe's unit direction in the adapters' coordinates (by variable
/// name), and the norm of the gradient it came from.
pub struct ProbeDirection {
    unit: Vec<(String, Tensor)>,
    pub gradient_norm: f64,
}

/// The gradient of the probe's mean loss (its target answers) with respect
/// to the adapters in `adapters`, as a unit direction.
pub fn probe_direction(
    model: &Llama,
    adapters: &nn::VarStore,
    probe: &[Example],
    pad_id: u32,
) -> anyhow::Result<ProbeDirection> {
    let vars = lora_tensors(adapters);
    anyhow::ensure!(
        !vars.is_empty(),
        "the screen needs adapters attached to the model: none are trainable"
    );
    let refs: Vec<&Example> = probe.iter().collect();
    let tensors: Vec<Tensor> = vars.iter().map(|(_, v)| v.shallow_clone()).collect();
    let gradient = gradient(model, &tensors, &refs, pad_id)?
        .ok_or_else(|| anyhow::anyhow!("the probe has no answer tokens to learn"))?;
    let norm = squared_norm(&gradient).sqrt();
    anyhow::ensure!(
        norm > 0.0,
        "the probe's gradient is zero in the adapters: the probe cannot be screened for"
    );
    Ok(ProbeDirection {
        unit: vars
            .into_iter()
            .zip(gradient)
            .map(|((name, _), g)| (name, g / norm))
            .collect(),
        gradient_norm: norm,
    })
}

/// Rows scored together in one forward and backward pass.
pub const SCORE_BATCH: usize = 8;

/// Each row's score along each direction: the slope of its loss along the
/// probe's unit direction (0 for a row with no learned answer token), as
/// `scores[direction][row]`. `progress` is told the rows done.
///
/// Rows are scored `batch_size` at a time, all directions in one backward
/// pass. The adapters sit at B = 0, where a row's loss has no gradient in
/// A, and it is linear in B through x Aᵀ Bᵀ. Its slope along a direction
/// D is then the derivative in e at e = 0 when B = e·D. Each row i of a
/// batch gets its own Bᵢ = Σₖ E[i, k]·Dₖ ([`Lora::rows`](super::model::Lora)),
/// and one backward pass of the batch's loss gives every E[i, k]'s
/// derivative: row i's slope along direction k, scaled by row i's share
/// of the batch's learned tokens.
pub fn row_scores(
    model: &mut Llama,
    adapters: &nn::VarStore,
    rows: &[Example],
    directions: &[&ProbeDirection],
    pad_id: u32,
    batch_size: usize,
    progress: &dyn Fn(usize),
) -> anyhow::Result<Vec<Vec<f64>>> {
    let names: Vec<String> = lora_tensors(adapters).into_iter().map(|(n, _)| n).collect();
    for direction in directions {
        let theirs: Vec<&String> = direction.unit.iter().map(|(n, _)| n).collect();
        anyhow::ensure!(
            theirs.iter().copied().eq(names.iter()),
            "the probe's direction was taken with other adapters ({} tensors, these have {})",
            theirs.len(),
            names.len()
        );
        for (name, u) in &direction.unit {
            anyhow::ensure!(
                !name.contains("lora_A") || u.abs().max().double_value(&[]) == 0.0,
                "the screen scores at B = 0, where the loss has no gradient in A: {name} has one"
            );
        }
    }
    // Per adapted linear: the directions' B parts, [K, out * r].
    let mut stacks = Vec::new();
    for (name, linear) in model.linears_mut() {
        let Some(lora) = linear.lora.as_ref() else {
            continue;
        };
        let key = format!("{name}.lora_B.weight");
        let parts = directions
            .iter()
            .map(|d| {
                d.unit
                    .iter()
                    .find(|(n, _)| *n == key)
                    .map(|(_, u)| u.to_kind(lora.b.kind()).view([1, -1]))
                    .with_context(|| format!("the probe's direction has no {key}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        stacks.push(Tensor::cat(&parts, 0));
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    // Similar lengths together: less padding per batch.
    order.sort_by_key(|&i| rows[i].prompt.len() + rows[i].answer.len());
    let mut scores = vec![vec![0.0; rows.len()]; directions.len()];
    let mut done = 0;
    for chunk in order.chunks(batch_size.max(1)) {
        let batch: Vec<&Example> = chunk.iter().map(|&i| &rows[i]).collect();
        let slopes = batch_slopes(model, &stacks, &batch, pad_id);
        clear_rows(model);
        if let Some(slopes) = slopes? {
            for (k, out) in scores.iter_mut().enumerate() {
                for (b, &i) in chunk.iter().enumerate() {
                    out[i] = slopes[b][k];
                }
            }
        }
        done += chunk.len();
        progress(done);
    }
    Ok(scores)
}

/// Row b's slope along direction k, `[b][k]`, for one batch (see
/// [`row_scores`]); `None` when no row has a learned token.
fn batch_slopes(
    model: &mut Llama,
    stacks: &[Tensor],
    batch: &[&Example],
    pad_id: u32,
) -> anyhow::Result<Option<Vec<Vec<f64>>>> {
    let (n, k) = (
        batch.len() as i64,
        stacks.first().map_or(0, |s| s.size()[0]),
    );
    let device = model.device();
    let e = Tensor::zeros([n, k], (Kind::Float, device)).set_requires_grad(true);
    let mut adapted = model
        .linears_mut()
        .into_iter()
        .filter_map(|(_, l)| l.lora.as_mut());
    for stack in stacks {
        let lora = adapted
            .next()
            .context("fewer adapters than directions' parts")?;
        let (out, r) = (lora.b.size()[0], lora.b.size()[1]);
        lora.rows = Some(e.matmul(stack).view([n, out, r]));
    }
    let Some((loss, total)) = batch_loss(model, batch, pad_id) else {
        return Ok(None);
    };
    let grad = Tensor::run_backward(&[loss], &[&e], false, false)
        .pop()
        .context("no gradient for the rows' directions")?
        .to_kind(Kind::Double)
        .to_device(tch::Device::Cpu);
    let grad = Vec::<f64>::try_from(grad.view([-1]))?;
    Ok(Some(
        batch
            .iter()
            .enumerate()
            .map(|(b, row)| {
                // The batch's loss is the mean over all its learned tokens:
                // row b's own mean weighs learned_b / total in it.
                let learned = row.learned_tokens();
                (0..k as usize)
                    .map(|j| match learned {
                        0 => 0.0,
                        l => grad[b * k as usize + j] * total as f64 / l as f64,
                    })
                    .collect()
            })
            .collect(),
    ))
}

/// Takes every row's own B off the adapters.
fn clear_rows(model: &mut Llama) {
    for (_, linear) in model.linears_mut() {
        if let Some(lora) = linear.lora.as_mut() {
            lora.rows = None;
        }
    }
}

/// The gradient of the mean loss of `batch` with respect to `vars`, one
/// tensor per variable; `None` when the batch has no learned token.
fn gradient(
    model: &Llama,
    vars: &[Tensor],
    batch: &[&Example],
    pad_id: u32,
) -> anyhow::Result<Option<Vec<Tensor>>> {
    let Some((loss, _)) = batch_loss(model, batch, pad_id) else {
        return Ok(None);
    };
    let refs: Vec<&Tensor> = vars.iter().collect();
    let grads = Tensor::run_backward(&[loss], &refs, false, false);
    Ok(Some(
        grads
            .into_iter()
            .zip(vars)
            .map(|(g, v)| {
                if g.defined() {
                    g.to_kind(Kind::Double)
                } else {
                    Tensor::zeros_like(v).to_kind(Kind::Double)
                }
            })
            .collect(),
    ))
}

fn squared_norm(tensors: &[Tensor]) -> f64 {
    tensors
        .iter()
        .map(|t| t.square().sum(Kind::Double).double_value(&[]))
        .sum()
}

/// How a dataset's scores stand against a control's.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub dataset_mean: f64,
    pub control_mean: f64,
    /// dataset_mean − control_mean.
    pub difference: f64,
    /// Percentile bootstrap interval of the difference (rows resampled
    /// within each set), at `level`.
    pub interval: (f64, f64),
    pub level: f64,
    /// Two-sided bootstrap p-value of a zero difference: twice the smaller
    /// share of resampled differences on either side of zero, counted as
    /// (k + 1) / (draws + 1), so at least 2 / (draws + 1).
    pub p_value: f64,
}

/// Compares the mean score of `dataset` with that of `control`, with
/// `resamples` bootstrap draws seeded by `seed`.
pub fn compare(
    dataset: &[f64],
    control: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> anyhow::Result<Comparison> {
    anyhow::ensure!(
        dataset.len() >= 2 && control.len() >= 2,
        "the screen compares at least 2 rows of each set (dataset {}, control {})",
        dataset.len(),
        control.len()
    );
    anyhow::ensure!(resamples >= 100, "at least 100 bootstrap resamples");
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (d, c) = (mean(dataset), mean(control));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draw = |xs: &[f64]| {
        (0..xs.len())
            .map(|_| xs[rng.gen_range(0..xs.len())])
            .sum::<f64>()
            / xs.len() as f64
    };
    let mut diffs: Vec<f64> = (0..resamples)
        .map(|_| draw(dataset) - draw(control))
        .collect();
    diffs.sort_by(f64::total_cmp);
    let at = |q: f64| diffs[((diffs.len() - 1) as f64 * q).round() as usize];
    let tail = (1.0 - level) / 2.0;
    // (count + 1) / (draws + 1): a p-value is never 0 from finitely many draws.
    let share = |count: usize| (count + 1) as f64 / (diffs.len() + 1) as f64;
    let below = share(diffs.iter().filter(|x| **x <= 0.0).count());
    let above = share(diffs.iter().filter(|x| **x >= 0.0).count());
    Ok(Comparison {
        dataset_mean: d,
        control_mean: c,
        difference: d - c,
        interval: (at(tail), at(1.0 - tail)),
        level,
        p_value: (2.0 * below.min(above)).min(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_dataset_differs_from_its_control_and_an_equal_one_does_not() {
        let control: Vec<f64> = (0..200).map(|i| ((i * 37) % 100) as f64 / 100.0).collect();
        let shifted: Vec<f64> = control.iter().map(|x| x + 0.3).collect();
        let far = compare(&shifted, &control, 2000, 0.95, 1).unwrap();
        assert!((far.difference - 0.3).abs() < 1e-9);
        assert!(far.interval.0 > 0.2 && far.interval.1 < 0.4, "{far:?}");
        assert!(far.p_value < 0.01, "{far:?}");
        let same = compare(&control, &control, 2000, 0.95, 1).unwrap();
        assert!(same.interval.0 < 0.0 && same.interval.1 > 0.0, "{same:?}");
        assert!(same.p_value > 0.5, "{same:?}");
        assert!(compare(&[1.0], &control, 2000, 0.95, 1).is_err());
    }
}
