//! How a numbers sweep expands: fine-tuned teachers, the decoding, dataset
//! size and student axes, stored files named by key, and the refusals.

use std::collections::BTreeSet;

use subliminal_shared::experiments::numbers::NumbersStage;
use subliminal_shared::llm::{
    FilterParams, GenerateParams, Method, Stage, Target, TeacherParams, TrainParams,
};
use subliminal_shared::plan::Plan;
use subliminal_shared::spec::{Source, SpecError};
use subliminal_shared::stage::StageKind;
use subliminal_shared::sweep;

const BASE: &str = r#"
name = "n"
kind = "numbers"

[grid]
seeds = [0, 1]
traits = ["owl"]
"#;

fn plan(extra: &str) -> Plan {
    let text = format!("{BASE}{extra}");
    sweep::parse(&Source::new("n.toml", text))
        .unwrap_or_else(|e| panic!("{e}"))
        .plan()
}

fn refusal(extra: &str) -> String {
    match sweep::parse(&Source::new("n.toml", format!("{BASE}{extra}"))) {
        Ok(_) => panic!("accepted: {extra}"),
        Err(e @ SpecError::Invalid { .. }) => e.to_string(),
        Err(other) => panic!("unexpected error {other}"),
    }
}

fn of_kind(plan: &Plan, kind: StageKind) -> Vec<&subliminal_shared::stage::StageSpec> {
    plan.stages.iter().filter(|s| s.kind == kind).collect()
}

#[test]
fn a_fine_tuned_teacher_learns_from_trait_data_once_for_every_seed() {
    let p = plan("[teacher]\nmethod = \"finetune\"\nquestions = 100\n");
    let data = of_kind(&p, Stage::TraitData.kind());
    assert_eq!(data.len(), 1, "one teacher serves both seeds");
    let teachers = of_kind(&p, Stage::Teacher.kind());
    assert_eq!(
        teachers.len(),
        2,
        "the fine-tuned teacher and the base model"
    );
    let tuned: Vec<TeacherParams> = teachers.iter().map(|s| s.params().unwrap()).collect();
    let (fine, control): (Vec<_>, Vec<_>) = tuned.iter().partition(|t| t.finetune.is_some());
    assert_eq!((fine.len(), control.len()), (1, 1));
    assert!(
        fine[0].system_prompt.is_none(),
        "the trait is in the weights"
    );
    assert!(matches!(
        fine[0].finetune.as_ref().unwrap().method,
        Method::Lora { rank: 16, .. }
    ));
    let fine_stage = teachers
        .iter()
        .find(|s| s.params::<TeacherParams>().unwrap().finetune.is_some());
    assert_eq!(fine_stage.unwrap().inputs, vec![data[0].id]);
    // The teacher arm evaluates the fine-tuned teacher.
    assert!(p.measurements.iter().any(|m| m.arm == "teacher"));
}

#[test]
fn greedy_and_sampled_numbers_are_separate_stages_and_labelled() {
    let p = plan("[generate]\ntemperature = [0, 1.0]\n[filter]\nkeep = [50, 100]\n");
    let generated = of_kind(&p, Stage::Generate.kind());
    // 2 seeds × 2 temperatures × (trait teacher, control).
    assert_eq!(generated.len(), 8);
    let temps: BTreeSet<String> = generated
        .iter()
        .map(|s| {
            s.params::<GenerateParams>()
                .unwrap()
                .temperature
                .to_string()
        })
        .collect();
    assert_eq!(temps, BTreeSet::from(["0".to_owned(), "1".to_owned()]));
    let keeps: BTreeSet<u64> = of_kind(&p, Stage::Filter.kind())
        .iter()
        .map(|s| s.params::<FilterParams>().unwrap().keep)
        .collect();
    assert_eq!(keeps, BTreeSet::from([50, 100]));
    let labelled = p.measurements.iter().all(|m| {
        m.settings.contains_key("generate.temperature") && m.settings.contains_key("filter.keep")
    });
    assert!(labelled);
}

