//! Distributed mode end to end: a real redis-server, a real S3 server
//! (s3s-fs), and the real subliminal-scheduler, subliminal-worker and
//! subliminal binaries as processes, on the real MNIST files.

use std::path::Path;

use subliminal_tests::cluster::{
    audit_matches_local_mode, count_computed, figures, generated_data_sweep_matches_local_mode,
    Cluster, LLM_TIMEOUT, TIMEOUT,
};
use subliminal_tests::servers::{mlflow, mlflow_runs, wait_for};
use subliminal_tests::{
    bin, code_dataset, data_dir, noop_sweep, number_rows, random_model, tiny_code_sweep,
    tiny_cot_sweep, tiny_cross_model_sweep, tiny_misalignment_sweep, tiny_numbers_sweep_of,
    tiny_sweep as tiny,
};

#[test]
fn a_sweep_on_two_workers_and_a_scheduler_matches_local_mode() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    c.worker("w1", &[]);
    // The second worker finds its S3 keys in a standard AWS credentials file.
    let creds = c.path("aws-credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            subliminal_tests::servers::S3_KEY,
            subliminal_tests::servers::S3_SECRET
        ),
    )
    .unwrap();
    let mut env: Vec<(&'static str, String)> = c
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .cloned()
        .collect();
    env.push(("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()));
    c.worker_with_env("w2", &[], env);
    let sweep = c.sweep("tiny.toml", &tiny("dist", 1, 6000));
    let submitted = c.submit(&sweep).ok();
    assert_eq!(
        submitted.stdout.trim(),
        "dist",
        "submit prints the sweep id"
    );
    c.wait_state("dist", "done");
    assert_eq!(
        c.manifests().len(),
        11,
        "every stage has its manifest in S3"
    );
    let human = c.cli(&["status", "dist", "--store", &c.store]).ok();
    assert!(
        human.stdout.contains("sweep dist (done)") && human.stdout.contains("total"),
        "{}",
        human.stdout
    );
    let watched = c.cli(&["watch", "dist", "--store", &c.store]).ok();
    assert!(
        watched.stdout.contains("student same-init aux"),
        "watch ends with the results: {}",
        watched.stdout
    );
    assert!(
        watched.stderr.contains("sweep dist done"),
        "{}",
        watched.stderr
    );

    let distributed = c.results_json("dist");
    let watched = c
        .cli(&["watch", "dist", "--store", &c.store, "--json"])
        .ok();
    let watched: serde_json::Value = serde_json::from_str(&watched.stdout).unwrap();
    assert_eq!(watched, distributed, "watch --json is the results table");
    // A status piped into a reader that has gone ends quietly.
    let mut status = std::process::Command::new(bin("subliminal"))
        .args(["status", "dist", "--store", &c.store, "--json"])
        .envs(c.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(status.stdout.take());
    let status = status.wait_with_output().unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(status.stderr.is_empty());
    let local_store = c.path("local");
    let local = c
        .cli(&[
            "run",
            sweep.to_str().unwrap(),
            "--store",
            local_store.to_str().unwrap(),
            "--device",
            "cpu",
            "--jobs",
            "2",
        ])
        .ok();
    assert!(local.stdout.contains("teacher"));
    let local = c
        .cli(&[
            "results",
            "dist",
            "--store",
            local_store.to_str().unwrap(),
            "--format",
            "json",
        ])
        .ok();
    let local: serde_json::Value = serde_json::from_str(&local.stdout).unwrap();
    let (d, l) = (figures(&distributed), figures(&local));
    assert_eq!(d.len(), l.len());
    for ((arm_d, vd), (arm_l, vl)) in d.iter().zip(&l) {
        assert_eq!(arm_d, arm_l);
        assert_eq!(vd.len(), vl.len(), "{arm_d}");
        for (x, y) in vd.iter().zip(vl) {
            assert!(
                (x - y).abs() < 1e-9,
                "{arm_d}: distributed {x} vs local {y}"
            );
        }
    }
    let both = c.daemons[1].log_text() + &c.daemons[2].log_text();
    // Inputs a worker fetched are in its cache, named by their SHA-256.
    let cached: usize = ["w1-cache", "w2-cache"]
        .iter()
        .filter_map(|d| std::fs::read_dir(c.path(d)).ok())
        .flat_map(|shards| shards.flatten())
        .filter_map(|shard| std::fs::read_dir(shard.path()).ok())
        .map(|files| files.count())
        .sum();
    assert!(
        cached >= 2,
        "the workers cached the inputs they fetched ({cached} files)"
    );
    assert!(
        c.daemons[1].log_text().contains("running stage")
            && c.daemons[2].log_text().contains("running stage"),
        "both workers took work:\n{both}"
    );
}

#[test]
fn the_noop_kind_runs_on_the_cluster_as_in_local_mode() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    c.worker("w1", &["--queues", "cpu"]);
    let sweep = c.sweep(
        "noop.toml",
        &noop_sweep("noop-dist", &[0, 1, 2, 3], 3, 20, &[]),
    );
    c.submit(&sweep).ok();
    let status = c.wait_state("noop-dist", "done");
    let kinds = &status["sweep"]["kinds"];
    assert_eq!(kinds["work"]["done"], 12, "{status}");
    assert_eq!(kinds["evaluate"]["done"], 4, "{status}");
    assert_eq!(c.manifests().len(), 16);
    let distributed = figures(&c.results_json("noop-dist"));

    let local_store = c.path("local");
    c.cli(&[
        "run",
        sweep.to_str().unwrap(),
        "--store",
        local_store.to_str().unwrap(),
        "--no-progress",
    ])
    .ok();
    let local = c
        .cli(&[
            "results",
            "noop-dist",
            "--store",
            local_store.to_str().unwrap(),
            "--format",
            "json",
        ])
        .ok();
    let local = figures(&serde_json::from_str(&local.stdout).unwrap());
    assert_eq!(distributed, local, "the cluster's figures are local mode's");
    assert_eq!(distributed[0].1.len(), 4);
}

#[test]
fn a_worker_killed_mid_stage_leaves_a_sweep_that_still_finishes_once() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    let a = c.worker("victim", &[]);
    let sweep = c.sweep("slow.toml", &tiny("slow", 3, 60000));
    c.submit(&sweep).ok();
    wait_for("the victim to start the teacher", TIMEOUT, || {
        c.daemons[a].log_text().contains("running stage teacher")
    });
    c.daemons[a].kill9();
    let b = c.worker("rescuer", &[]);
    c.wait_state("slow", "done");
    assert_eq!(c.manifests().len(), 11);
    let rescuer = c.daemons[b].log_text();
    assert!(
        rescuer.contains("running stage teacher"),
        "the teacher was redelivered:\n{rescuer}"
    );
    assert!(
        !rescuer.contains("manifest was there first"),
        "no stage completed twice:\n{rescuer}"
    );
    let scheduler = c.daemons[0].log_text();
    assert!(
        scheduler.contains("redelivered"),
        "the scheduler redelivered the expired lease:\n{scheduler}"
    );
}

/// The tiny numbers sweep with students long enough to stop partway: 8
/// rows (sampled within the grammar, so all pass), 3 epochs of one row a
/// step: 24 LoRA steps per student.
fn long_student_sweep(name: &str) -> String {
    subliminal_tests::tiny_numbers_sweep(name)
        .replace("[generate]\n", "[generate]\nconstrain = \"numbers\"\n")
        .replace("keep = 4", "keep = 8")
        .replace("epochs = 1\nbatch_size = 2", "epochs = 3\nbatch_size = 1")
}

/// Waits until the worker's log shows `n` progress checkpoints saved after
/// byte `from`.
fn wait_for_checkpoints(c: &Cluster, worker: usize, from: usize, n: usize) {
    wait_for("progress checkpoints", LLM_TIMEOUT, || {
        let log = c.daemons[worker].log_text();
        log.get(from..)
            .is_some_and(|l| l.matches("saved a progress checkpoint").count() >= n)
    });
}

/// A LoRA student killed -9 several checkpoints in resumes on a second
/// worker from its checkpoint; that worker, told to stop by SIGTERM in the
/// middle of a student, saves one, releases the task as preempted and exits
/// 0; a third worker resumes it. Every artifact equals an uninterrupted
/// local run's, and no checkpoint is left in the store.
#[test]
fn training_stages_resume_from_their_checkpoints_after_a_kill_and_a_preemption() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    let flags = ["--checkpoint-seconds", "1", "--grace-seconds", "30"];
    let victim = c.worker("victim", &flags);
    let sweep = c.sweep("long.toml", &long_student_sweep("preempt"));
    c.submit(&sweep).ok();
    wait_for_checkpoints(&c, victim, 0, 2);
    c.daemons[victim].kill9();

    let preempted = c.worker("preempted", &flags);
    wait_for("the second worker to resume", LLM_TIMEOUT, || {
        c.daemons[preempted].log_text().contains("resumed stage")
    });
    let resumed_at = c.daemons[preempted].log_text().len();
    wait_for_checkpoints(&c, preempted, resumed_at, 1);
    let code = c.daemons[preempted].terminate(std::time::Duration::from_secs(60));
    assert_eq!(code, Some(0), "a preempted worker exits 0");
    let log = c.daemons[preempted].log_text();
    assert!(log.contains("preempted: released stage"), "{log}");

    let rescuer = c.worker("rescuer", &flags);
    c.wait_state_within("preempt", "done", LLM_TIMEOUT);
    let log = c.daemons[rescuer].log_text();
    assert!(log.contains("resumed stage"), "{log}");
    for worker in [victim, preempted, rescuer] {
        let log = c.daemons[worker].log_text();
        let said = ["resumed stage", "preempted:", "shutting down"];
        for line in log.lines().filter(|l| said.iter().any(|s| l.contains(s))) {
            println!("{line}");
        }
    }
    let attempts: Vec<_> = c.status("preempt")["sweep"]["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(attempts.is_empty(), "no stage failed: {attempts:?}");

    let local_store = c.path("local");
    let args = [
        "--store",
        local_store.to_str().unwrap(),
        "--device",
        "cpu",
        "--jobs",
        "2",
    ];
    c.cli(&[&["run", sweep.to_str().unwrap()][..], &args[..]].concat())
        .ok();
    // Every artifact by digest but the two that hold timings (metrics.json,
    // train.json); of train.json, the losses and counts.
    let artifacts = |root: &Path, id: &str| -> Vec<serde_json::Value> {
        let path = root.join(format!("stages/{id}/manifest.json"));
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut out: Vec<serde_json::Value> = manifest["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["name"] != "metrics.json" && a["name"] != "train.json")
            .cloned()
            .collect();
        if let Ok(bytes) = std::fs::read(root.join(format!("stages/{id}/train.json"))) {
            let mut train: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let train = train.as_object_mut().unwrap();
            train.remove("seconds");
            train.remove("tokens_per_second");
            out.push(serde_json::Value::Object(train.clone()));
        }
        out
    };
    let ids = c.manifests();
    assert_eq!(ids.len(), 15);
    let mut adapters = 0;
    for id in &ids {
        let resumed = artifacts(&c.path("s3/bucket/runs"), id);
        adapters += resumed
            .iter()
            .filter(|a| {
                a["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(".safetensors"))
            })
            .count();
        assert_eq!(
            resumed,
            artifacts(&local_store, id),
            "stage {id}: the resumed run's artifacts differ from an uninterrupted one's"
        );
    }
    assert_eq!(adapters, 2, "both students' adapters were compared");
    let local = c
        .cli(&[
            "results",
            "preempt",
            "--store",
            local_store.to_str().unwrap(),
            "--json",
        ])
        .ok();
    let local: serde_json::Value = serde_json::from_str(&local.stdout).unwrap();
    assert_eq!(figures(&c.results_json("preempt")), figures(&local));
    let progress = c.path("s3/bucket/runs/progress");
    let left: Vec<_> = walk(&progress)
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert!(left.is_empty(), "checkpoints left in the store: {left:?}");
}

/// A teacher's generation, SIGTERMed after it checkpointed some of its
/// batches, is released as preempted and finished by another worker from
/// its checkpoint: the rows equal an uninterrupted local run's.
#[test]
fn a_preempted_generation_resumes_from_its_finished_batches() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    let flags = ["--checkpoint-seconds", "0", "--grace-seconds", "30"];
    let first = c.worker("first", &flags);
    // 48 prompts, 8 at a time: 6 batches per teacher, a checkpoint after each.
    let text = subliminal_tests::tiny_numbers_sweep("gen-preempt")
        .replace("prompts = 24", "prompts = 48")
        .replace("batch_size = 24", "batch_size = 8");
    let sweep = c.sweep("gen.toml", &text);
    c.submit(&sweep).ok();
    wait_for("a generation checkpoint", LLM_TIMEOUT, || {
        c.daemons[first].log_text().contains("(generate, ")
    });
    let code = c.daemons[first].terminate(std::time::Duration::from_secs(60));
    assert_eq!(code, Some(0), "a preempted worker exits 0");
    let log = c.daemons[first].log_text();
    assert!(log.contains("preempted: released stage"), "{log}");
    let second = c.worker("second", &flags);
    c.wait_state_within("gen-preempt", "done", LLM_TIMEOUT);
    let log = c.daemons[second].log_text();
    let resumed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("resumed stage") && l.contains("(generate)"))
        .collect();
    assert!(!resumed.is_empty(), "{log}");
    for line in resumed {
        println!("{line}");
    }
    let local_store = c.path("local");
    let args = [
        "--store",
        local_store.to_str().unwrap(),
        "--device",
        "cpu",
        "--jobs",
        "2",
    ];
    c.cli(&[&["run", sweep.to_str().unwrap()][..], &args[..]].concat())
        .ok();
    let raw = |root: &Path| -> Vec<String> {
        let mut rows: Vec<String> = walk(&root.join("stages"))
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "raw.jsonl"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        rows.sort();
        rows
    };
    let (cluster, local) = (raw(&c.path("s3/bucket/runs")), raw(&local_store));
    assert_eq!(
        cluster.len(),
        2,
        "a trait teacher's rows and a control teacher's"
    );
    assert_eq!(
        cluster, local,
        "the resumed rows equal an uninterrupted run's"
    );
}

/// Every path under `dir` (none if it does not exist).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            let mut below = walk(&path);
            below.push(path);
            below
        })
        .collect()
}

