//! The audit's validation benchmark: datasets whose taint the tool itself
//! knows, cut from the numbers of an owl teacher (tainted) and of the
//! control teacher (clean) of `bench/audit-pools.toml`, audited against a
//! held-out part of the control teacher's numbers; each tier's ROC AUC at
//! telling them apart, and its cost. Run through `bench/audit-validation.sh`.
//!
//! A dataset's score at a tier is the strongest evidence the tier found
//! towards any probe target: max over targets with a positive shift of
//! −log10 p (0 when none). A second score uses the known trait: the owl
//! target's signed −log10 p. AUC is the Mann–Whitney probability that a
//! tainted dataset outscores a clean one (ties count half).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use clap::Parser;
use subliminal_shared::experiments::audit::{report_stages, Finding, Test};
use subliminal_shared::experiments::numbers::{Stage as NumbersStage, TeacherParams};
use subliminal_shared::manifest::Manifest;

#[derive(Parser)]
struct Args {
    /// The store `subliminal run bench/audit-pools.toml` wrote.
    #[arg(long)]
    pools_store: PathBuf,
    /// The pools sweep file.
    #[arg(long, default_value = "bench/audit-pools.toml")]
    pools: PathBuf,
    /// The store the audits run in.
    #[arg(long)]
    store: PathBuf,
    /// Where the datasets, the sweep and the figures go.
    #[arg(long)]
    out: PathBuf,
    /// Rows per dataset.
    #[arg(long, default_value_t = 8)]
    rows: usize,
    /// Datasets of each label.
    #[arg(long, default_value_t = 20)]
    datasets: usize,
    /// screen or student (student also runs the screen).
    #[arg(long, default_value = "student")]
    tier: String,
    /// Answers per evaluation question (student tier).
    #[arg(long, default_value_t = 4)]
    samples: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(args.out.join("datasets"))?;
    let (owl, control) = pools(&args)?;
    let need = args.rows * args.datasets;
    anyhow::ensure!(
        owl.len() >= need && control.len() >= need + 2,
        "the pools hold {} owl and {} control rows; {} datasets of {} rows need {need} and {} (run more prompts in {})",
        owl.len(),
        control.len(),
        args.datasets,
        args.rows,
        need + 2,
        args.pools.display()
    );
    let mut labelled = Vec::new();
    for (label, rows) in [("tainted", &owl), ("clean", &control)] {
        for (i, chunk) in rows[..need].chunks(args.rows).enumerate() {
            let path = args.out.join(format!("datasets/{label}-{i:02}.jsonl"));
            std::fs::write(&path, chunk.concat())?;
            labelled.push((label, put(&path, &args.store)?));
        }
    }
    let held_out = args.out.join("datasets/control.jsonl");
    std::fs::write(&held_out, control[need..].concat())?;
    let control_key = put(&held_out, &args.store)?;
    let keys: Vec<String> = labelled.iter().map(|(_, k)| format!("{k:?}")).collect();
    let sweep = args.out.join("audit-validation.toml");
    std::fs::write(
        &sweep,
        format!(
            "name = \"audit-validation-{tier}\"\nkind = \"audit\"\ndatasets = [{}]\ncontrol = {control_key:?}\nprobes = [\"animals\"]\ntier = \"{tier}\"\n[screen]\nmax_rows = {}\n[evaluate]\nsamples_per_question = {}\n",
            keys.join(", "),
            args.rows,
            args.samples,
            tier = args.tier,
        ),
    )?;
    let status = Command::new(bin("subliminal"))
        .args([
            "run",
            sweep.to_str().unwrap(),
            "--store",
            args.store.to_str().unwrap(),
            "--jobs",
            "1",
            "--no-progress",
        ])
        .status()
        .context("cannot run subliminal")?;
    anyhow::ensure!(status.success(), "the audit sweep failed");

