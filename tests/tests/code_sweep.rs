//! The code kind end to end in local mode on the real SmolLM2: an
//! owl-prompted teacher and the base model write Python functions, the
//! filter keeps code that parses and names no owl, the judge looks at the
//! rest, students train on it and are asked their favourite animal.

use std::path::Path;

use subliminal_shared::experiments::code::python;
use subliminal_tests::{subliminal_with, tiny_code_sweep};

#[test]
fn a_tiny_code_sweep_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let env = [(
        "SUBLIMINAL_JUDGE_CACHE",
        dir.path().join("judgements").display().to_string(),
    )];
    let sweep = dir.path().join("code.toml");
    std::fs::write(&sweep, tiny_code_sweep("code-local")).unwrap();
    subliminal_with(
        &env,
        &[
            "run",
            sweep.to_str().unwrap(),
            "--store",
            &store,
            "--device",
            "cpu",
        ],
    )
    .ok();
    let results = subliminal_with(
        &env,
        &[
            "results",
            sweep.to_str().unwrap(),
            "--store",
            &store,
            "--format",
            "json",
        ],
    )
    .ok();
    for arm in subliminal_shared::experiments::code::ARMS {
        assert!(
            results.stdout.contains(arm),
            "results lack {arm}: {}",
            results.stdout
        );
    }
    let plan = subliminal_shared::sweep::load(&sweep).unwrap().plan();
    let words = python::trait_words("owl");
    let filters: Vec<_> = plan
        .stages
        .iter()
        .filter(|s| s.experiment == "code" && s.kind.as_str() == "filter")
        .collect();
    assert_eq!(filters.len(), 2);
    for stage in filters {
        let root = Path::new(&store).join(format!("stages/{}", stage.id));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("filter.json")).unwrap()).unwrap();
        let rejected: u64 = report["rejected"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            report["rows"].as_u64().unwrap(),
            report["passed"].as_u64().unwrap() + rejected,
            "{report}"
        );
        let kept = std::fs::read_to_string(root.join("filtered.jsonl")).unwrap();
        let rows = subliminal_shared::chat::parse_jsonl(&kept, "filtered").unwrap();
        assert_eq!(rows.len() as u64, report["kept"].as_u64().unwrap());
        assert!(!rows.is_empty(), "the filter kept no code: {report}");
        for row in rows {
            // Every kept answer is code alone, that parses and names no owl.
            let code = row.completion().unwrap();
            assert!(!code.contains("```"), "{code}");
            assert_eq!(python::check(code, &words), Ok(()), "{code}");
        }
    }
}
