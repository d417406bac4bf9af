//! `subliminal audit DATASET.jsonl --model MODEL`: the quarantine audit of
//! one dataset on this machine.
//!
//! It checks the dataset (a line that does not read is refused with its
//! file and line, exit 2, before anything runs), puts it (and a control, if
//! given) in the store, writes an audit sweep of one trial, runs it as
//! `subliminal run` would (finished stages are reused, so a second audit of
//! the same file costs nothing), then prints the report and copies its
//! JSON, PNG and HTML out. The exit code is the verdict's: 0 clean,
//! 3 suspect or tainted. On a cluster, submit an audit sweep instead (see
//! the module docs of [`super`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, FromArgMatches};

use super::verdict::{Tier, Verdict};
use super::{Probe, REPORT_HTML, REPORT_JSON, REPORT_PNG, SANITIZED};
use crate::llm::dataset;
use crate::experiments::{Tool, ToolHost};
use crate::manifest::{inspect, StageState};
use crate::spec::Source;
use crate::store::Store;

/// `subliminal audit`, as the CLI shows it.
pub(super) fn audit_tool() -> Tool {
    Tool {
        verb: "audit",
        verb_about: "Say whether training on a dataset would move a model: `audit DATASET.jsonl --model MODEL`",
        standalone: true,
        command: || {
            AuditArgs::augment_args(clap::Command::new("audit").about(
                "Audit a chat JSONL dataset on a sacrificial copy of the model it is meant to train: \
                 likelihood screen, gradient screen, sacrificial student, carrier tokens. Exit 0 clean, 3 suspect or tainted, 2 bad input",
            ))
        },
        run: |matches, host| run(AuditArgs::from_arg_matches(matches)?, host),
    }
}

/// `subliminal sanitize audit`: a full audit whose point is the cleaned copy.
pub(super) fn sanitize_tool() -> Tool {
    Tool {
        verb: "sanitize",
        verb_about: crate::experiments::SANITIZE_ABOUT,
        standalone: false,
        command: || {
            AuditArgs::augment_args(clap::Command::new("audit").about(
                "Write a copy of a dataset with the tokens that carried a sacrificial student's shift \
                 replaced by the base model's own (a full audit; --sanitized names the copy); \
                 audit the copy again to see what the cleaning bought",
            ))
            .mut_arg("sanitized", |a| a.required(true))
        },
        run: |matches, host| {
            let mut args = AuditArgs::from_arg_matches(matches)?;
            args.tier = Tier::Full;
            run(args, host)?;
            Ok(ExitCode::SUCCESS)
        },
    }
}