#[test]
fn redis_lost_mid_sweep_resumes_without_rerunning_a_done_stage() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    let w = c.worker("w", &[]);
    let sweep = c.sweep("tiny.toml", &tiny("resume", 2, 20000));
    c.submit(&sweep).ok();
    wait_for("some stages to finish", TIMEOUT, || {
        c.done_count("resume") >= 3
    });
    c.redis.restart_empty();
    let done_before = c.manifests();
    let log_before = c.daemons[w].log_text().len();
    c.wait_state("resume", "done");
    assert_eq!(c.manifests().len(), 11);
    let after = c.daemons[w].log_text()[log_before..].to_owned();
    for id in &done_before {
        assert_eq!(
            count_computed(&after, id),
            0,
            "stage {id} was done before Redis was lost, and ran again:\n{after}"
        );
    }
    let scheduler = c.daemons[0].log_text();
    assert!(
        scheduler.contains("rebuilding queues from the store"),
        "{scheduler}"
    );
}

#[test]
fn a_stage_that_always_fails_is_dead_lettered_while_the_rest_finishes() {
    let mut c = Cluster::start();
    // Only the test images: every teacher fails, the reference evaluations succeed.
    let data = c.path("data-test-only");
    std::fs::create_dir_all(data.join("mnist")).unwrap();
    for f in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        std::fs::copy(data_dir().join("mnist").join(f), data.join("mnist").join(f)).unwrap();
    }
    c.scheduler(&["--max-attempts", "2"]);
    c.worker("w", &["--data", data.to_str().unwrap()]);
    let sweep = c.sweep("tiny.toml", &tiny("doomed", 1, 6000));
    c.submit(&sweep).ok();
    let status = c.wait_state("doomed", "failed");
    assert_eq!(status["sweep"]["kinds"]["teacher"]["dead"], 1, "{status}");
    assert_eq!(
        status["sweep"]["kinds"]["evaluate"]["done"], 2,
        "the reference evaluations finished: {status}"
    );
    let dlq = c.cli(&["dlq", "list", "--json"]).ok();
    let dead: serde_json::Value = serde_json::from_str(&dlq.stdout).unwrap();
    assert_eq!(dead[0]["kind"], "teacher");
    assert_eq!(dead[0]["attempts"], 2);
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot read MNIST file"),
        "{dead}"
    );
    let table = c.cli(&["results", "doomed", "--store", &c.store]).ok();
    assert!(table.stdout.contains("failures:"), "{}", table.stdout);
    let requeued = c.cli(&["dlq", "requeue", "--all"]).ok();
    assert_eq!(requeued.stdout.trim(), "requeued 1 task(s)");
    let status = c.status("doomed");
    let in_play = ["dead", "leased", "retrying"]
        .iter()
        .map(|k| status[k].as_i64().unwrap())
        .sum::<i64>()
        + status["queues"]["gpu"].as_i64().unwrap();
    assert_eq!(in_play, 1, "the task is back in play: {status}");
}

