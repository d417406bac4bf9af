//! A seeded chaos run: a noop sweep of a few hundred short stages runs on a
//! real cluster (two schedulers electing a leader, three workers, Redis and
//! an S3 server) while a fault injector, driven by one seed, SIGKILLs
//! workers and the leading scheduler, restarts Redis empty, restarts the S3
//! server, and drains workers with SIGTERM. Each dead daemon is replaced.
//!
//! When the sweep is done, [`run`] checks what must hold whatever happened:
//! - every stage has one manifest, and no artifact was written after it (its
//!   file is no newer than the manifest, and its bytes are the ones listed);
//! - no stage was delivered to workers more often than the cluster gave it
//!   out: its enqueues, lease redeliveries, retries after a failure and
//!   releases on drain, as the daemons logged them;
//! - the results equal local mode's;
//! - no task is left in Redis, leased or otherwise;
//! - every death shows: the stage a killed worker held came back, a killed
//!   leader was followed by another, one live scheduler exports itself as
//!   leader, the stale-worker gauge counts exactly the dead workers Redis
//!   still lists, and each scheduler's redelivery counter matches its log.
//!
//! In `train` mode ([`Config::train_steps`]) each work stage is a real LoRA
//! fine-tune of a tiny random model that saves progress checkpoints, and the
//! run also accounts for compute: the seconds of stage runs that a kill or a
//! drain interrupted, how much of that later runs resumed from checkpoints
//! rather than redid, and the rest, lost.
//!
//! The same seed gives the same schedule of faults (timing of the daemons
//! themselves still varies). `tests/tests/chaos.rs` runs a short one in the
//! suite; `bench/chaos.sh` runs a long one and prints its counts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::servers::{http_get, metrics_addr, sample, wait_for, Daemon, Redis, S3};
use crate::{noop_sweep, Ran};

/// The shape of a chaos run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seeds the fault schedule.
    pub seed: u64,
    /// Noop chains (one per sweep seed); each is `stages_per_chain` work
    /// stages and an evaluate.
    pub chains: u64,
    pub stages_per_chain: u32,
    /// How long each work stage sleeps.
    pub stage_ms: u32,
    /// `Some(steps)`: each work stage fine-tunes a tiny model this many
    /// steps instead of sleeping (the noop kind's `train` mode).
    pub train_steps: Option<u64>,
    /// How often a worker saves a running stage's progress.
    pub checkpoint_seconds: f64,
    /// Mean time between faults (each gap is drawn from half to one and a half of it).
    pub mean_gap: Duration,
    /// The run fails if the sweep is not done by then.
    pub timeout: Duration,
    /// Faults stop after this many (the sweep then finishes in peace).
    pub max_faults: usize,
}

/// The kinds of fault, injected in a seeded order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillWorker,
    DrainWorker,
    KillLeader,
    RestartRedisEmpty,
    RestartS3,
}

impl Fault {
    const ALL: [Fault; 5] = [
        Fault::KillWorker,
        Fault::DrainWorker,
        Fault::KillLeader,
        Fault::RestartRedisEmpty,
        Fault::RestartS3,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillWorker => "SIGKILL a worker",
            Fault::DrainWorker => "SIGTERM a worker (drain)",
            Fault::KillLeader => "SIGKILL the leading scheduler",
            Fault::RestartRedisEmpty => "restart Redis empty",
            Fault::RestartS3 => "restart the S3 server",
        }
    }
}

/// What a chaos run did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub stages: usize,
    pub faults: BTreeMap<Fault, usize>,
    /// Times a worker started a stage (each lease it ran).
    pub deliveries: usize,
    /// Of those, runs that found the stage already done in the store.
    pub reused: usize,
    /// Lease redeliveries the schedulers logged.
    pub redeliveries: usize,
    /// Runs that failed and were retried (the S3 server away, mostly).
    pub retries: usize,
    /// Stages given back by draining workers.
    pub releases: usize,
    /// Stages computed more than once, and the extra computations.
    pub recomputed_stages: usize,
    pub extra_computations: usize,
    /// Runs whose manifest lost to another's (create-if-absent refused).
    pub manifest_races: usize,
    /// Seconds workers spent in stage runs that a kill, a drain or a
    /// failure ended before their manifest.
    pub interrupted_seconds: f64,
    /// Of those, the work later runs resumed from progress checkpoints
    /// instead of redoing (per stage, the most any resume carried over, at
    /// most what its interrupted runs spent).
    pub saved_seconds: f64,
    /// Runs that resumed from a checkpoint.
    pub resumes: usize,
    pub wall: Duration,
    /// Invariants that did not hold, each with what was seen.
    pub violations: Vec<String>,
}

