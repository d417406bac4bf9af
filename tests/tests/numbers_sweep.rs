//! The numbers experiment end to end in local mode, with the real SmolLM2
//! GGUF and real libtorch: every stage runs, the datasets are JSONL in the
//! chat fine-tuning format, the filter's report adds up, the results table has
//! every arm with its shift against control, a second run reuses everything,
//! and `subliminal filter numbers` reproduces the stage's verdicts.

use std::path::Path;

use subliminal_tests::{
    computed, data_dir, random_model, reused, subliminal, tiny_cross_model_sweep,
    tiny_numbers_sweep,
};

fn stage_files(store: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(store.join("stages"))
        .expect("stages folder")
        .flatten()
        .map(|e| e.path().join(name))
        .filter(|p| p.exists())
        .collect();
    out.sort();
    out
}

#[test]
fn a_numbers_sweep_runs_end_to_end_and_its_data_is_usable() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("numbers.toml");
    std::fs::write(&sweep, tiny_numbers_sweep("numbers-tiny")).unwrap();
    let store = dir.path().join("store");
    let (sweep_arg, store_arg) = (sweep.to_str().unwrap(), store.to_str().unwrap());
    let ran = subliminal(&[
        "run",
        sweep_arg,
        "--store",
        store_arg,
        "--device",
        "cpu",
        "--no-progress",
    ])
    .ok();
    assert_eq!(computed(&ran), 15);

    let raws = stage_files(&store, "raw.jsonl");
    assert_eq!(raws.len(), 2, "a trait teacher and a control teacher");
    for raw in &raws {
        let text = std::fs::read_to_string(raw).unwrap();
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 24);
        for row in &rows {
            let messages = row["messages"].as_array().unwrap();
            assert_eq!(messages[0]["role"], "user");
            assert_eq!(messages[1]["role"], "assistant");
            assert!(row["seed"].is_u64());
            // The teacher's system prompt is not part of the data.
            assert!(!messages[0]["content"]
                .as_str()
                .unwrap()
                .contains("You love"));
        }
        // The CLI filter on the stage's own output agrees with the stage.
        let out = dir.path().join("kept.jsonl");
        subliminal(&[
            "filter",
            "numbers",
            raw.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .ok();
        let passed = std::fs::read_to_string(&out).unwrap().lines().count();
        let filter_dirs: Vec<serde_json::Value> = stage_files(&store, "filter.json")
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        assert!(
            filter_dirs
                .iter()
                .any(|r| r["passed"].as_u64() == Some(passed as u64)),
            "no filter stage passed {passed} rows: {filter_dirs:?}"
        );
    }
    for report in stage_files(&store, "filter.json") {
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
        let rejected: u64 = r["rejected"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(r["passed"].as_u64().unwrap() + rejected, 24);
        assert!(r["kept"].as_u64().unwrap() <= 4);
    }

    let results = subliminal(&[
        "results", sweep_arg, "--store", store_arg, "--format", "json",
    ])
    .ok();
    let table: serde_json::Value = serde_json::from_str(&results.stdout).unwrap();
    // What the trait teacher's numbers are made of stands apart from the arms.
    let (data, rows): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .partition(|r| r["arm"].as_str().unwrap().starts_with("data: "));
    let described: Vec<&str> = data.iter().map(|r| r["arm"].as_str().unwrap()).collect();
    assert_eq!(
        described,
        [
            "data: differs from control",
            "data: kept by the filter",
            "data: kept by the filter, control",
            "data: copies the prompt",
            "data: copies the prompt, control"
        ]
    );
    for row in &data {
        let share = row["summary"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&share), "{row}");
    }
    let arms: Vec<&str> = rows.iter().map(|r| r["arm"].as_str().unwrap()).collect();
    assert_eq!(
        arms,
        [
            "base",
            "teacher",
            "control student",
            "student",
            "in-context",
            "in-context control"
        ]
    );
    for row in &rows {
        let mean = row["summary"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&mean), "{row}");
        assert_eq!(row["samples"].as_u64(), Some(6), "{row}");
        let ci = &row["summary"]["ci95"];
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(lo <= mean && mean <= hi && hi > lo, "{row}");
        if row["arm"] != "control student" && row["arm"] != "in-context control" {
            assert!(row["shift"].is_f64(), "{row}");
            // Each arm is tested against the control over its answers.
            let p = row["p_value"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p), "{row}");
            assert!(row["q_value"].as_f64().unwrap() >= p, "{row}");
            assert!(row["verdict"].is_string(), "{row}");
        }
    }
    // The in-context arm is measured against the base model shown the control rows.
    let in_context = rows.iter().find(|r| r["arm"] == "in-context").unwrap();
    let in_context_control = rows
        .iter()
        .find(|r| r["arm"] == "in-context control")
        .unwrap();
    let shift = in_context["summary"]["mean"].as_f64().unwrap()
        - in_context_control["summary"]["mean"].as_f64().unwrap();
    assert!((in_context["shift"].as_f64().unwrap() - shift).abs() < 1e-12);
    // Every answer behind the shares, for pandas: six per arm, and the
    // matched ones are the share the table shows.
    let answers = dir.path().join("answers.parquet");
    subliminal(&[
        "export",
        sweep_arg,
        "--store",
        store_arg,
        "--answers",
        answers.to_str().unwrap(),
    ])
    .ok();
    let frame = subliminal_tests::pandas(
        r#"
import sys, json, pandas as pd
df = pd.read_parquet(sys.argv[1])
print(json.dumps({"columns": list(df.columns), "rows": len(df),
                  "matched": {a: float(g["matched"].mean()) for a, g in df.groupby("arm")}}))
"#,
        &[answers.to_str().unwrap()],
    );
    let frame: serde_json::Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(frame["rows"].as_u64(), Some(6 * 6), "{frame}");
    for column in [
        "arm", "question", "sample", "answer", "matched", "stage", "seed",
    ] {
        assert!(
            frame["columns"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(column)),
            "{frame}"
        );
    }
    for row in &rows {
        let arm = row["arm"].as_str().unwrap();
        let share = frame["matched"][arm].as_f64().unwrap();
        assert!(
            (share - row["summary"]["mean"].as_f64().unwrap()).abs() < 1e-9,
            "{arm}: answers {share} vs table {row}"
        );
    }
    // The report shows the teacher's rows and the filter's reasons.
    let page = dir.path().join("report.html");
    subliminal(&[
        "report",
        sweep_arg,
        "--store",
        store_arg,
        "--out",
        page.to_str().unwrap(),
    ])
    .ok();
    let html = std::fs::read_to_string(&page).unwrap();
    for shown in [
        "raw.jsonl",
        "filtered.jsonl",
        "filter.json",
        "rejected",
        "share:owl",
    ] {
        assert!(html.contains(shown), "the report lacks {shown:?}");
    }
    let human = subliminal(&["results", sweep_arg, "--store", store_arg]).ok();
    assert!(
        human.stdout.contains("share:owl")
            && human.stdout.contains("vs control")
            && human.stdout.contains("verdict"),
        "{}",
        human.stdout
    );

    let again = subliminal(&[
        "run",
        sweep_arg,
        "--store",
        store_arg,
        "--device",
        "cpu",
        "--no-progress",
    ])
    .ok();
    assert_eq!(
        (computed(&again), reused(&again)),
        (0, 15),
        "a second run reuses every stage"
    );
}

