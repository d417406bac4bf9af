//! `subliminal submit SWEEP.toml`: validates a sweep (as `validate` does),
//! records it in the store, and registers it with the scheduler. Prints the
//! sweep id; `--wait` follows it to the end with progress bars.

use std::path::PathBuf;
use std::process::ExitCode;

use subliminal_shared::spec;
use subliminal_shared::store::keys;

use super::{activate, ClusterArgs};

#[derive(clap::Args)]
pub struct Args {
    /// The sweep file.
    sweep: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i64,
    /// Follow the sweep until it ends, then print its results.
    #[arg(long)]
    wait: bool,
    /// With --wait: print the results table as JSON.
    #[arg(long, requires = "wait")]
    json: bool,
    /// Have the workers log every finished evaluation to the MLflow server at
    /// this URL, one run per trial (as `results --track` does).
    #[arg(long, value_name = "URL")]
    track: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (-100..=100).contains(&args.priority),
        "--priority must be from -100 to 100"
    );
    let source = spec::Source::read(&args.sweep)?;
    let sweep = subliminal_shared::sweep::parse(&source)?;
    let plan = sweep.plan();
    let (broker, store) = args.cluster.open().await?;
    super::check_external(&store, &plan).await?;
    let id = sweep.name().to_owned();
    store
        .put(&keys::sweep_file(&id), source.text.clone().into())
        .await?;
    if let Some(url) = &args.track {
        subliminal_results::tracking::record(&store, &id, url).await?;
    }
    activate(&broker, &store, &id, args.priority).await?;
    eprintln!(
        "submitted sweep {id}: {} trials, {} stages",
        plan.trials,
        plan.stages.len()
    );
    outln!("{id}")?;
    if args.wait {
        return super::status::follow(&broker, &store, &id, args.json).await;
    }
    Ok(ExitCode::SUCCESS)
}
