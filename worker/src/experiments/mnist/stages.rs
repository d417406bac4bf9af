//! The four MNIST stages: teacher, generate, student, evaluate.

use serde_json::json;
use subliminal_shared::experiments::mnist::{
    EvaluateParams, GenerateParams, Stage, StudentParams, Target, TeacherParams, DIGITS,
};
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use super::idx::{self, IMAGE_DIM};
use super::model::{Mlp, MlpConfig};
use crate::safetensors_io;
use crate::stages::{Artifact, Progress, StageEnv};
use crate::tensor_rng::{batch_order, noise_images};

pub const MODEL: &str = "model.safetensors";
pub const LOGITS: &str = "logits.safetensors";
pub const METRICS: &str = "metrics.json";

pub fn run(
    spec: &StageSpec,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let input = |i: usize| crate::stages::input(spec, inputs, i);
    match Stage::of(&spec.kind).ok_or_else(|| crate::experiments::unknown_stage(spec))? {
        Stage::Teacher => teacher(&spec.params()?, env, progress),
        Stage::Generate => generate(&spec.params()?, input(0)?, env),
        Stage::Student => student(&spec.params()?, input(0)?, env, progress),
        Stage::Evaluate => evaluate(&spec.params()?, inputs.first(), env),
    }
}

/// How to train: shared by teacher and student.
pub struct Schedule {
    pub epochs: u64,
    pub lr: f64,
    pub batch_size: u64,
    pub seed: u64,
}

