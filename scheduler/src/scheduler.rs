//! The scheduling loop. Each tick, the scheduler that holds leadership:
//!
//! 1. notices a new or emptied Redis (the epoch key is gone) and rebuilds:
//!    every sweep the store records as active is registered again, and its
//!    done stages are read from the store, so nothing done runs again;
//! 2. loads sweeps newly registered by `subliminal submit`;
//! 3. takes completion events and marks those stages done;
//! 4. redelivers expired leases and ends finished backoffs;
//! 5. enqueues every stage whose inputs are done, once;
//! 6. closes sweeps whose stages are all done (or dead, or blocked by the dead).
//!
//! Any number of schedulers may run: one leads (a Redis key with a TTL), the
//! others wait. All state is rebuilt from the store and Redis, so a scheduler
//! can be restarted at any time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use subliminal_broker::{now_ms, Broker, EncodedTask, TaskState};
use subliminal_shared::metrics::metrics;
use subliminal_shared::spec::Source;
use subliminal_shared::stage::StageId;
use subliminal_shared::store::{keys, Store};
use subliminal_shared::sweep;

use crate::progress::SweepProgress;

/// Sweep ids are labels only while the sweep is active.
fn forget_sweep_metrics(sweep: &str) {
    for state in ["done", "total"] {
        let _ = metrics().sweep_stages.remove_label_values(&[sweep, state]);
    }
}

pub struct Scheduler {
    pub broker: Broker,
    pub store: Store,
    pub me: String,
    pub max_attempts: u32,
    pub tick: Duration,
    /// How often to re-check tasks that vanished without a completion.
    pub resync: Duration,
    /// A worker whose heartbeat is older than this is counted stale.
    pub stale_worker: Duration,
    sweeps: HashMap<String, SweepProgress>,
    last_resync: Instant,
    leading: bool,
}

impl Scheduler {
    pub fn new(
        broker: Broker,
        store: Store,
        me: String,
        max_attempts: u32,
        tick: Duration,
    ) -> Self {
        Self {
            broker,
            store,
            me,
            max_attempts,
            tick,
            resync: Duration::from_secs(5),
            stale_worker: Duration::from_secs(60),
            sweeps: HashMap::new(),
            last_resync: Instant::now(),
            leading: false,
        }
    }

    pub async fn tick(&mut self) -> anyhow::Result<()> {
        let ttl = (self.tick.as_millis() as i64 * 10).max(3000);
        let m = metrics();
        let leading = self.broker.lead(&self.me, ttl).await?;
        if leading != self.leading {
            if leading {
                tracing::info!(scheduler = %self.me, "leading: this scheduler schedules now");
            } else {
                tracing::info!(scheduler = %self.me, "no longer leading: another scheduler holds the lead");
            }
            self.leading = leading;
        }
        if !leading {
            m.scheduler_leader.set(0);
            for id in self.sweeps.keys() {
                forget_sweep_metrics(id);
            }
            self.sweeps.clear();
            return Ok(());
        }
        m.scheduler_leader.set(1);
        if !self.broker.has_epoch().await? {
            tracing::warn!("Redis holds no subliminal state (new, flushed or restarted empty): rebuilding queues from the store");
            self.rebuild_from_store().await?;
            self.broker.mark_epoch().await?;
        }
        let active: HashMap<String, i64> = self.broker.active_sweeps().await?.into_iter().collect();
        self.sweeps.retain(|id, _| {
            let keep = active.contains_key(id);
            if !keep {
                forget_sweep_metrics(id);
            }
            keep
        });
        for (id, priority) in &active {
            if !self.sweeps.contains_key(id) {
                self.load(id, *priority).await?;
            }
        }
        self.take_completions().await?;
        let (redelivered, dead) = self.broker.reap(1000).await?;
        m.lease_redeliveries.inc_by(redelivered.len() as u64);
        m.dead_letters.inc_by(dead.len() as u64);
        for id in &redelivered {
            tracing::warn!("redelivered stage {}: its lease expired", short(id));
        }
        for id in &dead {
            tracing::warn!(
                "dead-lettered stage {}: its lease expired on the last attempt",
                short(id)
            );
        }
        self.broker.promote(1000).await?;
        if self.last_resync.elapsed() >= self.resync {
            self.resync_vanished().await?;
            self.close_failed().await?;
            self.last_resync = Instant::now();
        }
        self.enqueue_ready().await?;
        self.close_done().await?;
        self.export_metrics().await
    }

