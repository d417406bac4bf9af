//! `subliminal-worker`: the worker daemon. One per GPU (or per CPU slot).
//!
//!   subliminal-worker --redis redis://host:6379 --store s3://bucket/prefix --device cuda:0 --queues gpu
//!
//! S3 credentials come from the standard AWS_* environment variables, the
//! Redis password from the URL or REDIS_PASSWORD: never from flags, never
//! logged.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use subliminal_broker::{Broker, QUEUES};
use subliminal_shared::store::Store;

use subliminal_worker::cache::DiskCache;
use subliminal_worker::daemon::Daemon;
use subliminal_worker::device::DeviceChoice;
use subliminal_worker::stages::StageEnv;

#[derive(Parser)]
#[command(
    name = "subliminal-worker",
    version,
    about = "Runs subliminal stages leased from Redis"
)]
struct Args {
    /// Redis URL: redis://[:password@]host:port[/db], or rediss:// for TLS.
    #[arg(long, env = "SUBLIMINAL_REDIS", hide_env_values = true)]
    redis: String,
    /// Store: a folder, file:///path or s3://bucket/prefix.
    #[arg(long, env = "SUBLIMINAL_STORE")]
    store: String,
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Queues to serve, in order of preference: gpu, cpu.
    #[arg(long, value_delimiter = ',', default_value = "gpu,cpu")]
    queues: Vec<String>,
    /// Folder with the datasets the set-up unpacked (MNIST under mnist/).
    #[arg(long, env = "SUBLIMINAL_DATA", default_value = "data")]
    data: PathBuf,
    /// A folder of models that tasks may name by path, besides the data
    /// folder (repeat for more). A task naming a path outside them is refused.
    #[arg(long = "models-dir", value_name = "FOLDER")]
    models_dirs: Vec<PathBuf>,
    /// Lease length; the heartbeat renews it every third of this.
    #[arg(long, default_value_t = 30.0)]
    lease_seconds: f64,
    /// On SIGTERM/SIGINT, how long the running stage may take before it is
    /// released: a training stage stops at once and saves its progress
    /// within this; any other may finish within it.
    #[arg(long, alias = "drain-seconds", default_value_t = 60.0)]
    grace_seconds: f64,
    /// How often a training stage saves a progress checkpoint to the store,
    /// from which a redelivered task resumes.
    #[arg(long, default_value_t = subliminal_worker::progress::DEFAULT_EVERY.as_secs_f64())]
    checkpoint_seconds: f64,
    /// First retry delay after a failure; doubles with each attempt.
    #[arg(long, default_value_t = 5.0)]
    retry_backoff_seconds: f64,
    /// libtorch threads on CPU (default: all cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Key prefix in Redis.
    #[arg(long, default_value = "sl")]
    prefix: String,
    /// Local cache of input artifacts (base models, datasets), by SHA-256.
    #[arg(long, env = "SUBLIMINAL_CACHE")]
    cache_dir: Option<PathBuf>,
    /// Cache budget in GB; least recently used artifacts go first. 0 turns the cache off.
    #[arg(long, default_value_t = 20.0)]
    cache_gb: f64,
    /// Where to serve Prometheus metrics (/metrics); "off" for none.
    #[arg(long, default_value = "0.0.0.0:9464")]
    metrics_addr: String,
    /// human or json (one object per line).
    #[arg(long, value_enum, default_value = "human")]
    log_format: subliminal_shared::logging::LogFormat,
    /// A name for this worker in `status` (default: host-pid).
    #[arg(long)]
    name: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    subliminal_shared::logging::init(args.log_format);
    subliminal_shared::process::run_main(async move { run(args).await.map(|()| ExitCode::SUCCESS) })
}

async fn run(args: Args) -> anyhow::Result<()> {
    for q in &args.queues {
        anyhow::ensure!(
            QUEUES.contains(&q.as_str()),
            "unknown queue {q:?}: expected {}",
            QUEUES.join(", ")
        );
    }
    anyhow::ensure!(
        args.lease_seconds >= 0.3,
        "--lease-seconds must be at least 0.3"
    );
    let device = args.device.resolve()?;
    if let Some(t) = args.threads {
        tch::set_num_threads(t.max(1));
    }
    let store = Store::open(&args.store)?;
    subliminal_shared::metrics::serve_flag(&args.metrics_addr).await?;
    if let tch::Device::Cuda(index) = device {
        tokio::spawn(subliminal_worker::gpu::watch_memory(index));
    }
    let broker = Broker::connect_patiently(&args.redis, &args.prefix).await;
    let worker_id = args.name.unwrap_or_else(|| {
        format!(
            "{}-{}",
            subliminal_shared::manifest::hostname(),
            std::process::id()
        )
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("signal received: draining");
        let _ = tx.send(true);
    });
    anyhow::ensure!(
        args.checkpoint_seconds >= 0.0 && args.checkpoint_seconds.is_finite(),
        "--checkpoint-seconds must be a number of seconds, 0 or more"
    );
    let mut env = StageEnv::new(device, args.data.clone());
    env.checkpoint_every = Duration::from_secs_f64(args.checkpoint_seconds);
    env.model_roots = Some(std::iter::once(args.data).chain(args.models_dirs).collect());
    if args.cache_gb > 0.0 {
        let dir = match args.cache_dir {
            Some(dir) => dir,
            None => std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("subliminal/artifacts"),
        };
        let cache = DiskCache::open(&dir, (args.cache_gb * 1e9) as u64)?;
        tracing::info!(
            "artifact cache: {} (up to {} GB)",
            dir.display(),
            args.cache_gb
        );
        env.cache = Some(Arc::new(cache));
    }
    let daemon = Daemon {
        broker,
        store,
        env,
        queues: args.queues,
        worker_id,
        lease: Duration::from_secs_f64(args.lease_seconds),
        grace: Duration::from_secs_f64(args.grace_seconds),
        retry_backoff: Duration::from_secs_f64(args.retry_backoff_seconds),
    };
    daemon.serve(rx).await
}
