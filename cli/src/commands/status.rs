//! `subliminal status [SWEEP]`: per stage kind, how many stages are queued,
//! running, done, retrying and dead; the workers and what they run; the last
//! errors. `--json` for scripts. Without SWEEP: the queues and the workers.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use subliminal_broker::{Broker, TaskState};

use subliminal_shared::store::{keys, Store};

use super::{find_sweep, ClusterArgs};

#[derive(clap::Args)]
pub struct Args {
    /// A sweep id (its name); omit for the queues and workers only.
    sweep: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[arg(long)]
    json: bool,
}

/// Where one sweep stands.
#[derive(Debug, Serialize, Default)]
pub struct SweepStatus {
    pub sweep: String,
    pub state: String,
    pub kinds: BTreeMap<String, KindCounts>,
    /// The stage kinds in pipeline order, as the table shows them.
    #[serde(skip)]
    pub order: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, Default, Clone, Copy)]
pub struct KindCounts {
    pub stages: usize,
    pub done: usize,
    pub queued: usize,
    pub running: usize,
    pub retrying: usize,
    pub dead: usize,
    /// Not enqueued yet: their inputs are not done.
    pub waiting: usize,
}

impl SweepStatus {
    fn totals(&self) -> KindCounts {
        let mut t = KindCounts::default();
        for k in self.kinds.values() {
            t.stages += k.stages;
            t.done += k.done;
            t.queued += k.queued;
            t.running += k.running;
            t.retrying += k.retrying;
            t.dead += k.dead;
            t.waiting += k.waiting;
        }
        t
    }
}

pub async fn sweep_status(broker: &Broker, store: &Store, id: &str) -> anyhow::Result<SweepStatus> {
    let plan = find_sweep(id, store).await?.plan();
    let state = match store.get_opt(&keys::sweep_status(id)).await? {
        Some(b) => serde_json::from_slice::<serde_json::Value>(&b)?["state"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
        None => "local".to_owned(),
    };
    let mut status = SweepStatus {
        sweep: id.to_owned(),
        state,
        order: plan.kinds().iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    };
    let mut open = Vec::new();
    for stage in &plan.stages {
        let counts = status.kinds.entry(stage.kind.to_string()).or_default();
        counts.stages += 1;
        if store.get_opt(&keys::manifest(stage.id)).await?.is_some() {
            counts.done += 1;
        } else {
            open.push((stage.id, stage.kind.clone()));
        }
    }
    let ids: Vec<_> = open.iter().map(|(id, _)| *id).collect();
    let states = broker.task_states(&ids).await?;
    let errors = broker.task_errors(&ids).await?;
    for (((id, kind), state), error) in open.iter().zip(states).zip(errors) {
        let counts = status.kinds.entry(kind.to_string()).or_default();
        match state {
            Some(TaskState::Queued) => counts.queued += 1,
            Some(TaskState::Leased) => counts.running += 1,
            Some(TaskState::Retry) => counts.retrying += 1,
            Some(TaskState::Dead) => counts.dead += 1,
            None => counts.waiting += 1,
        }
        if let Some(e) = error {
            status.errors.push(format!("{kind} {}: {e}", id.short()));
        }
    }
    Ok(status)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (broker, store) = args.cluster.open().await?;
    let (queued, leased, retry, dead) = broker.counts().await?;
    let workers = broker.workers().await?;
    let sweep = match &args.sweep {
        Some(id) => Some(sweep_status(&broker, &store, id).await?),
        None => None,
    };
    if args.json {
        let value = serde_json::json!({
            "queues": queued.iter().map(|(q, n)| (q.clone(), *n)).collect::<BTreeMap<_, _>>(),
            "leased": leased, "retrying": retry, "dead": dead,
            "workers": workers.iter().map(|(id, v)| serde_json::json!({"id": id, "status": v})).collect::<Vec<_>>(),
            "sweeps": broker.active_sweeps().await?.into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
            "sweep": sweep,
        });
        outln!("{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(s) = &sweep {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header([
            "stage kind",
            "stages",
            "done",
            "queued",
            "running",
            "retrying",
            "dead",
            "waiting",
        ]);
        for kind in &s.order {
            if let Some(c) = s.kinds.get(kind) {
                table.add_row([
                    kind.to_string(),
                    c.stages.to_string(),
                    c.done.to_string(),
                    c.queued.to_string(),
                    c.running.to_string(),
                    c.retrying.to_string(),
                    c.dead.to_string(),
                    c.waiting.to_string(),
                ]);
            }
        }
        let t = s.totals();
        table.add_row([
            "total".to_owned(),
            t.stages.to_string(),
            t.done.to_string(),
            t.queued.to_string(),
            t.running.to_string(),
            t.retrying.to_string(),
            t.dead.to_string(),
            t.waiting.to_string(),
        ]);
        outln!("sweep {} ({})\n{table}", s.sweep, s.state)?;
        for e in s.errors.iter().take(10) {
            outln!("  error: {e}")?;
        }
    }
    let queues: Vec<String> = queued.iter().map(|(q, n)| format!("{q} {n}")).collect();
    outln!(
        "queued: {}; leased {leased}, retrying {retry}, dead {dead}",
        queues.join(", ")
    )?;
    outln!("workers: {}", workers.len())?;
    for (id, v) in &workers {
        let running = v["running"].as_str().unwrap_or("idle");
        outln!("  {id} [{}] {running}", v["device"].as_str().unwrap_or("?"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a sweep with a progress bar per stage kind until it is no longer
/// active, then prints its results table. Exit 0 when it finished, 1 otherwise.
pub async fn follow(
    broker: &Broker,
    store: &Store,
    id: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let multi = MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let style =
        ProgressStyle::with_template("{prefix:>10} [{bar:30.green}] {pos}/{len} {msg} eta {eta}")
            .expect("valid template")
            .progress_chars("=> ");
    let state = loop {
        let status = sweep_status(broker, store, id).await?;
        for (kind, c) in &status.kinds {
            let bar = bars.entry(kind.clone()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(c.stages as u64));
                b.set_style(style.clone());
                b.set_prefix(kind.clone());
                b
            });
            bar.set_position(c.done as u64);
            bar.set_message(format!(
                "running {} queued {} dead {}",
                c.running, c.queued, c.dead
            ));
        }
        if status.state != "active" {
            break status.state;
        }
        if let Some(e) = status.errors.last() {
            let _ = multi.println(format!("latest failure: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for bar in bars.values() {
        bar.finish_and_clear();
    }
    let plan = find_sweep(id, store).await?.plan();
    let outcomes = subliminal_results::collect(store, &plan).await?;
    let table = subliminal_results::build(&plan, &outcomes);
    if json {
        outln!("{}", table.to_json()?)?;
    } else {
        outln!("{}", table.to_table())?;
    }
    eprintln!("sweep {id} {state}");
    Ok(if state == "done" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