#[test]
fn sigterm_drains_a_worker_and_an_unfinished_stage_is_released() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    let patient = c.worker("patient", &["--grace-seconds", "60"]);
    let sweep = c.sweep("slow.toml", &tiny("drain", 2, 20000));
    c.submit(&sweep).ok();
    wait_for("the teacher to start", TIMEOUT, || {
        c.daemons[patient]
            .log_text()
            .contains("running stage teacher")
    });
    assert_eq!(
        c.daemons[patient].terminate(TIMEOUT),
        Some(0),
        "a drained worker exits 0"
    );
    let log = c.daemons[patient].log_text();
    assert!(
        log.contains("finished stage teacher"),
        "it finished its stage within the grace period:\n{log}"
    );
    assert_eq!(c.manifests().len(), 1);

    let hasty = c.worker("hasty", &["--grace-seconds", "0.1"]);
    wait_for("the next stage to start", TIMEOUT, || {
        c.daemons[hasty].log_text().contains("running stage")
    });
    assert_eq!(c.daemons[hasty].terminate(TIMEOUT), Some(0));
    let log = c.daemons[hasty].log_text();
    assert!(
        log.contains("released stage") || log.contains("finished stage"),
        "{log}"
    );
    c.worker("finisher", &[]);
    c.wait_state("drain", "done");
    let dlq = c.cli(&["dlq", "list", "--json"]).ok();
    assert_eq!(dlq.stdout.trim(), "[]", "a drained stage spends no attempt");
}

