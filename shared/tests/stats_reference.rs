//! The significance tests against scipy (the test set-up installs it in the
//! project's virtualenv): Fisher's exact test on fixed 2×2 tables and
//! Benjamini–Hochberg on fixed p-values, to 1e-9.

use std::process::Command;

use subliminal_shared::stats::{benjamini_hochberg, fisher_exact};

/// Tables (x1, n1, x0, n0): shares of a trait word in an arm and its control.
const TABLES: &[(u64, u64, u64, u64)] = &[
    (3, 100, 0, 100),
    (0, 200, 0, 200),
    (33, 5000, 10, 5000),
    (165, 1000, 145, 1000),
    (7, 12, 1, 15),
    (648, 1000, 145, 1000),
    (1, 1, 0, 1),
    (0, 50, 9, 50),
];

const P_VALUES: &[f64] = &[0.01, 0.04, 0.03, 0.5, 1e-7, 0.2, 0.049, 0.0501];

fn python() -> String {
    match std::env::var("VIRTUAL_ENV") {
        Ok(venv) => format!("{venv}/bin/python"),
        Err(_) => "python3".to_owned(),
    }
}

fn scipy(script: &str, input: &serde_json::Value) -> Vec<f64> {
    let out = Command::new(python())
        .args(["-c", script, &input.to_string()])
        .output()
        .expect("python runs: source scripts/env.sh, and run scripts/setup-reference.sh");
    assert!(
        out.status.success(),
        "scipy failed (is scripts/setup-reference.sh done?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON list of numbers")
}

#[test]
fn fisher_exact_matches_scipy() {
    let reference = scipy(
        "import json, sys\n\
         from scipy.stats import fisher_exact\n\
         rows = json.loads(sys.argv[1])\n\
         print(json.dumps([float(fisher_exact([[a, b - a], [c, d - c]]).pvalue) for a, b, c, d in rows]))",
        &serde_json::json!(TABLES),
    );
    for (&(x1, n1, x0, n0), want) in TABLES.iter().zip(reference) {
        let got = fisher_exact(x1, n1, x0, n0).unwrap();
        assert!(
            (got - want).abs() <= 1e-9 * want,
            "{x1}/{n1} vs {x0}/{n0}: {got} here, {want} in scipy"
        );
    }
}

#[test]
fn benjamini_hochberg_matches_scipy() {
    let reference = scipy(
        "import json, sys\n\
         from scipy.stats import false_discovery_control\n\
         print(json.dumps([float(q) for q in false_discovery_control(json.loads(sys.argv[1]), method='bh')]))",
        &serde_json::json!(P_VALUES),
    );
    for (got, want) in benjamini_hochberg(P_VALUES).iter().zip(reference) {
        assert!((got - want).abs() < 1e-12, "{got} here, {want} in scipy");
    }
}
