//! A small sweep through the real `subliminal` binary, on the real MNIST
//! files and real libtorch: runs, re-runs that reuse everything, bigger
//! sweeps that reuse the smaller, corruption that is caught, failures that
//! are recorded, and bad sweep files that are refused before anything runs.

use std::path::{Path, PathBuf};

use subliminal_tests::{computed, mean_of, noop_sweep, reused, snapshot, stages, subliminal};

fn tiny() -> String {
    subliminal_tests::tiny_sweep("tiny", 1, 6000)
}

/// teacher, generate, 2 students, 2 theorem stages, and 5 evaluations (2
/// students, teacher, 2 reference inits)
const TINY_STAGES: usize = 11;

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    fn sweep(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write sweep");
        path
    }
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn run(&self, sweep: &Path) -> subliminal_tests::Ran {
        subliminal(&[
            "run",
            sweep.to_str().unwrap(),
            "--store",
            self.store().to_str().unwrap(),
            "--device",
            "cpu",
        ])
    }
}

fn stage_id(stage: &serde_json::Value) -> String {
    stage["id"].as_str().expect("id").to_owned()
}

#[test]
fn a_sweep_run_twice_recomputes_nothing() {
    let sandbox = Sandbox::new();
    let sweep = sandbox.sweep("tiny.toml", &tiny());
    let first = sandbox.run(&sweep).ok();
    assert_eq!(computed(&first), TINY_STAGES, "{}", first.stderr);
    for arm in [
        "reference",
        "teacher",
        "student same-init aux",
        "student cross-init aux",
    ] {
        assert!(
            first.stdout.contains(arm),
            "no {arm} row in:\n{}",
            first.stdout
        );
    }
    let before = snapshot(&sandbox.store());
    let second = sandbox.run(&sweep).ok();
    assert_eq!(computed(&second), 0, "{}", second.stderr);
    assert_eq!(reused(&second), TINY_STAGES);
    assert_eq!(
        before,
        snapshot(&sandbox.store()),
        "a second run changed the store"
    );
    assert_eq!(
        second.stdout, first.stdout,
        "the same results table both times"
    );

    let json = subliminal(&[
        "results",
        "tiny",
        "--store",
        sandbox.store().to_str().unwrap(),
        "--format",
        "json",
    ])
    .ok();
    let teacher = mean_of(&json.stdout, "teacher").expect("teacher row");
    let reference = mean_of(&json.stdout, "reference").expect("reference row");
    assert!(
        teacher > 0.7,
        "one epoch on 6,000 digits gives about 0.78, got {teacher}"
    );
    assert!(
        reference < 0.2,
        "an untrained model should be near chance, got {reference}"
    );
}

#[test]
fn a_bigger_sweep_reuses_the_stages_it_shares() {
    let sandbox = Sandbox::new();
    sandbox.run(&sandbox.sweep("tiny.toml", &tiny())).ok();
    let bigger = sandbox.sweep(
        "bigger.toml",
        &tiny()
            .replace("seeds = [0]", "seeds = [0, 1]")
            .replace("name = \"tiny\"", "name = \"bigger\""),
    );
    let all = stages(&bigger).len();
    let validate = subliminal(&[
        "validate",
        bigger.to_str().unwrap(),
        "--store",
        sandbox.store().to_str().unwrap(),
    ])
    .ok();
    assert!(
        validate
            .stdout
            .contains(&format!("{all} stages, {TINY_STAGES} done")),
        "{}",
        validate.stdout
    );
    let ran = sandbox.run(&bigger).ok();
    assert_eq!(computed(&ran), all - TINY_STAGES, "{}", ran.stderr);
    assert_eq!(reused(&ran), TINY_STAGES);
}

#[test]
fn a_corrupted_artifact_is_detected_and_its_stage_recomputed() {
    let sandbox = Sandbox::new();
    let sweep = sandbox.sweep("tiny.toml", &tiny());
    sandbox.run(&sweep).ok();
    let teacher = stages(&sweep)
        .into_iter()
        .find(|s| s["kind"] == "teacher")
        .expect("a teacher");
    let dir = sandbox.store().join("stages").join(stage_id(&teacher));
    let model = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&model, &bytes).unwrap();

    let validate = subliminal(&[
        "validate",
        sweep.to_str().unwrap(),
        "--store",
        sandbox.store().to_str().unwrap(),
    ])
    .ok();
    assert!(
        validate
            .stdout
            .contains(&format!("{} done", TINY_STAGES - 1)),
        "{}",
        validate.stdout
    );

    let ran = sandbox.run(&sweep).ok();
    assert!(ran.stderr.contains("corrupt"), "{}", ran.stderr);
    assert_eq!(
        computed(&ran),
        1,
        "only the corrupted stage runs again: {}",
        ran.stderr
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let entry = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "model.safetensors")
        .unwrap();
    let now = snapshot(&dir);
    assert_eq!(
        now["model.safetensors"],
        entry["sha256"].as_str().unwrap(),
        "the artifact verifies again"
    );

    // A missing artifact counts as corruption too.
    std::fs::remove_file(&model).unwrap();
    let ran = sandbox.run(&sweep).ok();
    assert_eq!(computed(&ran), 1, "{}", ran.stderr);
    assert!(model.exists());
}

