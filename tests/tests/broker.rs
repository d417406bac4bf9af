//! The broker against a real redis-server: leases and fencing, retries with
//! backoff, dead letters, release, cancel, priority and malformed bodies.

use subliminal_broker::{Broker, Failed, Renewal, TaskBody, TaskState, BODY_VERSION};
use subliminal_shared::stage::{StageKind, StageSpec};
use subliminal_tests::servers::Redis;

fn body(sweep: &str, n: u64, priority: i64) -> TaskBody {
    TaskBody {
        version: BODY_VERSION,
        sweep: sweep.to_owned(),
        queue: "cpu".to_owned(),
        priority,
        stage: StageSpec::new(
            "test",
            StageKind::from_static("evaluate"),
            &serde_json::json!({ "n": n }),
            vec![],
        ),
    }
}

fn queues() -> Vec<String> {
    vec!["cpu".to_owned()]
}

async fn broker(redis: &Redis) -> Broker {
    Broker::connect(&redis.url(), "sl")
        .await
        .expect("broker connects")
}

#[tokio::test]
async fn a_worker_whose_lease_expired_cannot_complete() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let b = broker(&redis).await;
    let task = body("s", 1, 0);
    assert!(b.enqueue(&task, 3).await.unwrap());
    assert!(
        !b.enqueue(&task, 3).await.unwrap(),
        "a stage is queued once"
    );
    let first = b.lease(&queues(), "w1", 1).await.unwrap().expect("a task");
    assert_eq!(first.attempt, 1);
    // The lease lasts 1 ms: the reaper redelivers it.
    let mut redelivered = Vec::new();
    while redelivered.is_empty() {
        redelivered = b.reap(10).await.unwrap().0;
    }
    assert_eq!(
        redelivered,
        std::slice::from_ref(&first.stage),
        "the reaper names the stage"
    );
    let second = b
        .lease(&queues(), "w2", 60_000)
        .await
        .unwrap()
        .expect("redelivered");
    assert_eq!(second.stage, first.stage);
    assert!(second.token > first.token, "a new fencing token");
    assert_eq!(b.renew(&first, 60_000).await.unwrap(), Renewal::Lost);
    assert!(
        !b.complete(&first).await.unwrap(),
        "the stale worker is refused"
    );
    assert_eq!(
        b.fail(&first, "late", 0, false).await.unwrap(),
        Failed::Refused
    );
    assert_eq!(b.renew(&second, 60_000).await.unwrap(), Renewal::Renewed);
    assert!(b.complete(&second).await.unwrap());
    let done = b.completions(10).await.unwrap();
    assert_eq!(done, vec![task.stage.id]);
    assert!(b.lease(&queues(), "w1", 1000).await.unwrap().is_none());
}

#[tokio::test]
async fn failures_retry_then_dead_letter_and_can_be_requeued() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let b = broker(&redis).await;
    let task = body("s", 2, 0);
    b.enqueue(&task, 2).await.unwrap();
    let l1 = b.lease(&queues(), "w", 60_000).await.unwrap().unwrap();
    assert_eq!(
        b.fail(&l1, "boom 1", 0, false).await.unwrap(),
        Failed::WillRetry
    );
    assert_eq!(
        b.task_states(&[task.stage.id]).await.unwrap(),
        vec![Some(TaskState::Retry)]
    );
    assert!(
        b.lease(&queues(), "w", 60_000).await.unwrap().is_none(),
        "backing off"
    );
    assert_eq!(b.promote(10).await.unwrap(), 1);
    let l2 = b.lease(&queues(), "w", 60_000).await.unwrap().unwrap();
    assert_eq!(l2.attempt, 2);
    assert_eq!(b.fail(&l2, "boom 2", 0, false).await.unwrap(), Failed::Dead);
    let dead = b.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].error, "boom 2");
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].kind, "evaluate");
    assert!(
        !b.enqueue(&task, 2).await.unwrap(),
        "a dead stage is not enqueued again by itself"
    );
    assert_eq!(
        b.requeue_dead(&[task.stage.id.to_string()]).await.unwrap(),
        1
    );
    let l3 = b.lease(&queues(), "w", 60_000).await.unwrap().unwrap();
    assert_eq!(l3.attempt, 1, "requeued with fresh attempts");
}

