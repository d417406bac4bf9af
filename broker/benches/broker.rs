//! Benchmark: no-op tasks through the real broker against a local
//! redis-server it starts on a free loopback port.
//!
//! For 1, 4 and 16 concurrent consumers:
//! - throughput: N tasks enqueued (pipelined, as the scheduler does), then
//!   leased and completed by the consumers; tasks per second end to end;
//! - dispatch latency: a producer enqueues tasks one at a time at a steady
//!   rate while consumers lease; latency is lease time minus enqueue time,
//!   p50 and p99.
//!
//! Printed next to redis-benchmark's raw rate on the same server (the ceiling),
//! and Redis memory per queued task.
//!
//!   cargo bench -p subliminal-shared --bench broker -- [--tasks N]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use subliminal_broker::{decode_body, Broker, TaskBody, BODY_VERSION};
use subliminal_shared::stage::{StageKind, StageSpec};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn body(run: u64, n: u64, enqueued_us: u64) -> TaskBody {
    TaskBody {
        version: BODY_VERSION,
        sweep: "bench".to_owned(),
        queue: "cpu".to_owned(),
        priority: 0,
        stage: StageSpec::new(
            "noop",
            StageKind::from_static("evaluate"),
            &serde_json::json!({"run": run, "n": n, "t": enqueued_us}),
            vec![],
        ),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Leases and completes, `batch` tasks per call, until the queue is empty.
async fn drain(
    broker: Broker,
    queues: Arc<Vec<String>>,
    me: String,
    batch: usize,
) -> anyhow::Result<u64> {
    let mut n = 0;
    loop {
        if batch == 1 {
            let Some(lease) = broker.lease(&queues, &me, 60_000).await? else {
                break;
            };
            anyhow::ensure!(broker.complete(&lease).await?, "completion refused");
            n += 1;
        } else {
            let leases = broker.lease_many(&queues, &me, 60_000, batch).await?;
            if leases.is_empty() {
                break;
            }
            anyhow::ensure!(
                broker.complete_many(&leases).await?.iter().all(|d| *d),
                "completion refused"
            );
            n += leases.len() as u64;
        }
    }
    Ok(n)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let tasks: u64 = arg("--tasks")
        .map(|t| t.parse())
        .transpose()?
        .unwrap_or(20_000);
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot start redis-server ({e}): install the Debian package redis-server"
            )
        })?;
    let url = format!("redis://127.0.0.1:{port}/");
    let started = Instant::now();
    let broker = loop {
        match Broker::connect(&url, "bench").await {
            Ok(b) => break b,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e),
        }
    };

    let raw = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-q",
            "-n",
            "200000",
            "-c",
            "16",
            "-t",
            "set,get",
        ])
        .output()?;
    let raw = String::from_utf8_lossy(&raw.stdout).replace('\r', "\n");
    let raw: Vec<String> = raw
        .lines()
        .filter(|l| l.contains("requests per second"))
        .map(|l| {
            l.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .trim_end_matches(" requests")
                .to_owned()
        })
        .collect();

    // Memory per queued task, with a body the size of a real MNIST stage's.
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let used = |info: String| -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = used(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await?,
    );
    let bodies: Vec<TaskBody> = (0..10_000).map(|n| body(0, n, 0)).collect();
    broker.enqueue_many(&bodies, 3).await?;
    let after = used(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await?,
    );
    let body_bytes = subliminal_broker::encode_body(&bodies[0])?.len();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;

    println!(
        "broker benchmark: redis-server on 127.0.0.1:{port}, {tasks} no-op tasks per run, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "redis-benchmark raw rate (16 clients, no pipelining): {}",
        raw.join(", ")
    );
    println!(
        "Redis memory per queued task: {} bytes (body {body_bytes} bytes)",
        (after - before) / 10_000
    );
    let queues = Arc::new(vec!["cpu".to_owned()]);
    let mut run = 0u64;
    for batch in [1usize, 32] {
        println!();
        println!(
            "{} per lease call{}:",
            batch,
            if batch == 1 {
                " (as the worker daemon leases)"
            } else {
                " (prefetch, for short tasks)"
            }
        );
        println!(
            "{:>9} {:>14} {:>16} {:>14} {:>12} {:>12}",
            "consumers", "enqueue/s", "lease+complete/s", "end-to-end/s", "p50 ms", "p99 ms"
        );
        for consumers in [1u64, 4, 16] {
            run += 1;
            // Throughput.
            let bodies: Vec<TaskBody> = (0..tasks).map(|n| body(run, n, 0)).collect();
            let t0 = Instant::now();
            for chunk in bodies.chunks(1000) {
                broker.enqueue_many(chunk, 3).await?;
            }
            let enqueued = t0.elapsed();
            let t1 = Instant::now();
            let mut handles = Vec::new();
            for c in 0..consumers {
                handles.push(tokio::spawn(drain(
                    broker.clone(),
                    queues.clone(),
                    format!("c{c}"),
                    batch,
                )));
            }
            let mut done = 0;
            for h in handles {
                done += h.await??;
            }
            let drained = t1.elapsed();
            anyhow::ensure!(done == tasks, "{done} of {tasks} tasks completed");

            // Dispatch latency at a steady rate.
            let rate = 2000.0;
            let count = (tasks / 4).max(1000);
            let clock = Instant::now();
            let mut handles = Vec::new();
            for c in 0..consumers {
                let (broker, queues) = (broker.clone(), queues.clone());
                handles.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let me = format!("l{c}");
                    while clock.elapsed() < Duration::from_secs_f64(count as f64 / rate + 2.0) {
                        let leases = broker.lease_many(&queues, &me, 60_000, batch).await?;
                        if leases.is_empty() {
                            tokio::task::yield_now().await;
                            continue;
                        }
                        let now = clock.elapsed().as_micros() as f64;
                        for lease in &leases {
                            let body = decode_body(&lease.body)?;
                            let sent = body.stage.params["t"].as_f64().unwrap_or(now);
                            latencies.push((now - sent) / 1000.0);
                        }
                        broker.complete_many(&leases).await?;
                    }
                    anyhow::Ok(latencies)
                }));
            }
            for n in 0..count {
                let due = Duration::from_secs_f64(n as f64 / rate);
                if let Some(wait) = due.checked_sub(clock.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                broker
                    .enqueue(&body(1000 + run, n, clock.elapsed().as_micros() as u64), 3)
                    .await?;
            }
            let mut latencies = Vec::new();
            for h in handles {
                latencies.extend(h.await??);
            }
            latencies.sort_by(|a, b| a.total_cmp(b));
            println!(
                "{consumers:>9} {:>14.0} {:>16.0} {:>14.0} {:>12.2} {:>12.2}",
                tasks as f64 / enqueued.as_secs_f64(),
                tasks as f64 / drained.as_secs_f64(),
                tasks as f64 / (enqueued + drained).as_secs_f64(),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
            );
            let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}
