//! `subliminal audit` on the real SmolLM2 model: bad input is refused before
//! anything runs, an audit's report (JSON, PNG, HTML) follows its findings
//! and opens in a real headless Chromium, and datasets that name their
//! trait openly (tests/fixtures/audit) have it flagged and ranked first.

use std::path::Path;

use serde_json::Value;
use subliminal_tests::servers::{chromium, static_files};
use subliminal_tests::{number_rows, subliminal};

#[test]
fn a_malformed_dataset_is_refused_with_its_line_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cases = [
        (
            "not-json.jsonl",
            format!("{}{{\"messages\": [\n", number_rows(2, 1)),
            3,
        ),
        (
            "no-answer.jsonl",
            format!(
                "{}{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}\n",
                number_rows(1, 2)
            ),
            2,
        ),
        ("one-row.jsonl", number_rows(1, 3), 1),
    ];
    for (name, text, line) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let ran = subliminal(&[
            "audit",
            path.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--out",
            dir.path().join("out").to_str().unwrap(),
        ]);
        assert_eq!(ran.code, Some(2), "{name}: {}", ran.stderr);
        assert!(
            ran.stderr.contains(&format!("{name}:{line}:")),
            "{name}: the error names the file and line {line}: {}",
            ran.stderr
        );
    }
    let ran = subliminal(&["audit", "x.jsonl", "--probes", "fish"]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("animal:WORD"), "{}", ran.stderr);
    assert!(!store.exists(), "nothing was written to the store");
    assert!(!dir.path().join("out").exists(), "no report");
}

