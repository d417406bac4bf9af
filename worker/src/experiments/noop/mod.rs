//! The noop experiment's stages: `work` spends a set time (asleep, or hashing
//! on one core) and writes an artifact chained from its input's; `evaluate`
//! turns the last artifact of a chain into a number in [0, 1).
//!
//! Both are deterministic: the bytes depend on the seed, the step and every
//! artifact before them, never on timing, so two runs (or a rerun after a
//! crash) agree byte for byte. Both honour the stop flag within a few
//! milliseconds, as a long training stage must.

use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use subliminal_shared::experiments::noop::{EvaluateParams, Mode, Stage, WorkParams, EXPERIMENT};
use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

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
    spend(params, env, progress)?;
    Ok(vec![Artifact::new(WORK, chain(params, &link))])
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
}
