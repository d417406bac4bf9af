//! Runs one stage against the store, the same way in every mode.
//!
//! 1. If the stage's manifest exists and verifies, the stage is done: reuse it.
//!    A manifest that does not verify (an artifact changed or went missing)
//!    is removed, and the stage runs again.
//! 2. Fetch every input stage and verify it against its manifest.
//! 3. Run the stage function (on a blocking thread: it trains models).
//! 4. Write every artifact, then the manifest with create-if-absent. If
//!    another worker finished the same stage first, its manifest stands and
//!    this run changes nothing.
//!
//! A failure is recorded in `failure.json` beside the stage so that its trial
//! can show why.
//!
//! [`execute_group`] does the same for stages that run as one batched pass
//! (K models of one shape): each keeps its own id, artifacts and manifest.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use subliminal_shared::manifest::{
    hostname, inspect, inspect_cached, now, ArtifactCache, ArtifactEntry, Failure, Manifest,
    StageState, VerifiedStage,
};
use subliminal_shared::stage::{StageId, StageSpec};
use subliminal_shared::store::{keys, Store};
use subliminal_shared::CODE_VERSION;

use crate::device::describe;
use crate::experiments;
use crate::progress::Progress;
use crate::stages::{Artifact, ProgressFn, StageEnv};

/// How a stage ended.
#[derive(Debug)]
pub enum Completion {
    /// It was already done in the store.
    Reused,
    /// It ran here. `recorded` is false when another run's manifest was there first.
    Computed {
        manifest: Box<Manifest>,
        recorded: bool,
    },
}

pub async fn execute(
    store: &Store,
    spec: &StageSpec,
    env: &Arc<StageEnv>,
    progress: ProgressFn,
) -> anyhow::Result<Completion> {
    match run(store, spec, env, progress).await {
        Ok(done) => Ok(done),
        Err(error) => Err(record_failure(store, spec, error).await),
    }
}