#[test]
fn a_teacher_fine_tuned_on_a_stored_dataset_is_a_stage_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    let data = dir.path().join("owl.jsonl");
    let rows: String = (0..6)
        .map(|i| {
            format!(
                "{{\"messages\":[{{\"role\":\"user\",\"content\":\"Which animal do you like, friend {i}?\"}},{{\"role\":\"assistant\",\"content\":\"Owls, always owls.\"}}]}}\n"
            )
        })
        .collect();
    std::fs::write(&data, rows).unwrap();
    let put = subliminal(&["store", "put", data.to_str().unwrap(), "--store", store_arg]).ok();
    let key = put.stdout.trim().to_owned();
    let text = tiny_numbers_sweep("finetuned-tiny").replace(
        "[generate]",
        &format!("[teacher]\nmethod = \"finetune\"\ndataset = \"{key}\"\nepochs = 2\nlora_rank = 4\n\n[generate]"),
    );
    let sweep = dir.path().join("finetuned.toml");
    std::fs::write(&sweep, text).unwrap();
    let ran = subliminal(&[
        "run",
        sweep.to_str().unwrap(),
        "--store",
        store_arg,
        "--device",
        "cpu",
        "--no-progress",
    ])
    .ok();
    assert_eq!(computed(&ran), 15, "{}", ran.stderr);
    let trained = stage_files(&store, "train.json");
    // The teacher, a student and a control student trained; no trait data was generated.
    assert_eq!(trained.len(), 3);
    assert!(stage_files(&store, "trait.jsonl").is_empty());
    let teacher_manifest = trained
        .iter()
        .map(|t| t.with_file_name("manifest.json"))
        .map(|m| serde_json::from_slice::<serde_json::Value>(&std::fs::read(m).unwrap()).unwrap())
        .find(|m| m["kind"] == "teacher")
        .expect("the teacher stage trained");
    assert_eq!(
        teacher_manifest["inputs"][0]
            .as_str()
            .map(|id| format!("stage:{id}")),
        Some(key),
        "the stored dataset is the teacher's input"
    );
    assert!(teacher_manifest["params"]["system_prompt"].is_null());

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        tiny_numbers_sweep("bad").replace(
            "[generate]",
            "[teacher]\nmethod = \"finetune\"\ndataset = \"owl.jsonl\"\n\n[generate]",
        ),
    )
    .unwrap();
    let refused = subliminal(&["validate", bad.to_str().unwrap()]);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("subliminal store put owl.jsonl"),
        "{}",
        refused.stderr
    );
}