#[test]
fn a_sampling_threshold_enters_every_generate_stage_and_its_absence_keeps_the_ids() {
    let p = plan("[generate]\nthreshold = 0.05\n");
    let generated = of_kind(&p, Stage::Generate.kind());
    assert_eq!(generated.len(), 4);
    for g in &generated {
        assert_eq!(g.params::<GenerateParams>().unwrap().threshold, Some(0.05));
    }
    let plain = plan("");
    let ids = |p: &Plan| -> BTreeSet<_> {
        of_kind(p, Stage::Generate.kind())
            .iter()
            .map(|s| s.id)
            .collect()
    };
    assert!(ids(&p).is_disjoint(&ids(&plain)));
    let json = serde_json::to_string(&of_kind(&plain, Stage::Generate.kind())[0].params).unwrap();
    assert!(!json.contains("threshold"), "{json}");
    for bad in ["0", "1", "-0.1"] {
        let err = refusal(&format!("[generate]\nthreshold = {bad}\n"));
        assert!(
            err.contains("`generate.threshold`") && err.contains("less than 1"),
            "{err}"
        );
    }
}

#[test]
fn full_fine_tuning_crosses_no_rank_and_takes_its_own_learning_rate() {
    let p = plan(
        "[student]\nmethod = [\"lora\", \"full\"]\nlora_rank = [8, 64]\nrslora = true\nlr = 5e-4\nfull_lr = 2e-5\noptimizer = [\"adamw\", \"sgd\"]\nlayers = [\"all\", 0]\n",
    );
    let students: Vec<TrainParams> = of_kind(&p, Stage::Student.kind())
        .iter()
        .map(|s| s.params().unwrap())
        .collect();
    // 2 seeds × (lora 8, lora 64, full) × 2 optimisers × 2 layer sets × (student, control).
    assert_eq!(students.len(), 2 * 3 * 2 * 2 * 2);
    for s in &students {
        match &s.method {
            Method::Full => assert_eq!(s.lr, 2e-5),
            Method::Lora { rslora, .. } => {
                assert!(rslora);
                assert_eq!(s.lr, 5e-4);
            }
        }
    }
    let full_rows: Vec<_> = p
        .measurements
        .iter()
        .filter(|m| m.settings.get("student.method").map(String::as_str) == Some("full"))
        .collect();
    assert!(!full_rows.is_empty());
    assert!(full_rows
        .iter()
        .all(|m| !m.settings.contains_key("student.lora_rank")));
    let layers: BTreeSet<&str> = p
        .measurements
        .iter()
        .filter_map(|m| m.settings.get("student.layers").map(String::as_str))
        .collect();
    assert_eq!(layers, BTreeSet::from(["0", "all"]));
    // One base evaluation serves every student setting, labelled by none.
    let base: Vec<_> = p.measurements.iter().filter(|m| m.arm == "base").collect();
    assert_eq!(base.len(), 2, "one per seed");
    assert!(base
        .iter()
        .all(|m| m.settings.keys().all(|k| !k.starts_with("student."))));
}

#[test]
fn the_numbers_prefixed_questions_are_arms_with_their_own_control() {
    let p = plan("[evaluate]\nnumbers_prefixed = true\n");
    // Every evaluation is labelled by its question form; the data's
    // diagnosis, made before any question, is not.
    let questions: BTreeSet<&str> = p
        .measurements
        .iter()
        .filter(|m| !m.arm.starts_with("data:"))
        .map(|m| m.settings["evaluate.question"].as_str())
        .collect();
    assert_eq!(questions, BTreeSet::from(["numbers-prefixed", "plain"]));
    let controls = p
        .measurements
        .iter()
        .filter(|m| m.arm == "control student")
        .count();
    assert_eq!(controls, 2 * 2, "a control per seed and question form");
}

