//! An MNIST student stopped partway resumes from its progress checkpoint and
//! ends with the same model bytes as a student never stopped: a small sweep
//! on the real MNIST files runs whole in one store; in another, its student
//! stage is stopped mid-epoch (saving at every step), run again (resuming),
//! and compared byte for byte. A damaged checkpoint is ignored and the stage
//! starts over, to the same bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use subliminal_shared::experiments::mnist::Stage;
use subliminal_shared::manifest::{inspect, StageState};
use subliminal_shared::metrics::metrics;
use subliminal_shared::plan::Plan;
use subliminal_shared::spec::Source;
use subliminal_shared::stage::StageSpec;
use subliminal_shared::store::{keys, Store};
use subliminal_worker::execute::execute;
use subliminal_worker::local::LocalRunner;
use subliminal_worker::stages::{ProgressFn, StageEnv};

mod common;

use common::data_dir;

const SWEEP: &str = r#"
name = "student-resume"
kind = "mnist"

[grid]
seeds = [0]
init_pairs = ["same"]
aux_logits = 3
targets = ["aux"]
hidden = 64

[teacher]
epochs = 1
batch_size = 128
train_samples = 1024

[student]
epochs = 2
batch_size = 50
noise_samples = 1000
"#;

fn plan() -> Plan {
    subliminal_shared::sweep::parse(&Source::new("resume.toml", SWEEP))
        .expect("the test sweep parses")
        .plan()
}

fn env() -> StageEnv {
    StageEnv::new(tch::Device::Cpu, data_dir())
}

fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

async fn model_bytes(store: &Store, student: &StageSpec) -> Vec<u8> {
    match inspect(store, student.id).await.unwrap() {
        StageState::Done(stage) => stage.artifact("model.safetensors").unwrap().to_vec(),
        other => panic!("the student is not done: {other:?}"),
    }
}

/// Runs `student` with a checkpoint at every step and stops it after
/// `calls` progress reports (the first epoch has 20 steps, reported every
/// 8th); the stage must fail as stopped and leave a checkpoint.
async fn stop_partway(store: &Store, student: &StageSpec, calls: usize) {
    let mut env = env();
    env.checkpoint_every = Duration::ZERO;
    let env = Arc::new(env);
    let stop = env.stop.clone();
    let seen = Arc::new(AtomicUsize::new(0));
    let progress: ProgressFn = Arc::new(move |_| {
        if seen.fetch_add(1, Ordering::Relaxed) + 1 >= calls {
            stop.store(true, Ordering::Relaxed);
        }
    });
    let error = execute(store, student, &env, progress).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("stopped before epoch 1 ended"),
        "{error:#}"
    );
    assert!(store
        .get_opt(&keys::progress(student.id, "train"))
        .await
        .unwrap()
        .is_some());
}

/// Runs `student` to the end; how many times it resumed.
async fn run_again(store: &Store, student: &StageSpec) -> u64 {
    let resumes = metrics().stage_resumes.get();
    execute(store, student, &Arc::new(env()), no_progress())
        .await
        .unwrap();
    metrics().stage_resumes.get() - resumes
}

#[tokio::test(flavor = "multi_thread")]
async fn a_student_stopped_mid_epoch_resumes_to_the_same_model_bytes() {
    tch::set_num_threads(1);
    let plan = plan();
    let student = plan
        .stages
        .iter()
        .find(|s| Stage::of(&s.kind) == Some(Stage::Student))
        .expect("the sweep has a student")
        .clone();

    let whole_dir = tempfile::tempdir().unwrap();
    let whole = Store::open(whole_dir.path().to_str().unwrap()).unwrap();
    let runner = LocalRunner {
        store: whole.clone(),
        env: Arc::new(env()),
        jobs: 1,
        ensemble: 1,
        progress: false,
    };
    let report = runner.run(&plan).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let expected = model_bytes(&whole, &student).await;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    // The plan lists every stage after its inputs.
    for spec in plan.stages.iter().take_while(|s| s.id != student.id) {
        execute(&store, spec, &Arc::new(env()), no_progress())
            .await
            .unwrap();
    }

    stop_partway(&store, &student, 2).await;
    assert_eq!(
        run_again(&store, &student).await,
        1,
        "the stage did not resume"
    );
    assert!(
        model_bytes(&store, &student).await == expected,
        "the resumed student's model differs from the uninterrupted one's"
    );
    let checkpoint = keys::progress(student.id, "train");
    assert!(
        store.get_opt(&checkpoint).await.unwrap().is_none(),
        "a finished stage leaves its checkpoint behind"
    );

    // A truncated checkpoint is ignored: the stage starts over, to the same bytes.
    store.delete(&keys::manifest(student.id)).await.unwrap();
    stop_partway(&store, &student, 2).await;
    let saved = store.get_opt(&checkpoint).await.unwrap().unwrap();
    store
        .put(&checkpoint, saved.slice(..saved.len() / 2))
        .await
        .unwrap();
    assert_eq!(
        run_again(&store, &student).await,
        0,
        "a damaged checkpoint was resumed"
    );
    assert!(model_bytes(&store, &student).await == expected);
}
