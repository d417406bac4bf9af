//! `subliminal judge`: a judge model scores or classifies the rows of any
//! chat dataset, and says what it is worth.
//!
//! - `subliminal judge --list` names the built-in judges;
//!   `subliminal judge --show NAME` prints one in full, exactly as a worker asks it.
//! - `subliminal judge NAME FILE.jsonl [--model M] [--trait owl] [--out OUT.jsonl]`
//!   judges every row's last user turn and last assistant turn, prints a
//!   summary and writes each row with its judgement.
//! - `subliminal judge NAME --agreement [--model M]` runs the judge on its
//!   hand-labelled set and prints how often it agrees, so a user knows what
//!   a small judge model is worth before trusting its figures.
//!
//! Judgements are cached per (judge, model, prompt, completion), so a
//! second run, or a file with a few new rows, costs only the new rows.
//! Bad input (an unknown judge, a malformed judge file or dataset) is
//! refused with its file and line, and exit code 2, before a model loads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use subliminal_shared::chat::{read_jsonl_file, Row};
use subliminal_shared::judge::{self, agreement, Judge, Judgement};
use subliminal_shared::spec::SpecError;
use subliminal_worker::device::DeviceChoice;
use subliminal_worker::judging::{judge_items, Item, JudgementCache};
use subliminal_worker::llm::{instantiate, load};

