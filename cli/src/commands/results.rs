//! `subliminal results SWEEP`: the results table again, as CSV, JSON or
//! Parquet for other tools; the teacher × student transfer grid (or curves)
//! as a picture; each tested row's shift against control with its interval
//! as another; and, with `--track`, every trial logged to an MLflow server.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use subliminal_results::{Outcomes, ResultsTable};
use subliminal_shared::plan::Plan;
use subliminal_shared::store::Store;
use subliminal_shared::sweep::Sweep;

use super::{find_sweep, DEFAULT_STORE};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
    /// One row per measurement (every setting a column); needs --out, or a pipe.
    Parquet,
}

#[derive(clap::Args)]
pub struct Args {
    /// The sweep file, or the name of a sweep already run in the store.
    sweep: String,
    #[arg(long, env = "SUBLIMINAL_STORE", default_value = DEFAULT_STORE)]
    store: String,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Write the table here instead of to standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Draw the results to a .png or .svg file: curves with 95% bands when a
    /// swept setting is numeric, else the transfer grid (teacher × student:
    /// inits, or models).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Draw every tested row's shift against control, with its 95% interval, to a .png or .svg file.
    #[arg(long)]
    shifts: Option<PathBuf>,
    /// Log one MLflow run per trial to the tracking server at this URL
    /// (http://HOST:PORT); a second call updates the same runs.
    #[arg(long, value_name = "URL")]
    track: Option<String>,
    /// Folder the set-up unpacked models into: where the default model is,
    /// to name its family.
    #[arg(long, env = "SUBLIMINAL_DATA", default_value = "data")]
    data: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.store)?;
    let sweep = find_sweep(&args.sweep, &store).await?;
    let plan = sweep.plan();
    let outcomes = subliminal_results::collect(&store, &plan).await?;
    let mut table = subliminal_results::build(&plan, &outcomes);
    table.families = crate::families::families(&plan, &args.data);
    let format = if args.json { Format::Json } else { args.format };
    let bytes = match format {
        Format::Table => format!("{}\n", table.to_table()).into_bytes(),
        Format::Csv => table.to_csv()?.into_bytes(),
        Format::Json => format!("{}\n", table.to_json()?).into_bytes(),
        Format::Parquet => {
            if args.out.is_none() && std::io::stdout().is_terminal() {
                anyhow::bail!(
                    "Parquet is binary: give a file with --out results.parquet, or pipe the output"
                );
            }
            crate::frames::measurements(&plan, &outcomes, &table.families)?
        }
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, &bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => {
            use std::io::Write as _;
            std::io::stdout().lock().write_all(&bytes)?;
        }
    }
    if let Some(path) = &args.plot {
        let what = draw_results(&sweep, &plan, &outcomes, &table, path)?;
        eprintln!("wrote {} ({what})", path.display());
    }
    if let Some(path) = &args.shifts {
        crate::shift_plot::shifts(&table, path)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(url) = &args.track {
        let logged = subliminal_results::tracking::Tracker::new(url)?
            .log_sweep(&plan, &outcomes)
            .await?;
        eprintln!(
            "tracked {} trial(s) in MLflow experiment {:?} at {url}: {} new run(s), {} updated",
            logged.created + logged.updated,
            plan.sweep,
            logged.created,
            logged.updated
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws the kind's picture of the results to `path`: curves when a swept
/// setting is numeric, else the transfer grid. Says which it drew.
pub fn draw_results(
    sweep: &Sweep,
    plan: &Plan,
    outcomes: &Outcomes,
    table: &ResultsTable,
    path: &Path,
) -> anyhow::Result<String> {
    match subliminal_results::curves(table) {
        Some(curves) => {
            crate::curve_plot::curves(&curves, sweep.name(), path)?;
            Ok(format!("{} vs {}", curves.metric, curves.x))
        }
        None => {
            let mut cells = subliminal_results::transfer_cells(plan, outcomes);
            let names: Vec<String> = cells
                .iter()
                .flat_map(|c| [c.teacher.clone(), c.student.clone()])
                .collect();
            let labels = crate::families::labels(&names, &table.families);
            for cell in &mut cells {
                cell.teacher = labels[&cell.teacher].clone();
                cell.student = labels[&cell.student].clone();
            }
            let labels = sweep.experiment().grid_labels();
            crate::plot::transfer_grid(&cells, sweep.name(), &labels, path)?;
            Ok(format!("transfer grid: {}", labels.figure))
        }
    }
}
