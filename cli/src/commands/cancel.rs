//! `subliminal cancel SWEEP`: queued tasks of the sweep are dropped; running
//! ones stop at their next heartbeat. Finished stages stay in the store.

use std::process::ExitCode;

use super::{record_status, ClusterArgs};

#[derive(clap::Args)]
pub struct Args {
    sweep: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (broker, store) = args.cluster.open().await?;
    anyhow::ensure!(
        broker.sweep_state(&args.sweep).await?.is_some(),
        "no sweep {:?} is registered in Redis; `subliminal status` lists the active ones",
        args.sweep
    );
    record_status(&store, &args.sweep, "cancelled", 0).await?;
    let (dropped, flagged) = broker.cancel_sweep(&args.sweep).await?;
    outln!("cancelled sweep {}: {dropped} queued task(s) dropped, {flagged} running task(s) told to stop", args.sweep)?;
    Ok(ExitCode::SUCCESS)
}
