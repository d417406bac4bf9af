//! The `noop` experiment kind: stages that sleep or compute for a set time,
//! or fine-tune a tiny random model, and write a small artifact. No data set.
//!
//! It exists to exercise the machinery rather than to learn anything: the
//! seam between generic code and kinds (this kind was added by its two
//! folders and a line in each registry), the scheduler, workers and store
//! under chaos, and benchmarks with very many tasks. Each trial is a chain of
//! `work` stages ending in an `evaluate` stage whose figure is a number in
//! [0, 1) derived from every artifact of the chain, so a result that depends
//! on a lost or reordered stage shows.
//!
//! ```toml
//! name = "noop-demo"
//! kind = "noop"
//!
//! [grid]
//! seeds = [0, 1, 2]          # one chain per seed (and per duration)
//!
//! [work]
//! stages = 2                 # work stages per trial, before its evaluate
//! duration_ms = [0, 50]      # how long each work stage takes
//! mode = "sleep"             # or "compute": hash for that long on one core;
//!                            # or "train": a LoRA fine-tune of a tiny random
//!                            # Llama, `train_steps` steps (duration_ms unused)
//! # train_steps = 100        # with mode = "train": optimiser steps of each stage
//! artifact_bytes = 64        # size of each work stage's artifact
//! fail_seeds = [2]           # these seeds' first work stage fails (failure paths)
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::stage::Queue;
use crate::experiments::{Experiment, GridLabels};
use crate::plan::{Measurement, Plan, PlanBuilder};
use crate::spec::{check_name, check_seeds, setting, Axis, Source, SpecError};
use crate::stage::{StageKind, StageSpec};

pub const EXPERIMENT: &str = "noop";
/// Bumped whenever a stage's algorithm changes, so old artifacts are not reused.
pub const STAGE_VERSION: u32 = 1;
/// The metric of every evaluation: a number in [0, 1) hashed from the chain.
pub const METRIC: &str = "value";
/// The one arm of the results table.
pub const ARM: &str = "work";
/// The largest artifact a work stage may write (16 MiB).
pub const MAX_ARTIFACT_BYTES: u64 = 16 << 20;

crate::stage_kinds! {
    /// The stages of a noop trial.
    pub enum Stage {
        Work = "work",
        Evaluate = "evaluate",
    }
}

/// How a work stage spends its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Sleeps: costs wall time, no CPU.
    Sleep,
    /// Hashes on one core for the whole duration.
    Compute,
    /// Fine-tunes LoRA adapters of a tiny random Llama for `train_steps`
    /// steps, checkpointing its progress like any training stage: the
    /// chaos harness's stand-in for a student.
    Train,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Mode::Sleep => "sleep",
            Mode::Compute => "compute",
            Mode::Train => "train",
        })
    }
}

/// The noop experiment kind.
pub struct Noop;

impl Experiment for Noop {
    experiment_basics!();

    fn queue(&self, _stage: &StageKind) -> Queue {
        Queue::Cpu
    }

    fn grid_labels(&self) -> GridLabels {
        GridLabels {
            figure: "value of the chain",
            family: "seed",
        }
    }
}

/// A checked noop sweep.
#[derive(Debug, Clone)]
pub struct NoopSweep {
    pub name: String,
    pub seeds: Axis<u64>,
    pub stages: u64,
    pub duration_ms: Axis<u64>,
    pub mode: Mode,
    pub artifact_bytes: u64,
    /// Steps of each `train` stage (0 in the other modes).
    pub train_steps: u64,
    pub fail_seeds: Vec<u64>,
}

