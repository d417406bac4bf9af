//! The stage code of every experiment kind, behind one trait.
//!
//! Each kind's stages live in one folder here, beside its schema and plan in
//! `shared/src/experiments/KIND/`. Generic code (the executor, the local
//! runner, the daemon) reaches them only through [`run`], which finds the
//! stage's kind in the [`registry!`] below. Adding a kind is its folder and
//! one line there; a test checks that both sides list the same kinds.

use subliminal_shared::manifest::VerifiedStage;
use subliminal_shared::stage::StageSpec;

use crate::stages::{Artifact, Progress, StageEnv};

/// Lists every kind's stages once: `module::ITEM` declares the module and
/// registers the item (a [`KindStages`], or a type of the kind's own).
macro_rules! registry {
    ($($module:ident :: $kind:ident),+ $(,)?) => {
        $(pub mod $module;)+

        /// The stage code of every experiment kind this worker runs.
        pub static KINDS: &[&dyn Stages] = &[$(&$module::$kind),+];
    };
}

registry! {
    mnist::Mnist,
    numbers::NUMBERS,
    noop::NOOP,
    audit::AUDIT,
    misalignment::MISALIGNMENT,
    code::CODE,
    cot::COT,
}

/// What [`Stages::run`] does, as a function.
pub type RunStage =
    fn(&StageSpec, &[VerifiedStage], &StageEnv, &dyn Fn(Progress)) -> anyhow::Result<Vec<Artifact>>;

/// The stages of a kind that runs each stage alone: its name and its
/// stage function. A kind that groups stages implements [`Stages`] itself.
pub struct KindStages {
    pub experiment: &'static str,
    pub run: RunStage,
}

impl Stages for KindStages {
    fn experiment(&self) -> &'static str {
        self.experiment
    }

    fn run(
        &self,
        spec: &StageSpec,
        inputs: &[VerifiedStage],
        env: &StageEnv,
        progress: &dyn Fn(Progress),
    ) -> anyhow::Result<Vec<Artifact>> {
        (self.run)(spec, inputs, env, progress)
    }
}

/// The stages of one experiment kind.
pub trait Stages: Send + Sync + 'static {
    /// The kind's name, as its [`Experiment`](subliminal_shared::experiments::Experiment) gives it.
    fn experiment(&self) -> &'static str;

    /// Runs one stage of the kind. `inputs` are the verified outputs of
    /// `spec.inputs`, in order. A stage never touches the store.
    fn run(
        &self,
        spec: &StageSpec,
        inputs: &[VerifiedStage],
        env: &StageEnv,
        progress: &dyn Fn(Progress),
    ) -> anyhow::Result<Vec<Artifact>>;

    /// Stages with the same key may run together through [`Stages::run_group`];
    /// `None` (the default) runs a stage alone.
    fn group_key(&self, _spec: &StageSpec) -> Option<String> {
        None
    }

    /// Runs stages that share a group key in one pass, one output per stage
    /// in order. Each output must be what [`Stages::run`] gives that stage
    /// alone: a group changes speed, never a result.
    fn run_group(
        &self,
        stages: &[(&StageSpec, &[VerifiedStage])],
        env: &StageEnv,
        progress: &dyn Fn(Progress),
    ) -> anyhow::Result<Vec<Vec<Artifact>>> {
        stages
            .iter()
            .map(|(spec, inputs)| self.run(spec, inputs, env, progress))
            .collect()
    }
}

/// Runs one stage with its kind's code.
pub fn run(
    spec: &StageSpec,
    inputs: &[VerifiedStage],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Artifact>> {
    kind_of(spec)?.run(spec, inputs, env, progress)
}

/// The key under which `spec` may run in a group, if its kind groups it.
pub fn group_key(spec: &StageSpec) -> Option<String> {
    kind_of(spec).ok()?.group_key(spec)
}

/// Runs stages of one kind and one group key together (see [`Stages::run_group`]).
pub fn run_group(
    stages: &[(&StageSpec, &[VerifiedStage])],
    env: &StageEnv,
    progress: &dyn Fn(Progress),
) -> anyhow::Result<Vec<Vec<Artifact>>> {
    let Some((first, _)) = stages.first() else {
        return Ok(Vec::new());
    };
    let key = group_key(first);
    anyhow::ensure!(
        key.is_some() && stages.iter().all(|(s, _)| group_key(s) == key),
        "stages of different group keys cannot run as one group"
    );
    let outputs = kind_of(first)?.run_group(stages, env, progress)?;
    anyhow::ensure!(
        outputs.len() == stages.len(),
        "a group of {} stages produced {} outputs",
        stages.len(),
        outputs.len()
    );
    Ok(outputs)
}

fn kind_of(spec: &StageSpec) -> anyhow::Result<&'static dyn Stages> {
    let Some(kind) = KINDS.iter().find(|k| k.experiment() == spec.experiment) else {
        anyhow::bail!(
            "stage {} belongs to experiment {:?}, which this worker ({}) does not run; it runs {}",
            spec.id.short(),
            spec.experiment,
            subliminal_shared::CODE_VERSION,
            KINDS
                .iter()
                .map(|k| k.experiment())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    Ok(*kind)
}

/// The error for a stage kind its experiment does not have.
pub fn unknown_stage(spec: &StageSpec) -> anyhow::Error {
    anyhow::anyhow!(
        "stage {} is a {:?} stage, which experiment {} does not have",
        spec.id.short(),
        spec.kind.as_str(),
        spec.experiment
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use subliminal_shared::experiments as shared;

    #[test]
    fn the_worker_runs_every_kind_the_specs_know_and_no_other() {
        let specs: Vec<&str> = shared::KINDS.iter().map(|k| k.name()).collect();
        let stages: Vec<&str> = KINDS.iter().map(|k| k.experiment()).collect();
        assert_eq!(specs, stages, "the two registries list different kinds");
    }
}