    /// Starts scheduling a sweep registered in Redis. A store that cannot be
    /// read fails this pass (it is retried); a sweep file that is gone or
    /// does not parse fails the sweep.
    async fn load(&mut self, id: &str, priority: i64) -> anyhow::Result<()> {
        let source = self.sweep_source(id).await?;
        match source.map(|source| sweep::parse(&source)) {
            Some(Ok(checked)) => {
                let plan = checked.plan();
                let ids: Vec<StageId> = plan.stages.iter().map(|s| s.id).collect();
                let done = self.store.stages_with_manifest(&ids).await?;
                drop(ids);
                let state = SweepProgress::new(plan, id, priority, &done)?;
                release_freed_memory();
                tracing::info!(
                    sweep = %id,
                    "scheduling sweep: {} stages, {} done; holding {} bytes ({} per stage)",
                    state.len(),
                    state.done(),
                    state.held_bytes(),
                    state.held_bytes() / state.len().max(1)
                );
                self.sweeps.insert(id.to_owned(), state);
            }
            Some(Err(e)) => {
                tracing::error!(sweep = %id, "cannot load sweep: {e:#}; marking it failed");
                self.close(id, "failed").await?;
            }
            None => {
                tracing::error!(
                    sweep = %id,
                    "{} is missing from store {}; marking the sweep failed",
                    keys::sweep_file(id),
                    self.store.location()
                );
                self.close(id, "failed").await?;
            }
        }
        Ok(())
    }

    /// Marks the stages of completion events done.
    async fn take_completions(&mut self) -> anyhow::Result<()> {
        loop {
            let ids = self.broker.completions(10_000).await?;
            for id in &ids {
                for sweep in self.sweeps.values_mut() {
                    sweep.mark_done(*id);
                }
            }
            if ids.len() < 10_000 {
                return Ok(());
            }
        }
    }

    /// Queue, fleet and sweep gauges, read from Redis and this scheduler's sweeps.
    async fn export_metrics(&self) -> anyhow::Result<()> {
        let m = metrics();
        let (queued, leased, retrying, dead) = self.broker.counts().await?;
        for (queue, n) in &queued {
            m.queue_tasks.with_label_values(&[queue]).set(*n);
        }
        let total_queued: i64 = queued.iter().map(|(_, n)| n).sum();
        for (state, n) in [
            ("queued", total_queued),
            ("leased", leased),
            ("retrying", retrying),
            ("dead", dead),
        ] {
            m.tasks.with_label_values(&[state]).set(n);
        }
        let mut priorities: Vec<i64> = self.sweeps.values().map(|s| s.priority).collect();
        priorities.push(0);
        priorities.sort_unstable();
        priorities.dedup();
        for (queue, age) in self.broker.oldest_ages(&priorities).await? {
            m.queue_oldest_age.with_label_values(&[&queue]).set(age);
        }
        let now = now_ms();
        let stale_ms = self.stale_worker.as_millis() as i64;
        let (mut busy, mut idle, mut stale) = (0, 0, 0);
        for (_, status) in self.broker.workers().await? {
            let beat = status["heartbeat_ms"].as_i64().unwrap_or(0);
            if now - beat > stale_ms {
                stale += 1;
            } else if status["running"].is_string() {
                busy += 1;
            } else {
                idle += 1;
            }
        }
        for (state, n) in [("busy", busy), ("idle", idle), ("stale", stale)] {
            m.workers.with_label_values(&[state]).set(n);
        }
        m.sweeps_active.set(self.sweeps.len() as i64);
        for (id, sweep) in &self.sweeps {
            m.sweep_stages
                .with_label_values(&[id, "done"])
                .set(sweep.done() as i64);
            m.sweep_stages
                .with_label_values(&[id, "total"])
                .set(sweep.len() as i64);
        }
        Ok(())
    }

    /// Registers again every sweep the store records as active. A sweep this
    /// scheduler already holds keeps its plan and done set: Redis lost only
    /// its tasks in flight, and those are checked in the store one by one
    /// (done, or ready again), where a fresh load would read the whole plan
    /// and list every manifest.
    async fn rebuild_from_store(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut rechecked = 0;
        for sweep in self.sweeps.values_mut() {
            let in_flight = sweep.all_enqueued();
            let done = self.store.stages_with_manifest(&in_flight).await?;
            rechecked += in_flight.len();
            for id in in_flight {
                if done.contains(&id) {
                    sweep.mark_done(id);
                } else {
                    sweep.requeue(id);
                }
            }
        }
        if !self.sweeps.is_empty() {
            tracing::info!(
                "kept the plans of {} sweep(s); {rechecked} stage(s) in flight rechecked in {:.2}s",
                self.sweeps.len(),
                started.elapsed().as_secs_f64()
            );
        }
        for sweep in self.store.list_folders("sweeps").await? {
            let Some(bytes) = self.store.get_opt(&keys::sweep_status(&sweep)).await? else {
                continue;
            };
            let status: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if status["state"] == "active" {
                let priority = status["priority"].as_i64().unwrap_or(0);
                self.broker.register_sweep(&sweep, priority).await?;
                tracing::info!(sweep = %sweep, "re-registered active sweep from the store");
            }
        }
        Ok(())
    }