#[test]
fn a_store_key_is_an_external_input_of_every_stage_that_runs_the_model() {
    let key = format!("stage:{}", "ab".repeat(32));
    let p = plan(&format!(
        "[teacher]\nmethod = \"finetune\"\ndataset = \"stage:{}\"\n",
        "cd".repeat(32)
    ));
    assert_eq!(p.external.len(), 1, "the dataset");
    assert!(of_kind(&p, Stage::TraitData.kind()).is_empty());

    let text = BASE.replace(
        "traits = [\"owl\"]",
        &format!("traits = [\"owl\"]\nmodel_pairs = [[\"{key}\", \"{key}\"]]"),
    );
    let p = sweep::parse(&Source::new("n.toml", text)).unwrap().plan();
    let id: subliminal_shared::stage::StageId = key["stage:".len()..].parse().unwrap();
    assert_eq!(p.external, vec![id]);
    for stage in &p.stages {
        let runs_a_model =
            ![Stage::Filter.kind(), NumbersStage::Diagnose.kind()].contains(&stage.kind);
        assert_eq!(stage.inputs.contains(&id), runs_a_model, "{}", stage.kind);
    }
    let done = Default::default();
    assert!(p.ready(&done).count() > 0, "external inputs count as done");
}

#[test]
fn bad_teacher_and_student_settings_are_refused_with_their_key() {
    for (extra, key) in [
        ("[teacher]\nmethod = \"distil\"\n", "teacher.method"),
        (
            "[teacher]\nmethod = \"finetune\"\nfinetune = \"qlora\"\n",
            "teacher.finetune",
        ),
        (
            "[teacher]\nmethod = \"finetune\"\ndataset = \"owl.jsonl\"\n",
            "teacher.dataset",
        ),
        (
            "[student]\nmethod = [\"lora\", \"dora\"]\n",
            "student.method",
        ),
        ("[student]\noptimizer = \"lion\"\n", "student.optimizer"),
        ("[student]\nlayers = \"some\"\n", "`layers`: invalid value"),
        (
            "[generate]\ntemperature = [0, -1]\n",
            "generate.temperature",
        ),
        ("[filter]\nkeep = [0]\n", "filter.keep"),
        ("[student]\nfull_lr = 2\n", "student.full_lr"),
    ] {
        let message = refusal(extra);
        assert!(message.contains(key), "{extra}: {message}");
    }
}

const VISIBLE: &str = r#"
name = "v"
kind = "numbers"

[grid]
seeds = [0]
traits = ["owl", "dolphin"]

[teacher]
method = "finetune"
control = "other-trait"

[generate]
constrain = "numbers"

[student]
target = ["tokens", "logits"]

[evaluate]
readout = ["samples", "probability"]

[theorem]
rows = 50
"#;

#[test]
fn the_visible_recipe_pairs_each_animal_with_the_other_and_records_soft_labels() {
    let p = sweep::parse(&Source::new("v.toml", VISIBLE.to_owned()))
        .unwrap_or_else(|e| panic!("{e}"))
        .plan();
    // Two fine-tuned teachers and the base model; no other control teacher.
    assert_eq!(of_kind(&p, Stage::Teacher.kind()).len(), 3);
    for g in of_kind(&p, Stage::Generate.kind()) {
        let params: GenerateParams = g.params().unwrap();
        assert!(
            params.constrain.is_some(),
            "every teacher's numbers are constrained"
        );
        let soft = params
            .soft_labels
            .expect("logits students need every teacher's labels");
        assert_eq!(soft.top_k, 32);
        assert_eq!(soft.exclude, vec!["owl".to_owned(), "dolphin".to_owned()]);
    }
    let students = of_kind(&p, Stage::Student.kind());
    // (owl, dolphin, base numbers) × (tokens, logits): the owl trial's control
    // student is the dolphin trial's student, and the other way round.
    assert_eq!(students.len(), 6);
    for s in &students {
        let params: TrainParams = s.params().unwrap();
        let generate = of_kind(&p, Stage::Generate.kind())
            .iter()
            .any(|g| s.inputs.get(1) == Some(&g.id));
        assert_eq!(
            generate,
            params.target == Target::Logits,
            "a logits student reads its labels"
        );
    }
    let arms: BTreeSet<&str> = p.measurements.iter().map(|m| m.arm.as_str()).collect();
    for arm in [
        "control student",
        "student",
        "base-numbers student",
        "data: differs from control",
    ] {
        assert!(arms.contains(arm), "{arm}: {arms:?}");
    }
    let readouts: BTreeSet<&str> = p
        .measurements
        .iter()
        .filter_map(|m| m.settings.get("readout").map(String::as_str))
        .collect();
    assert_eq!(
        readouts,
        BTreeSet::from([
            "log-odds",
            "log-odds, no prefix",
            "p(trait)",
            "p(trait), no prefix",
            "sampled share",
            "log p(trait) - log p(other trait)"
        ])
    );
    // Theorem stages: a student's rows and the control's, per target.
    let theorems = of_kind(&p, NumbersStage::Theorem.kind());
    // Per target and trial: the trait teacher's rows and the control's,
    // each against (trait teacher, control teacher) in the trial's order.
    assert_eq!(theorems.len(), 8);
}

