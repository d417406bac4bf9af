//! `subliminal watch SWEEP`: live progress bars per stage kind with ETA and
//! the latest failures, until the sweep ends; then its results table
//! (`--json`: as JSON).

use std::process::ExitCode;

use super::ClusterArgs;

#[derive(clap::Args)]
pub struct Args {
    sweep: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print the final results table as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (broker, store) = args.cluster.open().await?;
    super::status::follow(&broker, &store, &args.sweep, args.json).await
}
