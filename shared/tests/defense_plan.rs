//! How the defense axis expands, for numbers and MNIST: a defense is a stage
//! of its own between the data and the student, shared by every trial that
//! reads the same data the same way, applied alike to the trait and control
//! rows; `none` leaves the paper's stages as they were; bad names are
//! refused at their place in the file with the list of known ones.

use std::collections::BTreeSet;

use subliminal_shared::experiments::mnist;
use subliminal_shared::experiments::numbers;
use subliminal_shared::llm::{DefendParams, Defense, Stage, DEFAULT_MODEL};
use subliminal_shared::plan::Plan;
use subliminal_shared::spec::{Source, SpecError};
use subliminal_shared::stage::{StageId, StageKind, StageSpec};
use subliminal_shared::sweep;

const NUMBERS: &str = r#"
name = "n"
kind = "numbers"

[grid]
seeds = [0, 1]
traits = ["owl", "cat"]
"#;

const MNIST: &str = r#"
name = "m"
kind = "mnist"

[grid]
seeds = [0, 1]
init_pairs = ["same", "cross"]
"#;

fn plan(base: &str, extra: &str) -> Plan {
    sweep::parse(&Source::new("d.toml", format!("{base}{extra}")))
        .unwrap_or_else(|e| panic!("{e}"))
        .plan()
}

fn refusal(base: &str, extra: &str) -> String {
    match sweep::parse(&Source::new("d.toml", format!("{base}{extra}"))) {
        Ok(_) => panic!("accepted: {extra}"),
        Err(e @ SpecError::Invalid { .. }) => e.to_string(),
        Err(other) => panic!("unexpected error {other}"),
    }
}

fn of_kind(plan: &Plan, kind: StageKind) -> Vec<&StageSpec> {
    plan.stages.iter().filter(|s| s.kind == kind).collect()
}

fn ids(plan: &Plan) -> BTreeSet<StageId> {
    plan.stages.iter().map(|s| s.id).collect()
}

#[test]
fn a_numbers_defense_is_one_stage_per_dataset_shared_by_every_student() {
    let p = plan(
        NUMBERS,
        "defense = [\"none\", \"shuffle\", \"mask-divergence\"]\n[student]\nlora_rank = [8, 16]\n",
    );
    let defends = of_kind(&p, Stage::Defend.kind());
    // Per seed: owl's rows, cat's rows and the control's rows, each once per
    // defense, however many student settings read them.
    assert_eq!(defends.len(), 2 * 3 * 2, "{defends:#?}");
    let students = of_kind(&p, Stage::Student.kind());
    // Per seed, defense and rank: owl, cat, and one control student (shared by both traits).
    assert_eq!(students.len(), 2 * 3 * 2 * 3);
    for s in &students {
        let input = p.stages.iter().find(|x| x.id == s.inputs[0]).unwrap();
        assert!(
            input.kind == Stage::Filter.kind() || input.kind == Stage::Defend.kind(),
            "a student reads filtered or defended rows"
        );
    }
    for d in &defends {
        let params: DefendParams = d.params().unwrap();
        let filter = p.stages.iter().find(|x| x.id == d.inputs[0]).unwrap();
        assert_eq!(filter.kind, Stage::Filter.kind());
        match params.defense {
            Defense::MaskDivergence => {
                let teacher = p.stages.iter().find(|x| x.id == d.inputs[1]).unwrap();
                assert_eq!(teacher.kind, Stage::Teacher.kind());
                assert_eq!(params.model.as_deref(), Some(DEFAULT_MODEL));
            }
            Defense::Shuffle => assert_eq!(d.inputs.len(), 1),
            other => panic!("unexpected defense {other}"),
        }
    }
    // `none` is the sweep without the axis: the same stages, ids and all.
    let without = plan(NUMBERS, "[student]\nlora_rank = [8, 16]\n");
    let with_none = plan(
        NUMBERS,
        "defense = \"none\"\n[student]\nlora_rank = [8, 16]\n",
    );
    assert_eq!(ids(&without), ids(&with_none));
    assert!(
        ids(&without).is_subset(&ids(&p)),
        "the undefended arm reuses the plain sweep's work"
    );
    // Rows are labelled by the defense, but base and teacher are not, nor
    // the diagnosis of the data before any defense.
    for m in &p.measurements {
        let labelled = m.settings.contains_key("defense");
        match m.arm.as_str() {
            "base" | "teacher" => assert!(!labelled, "{m:?}"),
            a if a.starts_with("data:") => assert!(!labelled, "{m:?}"),
            _ => assert!(labelled, "{m:?}"),
        }
    }
    // The defense's cost is a row of its own, never tested against a control.
    let costs: BTreeSet<&str> = p
        .measurements
        .iter()
        .filter(|m| m.arm.starts_with("defense:"))
        .map(|m| m.arm.as_str())
        .collect();
    // No label defense here, so no label figures.
    assert_eq!(costs, numbers::DEFENSE_ARMS[..4].iter().copied().collect());
}