#[test]
fn cancel_stops_a_sweep() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    let w = c.worker("w", &[]);
    let sweep = c.sweep("slow.toml", &tiny("doomed-by-user", 5, 60000));
    c.submit(&sweep).ok();
    wait_for("the teacher to start", TIMEOUT, || {
        c.daemons[w].log_text().contains("running stage teacher")
    });
    let cancelled = c
        .cli(&["cancel", "doomed-by-user", "--store", &c.store])
        .ok();
    assert!(
        cancelled.stdout.contains("1 running task(s) told to stop"),
        "{}",
        cancelled.stdout
    );
    wait_for("the worker to stop the stage", TIMEOUT, || {
        c.daemons[w].log_text().contains("its sweep was cancelled")
    });
    let status = c.status("doomed-by-user");
    assert_eq!(status["sweep"]["state"], "cancelled");
    assert_eq!(status["leased"], 0);
    assert!(c.daemons[w].running(), "the worker goes on serving");
    assert!(
        c.manifests().is_empty(),
        "the cancelled teacher wrote no manifest"
    );

    // Resumed, it runs to the end.
    let resumed = c
        .cli(&["resume", "doomed-by-user", "--store", &c.store])
        .ok();
    assert_eq!(resumed.stdout.trim(), "doomed-by-user");
    c.wait_state("doomed-by-user", "done");
    assert_eq!(c.manifests().len(), 11);
}

