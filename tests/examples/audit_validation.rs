//! The audit's validation benchmark on a taint that transfers: datasets cut
//! from the numbers of the visible-transfer recipe's fine-tuned owl teacher
//! (tainted: its soft labels move a student's owl log-odds by +0.83, its
//! tokens by +0.14 against the base model's numbers) and of the base model
//! itself (clean), from `bench/audit-visible-pools.toml`, each audited
//! against a held-out part of the base model's numbers. Run through
//! `bench/audit-validation.sh`.
//!
//! A dataset's score at a tier is the strongest evidence the tier found
//! towards any probe target: max over targets with a positive shift of
//! −log10 p (0 when none). A second score uses the known trait: the owl
//! target's signed −log10 p. AUC is the Mann–Whitney probability that a
//! tainted dataset outscores a clean one (ties count half), with a
//! bootstrap interval (datasets resampled within each label); a tier's
//! false-positive rate is the share of clean datasets it flags (any target,
//! BH within the tier, q < α), its true-positive rate the share of tainted
//! ones; its cost is seconds per 1,000 audited rows, and that as a share of
//! what training the student the data was meant for costs per 1,000 rows
//! (the pools' own students, from their manifests).
//!
//! With `--soft-labels`, each dataset (and the control) is audited with
//! its soft labels, the teacher's top-32 distribution at each position that
//! the pools' generate stages recorded: the data a distilled student would
//! learn, read by every tier through forward KL. Each dataset then lies
//! within one generate stage (choose --rows and --control-rows that divide
//! a pool's 1,000 rows), and those stages are copied into --store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use subliminal_shared::experiments::audit::{report_stages, Finding, Test};
use subliminal_shared::llm::{Stage as NumbersStage, TeacherParams, TraitDataParams};
use subliminal_shared::manifest::Manifest;
use subliminal_shared::stage::StageId;

#[derive(Parser)]
struct Args {
    /// The store `subliminal run bench/audit-visible-pools.toml` wrote.
    #[arg(long)]
    pools_store: PathBuf,
    /// The pools sweep file.
    #[arg(long, default_value = "bench/audit-visible-pools.toml")]
    pools: PathBuf,
    /// The trait whose teacher's rows are the tainted datasets.
    #[arg(long, default_value = "owl")]
    taint: String,
    /// The store the audits run in.
    #[arg(long)]
    store: PathBuf,
    /// Where the datasets, the sweep and the figures go.
    #[arg(long)]
    out: PathBuf,
    /// Rows per dataset.
    #[arg(long, default_value_t = 200)]
    rows: usize,
    /// Datasets of each label (at most what the pools hold).
    #[arg(long, default_value_t = 20)]
    datasets: usize,
    /// Rows of the base model's numbers held out as every audit's control.
    #[arg(long, default_value_t = 400)]
    control_rows: usize,
    /// likelihood, screen or student (each runs the tiers before it).
    #[arg(long, default_value = "screen")]
    tier: String,
    /// The audits' probe: animals (ten targets), or chosen ones
    /// (animal:owl+dolphin+eagle+wolf); the likelihood screen's cost grows
    /// with the targets.
    #[arg(long, default_value = "animals")]
    probe: String,
    /// The dtype of the audits' models: f32 or bf16.
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Audit the datasets with their soft labels (forward KL at every tier).
    #[arg(long)]
    soft_labels: bool,
}

/// A pool's row: its JSONL line and the generate stage that wrote it.
#[derive(Clone)]
struct PoolRow {
    line: String,
    generate: StageId,
}

/// The one generate stage that wrote every row of `rows`, for its soft
/// labels; an error when they span several.
fn labels_stage(rows: &[PoolRow], what: &str) -> anyhow::Result<StageId> {
    let first = rows.first().context("an empty dataset")?.generate;
    anyhow::ensure!(
        rows.iter().all(|r| r.generate == first),
        "{what} spans two generate stages, so no one soft-label set covers it: \
         choose --rows and --control-rows that divide a pool's rows"
    );
    Ok(first)
}

