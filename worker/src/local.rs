//! The local runner: a whole sweep in this process, on this machine, with no
//! services. It walks the stage DAG, runs up to `jobs` ready stages at once
//! through [`crate::execute`], and shows progress.
//!
//! A stage that fails blocks only the stages that need it; every other trial
//! goes on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use subliminal_shared::manifest::{inspect, StageState};
use subliminal_shared::plan::Plan;
use subliminal_shared::stage::{StageId, StageKind};
use subliminal_shared::store::{keys, Store};
use tokio::task::JoinSet;

use crate::execute::{execute, Completion};
use crate::stages::{Progress, StageEnv};

pub struct LocalRunner {
    pub store: Store,
    pub env: Arc<StageEnv>,
    pub jobs: usize,
    /// Draw progress bars (on a terminal); otherwise log one line per stage.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Stages this run computed.
    pub computed: Vec<(StageId, StageKind)>,
    /// Stages that were already done in the store.
    pub reused: usize,
    pub failed: Vec<(StageId, StageKind, String)>,
    /// Stages not run because a stage they need failed.
    pub blocked: usize,
    pub elapsed: Duration,
}

impl LocalRunner {
    pub async fn run(&self, plan: &Plan) -> anyhow::Result<RunReport> {
        let clock = Instant::now();
        let multi = MultiProgress::with_draw_target(if self.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let mut report = RunReport::default();
        let mut done: HashSet<StageId> = HashSet::new();
        for stage in &plan.stages {
            match inspect(&self.store, stage.id).await? {
                StageState::Done(_) => {
                    done.insert(stage.id);
                }
                StageState::Corrupt(reason) => {
                    self.say(
                        &multi,
                        format!(
                            "! {} {} is corrupt ({reason}): it will run again",
                            stage.kind,
                            stage.id.short()
                        ),
                    );
                    self.store.delete(&keys::manifest(stage.id)).await?;
                }
                StageState::Missing => {}
            }
        }
        report.reused = done.len();
        let overall = multi.add(ProgressBar::new(plan.stages.len() as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:>24} [{bar:30.green}] {pos}/{len} stages, {elapsed} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        overall.set_prefix(plan.sweep.clone());
        overall.set_position(done.len() as u64);

        // Not done, not running, not blocked by a failure.
        let mut pending: HashSet<StageId> = plan
            .stages
            .iter()
            .map(|s| s.id)
            .filter(|id| !done.contains(id))
            .collect();
        let mut running: JoinSet<(StageId, StageKind, Duration, anyhow::Result<Completion>)> =
            JoinSet::new();
        loop {
            while running.len() < self.jobs.max(1) {
                let Some(next) = plan.ready(&done).find(|s| pending.contains(&s.id)) else {
                    break;
                };
                pending.remove(&next.id);
                let stage = next.clone();
                let bar = multi.insert_before(&overall, ProgressBar::new(1000));
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>24} [{bar:30.cyan}] {elapsed} {msg}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(format!("{} {}", stage.kind, stage.id.short()));
                let store = self.store.clone();
                let env = self.env.clone();
                running.spawn(async move {
                    let started = Instant::now();
                    let shown = bar.clone();
                    let progress = Arc::new(move |p: Progress| {
                        shown.set_position((p.fraction.clamp(0.0, 1.0) * 1000.0) as u64);
                        shown.set_message(p.message);
                    });
                    let result = execute(&store, &stage, &env, progress).await;
                    bar.finish_and_clear();
                    (stage.id, stage.kind.clone(), started.elapsed(), result)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (id, kind, took, result) = joined?;
            match result {
                Ok(_) => {
                    done.insert(id);
                    self.say(
                        &multi,
                        format!("done {kind} {} in {:.1}s", id.short(), took.as_secs_f64()),
                    );
                    report.computed.push((id, kind));
                }
                Err(e) => {
                    let blocked = plan.descendants(id);
                    pending.retain(|id| !blocked.contains(id));
                    report.blocked += blocked.len();
                    self.say(
                        &multi,
                        format!(
                            "FAILED {kind} {}: {e:#} ({} dependent stages will not run)",
                            id.short(),
                            blocked.len()
                        ),
                    );
                    report.failed.push((id, kind, format!("{e:#}")));
                }
            }
            overall.set_position((done.len() + report.failed.len() + report.blocked) as u64);
        }
        overall.finish_and_clear();
        report.elapsed = clock.elapsed();
        Ok(report)
    }

    fn say(&self, multi: &MultiProgress, line: String) {
        if self.progress {
            let _ = multi.println(line);
        } else {
            tracing::info!("{line}");
        }
    }
}