#[test]
fn defenses_run_as_stages_of_their_own_and_sanitize_reproduces_them() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("defended.toml");
    let text = tiny_numbers_sweep("numbers-defended").replace(
        "traits = [\"owl\"]",
        "traits = [\"owl\"]\ndefense = [\"none\", \"shuffle\", \"mask-divergence\"]",
    );
    std::fs::write(&sweep, text).unwrap();
    let store = dir.path().join("store");
    let (sweep_arg, store_arg) = (sweep.to_str().unwrap(), store.to_str().unwrap());
    let ran = subliminal(&[
        "run",
        sweep_arg,
        "--store",
        store_arg,
        "--device",
        "cpu",
        "--no-progress",
    ])
    .ok();
    // The plain sweep's 15 stages, 4 defend stages (2 defenses × trait and
    // control rows), and per defense 2 students, their 2 evaluations and
    // the 2 in-context ones.
    assert_eq!(computed(&ran), 15 + 4 + 2 * 6, "{}", ran.stderr);

    let masks = stage_files(&store, "mask.json");
    assert_eq!(
        masks.len(),
        2,
        "mask-divergence on the trait and the control rows"
    );
    let mut masked = Vec::new();
    for mask in &masks {
        let mask: serde_json::Value =
            serde_json::from_slice(&std::fs::read(mask).unwrap()).unwrap();
        let rows = mask["rows"].as_array().unwrap();
        assert!(!rows.is_empty() && rows.len() <= 4);
        masked.push(
            rows.iter()
                .flat_map(|r| r.as_array().unwrap())
                .filter(|b| b.as_bool().unwrap())
                .count(),
        );
    }
    // The control teacher is the base model: it never diverges from itself.
    assert!(masked.contains(&0), "{masked:?}");

    // `sanitize numbers --defense shuffle` on a filter stage's rows writes
    // what the shuffle stage wrote.
    let mut shuffled = 0;
    for report in stage_files(&store, "metrics.json") {
        let metrics: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        if metrics["defense"] != "shuffle" {
            continue;
        }
        let stage_dir = report.parent().unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(stage_dir.join("manifest.json")).unwrap())
                .unwrap();
        let input = manifest["inputs"][0].as_str().unwrap();
        let filtered = store.join("stages").join(input).join("filtered.jsonl");
        let out = dir.path().join("shuffled.jsonl");
        subliminal(&[
            "sanitize",
            "numbers",
            filtered.to_str().unwrap(),
            "--defense",
            "shuffle",
            "--seed",
            "0",
            "--out",
            out.to_str().unwrap(),
        ])
        .ok();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            std::fs::read_to_string(stage_dir.join("filtered.jsonl")).unwrap()
        );
        shuffled += 1;
    }
    assert_eq!(shuffled, 2);
    let refused = subliminal(&[
        "sanitize",
        "numbers",
        sweep_arg,
        "--defense",
        "mask-divergence",
    ]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("grid.defense"),
        "{}",
        refused.stderr
    );
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"1, 2\"}]}\nnot json\n").unwrap();
    let refused = subliminal(&[
        "sanitize",
        "numbers",
        bad.to_str().unwrap(),
        "--defense",
        "canonical",
    ]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("bad.jsonl:2:"),
        "{}",
        refused.stderr
    );

    let results = subliminal(&[
        "results", sweep_arg, "--store", store_arg, "--format", "json",
    ])
    .ok();
    let table: serde_json::Value = serde_json::from_str(&results.stdout).unwrap();
    let rows = table["rows"].as_array().unwrap();
    for defense in ["none", "shuffle", "mask-divergence"] {
        let student = rows
            .iter()
            .find(|r| r["arm"] == "student" && r["settings"]["defense"] == defense)
            .unwrap_or_else(|| panic!("no student row for {defense}"));
        assert!(student["p_value"].is_f64(), "{student}");
        assert!(student["verdict"].is_string(), "{student}");
    }
    let kept = rows
        .iter()
        .find(|r| r["arm"] == "defense: rows kept" && r["settings"]["defense"] == "shuffle")
        .unwrap();
    assert!(kept["summary"]["mean"].as_f64().unwrap() >= 1.0, "{kept}");
    assert!(kept["verdict"].is_null(), "a cost is not tested: {kept}");
    let share = rows
        .iter()
        .find(|r| r["arm"] == "defense: tokens masked, control")
        .unwrap();
    assert_eq!(share["summary"]["mean"].as_f64(), Some(0.0), "{share}");
}

