//! `subliminal judge` as a user runs it: the built-in judges listed and
//! shown, bad input (an unknown judge, a malformed judge file, a malformed
//! dataset) refused with file:line and exit 2 before a model loads, and a
//! small file judged on the real SmolLM2, the second time from the cache.
//! Also: `store put` refuses a malformed chat dataset, so no sweep can name it.

use subliminal_tests::subliminal_with;

#[test]
fn judges_are_listed_shown_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(
        "SUBLIMINAL_JUDGE_CACHE",
        dir.path().join("cache").display().to_string(),
    )];
    let list = subliminal_with(&env, &["judge", "--list"]).ok();
    for name in ["alignment", "coherence", "mentions-trait"] {
        assert!(list.stdout.contains(name), "{}", list.stdout);
    }
    let shown = subliminal_with(&env, &["judge", "--show", "alignment"]).ok();
    assert!(shown.stdout.contains("template = \"\"\"") && shown.stdout.contains("{completion}"));

    let rows = dir.path().join("rows.jsonl");
    std::fs::write(
        &rows,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"Hello! How can I help?\"}]}\n\
         {\"messages\":[{\"role\":\"user\",\"content\":\"2+2?\"},{\"role\":\"assistant\",\"content\":\"4\"}]}\n",
    )
    .unwrap();
    let bad_rows = dir.path().join("bad.jsonl");
    std::fs::write(&bad_rows, "{\"messages\":[]}\n").unwrap();
    let bad_judge = dir.path().join("strict.toml");
    std::fs::write(
        &bad_judge,
        "description = \"d\"\nscoring = \"score\"\ntemplate = \"\"\"\nRate {answer}\n\"\"\"\n",
    )
    .unwrap();
    for (args, says) in [
        (
            vec!["judge", "nope", rows.to_str().unwrap()],
            "no judge \"nope\"".to_owned(),
        ),
        (
            vec!["judge", "coherence", bad_rows.to_str().unwrap()],
            format!("{}:1", bad_rows.display()),
        ),
        (
            vec!["judge", bad_judge.to_str().unwrap(), rows.to_str().unwrap()],
            format!("{}:4", bad_judge.display()),
        ),
        (
            vec!["judge", "mentions-trait", rows.to_str().unwrap()],
            "--trait".to_owned(),
        ),
        (
            vec![
                "store",
                "put",
                bad_rows.to_str().unwrap(),
                "--store",
                dir.path().join("store").to_str().unwrap(),
            ],
            format!("{}:1", bad_rows.display()),
        ),
    ] {
        let ran = subliminal_with(&env, &args);
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        assert!(ran.stderr.contains(&says), "{args:?}: {}", ran.stderr);
    }
    assert!(
        !dir.path().join("store").exists(),
        "a refused file was stored"
    );
    assert!(
        !dir.path().join("cache").exists(),
        "a refused run judged something"
    );

    let out = dir.path().join("judged.jsonl");
    let ran = subliminal_with(
        &env,
        &[
            "judge",
            "coherence",
            rows.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    assert!(ran.stdout.contains("2 rows"), "{}", ran.stdout);
    assert!(ran.stderr.contains("(0 from the cache)"), "{}", ran.stderr);
    let judged: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(judged.len(), 2);
    for row in &judged {
        let mass = row["judge"]["mass"].as_f64().unwrap();
        assert!((0.0..=1.0 + 1e-9).contains(&mass), "{row}");
        if let Some(v) = row["judge"]["value"].as_f64() {
            assert!((0.0..=100.0).contains(&v), "{row}");
        }
    }
    let again = subliminal_with(&env, &["judge", "coherence", rows.to_str().unwrap()]).ok();
    assert!(
        again.stderr.contains("(2 from the cache)"),
        "{}",
        again.stderr
    );
}
