//! Training an MNIST model: the schedule, the network (one or an ensemble
//! of K in one batched pass), the loop, and the distillation loss.


use subliminal_shared::experiments::mnist::{
    StudentParams, Target, DIGITS,
};
use subliminal_shared::manifest::VerifiedStage;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::ensemble::Ensemble;
use super::model::{Mlp, MlpConfig};
use crate::optim::Optim;
use crate::resume::Checkpoints;
use crate::safetensors_io;
use crate::stages::{Progress, StageEnv};
use super::LOGITS;
use crate::tensor_rng::{batch_order, noise_images};

/// How to train: shared by teacher and student.
pub struct Schedule {
    pub epochs: u64,
    pub lr: f64,
    pub batch_size: u64,
}

/// The models a training pass steps: one alone, or K stacked.
pub enum Net {
    One(Mlp),
    Many(Ensemble),
}

impl Net {
    pub fn of(mut models: Vec<Mlp>, device: Device) -> anyhow::Result<Self> {
        if models.len() == 1 {
            Ok(Net::One(models.remove(0)))
        } else {
            Ok(Net::Many(Ensemble::stack(&models, device)?))
        }
    }

    pub fn size(&self) -> usize {
        match self {
            Net::One(_) => 1,
            Net::Many(e) => e.size() as usize,
        }
    }

    fn vars(&self) -> &nn::VarStore {
        match self {
            Net::One(m) => m.vars(),
            Net::Many(e) => e.vars(),
        }
    }

    /// Logits [K, batch, outputs]; model k reads `inputs[k]` at rows `rows[k]`.
    pub(super) fn forward(&self, inputs: &[&Tensor], rows: &[Tensor]) -> Tensor {
        match self {
            Net::One(m) => m.forward(&inputs[0].index_select(0, &rows[0])).unsqueeze(0),
            Net::Many(e) => {
                let xs: Vec<Tensor> = inputs
                    .iter()
                    .zip(rows)
                    .map(|(x, r)| x.index_select(0, r))
                    .collect();
                e.forward(&Tensor::stack(&xs, 0))
            }
        }
    }

    pub fn into_models(self, device: Device) -> anyhow::Result<Vec<Mlp>> {
        match self {
            Net::One(m) => Ok(vec![m]),
            Net::Many(e) => (0..e.size()).map(|k| e.model(k, device)).collect(),
        }
    }
}

/// How far a training run had come when its state was saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    /// The models' seeds: a checkpoint of other models is not resumed.
    seeds: Vec<u64>,
    epoch: u64,
    /// Mini-batches of `epoch` done.
    step: i64,
    /// Each model's mean loss over the epochs done.
    epoch_losses: Vec<Vec<f64>>,
    /// Seconds of training that led here, over every run before.
    seconds: f64,
}

const POSITION: &str = "position";
/// The running loss sum of the epoch in progress, one per model.
const EPOCH_TOTAL: &str = "epoch_total";

/// Saves the run's state, `seconds` of training in: every weight and its
/// Adam moments, the epoch's running loss, and the position.
fn save(
    checkpoints: &dyn Checkpoints,
    opt: &mut Optim,
    total: &Tensor,
    position: &mut Position,
    seconds: f64,
) -> anyhow::Result<()> {
    position.seconds = seconds;
    opt.zero_grad();
    let mut state = opt.state();
    state.push((EPOCH_TOTAL.to_owned(), total.shallow_clone()));
    let meta = [(POSITION.to_owned(), serde_json::to_string(position)?)].into();
    checkpoints.save(safetensors_io::named_to_bytes(&state, meta)?)
}

/// Restores a saved state into `opt` and `total`; the position it was
/// saved at. Refused, changing nothing, when it was saved by other models.
fn restore_state(
    opt: &mut Optim,
    total: &mut Tensor,
    seeds: &[u64],
    bytes: &[u8],
) -> anyhow::Result<Position> {
    let loaded = safetensors_io::parse(bytes, "the progress checkpoint")?;
    let position: Position = loaded.meta(POSITION)?;
    anyhow::ensure!(
        position.seeds == seeds,
        "it was saved by models of seeds {:?}, this run trains {seeds:?}",
        position.seeds
    );
    let saved_total = loaded.tensor(EPOCH_TOTAL, total.device())?;
    anyhow::ensure!(
        saved_total.size() == total.size(),
        "its epoch loss is for {:?} models, this run trains {}",
        saved_total.size(),
        seeds.len()
    );
    let device = opt.device();
    // The step count is set by the caller, who knows the steps per epoch.
    opt.restore(0, &|name| loaded.tensor(name, device))?;
    *total = saved_total;
    Ok(position)
}