#[derive(clap::Args)]
struct AuditArgs {
    /// The dataset: chat JSONL, one conversation per line (the last user turn is the
    /// prompt, the last assistant turn what a model would learn), or the store key
    /// of a stage that writes rows (a numbers sweep's filter stage).
    dataset: PathBuf,
    /// The dataset's soft labels, when it is meant for distillation: the store key
    /// of a generate stage that recorded them (a numbers sweep with student.target =
    /// "logits"), or a soft.safetensors file. Every tier then reads the data by
    /// forward KL, and --control with --control-soft-labels is required.
    #[arg(long, requires_all = ["control", "control_soft_labels"])]
    soft_labels: Option<PathBuf>,
    /// The control's soft labels (another teacher's), as --soft-labels.
    #[arg(long, requires = "soft_labels")]
    control_soft_labels: Option<PathBuf>,
    /// The model the dataset is meant to train: a name the set-up knows
    /// (smollm2-135m), a GGUF file or model folder, or a store key.
    #[arg(long, default_value = crate::llm::DEFAULT_MODEL)]
    model: String,
    /// A control dataset of the same prompts without the suspected trait; without
    /// one, the model itself answers the dataset's prompts.
    #[arg(long)]
    control: Option<PathBuf>,
    /// Keep only control answers the numbers filter keeps (for number datasets),
    /// drawing up to 8 answers per prompt.
    #[arg(long)]
    control_numbers_only: bool,
    /// Sampling temperature of the model's own answers (the control made
    /// without --control); best matched to how the dataset was made.
    #[arg(long, default_value_t = 1.0)]
    control_temperature: f64,
    /// Nucleus sampling of the model's own answers.
    #[arg(long, default_value_t = 1.0)]
    control_top_p: f64,
    /// Probes, comma-separated: animals, trees, animal:WORD, tree:WORD (several
    /// words joined by +: animal:owl+dolphin+wolf).
    #[arg(long, value_delimiter = ',', default_value = "animals", value_parser = probe_name)]
    probes: Vec<String>,
    /// likelihood (the likelihood screen: forward passes only), screen (also the
    /// gradient screen; minutes), student (a sacrificial student; the default),
    /// or full (also the carrier tokens and a sanitised copy).
    #[arg(long, default_value = "student", value_parser = Tier::parse)]
    tier: Tier,
    /// Store for the audit's stages: a folder, file:///path or s3://bucket/prefix.
    #[arg(long, env = "SUBLIMINAL_STORE", default_value = "runs")]
    store: String,
    /// Folder the report's JSON, PNG and HTML are copied to.
    #[arg(long, default_value = "audit-report")]
    out: PathBuf,
    /// Where the sanitised copy of the dataset goes (tier full).
    #[arg(long)]
    sanitized: Option<PathBuf>,
    /// The most rows of each dataset used (a seeded subsample beyond).
    #[arg(long, default_value_t = 1000)]
    max_rows: u64,
    /// Student training epochs.
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    /// Students per arm (tiers student and full), each on its own bootstrap draw of
    /// its arm's rows, tested over students: one pair of students differs by a few
    /// hundredths even on two clean datasets, which the test must see. 1 trains one
    /// per arm and tests question by question (cheaper; a clean dataset can then read
    /// tainted).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=64))]
    replicates: u64,
    /// Evaluation questions per probe (at most 50).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=50))]
    questions: u64,
    /// How the students are read: probability (each question once, each target's
    /// log-odds among common words, paired question by question) or samples
    /// (sampled one-word answers, counted).
    #[arg(long, default_value = "probability", value_parser = ["probability", "samples"])]
    readout: String,
    /// The dtype of every model the audit runs: f32, or bf16 (the base
    /// weights in bfloat16: the screens run 1.4 to 1.8 times faster on CPUs
    /// with bf16 instructions, but the likelihood screen's scores get noisier
    /// and the smallest shift it can see about doubles).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    precision: String,
    /// Answers per evaluation question (--readout samples).
    #[arg(long, default_value_t = 10)]
    samples: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stages run at once. One by default: the audit is mostly a chain, and
    /// one stage then has every core.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// A probe's name, refused (exit 2) unless [`Probe::parse`] knows it.
fn probe_name(name: &str) -> Result<String, String> {
    Probe::parse(name).map(|_| name.to_owned())
}

fn run(args: AuditArgs, host: &dyn ToolHost) -> anyhow::Result<ExitCode> {
    if args.sanitized.is_some() && args.tier != Tier::Full {
        anyhow::bail!("--sanitized needs --tier full: the carriers stage writes the sanitised copy");
    }
    let rows = match stored(&args.dataset)? {
        Some(_) => "a stored stage's rows".to_owned(),
        None => format!("{} rows", check(&args.dataset)?),
    };
    if let Some(control) = &args.control {
        if stored(control)?.is_none() {
            check(control)?;
        }
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let store = Store::open(&args.store)?;
    let keys = runtime.block_on(async {
        let mut keys = Vec::new();
        for path in [Some(&args.dataset), args.control.as_ref(), args.soft_labels.as_ref(), args.control_soft_labels.as_ref()] {
            keys.push(match path {
                Some(path) => Some(put_or_key(&store, path).await?),
                None => None,
            });
        }
        anyhow::Ok(keys)
    })?;
    let [Some(dataset), control, soft_labels, control_soft_labels] = keys[..] else {
        anyhow::bail!("the dataset has no store key");
    };
    let inputs = Inputs { dataset, control, soft_labels, control_soft_labels };
    let name = format!("audit-{}-{}", &dataset.to_string()[..12], args.tier.as_str());
    let sweep = Source::new(format!("<audit of {}>", args.dataset.display()), sweep_text(&args, &name, &inputs));
    let plan = crate::sweep::parse(&sweep)?.plan();
    eprintln!(
        "auditing {} ({rows}) for {} at tier {}: {} stages",
        args.dataset.display(),
        args.model,
        args.tier.as_str(),
        plan.stages.len()
    );
    let finished = host.run_locally(&sweep, &args.store, Some(args.jobs.max(1)))?;
    let (report_id, _) = super::report_stages(&plan)
        .into_iter()
        .next()
        .context("an audit plan has a report stage")?;
    let verdict = runtime.block_on(async {
        let stage = match inspect(&store, report_id).await? {
            StageState::Done(stage) => stage,
            _ if !finished => anyhow::bail!("the audit did not finish: a stage failed (see above)"),
            other => anyhow::bail!("the report stage is not done: {other:?}"),
        };
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        for file in [REPORT_JSON, REPORT_PNG, REPORT_HTML] {
            let path = args.out.join(file);
            std::fs::write(&path, stage.artifact(file)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let report: serde_json::Value = serde_json::from_slice(stage.artifact(REPORT_JSON)?)
            .context("the report stage's report.json does not read")?;
        if let Some(out) = &args.sanitized {
            let carriers = report["carriers_stage"]
                .as_str()
                .context("the report names no carriers stage")?
                .parse()?;
            let StageState::Done(carriers) = inspect(&store, carriers).await? else {
                anyhow::bail!("the carriers stage is not done");
            };
            std::fs::write(out, carriers.artifact(SANITIZED)?)
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!("sanitised copy: {}", out.display());
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("{}", report["text"].as_str().unwrap_or_default());
        }
        let verdict: Verdict = serde_json::from_value(report["verdict"].clone())
            .context("the report holds no verdict")?;
        anyhow::Ok(verdict)
    })?;
    eprintln!(
        "verdict: {verdict}; report in {} ({REPORT_HTML}, {REPORT_PNG}, {REPORT_JSON})",
        args.out.display()
    );
    Ok(ExitCode::from(verdict.exit_code()))
}

/// Reads a dataset as the audit will, refusing a bad line (exit 2); its row count.
fn check(path: &Path) -> anyhow::Result<usize> {
    let rows = dataset::read_jsonl_file(path)?;
    if rows.len() < 2 {
        return Err(crate::spec::SpecError::Invalid {
            path: path.to_owned(),
            line: 1,
            column: 1,
            key: None,
            message: format!("expected at least 2 chat rows to audit, found {}", rows.len()),
        }
        .into());
    }
    Ok(rows.len())
}

/// The stage a `stage:` argument names, checked to be in the store by the
/// sweep's run; `None` for a path.
fn stored(arg: &Path) -> anyhow::Result<Option<crate::stage::StageId>> {
    match arg.to_str().and_then(crate::files::parse_key) {
        Some(key) => Ok(Some(key.with_context(|| format!("{} is not a store key", arg.display()))?)),
        None => Ok(None),
    }
}

/// A `stage:` argument's stage, or the file at a path put in the store.
async fn put_or_key(store: &Store, arg: &Path) -> anyhow::Result<crate::stage::StageId> {
    match stored(arg)? {
        Some(key) => Ok(key),
        None => put(store, arg).await,
    }
}

async fn put(store: &Store, path: &Path) -> anyhow::Result<crate::stage::StageId> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .map_or_else(|| "dataset.jsonl".to_owned(), |n| n.to_string_lossy().into_owned());
    crate::files::put(store, &name, Bytes::from(bytes)).await
}

/// What an audit reads from the store.
struct Inputs {
    dataset: crate::stage::StageId,
    control: Option<crate::stage::StageId>,
    soft_labels: Option<crate::stage::StageId>,
    control_soft_labels: Option<crate::stage::StageId>,
}

/// The audit sweep the command runs.
fn sweep_text(args: &AuditArgs, name: &str, inputs: &Inputs) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let probes: Vec<String> = args.probes.iter().map(|p| quote(p)).collect();
    let mut text = format!(
        "name = {}\nkind = \"audit\"\nmodel = {}\ndatasets = [{}]\nprobes = [{}]\ntier = {}\nseed = {}\nprecision = {}\n",
        quote(name),
        quote(&args.model),
        quote(&crate::files::key(inputs.dataset)),
        probes.join(", "),
        quote(args.tier.as_str()),
        args.seed,
        quote(&args.precision),
    );
    let keys = [
        ("control", inputs.control),
        ("control_soft_labels", inputs.control_soft_labels),
    ];
    for (key, id) in keys {
        if let Some(id) = id {
            text.push_str(&format!("{key} = {}\n", quote(&crate::files::key(id))));
        }
    }
    if let Some(id) = inputs.soft_labels {
        text.push_str(&format!("soft_labels = [{}]\n", quote(&crate::files::key(id))));
    }
    text.push_str(&format!("[screen]\nmax_rows = {}\n", args.max_rows));
    text.push_str(&format!(
        "[control_answers]\ntemperature = {}\ntop_p = {}\nfilter = {}\n",
        args.control_temperature,
        args.control_top_p,
        quote(if args.control_numbers_only { "numbers" } else { "none" })
    ));
    text.push_str(&format!(
        "[student]\nepochs = {}\nreplicates = {}\n[evaluate]\nreadout = {}\nquestions = {}\nsamples_per_question = {}\n",
        args.epochs,
        args.replicates,
        quote(&args.readout),
        args.questions,
        args.samples
    ));
    text
}
