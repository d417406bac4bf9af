//! Sweep files: what is accepted, and every way one is refused, with the
//! line and key each refusal must name.

use subliminal_shared::experiments::mnist::{InitPair, MnistSweep, Stage, Target};
use subliminal_shared::spec::{Source, SpecError};
use subliminal_shared::sweep::{self, Sweep};

const GOOD: &str = r#"
name = "t"
kind = "mnist"

[grid]
seeds = [0, 1]
init_pairs = ["same", "cross", [4, 5]]
aux_logits = [3, 5]
targets = ["aux", "all"]

[teacher]
epochs = 2
lr = 3e-4

[student]
lr = [1e-3, 3e-4]
noise_samples = 1000
"#;

fn parse(text: &str) -> Result<Sweep, SpecError> {
    sweep::parse(&Source::new("sweep.toml", text))
}

/// Parses `text`, expects a refusal, and returns (line, key, message).
fn refuse(text: &str) -> (usize, Option<String>, String) {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(SpecError::Invalid {
            line,
            key,
            message,
            path,
            ..
        }) => {
            assert_eq!(path.to_str(), Some("sweep.toml"));
            (line, key, message)
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

fn with(replace: &str, by: &str) -> String {
    assert!(GOOD.contains(replace), "{replace}");
    GOOD.replacen(replace, by, 1)
}

#[test]
fn a_good_sweep_expands_to_the_full_grid() {
    let sweep = parse(GOOD).unwrap();
    assert_eq!(sweep.experiment().name(), "mnist");
    let s = sweep.downcast_ref::<MnistSweep>().expect("an mnist sweep");
    assert_eq!(
        s.init_pairs.values(),
        &[
            InitPair::Same,
            InitPair::Cross,
            InitPair::Explicit {
                teacher: 4,
                student: 5
            }
        ]
    );
    assert_eq!(s.targets.values(), &[Target::Aux, Target::All]);
    assert_eq!(s.teacher.epochs.values(), &[2]);
    assert_eq!(
        s.teacher.batch_size.values(),
        &[1024],
        "defaults fill what the file leaves out"
    );
    let plan = sweep.plan();
    // seeds 2 × pairs 3 × m 2 × targets 2 × student lr 2
    assert_eq!(plan.trials, 48);
    let counts = plan.count_by_kind();
    // Teachers: per (init, seed, m): same/cross share one; [4,5] has its own.
    assert_eq!(counts[&Stage::Teacher.kind()], 2 * 2 * 2);
    assert_eq!(counts[&Stage::Student.kind()], 48);
    // Every input of a stage comes before it.
    let mut seen = std::collections::HashSet::new();
    for stage in &plan.stages {
        assert!(stage.inputs.iter().all(|i| seen.contains(i)));
        seen.insert(stage.id);
    }
    assert_eq!(seen.len(), plan.stages.len(), "each stage is listed once");
}

#[test]
fn the_examples_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut kinds = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let sweep = sweep::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(sweep.plan().trials > 0, "{}", path.display());
            kinds.insert(sweep.experiment().name());
        }
    }
    let all: std::collections::BTreeSet<_> = subliminal_shared::experiments::KINDS
        .iter()
        .map(|k| k.name())
        .collect();
    assert_eq!(kinds, all, "every experiment kind has an example");
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let (line, key, message) = refuse(&with("epochs = 2", "epochs = 2\nepohcs = 3"));
    assert_eq!(line, 13);
    assert_eq!(key.as_deref(), Some("epohcs"));
    assert!(message.contains("unknown field `epohcs`"), "{message}");
    assert!(message.contains("expected one of"), "{message}");
    let (line, key, _) = refuse(&with("[student]", "[stduent]"));
    assert_eq!((line, key.as_deref()), (15, Some("stduent")));
}

