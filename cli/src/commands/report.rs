//! `subliminal report SWEEP [--out report.html]`: one self-contained HTML page
//! for a sweep, to share or to archive beside a paper.
//!
//! It holds the results table with its tests, every plot of the kind (the
//! transfer grid or curves, and the shifts against control) inlined as PNG,
//! per stage kind the count, wall time and failures, the first rows of each
//! kind's datasets with its JSON files (metrics, a filter's reasons), every
//! measurement with the stage id that holds it, and the sweep file itself.
//! Nothing is fetched at view time: no scripts, no fonts, no links out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use subliminal_results::{
    outcome, p_text, value_text, verdict_text, Outcome, Outcomes, ResultsTable,
};
use subliminal_shared::manifest::{Failure, Manifest};
use subliminal_shared::plan::Plan;
use subliminal_shared::stage::{StageId, StageKind};
use subliminal_shared::store::{keys, Store};

use super::{find_sweep_source, DEFAULT_STORE};

/// Rows of each dataset shown in the page.
const SAMPLE_ROWS: usize = 5;
/// A sample line or metrics file longer than this is cut.
const SAMPLE_CHARS: usize = 600;

#[derive(clap::Args)]
pub struct Args {
    /// The sweep file, or the name of a sweep already run in the store.
    sweep: String,
    #[arg(long, env = "SUBLIMINAL_STORE", default_value = DEFAULT_STORE)]
    store: String,
    /// Where the page goes (default: SWEEP.html in the current folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(&args.store)?;
    let (sweep, source) = find_sweep_source(&args.sweep, &store).await?;
    let plan = sweep.plan();
    let outcomes = subliminal_results::collect(&store, &plan).await?;
    let table = subliminal_results::build(&plan, &outcomes);
    let plots = tempfile::tempdir()?;
    let mut figures = Vec::new();
    let grid = plots.path().join("results.png");
    match super::results::draw_results(&sweep, &plan, &outcomes, &table, &grid) {
        Ok(what) => figures.push(Figure::read(&grid, what)?),
        Err(e) => eprintln!("report: no results plot: {e:#}"),
    }
    let shifts = plots.path().join("shifts.png");
    match crate::shift_plot::shifts(&table, &shifts) {
        Ok(()) => figures.push(Figure::read(
            &shifts,
            "each tested row's shift against control, with its 95% interval".to_owned(),
        )?),
        Err(e) => eprintln!("report: no shift plot: {e:#}"),
    }
    let stages = StageRecords::read(&store, &plan).await?;
    let samples = samples(&store, &plan, &stages).await?;
    let page = Page {
        sweep: sweep.name(),
        experiment: &plan.experiment,
        store: store.location(),
        source: &source.text,
        plan: &plan,
        outcomes: &outcomes,
        table: &table,
        figures: &figures,
        stages: &stages,
        samples: &samples,
    }
    .render();
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}.html", sweep.name())));
    std::fs::write(&out, page.into_string())
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "wrote {} ({} plot(s), {} stage kind(s), {} measurement(s))",
        out.display(),
        figures.len(),
        stages.kinds.len(),
        plan.measurements.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// A plot, inlined.
struct Figure {
    png_base64: String,
    caption: String,
}

impl Figure {
    fn read(path: &std::path::Path, caption: String) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self {
            png_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            caption,
        })
    }
}

/// What the store says of each stage of the plan.
struct StageRecords {
    /// Stage kinds in pipeline order.
    kinds: Vec<KindSummary>,
    manifests: BTreeMap<StageId, Manifest>,
}

#[derive(Default)]
struct KindSummary {
    kind: String,
    stages: usize,
    done: usize,
    failed: usize,
    /// Seconds of work, summed over stages (a grouped stage counts its share).
    work_s: f64,
    /// From the first start to the last finish.
    span: Option<(f64, f64)>,
    errors: Vec<String>,
}