#[tokio::test]
async fn release_gives_a_task_back_without_spending_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let b = broker(&redis).await;
    b.enqueue(&body("s", 3, 0), 1).await.unwrap();
    let l = b.lease(&queues(), "w", 60_000).await.unwrap().unwrap();
    assert!(b.release(&l).await.unwrap());
    assert!(
        !b.complete(&l).await.unwrap(),
        "a released lease is no longer ours"
    );
    let again = b.lease(&queues(), "w", 60_000).await.unwrap().unwrap();
    assert_eq!(again.attempt, 1);
}

#[tokio::test]
async fn cancel_drops_queued_tasks_and_stops_running_ones() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let b = broker(&redis).await;
    b.register_sweep("s", 0).await.unwrap();
    b.enqueue(&body("s", 4, 0), 3).await.unwrap();
    b.enqueue(&body("s", 5, 0), 3).await.unwrap();
    b.enqueue(&body("other", 6, 0), 3).await.unwrap();
    let running = b.lease(&queues(), "w", 60_000).await.unwrap().unwrap();
    assert_eq!(b.cancel_sweep("s").await.unwrap(), (1, 1));
    assert_eq!(b.renew(&running, 60_000).await.unwrap(), Renewal::Cancelled);
    assert_eq!(
        b.fail(&running, "stopped", 0, true).await.unwrap(),
        Failed::Dropped
    );
    assert!(
        b.dead_letters().await.unwrap().is_empty(),
        "a cancelled task is not a dead letter"
    );
    assert_eq!(
        b.task_states(&[body("s", 4, 0).stage.id]).await.unwrap(),
        vec![None]
    );
    assert_eq!(
        b.sweep_state("s").await.unwrap().as_deref(),
        Some("cancelled")
    );
    assert!(b.active_sweeps().await.unwrap().is_empty());
    let left = b.lease(&queues(), "w", 60_000).await.unwrap().unwrap();
    let other = body("other", 6, 0);
    assert_eq!(
        left.stage,
        other.stage.id.to_string(),
        "the other sweep's task is untouched"
    );
}

#[tokio::test]
async fn higher_priority_sweeps_lease_first() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let b = broker(&redis).await;
    let low = body("low", 7, 0);
    let high = body("high", 8, 10);
    b.enqueue(&low, 3).await.unwrap();
    b.enqueue(&high, 3).await.unwrap();
    let first = b.lease(&queues(), "w", 60_000).await.unwrap().unwrap();
    assert_eq!(first.stage, high.stage.id.to_string());
}

#[tokio::test]
async fn a_malformed_body_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let b = broker(&redis).await;
    b.enqueue_raw("not-a-stage", "cpu", b"\x00\xffgarbage")
        .await
        .unwrap();
    let l = b.lease(&queues(), "w", 60_000).await.unwrap().unwrap();
    let err = subliminal_broker::decode_body(&l.body)
        .unwrap_err()
        .to_string();
    assert!(err.contains("malformed task body"), "{err}");
    assert_eq!(b.fail(&l, &err, 0, true).await.unwrap(), Failed::Dead);
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error() {
    let port = subliminal_tests::servers::free_port();
    let started = std::time::Instant::now();
    let err = Broker::connect(&format!("redis://127.0.0.1:{port}/"), "sl")
        .await
        .err()
        .expect("no server there");
    let text = format!("{err:#}");
    assert!(text.contains("Redis"), "{text}");
    // A refused connection is retried (a server may be starting), for a bounded time.
    assert!(
        text.contains("tried") && !text.contains("tried 1 time(s)"),
        "{text}"
    );
    assert!(started.elapsed() < subliminal_broker::CONNECT_PATIENCE * 2);
}

