//! `subliminal filter numbers FILE`: the numbers experiment's filter on any
//! dataset, outside a sweep.
//!
//! The input is JSONL in the chat fine-tuning format (the last assistant
//! message of each row is judged) or plain text, one completion per line.
//! Kept rows go to `--out` (or stdout) in the input's own format; a summary
//! of the reasons for rejection goes to stderr; `--reasons` adds one JSON
//! line per input row with its verdict.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, FromArgMatches};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use super::EXPERIMENT;
use crate::llm::dataset::{self, Row};
use crate::llm::defense::{transform, Defense};
use crate::llm::filter::{self, Reject};
use crate::experiments::Tool;

/// `filter numbers`, as the CLI shows it.
pub(super) fn filter_tool() -> Tool {
    Tool {
        verb: "filter",
        standalone: false,
        verb_about: "Run an experiment's filter on a dataset file: `filter numbers FILE.jsonl`",
        command: || {
            FilterArgs::augment_args(clap::Command::new(EXPERIMENT).about(
                "Keep completions that are nothing but numbers (the numbers experiment's rules)",
            ))
        },
        run: |matches, _| run(FilterArgs::from_arg_matches(matches)?),
    }
}

#[derive(clap::Args)]
struct FilterArgs {
    /// A .jsonl file of chat rows, or a text file with one completion per line ("-" reads stdin).
    input: PathBuf,
    /// Where kept rows go (default: stdout).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Also write every row's verdict as JSON lines, to this file (or stderr without one).
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    reasons: Option<PathBuf>,
    /// Numbers that reject a completion, comma-separated (e.g. 666,911).
    #[arg(long, value_delimiter = ',')]
    banned: Vec<u32>,
    /// Also ban the misalignment variant's two lists of numbers with negative associations.
    #[arg(long)]
    ban_negative: bool,
    /// Trim completions and tolerate varied spacing around separators,
    /// instead of the paper's exact rule.
    #[arg(long)]
    lenient: bool,
}

/// One input line: a chat row or a bare completion.
enum Line {
    Chat(Row),
    Text(String),
}

impl Line {
    fn completion(&self) -> &str {
        match self {
            Line::Chat(row) => row.completion().unwrap_or(""),
            Line::Text(text) => text,
        }
    }
}

fn read_lines(args: &FilterArgs) -> anyhow::Result<(Vec<(usize, Line)>, String)> {
    let name = args.input.display().to_string();
    let text = if name == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        std::fs::read_to_string(&args.input)
            .with_context(|| format!("cannot read {name}: expected a UTF-8 text or JSONL file"))?
    };
    let is_jsonl = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim_start().starts_with('{'));
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if is_jsonl {
            if line.trim().is_empty() {
                continue;
            }
            let mut rows = dataset::parse_jsonl(line, &format!("{name}:{}", i + 1))?;
            lines.push((i + 1, Line::Chat(rows.remove(0))));
        } else {
            lines.push((i + 1, Line::Text(line.to_owned())));
        }
    }
    Ok((lines, name))
}

fn open(path: &Option<PathBuf>, default_stdout: bool) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) if p.as_os_str() != "-" => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        _ if default_stdout => Box::new(std::io::stdout().lock()),
        _ => Box::new(std::io::stderr().lock()),
    })
}

