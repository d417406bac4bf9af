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
//! SmolLM2-135M at rank 8), one row at a time, so memory stays that of one
//! training step. Because B starts at zero, the gradient lies in B's
//! coordinates: the screen sees the dataset through the adapters' random A.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn, Kind, Tensor};

use super::finetune::{batch_loss, Example};
use super::model::Llama;

/// The probe's unit direction in the adapters' coordinates, and the norm of
/// the gradient it came from.
pub struct ProbeDirection {
    unit: Vec<Tensor>,
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
    let vars = adapters.trainable_variables();
    anyhow::ensure!(
        !vars.is_empty(),
        "the screen needs adapters attached to the model: none are trainable"
    );
    let refs: Vec<&Example> = probe.iter().collect();
    let gradient = gradient(model, &vars, &refs, pad_id)?
        .ok_or_else(|| anyhow::anyhow!("the probe has no answer tokens to learn"))?;
    let norm = squared_norm(&gradient).sqrt();
    anyhow::ensure!(
        norm > 0.0,
        "the probe's gradient is zero in the adapters: the probe cannot be screened for"
    );
    Ok(ProbeDirection {
        unit: gradient.into_iter().map(|g| g / norm).collect(),
        gradient_norm: norm,
    })
}

/// Each row's score along each direction: the slope of its loss along the
/// probe's unit direction (0 for a row with no learned answer token), as
/// `scores[direction][row]`. One backward pass per row serves every
/// direction. `progress` is told each row done.
pub fn row_scores(
    model: &Llama,
    adapters: &nn::VarStore,
    rows: &[Example],
    directions: &[&ProbeDirection],
    pad_id: u32,
    progress: &dyn Fn(usize),
) -> anyhow::Result<Vec<Vec<f64>>> {
    let vars = adapters.trainable_variables();
    for direction in directions {
        anyhow::ensure!(
            vars.len() == direction.unit.len(),
            "the probe's direction was taken with other adapters ({} tensors, these have {})",
            direction.unit.len(),
            vars.len()
        );
    }
    let mut scores = vec![Vec::with_capacity(rows.len()); directions.len()];
    for (i, row) in rows.iter().enumerate() {
        let gradient = gradient(model, &vars, &[row], pad_id)?;
        for (direction, out) in directions.iter().zip(&mut scores) {
            out.push(match &gradient {
                Some(g) => g
                    .iter()
                    .zip(&direction.unit)
                    .map(|(g, u)| (g * u).sum(Kind::Double).double_value(&[]))
                    .sum(),
                None => 0.0,
            });
        }
        progress(i + 1);
    }
    Ok(scores)
}

/// The gradient of the mean loss of `batch` with respect to `vars`, one
/// tensor per variable; `None` when the batch has no learned token.
fn gradient(
    model: &Llama,
    vars: &[Tensor],
    batch: &[&Example],
    pad_id: u32,
) -> anyhow::Result<Option<Vec<Tensor>>> {
    for v in vars {
        let mut grad = v.grad();
        if grad.defined() {
            let _ = grad.zero_();
        }
    }
    let Some((loss, _)) = batch_loss(model, batch, pad_id) else {
        return Ok(None);
    };
    loss.backward();
    Ok(Some(
        vars.iter()
            .map(|v| {
                let g = v.grad();
                if g.defined() {
                    g.to_kind(Kind::Double).copy()
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