impl StageRecords {
    async fn read(store: &Store, plan: &Plan) -> anyhow::Result<Self> {
        let mut kinds: Vec<KindSummary> = plan
            .kinds()
            .iter()
            .map(|k| KindSummary {
                kind: k.to_string(),
                ..Default::default()
            })
            .collect();
        let mut manifests = BTreeMap::new();
        for stage in &plan.stages {
            let Some(summary) = kinds.iter_mut().find(|k| k.kind == stage.kind.as_str()) else {
                continue;
            };
            summary.stages += 1;
            if let Some(bytes) = store.get_opt(&keys::manifest(stage.id)).await? {
                let manifest: Manifest = serde_json::from_slice(&bytes)
                    .with_context(|| format!("manifest of stage {} is malformed", stage.id))?;
                summary.done += 1;
                summary.work_s += manifest.duration_s;
                let (start, end) = summary
                    .span
                    .unwrap_or((manifest.started_at, manifest.finished_at));
                summary.span = Some((
                    start.min(manifest.started_at),
                    end.max(manifest.finished_at),
                ));
                manifests.insert(stage.id, manifest);
            } else if let Some(bytes) = store.get_opt(&keys::failure(stage.id)).await? {
                summary.failed += 1;
                if let Ok(f) = serde_json::from_slice::<Failure>(&bytes) {
                    if summary.errors.len() < 3 {
                        summary
                            .errors
                            .push(format!("{}: {}", stage.id.short(), f.error));
                    }
                }
            }
        }
        Ok(Self { kinds, manifests })
    }

    /// The first finished stage of `kind`, in plan order.
    fn first_done(&self, plan: &Plan, kind: &StageKind) -> Option<&Manifest> {
        plan.stages
            .iter()
            .filter(|s| &s.kind == kind)
            .find_map(|s| self.manifests.get(&s.id))
    }
}

/// One stage kind's sample: the first rows of its JSON-lines datasets, and
/// its small JSON files (metrics, a filter's reasons) in full.
struct Sample {
    kind: String,
    stage: String,
    artifacts: Vec<(String, u64)>,
    rows: Vec<(String, Vec<String>)>,
    json: Vec<(String, String)>,
}

/// A JSON artifact up to this size is shown whole (cut at `4 * SAMPLE_CHARS`).
const SMALL_JSON: u64 = 256 * 1024;

async fn samples(
    store: &Store,
    plan: &Plan,
    records: &StageRecords,
) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for kind in plan.kinds() {
        let Some(manifest) = records.first_done(plan, &kind) else {
            continue;
        };
        let id = manifest.stage;
        let mut rows = Vec::new();
        let mut json = Vec::new();
        for artifact in &manifest.artifacts {
            if artifact.name.ends_with(".jsonl") {
                let bytes = store.get(&keys::artifact(id, &artifact.name)).await?;
                let head = String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .take(SAMPLE_ROWS)
                    .map(|l| cut(l, SAMPLE_CHARS))
                    .collect();
                rows.push((artifact.name.clone(), head));
            } else if artifact.name.ends_with(".json") && artifact.size <= SMALL_JSON {
                let bytes = store.get(&keys::artifact(id, &artifact.name)).await?;
                let pretty = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .and_then(|v| serde_json::to_string_pretty(&v))
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
                json.push((artifact.name.clone(), cut(&pretty, 4 * SAMPLE_CHARS)));
            }
        }
        out.push(Sample {
            kind: kind.to_string(),
            stage: id.to_string(),
            artifacts: manifest
                .artifacts
                .iter()
                .map(|a| (a.name.clone(), a.size))
                .collect(),
            rows,
            json,
        });
    }
    Ok(out)
}

fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!(
            "{} … ({} more characters)",
            &text[..at],
            text[at..].chars().count()
        ),
        None => text.to_owned(),
    }
}