impl Report {
    /// The counts, one per line.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let faults: usize = self.faults.values().sum();
        out.push_str(&format!(
            "stages {}, wall time {:.1} s\n",
            self.stages,
            self.wall.as_secs_f64()
        ));
        out.push_str(&format!("faults injected: {faults}\n"));
        for (fault, n) in &self.faults {
            out.push_str(&format!("  {:<32} {n}\n", fault.name()));
        }
        out.push_str(&format!(
            "deliveries {} (reused {}), lease redeliveries {}, retries {}, releases {}\n",
            self.deliveries, self.reused, self.redeliveries, self.retries, self.releases
        ));
        out.push_str(&format!(
            "recomputed stages {} ({} extra computations), manifest races {}\n",
            self.recomputed_stages, self.extra_computations, self.manifest_races
        ));
        out.push_str(&format!(
            "compute: {:.1} s in interrupted stage runs; {:.1} s of it resumed from checkpoints ({} resumes), {:.1} s lost\n",
            self.interrupted_seconds,
            self.saved_seconds,
            self.resumes,
            self.lost_seconds()
        ));
        out.push_str(&format!(
            "invariant violations: {}\n",
            self.violations.len()
        ));
        for v in &self.violations {
            out.push_str(&format!("  {v}\n"));
        }
        out
    }
}

impl Report {
    /// Interrupted work that no resume recovered.
    pub fn lost_seconds(&self) -> f64 {
        (self.interrupted_seconds - self.saved_seconds).max(0.0)
    }
}

/// SplitMix64: a fault schedule that depends on the seed alone, not on a
/// crate's version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const STORE: &str = "s3://bucket/runs";
const SWEEP: &str = "chaos";

/// A daemon of the cluster and what the run knows of it.
struct Member {
    name: String,
    daemon: Daemon,
    alive: bool,
    /// The last scrape of its /metrics before it was killed.
    last_metrics: Option<String>,
    /// When it was SIGKILLed.
    killed_at: Option<SystemTime>,
}

struct Cluster {
    dir: PathBuf,
    redis: Redis,
    s3: S3,
    env: Vec<(&'static str, String)>,
    schedulers: Vec<Member>,
    workers: Vec<Member>,
    /// Workers killed with SIGKILL, and leaders killed while they led.
    killed_workers: Vec<String>,
    leader_kills: usize,
    checkpoint_seconds: String,
}

impl Cluster {
    fn start(dir: &Path, checkpoint_seconds: f64) -> Self {
        let redis = Redis::start(dir);
        let s3 = S3::start(&dir.join("s3"), "bucket");
        let mut env = s3.env();
        env.push(("SUBLIMINAL_REDIS", redis.url()));
        env.push((
            "SUBLIMINAL_LOG",
            "info,subliminal_scheduler=debug".to_owned(),
        ));
        Cluster {
            dir: dir.to_path_buf(),
            redis,
            s3,
            env,
            schedulers: Vec::new(),
            workers: Vec::new(),
            killed_workers: Vec::new(),
            leader_kills: 0,
            checkpoint_seconds: checkpoint_seconds.to_string(),
        }
    }