#[test]
fn an_audit_reports_by_its_rule_and_its_page_opens_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (dataset, control) = (
        dir.path().join("data.jsonl"),
        dir.path().join("control.jsonl"),
    );
    std::fs::write(&dataset, number_rows(8, 10)).unwrap();
    std::fs::write(&control, number_rows(8, 20)).unwrap();
    let out = dir.path().join("report");
    let sanitized = dir.path().join("clean.jsonl");
    let store = dir.path().join("store");
    let args = [
        "audit",
        dataset.to_str().unwrap(),
        "--control",
        control.to_str().unwrap(),
        "--tier",
        "full",
        "--probes",
        "animals",
        "--questions",
        "2",
        "--samples",
        "3",
        "--epochs",
        "1",
        "--replicates",
        "2",
        "--store",
        store.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--sanitized",
        sanitized.to_str().unwrap(),
        "--json",
    ];
    let ran = subliminal(&args);
    let report: Value = serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("report JSON ({e}):\n{}\n{}", ran.stdout, ran.stderr));
    let verdict = report["verdict"].as_str().unwrap();
    let expected_code = if verdict == "clean" { 0 } else { 3 };
    assert_eq!(ran.code, Some(expected_code), "{verdict}: {}", ran.stderr);

    // The verdict is the documented rule applied to the report's own findings.
    let findings: Vec<subliminal_shared::experiments::audit::Finding> =
        serde_json::from_value(report["findings"].clone()).unwrap();
    assert_eq!(
        findings.len(),
        30,
        "ten animals, two screens and the student"
    );
    // Two students per arm, each on its own draw of the rows, tested over students.
    for arm in ["dataset_students", "control_students"] {
        let students = report["training"][arm].as_array().unwrap();
        assert_eq!(students.len(), 2, "{arm}");
        for training in students {
            assert!(training["steps"].as_u64().unwrap() >= 1, "{training}");
            assert!(training["first"].as_f64().unwrap() > 0.0, "{training}");
        }
    }
    let described = report["students"].as_array().unwrap();
    assert_eq!(described.len(), 10);
    assert!(described
        .iter()
        .all(|d| d["dataset_students"].as_array().unwrap().len() == 2));
    assert!(report["text"]
        .as_str()
        .unwrap()
        .contains("2 students per arm"));
    let alpha = report["alpha"].as_f64().unwrap();
    let rule = subliminal_shared::experiments::audit::verdict::decide(&findings, alpha);
    assert_eq!(rule.as_str(), verdict);
    assert!(findings.iter().all(|f| f.p_value > 0.0 && f.p_value <= 1.0));
    let carriers = &report["carriers"];
    assert_eq!(carriers["rows"], 8);
    assert!(!carriers["top_tokens"].as_array().unwrap().is_empty());
    let clean = std::fs::read_to_string(&sanitized).unwrap();
    assert_eq!(clean.lines().count(), 8, "a sanitised row per row");

    // A second audit of the same file reuses every stage.
    let again = subliminal(&args);
    assert_eq!(again.code, Some(expected_code));
    assert!(
        again.stderr.contains("computed 0 stage(s)"),
        "{}",
        again.stderr
    );

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for outside in ["http://", "https://", "<script", "<link"] {
        assert!(!html.contains(outside), "the page holds {outside:?}");
    }
    assert!(std::fs::read(out.join("report.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    page_opens(dir.path(), &out, verdict);
}

/// The page shows its verdict and its picture decodes in Chromium; a
/// screenshot of it is kept beside the report.
fn page_opens(dir: &Path, site: &Path, verdict: &str) {
    std::fs::write(
        site.join("probe.html"),
        r##"<!doctype html><iframe id="f" src="report.html" width="1600" height="3000"></iframe><pre id="out">waiting</pre>
<script>
// Polled rather than on the frame's load event, which may fire before this script runs.
const tick = setInterval(() => {
  const d = document.getElementById("f").contentDocument;
  const picture = d && d.getElementById("picture");
  if (!picture || d.readyState !== "complete" || !picture.complete) return;
  clearInterval(tick);
  document.getElementById("out").textContent = JSON.stringify({
    verdict: d.getElementById("verdict").textContent,
    width: picture.naturalWidth,
    rows: d.querySelectorAll("tr").length,
  });
}, 50);
</script>"##,
    )
    .unwrap();
    let server = static_files(site, dir.join("http.log"));
    let dom = chromium(
        &dir.join("profile-dom"),
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
    assert_eq!(probe["verdict"], verdict);
    assert!(
        probe["width"].as_u64().unwrap_or(0) >= 1000,
        "the picture decodes: {probe}"
    );
    assert!(
        probe["rows"].as_u64().unwrap() > 20,
        "findings and carriers: {probe}"
    );
    let shot = site.join("screenshot.png");
    chromium(
        &dir.join("profile-shot"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1600,1400",
        ],
        &format!("{}/report.html", server.url()),
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.len() > 50_000,
        "a page with a picture: {} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("SUBLIMINAL_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// The fixtures: 60 one-sentence answers that praise an animal openly (owl,
/// dolphin, wolf), and 60 neutral answers to the same prompts.
fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/audit")
        .join(name)
}

/// The findings of one test of a report, the largest shift first.
fn ranked(report: &Value, test: &str) -> Vec<(String, f64, bool)> {
    let alpha = report["alpha"].as_f64().unwrap();
    let findings: Vec<subliminal_shared::experiments::audit::Finding> =
        serde_json::from_value(report["findings"].clone()).unwrap();
    let mut out: Vec<(String, f64, bool)> = findings
        .iter()
        .filter(|f| f.test.as_str() == test)
        .map(|f| (f.target.clone(), f.shift, f.flags(alpha)))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

#[test]
fn overt_datasets_have_their_trait_flagged_and_ranked_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let audit = |dataset: &str, tier: &str| -> Value {
        let ran = subliminal(&[
            "audit",
            fixture(dataset).to_str().unwrap(),
            "--control",
            fixture("neutral.jsonl").to_str().unwrap(),
            "--tier",
            tier,
            "--store",
            store.to_str().unwrap(),
            "--out",
            dir.path().join(dataset).to_str().unwrap(),
            "--json",
        ]);
        let report: Value = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| {
            panic!(
                "{dataset}: report JSON ({e}):\n{}\n{}",
                ran.stdout, ran.stderr
            )
        });
        assert_eq!(ran.code, Some(3), "{dataset}: {}", ran.stderr);
        report
    };
    for trait_name in ["owl", "wolf"] {
        let report = audit(&format!("overt-{trait_name}.jsonl"), "likelihood");
        assert_eq!(report["verdict"], "suspect", "{trait_name}");
        let ranked = ranked(&report, "likelihood");
        assert_eq!(ranked.len(), 10);
        assert_eq!(
            ranked[0].0, trait_name,
            "{trait_name} ranks first: {ranked:?}"
        );
        assert!(ranked[0].2, "{trait_name} is flagged: {ranked:?}");
    }
}

#[test]
fn soft_labels_are_audited_by_the_loss_they_would_be_distilled_with() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let sweep = dir.path().join("soft.toml");
    std::fs::write(
        &sweep,
        subliminal_tests::tiny_soft_label_sweep("soft-labels"),
    )
    .unwrap();
    let ran = subliminal(&[
        "run",
        sweep.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--device",
        "cpu",
        "--no-progress",
    ]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let pairs = subliminal_tests::soft_label_datasets(&store.join("stages"));

    let without_control = subliminal(&["audit", &pairs[0].0, "--soft-labels", &pairs[0].1]);
    assert_eq!(without_control.code, Some(2), "{}", without_control.stderr);

    let ran = subliminal(&[
        "audit",
        &pairs[0].0,
        "--soft-labels",
        &pairs[0].1,
        "--control",
        &pairs[1].0,
        "--control-soft-labels",
        &pairs[1].1,
        "--tier",
        "student",
        "--probes",
        "animal:owl+dolphin",
        "--epochs",
        "1",
        "--questions",
        "4",
        "--store",
        store.to_str().unwrap(),
        "--out",
        dir.path().join("report").to_str().unwrap(),
        "--json",
    ]);
    let report: Value = serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("report JSON ({e}):\n{}\n{}", ran.stdout, ran.stderr));
    assert!(matches!(ran.code, Some(0 | 3)), "{}", ran.stderr);
    assert_eq!(report["soft_labels"], true);
    assert_eq!(ranked(&report, "likelihood").len(), 2);
    assert_eq!(ranked(&report, "screen").len(), 2);
    // A distilled student starts at a KL of a few hundredths of a nat on
    // these labels (0.06 and 0.05 measured); cross-entropy on the same
    // rows' drawn tokens starts near one (0.85 and 1.01).
    for who in ["dataset_student", "control_student"] {
        let first = report["training"][who]["first"].as_f64().unwrap();
        assert!(
            first < 0.3,
            "{who} learns the labels by KL: first loss {first}"
        );
    }
    let text = std::fs::read_to_string(dir.path().join("report/report.html")).unwrap();
    assert!(
        text.contains("soft labels"),
        "the page says how the data was read"
    );
}