#[test]
fn results_export_csv_and_json_and_plot_the_transfer_grid() {
    let sandbox = Sandbox::new();
    let sweep = sandbox.sweep("tiny.toml", &tiny());
    sandbox.run(&sweep).ok();
    let store = sandbox.store();
    let store = store.to_str().unwrap();
    let csv = subliminal(&[
        "results",
        sweep.to_str().unwrap(),
        "--store",
        store,
        "--format",
        "csv",
    ])
    .ok();
    let mut lines = csv.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("sweep,arm,settings,metric,n,mean,ci95_low,ci95_high,std,vs_control,vs_control_ci95_low,vs_control_ci95_high,p_value,q_value,p_seeds,detectable_shift,verdict,failed,pending")
    );
    let rows: Vec<&str> = lines.collect();
    // reference, teacher, 2 students, and each student's theorem cosine and inner product
    assert_eq!(rows.len(), 8, "{}", csv.stdout);
    assert!(
        rows.iter()
            .any(|r| r.starts_with("tiny,reference,,accuracy,2,")),
        "{}",
        csv.stdout
    );
    let json = subliminal(&["results", "tiny", "--store", store, "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["sweep"], "tiny");
    assert_eq!(v["rows"].as_array().unwrap().len(), 8);
    for (file, magic) in [("grid.png", &b"\x89PNG"[..]), ("grid.svg", &b"<svg"[..])] {
        let path = sandbox.dir.path().join(file);
        subliminal(&[
            "results",
            "tiny",
            "--store",
            store,
            "--plot",
            path.to_str().unwrap(),
        ])
        .ok();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.windows(magic.len()).take(200).any(|w| w == magic),
            "{file} is not a {file} image"
        );
    }
    let bad = subliminal(&["results", "tiny", "--store", store, "--plot", "grid.gif"]);
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("expected a .png or .svg"),
        "{}",
        bad.stderr
    );
    let unknown = subliminal(&["results", "nope", "--store", store]);
    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown
            .stderr
            .contains("neither a sweep file nor a sweep that was run"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn a_bad_sweep_file_is_refused_with_exit_code_2_and_nothing_runs() {
    let sandbox = Sandbox::new();
    let sweep = sandbox.sweep(
        "bad.toml",
        &tiny().replace(
            "epochs = 1\nbatch_size = 256\ntrain",
            "epochs = 0\nbatch_size = 256\ntrain",
        ),
    );
    let ran = sandbox.run(&sweep);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("bad.toml:12:10: `teacher.epochs`: expected a whole number of epochs"),
        "{}",
        ran.stderr
    );
    assert!(
        !sandbox.store().exists(),
        "a refused sweep must not touch the store"
    );
    let ran = subliminal(&["validate", sweep.to_str().unwrap()]);
    assert_eq!(ran.code, Some(2));
    let good = sandbox.sweep("good.toml", &tiny());
    let store = sandbox.store();
    let ran = subliminal(&[
        "validate",
        good.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ])
    .ok();
    assert!(
        ran.stdout.contains("2 trials, 11 stages, 0 done"),
        "{}",
        ran.stdout
    );
    assert!(!store.exists(), "validate creates nothing");
    let ran = subliminal(&["run", "/nonexistent.toml"]);
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr
            .contains("cannot read sweep file /nonexistent.toml"),
        "{}",
        ran.stderr
    );
}

#[test]
fn a_failing_stage_is_recorded_and_its_trial_shows_why() {
    let sandbox = Sandbox::new();
    let sweep = sandbox.sweep("tiny.toml", &tiny());
    let ran = subliminal(&[
        "run",
        sweep.to_str().unwrap(),
        "--store",
        sandbox.store().to_str().unwrap(),
        "--device",
        "cpu",
        "--data",
        "/nonexistent-data",
    ]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("scripts/setup.sh"),
        "the error says how to get MNIST: {}",
        ran.stderr
    );
    assert!(ran.stdout.contains("failures:"), "{}", ran.stdout);
    let teacher = stages(&sweep)
        .into_iter()
        .find(|s| s["kind"] == "teacher")
        .unwrap();
    let failure = sandbox
        .store()
        .join("stages")
        .join(stage_id(&teacher))
        .join("failure.json");
    let failure: serde_json::Value =
        serde_json::from_slice(&std::fs::read(failure).unwrap()).unwrap();
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("cannot read MNIST file"),
        "{failure}"
    );
}

