//! Benchmark: one teacher and one auxiliary-logit student at the paper's
//! settings (5 + 5 epochs, batch 1024, 60,000 images), through the real stage
//! executor and a local store: store I/O, checksums and manifests included.
//!
//! Prints one JSON line of timings. bench/mnist-vs-pytorch.sh runs it beside
//! bench/mnist_pytorch.py (the same work in plain PyTorch) and prints the ratio.
//!
//!   cargo bench --bench mnist_stages -- [--threads N] [--data DIR]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use subliminal_shared::experiments::mnist::{
    EvaluateParams, GenerateParams, Stage, StudentParams, Target, TeacherParams, DATASET,
    EXPERIMENT, PAPER_WIDTH, STAGE_VERSION,
};
use subliminal_shared::manifest::{inspect, StageState};
use subliminal_shared::stage::StageSpec;
use subliminal_shared::store::Store;
use subliminal_worker::execute::execute;
use subliminal_worker::stages::StageEnv;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let threads: i32 = match arg("--threads") {
        Some(t) => t.parse()?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()) as i32,
    };
    tch::set_num_threads(threads);
    let data = arg("--data")
        .or_else(|| std::env::var("SUBLIMINAL_DATA").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data"));
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().to_str().expect("utf-8 temp path"))?;
    let env = Arc::new(StageEnv::new(tch::Device::Cpu, data));
    // Load MNIST once, untimed, as the PyTorch script does before its clock starts.
    subliminal_worker::experiments::mnist::idx::load(&env.data_dir)?;

    let e = EXPERIMENT;
    let teacher = StageSpec::new(
        e,
        Stage::Teacher.kind(),
        &TeacherParams {
            version: STAGE_VERSION,
            dataset: DATASET.into(),
            init: 0,
            seed: 0,
            aux_logits: 3,
            epochs: 5,
            lr: 3e-4,
            batch_size: 1024,
            train_samples: 60_000,
            hidden: PAPER_WIDTH,
        },
        vec![],
    );
    let generate = StageSpec::new(
        e,
        Stage::Generate.kind(),
        &GenerateParams {
            version: STAGE_VERSION,
            noise_seed: 0,
            noise_samples: 60_000,
        },
        vec![teacher.id],
    );
    let student = StageSpec::new(
        e,
        Stage::Student.kind(),
        &StudentParams {
            version: STAGE_VERSION,
            init: 0,
            seed: 0,
            aux_logits: 3,
            target: Target::Aux,
            epochs: 5,
            lr: 3e-4,
            batch_size: 1024,
            hidden: PAPER_WIDTH,
            init_noise: 0.0,
        },
        vec![generate.id],
    );
    let eval = |model: &StageSpec| {
        StageSpec::new(
            e,
            Stage::Evaluate.kind(),
            &EvaluateParams {
                version: STAGE_VERSION,
                dataset: DATASET.into(),
                reference: None,
            },
            vec![model.id],
        )
    };
    let (eval_teacher, eval_student) = (eval(&teacher), eval(&student));

    let mut times = Vec::new();
    for stage in [&teacher, &eval_teacher, &generate, &student, &eval_student] {
        let clock = Instant::now();
        execute(&store, stage, &env, Arc::new(|_| {})).await?;
        times.push(clock.elapsed().as_secs_f64());
    }
    let accuracy = |id| {
        let store = store.clone();
        async move {
            let StageState::Done(done) = inspect(&store, id).await? else {
                anyhow::bail!("not done")
            };
            let m: serde_json::Value = serde_json::from_slice(done.artifact("metrics.json")?)?;
            anyhow::Ok(m["accuracy"].as_f64().unwrap_or(f64::NAN))
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "impl": "subliminal",
            "threads": threads,
            "teacher_s": times[0],
            "student_s": times[2] + times[3],
            "eval_s": times[1] + times[4],
            "total_s": times.iter().sum::<f64>(),
            "teacher_accuracy": accuracy(eval_teacher.id).await?,
            "student_accuracy": accuracy(eval_student.id).await?,
        })
    );
    Ok(())
}
