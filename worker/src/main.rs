//! `subliminal-worker`: the GPU worker daemon.
//!
//! Distributed mode (leasing stages from Redis) builds on the same stage
//! executor as `subliminal run`; until it lands, this binary runs one stage
//! from the store by id, which is what the daemon does per task.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use subliminal_shared::stage::StageSpec;
use subliminal_shared::store::Store;
use subliminal_worker::device::DeviceChoice;
use subliminal_worker::execute::{execute, Completion};
use subliminal_worker::stages::StageEnv;

#[derive(Parser)]
#[command(
    name = "subliminal-worker",
    version,
    about = "Runs subliminal stages against a store"
)]
struct Args {
    /// A stage as JSON (what `subliminal validate --stages` prints, one line each).
    #[arg(long)]
    stage_json: String,
    /// Store location: a folder, file:///path or s3://bucket/prefix.
    #[arg(long, env = "SUBLIMINAL_STORE", default_value = "runs")]
    store: String,
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Folder with the datasets the set-up unpacked (MNIST under mnist/).
    #[arg(long, env = "SUBLIMINAL_DATA", default_value = "data")]
    data: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let spec: StageSpec = serde_json::from_str(&args.stage_json)
        .map_err(|e| anyhow::anyhow!("--stage-json is not a stage: {e}"))?;
    let store = Store::open(&args.store)?;
    let env = Arc::new(StageEnv {
        device: args.device.resolve()?,
        data_dir: args.data,
    });
    match execute(&store, &spec, &env, Arc::new(|_| {})).await? {
        Completion::Reused => println!("{} {} was already done", spec.kind, spec.id),
        Completion::Computed { manifest, .. } => {
            println!(
                "{} {} done in {:.1}s",
                spec.kind, spec.id, manifest.duration_s
            )
        }
    }
    Ok(())
}
