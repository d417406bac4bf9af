//! The chaos test: a noop sweep of 300 short stages on two schedulers,
//! three workers, Redis and an S3 server, under a seeded schedule of faults
//! (workers and the leader SIGKILLed, Redis restarted empty, the S3 server
//! restarted, workers drained). See `subliminal_tests::chaos` for the
//! invariants; `bench/chaos.sh` runs the long version.

use std::time::Duration;

use subliminal_tests::chaos::{run, Config, Fault};

#[test]
fn a_sweep_under_seeded_faults_finishes_once_with_local_mode_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        seed: 2026,
        chains: 60,
        stages_per_chain: 4,
        stage_ms: 150,
        train_steps: None,
        checkpoint_seconds: 600.0,
        mean_gap: Duration::from_millis(1000),
        timeout: Duration::from_secs(600),
        max_faults: 20,
    };
    let report = run(&config, dir.path());
    eprintln!("{}", report.summary());
    assert_eq!(report.stages, 300);
    for fault in [
        Fault::KillWorker,
        Fault::DrainWorker,
        Fault::KillLeader,
        Fault::RestartRedisEmpty,
        Fault::RestartS3,
    ] {
        assert!(
            report.faults.get(&fault).is_some_and(|n| *n > 0),
            "{} was never injected: the sweep finished too soon for the schedule\n{}",
            fault.name(),
            report.summary()
        );
    }
    assert!(report.violations.is_empty(), "{}", report.summary());
}