#[test]
fn mix_brings_in_the_other_teachers_rows() {
    let p = plan(
        NUMBERS,
        "defense = \"mix\"\n[defense]\nmix_traits = [\"eagle\", \"owl\"]\n",
    );
    for d in of_kind(&p, Stage::Defend.kind()) {
        let inputs: Vec<&StageSpec> = d
            .inputs
            .iter()
            .map(|id| p.stages.iter().find(|x| x.id == *id).unwrap())
            .collect();
        assert!(inputs.iter().all(|s| s.kind == Stage::Filter.kind()));
        // Its own rows plus each mixed-in trait but its own.
        assert!((2..=3).contains(&inputs.len()), "{inputs:#?}");
    }
    let teachers = of_kind(&p, Stage::Teacher.kind());
    // owl, cat, eagle (only mixed in) and the control.
    assert_eq!(teachers.len(), 4);
}

#[test]
fn a_label_defense_reads_the_labels_generate_recorded_and_keeps_its_cut() {
    let p = plan(
        NUMBERS,
        "defense = [\"none\", \"label-top-p\", \"label-threshold\"]\n\
         [student]\ntarget = \"logits\"\n[defense]\nlabel_top_p = 0.9\n",
    );
    let defends = of_kind(&p, Stage::Defend.kind());
    // Per seed and label defense: owl's, cat's and the control's rows.
    assert_eq!(defends.len(), 2 * 2 * 3);
    for d in &defends {
        let params: DefendParams = d.params().unwrap();
        let kinds: Vec<StageKind> = d
            .inputs
            .iter()
            .map(|id| p.stages.iter().find(|x| x.id == *id).unwrap().kind.clone())
            .collect();
        assert_eq!(kinds, vec![Stage::Filter.kind(), Stage::Generate.kind()]);
        let want = match params.defense {
            Defense::LabelTopP => 0.9,
            Defense::LabelThreshold => 0.05,
            other => panic!("{other}"),
        };
        assert_eq!(params.cut, Some(want));
    }
    let arms: BTreeSet<&str> = p.measurements.iter().map(|m| m.arm.as_str()).collect();
    assert!(
        arms.contains("defense: label mass cut, control"),
        "{arms:?}"
    );
    // The label defenses leave the undefended stages as they were.
    let plain = plan(NUMBERS, "[student]\ntarget = \"logits\"\n");
    assert!(ids(&plain).is_subset(&ids(&p)));
}

#[test]
fn paraphrase_runs_the_students_model_and_suits_token_and_label_students() {
    for target in ["tokens", "logits"] {
        let p = plan(
            NUMBERS,
            &format!("defense = [\"none\", \"paraphrase\"]\n[student]\ntarget = \"{target}\"\n"),
        );
        let defends = of_kind(&p, Stage::Defend.kind());
        // Per seed: owl's, cat's and the control's rows.
        assert_eq!(defends.len(), 2 * 3);
        for d in &defends {
            let params: DefendParams = d.params().unwrap();
            assert_eq!(params.defense, Defense::Paraphrase);
            assert_eq!(params.model.as_deref(), Some(DEFAULT_MODEL));
            let kinds: Vec<StageKind> = d
                .inputs
                .iter()
                .map(|id| p.stages.iter().find(|x| x.id == *id).unwrap().kind.clone())
                .collect();
            assert_eq!(kinds, vec![Stage::Filter.kind()]);
        }
        let arms: BTreeSet<&str> = p.measurements.iter().map(|m| m.arm.as_str()).collect();
        assert!(
            arms.contains("defense: prompts rewritten, control"),
            "{arms:?}"
        );
        let plain = plan(NUMBERS, &format!("[student]\ntarget = \"{target}\"\n"));
        assert!(ids(&plain).is_subset(&ids(&p)));
    }
}

