//! `subliminal`: run subliminal-learning sweeps and read their results.
//!
//! `run` executes a whole sweep on this machine with no services; `validate`
//! checks a sweep file and shows what it expands to; `results` prints the
//! table again, as CSV, JSON or Parquet, draws the transfer grid, or logs the
//! trials to MLflow; `report` writes one HTML page of it all; `export` the
//! evaluations' answers as Parquet. Every command that prints a table takes
//! `--json`. Experiment kinds
//! add commands of their own (`filter numbers FILE` runs that experiment's
//! data filter on any dataset file; see `commands::tools`).
//!
//! Exit codes: 0 success, 1 a stage failed or the store could not be used,
//! 2 the sweep file (or a command-line argument) is invalid.

#[macro_use]
mod output;
mod commands;
mod curve_plot;
mod families;
mod frames;
mod plot;
mod shift_plot;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Subcommand};
use subliminal_shared::logging::LogFormat;

#[derive(clap::Parser)]
#[command(
    name = "subliminal",
    version,
    about = "Subliminal-learning sweeps, from one machine to a cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// human or json (one object per line).
    #[arg(long, value_enum, default_value = "human", global = true)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run a sweep on this machine, in-process, with no services.
    Run(commands::run::Args),
    /// Check a sweep file and print what it expands to, without running it.
    Validate(commands::validate::Args),
    /// Print a sweep's results table, export it, or plot its transfer grid.
    Results(commands::results::Args),
    /// Validate a sweep, record it in the store and hand it to the cluster's scheduler.
    Submit(commands::submit::Args),
    /// Where a sweep stands (queued, running, done, dead per stage kind), and the workers.
    Status(commands::status::Args),
    /// Cancel a sweep: queued tasks are dropped, running ones stop at their next heartbeat.
    Cancel(commands::cancel::Args),
    /// Register a sweep again; the scheduler rebuilds its queue from the store.
    Resume(commands::resume::Args),
    /// Dead-lettered tasks: list them, requeue them.
    Dlq(commands::dlq::Args),
    /// Live progress of a sweep per stage kind, with ETA and the latest failures.
    Watch(commands::watch::Args),
    /// Files in the store that sweeps name by key: `store put FILE`, `store get KEY`.
    Store(commands::store::Args),
    /// One self-contained HTML page for a sweep: results, plots, stages, data samples.
    Report(commands::report::Args),
    /// Per-answer records of a sweep's evaluations, as Parquet.
    Export(commands::export::Args),
    /// Score or classify a dataset's rows with a judge model; show a judge; measure its agreement.
    Judge(commands::judge::Args),
    /// The shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(commands::completions::Args),
}

fn main() -> ExitCode {
    let matches = commands::tools::augment(Cli::command()).get_matches();
    let log_format = matches
        .get_one::<LogFormat>("log_format")
        .copied()
        .unwrap_or_default();
    subliminal_shared::logging::init(log_format);
    if let Some(outcome) = commands::tools::run(&matches) {
        return subliminal_shared::process::run_main(async move { outcome });
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    subliminal_shared::process::run_main(async move {
        match cli.command {
            Command::Run(args) => commands::run::run(args).await,
            Command::Validate(args) => commands::validate::run(args).await,
            Command::Results(args) => commands::results::run(args).await,
            Command::Submit(args) => commands::submit::run(args).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Cancel(args) => commands::cancel::run(args).await,
            Command::Resume(args) => commands::resume::run(args).await,
            Command::Dlq(args) => commands::dlq::run(args).await,
            Command::Watch(args) => commands::watch::run(args).await,
            Command::Store(args) => commands::store::run(args).await,
            Command::Report(args) => commands::report::run(args).await,
            Command::Export(args) => commands::export::run(args).await,
            Command::Judge(args) => commands::judge::run(args).await,
            Command::Completions(args) => {
                commands::completions::run(args, commands::tools::augment(Cli::command()))
            }
        }
    })
}
