//! `subliminal-scheduler`: turns sweeps into work and decides what may run.
//!
//! It never links libtorch: everything it needs (specs, plans, the store and
//! manifests) is in `subliminal-shared`. State comes from the store alone,
//! so a scheduler can be restarted at any time and rebuild what it knows.
//!
//! `ready SWEEP` prints, one JSON line each, the stages whose inputs are done
//! and which are not done themselves: the stages a scheduler enqueues next.
//! `subliminal-worker --stage-json` runs such a line.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use subliminal_shared::manifest::{inspect, StageState};
use subliminal_shared::spec::{self, SpecError};
use subliminal_shared::store::Store;

#[derive(Parser)]
#[command(
    name = "subliminal-scheduler",
    version,
    about = "Expands sweeps and schedules their stages"
)]
struct Args {
    /// Store location: a folder, file:///path or s3://bucket/prefix.
    #[arg(long, env = "SUBLIMINAL_STORE", default_value = "runs", global = true)]
    store: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the stages of a sweep that can start now, one JSON line each.
    Ready {
        /// The sweep file.
        sweep: PathBuf,
    },
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
            if e.downcast_ref::<SpecError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Ready { sweep } => {
            let plan = spec::load_sweep(&sweep)?.plan();
            let store = Store::open(&args.store)?;
            let mut done = HashSet::new();
            for stage in &plan.stages {
                if let StageState::Done(_) = inspect(&store, stage.id).await? {
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
    }
}
