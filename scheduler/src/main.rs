//! `subliminal-scheduler`: turns sweeps into work and advances their DAGs.
//!
//! It never links libtorch: everything it needs (specs, plans, the store,
//! the broker) is in `subliminal-shared`. Its state comes from the store and
//! Redis, so it can be restarted at any time; several may run, one leads.
//!
//!   subliminal-scheduler --redis redis://host:6379 --store s3://bucket/prefix
//!   subliminal-scheduler ready SWEEP.toml --store ...   # the stages that may start now

mod progress;
mod scheduler;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use subliminal_broker::Broker;
use subliminal_shared::manifest::{inspect, StageState};
use subliminal_shared::store::Store;
use subliminal_shared::sweep;

#[derive(Parser)]
#[command(
    name = "subliminal-scheduler",
    version,
    about = "Expands sweeps and schedules their stages"
)]
struct Args {
    /// Store: a folder, file:///path or s3://bucket/prefix.
    #[arg(long, env = "SUBLIMINAL_STORE", default_value = "runs", global = true)]
    store: String,
    /// Redis URL: redis://[:password@]host:port[/db], or rediss:// for TLS.
    #[arg(long, env = "SUBLIMINAL_REDIS", hide_env_values = true, global = true)]
    redis: Option<String>,
    /// Key prefix in Redis.
    #[arg(long, default_value = "sl", global = true)]
    prefix: String,
    /// Attempts before a task is dead-lettered.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// How often the scheduling loop runs.
    #[arg(long, default_value_t = 200)]
    tick_ms: u64,
    /// A worker whose last heartbeat is older than this counts as stale in
    /// the metrics (a dead worker's record stays in Redis until then).
    #[arg(long, default_value_t = 60.0)]
    stale_worker_seconds: f64,
    /// Where to serve Prometheus metrics (/metrics); "off" for none.
    #[arg(long, default_value = "0.0.0.0:9463")]
    metrics_addr: String,
    /// human or json (one object per line).
    #[arg(long, value_enum, default_value = "human", global = true)]
    log_format: subliminal_shared::logging::LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the stages of a sweep that can start now, one JSON line each.
    Ready {
        /// The sweep file.
        sweep: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    subliminal_shared::logging::init(args.log_format);
    subliminal_shared::process::run_main(async move { run(args).await.map(|()| ExitCode::SUCCESS) })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let store = Store::open(&args.store)?;
    match args.command {
        Some(Command::Ready { sweep }) => ready(&store, &sweep).await,
        None => {
            let url = args.redis.ok_or_else(|| {
                anyhow::anyhow!("--redis URL (or SUBLIMINAL_REDIS) is required to schedule")
            })?;
            subliminal_shared::metrics::serve_flag(&args.metrics_addr).await?;
            let stale = Duration::try_from_secs_f64(args.stale_worker_seconds).map_err(|_| {
                anyhow::anyhow!(
                    "--stale-worker-seconds {} is not a duration: expected seconds, at least 0",
                    args.stale_worker_seconds
                )
            })?;
            serve(
                url,
                args.prefix,
                store,
                args.max_attempts,
                Duration::from_millis(args.tick_ms),
                stale,
            )
            .await
        }
    }
}

async fn serve(
    url: String,
    prefix: String,
    store: Store,
    max_attempts: u32,
    tick: Duration,
    stale_worker: Duration,
) -> anyhow::Result<()> {
    let me = format!(
        "{}-{}",
        subliminal_shared::manifest::hostname(),
        std::process::id()
    );
    let broker = Broker::connect_patiently(&url, &prefix).await;
    tracing::info!(scheduler = %me, "scheduler started");
    let mut scheduler = scheduler::Scheduler::new(broker, store, me, max_attempts, tick);
    scheduler.stale_worker = stale_worker;
    let mut trouble = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            result = scheduler.tick() => match result {
                Ok(()) => {
                    trouble = Duration::from_millis(200);
                    tokio::time::sleep(tick).await;
                }
                Err(e) => {
                    subliminal_shared::metrics::metrics().redis_errors.inc();
                    tracing::warn!("scheduling pass failed: {e:#}; retrying in {trouble:?}");
                    tokio::time::sleep(trouble).await;
                    trouble = (trouble * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

async fn ready(store: &Store, sweep: &Path) -> anyhow::Result<()> {
    let plan = sweep::load(sweep)?.plan();
    let mut done = HashSet::new();
    for stage in &plan.stages {
        if let StageState::Done(_) = inspect(store, stage.id).await? {
            done.insert(stage.id);
        }
    }
    let mut ready = 0;
    for stage in plan.ready(&done) {
        println!("{}", serde_json::to_string(stage)?);
        ready += 1;
    }
    eprintln!(
        "{}: {} of {} stages done, {ready} ready",
        plan.sweep,
        done.len(),
        plan.stages.len()
    );
    Ok(())
}