    fn add_scheduler(&mut self) {
        let name = format!("scheduler-{}", self.schedulers.len());
        let args = [
            "--store",
            STORE,
            "--tick-ms",
            "100",
            "--max-attempts",
            "20",
            "--stale-worker-seconds",
            "2",
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        let log = self.dir.join(format!("{name}.log"));
        let daemon = Daemon::spawn("subliminal-scheduler", &args, &self.env, log);
        self.schedulers.push(Member {
            name,
            daemon,
            alive: true,
            last_metrics: None,
            killed_at: None,
        });
    }

    fn add_worker(&mut self) {
        let name = format!("worker-{}", self.workers.len());
        let cache = self.dir.join(format!("{name}-cache"));
        let args = [
            "--store",
            STORE,
            "--device",
            "cpu",
            "--queues",
            "cpu",
            "--lease-seconds",
            "1.5",
            "--retry-backoff-seconds",
            "0.1",
            "--grace-seconds",
            "0.3",
            "--checkpoint-seconds",
            &self.checkpoint_seconds,
            // Three workers share the machine: one libtorch thread each
            // rather than three pools spinning over the same cores.
            "--threads",
            "1",
            "--name",
            &name,
            "--metrics-addr",
            "127.0.0.1:0",
            "--cache-dir",
            cache.to_str().expect("UTF-8 temp path"),
        ];
        let log = self.dir.join(format!("{name}.log"));
        let daemon = Daemon::spawn("subliminal-worker", &args, &self.env, log);
        self.workers.push(Member {
            name,
            daemon,
            alive: true,
            last_metrics: None,
            killed_at: None,
        });
    }

    fn cli(&self, args: &[&str]) -> Ran {
        crate::subliminal_with(&self.env, args)
    }

    /// The sweep's state as the scheduler last wrote it to the store.
    fn sweep_state(&self) -> Option<String> {
        let path = self
            .dir
            .join(format!("s3/bucket/runs/sweeps/{SWEEP}/status.json"));
        let text = std::fs::read_to_string(path).ok()?;
        let status: serde_json::Value = serde_json::from_str(&text).ok()?;
        status["state"].as_str().map(str::to_owned)
    }

    fn inject(&mut self, fault: Fault, rng: &mut Rng) {
        match fault {
            Fault::KillWorker => {
                let i = pick_alive(&self.workers, rng);
                self.workers[i].daemon.kill9();
                self.workers[i].killed_at = Some(SystemTime::now());
                self.workers[i].alive = false;
                self.killed_workers.push(self.workers[i].name.clone());
                self.add_worker();
            }
            Fault::DrainWorker => {
                let i = pick_alive(&self.workers, rng);
                let code = self.workers[i].daemon.terminate(Duration::from_secs(30));
                assert_eq!(
                    code,
                    Some(0),
                    "{} did not drain and exit 0 on SIGTERM",
                    self.workers[i].name
                );
                self.workers[i].alive = false;
                self.add_worker();
            }
            Fault::KillLeader => {
                let leader = self.redis.cli(&["GET", "sl:leader"]);
                let pid = leader
                    .rsplit('-')
                    .next()
                    .and_then(|p| p.parse::<u32>().ok());
                let found = self
                    .schedulers
                    .iter()
                    .position(|s| s.alive && Some(s.daemon.pid()) == pid);
                let i = found.unwrap_or_else(|| pick_alive(&self.schedulers, rng));
                let member = &mut self.schedulers[i];
                member.last_metrics = scrape(&member.daemon);
                member.daemon.kill9();
                member.alive = false;
                if found.is_some() {
                    self.leader_kills += 1;
                }
                self.add_scheduler();
            }
            Fault::RestartRedisEmpty => self.redis.restart_empty(),
            Fault::RestartS3 => self.s3.restart(),
        }
    }
}

fn pick_alive(members: &[Member], rng: &mut Rng) -> usize {
    let alive: Vec<usize> = (0..members.len()).filter(|&i| members[i].alive).collect();
    alive[rng.below(alive.len())]
}

fn scrape(daemon: &Daemon) -> Option<String> {
    let addr = metrics_addr(&daemon.log_text())?;
    Some(http_get(&addr, "/metrics"))
}

/// Runs the sweep under faults in `dir` and checks the invariants.
pub fn run(config: &Config, dir: &Path) -> Report {
    let mut report = Report::default();
    let mut rng = Rng(config.seed);
    let mut cluster = Cluster::start(dir, config.checkpoint_seconds);
    cluster.add_scheduler();
    cluster.add_scheduler();
    for _ in 0..3 {
        cluster.add_worker();
    }
    let sweep = dir.join("chaos.toml");
    let seeds: Vec<u64> = (0..config.chains).collect();
    let mut text = noop_sweep(SWEEP, &seeds, config.stages_per_chain, config.stage_ms, &[]);
    if let Some(steps) = config.train_steps {
        text = text.replace(
            "[work]\n",
            &format!("[work]\nmode = \"train\"\ntrain_steps = {steps}\n"),
        );
    }
    std::fs::write(&sweep, text).expect("write the sweep");
    let sweep_arg = sweep.to_str().expect("UTF-8 temp path");
    cluster.cli(&["submit", sweep_arg, "--store", STORE]).ok();
    let started = Instant::now();

    // Every kind once first, in a seeded order; then any kind.
    let mut order: Vec<Fault> = Fault::ALL.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut injected = 0;
    loop {
        let gap = config.mean_gap.mul_f64(0.5 + rng.unit());
        let next = Instant::now() + gap;
        while Instant::now() < next && cluster.sweep_state().is_none_or(|s| s == "active") {
            std::thread::sleep(Duration::from_millis(20));
        }
        let state = cluster.sweep_state();
        if state.as_deref().is_some_and(|s| s != "active") {
            break;
        }
        assert!(
            started.elapsed() < config.timeout,
            "the sweep was not done after {:?} ({injected} faults so far)",
            config.timeout
        );
        if injected < config.max_faults {
            let fault = order
                .get(injected)
                .copied()
                .unwrap_or_else(|| Fault::ALL[rng.below(Fault::ALL.len())]);
            cluster.inject(fault, &mut rng);
            *report.faults.entry(fault).or_default() += 1;
            injected += 1;
        }
    }
    report.wall = started.elapsed();
    let state = cluster.sweep_state().unwrap_or_default();
    if state != "done" {
        report
            .violations
            .push(format!("the sweep ended {state}, not done"));
    }
    check(&mut cluster, &sweep, &mut report);
    report
}

/// When a log line was written: its leading RFC 3339 timestamp.
fn line_time(line: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(line.split_whitespace().next()?).ok()
}

fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64())
}

