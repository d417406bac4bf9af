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

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use subliminal_shared::manifest::{
    hostname, inspect, inspect_cached, now, ArtifactCache, ArtifactEntry, Failure, Manifest,
    StageState, VerifiedStage,
};
use subliminal_shared::stage::StageSpec;
use subliminal_shared::store::{keys, Store};
use subliminal_shared::CODE_VERSION;

use crate::device::describe;
use crate::experiments;
use crate::stages::{ProgressFn, StageEnv};

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
        Err(error) => {
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
            Err(error)
        }
    }
}

async fn run(
    store: &Store,
    spec: &StageSpec,
    env: &Arc<StageEnv>,
    progress: ProgressFn,
) -> anyhow::Result<Completion> {
    anyhow::ensure!(
        spec.verify_id(),
        "stage {} does not match its content: refusing an altered stage",
        spec.id
    );
    match inspect(store, spec.id).await? {
        StageState::Done(_) => return Ok(Completion::Reused),
        StageState::Corrupt(reason) => {
            tracing::warn!(stage = %spec.id.short(), kind = %spec.kind, "stage output is corrupt ({reason}); running it again");
            store.delete(&keys::manifest(spec.id)).await?;
        }
        StageState::Missing => {}
    }
    let inputs = fetch_inputs(store, spec, env.cache.as_deref()).await?;
    let started_at = now();
    let clock = Instant::now();
    let artifacts = {
        let spec = spec.clone();
        let env = env.clone();
        tokio::task::spawn_blocking(move || experiments::run(&spec, &inputs, &env, &*progress))
            .await??
    };
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
        started_at,
        finished_at: now(),
        duration_s: clock.elapsed().as_secs_f64(),
        device: describe(env.device),
        host: hostname(),
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
