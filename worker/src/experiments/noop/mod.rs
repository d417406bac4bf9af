//! The noop experiment's stages: `work` spends a set time (asleep, or hashing
//! on one core), or fine-tunes a tiny random model, and writes an artifact
//! chained from its input's; `evaluate` turns the last artifact of a chain
//! into a number in [0, 1).
//!
//! Both are deterministic: the bytes depend on the seed, the step and every
//! artifact before them, never on timing, so two runs (or a rerun after a
//! crash) agree byte for byte. Both honour the stop flag within a few
//! milliseconds, as a long training stage must; a `train` stage stopped
//! partway saves its progress and resumes from it, bit for bit.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn;

use serde_json::json;
use sha2::{Digest, Sha256};
use subliminal_shared::experiments::noop::{EvaluateParams, Mode, Stage, WorkParams, EXPERIMENT};
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::llm::finetune::{
    attach_lora, lora_tensors, train, Checkpoints, Example, Hooks, LoraSpec, TrainSettings,
};
use crate::llm::random::tiny_llama;
use crate::stages::{Artifact, Progress, StageEnv};

pub const WORK: &str = "work.bin";
pub const METRICS: &str = "metrics.json";

/// How often a working stage looks at its stop flag and reports progress.
const SLICE: Duration = Duration::from_millis(20);

/// The noop experiment's stage code.
pub static NOOP: super::KindStages = super::KindStages {
    experiment: EXPERIMENT,
    run,
};

fn run(
    spec: &StageSpec,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    match Stage::of(&spec.kind).ok_or_else(|| super::unknown_stage(spec))? {
        Stage::Work => work(&spec.params()?, inputs.first(), env, progress),
        Stage::Evaluate => evaluate(&spec.params()?, crate::stages::input(spec, inputs, 0)?),
    }
}

fn work(
    params: &WorkParams,
    previous: Option<&VerifiedStage>,
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    anyhow::ensure!(
        !params.fail,
        "work stage {} of seed {} fails on purpose: the sweep lists seed {} in work.fail_seeds",
        params.step,
        params.seed,
        params.seed
    );
    let link = match previous {
        Some(stage) => Sha256::digest(stage.artifact(WORK)?).into(),
        None => [0u8; 32],
    };
    if params.mode == Mode::Train {
        return Ok(vec![Artifact::new(WORK, fine_tune(params, &link, env, progress)?)]);
    }
    spend(params, env, progress)?;
    Ok(vec![Artifact::new(WORK, chain(params, &link))])
}

/// Tokens per prompt and per answer of a `train` stage's rows.
const ROW_TOKENS: usize = 12;

/// LoRA adapters on every projection of a tiny random Llama (the chain's
/// seed picks the model), trained `train_steps` steps of two rows drawn from
/// the link to the previous stage; the adapters' safetensors bytes. Its
/// progress is checkpointed like a student's.
fn fine_tune(
    params: &WorkParams,
    link: &[u8; 32],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<u8>> {
    let (_base, mut model) = tiny_llama(params.seed, env.device)?;
    let adapters = nn::VarStore::new(env.device);
    let spec = LoraSpec::every_projection(4, 8.0);
    attach_lora(&mut model, &adapters, &spec, params.step)?;
    let mut rows = ChaCha8Rng::from_seed(*chain(params, link).first_chunk::<32>().unwrap_or(link));
    let vocab = model.config.vocab_size as u32;
    let mut tokens = |n: usize| (0..n).map(|_| rows.gen_range(1..vocab)).collect::<Vec<u32>>();
    let examples: Vec<Example> = (0..2 * params.train_steps)
        .map(|_| Example::new(tokens(ROW_TOKENS), tokens(ROW_TOKENS)))
        .collect();
    let settings = TrainSettings {
        epochs: 1,
        lr: 1e-3,
        warmup_steps: 0,
        max_grad_norm: 1.0,
        batch_size: 2,
        grad_accumulation: 1,
        weight_decay: 0.0,
        seed: params.seed ^ params.step.rotate_left(32),
        optimizer: Default::default(),
    };
    let checkpoints = env.checkpoints("train");
    let stop = || env.stopped();
    let mut report_step = |step: u64, total: u64, loss: f64, _tokens_per_second: f64| {
        progress(Progress {
            fraction: step as f64 / total.max(1) as f64,
            message: format!("train {} step {step}/{total}", params.step),
            loss: Some(loss),
            samples_per_second: None,
        })
    };
    let hooks = Hooks {
        stop: &stop,
        progress: &mut report_step,
        checkpoints: checkpoints.as_ref().map(|c| c as &dyn Checkpoints),
    };
    let Some(_report) = train(&model, &adapters, &examples, &settings, 0, hooks)? else {
        anyhow::bail!("stopped partway through training, its progress saved");
    };
    crate::safetensors_io::named_to_bytes(&lora_tensors(&adapters), Default::default())
}

/// Takes `duration_ms`, in slices, stopping early when told to.
fn spend(params: &WorkParams, env: &StageEnv, progress: &dyn Fn(Progress)) -> anyhow::Result<()> {
    let total = Duration::from_millis(params.duration_ms);
    let started = Instant::now();
    let mut hashed = [0u8; 32];
    loop {
        let elapsed = started.elapsed();
        if elapsed >= total {
            break;
        }
        anyhow::ensure!(!env.stopped(), "stopped after {elapsed:?} of {total:?}");
        let slice = SLICE.min(total - elapsed);
        match params.mode {
            Mode::Sleep => std::thread::sleep(slice),
            Mode::Compute => {
                let until = Instant::now() + slice;
                while Instant::now() < until {
                    hashed = Sha256::digest(hashed).into();
                }
                std::hint::black_box(&hashed);
            }
            Mode::Train => anyhow::bail!("a train stage takes its steps, not a set time"),
        }
        progress(Progress {
            fraction: (started.elapsed().as_secs_f64() / total.as_secs_f64()).min(1.0),
            message: format!("{} {} of {total:?}", params.mode, params.step),
            loss: None,
            samples_per_second: None,
        });
    }
    Ok(())
}

/// `artifact_bytes` bytes: SHA-256 blocks of (link, seed, step, block index).
fn chain(params: &WorkParams, link: &[u8; 32]) -> Vec<u8> {
    let len = params.artifact_bytes as usize;
    let mut out = Vec::with_capacity(len);
    let mut block = 0u64;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(link);
        h.update(params.seed.to_le_bytes());
        h.update(params.step.to_le_bytes());
        h.update(block.to_le_bytes());
        let digest = h.finalize();
        let take = digest.len().min(len - out.len());
        out.extend_from_slice(&digest[..take]);
        block += 1;
    }
    out
}