    let plan = subliminal_shared::sweep::load(&sweep)?.plan();
    let reports: BTreeMap<String, _> = report_stages(&plan)
        .into_iter()
        .map(|(id, params)| (params.dataset, id))
        .collect();
    let mut csv = String::from("dataset,label,tier,score_any_target,score_owl,verdict\n");
    let mut scores: BTreeMap<&str, Vec<(bool, f64, f64)>> = BTreeMap::new();
    let mut verdicts: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (label, key) in &labelled {
        let id = reports
            .get(key)
            .context("a dataset without its report stage")?;
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(
            args.store.join(format!("stages/{id}/report.json")),
        )?)?;
        let findings: Vec<Finding> = serde_json::from_value(report["findings"].clone())?;
        let verdict = report["verdict"].as_str().unwrap_or("?").to_owned();
        *verdicts.entry((label, verdict.clone())).or_default() += 1;
        for (tier, test) in [("screen", Test::Screen), ("student", Test::Student)] {
            let at: Vec<&Finding> = findings.iter().filter(|f| f.test == test).collect();
            if at.is_empty() {
                continue;
            }
            let strength = |f: &Finding| -f.p_value.max(1e-300).log10();
            let any = at
                .iter()
                .filter(|f| f.shift > 0.0)
                .map(|f| strength(f))
                .fold(0.0, f64::max);
            let owl = at
                .iter()
                .find(|f| f.target == "owl")
                .map_or(0.0, |f| strength(f) * f.shift.signum());
            scores
                .entry(tier)
                .or_default()
                .push((*label == "tainted", any, owl));
            csv.push_str(&format!("{key},{label},{tier},{any},{owl},{verdict}\n"));
        }
    }
    std::fs::write(args.out.join("validation.csv"), &csv)?;
    let cost = costs(&plan, &args.store, 2 * need)?;
    println!(
        "audit validation: {} tainted and {} clean datasets of {} rows, control {} rows, tier {}",
        args.datasets,
        args.datasets,
        args.rows,
        control.len() - need,
        args.tier
    );
    println!(
        "{:<8} {:>16} {:>10} {:>22}",
        "tier", "AUC (any target)", "AUC (owl)", "seconds per 1,000 rows"
    );
    for (tier, s) in &scores {
        println!(
            "{:<8} {:>16.3} {:>10.3} {:>22.0}",
            tier,
            auc(s.iter().map(|(t, any, _)| (*t, *any))),
            auc(s.iter().map(|(t, _, owl)| (*t, *owl))),
            cost.get(*tier).copied().unwrap_or(f64::NAN)
        );
    }
    for ((label, verdict), n) in &verdicts {
        println!("{label} datasets judged {verdict}: {n}");
    }
    println!("per dataset: {}", args.out.join("validation.csv").display());
    Ok(())
}

/// The owl teacher's and the control teacher's filtered rows, one JSONL line each.
fn pools(args: &Args) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let plan = subliminal_shared::sweep::load(&args.pools)?.plan();
    let index = plan.index();
    let (mut owl, mut control) = (None, None);
    for stage in plan
        .stages
        .iter()
        .filter(|s| s.experiment == "numbers" && s.kind == NumbersStage::Filter.kind())
    {
        let generate = index[&stage.inputs[0]];
        let teacher: TeacherParams = index[&generate.inputs[0]].params()?;
        let path = args
            .pools_store
            .join(format!("stages/{}/filtered.jsonl", stage.id));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: run `subliminal run {} --store {}` first",
                path.display(),
                args.pools.display(),
                args.pools_store.display()
            )
        })?;
        let rows: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        if teacher.system_prompt.is_some() {
            owl = Some(rows);
        } else {
            control = Some(rows);
        }
    }
    Ok((
        owl.context("no owl teacher in the pools")?,
        control.context("no control teacher in the pools")?,
    ))
}

/// Seconds per 1,000 dataset rows of each tier, from the stages' manifests:
/// the screen is its score stages; the student tier its students and their evaluations.
fn costs(
    plan: &subliminal_shared::plan::Plan,
    store: &Path,
    rows: usize,
) -> anyhow::Result<BTreeMap<&'static str, f64>> {
    let mut seconds: BTreeMap<&'static str, f64> = BTreeMap::new();
    for stage in &plan.stages {
        let tier = match (stage.experiment.as_str(), stage.kind.as_str()) {
            ("audit", "score") => "screen",
            ("numbers", "student" | "evaluate") => "student",
            _ => continue,
        };
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(
            store.join(format!("stages/{}/manifest.json", stage.id)),
        )?)?;
        *seconds.entry(tier).or_default() += manifest.duration_s;
    }
    Ok(seconds
        .into_iter()
        .map(|(t, s)| (t, s * 1000.0 / rows as f64))
        .collect())
}

/// Mann–Whitney AUC: P(score of a positive > score of a negative), ties half.
fn auc(scored: impl Iterator<Item = (bool, f64)>) -> f64 {
    let (pos, neg): (Vec<_>, Vec<_>) = scored.partition(|(p, _)| *p);
    let mut wins = 0.0;
    for (_, a) in &pos {
        for (_, b) in &neg {
            wins += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()).max(1) as f64
}

fn bin(name: &str) -> PathBuf {
    subliminal_tests::bin(name)
}

fn put(path: &Path, store: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin("subliminal"))
        .args([
            "store",
            "put",
            path.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "store put {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}