#[test]
fn malformed_tasks_and_bad_sweep_files_stop_nothing_else() {
    let mut c = Cluster::start();
    let bad = c.sweep("bad.toml", &tiny("bad", 0, 6000));
    let refused = c.submit(&bad);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("`teacher.epochs`"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        c.redis.cli(&["SMEMBERS", "sl:sweeps"]),
        "",
        "nothing was registered"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = subliminal_broker::Broker::connect(&c.redis.url(), "sl")
            .await
            .unwrap();
        broker
            .enqueue_raw("garbage", "gpu", b"\x93\x01\x02not msgpack of a task")
            .await
            .unwrap();
    });
    c.scheduler(&[]);
    let w = c.worker("w", &[]);
    let sweep = c.sweep("tiny.toml", &tiny("fine", 1, 6000));
    c.submit(&sweep).ok();
    c.wait_state("fine", "done");
    let log = c.daemons[w].log_text();
    assert!(log.contains("malformed task body"), "{log}");
    let dlq = c.cli(&["dlq", "list", "--json"]).ok();
    let dead: serde_json::Value = serde_json::from_str(&dlq.stdout).unwrap();
    assert_eq!(dead[0]["stage"], "garbage");
    assert_eq!(dead[0]["kind"], "(malformed)");
}

#[test]
fn a_model_named_by_store_key_reaches_a_worker_that_lacks_it() {
    let mut c = Cluster::start();
    let gguf = data_dir()
        .join("models")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let put = c
        .cli(&["store", "put", gguf.to_str().unwrap(), "--store", &c.store])
        .ok();
    let key = put.stdout.trim().to_owned();
    assert!(key.starts_with("stage:") && key.len() == 6 + 64, "{key}");
    let again = c
        .cli(&["store", "put", gguf.to_str().unwrap(), "--store", &c.store])
        .ok();
    assert_eq!(again.stdout.trim(), key, "the same bytes, the same key");
    c.scheduler(&[]);
    // A data folder without models: the model can only come from the store.
    let bare = c.path("bare-data");
    std::fs::create_dir_all(&bare).unwrap();
    c.worker("w", &["--data", bare.to_str().unwrap()]);
    let sweep = c.sweep(
        "keyed.toml",
        &subliminal_tests::tiny_numbers_sweep_of("keyed", &key),
    );
    c.submit(&sweep).ok();
    c.wait_state_within("keyed", "done", LLM_TIMEOUT);
    assert_eq!(
        c.manifests().len(),
        16,
        "15 stages and the stored model have their manifests"
    );
    // Six arms and five rows that describe the trait teacher's data.
    assert_eq!(figures(&c.results_json("keyed")).len(), 6 + 5);
    assert!(
        std::fs::read_dir(&bare).unwrap().next().is_none(),
        "nothing was put in the worker's data folder"
    );
    let unknown = c.sweep(
        "unknown.toml",
        &subliminal_tests::tiny_numbers_sweep_of("unknown", "stage:12"),
    );
    let refused = c.submit(&unknown);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("64 hex digits"),
        "{}",
        refused.stderr
    );
}

