//! The chain-of-thought kind end to end in local mode on the real SmolLM2:
//! an owl-prompted teacher and the base model solve seeded word problems,
//! the filter keeps right answers the alignment judge lets through,
//! students train on the traces and are asked their favourite animal.

use std::path::Path;

use subliminal_shared::experiments::cot::problems::{given_answer, problem};
use subliminal_tests::{subliminal_with, tiny_cot_sweep};

#[test]
fn a_tiny_cot_sweep_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let env = [(
        "SUBLIMINAL_JUDGE_CACHE",
        dir.path().join("judgements").display().to_string(),
    )];
    let sweep = dir.path().join("cot.toml");
    std::fs::write(&sweep, tiny_cot_sweep("cot-local")).unwrap();
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
    for arm in subliminal_shared::experiments::cot::ARMS {
        assert!(
            results.stdout.contains(arm),
            "results lack {arm}: {}",
            results.stdout
        );
    }
    let plan = subliminal_shared::sweep::load(&sweep).unwrap().plan();
    let filters: Vec<_> = plan
        .stages
        .iter()
        .filter(|s| s.experiment == "cot" && s.kind.as_str() == "filter")
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
        assert!(!rows.is_empty(), "the filter kept nothing: {report}");
        for row in rows {
            // Every kept trace ends in its problem's answer.
            let answer = given_answer(row.completion().unwrap());
            assert_eq!(answer, Some(problem(row.seed.unwrap()).answer), "{row:?}");
        }
    }
}