#[test]
fn wrong_types_are_refused() {
    let (line, key, message) = refuse(&with("epochs = 2", "epochs = \"two\""));
    assert_eq!((line, key.as_deref()), (12, Some("epochs")));
    assert!(message.contains("invalid type"), "{message}");
    let (_, key, message) = refuse(&with("seeds = [0, 1]", "seeds = [0, -1]"));
    assert_eq!(key.as_deref(), Some("seeds"));
    assert!(message.contains("-1"), "{message}");
    let (_, _, message) = refuse(&with(
        "targets = [\"aux\", \"all\"]",
        "targets = [\"aux\", \"some\"]",
    ));
    assert!(message.contains("unknown variant `some`"), "{message}");
}

#[test]
fn impossible_values_are_refused_with_what_was_expected() {
    let cases = [
        ("lr = 3e-4", "lr = -1.0", 13, "teacher.lr", "greater than 0"),
        ("lr = 3e-4", "lr = 0", 13, "teacher.lr", "greater than 0"),
        (
            "epochs = 2",
            "epochs = 0",
            12,
            "teacher.epochs",
            "from 1 to 1000",
        ),
        (
            "noise_samples = 1000",
            "noise_samples = 0",
            17,
            "student.noise_samples",
            "from 1 to",
        ),
        (
            "lr = [1e-3, 3e-4]",
            "lr = [1e-3, 1e-3]",
            16,
            "student.lr",
            "listed twice",
        ),
        (
            "seeds = [0, 1]",
            "seeds = []",
            6,
            "grid.seeds",
            "empty list",
        ),
        (
            "init_pairs = [\"same\", \"cross\", [4, 5]]",
            "init_pairs = [\"same\", \"other\"]",
            7,
            "init_pairs",
            "\"same\", \"cross\"",
        ),
        (
            "init_pairs = [\"same\", \"cross\", [4, 5]]",
            "init_pairs = [[1, 2, 3]]",
            7,
            "init_pairs",
            "invalid length",
        ),
        (
            "aux_logits = [3, 5]",
            "aux_logits = [0, 5]",
            8,
            "grid.aux_logits",
            "nothing to distil",
        ),
        (
            "aux_logits = [3, 5]",
            "aux_logits = [3, 5]\nhidden = 0",
            9,
            "grid.hidden",
            "width from 1 to 8192",
        ),
        (
            "aux_logits = [3, 5]",
            "aux_logits = [3, 5]\nstudent_init_noise = [0.0, -0.1]",
            9,
            "grid.student_init_noise",
            "noise scale",
        ),
        (
            "name = \"t\"",
            "name = \"a b\"",
            2,
            "name",
            "letters, digits",
        ),
    ];
    for (from, to, want_line, want_key, want_message) in cases {
        let (line, key, message) = refuse(&with(from, to));
        assert_eq!(line, want_line, "{to}: {message}");
        assert_eq!(key.as_deref(), Some(want_key), "{to}");
        assert!(message.contains(want_message), "{to}: {message}");
    }
}

#[test]
fn missing_or_unknown_kinds_and_tables_are_refused() {
    let (_, key, message) = refuse(&with("kind = \"mnist\"", "kind = \"mnits\""));
    assert_eq!(key.as_deref(), Some("kind"));
    assert!(message.contains("expected one of mnist"), "{message}");
    let (line, _, message) = refuse(&with("kind = \"mnist\"", ""));
    assert_eq!(line, 1);
    assert!(message.contains("missing key `kind`"), "{message}");
    let no_grid = "name = \"t\"\nkind = \"mnist\"\n";
    let (_, _, message) = refuse(no_grid);
    assert!(message.contains("missing field `grid`"), "{message}");
}

#[test]
fn syntax_errors_point_at_their_line() {
    let (line, _, message) = refuse(&with("epochs = 2", "epochs = = 2"));
    assert_eq!(line, 12);
    assert!(!message.is_empty());
}

#[test]
fn errors_read_as_file_line_column_key_message() {
    let err = parse(&with("lr = 3e-4", "lr = -1.0"))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "sweep.toml:13:6: `teacher.lr`: expected a learning rate greater than 0 and at most 10, found -1");
}