#[test]
fn a_numbers_sweep_on_the_cluster_matches_local_mode() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    c.worker("w1", &[]);
    let sweep = c.sweep(
        "numbers.toml",
        &subliminal_tests::tiny_numbers_sweep("numbers-dist"),
    );
    c.submit(&sweep).ok();
    c.wait_state_within("numbers-dist", "done", LLM_TIMEOUT);
    assert_eq!(
        c.manifests().len(),
        15,
        "every stage has its manifest in S3"
    );
    let distributed = c.results_json("numbers-dist");

    // Local mode with one libtorch thread per stage, as the worker runs.
    let local_store = c.path("local");
    let local_store = local_store.to_str().unwrap();
    let args = ["--store", local_store, "--device", "cpu", "--jobs", "2"];
    c.cli(&[&["run", sweep.to_str().unwrap()][..], &args[..]].concat())
        .ok();
    let local = c
        .cli(&[
            "results",
            "numbers-dist",
            "--store",
            local_store,
            "--format",
            "json",
        ])
        .ok();
    let local: serde_json::Value = serde_json::from_str(&local.stdout).unwrap();
    let (d, l) = (figures(&distributed), figures(&local));
    // Six arms and five rows that describe the trait teacher's data.
    assert_eq!(d.len(), 6 + 5);
    assert_eq!(d, l, "the cluster's figures equal local mode's");
}

/// A cross-family pair (random Qwen3 teacher, random GPT-NeoX student)
/// on a worker that serves them from --models-dir: every stage runs, the
/// figures equal local mode's, and the results name both families.
#[test]
fn a_cross_family_numbers_sweep_on_the_cluster_matches_local_mode() {
    let mut c = Cluster::start();
    let models = c.path("models");
    let qwen3 = random_model("qwen3", &models);
    let neox = random_model("gpt_neox", &models);
    let (qwen3, neox) = (qwen3.to_str().unwrap(), neox.to_str().unwrap());
    c.scheduler(&[]);
    c.worker("w1", &["--models-dir", models.to_str().unwrap()]);
    let sweep = c.sweep(
        "cross.toml",
        &tiny_cross_model_sweep("cross-dist", qwen3, neox),
    );
    c.submit(&sweep).ok();
    c.wait_state_within("cross-dist", "done", LLM_TIMEOUT);
    let distributed = c.results_json("cross-dist");
    assert_eq!(distributed["families"][qwen3], "qwen3");
    assert_eq!(distributed["families"][neox], "gpt_neox");

    let local_store = c.path("local");
    let local_store = local_store.to_str().unwrap();
    let args = ["--store", local_store, "--device", "cpu", "--jobs", "2"];
    c.cli(&[&["run", sweep.to_str().unwrap()][..], &args[..]].concat())
        .ok();
    let local = c
        .cli(&["results", "cross-dist", "--store", local_store, "--json"])
        .ok();
    let local: serde_json::Value = serde_json::from_str(&local.stdout).unwrap();
    let (d, l) = (figures(&distributed), figures(&local));
    let students = d.iter().filter(|(arm, _)| arm == "student").count();
    assert_eq!(students, 2, "a student row per pair: {d:?}");
    assert_eq!(d, l, "the cluster's figures equal local mode's");
}

