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

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use subliminal_shared::broker::{now_ms, queue_for, Broker, TaskBody, TaskState};
use subliminal_shared::metrics::metrics;
use subliminal_shared::plan::Plan;
use subliminal_shared::spec::Source;
use subliminal_shared::stage::StageId;
use subliminal_shared::store::{keys, Store};
use subliminal_shared::sweep;

/// A worker whose heartbeat is older than this is counted stale.
const STALE_WORKER_MS: i64 = 60_000;

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
    sweeps: HashMap<String, SweepState>,
    last_resync: Instant,
}

struct SweepState {
    plan: Plan,
    /// The plan's stage ids, to match completion events without a scan.
    stages: HashSet<StageId>,
    priority: i64,
    done: HashSet<StageId>,
    enqueued: HashSet<StageId>,
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
            sweeps: HashMap::new(),
            last_resync: Instant::now(),
        }
    }

    pub async fn tick(&mut self) -> anyhow::Result<()> {
        let ttl = (self.tick.as_millis() as i64 * 10).max(3000);
        let m = metrics();
        if !self.broker.lead(&self.me, ttl).await? {
            m.scheduler_leader.set(0);
            for id in self.sweeps.keys() {
                forget_sweep_metrics(id);
            }
            self.sweeps.clear();
            return Ok(());
        }
        m.scheduler_leader.set(1);
        if !self.broker.ensure_epoch().await? {
            tracing::warn!("Redis holds no subliminal state (new, flushed or restarted empty): rebuilding queues from the store");
            self.rebuild_from_store().await?;
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
                match self.load(id, *priority).await {
                    Ok(state) => {
                        tracing::info!(sweep = %id, "scheduling sweep: {} stages, {} done", state.plan.stages.len(), state.done.len());
                        self.sweeps.insert(id.clone(), state);
                    }
                    Err(e) => {
                        tracing::error!(sweep = %id, "cannot load sweep: {e:#}; marking it failed");
                        self.close(id, "failed").await?;
                    }
                }
            }
        }
        for id in self.broker.completions(10_000).await? {
            for sweep in self.sweeps.values_mut() {
                if sweep.stages.contains(&id) {
                    sweep.done.insert(id);
                }
            }
        }
        let (redelivered, dead) = self.broker.reap(1000).await?;
        m.lease_redeliveries.inc_by(redelivered as u64);
        m.dead_letters.inc_by(dead as u64);
        if redelivered + dead > 0 {
            tracing::warn!("expired leases: {redelivered} redelivered, {dead} dead-lettered");
        }
        self.broker.promote(1000).await?;
        if self.last_resync.elapsed() >= self.resync {
            self.resync_vanished().await?;
            self.last_resync = Instant::now();
        }
        self.enqueue_ready().await?;
        self.close_finished().await?;
        self.export_metrics().await
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
        for (queue, age) in self.broker.oldest_ages().await? {
            m.queue_oldest_age.with_label_values(&[&queue]).set(age);
        }
        let now = now_ms();
        let (mut busy, mut idle, mut stale) = (0, 0, 0);
        for (_, status) in self.broker.workers().await? {
            let beat = status["heartbeat_ms"].as_i64().unwrap_or(0);
            if now - beat > STALE_WORKER_MS {
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
                .set(sweep.done.len() as i64);
            m.sweep_stages
                .with_label_values(&[id, "total"])
                .set(sweep.plan.stages.len() as i64);
        }
        Ok(())
    }

    async fn rebuild_from_store(&mut self) -> anyhow::Result<()> {
        self.sweeps.clear();
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

    async fn load(&self, id: &str, priority: i64) -> anyhow::Result<SweepState> {
        let key = keys::sweep_file(id);
        let bytes = self.store.get_opt(&key).await?.ok_or_else(|| {
            anyhow::anyhow!("{key} is missing from store {}", self.store.location())
        })?;
        let source = Source::new(
            format!("{}/{key}", self.store.location()),
            String::from_utf8(bytes.to_vec())?,
        );
        let plan = sweep::parse(&source)?.plan();
        let mut done = HashSet::new();
        for stage in &plan.stages {
            if self
                .store
                .get_opt(&keys::manifest(stage.id))
                .await?
                .is_some()
            {
                done.insert(stage.id);
            }
        }
        Ok(SweepState {
            stages: plan.stages.iter().map(|s| s.id).collect(),
            plan,
            priority,
            done,
            enqueued: HashSet::new(),
        })
    }

    async fn enqueue_ready(&mut self) -> anyhow::Result<()> {
        for (sweep_id, sweep) in self.sweeps.iter_mut() {
            let ready: Vec<_> = sweep
                .plan
                .ready(&sweep.done)
                .filter(|s| !sweep.enqueued.contains(&s.id))
                .cloned()
                .collect();
            let bodies = ready
                .iter()
                .map(|stage| {
                    Ok(TaskBody {
                        version: subliminal_shared::broker::BODY_VERSION,
                        sweep: sweep_id.clone(),
                        queue: queue_for(stage)?.to_owned(),
                        priority: sweep.priority,
                        stage: stage.clone(),
                    })
                })
                .collect::<anyhow::Result<Vec<TaskBody>>>()?;
            self.broker.enqueue_many(&bodies, self.max_attempts).await?;
            sweep.enqueued.extend(ready.iter().map(|s| s.id));
        }
        Ok(())
    }

    /// Stages we enqueued whose task is gone without a completion event:
    /// done in the store after all, or to be enqueued again.
    async fn resync_vanished(&mut self) -> anyhow::Result<()> {
        for sweep in self.sweeps.values_mut() {
            let open: Vec<StageId> = sweep.enqueued.difference(&sweep.done).copied().collect();
            if open.is_empty() {
                continue;
            }
            let states = self.broker.task_states(&open).await?;
            for (id, state) in open.into_iter().zip(states) {
                if state.is_none() {
                    if self.store.get_opt(&keys::manifest(id)).await?.is_some() {
                        sweep.done.insert(id);
                    } else {
                        sweep.enqueued.remove(&id);
                    }
                }
            }
        }
        Ok(())
    }

    async fn close_finished(&mut self) -> anyhow::Result<()> {
        let mut finished = Vec::new();
        for (id, sweep) in &self.sweeps {
            if sweep.done.len() == sweep.plan.stages.len() {
                finished.push((id.clone(), "done"));
                continue;
            }
            // Not all done: finished anyway if every open stage is dead or needs a dead one.
            let open: Vec<StageId> = sweep.enqueued.difference(&sweep.done).copied().collect();
            if open.is_empty() {
                continue;
            }
            let states = self.broker.task_states(&open).await?;
            let dead: Vec<StageId> = open
                .iter()
                .zip(&states)
                .filter(|(_, s)| **s == Some(TaskState::Dead))
                .map(|(id, _)| *id)
                .collect();
            if dead.len() < open.len() {
                continue;
            }
            let mut blocked: HashSet<StageId> = dead.iter().copied().collect();
            for d in &dead {
                blocked.extend(sweep.plan.descendants(*d));
            }
            if sweep
                .plan
                .stages
                .iter()
                .all(|s| sweep.done.contains(&s.id) || blocked.contains(&s.id))
            {
                finished.push((id.clone(), "failed"));
            }
        }
        for (id, state) in finished {
            tracing::info!(sweep = %id, "sweep {state}");
            self.close(&id, state).await?;
            self.sweeps.remove(&id);
            forget_sweep_metrics(&id);
        }
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
