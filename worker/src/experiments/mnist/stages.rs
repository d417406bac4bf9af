//! The MNIST stages: teacher, generate, defend (a defense applied to the
//! generated logits), student, evaluate, and theorem (the student's first
//! step measured against the teacher's update).
//!
//! Teacher, generate and student stages also run as a group ([`run_group`]):
//! K models of one shape in one batched pass, each with the result it gets
//! alone.

use std::collections::HashMap;

use serde_json::json;
use subliminal_shared::experiments::mnist::{
    DefendParams, EvaluateParams, GenerateParams, Stage, StudentParams,
    TeacherParams, DIGITS,
};
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;
use tch::{Device, Kind, Tensor};

use super::idx::{self, IMAGE_DIM};
use super::model::{Mlp, MlpConfig};
use crate::safetensors_io;
use crate::stages::{Artifact, Progress, StageEnv};

pub use super::theorem::{alignment, Alignment};
pub use super::train::{distillation_loss, train, Net, Schedule};
pub use super::defense::apply_defense;
use super::theorem::theorem;
use super::{LOGITS, METRICS, MODEL};
use super::train::{student_init, Dataset, NoiseSpec, NOISE_GENERATOR};


pub fn run(
    spec: &StageSpec,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    let input = |i: usize| crate::stages::input(spec, inputs, i);
    match Stage::of(&spec.kind).ok_or_else(|| crate::experiments::unknown_stage(spec))? {
        Stage::Teacher => one(teachers(&[spec.params()?], env, progress)?),
        Stage::Generate => one(generate(&[(spec.params()?, input(0)?)], env)?),
        Stage::Student => one(students(&[(spec.params()?, input(0)?)], env, progress)?),
        Stage::Defend => defend(&spec.params()?, input(0)?, input(1)?, env),
        Stage::Evaluate => evaluate(&spec.params()?, inputs.first(), env),
        Stage::Theorem => theorem(&spec.params()?, input(0)?, input(1)?, env),
    }
}

fn one(mut outputs: Vec<Vec<Artifact>>) -> anyhow::Result<Vec<Artifact>> {
    outputs
        .pop()
        .ok_or_else(|| anyhow::anyhow!("a stage of one model produced no output"))
}

/// The parameters that differ between the models of one group: everything
/// else (shape, schedule, sample count) must match for K models to step
/// together.
fn per_model_params(stage: Stage) -> Option<&'static [&'static str]> {
    match stage {
        Stage::Teacher => Some(&["init", "seed"]),
        Stage::Generate => Some(&["noise_seed"]),
        Stage::Student => Some(&["init", "seed", "target", "init_noise"]),
        Stage::Defend | Stage::Evaluate | Stage::Theorem => None,
    }
}

/// Stages with the same key can run as one group.
pub fn group_key(spec: &StageSpec) -> Option<String> {
    let per_model = per_model_params(Stage::of(&spec.kind)?)?;
    let mut shared = spec.params.as_object()?.clone();
    for key in per_model {
        shared.remove(*key);
    }
    Some(format!("{} {}", spec.kind, serde_json::Value::Object(shared)))
}

