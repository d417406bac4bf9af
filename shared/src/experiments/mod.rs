//! Experiment kinds behind one seam.
//!
//! An experiment kind (the `kind` of a sweep file) is one folder here with a
//! unit type that implements [`Experiment`]: it reads its own sweep schema,
//! expands a sweep into stages and measurements, says how to read its
//! measurements, how to label its plots and which queue each of its stages
//! needs. The worker holds the other half, the stage code, in
//! `worker/src/experiments/KIND/`.
//!
//! Generic code (spec, plan, results, dispatch, plots, CLI) reaches a kind
//! only through [`find`] and this trait, never by name. Adding a kind is
//! creating its folder and adding one line to the [`registry!`] below (and
//! the same on the worker's side); see ARCHITECTURE.md, "Adding an
//! experiment kind".

use std::any::Any;
use std::fmt;
use std::process::ExitCode;

use crate::manifest::VerifiedStage;
use crate::plan::Plan;
use crate::spec::{Source, SpecError};
use crate::stage::Queue;
use crate::stage::StageKind;

/// The two items every kind's `impl Experiment` writes alike: `name`, its
/// module's `EXPERIMENT`, and `parse`, its module's `parse` function with
/// the checked sweep boxed. Used inside the impl: `experiment_basics!();`.
macro_rules! experiment_basics {
    () => {
        fn name(&self) -> &'static str {
            EXPERIMENT
        }

        fn parse(
            &self,
            source: &$crate::spec::Source,
        ) -> Result<Box<dyn $crate::experiments::CheckedSweep>, $crate::spec::SpecError> {
            Ok(Box::new(parse(source)?))
        }
    };
}

/// A kind's checked sweep as generic code sees it: its `name` field, and
/// its own `plan` method.
macro_rules! checked_sweep {
    ($sweep:ty) => {
        impl $crate::experiments::CheckedSweep for $sweep {
            fn name(&self) -> &str {
                &self.name
            }

            fn plan(&self) -> $crate::plan::Plan {
                <$sweep>::plan(self)
            }
        }
    };
}

/// Lists every experiment kind once: `module::Type` declares the module and
/// registers the type.
macro_rules! registry {
    ($($module:ident :: $kind:ident),+ $(,)?) => {
        $(pub mod $module;)+

        /// Every experiment kind this build knows, in the order errors list them.
        pub static KINDS: &[&dyn Experiment] = &[$(&$module::$kind),+];
    };
}

registry! {
    mnist::Mnist,
    numbers::Numbers,
    noop::Noop,
    audit::Audit,
    misalignment::Misalignment,
    code::Code,
    cot::Cot,
}

/// One experiment kind: its schema, its plan, and how to read its results.
pub trait Experiment: Send + Sync + 'static {
    /// The `kind` a sweep file names; also the `experiment` of every stage id
    /// it makes, so it never changes.
    fn name(&self) -> &'static str;

    /// Reads and checks a sweep of this kind. Every refusal names the file,
    /// line, column and key (see [`Source::error_at`]).
    fn parse(&self, source: &Source) -> Result<Box<dyn CheckedSweep>, SpecError>;

    /// The queue a stage of this kind waits in on a cluster: by default
    /// the GPU queue, for kinds whose every stage runs a model.
    fn queue(&self, _stage: &StageKind) -> Queue {
        Queue::Gpu
    }

    /// One figure of an evaluate stage's `metrics.json`. By default a number
    /// stored under the metric's name.
    fn read_metric(&self, metrics: &serde_json::Value, metric: &str) -> Option<Reading> {
        number_metric(metrics, metric)
    }

    /// The arm every other arm is compared with (`vs control`), if the kind
    /// has one.
    fn control_arm(&self) -> Option<&'static str> {
        None
    }

    /// The arm that `arm` is compared with; by default the control arm, for
    /// every arm but itself. A kind with several controls (one for students,
    /// one for a model shown the data in context) says which is whose.
    fn control_of(&self, arm: &str) -> Option<&'static str> {
        self.control_arm().filter(|control| *control != arm)
    }

    /// What the transfer-grid plot shows.
    fn grid_labels(&self) -> GridLabels;

    /// The answers behind measurement `metric` of a finished evaluate stage,
    /// one record each, for a researcher checking how they were counted.
    /// `None` where the kind keeps no answers (its figures are not shares).
    fn answers(
        &self,
        _stage: &VerifiedStage,
        _metric: &str,
    ) -> Option<anyhow::Result<Vec<AnswerRecord>>> {
        None
    }

    /// Commands of the kind's own (e.g. `subliminal filter KIND FILE`).
    fn tools(&self) -> Vec<Tool> {
        Vec::new()
    }
}