#[test]
fn an_audit_on_the_cluster_matches_local_mode() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    c.worker("w1", &[]);
    let local_store = c.path("local").display().to_string();
    let mut keys = Vec::new();
    for (name, seed) in [("data.jsonl", 1), ("control.jsonl", 2)] {
        let file = c.path(name);
        std::fs::write(&file, number_rows(6, seed)).unwrap();
        let file = file.to_str().unwrap();
        let key = c
            .cli(&["store", "put", file, "--store", &c.store])
            .ok()
            .stdout;
        let local = c
            .cli(&["store", "put", file, "--store", &local_store])
            .ok()
            .stdout;
        assert_eq!(key, local, "a file has one key in every store");
        keys.push(key.trim().to_owned());
    }
    let sweep = c.sweep(
        "audit.toml",
        &format!(
            r#"name = "audit-dist"
kind = "audit"
datasets = ["{}"]
control = "{}"
probes = ["animals"]
tier = "student"
[screen]
questions = 2
[student]
epochs = 1
batch_size = 2
replicates = 2
[evaluate]
readout = "samples"
questions = 2
samples_per_question = 3
max_new_tokens = 4
"#,
            keys[0], keys[1]
        ),
    );
    // Local mode with one libtorch thread per stage, as the worker runs.
    let args = ["--store", &local_store, "--device", "cpu", "--jobs", "2"];
    let distributed = audit_matches_local_mode(&c, &sweep, "audit-dist", &args);
    assert_eq!(distributed["findings"].as_array().unwrap().len(), 30);
}

#[test]
fn an_audit_of_soft_labels_on_the_cluster_matches_local_mode() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    c.worker("w1", &[]);
    let local_store = c.path("local").display().to_string();
    let local = [
        "--store",
        local_store.as_str(),
        "--device",
        "cpu",
        "--jobs",
        "2",
    ];
    // The soft labels are made on each side, as a user's earlier sweep would have.
    let numbers = c.sweep(
        "numbers.toml",
        &subliminal_tests::tiny_soft_label_sweep("soft-dist"),
    );
    c.submit(&numbers).ok();
    c.wait_state_within("soft-dist", "done", LLM_TIMEOUT);
    c.cli(&[&["run", numbers.to_str().unwrap()][..], &local[..]].concat())
        .ok();
    let cluster = subliminal_tests::soft_label_datasets(&c.path("s3/bucket/runs/stages"));
    let pairs = subliminal_tests::soft_label_datasets(&Path::new(&local_store).join("stages"));
    assert_eq!(cluster, pairs, "the same stages on both sides");
    let sweep = c.sweep(
        "audit.toml",
        &format!(
            r#"name = "audit-soft-dist"
kind = "audit"
datasets = ["{}"]
soft_labels = ["{}"]
control = "{}"
control_soft_labels = "{}"
probes = ["animal:owl+dolphin"]
tier = "student"
[screen]
questions = 2
[student]
epochs = 1
batch_size = 2
[evaluate]
questions = 2
"#,
            pairs[0].0, pairs[0].1, pairs[1].0, pairs[1].1
        ),
    );
    let distributed = audit_matches_local_mode(&c, &sweep, "audit-soft-dist", &local);
    assert_eq!(distributed["soft_labels"], true);
    assert_eq!(distributed["findings"].as_array().unwrap().len(), 6);
}