/// Copies a finished stage's folder from one file store to another (a
/// stage is content-addressed, so a copy is the same stage).
fn copy_stage(id: StageId, from: &Path, to: &Path) -> anyhow::Result<()> {
    let (src, dst) = (
        from.join(format!("stages/{id}")),
        to.join(format!("stages/{id}")),
    );
    std::fs::create_dir_all(&dst)?;
    for entry in
        std::fs::read_dir(&src).with_context(|| format!("no stage {id} in {}", from.display()))?
    {
        let entry = entry?;
        std::fs::copy(entry.path(), dst.join(entry.file_name()))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(args.out.join("datasets"))?;
    let pools = pools(&args)?;
    let tainted = pools
        .get(args.taint.as_str())
        .with_context(|| format!("no {} teacher in {}", args.taint, args.pools.display()))?;
    let base = pools
        .get("base")
        .context("no base model's numbers in the pools")?;
    let (control, clean) = base.split_at(args.control_rows.min(base.len()));
    let datasets = args
        .datasets
        .min(tainted.len() / args.rows)
        .min(clean.len() / args.rows);
    anyhow::ensure!(
        datasets >= 2 && control.len() >= 2,
        "the pools hold {} {} rows and {} base rows: too few for datasets of {} rows and a control of {} \
         (run more seeds in {})",
        tainted.len(),
        args.taint,
        base.len(),
        args.rows,
        args.control_rows,
        args.pools.display()
    );
    let lines = |rows: &[PoolRow]| rows.iter().map(|r| r.line.as_str()).collect::<String>();
    let mut labelled = Vec::new();
    let mut labels = Vec::new();
    for (label, rows) in [("tainted", tainted.as_slice()), ("clean", clean)] {
        for (i, chunk) in rows.chunks(args.rows).take(datasets).enumerate() {
            let path = args.out.join(format!("datasets/{label}-{i:02}.jsonl"));
            std::fs::write(&path, lines(chunk))?;
            labelled.push((label, put(&path, &args.store)?));
            if args.soft_labels {
                labels.push(labels_stage(chunk, &format!("{label} dataset {i}"))?);
            }
        }
    }
    let held_out = args.out.join("datasets/control.jsonl");
    std::fs::write(&held_out, lines(control))?;
    let control_key = put(&held_out, &args.store)?;
    let keys: Vec<String> = labelled.iter().map(|(_, k)| format!("{k:?}")).collect();
    let soft = if args.soft_labels {
        let control_labels = labels_stage(control, "the control")?;
        let mut copied = labels.clone();
        copied.push(control_labels);
        copied.sort();
        copied.dedup();
        for id in copied {
            copy_stage(id, &args.pools_store, &args.store)?;
        }
        let key = |id: StageId| format!("{:?}", subliminal_shared::files::key(id));
        let keys: Vec<String> = labels.iter().map(|&id| key(id)).collect();
        format!(
            "soft_labels = [{}]\ncontrol_soft_labels = {}\n",
            keys.join(", "),
            key(control_labels)
        )
    } else {
        String::new()
    };
    let variant = if args.soft_labels { "soft-" } else { "" };
    let sweep = args
        .out
        .join(format!("audit-validation-{variant}{}.toml", args.rows));
    std::fs::write(
        &sweep,
        format!(
            "name = \"audit-validation-{variant}{tier}-{rows}\"\nkind = \"audit\"\ndatasets = [{}]\ncontrol = {control_key:?}\n{soft}\
             probes = [{probe:?}]\ntier = \"{tier}\"\nprecision = {precision:?}\n[screen]\nmax_rows = {}\n",
            keys.join(", "),
            args.rows.max(args.control_rows),
            probe = args.probe,
            precision = args.precision,
            tier = args.tier,
            rows = args.rows,
        ),
    )?;
    let status = Command::new(bin("subliminal"))
        .args([
            "run",
            sweep.to_str().unwrap(),
            "--store",
            args.store.to_str().unwrap(),
        ])
        .args(["--jobs", "1", "--no-progress"])
        .status()
        .context("cannot run subliminal")?;
    anyhow::ensure!(status.success(), "the audit sweep failed");

    let plan = subliminal_shared::sweep::load(&sweep)?.plan();
    let reports: BTreeMap<String, _> = report_stages(&plan)
        .into_iter()
        .map(|(id, params)| (params.dataset, id))
        .collect();
    let mut csv = String::from("dataset,label,tier,score_any_target,score_trait,flagged,verdict\n");
    let mut scores: BTreeMap<&str, Vec<(bool, f64, f64, bool)>> = BTreeMap::new();
    let mut verdicts: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (label, key) in &labelled {
        let id = reports
            .get(key)
            .context("a dataset without its report stage")?;
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(
            args.store.join(format!("stages/{id}/report.json")),
        )?)?;
        let alpha = report["alpha"].as_f64().unwrap_or(0.05);
        let findings: Vec<Finding> = serde_json::from_value(report["findings"].clone())?;
        let verdict = report["verdict"].as_str().unwrap_or("?").to_owned();
        *verdicts.entry((label, verdict.clone())).or_default() += 1;
        for test in [Test::Likelihood, Test::Screen, Test::Student] {
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
            let own = at
                .iter()
                .find(|f| f.target == args.taint)
                .map_or(0.0, |f| strength(f) * f.shift.signum());
            let flagged = at.iter().any(|f| f.flags(alpha));
            scores
                .entry(test.as_str())
                .or_default()
                .push((*label == "tainted", any, own, flagged));
            csv.push_str(&format!(
                "{key},{label},{},{any},{own},{flagged},{verdict}\n",
                test.as_str()
            ));
        }
    }
    let csv_path = args.out.join(format!(
        "validation-{variant}{}-{}.csv",
        args.tier, args.rows
    ));
    std::fs::write(&csv_path, &csv)?;
    let cost = costs(&plan, &args.store, &labelled, args.rows)?;
    let student = student_cost(&args)?;
    println!(
        "audit validation: {datasets} tainted ({} teacher) and {datasets} clean (base model) datasets of {} rows, \
         control {} base rows, tier {}{}",
        args.taint,
        args.rows,
        control.len(),
        args.tier,
        if args.soft_labels { ", with their soft labels (forward KL)" } else { "" }
    );
    println!(
        "| tier | AUC, any target [95% CI] | AUC, {} [95% CI] | true-positive rate | false-positive rate | s per 1,000 rows | share of the student's cost |",
        args.taint
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for test in ["likelihood", "screen", "student"] {
        let Some(s) = scores.get(test) else { continue };
        let any: Vec<(bool, f64)> = s.iter().map(|&(t, a, _, _)| (t, a)).collect();
        let own: Vec<(bool, f64)> = s.iter().map(|&(t, _, o, _)| (t, o)).collect();
        let rate = |tainted: bool| {
            let of: Vec<bool> = s.iter().filter(|x| x.0 == tainted).map(|x| x.3).collect();
            of.iter().filter(|&&f| f).count() as f64 / of.len().max(1) as f64
        };
        let seconds = cost.get(test).copied().unwrap_or(f64::NAN);
        println!(
            "| {test} | {} | {} | {:.2} | {:.2} | {seconds:.0} | {} |",
            with_interval(&any),
            with_interval(&own),
            rate(true),
            rate(false),
            student.map_or_else(|| "-".to_owned(), |st| format!("{:.2}", seconds / st)),
        );
    }
    if let Some(st) = student {
        println!(
            "the student the data is meant for: {st:.0} s per 1,000 rows (the pools' students)"
        );
    }
    for ((label, verdict), n) in &verdicts {
        println!("{label} datasets judged {verdict}: {n}");
    }
    println!("per dataset: {}", csv_path.display());
    Ok(())
}

/// An AUC with its bootstrap interval, as the table prints it.
fn with_interval(scored: &[(bool, f64)]) -> String {
    let (lo, hi) = auc_interval(scored, 2000, 7);
    format!("{:.3} [{lo:.3}, {hi:.3}]", auc(scored))
}

/// Each pool's rows by teacher: the trait of a fine-tuned or system-prompted
/// teacher, or `base`; one JSONL line each, seeds in order.
fn pools(args: &Args) -> anyhow::Result<BTreeMap<String, Vec<PoolRow>>> {
    let plan = subliminal_shared::sweep::load(&args.pools)?.plan();
    let index = plan.index();
    let mut by_seed: BTreeMap<(String, u64), Vec<PoolRow>> = BTreeMap::new();
    for stage in plan
        .stages
        .iter()
        .filter(|s| s.experiment == "numbers" && s.kind == NumbersStage::Filter.kind())
    {
        let generate = index[&stage.inputs[0]];
        let seed = generate.params::<serde_json::Value>()?["seed"]
            .as_u64()
            .unwrap_or(0);
        let teacher_stage = index[&generate.inputs[0]];
        let teacher: TeacherParams = teacher_stage.params()?;
        let name = match (&teacher.finetune, &teacher.system_prompt) {
            (Some(_), _) => {
                let data: TraitDataParams = index[&teacher_stage.inputs[0]].params()?;
                data.target
            }
            (None, Some(prompt)) => prompt.clone(),
            (None, None) => "base".to_owned(),
        };
        let path = args
            .pools_store
            .join(format!("stages/{}/filtered.jsonl", stage.id));
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!(
                "{} is not there yet (run {} further); left out",
                path.display(),
                args.pools.display()
            );
            continue;
        };
        let rows = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| PoolRow {
                line: format!("{l}\n"),
                generate: generate.id,
            })
            .collect();
        by_seed.insert((name, seed), rows);
    }
    let mut out: BTreeMap<String, Vec<PoolRow>> = BTreeMap::new();
    for ((name, _), rows) in by_seed {
        out.entry(name).or_default().extend(rows);
    }
    Ok(out)
}