/// Adam over shuffled mini-batches. Model k reads `inputs[k]` (every input
/// has the same rows) in the order its `seeds[k]` draws; `loss(k, logits,
/// rows)` is model k's loss on a batch. Returns each model's mean loss per
/// epoch.
///
/// With the stage's checkpoints (`env`), the run starts from the state
/// saved there, if any, saves its state whenever a save is due and when
/// stopped, and so ends exactly as a run never stopped would: the batch
/// order is drawn again from the seeds, the weights and Adam's moments and
/// step count are restored.
pub fn train(
    net: &Net,
    inputs: &[&Tensor],
    seeds: &[u64],
    schedule: &Schedule,
    env: &StageEnv,
    loss: impl Fn(usize, &Tensor, &Tensor) -> Tensor,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Vec<f64>>> {
    let k = net.size();
    anyhow::ensure!(
        inputs.len() == k && seeds.len() == k,
        "{k} models need {k} inputs and seeds, got {} and {}",
        inputs.len(),
        seeds.len()
    );
    let n = inputs[0].size()[0];
    anyhow::ensure!(
        inputs.iter().all(|x| x.size()[0] == n),
        "the models of a group must train on the same number of rows"
    );
    let device = inputs[0].device();
    let mut opt = Optim::adam(net.vars(), schedule.lr);
    let batch = schedule.batch_size as i64;
    let steps = (n + batch - 1) / batch;
    let models = if k > 1 { format!(", {k} models") } else { String::new() };
    let checkpoints = env.checkpoints("train");
    let checkpoints = checkpoints.as_ref().map(|c| c as &dyn Checkpoints);
    // Summed on the device: reading a scalar back every step would stall a GPU.
    let mut total = Tensor::zeros([k as i64], (Kind::Float, device));
    let mut position = Position {
        seeds: seeds.to_vec(),
        epoch: 0,
        step: 0,
        epoch_losses: vec![Vec::new(); k],
        seconds: 0.0,
    };
    let restored = checkpoints.and_then(|c| c.load()).and_then(|saved| {
        match restore_state(&mut opt, &mut total, seeds, &saved) {
            Ok(found) => Some(found),
            Err(e) => {
                tracing::warn!("the progress checkpoint does not fit this run ({e:#}); starting over");
                None
            }
        }
    });
    let earlier = restored.as_ref().map_or(0.0, |p| p.seconds);
    if let Some(found) = restored {
        position = found;
        opt.steps = (position.epoch * steps as u64) + position.step as u64;
        if let Some(c) = checkpoints {
            c.resumed(opt.steps, schedule.epochs * steps as u64, earlier);
        }
    }
    let started = std::time::Instant::now();
    let trained = || earlier + started.elapsed().as_secs_f64();
    let mut last_save = std::time::Instant::now();
    while position.epoch < schedule.epochs {
        let epoch = position.epoch;
        let clock = std::time::Instant::now();
        let orders: Vec<Tensor> = seeds
            .iter()
            .map(|&seed| batch_order(seed, epoch, n, device))
            .collect();
        while position.step < steps {
            let step = position.step;
            if env.stopped() {
                if let Some(c) = checkpoints {
                    save(c, &mut opt, &total, &mut position, trained())?;
                }
                anyhow::bail!("stopped before epoch {} ended", epoch + 1);
            }
            let start = step * batch;
            let len = batch.min(n - start);
            let rows: Vec<Tensor> = orders.iter().map(|o| o.narrow(0, start, len)).collect();
            let logits = net.forward(inputs, &rows);
            let losses: Vec<Tensor> = (0..k).map(|i| loss(i, &logits.get(i as i64), &rows[i])).collect();
            let losses = Tensor::stack(&losses, 0);
            opt.zero_grad();
            losses.sum(Kind::Float).backward();
            opt.step();
            total += losses.detach() * len as f64;
            position.step += 1;
            if step % 8 == 0 || step + 1 == steps {
                progress(Progress {
                    fraction: (epoch as f64 + (step + 1) as f64 / steps as f64)
                        / schedule.epochs as f64,
                    message: format!("epoch {}/{}{models}", epoch + 1, schedule.epochs),
                    loss: None,
                    samples_per_second: None,
                });
            }
            let last = epoch + 1 == schedule.epochs && step + 1 == steps;
            if let Some(c) = checkpoints.filter(|c| !last && c.due(last_save.elapsed())) {
                save(c, &mut opt, &total, &mut position, trained())?;
                last_save = std::time::Instant::now();
            }
        }
        let means: Vec<f64> = Vec::<f64>::try_from(total.to_device(Device::Cpu))?
            .into_iter()
            .map(|t| t / n as f64)
            .collect();
        if let Some(i) = means.iter().position(|m| !m.is_finite()) {
            anyhow::bail!(
                "training diverged: epoch {} loss is {} (model seed {})",
                epoch + 1,
                means[i],
                seeds[i]
            );
        }
        let mean = means.iter().sum::<f64>() / k as f64;
        for (losses, m) in position.epoch_losses.iter_mut().zip(&means) {
            losses.push(*m);
        }
        total = Tensor::zeros([k as i64], (Kind::Float, device));
        position.epoch += 1;
        position.step = 0;
        progress(Progress {
            fraction: (epoch + 1) as f64 / schedule.epochs as f64,
            message: format!("epoch {}/{} loss {mean:.4}{models}", epoch + 1, schedule.epochs),
            loss: Some(mean),
            samples_per_second: Some((n * k as i64) as f64 / clock.elapsed().as_secs_f64().max(1e-9)),
        });
    }
    opt.zero_grad();
    Ok(position.epoch_losses)
}

/// KL(softmax(teacher) ‖ softmax(student)), summed over classes, mean over the batch.
pub fn distillation_loss(teacher_logits: &Tensor, student_logits: &Tensor) -> Tensor {
    let log_p = teacher_logits.log_softmax(-1, Kind::Float);
    let log_q = student_logits.log_softmax(-1, Kind::Float);
    (log_p.exp() * (log_p - log_q)).sum(Kind::Float) / teacher_logits.size()[0] as f64
}

/// A generated dataset, read back and checked: its noise and the logits a
/// student distils (the columns its target names).
pub(super) struct Dataset {
    pub(super) noise: NoiseSpec,
    pub(super) targets: Tensor,
    pub(super) first: i64,
    pub(super) width: i64,
}

impl Dataset {
    pub(super) fn read(p: &StudentParams, dataset: &VerifiedStage, device: Device) -> anyhow::Result<Self> {
        let loaded = safetensors_io::parse(dataset.artifact(LOGITS)?, "teacher logits")?;
        let noise: NoiseSpec = loaded.meta("noise")?;
        anyhow::ensure!(
            noise.generator == NOISE_GENERATOR,
            "dataset was drawn with noise generator {:?}; this worker draws {:?}",
            noise.generator,
            NOISE_GENERATOR
        );
        let logits = loaded.tensor("logits", device)?;
        let m = p.aux_logits as i64;
        let d = DIGITS as i64;
        anyhow::ensure!(
            logits.size() == [noise.samples, d + m],
            "teacher logits have shape {:?}, expected [{}, {}]",
            logits.size(),
            noise.samples,
            d + m
        );
        let (first, width) = match p.target {
            Target::Aux => (d, m),
            Target::All => (0, d + m),
        };
        Ok(Self {
            noise,
            targets: logits.narrow(1, first, width),
            first,
            width,
        })
    }

    /// Model `logits`' distillation loss against this dataset's `rows`.
    pub(super) fn loss(&self, logits: &Tensor, rows: &Tensor) -> Tensor {
        distillation_loss(
            &self.targets.index_select(0, rows),
            &logits.narrow(1, self.first, self.width),
        )
    }
}

/// The student's starting point: its init seed, plus ε of init noise.
pub(super) fn student_init(p: &StudentParams, device: Device) -> Mlp {
    Mlp::init_perturbed(
        MlpConfig::with_width(p.aux_logits, p.hidden),
        p.init,
        p.init_noise,
        device,
    )
}

/// The noise images a dataset was generated on, as its metadata describes them.
#[derive(serde::Serialize, serde::Deserialize, Clone, PartialEq, Eq, Hash)]
pub(super) struct NoiseSpec {
    pub(super) generator: String,
    pub(super) seed: u64,
    pub(super) samples: i64,
    pub(super) dim: i64,
}

impl NoiseSpec {
    pub(super) fn draw(&self, device: Device) -> Tensor {
        noise_images(self.seed, self.samples, self.dim, device)
    }
}

pub(super) const NOISE_GENERATOR: &str = "chacha8 stream 2, uniform [-1, 1)";
