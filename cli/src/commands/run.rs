//! `subliminal run SWEEP.toml`: the whole sweep on this machine, in-process,
//! no services. Finished stages in the store are reused; the results table
//! comes at the end.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use subliminal_shared::spec;
use subliminal_shared::store::{keys, Store};
use subliminal_worker::device::{describe, DeviceChoice};
use subliminal_worker::local::LocalRunner;
use subliminal_worker::stages::StageEnv;

use super::DEFAULT_STORE;

#[derive(clap::Args)]
pub struct Args {
    /// The sweep file.
    sweep: PathBuf,
    #[command(flatten)]
    settings: Settings,
    /// Print the results table as JSON (as `results --json` does).
    #[arg(long)]
    json: bool,
    /// Log one MLflow run per trial to the tracking server at this URL when the sweep ends.
    #[arg(long, value_name = "URL")]
    track: Option<String>,
}

/// How a sweep runs on this machine.
#[derive(clap::Args)]
pub struct Settings {
    /// Store for artifacts: a folder, file:///path or s3://bucket/prefix.
    #[arg(long, env = "SUBLIMINAL_STORE", default_value = DEFAULT_STORE)]
    store: String,
    /// Stages to run at once (default: one per CPU core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// The most models one batched job trains together (stages of one shape
    /// and schedule, such as MNIST teachers or students of every seed). A
    /// group never changes a result, only the speed. Default: 1 on CPU (where
    /// a group measured no faster: the work is matmul-bound either way), 64 on CUDA.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    ensemble: Option<u16>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Folder with the datasets the set-up unpacked (MNIST under mnist/).
    #[arg(long, env = "SUBLIMINAL_DATA", default_value = "data")]
    data: PathBuf,
    /// Never draw progress bars (log lines instead).
    #[arg(long)]
    no_progress: bool,
    /// How often a training stage saves a progress checkpoint to the store,
    /// from which `run` again (after a crash) resumes it.
    #[arg(long, default_value_t = subliminal_worker::progress::DEFAULT_EVERY.as_secs_f64(),
          value_parser = seconds)]
    checkpoint_seconds: f64,
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s >= 0.0 && s.is_finite() => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds, 0 or more")),
    }
}

impl Settings {
    /// Every setting at its default (or its environment variable), with this store.
    pub fn defaults(store: &str) -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: Settings,
        }
        let mut settings = <Defaults as clap::Parser>::parse_from(["subliminal"]).settings;
        settings.store = store.to_owned();
        settings
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let source = spec::Source::read(&args.sweep)?;
    let tracker = args
        .track
        .as_deref()
        .map(subliminal_results::tracking::Tracker::new)
        .transpose()?;
    let ran = execute(&source, &args.settings).await?;
    let outcomes = subliminal_results::collect(&ran.store, &ran.plan).await?;
    let mut table = subliminal_results::build(&ran.plan, &outcomes);
    table.families = crate::families::families(&ran.plan, &args.settings.data);
    if args.json {
        outln!("{}", table.to_json()?)?;
    } else {
        outln!("{}", table.to_table())?;
    }
    if let Some(tracker) = &tracker {
        let logged = tracker.log_sweep(&ran.plan, &outcomes).await?;
        eprintln!(
            "tracked in MLflow: {} new run(s), {} updated",
            logged.created, logged.updated
        );
    }
    Ok(if ran.finished {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs a sweep on this machine, as `subliminal run` does but printing no
/// table; whether every stage finished.
pub async fn run_source(source: &spec::Source, settings: Settings) -> anyhow::Result<bool> {
    Ok(execute(source, &settings).await?.finished)
}

/// What running a sweep left.
struct Ran {
    store: Store,
    plan: subliminal_shared::plan::Plan,
    finished: bool,
}

async fn execute(source: &spec::Source, settings: &Settings) -> anyhow::Result<Ran> {
    let sweep = subliminal_shared::sweep::parse(source)?;
    let plan = sweep.plan();
    let store = Store::open(&settings.store)?;
    super::check_external(&store, &plan).await?;
    let device = settings.device.resolve()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = settings.jobs.unwrap_or(cores).max(1);
    if device == tch::Device::Cpu {
        // Stages share the cores: more threads per stage than cores per job only contend.
        tch::set_num_threads((cores / jobs).max(1) as i32);
    }
    store
        .put(&keys::sweep_file(sweep.name()), source.text.clone().into())
        .await
        .context("cannot record the sweep in the store")?;
    let ensemble = settings
        .ensemble
        .map_or_else(|| default_ensemble(device), usize::from);
    eprintln!(
        "sweep {} ({}): {} trials, {} stages; store {}, device {}, {} job(s), groups of up to {}",
        sweep.name(),
        sweep.experiment().name(),
        plan.trials,
        plan.stages.len(),
        store.location(),
        describe(device),
        jobs,
        ensemble
    );
    let runner = LocalRunner {
        store: store.clone(),
        env: Arc::new(StageEnv {
            checkpoint_every: std::time::Duration::from_secs_f64(settings.checkpoint_seconds),
            ..StageEnv::new(device, settings.data.clone())
        }),
        jobs,
        ensemble,
        progress: !settings.no_progress && std::io::stderr().is_terminal(),
    };
    let report = runner.run(&plan).await?;
    eprintln!(
        "computed {} stage(s), reused {}, failed {}, blocked {} in {:.1}s",
        report.computed.len(),
        report.reused,
        report.failed.len(),
        report.blocked,
        report.elapsed.as_secs_f64()
    );
    for (id, kind, error) in &report.failed {
        eprintln!("failed: {kind} {}: {error}", id.short());
    }
    Ok(Ran {
        store,
        plan,
        finished: report.failed.is_empty(),
    })
}

/// Groups on a GPU amortise kernel launches over many models. On CPU the
/// paper sweep measured slower in groups of 8 (192 s) than stage by stage
/// (156 s, 2 cores): the matmuls already keep the cores busy, and a group
/// only adds copies and idle tails.
fn default_ensemble(device: tch::Device) -> usize {
    match device {
        tch::Device::Cpu => 1,
        _ => 64,
    }
}
