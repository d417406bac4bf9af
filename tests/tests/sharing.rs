//! Results where researchers look: a sweep's HTML report opened in a real
//! headless Chromium, its measurements as Parquet read by pandas, its trials
//! logged to a real MLflow server (twice, without duplicates), and the shell
//! habits (completions, `--json`, a closed pipe).

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use subliminal_tests::servers::{chromium, mlflow, mlflow_runs, static_files};
use subliminal_tests::{bin, pandas, subliminal, tiny_sweep};

/// Runs the tiny MNIST sweep (two seeds, so that its rows are tested) into `store`.
fn run_sweep(dir: &Path, name: &str) -> (String, String) {
    let sweep = dir.join(format!("{name}.toml"));
    let text = tiny_sweep(name, 1, 3000).replace("seeds = [0]", "seeds = [0, 1]");
    std::fs::write(&sweep, text).unwrap();
    let store = dir.join("store");
    let (sweep, store) = (
        sweep.to_str().unwrap().to_owned(),
        store.to_str().unwrap().to_owned(),
    );
    let ran = subliminal(&[
        "run",
        &sweep,
        "--store",
        &store,
        "--device",
        "cpu",
        "--no-progress",
        "--json",
    ])
    .ok();
    let table: Value =
        serde_json::from_str(&ran.stdout).expect("run --json prints the table as JSON");
    assert_eq!(table["sweep"], name);
    (sweep, store)
}

fn measurements(sweep: &str) -> usize {
    subliminal_shared::sweep::load(Path::new(sweep))
        .unwrap()
        .plan()
        .measurements
        .len()
}

#[test]
fn the_report_opens_in_chromium_with_every_plot_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (sweep, store) = run_sweep(dir.path(), "shared-report");
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let page = site.join("report.html");
    subliminal(&[
        "report",
        "shared-report",
        "--store",
        &store,
        "--out",
        page.to_str().unwrap(),
    ])
    .ok();
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing is fetched at view time.
    for outside in ["http://", "https://", "<script", "<link"] {
        assert!(!html.contains(outside), "the report holds {outside:?}");
    }
    let images = html.matches("<img ").count();
    assert_eq!(
        images, 2,
        "the transfer grid and the shifts against control"
    );
    assert!(
        html.contains(&sweep_text(&sweep)),
        "the sweep file is in the page"
    );

    // A page beside the report reads its DOM once every image has decoded.
    std::fs::write(
        site.join("probe.html"),
        r##"<!doctype html><iframe id="f" src="report.html" width="1280" height="4000"></iframe><pre id="out">waiting</pre>
<script>
document.getElementById("f").addEventListener("load", () => {
  const d = document.getElementById("f").contentDocument;
  const images = [...d.images];
  Promise.all(images.map(i => i.decode().then(() => i.naturalWidth, () => 0))).then(widths => {
    document.getElementById("out").textContent = JSON.stringify({
      title: d.title,
      widths,
      tables: d.querySelectorAll("table").length,
      rows: d.querySelectorAll("#results ~ table tbody tr").length,
    });
  });
});
</script>"##,
    )
    .unwrap();
    let server = static_files(&site, dir.path().join("http.log"));
    let dom = chromium(
        &dir.path().join("profile-dom"),
        &["--dump-dom", "--virtual-time-budget=15000"],
        &format!("{}/probe.html", server.url()),
    );
    let probe = dom
        .split("<pre id=\"out\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("no probe output in the DOM:\n{dom}"));
    let probe: Value = serde_json::from_str(&probe.replace("&quot;", "\""))
        .unwrap_or_else(|e| panic!("the probe did not finish ({e}): {probe}"));
    assert_eq!(probe["title"], "subliminal: shared-report");
    let widths = probe["widths"].as_array().unwrap();
    assert_eq!(widths.len(), images, "{probe}");
    assert!(
        widths.iter().all(|w| w.as_u64().unwrap_or(0) > 100),
        "every plot decodes to a picture: {probe}"
    );
    assert!(probe["tables"].as_u64().unwrap() >= 3, "{probe}");

    let shot = dir.path().join("report.png");
    chromium(
        &dir.path().join("profile-shot"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1800",
        ],
        &format!("{}/report.html", server.url()),
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    // A blank page compresses to a few kB; a page with plots and tables does not.
    assert!(png.len() > 50_000, "screenshot of {} bytes", png.len());
}

fn sweep_text(sweep: &str) -> String {
    std::fs::read_to_string(sweep)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("name"))
        .unwrap()
        .replace('"', "&quot;")
}

