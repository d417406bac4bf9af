//! `subliminal resume SWEEP`: registers a sweep again (after a cancel, a
//! failure, or a Redis that lost everything). The scheduler rebuilds its
//! queue from the store; no finished stage runs again.

use std::process::ExitCode;

use super::{activate, find_sweep, ClusterArgs};

#[derive(clap::Args)]
pub struct Args {
    sweep: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i64,
    /// Follow the sweep until it ends, then print its results.
    #[arg(long)]
    wait: bool,
    /// With --wait: print the results table as JSON.
    #[arg(long, requires = "wait")]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (broker, store) = args.cluster.open().await?;
    find_sweep(&args.sweep, &store).await?;
    activate(&broker, &store, &args.sweep, args.priority).await?;
    outln!("{}", args.sweep)?;
    if args.wait {
        return super::status::follow(&broker, &store, &args.sweep, args.json).await;
    }
    Ok(ExitCode::SUCCESS)
}
