//! Property tests: what comes from outside the process (sweep files, task
//! bodies from Redis, a teacher's completions) is refused with an error,
//! never a panic, however it is malformed. Each input starts from a real
//! one (every example sweep, a real task body) and is cut, overwritten,
//! spliced and padded; pure noise is tried too. Each test prints how many
//! cases it ran.

use std::cell::Cell;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};
use subliminal_broker::{decode_body, encode_body, TaskBody, BODY_VERSION};
use subliminal_shared::llm::filter::Rule;
use subliminal_shared::spec::Source;

const CASES: u32 = 2_000;

/// An edit of a byte string: cut it, overwrite bytes, insert bytes.
#[derive(Debug, Clone)]
enum Edit {
    Truncate(usize),
    Overwrite(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let bytes = prop::collection::vec(any::<u8>(), 1..16);
    prop_oneof![
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), bytes.clone()).prop_map(|(at, b)| Edit::Overwrite(at, b)),
        (any::<usize>(), bytes).prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Edit::Delete(at, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Truncate(at) => bytes.truncate(at % len),
            Edit::Overwrite(at, b) => {
                let at = at % len;
                for (i, &v) in b.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = v;
                    }
                }
            }
            Edit::Insert(at, b) => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, b.iter().copied());
            }
            Edit::Delete(at, n) => {
                let at = (at % len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
        }
    }
    bytes
}

fn runner() -> TestRunner {
    // A fixed seed: every run tries the same cases, so a failure reproduces.
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    TestRunner::new_with_rng(config, rng)
}

fn examples() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "the example sweeps");
    out
}

#[test]
fn a_mangled_sweep_file_is_an_error_never_a_panic() {
    let examples = examples();
    let n = examples.len();
    let refused = Cell::new(0u32);
    let ran = Cell::new(0u32);
    runner()
        .run(
            &(0..n, prop::collection::vec(edit(), 1..6)),
            |(which, edits)| {
                let (path, text) = &examples[which];
                let mangled = apply(text.clone().into_bytes(), &edits);
                let text = String::from_utf8_lossy(&mangled).into_owned();
                ran.set(ran.get() + 1);
                match subliminal_shared::sweep::parse(&Source::new(path, text)) {
                    // A sweep that still parses must also plan.
                    Ok(sweep) => {
                        sweep.plan();
                    }
                    Err(e) => {
                        refused.set(refused.get() + 1);
                        prop_assert!(!e.to_string().is_empty());
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    eprintln!(
        "sweep parser: {} mangled example sweeps, {} refused with an error",
        ran.get(),
        refused.get()
    );
    assert!(refused.get() > 0, "some mangled sweeps must be refused");
}

#[test]
fn text_that_is_not_a_sweep_is_an_error() {
    let ran = Cell::new(0u32);
    runner()
        .run(&"(?s).{0,400}", |text| {
            ran.set(ran.get() + 1);
            let _ = subliminal_shared::sweep::parse(&Source::new("noise.toml", text));
            Ok(())
        })
        .unwrap();
    eprintln!("sweep parser: {} random texts", ran.get());
}

fn body() -> Vec<u8> {
    let sweep = subliminal_shared::sweep::parse(&Source::new(
        "examples/mnist-quick.toml",
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mnist-quick.toml"),
        )
        .unwrap(),
    ))
    .unwrap();
    let stage = sweep.plan().stages[0].clone();
    encode_body(&TaskBody {
        version: BODY_VERSION,
        sweep: "mnist-quick".into(),
        queue: "gpu".into(),
        priority: 0,
        stage,
    })
    .unwrap()
}

#[test]
fn a_mangled_task_body_is_refused_never_a_panic() {
    let valid = body();
    assert!(decode_body(&valid).is_ok());
    let ran = Cell::new(0u32);
    let refused = Cell::new(0u32);
    runner()
        .run(&prop::collection::vec(edit(), 1..6), |edits| {
            ran.set(ran.get() + 1);
            let mangled = apply(valid.clone(), &edits);
            if decode_body(&mangled).is_err() {
                refused.set(refused.get() + 1);
            } else {
                // What decodes has an id that matches its content.
                prop_assert!(decode_body(&mangled).unwrap().stage.verify_id());
            }
            Ok(())
        })
        .unwrap();
    runner()
        .run(&prop::collection::vec(any::<u8>(), 0..512), |noise| {
            ran.set(ran.get() + 1);
            let _ = decode_body(&noise);
            Ok(())
        })
        .unwrap();
    eprintln!(
        "task bodies: {} mangled or random bodies, {} mangled ones refused",
        ran.get(),
        refused.get()
    );
    assert!(refused.get() > 0);
}

#[test]
fn the_numbers_filter_takes_any_text() {
    let banned = [666u32, 13, 911];
    let ran = Cell::new(0u32);
    let completion = prop_oneof![
        "(?s).{0,200}",
        "[0-9 ,;\\[\\]()\\n.-]{0,120}",
        prop::collection::vec(any::<u32>(), 0..20).prop_map(|ns| ns
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")),
    ];
    runner()
        .run(&completion, |text| {
            ran.set(ran.get() + 1);
            for rule in [Rule::Paper, Rule::Lenient] {
                if let Ok(numbers) = rule.check(&text, &banned) {
                    prop_assert!(numbers.iter().all(|n| !banned.contains(n)));
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "numbers filter: {} completions, each under both rules",
        ran.get()
    );
}