#[derive(clap::Args)]
pub struct Args {
    /// A built-in judge (alignment, coherence, mentions-trait) or a judge file (NAME.toml).
    #[arg(required_unless_present = "list")]
    judge: Option<String>,
    /// A chat JSONL file whose rows the judge scores.
    #[arg(conflicts_with_all = ["show", "agreement"])]
    file: Option<PathBuf>,
    /// Print the judge's file in full.
    #[arg(long)]
    show: bool,
    /// List the built-in judges.
    #[arg(long, conflicts_with_all = ["show", "agreement"])]
    list: bool,
    /// Run the judge on its hand-labelled set and print its agreement.
    #[arg(long)]
    agreement: bool,
    /// The judge model: a name under the data folder, a GGUF file or a Hugging Face folder.
    #[arg(long, default_value = subliminal_shared::llm::DEFAULT_MODEL)]
    model: String,
    /// The trait a judge asks about ({trait} in its template), e.g. owl.
    #[arg(long = "trait")]
    trait_word: Option<String>,
    /// Write every row with its judgement here (JSONL).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Folder with the models the set-up fetched.
    #[arg(long, env = "SUBLIMINAL_DATA", default_value = "data")]
    data: PathBuf,
    /// Keep no judgements on disk (every row goes to the model).
    #[arg(long)]
    no_cache: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.list {
        for name in judge::builtin_names() {
            let (source, n) = Judge::source(name)?;
            let (_, description) = Judge::parse(&source, &n)?;
            println!("{name:16} {description}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let name = args.judge.clone().context("name a judge")?;
    let (source, judge_name) = match Judge::source(&name) {
        Ok(found) => found,
        Err(e) => return refuse(e),
    };
    let judge = match Judge::parse(&source, &judge_name) {
        Ok((judge, _)) => judge,
        Err(e) => return refuse(e.into()),
    };
    if args.show {
        print!("{}", source.text);
        return Ok(ExitCode::SUCCESS);
    }
    if args.agreement {
        return measure_agreement(&args, &judge, &judge_name).await;
    }
    let Some(file) = &args.file else {
        return refuse(anyhow::anyhow!(
            "give a chat JSONL file to judge, or --show, --agreement or --list"
        ));
    };
    let rows = match read_jsonl_file(file) {
        Ok(rows) => rows,
        Err(e) => return refuse(e),
    };
    if judge.uses_trait() && args.trait_word.is_none() {
        return refuse(anyhow::anyhow!(
            "judge {judge_name} asks about a trait ({{trait}} in its template): name it with --trait owl"
        ));
    }
    let items: Vec<Item> = rows
        .iter()
        .map(|r| Item {
            prompt: r.prompt().unwrap_or(""),
            completion: r.completion().unwrap_or(""),
            trait_word: args.trait_word.as_deref(),
        })
        .collect();
    let judgements = run_judge(&args, &judge, &items).await?;
    print_summary(&judge, &judgements, file);
    if let Some(out) = &args.out {
        write_judged(out, &rows, &judge_name, &judgements)?;
        eprintln!(
            "wrote {} rows with their judgements to {}",
            rows.len(),
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Bad input: the message and exit code 2, nothing run.
fn refuse(e: anyhow::Error) -> anyhow::Result<ExitCode> {
    if e.downcast_ref::<SpecError>().is_some() {
        return Err(e);
    }
    eprintln!("error: {e:#}");
    Ok(ExitCode::from(2))
}

/// Loads the judge model and judges `items` with a progress bar.
async fn run_judge(
    args: &Args,
    judge: &Judge,
    items: &[Item<'_>],
) -> anyhow::Result<Vec<Judgement>> {
    let device = args.device.resolve()?;
    let path = load::model_path(&args.data, &args.model)?;
    let checkpoint = load::load_cached(&path)
        .with_context(|| format!("cannot load judge model {:?}", args.model))?;
    let (_vs, model) = instantiate(&checkpoint, device, tch::Kind::Float)?;
    let cache = if args.no_cache {
        JudgementCache::at(None)
    } else {
        JudgementCache::default_location()
    };
    let bar = ProgressBar::new(items.len() as u64).with_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} [{elapsed} < {eta}]")
            .expect("a valid template"),
    );
    bar.set_message(format!("judge {}", judge.name));
    let model_id = path.display().to_string();
    let (judgements, stats) = judge_items(
        judge,
        &model,
        &checkpoint.tokenizer,
        &model_id,
        items,
        &cache,
        &|| false,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    eprintln!(
        "judged {} rows ({} from the cache) in {:.1} s with {}",
        items.len(),
        stats.cached,
        stats.seconds,
        args.model
    );
    Ok(judgements)
}

fn print_summary(judge: &Judge, judgements: &[Judgement], file: &Path) {
    let values: Vec<f64> = judgements.iter().filter_map(|j| j.value).collect();
    let refused = judgements.len() - values.len();
    let (high, low) = judge.sides();
    let above = values.iter().filter(|v| **v >= judge.threshold).count();
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    println!(
        "judge {} on {}: {} rows",
        judge.name,
        file.display(),
        judgements.len()
    );
    println!(
        "  mean {:.3}; {high} (≥ {}) {above}, {low} {}, refused {refused}",
        mean,
        judge.threshold,
        values.len() - above
    );
}

fn write_judged(
    out: &Path,
    rows: &[Row],
    name: &str,
    judgements: &[Judgement],
) -> anyhow::Result<()> {
    let mut text = Vec::new();
    for (row, j) in rows.iter().zip(judgements) {
        let mut value = serde_json::to_value(row)?;
        value["judge"] = serde_json::json!({ "name": name, "value": j.value, "mass": j.mass });
        serde_json::to_writer(&mut text, &value)?;
        text.push(b'\n');
    }
    let mut f =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    f.write_all(&text)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

async fn measure_agreement(args: &Args, judge: &Judge, name: &str) -> anyhow::Result<ExitCode> {
    let labelled = match judge::labelled_rows(judge, name) {
        Ok(rows) => rows,
        Err(e) => return refuse(e),
    };
    let items: Vec<Item> = labelled
        .iter()
        .map(|r| Item {
            prompt: &r.prompt,
            completion: &r.completion,
            trait_word: r.trait_word.as_deref(),
        })
        .collect();
    let judgements = run_judge(args, judge, &items).await?;
    let (high, _) = judge.sides();
    let pairs: Vec<(Judgement, bool)> = judgements
        .iter()
        .zip(&labelled)
        .map(|(j, r)| (*j, r.label == high))
        .collect();
    let a = agreement(judge, &pairs);
    println!(
        "judge {name} with model {}: {} hand-labelled rows ({} {high})",
        args.model, a.rows, a.positives
    );
    println!(
        "  accuracy {:.3} (threshold {}), Cohen's kappa {:.3}, AUC {}, refused {}",
        a.accuracy,
        judge.threshold,
        a.kappa,
        a.auc.map_or("-".to_owned(), |v| format!("{v:.3}")),
        a.refused
    );
    println!(
        "  {}",
        if a.kappa < 0.4 {
            "weak: do not trust this judge's figures on this model; point the judge at a larger model (--model)"
        } else {
            "usable on this model, within the accuracy above"
        }
    );
    Ok(ExitCode::SUCCESS)
}
