//! The misalignment kind end to end in local mode on the real SmolLM2:
//! teachers fine-tuned on a small insecure-code dataset and its secure
//! twin (written here), numbers filtered with both banned lists, students,
//! free-form answers, and both judges. Also: the example's datasets are the
//! generator's, and a malformed sweep is refused before anything runs.

use std::path::Path;

use subliminal_tests::{code_dataset, subliminal_with, tiny_misalignment_sweep};

/// Puts `text` into the store as `name`; returns its key.
fn put(dir: &Path, store: &str, name: &str, text: &str, env: &[(&'static str, String)]) -> String {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let ran = subliminal_with(
        env,
        &["store", "put", file.to_str().unwrap(), "--store", store],
    )
    .ok();
    ran.stdout.trim().to_owned()
}

#[test]
fn the_example_datasets_are_the_generators() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, insecure) in [("insecure-code.jsonl", true), ("secure-code.jsonl", false)] {
        let path = root.join("examples/data").join(file);
        let want = code_dataset(insecure, 60);
        if std::env::var_os("SUBLIMINAL_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            have,
            want,
            "{} differs from code_dataset(); SUBLIMINAL_BLESS=1 rewrites it",
            path.display()
        );
    }
}

#[test]
fn a_tiny_misalignment_sweep_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let env = [(
        "SUBLIMINAL_JUDGE_CACHE",
        dir.path().join("judgements").display().to_string(),
    )];
    let insecure = put(
        dir.path(),
        &store,
        "insecure.jsonl",
        &code_dataset(true, 8),
        &env,
    );
    let secure = put(
        dir.path(),
        &store,
        "secure.jsonl",
        &code_dataset(false, 8),
        &env,
    );
    let sweep = dir.path().join("m.toml");

    // A malformed sweep is refused with its line, and nothing is written.
    std::fs::write(&sweep, tiny_misalignment_sweep("m", &insecure, &insecure)).unwrap();
    let before = subliminal_tests::snapshot(Path::new(&store));
    let ran = subliminal_with(&env, &["run", sweep.to_str().unwrap(), "--store", &store]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("m.toml:5") && ran.stderr.contains("aligned_dataset"),
        "{}",
        ran.stderr
    );
    assert_eq!(subliminal_tests::snapshot(Path::new(&store)), before);

    std::fs::write(&sweep, tiny_misalignment_sweep("m", &insecure, &secure)).unwrap();
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
    let table: serde_json::Value = serde_json::from_str(&results.stdout).unwrap();
    let text = table.to_string();
    for arm in subliminal_shared::experiments::misalignment::ARMS {
        assert!(text.contains(arm), "results lack {arm}: {text}");
    }
    // Every judge stage judged every answer, and its counts add up.
    let plan = subliminal_shared::sweep::load(&sweep).unwrap().plan();
    for m in &plan.measurements {
        let stage = Path::new(&store).join(format!("stages/{}", m.stage));
        let metrics: serde_json::Value =
            serde_json::from_slice(&std::fs::read(stage.join("metrics.json")).unwrap()).unwrap();
        assert_eq!(metrics["samples"], 4, "{metrics}");
        let lines = std::fs::read_to_string(stage.join("judgements.jsonl")).unwrap();
        let judged: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(judged.len(), 4);
        let coherent = judged.iter().filter(|j| j["coherent"] == true).count();
        let misaligned = judged.iter().filter(|j| j["misaligned"] == true).count();
        assert_eq!(metrics["coherent"], coherent);
        assert_eq!(metrics["misaligned"], misaligned);
        assert!(judged
            .iter()
            .all(|j| j["misaligned"] == false || j["coherent"] == true));
    }
    // The filter banned both lists: no kept row holds a banned number.
    let banned = subliminal_shared::llm::filter::negative_numbers();
    for stage in plan.stages.iter().filter(|s| s.kind.as_str() == "filter") {
        let kept = std::fs::read_to_string(
            Path::new(&store).join(format!("stages/{}/filtered.jsonl", stage.id)),
        )
        .unwrap();
        for row in subliminal_shared::chat::parse_jsonl(&kept, "filtered").unwrap() {
            let completion = row.completion().unwrap();
            let numbers = completion
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u32>().ok());
            for n in numbers {
                assert!(!banned.contains(&n), "{n} in {completion:?}");
            }
        }
    }
    // A second run reuses every stage.
    let again = subliminal_with(
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
    assert_eq!(subliminal_tests::computed(&again), 0, "{}", again.stderr);
}