fn evaluate(params: &EvaluateParams, last: &VerifiedStage) -> anyhow::Result<Vec<Artifact>> {
    let digest: [u8; 32] = Sha256::digest(last.artifact(WORK)?).into();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let value = u64::from_le_bytes(first) as f64 / 2f64.powi(64);
    Ok(vec![Artifact::json(
        METRICS,
        &json!({"value": value, "seed": params.seed, "chain_sha256": hex::encode(digest)}),
    )?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(step: u64) -> WorkParams {
        WorkParams {
            version: 1,
            seed: 3,
            step,
            duration_ms: 0,
            mode: Mode::Compute,
            artifact_bytes: 80,
            train_steps: 0,
            fail: false,
        }
    }

    #[test]
    fn a_chain_is_deterministic_and_depends_on_every_link() {
        let a = chain(&params(0), &[0; 32]);
        assert_eq!(a.len(), 80);
        assert_eq!(a, chain(&params(0), &[0; 32]));
        assert_ne!(a, chain(&params(1), &[0; 32]));
        assert_ne!(a, chain(&params(0), &[1; 32]));
    }

    #[test]
    fn work_takes_its_time_and_stops_when_told() {
        let env = StageEnv::new(tch::Device::Cpu, std::env::temp_dir());
        let p = WorkParams {
            duration_ms: 60,
            ..params(0)
        };
        let started = Instant::now();
        spend(&p, &env, &|_| {}).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(60));
        env.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let err = spend(&p, &env, &|_| {}).unwrap_err().to_string();
        assert!(err.contains("stopped"), "{err}");
        let failing = WorkParams {
            fail: true,
            ..params(0)
        };
        let err = work(&failing, None, &env, &|_| {}).unwrap_err().to_string();
        assert!(err.contains("fail_seeds"), "{err}");
    }

    #[test]
    fn a_train_stage_is_deterministic_and_its_adapters_depend_on_every_link() {
        let env = StageEnv::new(tch::Device::Cpu, std::env::temp_dir());
        let p = WorkParams {
            mode: Mode::Train,
            train_steps: 6,
            ..params(0)
        };
        let losses = std::cell::RefCell::new(Vec::new());
        let record = |p: Progress| losses.borrow_mut().extend(p.loss);
        let a = fine_tune(&p, &[0; 32], &env, &record).unwrap();
        let losses = losses.into_inner();
        assert_eq!(losses.len(), 6);
        assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0));
        assert_eq!(a, fine_tune(&p, &[0; 32], &env, &|_| {}).unwrap());
        assert_ne!(a, fine_tune(&p, &[1; 32], &env, &|_| {}).unwrap());
        let next = WorkParams { step: 1, ..p.clone() };
        assert_ne!(a, fine_tune(&next, &[0; 32], &env, &|_| {}).unwrap());
        let parsed = crate::safetensors_io::parse(&a, "adapters").unwrap();
        assert!(parsed.names().iter().any(|n| n.contains("lora_A")));
    }
}
