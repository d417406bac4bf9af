//! The local runner: a whole sweep in this process, on this machine, with no
//! services. It walks the stage DAG, runs up to `jobs` ready stages at once
//! through [`crate::execute`], and shows progress.
//!
//! With `ensemble` above 1, ready stages that share a group key (K models of
//! one shape and schedule) run as one batched job of up to `ensemble`
//! stages; the ready ones are spread over the free jobs so no core idles.
//!
//! A stage that fails blocks only the stages that need it; every other trial
//! goes on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use subliminal_shared::manifest::{inspect, StageState};
use subliminal_shared::plan::Plan;
use subliminal_shared::stage::{StageId, StageKind, StageSpec};
use subliminal_shared::store::{keys, Store};
use tokio::task::JoinSet;

use crate::execute::{execute_group, Completion};
use crate::experiments::group_key;
use crate::stages::{Progress, StageEnv};

pub struct LocalRunner {
    pub store: Store,
    pub env: Arc<StageEnv>,
    pub jobs: usize,
    /// The most stages one batched job may hold (1: every stage alone).
    pub ensemble: usize,
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
        type Finished = (
            Duration,
            Vec<(StageId, StageKind, anyhow::Result<Completion>)>,
        );
        let mut running: JoinSet<Finished> = JoinSet::new();
        loop {
            while running.len() < self.jobs.max(1) {
                let group =
                    self.next_group(plan, &done, &pending, self.jobs.max(1) - running.len());
                if group.is_empty() {
                    break;
                }
                for stage in &group {
                    pending.remove(&stage.id);
                }
                let bar = multi.insert_before(&overall, ProgressBar::new(1000));
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>24} [{bar:30.cyan}] {elapsed} {msg}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(match group.as_slice() {
                    [one] => format!("{} {}", one.kind, one.id.short()),
                    many => format!("{} ×{}", many[0].kind, many.len()),
                });
                let store = self.store.clone();
                let env = self.env.clone();
                running.spawn(async move {
                    let started = Instant::now();
                    let shown = bar.clone();
                    let progress = Arc::new(move |p: Progress| {
                        shown.set_position((p.fraction.clamp(0.0, 1.0) * 1000.0) as u64);
                        shown.set_message(p.message);
                    });
                    let results = execute_group(&store, &group, &env, progress).await;
                    bar.finish_and_clear();
                    let ended = group
                        .iter()
                        .zip(results)
                        .map(|(s, r)| (s.id, s.kind.clone(), r))
                        .collect();
                    (started.elapsed(), ended)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (took, ended) = joined?;
            // A job's stages share its time; all are accounted for before
            // the next jobs are formed, so a finished group readies whole groups.
            let took = took / ended.len().max(1) as u32;
            for (id, kind, result) in ended {
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
            }
            overall.set_position((done.len() + report.failed.len() + report.blocked) as u64);
        }
        overall.finish_and_clear();
        report.elapsed = clock.elapsed();
        Ok(report)
    }

    /// The next job: a ready stage, and with it (when it has a group key and
    /// `ensemble` > 1) other ready stages of the same key, as many as spread
    /// the ready ones evenly over the `free` jobs, at most `ensemble`.
    fn next_group(
        &self,
        plan: &Plan,
        done: &HashSet<StageId>,
        pending: &HashSet<StageId>,
        free: usize,
    ) -> Vec<StageSpec> {
        let mut ready = plan.ready(done).filter(|s| pending.contains(&s.id));
        let Some(first) = ready.next() else {
            return Vec::new();
        };
        let key = if self.ensemble > 1 {
            group_key(first)
        } else {
            None
        };
        let Some(key) = key else {
            return vec![first.clone()];
        };
        let mates: Vec<&StageSpec> = ready
            .filter(|s| group_key(s).as_deref() == Some(key.as_str()))
            .collect();
        let size = (mates.len() + 1)
            .div_ceil(free.max(1))
            .clamp(1, self.ensemble);
        std::iter::once(first)
            .chain(mates.into_iter().take(size - 1))
            .cloned()
            .collect()
    }

    fn say(&self, multi: &MultiProgress, line: String) {
        if self.progress {
            let _ = multi.println(line);
        } else {
            tracing::info!("{line}");
        }
    }
}