checked_sweep!(NoopSweep);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: Spanned<String>,
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    description: Option<String>,
    grid: RawGrid,
    #[serde(default)]
    work: RawWork,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrid {
    seeds: Spanned<Axis<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWork {
    stages: Option<Spanned<u64>>,
    duration_ms: Option<Spanned<Axis<u64>>>,
    mode: Option<Mode>,
    artifact_bytes: Option<Spanned<u64>>,
    train_steps: Option<Spanned<u64>>,
    /// A list, not an axis: which seeds fail, possibly none.
    fail_seeds: Option<Spanned<Vec<u64>>>,
}

/// Reads and checks a noop sweep file.
pub fn parse(source: &Source) -> Result<NoopSweep, SpecError> {
    let raw: RawSweep = toml::from_str(&source.text).map_err(|e| source.toml_error(e))?;
    check_name(source, &raw.name)?;
    check_seeds(source, &raw.grid.seeds)?;
    let w = raw.work;
    let stages = bounded(source, "work.stages", w.stages, 1, 1..=1000)?;
    let duration_ms = setting(
        source,
        "work.duration_ms",
        w.duration_ms,
        0,
        "a duration from 0 to 3600000 ms",
        |d| *d <= 3_600_000,
    )?;
    let artifact_bytes = bounded(
        source,
        "work.artifact_bytes",
        w.artifact_bytes,
        64,
        32..=MAX_ARTIFACT_BYTES,
    )?;
    let mode = w.mode.unwrap_or(Mode::Sleep);
    let train_steps = match (&w.train_steps, mode) {
        (Some(steps), m) if m != Mode::Train => {
            return Err(source.error_at(
                steps.span(),
                "work.train_steps",
                format!("train_steps is for mode = \"train\"; this sweep's mode is \"{m}\""),
            ))
        }
        (_, Mode::Train) => bounded(source, "work.train_steps", w.train_steps, 100, 1..=100_000)?,
        _ => 0,
    };
    let fail_seeds = match w.fail_seeds {
        None => Vec::new(),
        Some(list) => {
            let seeds = raw.grid.seeds.get_ref().values();
            if let Some(stray) = list.get_ref().iter().find(|s| !seeds.contains(s)) {
                return Err(source.error_at(
                    list.span(),
                    "work.fail_seeds",
                    format!("expected seeds of grid.seeds, found {stray}"),
                ));
            }
            list.into_inner()
        }
    };
    Ok(NoopSweep {
        name: raw.name.into_inner(),
        seeds: raw.grid.seeds.into_inner(),
        stages,
        duration_ms,
        mode,
        artifact_bytes,
        train_steps,
        fail_seeds,
    })
}

/// A single number in a range, or its default.
fn bounded(
    source: &Source,
    key: &str,
    raw: Option<Spanned<u64>>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, SpecError> {
    match raw {
        None => Ok(default),
        Some(v) if range.contains(v.get_ref()) => Ok(v.into_inner()),
        Some(v) => Err(source.error_at(
            v.span(),
            key,
            format!(
                "expected a whole number from {} to {}, found {}",
                range.start(),
                range.end(),
                v.get_ref()
            ),
        )),
    }
}

/// One link of a trial's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkParams {
    pub version: u32,
    pub seed: u64,
    /// 0 for the first stage of the chain.
    pub step: u64,
    pub duration_ms: u64,
    pub mode: Mode,
    pub artifact_bytes: u64,
    /// Optimiser steps of a `train` stage; absent in the other modes (so
    /// their stage ids are what they always were).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub train_steps: u64,
    /// Fail instead of working, with an error that says so.
    pub fail: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Reads the last work stage of a chain and writes its figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateParams {
    pub version: u32,
    pub seed: u64,
}

impl NoopSweep {
    /// Expands the grid into its stage DAG and measurements.
    pub fn plan(&self) -> Plan {
        let mut plan = PlanBuilder::new(&self.name, EXPERIMENT);
        for &seed in self.seeds.values() {
            for &duration_ms in self.duration_ms.values() {
                plan.trial();
                let mut previous = None;
                for step in 0..self.stages {
                    let work = StageSpec::new(
                        EXPERIMENT,
                        Stage::Work.kind(),
                        &WorkParams {
                            version: STAGE_VERSION,
                            seed,
                            step,
                            duration_ms,
                            mode: self.mode,
                            artifact_bytes: self.artifact_bytes,
                            train_steps: self.train_steps,
                            fail: step == 0 && self.fail_seeds.contains(&seed),
                        },
                        previous.into_iter().collect(),
                    );
                    previous = Some(plan.stage(work));
                }
                let evaluate = plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Evaluate.kind(),
                    &EvaluateParams {
                        version: STAGE_VERSION,
                        seed,
                    },
                    previous.into_iter().collect(),
                ));
                let mut settings = BTreeMap::new();
                if self.duration_ms.varies() {
                    settings.insert("work.duration_ms".to_owned(), duration_ms.to_string());
                }
                plan.measure(Measurement::new(
                    ARM.to_owned(),
                    0,
                    settings,
                    seed,
                    evaluate,
                    METRIC.to_owned(),
                ));
            }
        }
        plan.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(work: &str) -> Result<NoopSweep, SpecError> {
        let text = format!("name = \"n\"\nkind = \"noop\"\n[grid]\nseeds = [0, 1]\n[work]\n{work}");
        parse(&Source::new("noop.toml", text))
    }

    #[test]
    fn a_chain_per_seed_and_duration_ending_in_one_measurement() {
        let s = sweep("stages = 3\nduration_ms = [0, 5]\nfail_seeds = [1]").unwrap();
        let plan = s.plan();
        assert_eq!(plan.trials, 4);
        let counts = plan.count_by_kind();
        assert_eq!(counts[&Stage::Work.kind()], 12);
        assert_eq!(counts[&Stage::Evaluate.kind()], 4);
        assert_eq!(plan.measurements.len(), 4);
        let failing: Vec<WorkParams> = plan
            .stages
            .iter()
            .filter(|s| s.kind == Stage::Work.kind())
            .map(|s| s.params().unwrap())
            .filter(|p: &WorkParams| p.fail)
            .collect();
        assert_eq!(failing.len(), 2, "seed 1's first stage, for each duration");
        assert!(failing.iter().all(|p| p.seed == 1 && p.step == 0));
    }

    #[test]
    fn bad_settings_are_refused_with_their_key() {
        for (work, key) in [
            ("stages = 0", "work.stages"),
            ("artifact_bytes = 1", "work.artifact_bytes"),
            ("duration_ms = 3600001", "work.duration_ms"),
            ("fail_seeds = [7]", "work.fail_seeds"),
        ] {
            match sweep(work) {
                Err(SpecError::Invalid { key: k, line, .. }) => {
                    assert_eq!(k.as_deref(), Some(key), "{work}");
                    assert_eq!(line, 6, "{work}");
                }
                other => panic!("{work}: {other:?}"),
            }
        }
        assert!(sweep("mode = \"spin\"").is_err());
        assert!(sweep("train_steps = 5").is_err(), "train_steps without mode = train");
        assert!(sweep("mode = \"train\"\ntrain_steps = 0").is_err());
        let train = sweep("mode = \"train\"").unwrap();
        assert_eq!(train.train_steps, 100);
        let none = sweep("fail_seeds = []").unwrap();
        assert!(none.fail_seeds.is_empty());
    }
}