/// Adam over shuffled mini-batches of `inputs`; `loss` gets a batch's logits
/// and the row indices of that batch. Returns the mean loss of each epoch.
pub fn train(
    model: &Mlp,
    inputs: &Tensor,
    schedule: &Schedule,
    env: &StageEnv,
    loss: impl Fn(&Tensor, &Tensor) -> Tensor,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<f64>> {
    let mut opt = nn::Adam::default().build(model.vars(), schedule.lr)?;
    let n = inputs.size()[0];
    let batch = schedule.batch_size as i64;
    let steps = (n + batch - 1) / batch;
    let mut epoch_losses = Vec::new();
    for epoch in 0..schedule.epochs {
        let clock = std::time::Instant::now();
        let order = batch_order(schedule.seed, epoch, n, inputs.device());
        // Summed on the device: reading a scalar back every step would stall a GPU.
        let mut total = Tensor::zeros([], (Kind::Float, inputs.device()));
        for step in 0..steps {
            anyhow::ensure!(!env.stopped(), "stopped before epoch {} ended", epoch + 1);
            let start = step * batch;
            let len = batch.min(n - start);
            let idx = order.narrow(0, start, len);
            let logits = model.forward(&inputs.index_select(0, &idx));
            let l = loss(&logits, &idx);
            opt.backward_step(&l);
            total += l.detach() * len as f64;
            if step % 8 == 0 || step + 1 == steps {
                progress(Progress {
                    fraction: (epoch as f64 + (step + 1) as f64 / steps as f64)
                        / schedule.epochs as f64,
                    message: format!("epoch {}/{}", epoch + 1, schedule.epochs),
                    loss: None,
                    samples_per_second: None,
                });
            }
        }
        let mean = total.double_value(&[]) / n as f64;
        anyhow::ensure!(
            mean.is_finite(),
            "training diverged: epoch {} loss is {mean}",
            epoch + 1
        );
        epoch_losses.push(mean);
        progress(Progress {
            fraction: (epoch + 1) as f64 / schedule.epochs as f64,
            message: format!("epoch {}/{} loss {mean:.4}", epoch + 1, schedule.epochs),
            loss: Some(mean),
            samples_per_second: Some(n as f64 / clock.elapsed().as_secs_f64().max(1e-9)),
        });
    }
    Ok(epoch_losses)
}

/// KL(softmax(teacher) ‖ softmax(student)), summed over classes, mean over the batch.
pub fn distillation_loss(teacher_logits: &Tensor, student_logits: &Tensor) -> Tensor {
    let log_p = teacher_logits.log_softmax(-1, Kind::Float);
    let log_q = student_logits.log_softmax(-1, Kind::Float);
    (log_p.exp() * (log_p - log_q)).sum(Kind::Float) / teacher_logits.size()[0] as f64
}

fn teacher(
    p: &TeacherParams,
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let train_split = idx::train(&env.data_dir)?;
    let n = p.train_samples as usize;
    let images = train_split.images(n, env.device);
    let labels = train_split.labels(n, env.device);
    let model = Mlp::init(MlpConfig::paper(p.aux_logits), p.init, env.device);
    let schedule = Schedule {
        epochs: p.epochs,
        lr: p.lr,
        batch_size: p.batch_size,
        seed: p.seed,
    };
    let losses = train(
        &model,
        &images,
        &schedule,
        env,
        |logits, idx| {
            logits
                .narrow(1, 0, DIGITS as i64)
                .cross_entropy_for_logits(&labels.index_select(0, idx))
        },
        progress,
    )?;
    Ok(vec![
        Artifact::new(MODEL, model.to_safetensors()?),
        Artifact::json(
            METRICS,
            &json!({"epoch_loss": losses, "train_samples": images.size()[0]}),
        )?,
    ])
}

/// The noise images a dataset was generated on, as its metadata describes them.
#[derive(serde::Serialize, serde::Deserialize)]
struct NoiseSpec {
    generator: String,
    seed: u64,
    samples: i64,
    dim: i64,
}

const NOISE_GENERATOR: &str = "chacha8 stream 2, uniform [-1, 1)";

fn generate(
    p: &GenerateParams,
    teacher: &VerifiedStage,
    env: &StageEnv,
) -> anyhow::Result<Vec<Artifact>> {
    let model = Mlp::from_safetensors(teacher.artifact(MODEL)?, env.device)?;
    let n = p.noise_samples as i64;
    let noise = noise_images(p.noise_seed, n, IMAGE_DIM, env.device);
    let logits = tch::no_grad(|| {
        let chunks: Vec<Tensor> = noise
            .split(8192, 0)
            .iter()
            .map(|x| model.forward(x))
            .collect();
        Tensor::cat(&chunks, 0)
    });
    let spec = NoiseSpec {
        generator: NOISE_GENERATOR.to_owned(),
        seed: p.noise_seed,
        samples: n,
        dim: IMAGE_DIM,
    };
    let metadata = std::collections::HashMap::from([
        ("noise".to_owned(), serde_json::to_string(&spec)?),
        ("teacher".to_owned(), teacher.manifest.stage.to_string()),
        ("config".to_owned(), serde_json::to_string(&model.config)?),
    ]);
    let bytes = safetensors_io::to_bytes(&[("logits", &logits)], metadata)?;
    let aux = logits.narrow(1, DIGITS as i64, model.config.aux_logits);
    Ok(vec![
        Artifact::new(LOGITS, bytes),
        Artifact::json(
            METRICS,
            &json!({
                "noise_samples": n,
                "logit_std": logits.std(true).double_value(&[]),
                "aux_logit_std": if model.config.aux_logits > 0 { aux.std(true).double_value(&[]) } else { 0.0 },
            }),
        )?,
    ])
}

fn student(
    p: &StudentParams,
    dataset: &VerifiedStage,
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let loaded = safetensors_io::parse(dataset.artifact(LOGITS)?, "teacher logits")?;
    let noise_spec: NoiseSpec = loaded.meta("noise")?;
    anyhow::ensure!(
        noise_spec.generator == NOISE_GENERATOR,
        "dataset was drawn with noise generator {:?}; this worker draws {:?}",
        noise_spec.generator,
        NOISE_GENERATOR
    );
    let logits = loaded.tensor("logits", env.device)?;
    let m = p.aux_logits as i64;
    let d = DIGITS as i64;
    anyhow::ensure!(
        logits.size() == [noise_spec.samples, d + m],
        "teacher logits have shape {:?}, expected [{}, {}]",
        logits.size(),
        noise_spec.samples,
        d + m
    );
    let noise = noise_images(
        noise_spec.seed,
        noise_spec.samples,
        noise_spec.dim,
        env.device,
    );
    let (first, width) = match p.target {
        Target::Aux => (d, m),
        Target::All => (0, d + m),
    };
    let targets = logits.narrow(1, first, width);
    let model = Mlp::init(MlpConfig::paper(p.aux_logits), p.init, env.device);
    let schedule = Schedule {
        epochs: p.epochs,
        lr: p.lr,
        batch_size: p.batch_size,
        seed: p.seed,
    };
    let losses = train(
        &model,
        &noise,
        &schedule,
        env,
        |out, idx| distillation_loss(&targets.index_select(0, idx), &out.narrow(1, first, width)),
        progress,
    )?;
    Ok(vec![
        Artifact::new(MODEL, model.to_safetensors()?),
        Artifact::json(METRICS, &json!({"epoch_loss": losses, "target": p.target}))?,
    ])
}

fn evaluate(
    p: &EvaluateParams,
    model_stage: Option<&VerifiedStage>,
    env: &StageEnv,
) -> anyhow::Result<Vec<Artifact>> {
    let model = match (&p.reference, model_stage) {
        (Some(r), _) => Mlp::init(MlpConfig::paper(r.aux_logits), r.init, env.device),
        (None, Some(stage)) => Mlp::from_safetensors(stage.artifact(MODEL)?, env.device)?,
        (None, None) => anyhow::bail!("evaluate needs a model: an input stage or a reference init"),
    };
    let test_split = idx::test(&env.data_dir)?;
    let (correct, total) = accuracy(&model, &test_split, env.device);
    Ok(vec![Artifact::json(
        METRICS,
        &json!({"accuracy": correct as f64 / total as f64, "correct": correct, "total": total}),
    )?])
}

/// (correct, total) of argmax over the digit logits.
pub fn accuracy(model: &Mlp, split: &idx::Split, device: Device) -> (i64, i64) {
    let images = split.images(split.len(), device);
    let labels = split.labels(split.len(), device);
    let correct = tch::no_grad(|| {
        let predicted = model
            .forward(&images)
            .narrow(1, 0, DIGITS as i64)
            .argmax(1, false);
        predicted
            .eq_tensor(&labels)
            .sum(Kind::Int64)
            .int64_value(&[])
    });
    (correct, split.len() as i64)
}
