//! Prometheus metrics of the scheduler and the workers, and the HTTP
//! endpoint that serves them at `/metrics`.
//!
//! Names follow Prometheus conventions: a `subliminal_` prefix, base units
//! (seconds, bytes), `_total` on counters. No label takes unbounded values:
//! no task or stage ids; sweep ids only while the sweep is active (the
//! scheduler removes them when it closes a sweep).

use std::net::SocketAddr;
use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, histogram_opts, opts, Counter, Encoder, Gauge, GaugeVec, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};

/// Stage durations from 1 s to 24 h.
const STAGE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
    86400.0,
];

pub struct Metrics {
    pub registry: Registry,
    // Scheduler: queues, sweeps, fleet.
    pub queue_tasks: IntGaugeVec,
    pub tasks: IntGaugeVec,
    pub queue_oldest_age: GaugeVec,
    pub lease_redeliveries: IntCounter,
    pub dead_letters: IntCounter,
    pub sweep_stages: IntGaugeVec,
    pub sweeps_active: IntGauge,
    pub workers: IntGaugeVec,
    pub scheduler_leader: IntGauge,
    // Worker: stages and training.
    pub stages: IntCounterVec,
    pub stage_duration: HistogramVec,
    pub worker_up: IntGauge,
    pub worker_heartbeat: Gauge,
    pub worker_running: IntGaugeVec,
    pub training_loss: GaugeVec,
    pub training_samples_per_second: GaugeVec,
    pub checkpoints_written: IntCounter,
    pub stage_resumes: IntCounter,
    pub seconds_saved: Counter,
    pub out_of_memory_retries: IntCounter,
    pub gpu_memory_used: GaugeVec,
    pub gpu_memory_total: GaugeVec,
    // Both: the store and Redis.
    pub store_bytes: IntCounterVec,
    pub store_request_duration: HistogramVec,
    pub redis_errors: IntCounter,
    pub redis_connections: IntCounter,
    /// The name of every metric registered, with or without samples yet.
    declared: Vec<String>,
}