#[tokio::test]
async fn a_redis_that_starts_late_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let port = subliminal_tests::servers::free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let connecting = tokio::spawn(async move { Broker::connect(&url, "sl").await });
    // Started only after the first connection attempts were refused.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let _redis = Redis::start_on(dir.path(), port);
    let broker = connecting
        .await
        .unwrap()
        .expect("connects once Redis is up");
    broker.ping().await.unwrap();
}

#[tokio::test]
async fn batches_lease_and_complete_many_tasks_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let b = broker(&redis).await;
    let bodies: Vec<TaskBody> = (10..15).map(|n| body("s", n, 0)).collect();
    assert_eq!(b.enqueue_many(&bodies, 3).await.unwrap(), [true; 5]);
    assert_eq!(
        b.enqueue_many(&bodies, 3).await.unwrap(),
        [false; 5],
        "each stage once"
    );
    let first = b.lease_many(&queues(), "w", 60_000, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    let rest = b.lease_many(&queues(), "w", 60_000, 10).await.unwrap();
    assert_eq!(rest.len(), 2);
    let mut ids: Vec<String> = first.iter().chain(&rest).map(|l| l.stage.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "no task leased twice");
    assert_eq!(b.complete_many(&first).await.unwrap(), vec![true; 3]);
    assert_eq!(
        b.complete_many(&first).await.unwrap(),
        vec![false; 3],
        "a second ack is refused"
    );
    assert_eq!(b.completions(10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_password_in_the_url_is_used_and_a_missing_one_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start_with(dir.path(), &["--requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}/", redis.port);
    let b = Broker::connect(&url, "sl").await.expect("authenticated");
    assert!(b.enqueue(&body("s", 20, 0), 3).await.unwrap());
    let err = Broker::connect(&redis.url(), "sl")
        .await
        .err()
        .expect("no password, no entry");
    let text = format!("{err:#}");
    assert!(text.contains("Redis") && !text.contains("s3cret"), "{text}");
}

#[test]
fn tls_urls_reach_a_tls_only_redis_that_the_system_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start_tls(dir.path());
    let url = format!("rediss://127.0.0.1:{}/", redis.port);
    let dlq = |trust: bool| {
        let mut cmd = std::process::Command::new(subliminal_tests::bin("subliminal"));
        cmd.args(["dlq", "list", "--json", "--redis", &url]);
        if trust {
            // The system trust store, as a private CA would be installed.
            cmd.env("SSL_CERT_FILE", dir.path().join("ca.crt"));
        }
        subliminal_tests::Ran::from(cmd.output().unwrap())
    };
    let trusted = dlq(true).ok();
    assert_eq!(trusted.stdout.trim(), "[]");
    let untrusted = dlq(false);
    assert_eq!(
        untrusted.code,
        Some(1),
        "an untrusted certificate is refused"
    );
    let plain = std::process::Command::new(subliminal_tests::bin("subliminal"))
        .args(["dlq", "list", "--redis", &redis.url()])
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "plain TCP is refused by a TLS-only server"
    );
}

#[tokio::test]
async fn the_oldest_queued_task_has_an_age_and_leaving_the_queue_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let b = broker(&redis).await;
    let ages = b.oldest_ages(&[0]).await.unwrap();
    assert!(
        ages.iter().all(|(_, a)| *a == 0.0),
        "empty queues have no age: {ages:?}"
    );
    b.enqueue(&body("s", 30, 0), 3).await.unwrap();
    let cpu_age = |ages: Vec<(String, f64)>| ages.into_iter().find(|(q, _)| q == "cpu").unwrap().1;
    let mut age = 0.0;
    while age == 0.0 {
        age = cpu_age(b.oldest_ages(&[0]).await.unwrap());
    }
    assert!(age > 0.0 && age < 60.0, "{age}");
    assert_eq!(
        cpu_age(b.oldest_ages(&[7]).await.unwrap()),
        0.0,
        "a priority's band holds only its own tasks"
    );
    b.lease(&queues(), "w", 60_000).await.unwrap().unwrap();
    assert_eq!(cpu_age(b.oldest_ages(&[0]).await.unwrap()), 0.0);
}