    /// The sweep file as submitted, or `None` when the store lacks it.
    async fn sweep_source(&self, id: &str) -> anyhow::Result<Option<Source>> {
        let key = keys::sweep_file(id);
        let Some(bytes) = self.store.get_opt(&key).await? else {
            return Ok(None);
        };
        Ok(Some(Source::new(
            format!("{}/{key}", self.store.location()),
            String::from_utf8_lossy(&bytes).into_owned(),
        )))
    }

    async fn enqueue_ready(&mut self) -> anyhow::Result<()> {
        /// Tasks per pipelined round trip.
        const CHUNK: usize = 10_000;
        for (sweep_id, sweep) in self.sweeps.iter_mut() {
            while sweep.has_ready() {
                let priority = sweep.priority;
                let ready = sweep.take_ready(CHUNK);
                let tasks: Vec<EncodedTask> = ready
                    .iter()
                    .map(|stage| EncodedTask {
                        stage: stage.id,
                        queue: stage.queue,
                        sweep: sweep_id,
                        priority,
                        body: stage.body,
                    })
                    .collect();
                let added = self
                    .broker
                    .enqueue_encoded(&tasks, self.max_attempts)
                    .await?;
                for (stage, added) in ready.iter().zip(added) {
                    if added {
                        tracing::debug!(
                            sweep = %sweep_id,
                            "enqueued stage {} {}",
                            stage.kind,
                            stage.id.short()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Stages we enqueued whose task is gone without a completion event:
    /// done in the store after all, or to be enqueued again. Each pass
    /// checks a bounded slice of each sweep, so a pass over a sweep of a
    /// million queued stages stays short.
    async fn resync_vanished(&mut self) -> anyhow::Result<()> {
        const SLICE: usize = 10_000;
        let mut vanished = Vec::new();
        for sweep in self.sweeps.values_mut() {
            let open = sweep.enqueued_slice(SLICE);
            if open.is_empty() {
                continue;
            }
            let states = self.broker.task_states(&open).await?;
            vanished.extend(
                open.into_iter()
                    .zip(states)
                    .filter(|(_, state)| state.is_none())
                    .map(|(id, _)| id),
            );
        }
        if vanished.is_empty() {
            return Ok(());
        }
        // A task completes and posts its event in one step: events for the
        // tasks just found gone are in the list now.
        self.take_completions().await?;
        let in_store = self.store.stages_with_manifest(&vanished).await?;
        for id in vanished {
            for sweep in self.sweeps.values_mut() {
                if in_store.contains(&id) {
                    sweep.mark_done(id);
                } else {
                    sweep.requeue(id);
                }
            }
        }
        Ok(())
    }

    async fn close_done(&mut self) -> anyhow::Result<()> {
        let finished: Vec<String> = self
            .sweeps
            .iter()
            .filter(|(_, s)| s.done() == s.len())
            .map(|(id, _)| id.clone())
            .collect();
        for id in finished {
            self.finish(&id, "done").await?;
        }
        Ok(())
    }

    /// Closes sweeps that are not all done but can go no further: every
    /// open stage is dead, or needs a dead one.
    async fn close_failed(&mut self) -> anyhow::Result<()> {
        let (_, _, _, dead_total) = self.broker.counts().await?;
        let mut failed = Vec::new();
        for (id, sweep) in &self.sweeps {
            let open = sweep.enqueued();
            // Cheap first: not enough dead tasks in all of Redis, or work still to enqueue.
            if open == 0 || (open as i64) > dead_total || sweep.has_ready() {
                continue;
            }
            let open = sweep.all_enqueued();
            let states = self.broker.task_states(&open).await?;
            if states.iter().any(|s| *s != Some(TaskState::Dead)) {
                continue;
            }
            if sweep.finished_with(&open) {
                failed.push(id.clone());
            }
        }
        for id in failed {
            self.finish(&id, "failed").await?;
        }
        Ok(())
    }

    async fn finish(&mut self, id: &str, state: &str) -> anyhow::Result<()> {
        tracing::info!(sweep = %id, "sweep {state}");
        self.close(id, state).await?;
        self.sweeps.remove(id);
        forget_sweep_metrics(id);
        Ok(())
    }

    async fn close(&self, sweep: &str, state: &str) -> anyhow::Result<()> {
        let priority = self.sweeps.get(sweep).map_or(0, |s| s.priority);
        let status = serde_json::json!({"state": state, "priority": priority});
        self.store
            .put(&keys::sweep_status(sweep), Bytes::from(status.to_string()))
            .await?;
        self.broker.finish_sweep(sweep, state).await
    }
}

/// Hands memory freed by the plan's expansion back to the system: the
/// allocator otherwise keeps it, and the scheduler would show the size of a
/// parsed million-stage plan long after it holds only the compact form.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The short form of a stage id as Redis holds it (the first 12 hex digits,
/// as `StageId::short` writes them).
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