/// A registry that remembers every name registered in it: vector metrics
/// with no labels set yet are absent from `gather()`.
struct Registrar {
    registry: Registry,
    names: std::cell::RefCell<Vec<String>>,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(reg: &Registrar, metric: T) -> T {
    reg.names
        .borrow_mut()
        .extend(metric.desc().iter().map(|d| d.fq_name.clone()));
    reg.registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Metrics {
    /// Every series name this process can export (histograms with their
    /// `_bucket`, `_sum` and `_count`), for checking dashboards and alerts.
    pub fn names(&self) -> Vec<String> {
        let mut names = self.declared.clone();
        for base in [
            "subliminal_stage_duration_seconds",
            "subliminal_store_request_duration_seconds",
        ] {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.push(format!("{base}{suffix}"));
            }
        }
        names.sort();
        names.dedup();
        names
    }
}

impl Metrics {
    fn new() -> Self {
        let r = Registrar {
            registry: Registry::new(),
            names: Default::default(),
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(opts!(name, help), labels).expect("valid metric"),
            )
        };
        let fgauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                GaugeVec::new(opts!(name, help), labels).expect("valid metric"),
            )
        };
        let counter = |name: &str, help: &str| {
            register(&r, IntCounter::new(name, help).expect("valid metric"))
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(opts!(name, help), labels).expect("valid metric"),
            )
        };
        Self {
            queue_tasks: gauge_vec("subliminal_queue_tasks", "Tasks waiting in each queue.", &["queue"]),
            tasks: gauge_vec("subliminal_tasks", "Tasks in Redis by state (queued, leased, retrying, dead).", &["state"]),
            queue_oldest_age: fgauge_vec(
                "subliminal_queue_oldest_task_age_seconds",
                "Age of the oldest task waiting in each queue.",
                &["queue"],
            ),
            lease_redeliveries: counter(
                "subliminal_lease_redeliveries_total",
                "Tasks redelivered because their lease expired.",
            ),
            dead_letters: counter(
                "subliminal_reaped_dead_letters_total",
                "Tasks dead-lettered by the reaper (lease expired on the last attempt).",
            ),
            sweep_stages: gauge_vec(
                "subliminal_sweep_stages",
                "Stages of each active sweep, done and in total.",
                &["sweep", "state"],
            ),
            sweeps_active: register(&r, IntGauge::new("subliminal_sweeps_active", "Sweeps being scheduled.").expect("valid metric")),
            workers: gauge_vec("subliminal_workers", "Workers by state (busy, idle, stale).", &["state"]),
            scheduler_leader: register(
                &r,
                IntGauge::new("subliminal_scheduler_leader", "1 while this scheduler leads.").expect("valid metric"),
            ),
            stages: counter_vec(
                "subliminal_stages_total",
                "Stages this worker ended, by kind and outcome (success, reused, failed, retried, dead, cancelled, released, preempted, lost).",
                &["kind", "outcome"],
            ),
            stage_duration: register(
                &r,
                HistogramVec::new(
                    histogram_opts!("subliminal_stage_duration_seconds", "Wall time of stages run here.", STAGE_BUCKETS.to_vec()),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            worker_up: register(&r, IntGauge::new("subliminal_worker_up", "1 while this worker serves.").expect("valid metric")),
            worker_heartbeat: register(
                &r,
                Gauge::new("subliminal_worker_last_heartbeat_timestamp_seconds", "When this worker last reached Redis.")
                    .expect("valid metric"),
            ),
            worker_running: gauge_vec("subliminal_worker_running_stages", "Stages this worker is running, by kind.", &["kind"]),
            training_loss: fgauge_vec("subliminal_training_loss", "Latest epoch loss of the stage being trained, by kind.", &["kind"]),
            training_samples_per_second: fgauge_vec(
                "subliminal_training_samples_per_second",
                "Training throughput of the stage being trained, by kind.",
                &["kind"],
            ),
            checkpoints_written: counter(
                "subliminal_checkpoints_written_total",
                "Progress checkpoints of running stages this worker saved.",
            ),
            stage_resumes: counter(
                "subliminal_stage_resumes_total",
                "Stages this worker resumed from another run's progress checkpoint.",
            ),
            seconds_saved: register(
                &r,
                Counter::new(
                    "subliminal_resumed_seconds_total",
                    "Training seconds that resumed stages did not redo.",
                )
                .expect("valid metric"),
            ),
            out_of_memory_retries: counter(
                "subliminal_out_of_memory_retries_total",
                "Training steps and generation batches run again in halves after running out of device memory.",
            ),
            gpu_memory_used: fgauge_vec("subliminal_gpu_memory_used_bytes", "GPU memory in use.", &["device"]),
            gpu_memory_total: fgauge_vec("subliminal_gpu_memory_total_bytes", "GPU memory in total.", &["device"]),
            store_bytes: counter_vec("subliminal_store_bytes_total", "Bytes read from and written to the store.", &["direction"]),
            store_request_duration: register(
                &r,
                HistogramVec::new(
                    histogram_opts!(
                        "subliminal_store_request_duration_seconds",
                        "Latency of store requests by operation.",
                        exponential_buckets(0.001, 4.0, 9).expect("valid buckets")
                    ),
                    &["op"],
                )
                .expect("valid metric"),
            ),
            redis_errors: counter("subliminal_redis_errors_total", "Failed Redis operations."),
            redis_connections: counter(
                "subliminal_redis_connections_created_total",
                "Redis connections opened (the first, and each reconnect).",
            ),
            declared: r.names.take(),
            registry: r.registry,
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Serves `/metrics` at the address a `--metrics-addr` flag gives, or not at all for "off".
pub async fn serve_flag(flag: &str) -> anyhow::Result<()> {
    if flag == "off" {
        return Ok(());
    }
    let addr = flag
        .parse()
        .map_err(|e| anyhow::anyhow!("--metrics-addr {flag:?}: expected host:port or off ({e})"))?;
    serve(addr).await.map(|_| ())
}

/// Serves `/metrics` on `addr` until the process ends; returns once bound,
/// with the address actually bound (port 0 picks a free one).
pub async fn serve(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                metrics().render(),
            )
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics endpoint stopped: {e}");
        }
    });
    tracing::info!("metrics at http://{bound}/metrics");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_follows_the_naming_rules() {
        let m = metrics();
        m.stages.with_label_values(&["teacher", "success"]).inc();
        m.stage_duration
            .with_label_values(&["teacher"])
            .observe(3.0);
        let text = m.render();
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("subliminal_"), "{name}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name} is a {kind}"
            );
        }
        assert!(text
            .contains("subliminal_stage_duration_seconds_bucket{kind=\"teacher\",le=\"86400\"} 1"));
    }
}