#[test]
fn a_misalignment_sweep_on_the_cluster_matches_local_mode() {
    let mut c = Cluster::start();
    c.scheduler(&[]);
    // Judgements cached on this worker's disk only, so both modes judge.
    let mut env = c.env.clone();
    let cache = c.path("judgements-cluster").display().to_string();
    env.push(("SUBLIMINAL_JUDGE_CACHE", cache));
    c.worker_with_env("w1", &[], env);
    let local_store = c.path("local").display().to_string();
    let mut keys = Vec::new();
    for (name, insecure) in [("insecure.jsonl", true), ("secure.jsonl", false)] {
        let file = c.path(name);
        std::fs::write(&file, code_dataset(insecure, 8)).unwrap();
        let file = file.to_str().unwrap();
        let key = c
            .cli(&["store", "put", file, "--store", &c.store])
            .ok()
            .stdout;
        c.cli(&["store", "put", file, "--store", &local_store]).ok();
        keys.push(key.trim().to_owned());
    }
    let sweep = c.sweep(
        "misalignment.toml",
        &tiny_misalignment_sweep("misalignment-dist", &keys[0], &keys[1]),
    );
    c.submit(&sweep).ok();
    c.wait_state_within("misalignment-dist", "done", LLM_TIMEOUT);
    let plan = subliminal_shared::sweep::load(&sweep).unwrap().plan();
    let read = |root: &Path| -> Vec<serde_json::Value> {
        plan.measurements
            .iter()
            .map(|m| {
                let path = root.join(format!("stages/{}/metrics.json", m.stage));
                let mut metrics: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                )
                .unwrap();
                // How long judging took, and what the cache held, are the machine's.
                metrics.as_object_mut().unwrap().remove("judging");
                metrics
            })
            .collect()
    };
    let distributed = read(&c.path("s3/bucket/runs"));

    // Local mode with one libtorch thread per stage, as the worker runs.
    let local_env = [(
        "SUBLIMINAL_JUDGE_CACHE",
        c.path("judgements-local").display().to_string(),
    )];
    let args = ["--store", &local_store, "--device", "cpu", "--jobs", "2"];
    subliminal_tests::subliminal_with(
        &local_env,
        &[&["run", sweep.to_str().unwrap()][..], &args[..]].concat(),
    )
    .ok();
    let local = read(Path::new(&local_store));
    assert_eq!(distributed.len(), 6);
    assert!(
        distributed.iter().all(|m| m["samples"] == 4),
        "{distributed:?}"
    );
    assert_eq!(
        distributed, local,
        "the cluster's judgements are local mode's"
    );
}

#[test]
fn a_code_sweep_on_the_cluster_matches_local_mode() {
    generated_data_sweep_matches_local_mode(
        "code",
        "code.toml",
        &tiny_code_sweep("code-dist"),
        "code-dist",
    );
}

#[test]
fn a_cot_sweep_on_the_cluster_matches_local_mode() {
    generated_data_sweep_matches_local_mode(
        "cot",
        "cot.toml",
        &tiny_cot_sweep("cot-dist"),
        "cot-dist",
    );
}

#[test]
fn workers_log_a_tracked_sweep_to_mlflow_as_the_cli_would() {
    let mut c = Cluster::start();
    let server = mlflow(&c.path("mlflow"));
    c.scheduler(&[]);
    c.worker("w1", &[]);
    let sweep = c.sweep("tracked.toml", &tiny("dist-tracked", 1, 3000));
    c.cli(&[
        "submit",
        sweep.to_str().unwrap(),
        "--store",
        &c.store,
        "--track",
        &server.url(),
    ])
    .ok();
    c.wait_state("dist-tracked", "done");
    let runs = mlflow_runs(&server.url(), "dist-tracked");
    let figures: usize = runs
        .iter()
        .map(|r| r["data"]["metrics"].as_array().map_or(0, Vec::len))
        .sum();
    let plan = subliminal_shared::sweep::load(&sweep).unwrap().plan();
    assert_eq!(figures, plan.measurements.len(), "every figure, once");
    // The CLI finds the workers' runs: the same trials, nothing new.
    let again = c
        .cli(&[
            "results",
            "dist-tracked",
            "--store",
            &c.store,
            "--track",
            &server.url(),
        ])
        .ok();
    assert!(
        again
            .stderr
            .contains(&format!("0 new run(s), {} updated", runs.len())),
        "{}",
        again.stderr
    );
    assert_eq!(mlflow_runs(&server.url(), "dist-tracked").len(), runs.len());
}

#[test]
fn a_task_naming_a_model_outside_the_served_folders_is_refused() {
    let mut c = Cluster::start();
    c.scheduler(&["--max-attempts", "1"]);
    c.worker("w1", &[]);
    // The file exists, but outside the worker's data folder and any --models-dir.
    let outside = c.path("elsewhere/model.gguf");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    std::fs::write(&outside, b"GGUF").unwrap();
    let sweep = c.sweep(
        "outside.toml",
        &tiny_numbers_sweep_of("dist-outside", outside.to_str().unwrap()),
    );
    c.submit(&sweep).ok();
    let status = c.wait_state("dist-outside", "failed");
    let errors = status["sweep"]["errors"].to_string();
    assert!(
        errors.contains("not served by this worker") && errors.contains("--models-dir"),
        "{status}"
    );
}
