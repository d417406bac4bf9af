//! Security of a cluster: the daemons work as the least-privileged Redis
//! user that deploy/redis/users.acl ships, and no secret (the Redis
//! password, the S3 secret key) reaches a log line or a metric, at the most
//! verbose log level, from the scheduler, a worker or the CLI.

use std::process::Command;
use std::time::Duration;

use subliminal_tests::servers::{http_get, metrics_addr, wait_for, Daemon, Redis, S3, S3_SECRET};
use subliminal_tests::{bin, data_dir, tiny_sweep};

const PASSWORD: &str = "acl-test-password-7f3a";
const TIMEOUT: Duration = Duration::from_secs(180);

/// The shipped ACL file with the test's password hashed in.
fn acl_file(dir: &std::path::Path) -> std::path::PathBuf {
    use sha2::Digest;
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/redis/users.acl"),
    )
    .unwrap();
    let placeholder = hex::encode(sha2::Sha256::digest(b"change-me"));
    assert!(
        shipped.contains(&placeholder),
        "the shipped hash is change-me's"
    );
    let ours = hex::encode(sha2::Sha256::digest(PASSWORD.as_bytes()));
    let path = dir.join("users.acl");
    std::fs::write(&path, shipped.replace(&placeholder, &ours)).unwrap();
    path
}

#[test]
fn a_sweep_runs_as_the_acl_user_and_no_secret_reaches_a_log_or_a_metric() {
    let dir = tempfile::tempdir().unwrap();
    let acl = acl_file(dir.path());
    let redis = Redis::start_with(dir.path(), &["--aclfile", acl.to_str().unwrap()]);
    let s3 = S3::start(&dir.path().join("s3"), "bucket");
    let mut env = s3.env();
    env.push((
        "SUBLIMINAL_REDIS",
        format!("redis://subliminal@127.0.0.1:{}/", redis.port),
    ));
    env.push(("REDIS_PASSWORD", PASSWORD.to_owned()));
    env.push(("SUBLIMINAL_LOG", "trace".to_owned()));
    let store = "s3://bucket/runs";
    let scheduler = Daemon::spawn(
        "subliminal-scheduler",
        &[
            "--store",
            store,
            "--tick-ms",
            "100",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &env,
        dir.path().join("scheduler.log"),
    );
    let data = data_dir().display().to_string();
    let worker = Daemon::spawn(
        "subliminal-worker",
        &[
            "--store",
            store,
            "--device",
            "cpu",
            "--threads",
            "1",
            "--lease-seconds",
            "5",
            "--metrics-addr",
            "127.0.0.1:0",
            "--data",
            &data,
            "--cache-gb",
            "0",
        ],
        &env,
        dir.path().join("worker.log"),
    );
    let sweep = dir.path().join("acl.toml");
    std::fs::write(&sweep, tiny_sweep("acl", 1, 3000)).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(bin("subliminal"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "subliminal {args:?}: {all}");
        (stdout, all)
    };
    let mut said = cli(&["submit", sweep.to_str().unwrap(), "--store", store]).1;
    wait_for("the sweep to finish as the ACL user", TIMEOUT, || {
        let (status, all) = cli(&["status", "acl", "--store", store, "--json"]);
        let json: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
        said.push_str(&all);
        json["sweep"]["state"] == "done"
    });
    said.push_str(&cli(&["results", "acl", "--store", store]).1);
    assert!(said.contains("student same-init aux"), "{said}");

    // The user is refused what it does not need.
    let as_user = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "--user", "subliminal"])
            .args(["--pass", PASSWORD, "--no-auth-warning"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for refused in [
        vec!["FLUSHALL"],
        vec!["CONFIG", "SET", "maxmemory", "1"],
        vec!["KEYS", "*"],
        vec!["SET", "elsewhere:key", "1"],
    ] {
        let reply = as_user(&refused);
        assert!(reply.contains("NOPERM"), "{refused:?}: {reply}");
    }
    assert!(as_user(&["EXISTS", "sl:nothing"]).contains('0'));

    let logs = format!("{}{}", scheduler.log_text(), worker.log_text());
    assert!(
        logs.lines().count() > 100,
        "trace level logs plenty: {} lines",
        logs.lines().count()
    );
    let addr =
        |daemon: &Daemon| metrics_addr(&daemon.log_text()).expect("a logged metrics address");
    let metrics = format!(
        "{}{}",
        http_get(&addr(&scheduler), "/metrics"),
        http_get(&addr(&worker), "/metrics")
    );
    for (name, secret) in [
        ("the Redis password", PASSWORD),
        ("the S3 secret key", S3_SECRET),
    ] {
        for (place, text) in [
            ("a log", &logs),
            ("the CLI's output", &said),
            ("a metric", &metrics),
        ] {
            assert!(
                !text.contains(secret),
                "{name} appears in {place}:\n{}",
                text.lines()
                    .filter(|l| l.contains(secret))
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}
