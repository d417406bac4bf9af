//! A cluster on loopback for the distributed tests: a real redis-server, a
//! real S3 server (s3s-fs), and the subliminal binaries as processes (the
//! scheduler and worker daemons), sharing one temporary folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::servers::{wait_for, Daemon, Redis, S3};
use crate::Ran;

/// How long a test waits for a sweep of small stages.
pub const TIMEOUT: Duration = Duration::from_secs(180);
/// For sweeps that run the LLM: its stages take minutes on a loaded 2-core machine.
pub const LLM_TIMEOUT: Duration = Duration::from_secs(900);

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub redis: Redis,
    _s3: S3,
    pub env: Vec<(&'static str, String)>,
    pub store: String,
    pub daemons: Vec<Daemon>,
}

impl Cluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let redis = Redis::start(dir.path());
        let s3 = S3::start(&dir.path().join("s3"), "bucket");
        let mut env = s3.env();
        env.push(("SUBLIMINAL_REDIS", redis.url()));
        Cluster {
            env,
            redis,
            _s3: s3,
            store: "s3://bucket/runs".to_owned(),
            dir,
            daemons: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn sweep(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write sweep");
        path
    }

    pub fn scheduler(&mut self, extra: &[&str]) -> usize {
        let mut args = vec![
            "--store",
            &self.store,
            "--tick-ms",
            "100",
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let log = self.path(&format!("scheduler-{}.log", self.daemons.len()));
        self.daemons
            .push(Daemon::spawn("subliminal-scheduler", &args, &self.env, log));
        self.daemons.len() - 1
    }

    pub fn worker(&mut self, name: &str, extra: &[&str]) -> usize {
        let env = self.env.clone();
        self.worker_with_env(name, extra, env)
    }

    pub fn worker_with_env(
        &mut self,
        name: &str,
        extra: &[&str],
        env: Vec<(&'static str, String)>,
    ) -> usize {
        let mut args = vec![
            "--store",
            &self.store,
            "--device",
            "cpu",
            "--threads",
            "1",
            "--lease-seconds",
            "2",
            "--retry-backoff-seconds",
            "0.2",
            "--name",
            name,
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let cache = self.path(&format!("{name}-cache")).display().to_string();
        args.extend_from_slice(&["--cache-dir", &cache]);
        let log = self.path(&format!("{name}.log"));
        self.daemons
            .push(Daemon::spawn("subliminal-worker", &args, &env, log));
        self.daemons.len() - 1
    }

    pub fn cli(&self, args: &[&str]) -> Ran {
        crate::subliminal_with(&self.env, args)
    }

    pub fn submit(&self, sweep: &Path) -> Ran {
        self.cli(&["submit", sweep.to_str().unwrap(), "--store", &self.store])
    }

    pub fn status(&self, sweep: &str) -> serde_json::Value {
        let ran = self
            .cli(&["status", sweep, "--store", &self.store, "--json"])
            .ok();
        serde_json::from_str(&ran.stdout).expect("status JSON")
    }

    pub fn wait_state(&self, sweep: &str, state: &str) -> serde_json::Value {
        self.wait_state_within(sweep, state, TIMEOUT)
    }

    pub fn wait_state_within(
        &self,
        sweep: &str,
        state: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        wait_for(&format!("sweep {sweep} to be {state}"), timeout, || {
            last = self.status(sweep);
            last["sweep"]["state"] == state
        });
        last
    }

    pub fn done_count(&self, sweep: &str) -> u64 {
        let s = self.status(sweep);
        s["sweep"]["kinds"].as_object().map_or(0, |k| {
            k.values().map(|c| c["done"].as_u64().unwrap_or(0)).sum()
        })
    }

    pub fn results_json(&self, sweep: &str) -> serde_json::Value {
        let ran = self
            .cli(&["results", sweep, "--store", &self.store, "--format", "json"])
            .ok();
        serde_json::from_str(&ran.stdout).expect("results JSON")
    }

    /// Stage ids of the sweep with a manifest in S3 (s3s-fs keeps objects as files).
    pub fn manifests(&self) -> Vec<String> {
        let stages = self.path("s3/bucket/runs/stages");
        let Ok(entries) = std::fs::read_dir(&stages) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("manifest.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    }
}

/// The per-seed figures of every row, by arm.
pub fn figures(results: &serde_json::Value) -> Vec<(String, Vec<f64>)> {
    results["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let values = r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["value"].as_f64().unwrap())
                .collect();
            (r["arm"].as_str().unwrap().to_owned(), values)
        })
        .collect()
}

/// How many times a worker computed the stage `stage` (its full id) in `log`.
/// A lease that finds the stage already in the store is not a run.
pub fn count_computed(log: &str, stage: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("finished stage") && l.contains(stage))
        .count()
}

/// Runs an audit sweep on the cluster and in local mode (`local`: the run's
/// store and device arguments), checks that the two reports agree on the
/// verdict, findings, students and training, and returns the cluster's.
pub fn audit_matches_local_mode(
    c: &Cluster,
    sweep: &Path,
    name: &str,
    local: &[&str],
) -> serde_json::Value {
    c.submit(sweep).ok();
    c.wait_state_within(name, "done", LLM_TIMEOUT);
    let plan = subliminal_shared::sweep::load(sweep).unwrap().plan();
    let (report, _) = subliminal_shared::experiments::audit::report_stages(&plan)[0];
    let read = |root: &Path| -> serde_json::Value {
        let path = root.join(format!("stages/{report}/report.json"));
        serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap()
    };
    let distributed = read(&c.path("s3/bucket/runs"));
    c.cli(&[&["run", sweep.to_str().unwrap()][..], local].concat())
        .ok();
    let store = local[local.iter().position(|a| *a == "--store").unwrap() + 1];
    let local = read(Path::new(store));
    for part in ["verdict", "findings", "students", "training"] {
        assert_eq!(
            distributed[part], local[part],
            "the cluster's {part} are local mode's"
        );
    }
    distributed
}

/// Runs a sweep of a kind with its own generate and filter stages on a
/// cluster and in local mode; every filter report and evaluation agrees.
pub fn generated_data_sweep_matches_local_mode(kind: &str, file: &str, text: &str, name: &str) {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    let mut env = c.env.clone();
    env.push((
        "SUBLIMINAL_JUDGE_CACHE",
        c.path("judgements-cluster").display().to_string(),
    ));
    c.worker_with_env("w1", &[], env);
    let sweep = c.sweep(file, text);
    c.submit(&sweep).ok();
    c.wait_state_within(name, "done", LLM_TIMEOUT);
    let plan = subliminal_shared::sweep::load(&sweep).unwrap().plan();
    let read = |root: &Path| -> Vec<serde_json::Value> {
        let filters = plan
            .stages
            .iter()
            .filter(|s| s.experiment == kind && s.kind.as_str() == "filter");
        let evaluations = plan.measurements.iter().map(|m| (m.stage, "metrics.json"));
        filters
            .map(|s| (s.id, "filter.json"))
            .chain(evaluations)
            .map(|(id, file)| {
                let path = root.join(format!("stages/{id}/{file}"));
                let mut v: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                )
                .unwrap();
                // Timings are the machine's.
                v.as_object_mut().unwrap().remove("judging");
                v.as_object_mut().unwrap().remove("generation");
                v
            })
            .collect()
    };
    let distributed = read(&c.path("s3/bucket/runs"));
    let local_store = c.path("local").display().to_string();
    let local_env = [(
        "SUBLIMINAL_JUDGE_CACHE",
        c.path("judgements-local").display().to_string(),
    )];
    let args = ["--store", &local_store, "--device", "cpu", "--jobs", "2"];
    crate::subliminal_with(
        &local_env,
        &[&["run", sweep.to_str().unwrap()][..], &args[..]].concat(),
    )
    .ok();
    let local = read(Path::new(&local_store));
    assert_eq!(distributed.len(), 2 + 4);
    assert_eq!(
        distributed, local,
        "the cluster's filters and evaluations are local mode's"
    );
}
