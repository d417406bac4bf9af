//! `subliminal results SWEEP`: the results table again, as CSV or JSON for
//! other tools; the teacher × student transfer grid as a picture; each
//! tested row's shift against control with its interval as another.

use std::path::PathBuf;
use std::process::ExitCode;

use subliminal_shared::results;
use subliminal_shared::store::Store;

use super::{find_sweep, DEFAULT_STORE};

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// The sweep file, or the name of a sweep already run in the store.
    sweep: String,
    #[arg(long, env = "SUBLIMINAL_STORE", default_value = DEFAULT_STORE)]
    store: String,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Draw the results to a .png or .svg file: curves with 95% bands when a
    /// swept setting is numeric, else the transfer grid (teacher × student:
    /// inits, or models).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Draw every tested row's shift against control, with its 95% interval, to a .png or .svg file.
    #[arg(long)]
    shifts: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.store)?;
    let sweep = find_sweep(&args.sweep, &store).await?;
    let plan = sweep.plan();
    let outcomes = results::collect(&store, &plan).await?;
    let table = results::build(&plan, &outcomes);
    match args.format {
        Format::Table => println!("{}", table.to_table()),
        Format::Csv => print!("{}", table.to_csv()?),
        Format::Json => println!("{}", table.to_json()?),
    }
    if let Some(path) = args.plot {
        match results::curves(&table) {
            Some(curves) => {
                crate::curve_plot::curves(&curves, sweep.name(), &path)?;
                eprintln!(
                    "wrote {} ({} vs {})",
                    path.display(),
                    curves.metric,
                    curves.x
                );
            }
            None => {
                let cells = results::transfer_cells(&plan, &outcomes);
                let labels = sweep.experiment().grid_labels();
                crate::plot::transfer_grid(&cells, sweep.name(), &labels, &path)?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    if let Some(path) = args.shifts {
        crate::shift_plot::shifts(&table, &path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