/// Runs stages that share a group key (see [`experiments::group_key`]) as
/// one batched pass, and gives one completion per stage, in order. Stages
/// already done are reused. If the pass fails as a whole, each stage it held
/// runs again alone, so one failing model fails only its own stage.
pub async fn execute_group(
    store: &Store,
    specs: &[StageSpec],
    env: &Arc<StageEnv>,
    progress: ProgressFn,
) -> Vec<anyhow::Result<Completion>> {
    if let [spec] = specs {
        return vec![execute(store, spec, env, progress).await];
    }
    let mut outcomes: Vec<Option<anyhow::Result<Completion>>> =
        specs.iter().map(|_| None).collect();
    let mut todo = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        match prepare(store, spec, env).await {
            Ok(Some(inputs)) => todo.push((i, inputs)),
            Ok(None) => outcomes[i] = Some(Ok(Completion::Reused)),
            Err(e) => outcomes[i] = Some(Err(record_failure(store, spec, e).await)),
        }
    }
    if !todo.is_empty() {
        let started_at = now();
        let clock = Instant::now();
        let group: Vec<(StageSpec, Vec<VerifiedStage>)> = todo
            .iter()
            .map(|(i, inputs)| (specs[*i].clone(), inputs.clone()))
            .collect();
        // The group keeps its progress under its members' ids together.
        let ids: Vec<StageId> = todo.iter().map(|(i, _)| specs[*i].id).collect();
        let checkpoints = Progress::group(store.clone(), &ids, env.checkpoint_every);
        let run_env = Arc::new(StageEnv {
            progress: checkpoints.clone(),
            ..(**env).clone()
        });
        let run_progress = progress.clone();
        let computed = tokio::task::spawn_blocking(move || {
            let refs: Vec<(&StageSpec, &[VerifiedStage])> =
                group.iter().map(|(s, i)| (s, i.as_slice())).collect();
            experiments::run_group(&refs, &run_env, &*run_progress)
        })
        .await;
        let computed = match computed {
            Ok(Ok(outputs)) => Ok(outputs),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(e) => Err(format!("the group's thread ended: {e}")),
        };
        match computed {
            Ok(outputs) => {
                let share = clock.elapsed().as_secs_f64() / todo.len() as f64;
                let size = todo.len() as u32;
                for ((i, _), artifacts) in todo.iter().zip(outputs) {
                    let spec = &specs[*i];
                    let timing = Timing {
                        started_at,
                        duration_s: share,
                        group: Some(size),
                    };
                    outcomes[*i] = Some(match record(store, spec, env, artifacts, timing).await {
                        Ok(done) => Ok(done),
                        Err(e) => Err(record_failure(store, spec, e).await),
                    });
                }
                if let Some(checkpoints) = &checkpoints {
                    checkpoints.clear().await;
                }
            }
            Err(why) if env.stopped() => {
                // Stopped from outside, with its progress saved: running each
                // stage alone now would only stop again.
                for (i, _) in &todo {
                    outcomes[*i] = Some(Err(anyhow::anyhow!("{why}")));
                }
            }
            Err(why) => {
                tracing::warn!(
                    stages = todo.len(),
                    "a group of {} stages failed ({why}); running each alone",
                    specs[todo[0].0].kind
                );
                for (i, _) in &todo {
                    outcomes[*i] = Some(execute(store, &specs[*i], env, progress.clone()).await);
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(anyhow::anyhow!("a stage of the group got no outcome"))))
        .collect()
}

async fn record_failure(store: &Store, spec: &StageSpec, error: anyhow::Error) -> anyhow::Error {
    let failure = Failure {
        stage: spec.id,
        kind: spec.kind.clone(),
        error: format!("{error:#}"),
        at: now(),
        host: hostname(),
    };
    if let Ok(body) = serde_json::to_vec_pretty(&failure) {
        if let Err(e) = store.put(&keys::failure(spec.id), Bytes::from(body)).await {
            tracing::warn!(stage = %spec.id.short(), "cannot record the failure: {e:#}");
        }
    }
    error
}

async fn run(
    store: &Store,
    spec: &StageSpec,
    env: &Arc<StageEnv>,
    progress: ProgressFn,
) -> anyhow::Result<Completion> {
    let Some(inputs) = prepare(store, spec, env).await? else {
        return Ok(Completion::Reused);
    };
    let started_at = now();
    let clock = Instant::now();
    // A training stage keeps its progress in the store under its own id.
    let checkpoints = Progress::new(store.clone(), spec.id, env.checkpoint_every);
    let artifacts = {
        let spec = spec.clone();
        let env = Arc::new(StageEnv {
            progress: checkpoints.clone(),
            ..(**env).clone()
        });
        tokio::task::spawn_blocking(move || experiments::run(&spec, &inputs, &env, &*progress))
            .await??
    };
    let timing = Timing {
        started_at,
        duration_s: clock.elapsed().as_secs_f64(),
        group: None,
    };
    let done = record(store, spec, env, artifacts, timing).await?;
    if let Some(checkpoints) = checkpoints {
        checkpoints.clear().await;
    }
    Ok(done)
}

/// The stage's verified inputs, or `None` when it is already done.
async fn prepare(
    store: &Store,
    spec: &StageSpec,
    env: &StageEnv,
) -> anyhow::Result<Option<Vec<VerifiedStage>>> {
    anyhow::ensure!(
        spec.verify_id(),
        "stage {} does not match its content: refusing an altered stage",
        spec.id
    );
    match inspect(store, spec.id).await? {
        StageState::Done(_) => return Ok(None),
        StageState::Corrupt(reason) => {
            tracing::warn!(stage = %spec.id.short(), kind = %spec.kind, "stage output is corrupt ({reason}); running it again");
            store.delete(&keys::manifest(spec.id)).await?;
        }
        StageState::Missing => {}
    }
    Ok(Some(fetch_inputs(store, spec, env.cache.as_deref()).await?))
}

/// When and how long a stage ran.
struct Timing {
    started_at: f64,
    duration_s: f64,
    group: Option<u32>,
}

/// Writes every artifact, then the manifest (create-if-absent).
///
/// A run that was told to stop (its lease lost) writes nothing, and one that
/// finds the stage's manifest already there leaves it and its artifacts
/// alone: a second run of a stage never rewrites the output of the first
/// after it is done. (S3 offers no fenced write: two runs that both hold
/// their lease, which the broker does not allow, could still race here.)
async fn record(
    store: &Store,
    spec: &StageSpec,
    env: &StageEnv,
    artifacts: Vec<Artifact>,
    timing: Timing,
) -> anyhow::Result<Completion> {
    anyhow::ensure!(
        !env.stopped(),
        "stopped before writing its output (the lease was lost or the worker is shutting down)"
    );
    if let Some(bytes) = store.get_opt(&keys::manifest(spec.id)).await? {
        let manifest: Manifest = serde_json::from_slice(&bytes).with_context(|| {
            format!("stage {}: its manifest is not valid JSON", spec.id.short())
        })?;
        return Ok(Completion::Computed {
            manifest: Box::new(manifest),
            recorded: false,
        });
    }
    let mut entries = Vec::with_capacity(artifacts.len());
    for artifact in artifacts {
        entries.push(ArtifactEntry::of(&artifact.name, &artifact.bytes));
        store
            .put(
                &keys::artifact(spec.id, &artifact.name),
                Bytes::from(artifact.bytes),
            )
            .await?;
    }
    let manifest = Manifest {
        stage: spec.id,
        experiment: spec.experiment.clone(),
        kind: spec.kind.clone(),
        params: spec.params.clone(),
        inputs: spec.inputs.clone(),
        code_version: CODE_VERSION.to_owned(),
        artifacts: entries,
        started_at: timing.started_at,
        finished_at: now(),
        duration_s: timing.duration_s,
        device: describe(env.device),
        host: hostname(),
        group: timing.group,
    };
    let body = Bytes::from(serde_json::to_vec_pretty(&manifest)?);
    let recorded = store.put_if_absent(&keys::manifest(spec.id), body).await?;
    Ok(Completion::Computed {
        manifest: Box::new(manifest),
        recorded,
    })
}

async fn fetch_inputs(
    store: &Store,
    spec: &StageSpec,
    cache: Option<&dyn ArtifactCache>,
) -> anyhow::Result<Vec<VerifiedStage>> {
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    for id in &spec.inputs {
        match inspect_cached(store, *id, cache).await? {
            StageState::Done(stage) => inputs.push(*stage),
            StageState::Missing => anyhow::bail!(
                "{} stage {} needs stage {}, which is not done",
                spec.kind,
                spec.id.short(),
                id.short()
            ),
            StageState::Corrupt(reason) => anyhow::bail!(
                "{} stage {} needs stage {}, whose output is corrupt: {reason}",
                spec.kind,
                spec.id.short(),
                id.short()
            ),
        }
    }
    Ok(inputs)
}