#[test]
fn the_noop_kind_runs_end_to_end_with_its_failures_recorded() {
    let sandbox = Sandbox::new();
    // Three chains of 2 work stages and an evaluate; seed 2 fails at its first stage.
    let sweep = sandbox.sweep(
        "noop.toml",
        &noop_sweep("noop-local", &[0, 1, 2], 2, 5, &[2]),
    );
    let validated = subliminal(&["validate", sweep.to_str().unwrap()]).ok();
    assert!(
        validated
            .stdout
            .contains("(noop) is valid: 3 trials, 9 stages"),
        "{}",
        validated.stdout
    );
    let work = validated.stdout.find("work").expect("a work row");
    let evaluate = validated.stdout.find("evaluate").expect("an evaluate row");
    assert!(
        work < evaluate,
        "kinds in pipeline order:\n{}",
        validated.stdout
    );

    let first = sandbox.run(&sweep);
    assert_eq!(first.code, Some(1), "a stage failed: {}", first.stderr);
    assert_eq!(computed(&first), 6, "{}", first.stderr);
    assert!(first.stdout.contains("fail_seeds"), "{}", first.stdout);
    let results = subliminal(&[
        "results",
        "noop-local",
        "--store",
        sandbox.store().to_str().unwrap(),
        "--format",
        "json",
    ])
    .ok();
    let table: serde_json::Value = serde_json::from_str(&results.stdout).unwrap();
    let row = &table["rows"][0];
    assert_eq!(row["arm"], "work");
    assert_eq!(row["failed"], 1);
    let values: Vec<f64> = row["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values.len(), 2);
    assert!(values.iter().all(|v| (0.0..1.0).contains(v)), "{values:?}");
    assert_ne!(values[0], values[1], "each seed's chain has its own figure");

    // The same sweep without the failure reuses every stage that was done.
    let fixed = sandbox.sweep(
        "fixed.toml",
        &noop_sweep("noop-local", &[0, 1, 2], 2, 5, &[]),
    );
    let second = sandbox.run(&fixed).ok();
    assert_eq!(
        computed(&second),
        3,
        "only seed 2's chain: {}",
        second.stderr
    );
    assert_eq!(reused(&second), 6);
}

#[test]
fn the_scheduler_lists_the_stages_that_can_start() {
    let sandbox = Sandbox::new();
    let sweep = sandbox.sweep("tiny.toml", &tiny());
    let ready = |store: &Path| {
        let out = std::process::Command::new(subliminal_tests::bin("subliminal-scheduler"))
            .args([
                "ready",
                sweep.to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let mut kinds: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        kinds.sort();
        kinds
    };
    // Nothing done: the teacher and the two untrained reference evaluations.
    assert_eq!(ready(&sandbox.store()), ["evaluate", "evaluate", "teacher"]);
    sandbox.run(&sweep).ok();
    assert!(
        ready(&sandbox.store()).is_empty(),
        "all done, nothing ready"
    );
}

#[test]
fn stage_ids_are_stable_across_processes_and_pinned() {
    let sandbox = Sandbox::new();
    let sweep = sandbox.sweep("tiny.toml", &tiny());
    let a = stages(&sweep);
    let b = stages(&sweep);
    assert_eq!(a, b);
    let teacher = a.iter().find(|s| s["kind"] == "teacher").unwrap();
    // Pinned: a change here means every store's finished work would be redone.
    assert_eq!(
        stage_id(teacher),
        PINNED_TEACHER_ID,
        "teacher params: {}",
        teacher["params"]
    );
}

const PINNED_TEACHER_ID: &str = "41028d070f2f39047653b9bb07599b292e8967ac3b78ab4e60223902fa227384";

#[test]
fn a_numeric_axis_is_drawn_as_curves_and_ensembles_change_no_result() {
    let sandbox = Sandbox::new();
    let sweep = sandbox.sweep(
        "curve.toml",
        &tiny()
            .replace("name = \"tiny\"", "name = \"curve\"")
            .replace(
                "aux_logits = 3",
                "aux_logits = [1, 3]\nstudent_init_noise = [0.0, 0.5]",
            ),
    );
    let alone = sandbox.run(&sweep).ok();
    let grouped_store = sandbox.dir.path().join("grouped");
    let grouped = subliminal(&[
        "run",
        sweep.to_str().unwrap(),
        "--store",
        grouped_store.to_str().unwrap(),
        "--device",
        "cpu",
        "--ensemble",
        "4",
    ])
    .ok();
    assert!(
        grouped.stderr.contains("groups of up to 4"),
        "{}",
        grouped.stderr
    );
    assert_eq!(computed(&grouped), computed(&alone));
    let results = |store: &Path| {
        let out = subliminal(&[
            "results",
            "curve",
            "--store",
            store.to_str().unwrap(),
            "--format",
            "json",
        ])
        .ok();
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["arm"].to_string() + &r["settings"].to_string(),
                    r["summary"]["mean"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (results(&sandbox.store()), results(&grouped_store));
    assert_eq!(a.len(), b.len());
    for ((arm, x), (arm_b, y)) in a.iter().zip(&b) {
        assert_eq!(arm, arm_b);
        assert!((x - y).abs() <= 2e-4, "{arm}: {x} alone, {y} in a group");
    }

    let png = sandbox.dir.path().join("curve.png");
    let plotted = subliminal(&[
        "results",
        "curve",
        "--store",
        sandbox.store().to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
    ])
    .ok();
    assert!(
        plotted.stderr.contains("(accuracy vs m)"),
        "two numeric axes of two values each: the first by name is drawn: {}",
        plotted.stderr
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );
}

#[test]
fn logit_defenses_run_between_generate_and_the_students_and_say_what_they_cost() {
    let sandbox = Sandbox::new();
    let text = subliminal_tests::tiny_sweep("defended", 2, 6000)
        .replace("seeds = [0]", "seeds = [0, 1]")
        .replace(
            "targets = [\"aux\"]",
            "targets = [\"aux\"]\ntheorem = false\ndefense = [\"none\", \"round:0\", \"temperature:4\"]",
        );
    let sweep = sandbox.sweep("defended.toml", &text);
    let ran = sandbox.run(&sweep).ok();
    // Per seed: teacher, generate, 2 defend stages, 6 students with their
    // evaluations, the teacher's evaluation and 2 reference inits (one
    // shared across seeds).
    assert_eq!(computed(&ran), 2 * (2 + 2 + 12 + 1) + 3, "{}", ran.stderr);
    let store = sandbox.store();
    let results = subliminal(&[
        "results",
        sweep.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--format",
        "json",
    ])
    .ok();
    let table: serde_json::Value = serde_json::from_str(&results.stdout).unwrap();
    let rows = table["rows"].as_array().unwrap();
    let row = |arm: &str, defense: &str| {
        rows.iter()
            .find(|r| r["arm"] == arm && r["settings"]["defense"] == defense)
            .unwrap_or_else(|| panic!("no row {arm} {defense}"))
    };
    let teacher = rows.iter().find(|r| r["arm"] == "teacher").unwrap();
    let teacher_accuracy = teacher["summary"]["mean"].as_f64().unwrap();
    // A temperature never changes which logit is largest: no accuracy lost.
    let cost = row("defense: teacher accuracy", "temperature:4");
    assert!(
        (cost["summary"]["mean"].as_f64().unwrap() - teacher_accuracy).abs() < 1e-9,
        "{cost} vs {teacher}"
    );
    assert_eq!(
        row("defense: aux argmax kept", "temperature:4")["summary"]["mean"].as_f64(),
        Some(1.0)
    );
    // Each same-init student is tested against the cross-init one, over seeds.
    for defense in ["none", "round:0", "temperature:4"] {
        let student = row("student same-init aux", defense);
        assert!(student["shift"].is_f64(), "{student}");
        assert!(student["p_seeds"].is_f64() || student["p_seeds"].is_null());
        assert!(
            student["verdict"].is_string() || student["p_value"].is_null(),
            "{student}"
        );
    }
    // The defended logits are what the student distilled: round:0 leaves integers.
    let plan = stages(&sweep);
    let round = plan
        .iter()
        .find(|s| s["kind"] == "defend" && s["params"]["defense"] == "round:0")
        .unwrap();
    let metrics: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            store
                .join("stages")
                .join(stage_id(round))
                .join("metrics.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        metrics["changed_share"].as_f64().unwrap() > 0.5,
        "{metrics}"
    );

    let bad = sandbox.sweep("bad.toml", &text.replace("\"round:0\"", "\"blur\""));
    let refused = subliminal(&["validate", bad.to_str().unwrap()]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("bad.toml:")
            && refused
                .stderr
                .contains("`grid.defense`: unknown defense \"blur\"")
            && refused.stderr.contains("temperature:T"),
        "{}",
        refused.stderr
    );
}