#[test]
fn bad_defenses_are_refused_where_they_stand() {
    let err = refusal(NUMBERS, "defense = [\"none\", \"blur\"]\n");
    assert!(err.starts_with("d.toml:8:20: `grid.defense`"), "{err}");
    assert!(err.contains("unknown defense \"blur\""), "{err}");
    assert!(err.contains(&Defense::names()), "{err}");
    let err = refusal(
        NUMBERS,
        "defense = \"shuffle\"\n[student]\ntarget = \"logits\"\n",
    );
    assert!(err.contains("label-threshold or paraphrase"), "{err}");
    let err = refusal(NUMBERS, "defense = [\"shuffle\", \"shuffle\"]\n");
    assert!(err.contains("listed twice"), "{err}");
    let err = refusal(NUMBERS, "defense = \"mix\"\n");
    assert!(err.contains("mix_traits"), "{err}");
    let err = refusal(
        NUMBERS,
        "defense = \"none\"\n[defense]\nmix_traits = [\"eagle\"]\n",
    );
    assert!(err.contains("only the mix defense reads it"), "{err}");
    let err = refusal(
        NUMBERS,
        "defense = \"mask-divergence\"\nmodel_pairs = [[\"smollm2-135m\", \"other.gguf\"]]\n",
    );
    assert!(err.contains("mask-divergence masks tokens"), "{err}");
    let err = refusal(NUMBERS, "defense = \"label-top-p\"\n");
    assert!(
        err.contains("`student.target`") && err.contains("\"tokens\" student"),
        "{err}"
    );
    let err = refusal(
        NUMBERS,
        "defense = \"label-top-p\"\n[student]\ntarget = \"logits\"\n[defense]\nlabel_top_p = 1.5\n",
    );
    assert!(
        err.contains("`defense.label_top_p`") && err.contains("at most 1"),
        "{err}"
    );
    let err = refusal(
        NUMBERS,
        "defense = \"label-top-p\"\n[student]\ntarget = \"logits\"\n[defense]\nlabel_threshold = 0.1\n",
    );
    assert!(
        err.contains("only the label-threshold defense reads it"),
        "{err}"
    );

    let err = refusal(MNIST, "defense = [\"none\", \"blur:2\"]\n");
    assert!(err.starts_with("d.toml:8:20: `grid.defense`"), "{err}");
    assert!(
        err.contains("round:K") && err.contains("temperature:T"),
        "{err}"
    );
    let err = refusal(MNIST, "defense = \"round:9\"\n");
    assert!(err.contains("from 0 to 6"), "{err}");
}

#[test]
fn an_mnist_defense_sits_between_generate_and_its_students() {
    let p = plan(
        MNIST,
        "defense = [\"none\", \"round:1\", \"temperature:4\"]\n",
    );
    let defends = of_kind(&p, mnist::Stage::Defend.kind());
    // One per teacher's dataset (2 seeds) and defense, shared by same- and cross-init students.
    assert_eq!(defends.len(), 2 * 2);
    for d in &defends {
        let inputs: Vec<StageKind> = d
            .inputs
            .iter()
            .map(|id| p.stages.iter().find(|x| x.id == *id).unwrap().kind.clone())
            .collect();
        assert_eq!(
            inputs,
            [mnist::Stage::Generate.kind(), mnist::Stage::Teacher.kind()]
        );
    }
    let without = plan(MNIST, "");
    assert!(ids(&without).is_subset(&ids(&p)), "none is the paper's DAG");
    let costs = p
        .measurements
        .iter()
        .filter(|m| m.arm.starts_with("defense:"))
        .count();
    assert_eq!(costs, 2 * 2 * mnist::DEFENSE_COSTS.len());
    // Same-init students have a control: the cross-init student of the same defense.
    let kind = subliminal_shared::experiments::get("mnist").unwrap();
    assert_eq!(
        kind.control_of("student same-init aux"),
        Some("student cross-init aux")
    );
    assert_eq!(kind.control_of("defense: teacher accuracy"), None);
}
