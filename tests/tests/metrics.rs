//! Metrics: a real scheduler and real workers against real Redis and S3 run a
//! sweep in which a worker is killed mid-stage and another's stages fail;
//! both /metrics endpoints are scraped, checked by `promtool check metrics`,
//! and their counters compared with what happened.

use std::process::{Command, Stdio};
use std::time::Duration;

use subliminal_tests::servers::{http_get, metrics_addr, sample, wait_for, Daemon, Redis, S3};
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
epochs = 3
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
    wait_for("the sweep to be closed as failed", TIMEOUT, || {
        scheduler.log_text().contains("sweep failed")
    });

    let worker_addr =
        metrics_addr(&survivor.log_text()).expect("the worker logs its metrics address");
    let scheduler_addr =
        metrics_addr(&scheduler.log_text()).expect("the scheduler logs its metrics address");
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
}
