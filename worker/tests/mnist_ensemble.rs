//! A model trained in a batched group equals the same model trained alone:
//! one small MNIST sweep (teachers of three seeds; students same- and
//! cross-init, aux and all targets, with and without init noise) runs once
//! stage by stage and once in groups, on the real MNIST files, and every
//! stage's artifacts are compared.

use std::collections::HashMap;
use std::sync::Arc;

use subliminal_shared::experiments::mnist::Stage;
use subliminal_shared::manifest::{inspect, StageState, VerifiedStage};
use subliminal_shared::plan::Plan;
use subliminal_shared::spec::Source;
use subliminal_shared::store::Store;
use subliminal_worker::local::LocalRunner;
use subliminal_worker::safetensors_io::parse;
use subliminal_worker::stages::StageEnv;

mod common;

use common::data_dir;

const SWEEP: &str = r#"
name = "ensemble-equality"
kind = "mnist"

[grid]
seeds = [0, 1, 2]
init_pairs = ["same", "cross"]
aux_logits = 3
targets = ["aux", "all"]
hidden = 64
student_init_noise = [0.0, 0.5]

[teacher]
epochs = 2
batch_size = 128
train_samples = 1024

[student]
epochs = 2
batch_size = 100
noise_samples = 1050
"#;

fn plan() -> Plan {
    subliminal_shared::sweep::parse(&Source::new("ensemble.toml", SWEEP))
        .expect("the test sweep parses")
        .plan()
}

async fn run(plan: &Plan, ensemble: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    let runner = LocalRunner {
        store: store.clone(),
        env: Arc::new(StageEnv::new(tch::Device::Cpu, data_dir())),
        jobs: 1,
        ensemble,
        progress: false,
    };
    let report = runner.run(plan).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.computed.len(), plan.stages.len());
    (dir, store)
}

async fn done(store: &Store, id: subliminal_shared::stage::StageId) -> VerifiedStage {
    match inspect(store, id).await.unwrap() {
        StageState::Done(stage) => *stage,
        other => panic!("stage {} is not done: {other:?}", id.short()),
    }
}

/// The largest absolute difference between two safetensors files' tensors.
fn max_difference(a: &[u8], b: &[u8]) -> f64 {
    let (a, b) = (parse(a, "a").unwrap(), parse(b, "b").unwrap());
    let sorted = |mut names: Vec<String>| {
        names.sort();
        names
    };
    assert_eq!(sorted(a.names()), sorted(b.names()));
    let mut worst = 0.0f64;
    for name in a.names() {
        let x = a.tensor(&name, tch::Device::Cpu).unwrap();
        let y = b.tensor(&name, tch::Device::Cpu).unwrap();
        assert_eq!(x.size(), y.size(), "{name}");
        worst = worst.max((x - y).abs().max().double_value(&[]));
    }
    worst
}

/// Every number in two metrics.json files, side by side.
fn numbers(v: &serde_json::Value, out: &mut Vec<f64>) {
    match v {
        serde_json::Value::Number(n) => out.push(n.as_f64().unwrap()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| numbers(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| numbers(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_trained_in_a_group_equals_the_model_trained_alone() {
    tch::set_num_threads(1);
    let plan = plan();
    let (_a, alone) = run(&plan, 1).await;
    let (_b, grouped) = run(&plan, 8).await;
    let mut largest_group = HashMap::new();
    let mut compared = 0;
    let mut worst = 0.0f64;
    for stage in &plan.stages {
        let (x, y) = (done(&alone, stage.id).await, done(&grouped, stage.id).await);
        assert_eq!(x.manifest.group, None);
        let size = y.manifest.group.unwrap_or(1);
        let largest = largest_group.entry(stage.kind.to_string()).or_insert(1);
        *largest = (*largest).max(size);
        for entry in &x.manifest.artifacts {
            let (a, b) = (
                x.artifact(&entry.name).unwrap(),
                y.artifact(&entry.name).unwrap(),
            );
            if entry.name.ends_with(".safetensors") {
                let d = max_difference(a, b);
                worst = worst.max(d);
                assert!(
                    d <= 1e-5,
                    "{} {} {}: differs by {d}",
                    stage.kind,
                    stage.id.short(),
                    entry.name
                );
            } else {
                let (mut u, mut v) = (Vec::new(), Vec::new());
                numbers(&serde_json::from_slice(a).unwrap(), &mut u);
                numbers(&serde_json::from_slice(b).unwrap(), &mut v);
                assert_eq!(u.len(), v.len());
                for (p, q) in u.iter().zip(&v) {
                    let tolerance = 1e-5 * p.abs().max(1.0);
                    assert!(
                        (p - q).abs() <= tolerance,
                        "{} {}: {p} vs {q}",
                        stage.kind,
                        entry.name
                    );
                }
            }
            compared += 1;
        }
    }
    eprintln!(
        "compared {compared} artifacts; largest tensor difference {worst:e}; largest groups {largest_group:?}"
    );
    // Three teachers, three datasets and twenty-four students (2 pairs × 2 targets × 2 ε per seed).
    for (kind, size) in [
        (Stage::Teacher, 3),
        (Stage::Generate, 3),
        (Stage::Student, 8),
    ] {
        assert_eq!(largest_group[kind.kind().as_str()], size, "{kind:?}");
    }
}