#[test]
fn parquet_has_a_row_per_measurement_with_settings_as_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (sweep, store) = run_sweep(dir.path(), "shared-frames");
    let file = dir.path().join("m.parquet");
    subliminal(&[
        "results",
        &sweep,
        "--store",
        &store,
        "--format",
        "parquet",
        "--out",
        file.to_str().unwrap(),
    ])
    .ok();
    let read = pandas(
        r#"
import sys, json, pandas as pd
df = pd.read_parquet(sys.argv[1])
print(json.dumps({"rows": len(df), "columns": list(df.columns),
                  "done": int((df["status"] == "done").sum()),
                  "teacher": float(df[df["arm"] == "teacher"]["value"].mean()),
                  "seeds": sorted(int(s) for s in df[df["arm"] == "teacher"]["seed"])}))
"#,
        &[file.to_str().unwrap()],
    );
    let read: Value = serde_json::from_str(&read).unwrap();
    let n = measurements(&sweep);
    assert_eq!(read["rows"].as_u64(), Some(n as u64), "{read}");
    assert_eq!(read["done"].as_u64(), Some(n as u64), "{read}");
    for column in [
        "sweep",
        "arm",
        "metric",
        "seed",
        "teacher_init",
        "student_init",
        "stage",
        "value",
    ] {
        assert!(
            read["columns"].as_array().unwrap().contains(&json!(column)),
            "{read}"
        );
    }
    assert_eq!(read["seeds"], json!([0, 1]));
    let teacher = read["teacher"].as_f64().unwrap();
    let table = subliminal(&["results", &sweep, "--store", &store, "--json"]).ok();
    let mean = subliminal_tests::mean_of(&table.stdout, "teacher").unwrap();
    assert!(
        (teacher - mean).abs() < 1e-9,
        "pandas {teacher} vs table {mean}"
    );

    // MNIST's figures are not counted from answers: there are none to export.
    let answers = dir.path().join("a.parquet");
    let refused = subliminal(&[
        "export",
        &sweep,
        "--store",
        &store,
        "--answers",
        answers.to_str().unwrap(),
    ]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("no answers to export"),
        "{}",
        refused.stderr
    );
    assert!(!answers.exists());
}

#[test]
fn mlflow_receives_one_run_per_trial_and_a_second_logging_adds_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = mlflow(dir.path());
    let (sweep, store) = run_sweep(dir.path(), "shared-tracked");
    let track = || {
        subliminal(&[
            "results",
            &sweep,
            "--store",
            &store,
            "--track",
            &server.url(),
        ])
        .ok()
        .stderr
    };
    let first = track();
    let logged = mlflow_runs(&server.url(), "shared-tracked");
    // Seed 0 and 1, each: the reference, the teacher, and same- and cross-init students.
    assert!(logged.len() >= 4, "{} runs", logged.len());
    let created = format!("{} new run(s), 0 updated", logged.len());
    assert!(first.contains(&created), "{first}");
    let second = track();
    let updated = format!("0 new run(s), {} updated", logged.len());
    assert!(second.contains(&updated), "{second}");
    assert_eq!(
        mlflow_runs(&server.url(), "shared-tracked").len(),
        logged.len(),
        "no run is duplicated"
    );

    // A run carries its trial's settings, its figures, and the stage behind each.
    let teacher = logged
        .iter()
        .find(|r| {
            r["data"]["metrics"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["key"] == "teacher/accuracy"))
        })
        .expect("a run with the teacher's accuracy");
    let params = teacher["data"]["params"].as_array().unwrap();
    assert!(params.iter().any(|p| p["key"] == "seed"), "{teacher}");
    let tags = teacher["data"]["tags"].as_array().unwrap();
    assert!(tags
        .iter()
        .any(|t| t["key"] == "subliminal_sweep" && t["value"] == "shared-tracked"));
    let stage = tags
        .iter()
        .find(|t| t["key"] == "stage/teacher/accuracy")
        .expect("the teacher's stage id")["value"]
        .as_str()
        .unwrap();
    assert!(
        Path::new(&store).join("stages").join(stage).exists(),
        "{stage}"
    );
}

#[test]
fn completions_json_and_a_closed_pipe() {
    for (shell, mark) in [
        ("bash", "_subliminal()"),
        ("zsh", "#compdef subliminal"),
        ("fish", "complete -c subliminal"),
    ] {
        let script = subliminal(&["completions", shell]).ok().stdout;
        assert!(script.contains(mark), "{shell}: {script:.300}");
        assert!(
            script.contains("report") && script.contains("export"),
            "{shell}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("v.toml");
    std::fs::write(&sweep, tiny_sweep("shared-validate", 1, 3000)).unwrap();
    let valid = subliminal(&["validate", sweep.to_str().unwrap(), "--json"]).ok();
    let summary: Value = serde_json::from_str(&valid.stdout).unwrap();
    assert_eq!(summary["sweep"], "shared-validate");
    assert_eq!(summary["stages"], 11);

    // The reader goes before the first write: the command ends quietly, with 0.
    for args in [
        vec!["completions", "bash"],
        vec!["validate", sweep.to_str().unwrap(), "--json"],
    ] {
        let mut child = Command::new(bin("subliminal"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    }
}
