//! Benchmark: a sweep of a million stages through the real scheduler.
//!
//! A noop sweep of 500,000 chains (one work stage and one evaluate each:
//! 1,000,000 stages, half of them ready at once) is
//! 1. expanded in process (parse and plan), timed;
//! 2. submitted with the real CLI to a local folder store;
//! 3. enqueued by the real subliminal-scheduler binary against a
//!    redis-server on a loopback port: the time until every ready stage is
//!    queued, Redis memory per queued task (INFO used_memory), and the
//!    scheduler's resident memory (VmRSS, VmHWM) against its idle size;
//! 4. drained by no-op consumers in this process (lease one task, complete
//!    it): wall time, tasks per second and the latency of each
//!    lease+complete pair, while the scheduler enqueues each evaluate as its
//!    work stage completes.
//!
//!   cargo bench -p subliminal-tests --bench million -- [--stages N] [--consumers N]
//!
//! It runs the release binaries: `cargo build --release --bins` first.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use subliminal_broker::Broker;
use subliminal_tests::servers::{wait_for, Daemon, Redis};
use subliminal_tests::{bin, Ran};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A line of /proc/PID/status in bytes (VmRSS, VmHWM).
fn proc_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn redis_used_memory(redis: &Redis) -> u64 {
    redis
        .cli(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn queued(redis: &Redis) -> u64 {
    redis.cli(&["ZCARD", "sl:queue:cpu"]).parse().unwrap_or(0)
}

fn sweep_state(store: &Path) -> Option<String> {
    let text = std::fs::read_to_string(store.join("sweeps/million/status.json")).ok()?;
    let status: serde_json::Value = serde_json::from_str(&text).ok()?;
    status["state"].as_str().map(str::to_owned)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Leases and completes one task at a time until the sweep is done; the
/// latency of each lease+complete pair, in ms.
async fn consume(
    broker: Broker,
    me: String,
    done: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> anyhow::Result<Vec<f64>> {
    let queues = vec!["cpu".to_owned()];
    let mut latencies = Vec::new();
    loop {
        let t = Instant::now();
        match broker.lease(&queues, &me, 600_000).await? {
            Some(lease) => {
                anyhow::ensure!(broker.complete(&lease).await?, "completion refused");
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                count.fetch_add(1, Ordering::Relaxed);
            }
            None if done.load(Ordering::Relaxed) => return Ok(latencies),
            // The queue is empty until the scheduler enqueues the next stages.
            None => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let stages: u64 = arg("--stages")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let consumers: usize = arg("--consumers")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(16);
    let chains = stages / 2;
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store)?;
    let redis = Redis::start(dir.path());
    println!(
        "million-task benchmark: {} stages ({chains} chains of work → evaluate), {consumers} no-op consumers, {} cores",
        chains * 2,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let seeds: Vec<String> = (0..chains).map(|s| s.to_string()).collect();
    let sweep = dir.path().join("million.toml");
    std::fs::write(
        &sweep,
        format!(
            "name = \"million\"\nkind = \"noop\"\n[grid]\nseeds = [{}]\n[work]\nstages = 1\nduration_ms = 0\nartifact_bytes = 32\n",
            seeds.join(", ")
        ),
    )?;

    // 1. Expansion in process.
    let t = Instant::now();
    let plan = subliminal_shared::sweep::load(&sweep)?.plan();
    let expand = t.elapsed();
    anyhow::ensure!(
        plan.stages.len() as u64 == chains * 2,
        "the plan has {} stages",
        plan.stages.len()
    );
    let body = subliminal_broker::encode_body(&subliminal_broker::TaskBody {
        version: subliminal_broker::BODY_VERSION,
        sweep: "million".to_owned(),
        queue: "cpu".to_owned(),
        priority: 0,
        stage: plan.stages[0].clone(),
    })?
    .len();
    drop(plan);
    println!(
        "expand (parse + plan, in process):   {:>9.2} s",
        expand.as_secs_f64()
    );

    // 2. The scheduler, idle, then the submission.
    let env = vec![("SUBLIMINAL_REDIS", redis.url())];
    let store_arg = store.to_str().expect("UTF-8 temp path");
    let scheduler = Daemon::spawn(
        "subliminal-scheduler",
        &[
            "--store",
            store_arg,
            "--tick-ms",
            "100",
            "--metrics-addr",
            "off",
        ],
        &env,
        dir.path().join("scheduler.log"),
    );
    wait_for("the scheduler to lead", Duration::from_secs(30), || {
        redis
            .cli(&["GET", "sl:leader"])
            .ends_with(&format!("-{}", scheduler.pid()))
    });
    let idle_rss = proc_bytes(scheduler.pid(), "VmRSS:");
    let redis_before = redis_used_memory(&redis);
    let t = Instant::now();
    let submitted: Ran = std::process::Command::new(bin("subliminal"))
        .args([
            "submit",
            sweep.to_str().expect("UTF-8 temp path"),
            "--store",
            store_arg,
        ])
        .env("SUBLIMINAL_REDIS", redis.url())
        .output()?
        .into();
    let submitted = submitted.ok();
    let submit = t.elapsed();
    println!(
        "submit (CLI: check, store, register): {:>9.2} s  ({})",
        submit.as_secs_f64(),
        submitted.stdout.trim()
    );

    // 3. Enqueueing by the scheduler.
    wait_for(
        "every ready stage to be queued",
        Duration::from_secs(3600),
        || queued(&redis) >= chains,
    );
    let enqueue = t.elapsed();
    let redis_after = redis_used_memory(&redis);
    let loaded_rss = proc_bytes(scheduler.pid(), "VmRSS:");
    let loaded_hwm = proc_bytes(scheduler.pid(), "VmHWM:");
    println!(
        "submit → {chains} tasks queued:        {:>9.2} s  ({:.0} tasks/s)",
        enqueue.as_secs_f64(),
        chains as f64 / enqueue.as_secs_f64()
    );
    println!(
        "Redis memory per queued task:         {:>9} bytes (body {body} bytes; {:.0} MiB for {chains})",
        (redis_after - redis_before) / chains,
        mib(redis_after - redis_before)
    );
    println!(
        "scheduler resident memory:            {:>9.0} MiB idle, {:.0} MiB holding the sweep (peak {:.0} MiB)",
        mib(idle_rss),
        mib(loaded_rss),
        mib(loaded_hwm)
    );
    println!(
        "scheduler memory per stage:           {:>9} bytes resident (holding minus idle, / {} stages)",
        loaded_rss.saturating_sub(idle_rss) / (chains * 2),
        chains * 2
    );
    let log = std::fs::read_to_string(dir.path().join("scheduler.log"))?;
    if let Some(held) = log
        .lines()
        .find_map(|l| l.split_once("; holding ").map(|(_, h)| h.to_owned()))
    {
        println!("scheduler state, as it counts it:     {held}");
    }

    // 4. The drain.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (latencies, drain) = rt.block_on(async {
        let broker = Broker::connect(&redis.url(), "sl").await?;
        let done = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        let mut handles = Vec::new();
        for c in 0..consumers {
            handles.push(tokio::spawn(consume(
                broker.clone(),
                format!("c{c}"),
                done.clone(),
                count.clone(),
            )));
        }
        let total = chains * 2;
        while sweep_state(&store).as_deref() != Some("done") {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let n = count.load(Ordering::Relaxed);
            if n > total {
                anyhow::bail!("{n} tasks completed for {total} stages: some ran twice");
            }
        }
        done.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for h in handles {
            latencies.extend(h.await??);
        }
        anyhow::Ok((latencies, t.elapsed()))
    })?;
    let completed = latencies.len() as u64;
    anyhow::ensure!(
        completed == chains * 2,
        "{completed} tasks completed for {} stages",
        chains * 2
    );
    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    println!(
        "drain ({consumers} consumers, the scheduler enqueueing evaluates): {:.1} s, {:.0} tasks/s",
        drain.as_secs_f64(),
        completed as f64 / drain.as_secs_f64()
    );
    println!(
        "lease+complete latency:               p50 {:.2} ms, p99 {:.2} ms",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99)
    );
    println!(
        "scheduler resident memory at the end: {:>9.0} MiB (peak {:.0} MiB)",
        mib(proc_bytes(scheduler.pid(), "VmRSS:")),
        mib(proc_bytes(scheduler.pid(), "VmHWM:"))
    );
    println!(
        "total wall time (submit to done):     {:>9.1} s",
        (enqueue + drain).as_secs_f64()
    );
    Ok(())
}