impl fmt::Debug for dyn Experiment {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Experiment({})", self.name())
    }
}

/// A sweep of one kind, checked and ready to expand.
pub trait CheckedSweep: AsAny + fmt::Debug + Send + Sync + 'static {
    fn name(&self) -> &str;
    /// The stage DAG and the measurements of the results table.
    fn plan(&self) -> Plan;
}

/// Lets code that knows the kind (its own tests) reach a checked sweep's fields.
pub trait AsAny {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One figure read from an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub value: f64,
    /// For a share: how many answers it is a share of (its interval needs it).
    pub samples: Option<u64>,
    /// For a mean over fixed items (questions): each item's figure, in
    /// item order, so that an arm is tested against its control item by item.
    pub items: Option<Vec<f64>>,
}

/// One answer of an evaluation (see [`Experiment::answers`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRecord {
    pub question_index: u64,
    pub question: String,
    /// Which of the question's samples this is, from 0.
    pub sample: u64,
    pub answer: String,
    /// Whether the answer counted towards the measurement's figure.
    pub matched: bool,
}

/// The words of a transfer-grid plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridLabels {
    /// What each cell's figure is, e.g. "student digit accuracy".
    pub figure: &'static str,
    /// What the axes range over: "init", "model".
    pub family: &'static str,
}

/// A number stored under the metric's name: how most kinds record a figure.
pub fn number_metric(metrics: &serde_json::Value, metric: &str) -> Option<Reading> {
    metrics.get(metric)?.as_f64().map(|value| Reading {
        value,
        samples: None,
        items: None,
    })
}

/// A command a kind brings to the CLI, as `subliminal VERB KIND ...`, or
/// as `subliminal VERB ...` when the verb is the kind's alone.
pub struct Tool {
    /// The verb it sits under, e.g. `filter`.
    pub verb: &'static str,
    /// What the verb does, for `subliminal --help`.
    pub verb_about: &'static str,
    /// The command is the verb itself, not a subcommand named after the kind.
    pub standalone: bool,
    /// Its arguments, as a command named after the kind.
    pub command: fn() -> clap::Command,
    pub run: fn(&clap::ArgMatches, &dyn ToolHost) -> anyhow::Result<ExitCode>,
}

/// What `subliminal sanitize` does, whichever kind's tool sits under it.
pub const SANITIZE_ABOUT: &str = "Rewrite a dataset file so it carries less of its teacher: \
     `sanitize numbers FILE.jsonl --defense canonical`, `sanitize audit FILE.jsonl --sanitized OUT.jsonl`";

/// What the CLI lends a kind's command that the shared library cannot do
/// itself: run a sweep's stages (the stage code lives in the worker).
pub trait ToolHost {
    /// Runs a sweep on this machine into the store at `store`, as
    /// `subliminal run` does (finished stages are reused), with progress on
    /// stderr; `Ok(false)` when a stage failed. Call it outside any async
    /// runtime: it starts its own.
    /// `jobs` is how many stages run at once (`None`: one per core).
    fn run_locally(&self, sweep: &Source, store: &str, jobs: Option<usize>)
        -> anyhow::Result<bool>;
}

/// The experiment kind called `name`, if this build has it.
pub fn find(name: &str) -> Option<&'static dyn Experiment> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// The experiment kind called `name`, or an error that says which there are.
pub fn get(name: &str) -> anyhow::Result<&'static dyn Experiment> {
    find(name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown experiment kind {name:?}: this build ({}) knows {}; a newer build may know it",
            crate::CODE_VERSION,
            names()
        )
    })
}

/// The kinds' names, comma-separated, for messages.
pub fn names() -> String {
    KINDS
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The queue a stage goes to, as its experiment kind says.
pub fn queue_for(stage: &crate::stage::StageSpec) -> anyhow::Result<&'static str> {
    let experiment = get(&stage.experiment)?;
    Ok(experiment.queue(&stage.kind).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_distinct_stage_id_parts() {
        for (i, kind) in KINDS.iter().enumerate() {
            assert!(
                StageKind::parse(kind.name()).is_ok(),
                "{} is not a valid name",
                kind.name()
            );
            assert!(
                KINDS[..i].iter().all(|k| k.name() != kind.name()),
                "{} is registered twice",
                kind.name()
            );
            assert_eq!(find(kind.name()).map(|k| k.name()), Some(kind.name()));
        }
        assert!(find("no-such-kind").is_none());
        let err = get("no-such-kind").unwrap_err().to_string();
        assert!(err.contains(&names()), "{err}");
    }
}
