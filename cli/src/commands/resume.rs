//! `subliminal resume SWEEP`: registers a sweep again (after a cancel, a
//! failure, or a Redis that lost everything). The scheduler rebuilds its
//! queue from the store; no finished stage runs again.

use std::process::ExitCode;

use subliminal_shared::store::Store;

use super::{find_sweep, record_status, RedisArgs};

#[derive(clap::Args)]
pub struct Args {
    sweep: String,
    #[command(flatten)]
    redis: RedisArgs,
    #[arg(long, env = "SUBLIMINAL_STORE")]
    store: String,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i64,
    #[arg(long)]
    wait: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.store)?;
    find_sweep(&args.sweep, &store).await?;
    let broker = args.redis.connect().await?;
    record_status(&store, &args.sweep, "active", args.priority).await?;
    broker.register_sweep(&args.sweep, args.priority).await?;
    println!("{}", args.sweep);
    if args.wait {
        return super::status::follow(&broker, &store, &args.sweep).await;
    }
    Ok(ExitCode::SUCCESS)
}
