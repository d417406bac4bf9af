//! The worker daemon: lease a stage from Redis, run it with the same
//! executor as local mode, acknowledge it; forever, until told to stop.
//!
//! - A heartbeat renews the lease while the stage runs (stages can run for
//!   hours). If the lease is lost (expired and redelivered, or Redis lost
//!   it) or the sweep is cancelled, the stage stops at its next step.
//! - The acknowledgement carries the lease's fencing token: a worker that
//!   lost its lease is refused, and its manifest (create-if-absent) changes
//!   nothing.
//! - Shutdown (SIGTERM, SIGINT: a spot node's preemption notice): stop
//!   leasing; a stage that keeps progress checkpoints (training) is stopped
//!   at once, saves one, and is released as preempted (no attempt counted)
//!   for another worker to resume; any other stage gets the grace period,
//!   then is stopped and released for redelivery.
//! - Redis or the store unreachable: log, back off, retry; never exit, never
//!   drop the task (its lease expires and it is redelivered).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use subliminal_broker::{decode_body, Broker, Failed, Lease, Renewal};
use subliminal_shared::metrics::metrics;
use subliminal_shared::stage::StageId;
use subliminal_shared::store::Store;
use tokio::sync::watch;
use tracing::Instrument;

use crate::device::describe;
use crate::execute::{execute, Completion};
use crate::stages::{Progress, StageEnv};

pub struct Daemon {
    pub broker: Broker,
    pub store: Store,
    pub env: StageEnv,
    pub queues: Vec<String>,
    pub worker_id: String,
    pub lease: Duration,
    pub grace: Duration,
    /// First retry delay after a failed stage; doubles with each attempt.
    pub retry_backoff: Duration,
}

/// Why a running stage was stopped from outside (shutdown is told apart by
/// the shutdown signal itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    LeaseLost,
    Cancelled,
}