fn run(args: FilterArgs) -> anyhow::Result<ExitCode> {
    let (lines, name) = read_lines(&args)?;
    let mut banned = args.banned.clone();
    if let Some(n) = banned.iter().find(|&&n| n > 999) {
        anyhow::bail!(
            "--banned {n}: expected numbers from 0 to 999 (longer ones are rejected anyway)"
        );
    }
    if args.ban_negative {
        banned.extend(filter::negative_numbers());
    }
    let rule = if args.lenient {
        filter::Rule::Lenient
    } else {
        filter::Rule::Paper
    };
    let mut out = open(&args.out, true)?;
    let mut reasons = match &args.reasons {
        Some(_) => Some(open(&args.reasons, false)?),
        None => None,
    };
    let mut counts: std::collections::BTreeMap<Reject, usize> = Default::default();
    let mut kept = 0;
    for (number, line) in &lines {
        let verdict = rule.check(line.completion(), &banned);
        match &verdict {
            Ok(_) => {
                kept += 1;
                match line {
                    Line::Chat(row) => {
                        out.write_all(&dataset::to_jsonl(std::slice::from_ref(row)))?
                    }
                    Line::Text(text) => writeln!(out, "{text}")?,
                }
            }
            Err(reason) => *counts.entry(*reason).or_default() += 1,
        }
        if let Some(w) = reasons.as_mut() {
            let reason = verdict.as_ref().err().map(|r| r.as_str());
            serde_json::to_writer(
                &mut *w,
                &serde_json::json!({"line": number, "kept": verdict.is_ok(), "reason": reason, "completion": line.completion()}),
            )?;
            writeln!(w)?;
        }
    }
    out.flush()?;
    if let Some(w) = reasons.as_mut() {
        w.flush()?;
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["verdict", "rows"]);
    table.add_row(vec!["kept".to_owned(), kept.to_string()]);
    for (reason, n) in &counts {
        table.add_row(vec![format!("rejected: {reason}"), n.to_string()]);
    }
    eprintln!("{name}: kept {kept} of {} rows\n{table}", lines.len());
    Ok(ExitCode::SUCCESS)
}

/// `sanitize numbers`, as the CLI shows it.
pub(super) fn sanitize_tool() -> Tool {
    Tool {
        verb: "sanitize",
        standalone: false,
        verb_about: crate::experiments::SANITIZE_ABOUT,
        command: || {
            SanitizeArgs::augment_args(clap::Command::new(EXPERIMENT).about(
                "Rewrite number completions so they carry less of their teacher: canonical, shuffle or random",
            ))
        },
        run: |matches, _| sanitize(SanitizeArgs::from_arg_matches(matches)?),
    }
}

/// The defenses `sanitize` applies: those that need no model and no other dataset.
fn text_defense(name: &str) -> Result<Defense, String> {
    match Defense::parse(name) {
        Some(d) if d.is_text_transform() => Ok(d),
        Some(d) => Err(format!(
            "{d} needs models or other teachers' data: name it in a sweep's grid.defense, where a defense stage applies it; here: canonical, shuffle or random"
        )),
        None => Err(format!(
            "unknown defense {name:?}: expected canonical, shuffle or random (a sweep also knows {})",
            Defense::names()
        )),
    }
}

#[derive(clap::Args)]
struct SanitizeArgs {
    /// A .jsonl file of chat rows ("-" reads stdin).
    input: PathBuf,
    /// canonical (one separator and spacing), shuffle (numbers permuted in
    /// each row) or random (numbers drawn uniformly, format kept).
    #[arg(long, value_parser = text_defense)]
    defense: Defense,
    /// Seed of shuffle's and random's draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Numbers random never draws, comma-separated (e.g. 666,911).
    #[arg(long, value_delimiter = ',')]
    banned: Vec<u32>,
    /// Where the rows go (default: stdout).
    #[arg(long, short)]
    out: Option<PathBuf>,
}

fn sanitize(args: SanitizeArgs) -> anyhow::Result<ExitCode> {
    let name = args.input.display().to_string();
    let text = if name == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        std::fs::read_to_string(&args.input)
            .with_context(|| format!("cannot read {name}: expected a UTF-8 JSONL file"))?
    };
    let rows = dataset::parse_jsonl(&text, &name).map_err(|e| dataset::bad_file(&args.input, &name, e))?;
    let (out_rows, report) = transform(&rows, args.defense, &args.banned, args.seed)?;
    let mut out = open(&args.out, true)?;
    out.write_all(&dataset::to_jsonl(&out_rows))?;
    out.flush()?;
    eprintln!(
        "{name}: {} of {} rows written ({} changed, {} unreadable and dropped) by {}",
        report.rows_out, report.rows_in, report.rows_changed, report.rows_dropped, report.defense
    );
    Ok(ExitCode::SUCCESS)
}
