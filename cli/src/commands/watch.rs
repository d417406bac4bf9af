//! `subliminal watch SWEEP`: live progress bars per stage kind with ETA and
//! the latest failures, until the sweep ends; then its results table.

use std::process::ExitCode;

use subliminal_shared::store::Store;

use super::RedisArgs;

#[derive(clap::Args)]
pub struct Args {
    sweep: String,
    #[command(flatten)]
    redis: RedisArgs,
    #[arg(long, env = "SUBLIMINAL_STORE")]
    store: String,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.store)?;
    let broker = args.redis.connect().await?;
    super::status::follow(&broker, &store, &args.sweep).await
}