/// Runs stages that share a [`group_key`] (checked by
/// [`crate::experiments::run_group`]) as one batched pass; the outputs come
/// back in the stages' order.
pub fn run_group(
    stages: &[(&StageSpec, &[VerifiedStage])],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Vec<Artifact>>> {
    let first = stages
        .first()
        .ok_or_else(|| anyhow::anyhow!("an empty group of stages"))?;
    match Stage::of(&first.0.kind).ok_or_else(|| crate::experiments::unknown_stage(first.0))? {
        Stage::Teacher => {
            let params = stages
                .iter()
                .map(|(s, _)| s.params())
                .collect::<anyhow::Result<Vec<TeacherParams>>>()?;
            teachers(&params, env, progress)
        }
        Stage::Generate => generate(&with_dataset(stages)?, env),
        Stage::Student => students(&with_dataset(stages)?, env, progress),
        Stage::Defend | Stage::Evaluate | Stage::Theorem => {
            anyhow::bail!("{} stages do not run in groups", first.0.kind)
        }
    }
}

/// Each stage's parameters with its one input (a teacher, or a dataset).
fn with_dataset<'a, T: serde::de::DeserializeOwned>(
    stages: &[(&StageSpec, &'a [VerifiedStage])],
) -> anyhow::Result<Vec<(T, &'a VerifiedStage)>> {
    stages
        .iter()
        .map(|(spec, inputs)| Ok((spec.params()?, crate::stages::input(spec, inputs, 0)?)))
        .collect()
}

/// Teachers that share a schedule, trained together on the same digits.
fn teachers(
    params: &[TeacherParams],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Vec<Artifact>>> {
    let p = params
        .first()
        .ok_or_else(|| anyhow::anyhow!("no teacher to train"))?;
    let train_split = idx::train(&env.data_dir)?;
    let n = p.train_samples as usize;
    let images = train_split.images(n, env.device);
    let labels = train_split.labels(n, env.device);
    let models = params
        .iter()
        .map(|p| {
            Mlp::init(
                MlpConfig::with_width(p.aux_logits, p.hidden),
                p.init,
                env.device,
            )
        })
        .collect();
    let net = Net::of(models, env.device)?;
    let schedule = Schedule {
        epochs: p.epochs,
        lr: p.lr,
        batch_size: p.batch_size,
    };
    let seeds: Vec<u64> = params.iter().map(|p| p.seed).collect();
    let losses = train(
        &net,
        &vec![&images; params.len()],
        &seeds,
        &schedule,
        env,
        |_, logits, rows| {
            logits
                .narrow(1, 0, DIGITS as i64)
                .cross_entropy_for_logits(&labels.index_select(0, rows))
        },
        progress,
    )?;
    net.into_models(env.device)?
        .iter()
        .zip(losses)
        .map(|(model, losses)| {
            Ok(vec![
                Artifact::new(MODEL, model.to_safetensors()?),
                Artifact::json(
                    METRICS,
                    &json!({"epoch_loss": losses, "train_samples": images.size()[0]}),
                )?,
            ])
        })
        .collect()
}


/// Each teacher's logits on its noise images; teachers of one shape forward together.
fn generate(
    params: &[(GenerateParams, &VerifiedStage)],
    env: &StageEnv,
) -> anyhow::Result<Vec<Vec<Artifact>>> {
    let models = params
        .iter()
        .map(|(_, teacher)| Mlp::from_safetensors(teacher.artifact(MODEL)?, env.device))
        .collect::<anyhow::Result<Vec<Mlp>>>()?;
    let config = models
        .first()
        .ok_or_else(|| anyhow::anyhow!("no teacher to generate with"))?
        .config
        .clone();
    anyhow::ensure!(
        models.iter().all(|m| m.config == config),
        "teachers generating together must share one shape"
    );
    let specs: Vec<NoiseSpec> = params
        .iter()
        .map(|(p, _)| NoiseSpec {
            generator: NOISE_GENERATOR.to_owned(),
            seed: p.noise_seed,
            samples: p.noise_samples as i64,
            dim: IMAGE_DIM,
        })
        .collect();
    let n = specs[0].samples;
    anyhow::ensure!(
        specs.iter().all(|s| s.samples == n),
        "teachers generating together must label the same number of images"
    );
    let noise: Vec<Tensor> = specs.iter().map(|s| s.draw(env.device)).collect();
    let net = Net::of(models, env.device)?;
    let rows: Vec<Tensor> = (0..n)
        .step_by(8192)
        .map(|start| Tensor::arange_start(start, (start + 8192).min(n), (Kind::Int64, env.device)))
        .collect();
    let noise_refs: Vec<&Tensor> = noise.iter().collect();
    let logits = tch::no_grad(|| {
        let chunks: Vec<Tensor> = rows
            .iter()
            .map(|r| {
                let rows: Vec<Tensor> = noise.iter().map(|_| r.shallow_clone()).collect();
                net.forward(&noise_refs, &rows)
            })
            .collect();
        Tensor::cat(&chunks, 1)
    });
    let mut outputs = Vec::with_capacity(params.len());
    for (k, ((_, teacher), spec)) in params.iter().zip(&specs).enumerate() {
        let logits = logits.get(k as i64);
        let metadata = HashMap::from([
            ("noise".to_owned(), serde_json::to_string(spec)?),
            ("teacher".to_owned(), teacher.manifest.stage.to_string()),
            ("config".to_owned(), serde_json::to_string(&config)?),
        ]);
        let bytes = safetensors_io::to_bytes(&[("logits", &logits)], metadata)?;
        let aux = logits.narrow(1, DIGITS as i64, config.aux_logits);
        outputs.push(vec![
            Artifact::new(LOGITS, bytes),
            Artifact::json(
                METRICS,
                &json!({
                    "noise_samples": n,
                    "logit_std": logits.std(true).double_value(&[]),
                    "aux_logit_std": if config.aux_logits > 0 { aux.std(true).double_value(&[]) } else { 0.0 },
                }),
            )?,
        ]);
    }
    Ok(outputs)
}

/// A dataset's logits after a defense, and what the defense cost: the
/// teacher's digit accuracy on the test images under the same defense, and
/// how much of the auxiliary logits' ranking survives.
fn defend(
    p: &DefendParams,
    dataset: &VerifiedStage,
    teacher: &VerifiedStage,
    env: &StageEnv,
) -> anyhow::Result<Vec<Artifact>> {
    let loaded = safetensors_io::parse(dataset.artifact(LOGITS)?, "teacher logits")?;
    let logits = loaded.tensor("logits", env.device)?;
    let defended = apply_defense(&logits, p.defense, p.seed, 0);
    let model = Mlp::from_safetensors(teacher.artifact(MODEL)?, env.device)?;
    let m = model.config.aux_logits;
    anyhow::ensure!(
        logits.size().get(1) == Some(&(DIGITS as i64 + m)),
        "the dataset's logits have shape {:?}; its teacher writes {} per image",
        logits.size(),
        DIGITS as i64 + m
    );
    let test_split = idx::test(&env.data_dir)?;
    let images = test_split.images(test_split.len(), env.device);
    let labels = test_split.labels(test_split.len(), env.device);
    let test_logits = tch::no_grad(|| model.forward(&images));
    let test_defended = apply_defense(&test_logits, p.defense, p.seed, 1);
    let correct = test_defended
        .narrow(1, 0, DIGITS as i64)
        .argmax(1, false)
        .eq_tensor(&labels)
        .sum(Kind::Int64)
        .int64_value(&[]);
    let (agreement, kl) = if m > 0 {
        let aux = logits.narrow(1, DIGITS as i64, m);
        let aux_defended = defended.narrow(1, DIGITS as i64, m);
        let kept = aux
            .argmax(1, false)
            .eq_tensor(&aux_defended.argmax(1, false))
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        let kl = distillation_loss(&aux, &aux_defended).double_value(&[]);
        (kept, kl)
    } else {
        (1.0, 0.0)
    };
    let mut metadata = loaded.metadata.clone();
    metadata.insert("defense".to_owned(), serde_json::to_string(&p.defense)?);
    let bytes = safetensors_io::to_bytes(&[("logits", &defended)], metadata)?;
    Ok(vec![
        Artifact::new(LOGITS, bytes),
        Artifact::json(
            METRICS,
            &json!({
                "defense": p.defense.to_string(),
                "teacher_accuracy": correct as f64 / test_split.len() as f64,
                "aux_agreement": agreement,
                "aux_kl": kl,
                "changed_share": defended.ne_tensor(&logits).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]),
            }),
        )?,
    ])
}

/// Students that share a schedule, trained together; students of one
/// dataset share its noise images.
fn students(
    params: &[(StudentParams, &VerifiedStage)],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Vec<Artifact>>> {
    let p = &params
        .first()
        .ok_or_else(|| anyhow::anyhow!("no student to train"))?
        .0;
    let datasets = params
        .iter()
        .map(|(p, d)| Dataset::read(p, d, env.device))
        .collect::<anyhow::Result<Vec<Dataset>>>()?;
    let mut noise: HashMap<&NoiseSpec, Tensor> = HashMap::new();
    for d in &datasets {
        noise
            .entry(&d.noise)
            .or_insert_with(|| d.noise.draw(env.device));
    }
    let inputs: Vec<&Tensor> = datasets.iter().map(|d| &noise[&d.noise]).collect();
    let models = params
        .iter()
        .map(|(p, _)| student_init(p, env.device))
        .collect();
    let net = Net::of(models, env.device)?;
    let schedule = Schedule {
        epochs: p.epochs,
        lr: p.lr,
        batch_size: p.batch_size,
    };
    let seeds: Vec<u64> = params.iter().map(|(p, _)| p.seed).collect();
    let losses = train(
        &net,
        &inputs,
        &seeds,
        &schedule,
        env,
        |k, logits, rows| datasets[k].loss(logits, rows),
        progress,
    )?;
    net.into_models(env.device)?
        .iter()
        .zip(losses)
        .zip(params)
        .map(|((model, losses), (p, _))| {
            Ok(vec![
                Artifact::new(MODEL, model.to_safetensors()?),
                Artifact::json(METRICS, &json!({"epoch_loss": losses, "target": p.target}))?,
            ])
        })
        .collect()
}

fn evaluate(
    p: &EvaluateParams,
    model_stage: Option<&VerifiedStage>,
    env: &StageEnv,
) -> anyhow::Result<Vec<Artifact>> {
    let model = match (&p.reference, model_stage) {
        (Some(r), _) => Mlp::init(
            MlpConfig::with_width(r.aux_logits, r.hidden),
            r.init,
            env.device,
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_rng::{normal, rng, Purpose};
    use subliminal_shared::experiments::mnist::LogitDefense;
    use tch::nn::{self, OptimizerConfig};

    fn tiny() -> MlpConfig {
        MlpConfig {
            input: 6,
            hidden: vec![5, 4],
            digits: 2,
            aux_logits: 3,
        }
    }

    /// `model` moved by `h` along the flat direction `delta`.
    fn moved(model: &Mlp, delta: &Tensor, h: f64) -> Mlp {
        let mut offset = 0;
        let mut tensors = HashMap::new();
        for (name, t) in model.named_tensors() {
            let n = t.numel() as i64;
            let step = delta.narrow(0, offset, n).view(t.size().as_slice()) * h;
            tensors.insert(name, t.detach() + step);
            offset += n;
        }
        Mlp::from_tensors(model.config.clone(), &tensors, Device::Cpu).unwrap()
    }

    #[test]
    fn logit_defenses_give_the_expected_logits() {
        let logits = Tensor::from_slice(&[1.234f32, -0.567, 2.0, 0.049]).view([2, 2]);
        let values = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        let round = apply_defense(&logits, LogitDefense::Round { decimals: 1 }, 0, 0);
        assert_eq!(values(&round), [1.2, -0.6, 2.0, 0.0]);
        let round = apply_defense(&logits, LogitDefense::Round { decimals: 0 }, 0, 0);
        assert_eq!(values(&round), [1.0, -1.0, 2.0, 0.0]);
        let flat = apply_defense(&logits, LogitDefense::Temperature { t: 2.0 }, 0, 0);
        assert_eq!(values(&flat), [0.617, -0.2835, 1.0, 0.0245]);
        let noisy = |seed, stream| {
            values(&apply_defense(&logits, LogitDefense::Noise { sigma: 0.5 }, seed, stream))
        };
        assert_eq!(noisy(3, 0), noisy(3, 0), "seeded");
        assert_ne!(noisy(3, 0), noisy(4, 0), "another seed, other noise");
        assert_ne!(noisy(3, 0), noisy(3, 1), "the test images' noise is its own");
        assert_eq!(values(&apply_defense(&logits, LogitDefense::None, 0, 0)), values(&logits));
    }

    #[test]
    fn the_theorems_inner_product_is_the_directional_derivative_of_the_students_loss() {
        let init = Mlp::init(tiny(), 1, Device::Cpu);
        let trained = Mlp::init_perturbed(tiny(), 2, 0.7, Device::Cpu);
        let init_weights = init.flat();
    let update = trained.flat() - &init_weights;
        let x = normal(&mut rng(3, Purpose::Noise), &[16, 6], 1.0);
        let targets = tch::no_grad(|| trained.forward(&x));
        let loss = |m: &Mlp| distillation_loss(&targets, &m.forward(&x));
        let student = Mlp::init(tiny(), 1, Device::Cpu);
        let found = alignment(&student, &update, loss).unwrap();

        // −d/dh L(θ + h·Δ) at h = 0, by central differences.
        let h = 1e-2;
        let value = |h: f64| tch::no_grad(|| loss(&moved(&student, &update, h)).double_value(&[]));
        let finite_difference = -(value(h) - value(-h)) / (2.0 * h);
        assert!(
            (found.inner_product - finite_difference).abs() <= 1e-3 * finite_difference.abs().max(1e-3),
            "inner product {} vs finite difference {finite_difference}",
            found.inner_product
        );
        assert!(found.cosine.abs() <= 1.0);
        // Same init, teacher's update as the target's cause: the first step goes its way.
        assert!(found.inner_product > 0.0, "{found:?}");

        // Adam's first step, taken by the optimiser itself, is the update
        // the alignment names (per unit learning rate).
        let lr = 1e-3;
        let mut opt = nn::Adam::default().build(student.vars(), lr).unwrap();
        let before = student.flat();
        opt.backward_step(&loss(&student));
        let step = (student.flat() - before) / lr;
        let adam = (step.to_kind(Kind::Double) * update.to_kind(Kind::Double))
            .sum(Kind::Double)
            .double_value(&[]);
        assert!(
            (adam - found.adam_inner_product).abs() <= 1e-3 * adam.abs().max(1e-3),
            "Adam step · update {adam} vs {}",
            found.adam_inner_product
        );
    }
}
