//! `subliminal validate SWEEP.toml`: checks a sweep and prints its expansion
//! (trials, stages per kind, how many are already done in the store) without
//! running anything.

use std::path::PathBuf;
use std::process::ExitCode;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use subliminal_shared::manifest::{inspect, StageState};
use subliminal_shared::store::Store;
use subliminal_shared::sweep;

use super::DEFAULT_STORE;

#[derive(clap::Args)]
pub struct Args {
    /// The sweep file.
    sweep: PathBuf,
    /// Store to count finished stages in: a folder, file:///path or s3://bucket/prefix.
    #[arg(long, env = "SUBLIMINAL_STORE", default_value = DEFAULT_STORE)]
    store: String,
    /// Print every stage as one JSON line instead of the summary.
    #[arg(long)]
    stages: bool,
    /// Print the summary as JSON.
    #[arg(long, conflicts_with = "stages")]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sweep = sweep::load(&args.sweep)?;
    let plan = sweep.plan();
    if args.stages {
        for stage in &plan.stages {
            outln!("{}", serde_json::to_string(stage)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Validating touches nothing: a store folder that does not exist yet has nothing done.
    let local_and_missing =
        !args.store.contains("://") && !std::path::Path::new(&args.store).exists();
    let store = if local_and_missing {
        None
    } else {
        Some(Store::open(&args.store)?)
    };
    let kinds = plan.kinds();
    let mut rows = vec![(0usize, 0usize, 0usize); kinds.len()];
    for stage in &plan.stages {
        let at = kinds
            .iter()
            .position(|k| *k == stage.kind)
            .expect("a plan lists the kind of each of its stages");
        let row = &mut rows[at];
        row.0 += 1;
        let Some(store) = &store else { continue };
        match inspect(store, stage.id).await? {
            StageState::Done(_) => row.1 += 1,
            StageState::Corrupt(_) => row.2 += 1,
            StageState::Missing => {}
        }
    }
    if args.json {
        let kinds: Vec<serde_json::Value> = kinds
            .iter()
            .zip(&rows)
            .map(|(kind, (n, d, c))| {
                serde_json::json!({"kind": kind.as_str(), "stages": n, "done": d, "corrupt": c, "to_run": n - d})
            })
            .collect();
        let summary = serde_json::json!({
            "sweep": sweep.name(),
            "experiment": sweep.experiment().name(),
            "trials": plan.trials,
            "stages": plan.stages.len(),
            "done": rows.iter().map(|r| r.1).sum::<usize>(),
            "store": args.store,
            "kinds": kinds,
        });
        outln!("{}", serde_json::to_string_pretty(&summary)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["stage kind", "stages", "done", "corrupt", "to run"]);
    let (mut total, mut done) = (0, 0);
    for (kind, (n, d, c)) in kinds.iter().zip(&rows) {
        table.add_row([
            kind.to_string(),
            n.to_string(),
            d.to_string(),
            c.to_string(),
            (n - d).to_string(),
        ]);
        total += n;
        done += d;
    }
    outln!(
        "{}: sweep {:?} ({}) is valid: {} trials, {} stages, {} done in store {}",
        args.sweep.display(),
        sweep.name(),
        sweep.experiment().name(),
        plan.trials,
        total,
        done,
        args.store
    )?;
    outln!("{table}")?;
    Ok(ExitCode::SUCCESS)
}