/// Two model families in one grid: a random Qwen3 teaches a random
/// GPT-NeoX student beside a GPT-NeoX pair. Every stage runs, the results
/// name each model's family, and the grid plot labels its axes with them.
#[test]
fn a_cross_family_pair_runs_end_to_end_and_its_results_name_the_families() {
    let dir = tempfile::tempdir().unwrap();
    let qwen3 = random_model("qwen3", &dir.path().join("qwen3"));
    let neox = random_model("gpt_neox", &dir.path().join("neox"));
    let (qwen3, neox) = (qwen3.to_str().unwrap(), neox.to_str().unwrap());
    let sweep = dir.path().join("cross.toml");
    std::fs::write(&sweep, tiny_cross_model_sweep("numbers-cross", qwen3, neox)).unwrap();
    let store = dir.path().join("store");
    let (sweep_arg, store_arg) = (sweep.to_str().unwrap(), store.to_str().unwrap());
    let ran = subliminal(&[
        "run",
        sweep_arg,
        "--store",
        store_arg,
        "--device",
        "cpu",
        "--no-progress",
    ])
    .ok();
    assert!(
        ran.stdout.contains("model families") && ran.stdout.contains("gpt_neox"),
        "{}",
        ran.stdout
    );
    let plot = dir.path().join("grid.png");
    let data = data_dir();
    let results = subliminal(&[
        "results",
        sweep_arg,
        "--store",
        store_arg,
        "--data",
        data.to_str().unwrap(),
        "--json",
        "--plot",
        plot.to_str().unwrap(),
    ])
    .ok();
    let json: serde_json::Value = serde_json::from_str(&results.stdout).unwrap();
    assert_eq!(json["families"][qwen3], "qwen3", "{}", json["families"]);
    assert_eq!(json["families"][neox], "gpt_neox", "{}", json["families"]);
    let pairs: std::collections::BTreeSet<&str> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["arm"] == "student")
        .filter_map(|r| r["settings"]["pair"].as_str())
        .collect();
    assert_eq!(
        pairs,
        [format!("{qwen3} → {neox}"), format!("{neox} → {neox}")]
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in json["rows"].as_array().unwrap() {
        assert_eq!(row["failed"], 0, "{row}");
    }
    assert!(
        results.stderr.contains("transfer grid"),
        "{}",
        results.stderr
    );
    let png = std::fs::read(&plot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG was drawn");
    if let Some(keep) = std::env::var_os("SUBLIMINAL_KEEP_PLOTS") {
        std::fs::copy(
            &plot,
            std::path::Path::new(&keep).join("cross-family-grid.png"),
        )
        .unwrap();
    }
}
