//! `subliminal export SWEEP --answers out.parquet`: every answer behind the
//! sweep's measurements as a Parquet table (question, sample, answer text,
//! whether it counted, with the measurement's arm, seed, stage and
//! settings), so that a researcher can check the answer parsing in pandas
//! or polars rather than trust the counts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use subliminal_shared::experiments;
use subliminal_shared::manifest::{inspect, StageState, VerifiedStage};
use subliminal_shared::stage::StageId;
use subliminal_shared::store::Store;

use super::{find_sweep, DEFAULT_STORE};
use crate::frames::{self, AnswersOf};

#[derive(clap::Args)]
pub struct Args {
    /// The sweep file, or the name of a sweep already run in the store.
    sweep: String,
    #[arg(long, env = "SUBLIMINAL_STORE", default_value = DEFAULT_STORE)]
    store: String,
    /// Where the per-answer Parquet file goes.
    #[arg(long, value_name = "FILE.parquet")]
    answers: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.store)?;
    let sweep = find_sweep(&args.sweep, &store).await?;
    let plan = sweep.plan();
    let experiment = experiments::get(&plan.experiment)?;
    let mut stages: HashMap<StageId, Option<VerifiedStage>> = HashMap::new();
    let mut of = Vec::new();
    let (mut pending, mut without) = (0usize, 0usize);
    for m in &plan.measurements {
        if let std::collections::hash_map::Entry::Vacant(slot) = stages.entry(m.stage) {
            slot.insert(match inspect(&store, m.stage).await? {
                StageState::Done(done) => Some(*done),
                StageState::Missing | StageState::Corrupt(_) => None,
            });
        }
        let Some(stage) = &stages[&m.stage] else {
            pending += 1;
            continue;
        };
        match experiment.answers(stage, &m.metric) {
            Some(answers) => of.push(AnswersOf {
                measurement: m,
                answers: answers.with_context(|| {
                    format!("cannot read the answers of stage {}", m.stage.short())
                })?,
            }),
            None => without += 1,
        }
    }
    anyhow::ensure!(
        !of.is_empty(),
        "sweep {} has no answers to export: {} of its {} measurements are not finished, \
         and {} are figures that are not counted from answers (kind {})",
        plan.sweep,
        pending,
        plan.measurements.len(),
        without,
        plan.experiment
    );
    let rows: usize = of.iter().map(|o| o.answers.len()).sum();
    let bytes = frames::answers(&plan, &of)?;
    std::fs::write(&args.answers, bytes)
        .with_context(|| format!("cannot write {}", args.answers.display()))?;
    eprintln!(
        "wrote {}: {rows} answers of {} measurements ({pending} not finished, {without} not counted from answers)",
        args.answers.display(),
        of.len()
    );
    Ok(ExitCode::SUCCESS)
}
