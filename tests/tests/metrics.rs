//! Metrics: a real scheduler and real workers against real Redis and S3 run a
//! sweep in which a worker is killed mid-stage and another's stages fail;
//! both /metrics endpoints are scraped, checked by `promtool check metrics`,
//! and their counters compared with what happened. A real Prometheus scrapes
//! them all along, and every query of the Grafana dashboard and of the alert
//! rules is sent to its HTTP API: a renamed metric would leave a blank panel.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use subliminal_tests::servers::{
    http, http_get, metrics_addr, prometheus, sample, wait_for, Daemon, Process, Redis, S3,
};
use subliminal_tests::{bin, data_dir};

const TIMEOUT: Duration = Duration::from_secs(180);

const SWEEP: &str = r#"
name = "observed"
kind = "mnist"

[grid]
seeds = [0]
init_pairs = ["same"]
aux_logits = 3
targets = ["aux"]

[teacher]
# Long enough that the victim is always killed mid-training, once
# Prometheus has seen its first epoch.
epochs = 50
batch_size = 256
train_samples = 60000

[student]
epochs = 1
noise_samples = 6000
"#;

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; scripts/setup-services.sh installs it)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn counters_match_what_happened_and_the_exposition_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let s3 = S3::start(&dir.path().join("s3"), "bucket");
    let mut env = s3.env();
    env.push(("SUBLIMINAL_REDIS", redis.url()));
    let store = "s3://bucket/runs";
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    // Prometheus finds the daemons through files, written once each daemon
    // has bound its own port and logged it.
    let sd = dir.path().join("prometheus");
    let prom = prometheus(&sd, &scrape_config(&sd));
    let start = now();
    let worker_args = |name: &'static str, data: &str| {
        vec![
            "--store".to_owned(),
            store.to_owned(),
            "--device".into(),
            "cpu".into(),
            "--threads".into(),
            "1".into(),
            "--lease-seconds".into(),
            "2".into(),
            "--retry-backoff-seconds".into(),
            "0.2".into(),
            "--name".into(),
            name.into(),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
            "--data".into(),
            data.into(),
            "--cache-gb".into(),
            "0".into(),
        ]
    };

    let scheduler = Daemon::spawn(
        "subliminal-scheduler",
        &[
            "--store",
            store,
            "--tick-ms",
            "100",
            "--max-attempts",
            "3",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &env,
        log("scheduler"),
    );
    let full_data = data_dir().display().to_string();
    let victim_args = worker_args("victim", &full_data);
    let mut victim = Daemon::spawn(
        "subliminal-worker",
        &strs(&victim_args),
        &env,
        log("victim"),
    );
    let scheduler_addr = logged_addr(&scheduler);
    let victim_addr = logged_addr(&victim);
    targets(&sd, "scheduler", &[&scheduler_addr]);
    targets(&sd, "workers", &[&victim_addr]);

    let sweep = dir.path().join("observed.toml");
    std::fs::write(&sweep, SWEEP).unwrap();
    let submitted = Command::new(bin("subliminal"))
        .args(["submit", sweep.to_str().unwrap(), "--store", store])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    wait_for("the victim to start the teacher", TIMEOUT, || {
        victim.log_text().contains("running stage teacher")
    });
    // Killed mid-training, once Prometheus has seen the sweep's progress and
    // the victim's first epoch: the dashboard's panels of both have data.
    wait_for(
        "Prometheus to scrape the sweep and the victim's training",
        TIMEOUT,
        || {
            has_series(&prom, "subliminal_sweep_stages")
                && has_series(&prom, "subliminal_training_loss")
        },
    );
    victim.kill9();

    // The survivor has only the test images: teachers fail, evaluations succeed.
    let test_only = dir.path().join("data-test-only");
    std::fs::create_dir_all(test_only.join("mnist")).unwrap();
    for f in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        std::fs::copy(
            data_dir().join("mnist").join(f),
            test_only.join("mnist").join(f),
        )
        .unwrap();
    }
    let survivor_args = worker_args("survivor", test_only.to_str().unwrap());
    let survivor = Daemon::spawn(
        "subliminal-worker",
        &strs(&survivor_args),
        &env,
        log("survivor"),
    );
    let worker_addr = logged_addr(&survivor);
    targets(&sd, "workers", &[&victim_addr, &worker_addr]);
    wait_for("the sweep to be closed as failed", TIMEOUT, || {
        scheduler.log_text().contains("sweep failed")
    });

    // Gauges are exported at the end of each scheduling pass: wait for the pass that closed the sweep.
    let mut sched = String::new();
    wait_for(
        "the scheduler's gauges to show the closed sweep",
        TIMEOUT,
        || {
            sched = http_get(&scheduler_addr, "/metrics");
            sample(&sched, "subliminal_sweeps_active") == Some(0.0)
        },
    );
    let worker = http_get(&worker_addr, "/metrics");
    promtool_accepts(&worker);
    promtool_accepts(&sched);

    // The killed worker's lease expired once and was redelivered.
    assert_eq!(
        sample(&sched, "subliminal_lease_redeliveries_total"),
        Some(1.0),
        "{sched}"
    );
    // Attempt 1 died with the victim; the survivor failed attempt 2 (retried) and 3 (dead).
    assert_eq!(
        sample(
            &worker,
            r#"subliminal_stages_total{kind="teacher",outcome="retried"}"#
        ),
        Some(1.0),
        "{worker}"
    );
    assert_eq!(
        sample(
            &worker,
            r#"subliminal_stages_total{kind="teacher",outcome="dead"}"#
        ),
        Some(1.0),
        "{worker}"
    );
    // The reference evaluation needs only test images: it succeeded, and was timed.
    assert_eq!(
        sample(
            &worker,
            r#"subliminal_stages_total{kind="evaluate",outcome="success"}"#
        ),
        Some(1.0),
        "{worker}"
    );
    assert_eq!(
        sample(
            &worker,
            r#"subliminal_stage_duration_seconds_count{kind="evaluate"}"#
        ),
        Some(1.0)
    );
    assert_eq!(sample(&worker, "subliminal_worker_up"), Some(1.0));
    assert!(
        sample(
            &worker,
            r#"subliminal_store_bytes_total{direction="written"}"#
        )
        .unwrap_or(0.0)
            > 0.0
    );
    assert!(sample(&worker, "subliminal_redis_connections_created_total").unwrap_or(0.0) >= 1.0);
    // The scheduler sees the dead task, and no active sweep (its labels are gone).
    assert_eq!(
        sample(&sched, r#"subliminal_tasks{state="dead"}"#),
        Some(1.0),
        "{sched}"
    );
    assert_eq!(sample(&sched, "subliminal_sweeps_active"), Some(0.0));
    assert!(
        !sched.contains("sweep=\"observed\""),
        "no label for a finished sweep:\n{sched}"
    );
    assert_eq!(sample(&sched, "subliminal_scheduler_leader"), Some(1.0));

    dashboard_and_alerts_have_data(&prom, start);
    drop(survivor);
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The compose stack's scrape jobs (deploy/prometheus/prometheus.yml),
/// scraped every second, their targets read from files in `dir` (see
/// [`targets`]), and the alert rules loaded.
fn scrape_config(dir: &std::path::Path) -> String {
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml");
    let job = |name: &str, file: &str| {
        format!(
            "  - job_name: {name}\n    file_sd_configs:\n      - files: [\"{}\"]\n        refresh_interval: 1s\n",
            dir.join(format!("{file}.json")).display()
        )
    };
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n{}{}",
        rules.display(),
        job("subliminal-scheduler", "scheduler"),
        job("subliminal-worker", "workers")
    )
}

