//! The long chaos run: the cluster of `subliminal_tests::chaos` under a
//! seeded fault schedule, for as many stages and faults as asked; prints the
//! counts and exits 1 if an invariant failed.
//!
//!   cargo run --release -p subliminal-tests --example chaos -- \
//!       [--seed N] [--chains N] [--stages-per-chain N] [--stage-ms N] \
//!       [--mean-gap-ms N] [--max-faults N] [--timeout-s N] [--keep DIR] \
//!       [--train-steps N] [--checkpoint-seconds S]
//!
//! `--train-steps N` (N > 0) makes every work stage a LoRA fine-tune of a
//! tiny random model, N steps, checkpointed every `--checkpoint-seconds`.

use std::process::ExitCode;
use std::time::Duration;

use subliminal_tests::chaos::{run, Config};

fn arg<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).ok_or_else(|| {
            format!("{name} needs a value of the right type (see the example's doc)")
        }),
    }
}

fn config() -> Result<Config, String> {
    Ok(Config {
        seed: arg("--seed", 1)?,
        chains: arg("--chains", 400)?,
        stages_per_chain: arg("--stages-per-chain", 4)?,
        stage_ms: arg("--stage-ms", 150)?,
        train_steps: arg("--train-steps", 0u64).map(|s| Some(s).filter(|&s| s > 0))?,
        checkpoint_seconds: arg("--checkpoint-seconds", 0.5)?,
        mean_gap: Duration::from_millis(arg("--mean-gap-ms", 2000)?),
        max_faults: arg("--max-faults", 1000)?,
        timeout: Duration::from_secs(arg("--timeout-s", 3600)?),
    })
}

fn main() -> ExitCode {
    let config = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let keep: Option<String> = arg("--keep", String::new()).ok().filter(|k| !k.is_empty());
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = keep
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().to_path_buf());
    std::fs::create_dir_all(&path).expect("the run's folder");
    println!(
        "chaos run: {config:?}\nlogs and store in {}",
        path.display()
    );
    let report = run(&config, &path);
    println!("{}", report.summary());
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