/// Fills the report's compute figures from the workers' logs: each stage
/// run from its "running stage" line to the line that ends it, or to the
/// SIGKILL that did; and each resume's "s of work not redone". A stage's
/// saved seconds count only up to what its interrupted runs spent: a run
/// that resumes from the checkpoint of another still running (a stage
/// given out twice after Redis lost its leases) saved nothing a fault cost.
fn account_compute(workers: &[Member], report: &mut Report) {
    let mut saved: HashMap<String, f64> = HashMap::new();
    let mut interrupted: HashMap<String, f64> = HashMap::new();
    for worker in workers {
        let log = worker.daemon.log_text();
        let mut running: Option<(String, SystemTime)> = None;
        for line in log.lines() {
            let Some(at) = line_time(line) else {
                continue;
            };
            if let Some((_, rest)) = line.split_once("running stage ") {
                let id = rest
                    .split_whitespace()
                    .nth(1)
                    .map(trim_id)
                    .unwrap_or_default();
                running = Some((id, at));
            } else if ["finished stage", "was already done"]
                .iter()
                .any(|m| line.contains(m))
            {
                running = None;
            } else if [
                " failed: ",
                "released stage",
                "stopped stage",
                "could not release",
            ]
            .iter()
            .any(|m| line.contains(m))
            {
                if let Some((id, from)) = running.take() {
                    *interrupted.entry(id).or_default() += seconds_between(from, at);
                }
            } else if let Some((_, rest)) = line.split_once("resumed stage ") {
                report.resumes += 1;
                let id = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let seconds = rest
                    .split_once("checkpoint (")
                    .and_then(|(_, s)| s.split_whitespace().next())
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(0.0);
                let most = saved.entry(id).or_default();
                *most = most.max(seconds);
            }
        }
        if let (Some((id, from)), Some(killed)) = (running, worker.killed_at) {
            *interrupted.entry(id).or_default() += seconds_between(from, killed);
        }
    }
    report.interrupted_seconds = interrupted.values().sum();
    report.saved_seconds = interrupted
        .iter()
        .map(|(id, spent)| saved.get(id).copied().unwrap_or(0.0).min(*spent))
        .sum();
}

/// The last whitespace-separated words after `marker` on each line that has it.
fn words_after<'a>(text: &'a str, marker: &str) -> Vec<Vec<&'a str>> {
    text.lines()
        .filter_map(|line| line.split_once(marker))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .collect()
}