/// Seconds per 1,000 dataset rows of each tier, from the stages' manifests:
/// a screen is its score stages (the given control's, scored once, shared
/// out over the datasets); the student tier its students and their readouts.
fn costs(
    plan: &subliminal_shared::plan::Plan,
    store: &Path,
    labelled: &[(&str, String)],
    rows: usize,
) -> anyhow::Result<BTreeMap<&'static str, f64>> {
    let mut seconds: BTreeMap<&'static str, f64> = BTreeMap::new();
    for stage in &plan.stages {
        let tier = match (stage.experiment.as_str(), stage.kind.as_str()) {
            ("audit", "likelihood") => "likelihood",
            ("audit", "score") => "screen",
            ("numbers", "student" | "evaluate" | "readout") => "student",
            _ => continue,
        };
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(
            store.join(format!("stages/{}/manifest.json", stage.id)),
        )?)?;
        *seconds.entry(tier).or_default() += manifest.duration_s;
    }
    let audited = (labelled.len() * rows) as f64;
    Ok(seconds
        .into_iter()
        .map(|(t, s)| (t, s * 1000.0 / audited))
        .collect())
}

/// Seconds per 1,000 rows of the pools' own students (the training the
/// audited data was meant for), from their manifests and row counts.
fn student_cost(args: &Args) -> anyhow::Result<Option<f64>> {
    let plan = subliminal_shared::sweep::load(&args.pools)?.plan();
    let (mut seconds, mut rows) = (0.0, 0usize);
    for stage in plan
        .stages
        .iter()
        .filter(|s| s.experiment == "numbers" && s.kind == NumbersStage::Student.kind())
    {
        let dir = args.pools_store.join(format!("stages/{}", stage.id));
        let (Ok(manifest), Ok(data)) = (
            std::fs::read(dir.join("manifest.json")),
            std::fs::read_to_string(
                args.pools_store
                    .join(format!("stages/{}/filtered.jsonl", stage.inputs[0])),
            ),
        ) else {
            continue;
        };
        let manifest: Manifest = serde_json::from_slice(&manifest)?;
        seconds += manifest.duration_s;
        rows += data.lines().filter(|l| !l.trim().is_empty()).count();
    }
    Ok((rows > 0).then(|| seconds * 1000.0 / rows as f64))
}