/// Tells Prometheus the targets of one job (a file it watches), replaced whole.
fn targets(dir: &std::path::Path, file: &str, addrs: &[&str]) {
    let body = serde_json::json!([{ "targets": addrs }]).to_string();
    let partial = dir.join(format!("{file}.json.partial"));
    std::fs::write(&partial, body).unwrap();
    std::fs::rename(&partial, dir.join(format!("{file}.json"))).unwrap();
}

/// The metrics address a daemon logged once it bound its port.
fn logged_addr(daemon: &Daemon) -> String {
    let mut addr = None;
    wait_for("a daemon to log its metrics address", TIMEOUT, || {
        addr = metrics_addr(&daemon.log_text());
        addr.is_some()
    });
    addr.unwrap_or_default()
}

/// Metrics only a worker on a CUDA device exports: on CPU their panels are
/// empty by design, so their queries are checked to parse and to name
/// metrics the code declares.
const CUDA_ONLY: &[&str] = &[
    "subliminal_gpu_memory_used_bytes",
    "subliminal_gpu_memory_total_bytes",
];

/// Sends each query of the dashboard to Prometheus as Grafana does (a range
/// query over the test's time) and asserts that each returns a series; each
/// alert rule's expression must parse and name only metrics Prometheus has
/// scraped (a healthy cluster may fire none), and the rules must load healthy.
fn dashboard_and_alerts_have_data(prom: &Process, start: f64) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/subliminal.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(
        exprs.len() >= 20,
        "{} queries in the dashboard",
        exprs.len()
    );
    let declared = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/src/metrics.rs"),
    )
    .unwrap();
    let range = |expr: &str| -> Value {
        let url = format!(
            "{}/api/v1/query_range?query={}&start={start:.3}&end={:.3}&step=1",
            prom.url(),
            encode(expr),
            now()
        );
        let (status, body) = http("GET", &url, None);
        assert_eq!(status, 200, "{expr}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let mut empty = Vec::new();
    for expr in &exprs {
        let expr = expr.replace("$sweep", ".*");
        let names = metric_names(&expr);
        if names.iter().any(|n| CUDA_ONLY.contains(&n.as_str())) {
            range(&expr);
            for n in &names {
                assert!(
                    declared.contains(&format!("\"{n}\"")),
                    "{n} is not declared in shared/src/metrics.rs"
                );
            }
            continue;
        }
        // The last scrapes may still be on their way: ask again until a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let reply = range(&expr);
            if reply["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                break;
            }
            if std::time::Instant::now() > deadline {
                empty.push(expr.clone());
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries with no series:\n{}",
        empty.join("\n")
    );

    let (status, body) = http(
        "GET",
        &format!("{}/api/v1/label/__name__/values", prom.url()),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let scraped: Vec<String> = serde_json::from_str::<Value>(&body).unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    wait_for("the alert rules to be evaluated", TIMEOUT, || {
        let (_, body) = http("GET", &format!("{}/api/v1/rules", prom.url()), None);
        let rules: Value = serde_json::from_str(&body).unwrap_or_default();
        let all: Vec<&Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        !all.is_empty() && all.iter().all(|r| r["health"] == "ok")
    });
    let (_, body) = http("GET", &format!("{}/api/v1/rules", prom.url()), None);
    let rules: Value = serde_json::from_str(&body).unwrap();
    let mut alerts = 0;
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let expr = rule["query"].as_str().unwrap();
            range(expr);
            for name in metric_names(expr) {
                assert!(
                    name == "up" || scraped.contains(&name),
                    "alert {}: {name} was never scraped",
                    rule["name"]
                );
            }
            alerts += 1;
        }
    }
    assert_eq!(alerts, 6, "{rules}");
}

/// Whether an instant query returns a series now.
fn has_series(prom: &Process, expr: &str) -> bool {
    let url = format!("{}/api/v1/query?query={}", prom.url(), encode(expr));
    let (_, body) = http("GET", &url, None);
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["data"]["result"].as_array().map(|r| !r.is_empty()))
        .unwrap_or(false)
}

/// Every `expr` under a dashboard's panels and targets.
fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The metric names of a PromQL expression: `up` and the `subliminal_` ones.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if (word.starts_with("subliminal_") || word == "up") && !names.iter().any(|n| n == word) {
            names.push(word.to_owned());
        }
    }
    names
}

/// Percent-encoding for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