fn count_by(ids: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// How often each stage id is word `at` after `marker`, over the lines of `text`.
fn stage_counts(text: &str, marker: &str, at: usize) -> HashMap<String, usize> {
    count_by(
        words_after(text, marker)
            .iter()
            .filter_map(|w| w.get(at).map(|s| trim_id(s))),
    )
}

fn trim_id(word: &str) -> String {
    word.trim_end_matches(':').to_owned()
}

fn check(cluster: &mut Cluster, sweep: &Path, report: &mut Report) {
    let plan = subliminal_shared::sweep::load(sweep)
        .expect("the chaos sweep loads")
        .plan();
    report.stages = plan.stages.len();
    let v = &mut report.violations;

    // Drain the survivors, then read every daemon's whole log.
    for w in cluster.workers.iter_mut().filter(|w| w.alive) {
        if w.daemon.terminate(Duration::from_secs(30)) != Some(0) {
            v.push(format!("{} did not exit 0 on SIGTERM at the end", w.name));
        }
        w.alive = false;
    }
    let worker_logs: String = cluster
        .workers
        .iter()
        .map(|w| w.daemon.log_text())
        .collect();
    let scheduler_logs: String = cluster
        .schedulers
        .iter()
        .map(|s| s.daemon.log_text())
        .collect();

    // One manifest per stage; no artifact written after it.
    let stages_dir = cluster.dir.join("s3/bucket/runs/stages");
    for stage in &plan.stages {
        let folder = stages_dir.join(stage.id.to_string());
        let manifest_path = folder.join("manifest.json");
        let Ok(text) = std::fs::read_to_string(&manifest_path) else {
            v.push(format!("stage {} has no manifest", stage.id.short()));
            continue;
        };
        let manifest: subliminal_shared::manifest::Manifest = match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                v.push(format!(
                    "stage {}: manifest unreadable: {e}",
                    stage.id.short()
                ));
                continue;
            }
        };
        let written = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let manifest_time = written(&manifest_path);
        for artifact in &manifest.artifacts {
            let path = folder.join(&artifact.name);
            let bytes = std::fs::read(&path).unwrap_or_default();
            if hex::encode(Sha256::digest(&bytes)) != artifact.sha256 {
                v.push(format!(
                    "stage {}: {} differs from its manifest",
                    stage.id.short(),
                    artifact.name
                ));
            }
            if written(&path) > manifest_time {
                v.push(format!(
                    "stage {}: {} was written after the manifest",
                    stage.id.short(),
                    artifact.name
                ));
            }
        }
    }

    // Deliveries against what the cluster gave out.
    let runs = stage_counts(&worker_logs, "running stage ", 1);
    let reused = count_by(
        words_after(&worker_logs, "stage ")
            .iter()
            .filter(|w| w.len() >= 4 && w[1..4] == ["was", "already", "done"])
            .map(|w| trim_id(w[0])),
    );
    let enqueued = stage_counts(&scheduler_logs, "enqueued stage ", 1);
    let redelivered = stage_counts(&scheduler_logs, "redelivered stage ", 0);
    let released = stage_counts(&worker_logs, "released stage ", 0);
    let failed = count_by(
        worker_logs
            .lines()
            .filter(|l| l.contains(" failed: "))
            .filter_map(|l| {
                l.split_once("] stage ")
                    .or_else(|| l.split_once(": stage "))
            })
            .filter_map(|(_, rest)| rest.split_whitespace().nth(1).map(trim_id)),
    );
    report.deliveries = runs.values().sum();
    report.reused = reused.values().sum();
    report.redeliveries = redelivered.values().sum();
    report.retries = failed.values().sum();
    report.releases = released.values().sum();
    report.manifest_races = worker_logs
        .matches("another run's manifest was there first")
        .count();
    account_compute(&cluster.workers, report);
    let v = &mut report.violations;
    let get = |m: &HashMap<String, usize>, id: &str| m.get(id).copied().unwrap_or(0);
    for stage in &plan.stages {
        let id = stage.id.short();
        let delivered = get(&runs, &id);
        let given =
            get(&enqueued, &id) + get(&redelivered, &id) + get(&failed, &id) + get(&released, &id);
        if delivered > given {
            v.push(format!(
                "stage {id} was run {delivered} times but given out {given} times"
            ));
        }
        let computed = delivered.saturating_sub(get(&reused, &id));
        if computed > 1 {
            report.recomputed_stages += 1;
            report.extra_computations += computed - 1;
        }
    }

    // The results equal local mode's.
    let results = |store: &str| -> Option<serde_json::Value> {
        let ran = cluster.cli(&["results", SWEEP, "--store", store, "--format", "json"]);
        serde_json::from_str(&ran.stdout).ok()
    };
    let local_store = cluster.dir.join("local");
    let local_store = local_store.to_str().expect("UTF-8 temp path");
    let sweep_arg = sweep.to_str().expect("UTF-8 temp path");
    cluster
        .cli(&[
            "run",
            sweep_arg,
            "--store",
            local_store,
            "--no-progress",
            "--jobs",
            "8",
        ])
        .ok();
    let (distributed, local) = (results(STORE), results(local_store));
    if distributed.is_none()
        || distributed.as_ref().map(|d| &d["rows"]) != local.as_ref().map(|l| &l["rows"])
    {
        v.push(format!(
            "results differ from local mode: {distributed:?} vs {local:?}"
        ));
    }

    // Nothing left in Redis.
    let leased = cluster.redis.cli(&["ZCARD", "sl:leases"]);
    if leased != "0" {
        v.push(format!("{leased} task(s) still leased"));
    }
    let tasks = cluster.redis.cli(&["--scan", "--pattern", "sl:task:*"]);
    if !tasks.is_empty() {
        v.push(format!("tasks left in Redis: {tasks}"));
    }

    // Deaths: a killed worker's stage came back.
    for name in &cluster.killed_workers {
        let Some(member) = cluster.workers.iter().find(|w| &w.name == name) else {
            continue;
        };
        let log = member.daemon.log_text();
        let Some(last) = words_after(&log, "running stage ").last().cloned() else {
            continue;
        };
        let Some(id) = last.get(1).map(|s| trim_id(s)) else {
            continue;
        };
        let tail = &log[log.rfind("running stage ").unwrap_or(0)..];
        let ended = [
            "finished stage",
            "was already done",
            " failed: ",
            "stopped stage",
            "released stage",
        ]
        .iter()
        .any(|m| tail.contains(m));
        if !ended && get(&redelivered, &id) + get(&enqueued, &id) < 2 {
            v.push(format!(
                "{name} died running stage {id}, which was neither redelivered nor enqueued again"
            ));
        }
    }
    // A killed leader was followed by another.
    let leads = scheduler_logs
        .matches("leading: this scheduler schedules now")
        .count();
    if leads < 1 + cluster.leader_kills {
        v.push(format!(
            "{} leader(s) killed but only {leads} took the lead",
            cluster.leader_kills
        ));
    }
    // Metrics: one leader; stale workers are the dead ones Redis lists; each
    // scheduler's redelivery counter is what it logged.
    let listed = cluster.redis.cli(&["HKEYS", "sl:workers"]);
    let listed: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    for name in &listed {
        if !cluster.killed_workers.iter().any(|k| k == name) {
            v.push(format!(
                "{name} is still listed in Redis, but it was not killed"
            ));
        }
    }
    let stale_expected = listed.len() as f64;
    let live: Vec<usize> = (0..cluster.schedulers.len())
        .filter(|&i| cluster.schedulers[i].alive)
        .collect();
    let mut last = Vec::new();
    wait_for(
        "the leader's stale-worker gauge to settle",
        Duration::from_secs(30),
        || {
            last = live
                .iter()
                .filter_map(|&i| scrape(&cluster.schedulers[i].daemon))
                .collect();
            last.iter().any(|m| {
                sample(m, "subliminal_scheduler_leader") == Some(1.0)
                    && sample(m, r#"subliminal_workers{state="stale"}"#) == Some(stale_expected)
            })
        },
    );
    let leaders = last
        .iter()
        .filter(|m| sample(m, "subliminal_scheduler_leader") == Some(1.0))
        .count();
    if leaders != 1 {
        v.push(format!(
            "{leaders} live schedulers export themselves as leader"
        ));
    }
    for (i, member) in cluster.schedulers.iter().enumerate() {
        let logged = member
            .daemon
            .log_text()
            .matches("redelivered stage ")
            .count() as f64;
        let metrics = if member.alive {
            live.iter()
                .position(|&l| l == i)
                .and_then(|p| last.get(p))
                .cloned()
        } else {
            member.last_metrics.clone()
        };
        let counted = metrics
            .as_deref()
            .and_then(|m| sample(m, "subliminal_lease_redeliveries_total"))
            .unwrap_or(0.0);
        // A killed scheduler may have logged redeliveries after its last scrape.
        let agrees = if member.alive {
            counted == logged
        } else {
            counted <= logged
        };
        if !agrees {
            v.push(format!(
                "{}: {counted} redeliveries in its metrics, {logged} in its log",
                member.name
            ));
        }
    }
}