#[test]
fn an_unreadable_file_says_which() {
    let err = sweep::load(std::path::Path::new("/nonexistent/s.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/s.toml"), "{err}");
}

#[test]
fn stage_ids_depend_on_exactly_the_work() {
    let plan = |text: &str| parse(text).unwrap().plan();
    let a = plan(GOOD);
    let b = plan(GOOD);
    let ids = |p: &subliminal_shared::plan::Plan| p.stages.iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    // A student setting changes students and their evaluations, never teachers.
    let c = plan(&with("noise_samples = 1000", "noise_samples = 1001"));
    let teachers = |p: &subliminal_shared::plan::Plan, k| {
        p.stages
            .iter()
            .filter(|s| s.kind == k)
            .map(|s| s.id)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        teachers(&a, Stage::Teacher.kind()),
        teachers(&c, Stage::Teacher.kind())
    );
    assert!(teachers(&a, Stage::Generate.kind()).is_disjoint(&teachers(&c, Stage::Generate.kind())));
    assert!(teachers(&a, Stage::Student.kind()).is_disjoint(&teachers(&c, Stage::Student.kind())));
    // A teacher setting changes everything downstream of teachers.
    let d = plan(&with("epochs = 2", "epochs = 3"));
    assert!(teachers(&a, Stage::Teacher.kind()).is_disjoint(&teachers(&d, Stage::Teacher.kind())));
    assert!(teachers(&a, Stage::Student.kind()).is_disjoint(&teachers(&d, Stage::Student.kind())));
    // The sweep's name is not part of any stage: renamed sweeps share work.
    let e = plan(&with("name = \"t\"", "name = \"other\""));
    assert_eq!(ids(&a), ids(&e));
}

#[test]
fn width_and_init_noise_are_axes_that_leave_the_papers_stages_alone() {
    let plan = |text: &str| parse(text).unwrap().plan();
    let ids = |p: &subliminal_shared::plan::Plan, k| {
        p.stages
            .iter()
            .filter(|s| s.kind == k)
            .map(|s| s.id)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let base = plan(GOOD);
    // The defaults, written out, are the same work.
    let explicit = plan(&with(
        "aux_logits = [3, 5]",
        "aux_logits = [3, 5]\nhidden = 256\nstudent_init_noise = 0.0",
    ));
    assert_eq!(
        ids(&base, Stage::Student.kind()),
        ids(&explicit, Stage::Student.kind())
    );
    // ε changes students only; the width changes everything.
    let noisy = plan(&with(
        "aux_logits = [3, 5]",
        "aux_logits = [3, 5]\nstudent_init_noise = [0.0, 0.1]",
    ));
    assert_eq!(noisy.trials, 2 * base.trials);
    assert_eq!(
        ids(&base, Stage::Teacher.kind()),
        ids(&noisy, Stage::Teacher.kind())
    );
    assert!(ids(&base, Stage::Student.kind()).is_subset(&ids(&noisy, Stage::Student.kind())));
    let row = noisy
        .measurements
        .iter()
        .find(|m| m.arm == "student same-init aux")
        .unwrap();
    assert!(
        row.settings.contains_key("student_init_noise"),
        "{:?}",
        row.settings
    );
    let wide = plan(&with(
        "aux_logits = [3, 5]",
        "aux_logits = [3, 5]\nhidden = 64",
    ));
    assert!(ids(&base, Stage::Teacher.kind()).is_disjoint(&ids(&wide, Stage::Teacher.kind())));
    // Each student has its theorem stage, reading the teacher and the data; off when asked.
    let theorems = ids(&base, Stage::Theorem.kind());
    assert_eq!(theorems.len(), ids(&base, Stage::Student.kind()).len());
    let off = plan(&with(
        "aux_logits = [3, 5]",
        "aux_logits = [3, 5]\ntheorem = false",
    ));
    assert!(ids(&off, Stage::Theorem.kind()).is_empty());
    assert!(off
        .measurements
        .iter()
        .all(|m| !m.arm.starts_with("theorem")));
}