impl Daemon {
    /// Serves until `shutdown` turns true.
    pub async fn serve(&self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        tracing::info!(worker = %self.worker_id, queues = ?self.queues, device = %describe(self.env.device), "worker started");
        metrics().worker_up.set(1);
        let mut idle = Duration::from_millis(50);
        let mut trouble = Duration::from_millis(200);
        while !*shutdown.borrow() {
            self.heartbeat(None).await;
            let lease = match self
                .broker
                .lease(&self.queues, &self.worker_id, self.lease.as_millis() as i64)
                .await
            {
                Ok(lease) => {
                    trouble = Duration::from_millis(200);
                    lease
                }
                Err(e) => {
                    metrics().redis_errors.inc();
                    tracing::warn!("cannot lease from Redis: {e:#}; retrying in {trouble:?}");
                    wait_or_shutdown(&mut shutdown, trouble).await;
                    trouble = (trouble * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            match lease {
                None => {
                    wait_or_shutdown(&mut shutdown, idle).await;
                    idle = (idle * 2).min(Duration::from_millis(500));
                }
                Some(lease) => {
                    idle = Duration::from_millis(50);
                    self.handle(lease, &mut shutdown).await;
                }
            }
        }
        let _ = self.broker.worker_gone(&self.worker_id).await;
        metrics().worker_up.set(0);
        tracing::info!(worker = %self.worker_id, "worker stopped");
        Ok(())
    }

    async fn heartbeat(&self, running: Option<(&str, &str)>) {
        let status = serde_json::json!({
            "queues": self.queues,
            "device": describe(self.env.device),
            "running": running.map(|(kind, id)| format!("{kind} {id}")),
            "heartbeat_ms": subliminal_broker::now_ms(),
        });
        match self.broker.worker_heartbeat(&self.worker_id, &status).await {
            Ok(()) => metrics()
                .worker_heartbeat
                .set(subliminal_shared::manifest::now()),
            Err(e) => tracing::debug!("cannot record heartbeat: {e:#}"),
        }
    }

    async fn handle(&self, lease: Lease, shutdown: &mut watch::Receiver<bool>) {
        let body = match decode_body(&lease.body) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(stage = %lease.stage, "dead-lettering task: {e:#}");
                let outcome = self.fail(&lease, &format!("{e:#}"), true).await;
                metrics()
                    .stages
                    .with_label_values(&["unknown", outcome])
                    .inc();
                return;
            }
        };
        let stage = body.stage;
        let span = tracing::info_span!("stage", sweep = %body.sweep, stage = %stage.id, kind = %stage.kind);
        let kind = stage.kind.as_str();
        metrics().worker_running.with_label_values(&[kind]).inc();
        self.run_leased(lease, &body.sweep, stage.clone(), shutdown)
            .instrument(span)
            .await;
        metrics().worker_running.with_label_values(&[kind]).dec();
    }

    async fn run_leased(
        &self,
        lease: Lease,
        sweep: &str,
        stage: subliminal_shared::stage::StageSpec,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let short = stage.id.short();
        let kind = stage.kind.as_str();
        tracing::info!(
            attempt = lease.attempt,
            "running stage {} {short} of sweep {sweep}",
            stage.kind
        );
        self.heartbeat(Some((stage.kind.as_str(), &short))).await;

        let env = Arc::new(self.env.with_own_stop());
        let (stop_tx, mut stop_rx) = watch::channel(None::<StopReason>);
        let beat = {
            let broker = self.broker.clone();
            let lease = lease.clone();
            let env = env.clone();
            let every = self.lease / 3;
            let lease_ms = self.lease.as_millis() as i64;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let reason = match broker.renew(&lease, lease_ms).await {
                        Ok(Renewal::Renewed) => continue,
                        Ok(Renewal::Lost) => StopReason::LeaseLost,
                        Ok(Renewal::Cancelled) => StopReason::Cancelled,
                        Err(e) => {
                            tracing::warn!("cannot renew the lease: {e:#}; retrying");
                            continue;
                        }
                    };
                    env.stop.store(true, Ordering::Relaxed);
                    let _ = stop_tx.send(Some(reason));
                    return;
                }
            })
        };

        let store = self.store.clone();
        let spec = stage.clone();
        let run_env = env.clone();
        let progress_kind = kind.to_owned();
        let progress = Arc::new(move |p: Progress| {
            let m = metrics();
            if let Some(loss) = p.loss {
                m.training_loss
                    .with_label_values(&[&progress_kind])
                    .set(loss);
            }
            if let Some(rate) = p.samples_per_second {
                m.training_samples_per_second
                    .with_label_values(&[&progress_kind])
                    .set(rate);
            }
        });
        let mut run = tokio::spawn(
            async move { execute(&store, &spec, &run_env, progress).await }.in_current_span(),
        );
        let mut shutdown_at: Option<tokio::time::Instant> = None;
        let result = loop {
            let grace_over = async {
                match shutdown_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                joined = &mut run => break joined.map_err(anyhow::Error::from).and_then(|r| r),
                _ = shutdown.changed(), if shutdown_at.is_none() => {
                    if *shutdown.borrow() {
                        if env.resumable.load(Ordering::Relaxed) {
                            tracing::info!("shutting down: stopping stage {short} at its next step, with its progress saved (up to {:?})", self.grace);
                            env.stop.store(true, Ordering::Relaxed);
                        } else {
                            tracing::info!("shutting down: giving stage {short} up to {:?} to finish", self.grace);
                        }
                        shutdown_at = Some(tokio::time::Instant::now() + self.grace);
                    }
                }
                _ = grace_over => {
                    tracing::info!("grace period over: stopping stage {short}");
                    env.stop.store(true, Ordering::Relaxed);
                    let _ = stop_rx.borrow_and_update();
                    shutdown_at = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
            }
        };
        beat.abort();
        let stopped = *stop_rx.borrow_and_update();
        let shutting_down = *shutdown.borrow();
        let count = |outcome: &str| metrics().stages.with_label_values(&[kind, outcome]).inc();
        match (result, stopped) {
            (Ok(done), _) => {
                match &done {
                    Completion::Reused => {
                        count("reused");
                        tracing::info!("stage {short} was already done");
                    }
                    Completion::Computed { manifest, recorded } => {
                        if !recorded {
                            tracing::warn!("stage {short}: another run's manifest was there first; ours is dropped");
                        }
                        count("success");
                        metrics()
                            .stage_duration
                            .with_label_values(&[kind])
                            .observe(manifest.duration_s);
                        tracing::info!(
                            "finished stage {kind} {short} in {:.1}s",
                            manifest.duration_s
                        );
                    }
                }
                self.complete(&lease, &short).await;
                self.track(sweep, stage.id, &short).await;
            }
            (Err(e), Some(StopReason::LeaseLost)) => {
                count("lost");
                tracing::warn!("stopped stage {short}: the lease was lost ({e:#})");
            }
            (Err(_), Some(StopReason::Cancelled)) => {
                count("cancelled");
                tracing::info!("stopped stage {short}: its sweep was cancelled");
                self.fail(&lease, "sweep cancelled", true).await;
            }
            (Err(_), _) if shutting_down && env.stopped() => {
                let preempted = env.resumable.load(Ordering::Relaxed);
                count(if preempted { "preempted" } else { "released" });
                match self.broker.release(&lease).await {
                    Ok(true) if preempted => tracing::info!(
                        "preempted: released stage {short} with its progress saved, for another worker to resume"
                    ),
                    Ok(true) => tracing::info!("released stage {short} for redelivery"),
                    Ok(false) => {
                        tracing::warn!("could not release stage {short}: the lease was lost")
                    }
                    Err(e) => tracing::warn!(
                        "could not release stage {short} ({e:#}); its lease will expire"
                    ),
                }
            }
            (Err(e), _) => {
                tracing::error!("stage {kind} {short} failed: {e:#}");
                let outcome = self.fail(&lease, &format!("{e:#}"), false).await;
                count(outcome);
            }
        }
    }

    /// Logs the stage's figures to MLflow when its sweep was submitted with
    /// `--track`. The stage is done whatever the tracker says: a failure is
    /// a warning, and `subliminal results --track` can log the sweep again.
    async fn track(&self, sweep: &str, stage: StageId, short: &str) {
        match subliminal_results::tracking::log_stage(&self.store, sweep, stage).await {
            Ok(Some(logged)) => tracing::info!(
                "tracked stage {short} in MLflow ({} new run(s), {} updated)",
                logged.created,
                logged.updated
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot track stage {short} in MLflow: {e:#}"),
        }
    }

    /// Acknowledges, retrying while Redis is away; a refusal means the lease was lost.
    async fn complete(&self, lease: &Lease, short: &str) {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.broker.complete(lease).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!("completion of stage {short} refused: the lease was lost; its output stands in the store");
                    return;
                }
                Err(e) => {
                    tracing::warn!("cannot acknowledge stage {short}: {e:#}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                    if wait >= self.lease {
                        tracing::warn!("giving up the acknowledgement of {short}: its lease has expired and it will be redelivered (and found done)");
                        return;
                    }
                }
            }
        }
    }

    /// Records a failure; returns where the task went, as a metric outcome.
    async fn fail(&self, lease: &Lease, error: &str, permanent: bool) -> &'static str {
        let backoff = self.retry_backoff.as_millis() as i64;
        match self.broker.fail(lease, error, backoff, permanent).await {
            Ok(Failed::WillRetry) => {
                tracing::info!(stage = %lease.stage, "will retry after backoff");
                "retried"
            }
            Ok(Failed::Dead) => {
                tracing::warn!(stage = %lease.stage, "dead-lettered after {} attempt(s)", lease.attempt);
                "dead"
            }
            Ok(Failed::Dropped) => "cancelled",
            Ok(Failed::Refused) => {
                tracing::warn!(stage = %lease.stage, "failure not recorded: the lease was lost");
                "lost"
            }
            Err(e) => {
                metrics().redis_errors.inc();
                tracing::warn!(stage = %lease.stage, "cannot record the failure ({e:#}); the lease will expire and the task be redelivered");
                "failed"
            }
        }
    }
}

async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.changed() => {}
    }
}