struct Page<'a> {
    sweep: &'a str,
    experiment: &'a str,
    store: &'a str,
    source: &'a str,
    plan: &'a Plan,
    outcomes: &'a Outcomes,
    table: &'a ResultsTable,
    figures: &'a [Figure],
    stages: &'a StageRecords,
    samples: &'a [Sample],
}

const STYLE: &str = r#"
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232a; margin: 0; background: #fafbfc; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d7dde3; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta { color: #56606b; margin: 0 0 8px; }
nav a { margin-right: 14px; color: #2060a0; text-decoration: none; }
table { border-collapse: collapse; background: #fff; font-size: 13.5px; margin: 6px 0; }
th, td { border: 1px solid #d7dde3; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef2f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.transfers td { background: #eaf6ea; }
tr.below td { background: #fbeeee; }
.note { color: #56606b; font-size: 13px; white-space: pre-line; }
figure { margin: 12px 0 20px; background: #fff; border: 1px solid #d7dde3; padding: 10px; display: inline-block; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #56606b; font-size: 13px; margin-top: 6px; }
pre { background: #fff; border: 1px solid #d7dde3; padding: 8px 10px; overflow-x: auto; font-size: 12.5px; }
code { font-size: 12.5px; }
.error { color: #a02020; }
details > summary { cursor: pointer; color: #2060a0; margin: 6px 0; }
"#;

impl Page<'_> {
    fn render(&self) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { "subliminal: " (self.sweep) }
                    style { (PreEscaped(STYLE)) }
                }
                body {
                    main {
                        h1 { "Sweep " (self.sweep) }
                        p.meta {
                            "kind " b { (self.experiment) } " · "
                            (self.plan.trials) " trials · " (self.plan.stages.len()) " stages · "
                            (self.plan.measurements.len()) " measurements · store " code { (self.store) }
                        }
                        nav {
                            a href="#results" { "Results" }
                            a href="#plots" { "Plots" }
                            a href="#stages" { "Stages" }
                            a href="#data" { "Data" }
                            a href="#measurements" { "Measurements" }
                            a href="#sweep-file" { "Sweep file" }
                        }
                        (self.results())
                        (self.plots())
                        (self.stage_kinds())
                        (self.data())
                        (self.measurements())
                        h2 #sweep-file { "Sweep file" }
                        pre { (self.source) }
                    }
                }
            }
        }
    }

    fn results(&self) -> Markup {
        let t = self.table;
        let settings = t.rows.iter().any(|r| !r.settings.is_empty());
        let tested = t.rows.iter().any(|r| r.verdict.is_some());
        let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| value_text(v, false));
        html! {
            h2 #results { "Results" }
            table {
                thead { tr {
                    th { "arm" }
                    @if settings { th { "settings" } }
                    th { "metric" } th { "mean" } th { "95% CI" } th { "n" }
                    @if tested { th { "vs control" } th { "95% CI of the shift" } th { "p (BH)" } th { "verdict" } }
                    th { "failed" } th { "pending" }
                } }
                tbody {
                    @for row in &t.rows {
                        @let class = match row.verdict.map(|v| v.as_str()) {
                            Some("transfers") => "transfers",
                            Some("below control") => "below",
                            _ => "",
                        };
                        tr class=(class) {
                            td { (row.arm) }
                            @if settings { td { (ResultsTable::settings_label(&row.settings)) } }
                            td { code { (row.metric) } }
                            td.num { (num(row.summary.map(|s| s.mean))) }
                            td.num { (row.summary.and_then(|s| s.ci95).map_or_else(|| "-".to_owned(), |(lo, hi)| format!("[{}, {}]", value_text(lo, false), value_text(hi, false)))) }
                            td.num { (row.summary.map_or(0, |s| s.n)) }
                            @if tested {
                                td.num { (row.shift.map_or_else(|| "-".to_owned(), |d| value_text(d, true))) }
                                td.num { (row.shift_ci95.map_or_else(|| "-".to_owned(), |(lo, hi)| format!("[{}, {}]", value_text(lo, true), value_text(hi, true)))) }
                                td.num { (row.q_value.map_or_else(|| "-".to_owned(), p_text)) }
                                td { (verdict_text(row)) }
                            }
                            td.num { (row.failed) }
                            td.num { (row.pending) }
                        }
                    }
                }
            }
            @if let Some(note) = t.tests_note() { p.note { (note) } }
            @for row in t.rows.iter().filter(|r| r.error.is_some()) {
                p.error { (row.arm) ": " (row.error.as_deref().unwrap_or_default()) }
            }
        }
    }

    fn plots(&self) -> Markup {
        html! {
            h2 #plots { "Plots" }
            @if self.figures.is_empty() { p.note { "No plot yet: no evaluation has finished." } }
            @for f in self.figures {
                figure {
                    img src=(format!("data:image/png;base64,{}", f.png_base64)) alt=(f.caption);
                    figcaption { (f.caption) }
                }
            }
        }
    }

    fn stage_kinds(&self) -> Markup {
        html! {
            h2 #stages { "Stages" }
            table {
                thead { tr { th { "stage kind" } th { "stages" } th { "done" } th { "failed" } th { "not run" } th { "work" } th { "mean per stage" } th { "wall (first start to last finish)" } } }
                tbody {
                    @for k in &self.stages.kinds {
                        tr {
                            td { (k.kind) }
                            td.num { (k.stages) }
                            td.num { (k.done) }
                            td.num { (k.failed) }
                            td.num { (k.stages - k.done - k.failed) }
                            td.num { (duration(k.work_s)) }
                            td.num { (if k.done > 0 { duration(k.work_s / k.done as f64) } else { "-".to_owned() }) }
                            td.num { (k.span.map_or_else(|| "-".to_owned(), |(a, b)| duration(b - a))) }
                        }
                    }
                }
            }
            @for k in self.stages.kinds.iter().filter(|k| !k.errors.is_empty()) {
                @for e in &k.errors { p.error { (k.kind) " " (e) } }
            }
        }
    }

    fn data(&self) -> Markup {
        html! {
            h2 #data { "Data" }
            p.note { "The first finished stage of each kind: its artifacts, the first rows of its JSON-lines files, and its JSON files (metrics, a filter's reasons)." }
            @for s in self.samples {
                h3 { (s.kind) " " code { (s.stage) } }
                p.meta {
                    @for (i, (name, size)) in s.artifacts.iter().enumerate() {
                        @if i > 0 { " · " }
                        code { (name) } " (" (bytes(*size)) ")"
                    }
                }
                @for (name, rows) in &s.rows {
                    p.meta { "first rows of " code { (name) } }
                    pre { @for r in rows { (r) "\n" } }
                }
                @for (name, text) in &s.json {
                    details { summary { (name) } pre { (text) } }
                }
            }
        }
    }

    fn measurements(&self) -> Markup {
        html! {
            h2 #measurements { "Measurements" }
            p.note { "Every figure of the table, with the stage that holds it (in the store under stages/ID/)." }
            details {
                summary { (self.plan.measurements.len()) " measurements" }
                table {
                    thead { tr { th { "arm" } th { "settings" } th { "seed" } th { "metric" } th { "value" } th { "stage" } } }
                    tbody {
                        @for m in &self.plan.measurements {
                            tr {
                                td { (m.arm) }
                                td { (ResultsTable::settings_label(&m.settings)) }
                                td.num { (m.seed) }
                                td { code { (m.metric) } }
                                td.num { (match outcome(self.outcomes, m) {
                                    Outcome::Done { value, .. } => format!("{value:.4}"),
                                    Outcome::Failed(_) => "failed".to_owned(),
                                    Outcome::Pending => "pending".to_owned(),
                                }) }
                                td { code { (m.stage) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn duration(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{seconds:.1} s")
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
