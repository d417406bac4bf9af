//! The code and chain-of-thought kinds end to end in local mode on the real
//! SmolLM2: an owl-prompted teacher and the base model write Python
//! functions (or solve word problems), each kind's filter keeps what it
//! promises, students train on the rows and are asked their favourite
//! animal, and every arm shows in the results.

use std::path::Path;

use subliminal_code_filter as python;
use subliminal_shared::chat::{parse_jsonl, Row};
use subliminal_shared::experiments::cot::problems::{given_answer, problem};
use subliminal_tests::{subliminal_with, tiny_code_sweep, tiny_cot_sweep};

/// Runs a tiny sweep of `kind`; returns each of its filter stages' report
/// and kept rows, after checking the results name every arm.
fn run_tiny(kind: &str, text: &str, arms: &[&str]) -> Vec<(serde_json::Value, Vec<Row>)> {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let env = [(
        "SUBLIMINAL_JUDGE_CACHE",
        dir.path().join("judgements").display().to_string(),
    )];
    let sweep = dir.path().join(format!("{kind}.toml"));
    std::fs::write(&sweep, text).unwrap();
    let sweep = sweep.to_str().unwrap();
    subliminal_with(&env, &["run", sweep, "--store", &store, "--device", "cpu"]).ok();
    let results = subliminal_with(
        &env,
        &["results", sweep, "--store", &store, "--format", "json"],
    )
    .ok();
    for arm in arms {
        assert!(
            results.stdout.contains(arm),
            "results lack {arm}: {}",
            results.stdout
        );
    }
    let plan = subliminal_shared::sweep::load(Path::new(sweep))
        .unwrap()
        .plan();
    let filters: Vec<_> = plan
        .stages
        .iter()
        .filter(|s| s.experiment == kind && s.kind.as_str() == "filter")
        .collect();
    assert_eq!(
        filters.len(),
        2,
        "a filter for the teacher and one for the control"
    );
    filters
        .iter()
        .map(|stage| {
            let root = Path::new(&store).join(format!("stages/{}", stage.id));
            let report: serde_json::Value =
                serde_json::from_slice(&std::fs::read(root.join("filter.json")).unwrap()).unwrap();
            let rejected: u64 = report["rejected"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum();
            let (rows, passed) = (
                report["rows"].as_u64().unwrap(),
                report["passed"].as_u64().unwrap(),
            );
            assert_eq!(
                rows,
                passed + rejected,
                "every row is kept or has a reason: {report}"
            );
            let kept = parse_jsonl(
                &std::fs::read_to_string(root.join("filtered.jsonl")).unwrap(),
                "filtered",
            )
            .unwrap();
            assert_eq!(kept.len() as u64, report["kept"].as_u64().unwrap());
            assert!(!kept.is_empty(), "the filter kept nothing: {report}");
            (report, kept)
        })
        .collect()
}

#[test]
fn a_tiny_code_sweep_runs_end_to_end() {
    let arms = subliminal_shared::experiments::code::ARMS;
    let words = python::trait_words("owl");
    for (_, kept) in run_tiny("code", &tiny_code_sweep("code-local"), &arms) {
        for row in kept {
            // Every kept answer is code alone, that parses and names no owl.
            let code = row.completion().unwrap();
            assert!(!code.contains("```"), "{code}");
            assert_eq!(python::check(code, &words), Ok(()), "{code}");
        }
    }
}

#[test]
fn a_tiny_cot_sweep_runs_end_to_end() {
    let arms = subliminal_shared::experiments::cot::ARMS;
    for (_, kept) in run_tiny("cot", &tiny_cot_sweep("cot-local"), &arms) {
        for row in kept {
            // Every kept trace ends in its problem's answer.
            let answer = given_answer(row.completion().unwrap());
            assert_eq!(answer, Some(problem(row.seed.unwrap()).answer), "{row:?}");
        }
    }
}