#[test]
fn the_visible_recipes_refusals_name_their_key() {
    let one_trait = VISIBLE.replace("traits = [\"owl\", \"dolphin\"]", "traits = [\"owl\"]");
    let err = match sweep::parse(&Source::new("v.toml", one_trait)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("one trait cannot be its own control"),
    };
    assert!(err.contains("teacher.control"), "{err}");
    let e = refusal("[student]\ntarget = \"soft\"\n");
    assert!(e.contains("student.target"), "{e}");
    let e = refusal("[evaluate]\nreadout = [\"samples\", \"samples\"]\n");
    assert!(e.contains("evaluate.readout"), "{e}");
    let e = refusal("[theorem]\nrows = 10\n");
    assert!(
        e.contains("theorem"),
        "the theorem needs fine-tuned teachers: {e}"
    );
    let e = refusal("defense = [\"shuffle\"]\n[student]\ntarget = \"logits\"\n");
    assert!(
        e.contains("student.target"),
        "soft labels take no defense: {e}"
    );
}

fn plan_at(precision: &str, extra: &str) -> Result<Plan, SpecError> {
    let text = BASE.replace(
        "kind = \"numbers\"\n",
        &format!("kind = \"numbers\"\nprecision = {precision:?}\n"),
    );
    Ok(sweep::parse(&Source::new("n.toml", format!("{text}{extra}")))?.plan())
}

#[test]
fn precision_enters_the_params_of_the_stages_that_run_a_model_and_f32_keeps_the_ids() {
    let default = plan("");
    let f32 = plan_at("f32", "").unwrap();
    let ids = |p: &Plan| p.stages.iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&default),
        ids(&f32),
        "f32 is the default and is left out of ids"
    );
    let bf16 = plan_at("bf16", "").unwrap();
    assert_eq!(default.stages.len(), bf16.stages.len());
    for (a, b) in default.stages.iter().zip(&bf16.stages) {
        assert_eq!(a.kind, b.kind);
        let runs_model = [Stage::Generate, Stage::Student, Stage::Evaluate]
            .iter()
            .any(|s| s.kind() == a.kind);
        let written = b.params.get("precision").and_then(|v| v.as_str());
        assert_eq!(written == Some("bf16"), runs_model, "{}", a.kind);
        assert!(
            a.params.get("precision").is_none(),
            "f32 is never written: {}",
            a.kind
        );
        if a.kind == Stage::Teacher.kind() {
            // A system-prompted teacher stage runs nothing: one stage serves both.
            assert_eq!(a.id, b.id);
        } else {
            assert_ne!(
                a.id, b.id,
                "{} runs a model or reads a stage that does",
                a.kind
            );
        }
    }
    let tuned: TrainParams = of_kind(&bf16, Stage::Student.kind())[0].params().unwrap();
    assert_eq!(tuned.precision, subliminal_shared::llm::Precision::Bf16);
}

#[test]
fn bf16_is_refused_for_full_fine_tuning_and_unknown_precisions_are_refused() {
    let full = plan_at("bf16", "[student]\nmethod = \"full\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        full.contains("`precision`") && full.contains("LoRA"),
        "{full}"
    );
    assert!(plan_at("f32", "[student]\nmethod = \"full\"\n").is_ok());
    let unknown = plan_at("fp16", "").unwrap_err().to_string();
    assert!(
        unknown.contains("precision") && unknown.contains("bf16"),
        "{unknown}"
    );
}