/// Mann–Whitney AUC: P(score of a positive > score of a negative), ties half.
fn auc(scored: &[(bool, f64)]) -> f64 {
    let (pos, neg): (Vec<_>, Vec<_>) = scored.iter().partition(|(p, _)| *p);
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

/// The 95% percentile bootstrap interval of the AUC, resampling the
/// positives and the negatives each with replacement.
fn auc_interval(scored: &[(bool, f64)], resamples: usize, seed: u64) -> (f64, f64) {
    let pos: Vec<(bool, f64)> = scored.iter().copied().filter(|(p, _)| *p).collect();
    let neg: Vec<(bool, f64)> = scored.iter().copied().filter(|(p, _)| !*p).collect();
    if pos.is_empty() || neg.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut aucs: Vec<f64> = (0..resamples)
        .map(|_| {
            let mut sample: Vec<(bool, f64)> = (0..pos.len())
                .map(|_| pos[rng.gen_range(0..pos.len())])
                .collect();
            sample.extend((0..neg.len()).map(|_| neg[rng.gen_range(0..neg.len())]));
            auc(&sample)
        })
        .collect();
    aucs.sort_by(f64::total_cmp);
    let at = |q: f64| aucs[((resamples as f64 - 1.0) * q).round() as usize];
    (at(0.025), at(0.975))
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
