//! The numbers kind's results table: each arm tested against its own
//! trait's control, a share by Fisher's exact test over answer counts and a
//! probability readout question by question.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;
use subliminal_results::{build, Outcome, Outcomes, ResultsTable, Verdict};
use subliminal_shared::experiments::numbers::{ARMS, EXPERIMENT};
use subliminal_shared::llm::{Stage, SHARE_PREFIX};
use subliminal_shared::plan::{Measurement, Plan};
use subliminal_shared::stage::StageSpec;

/// A plan of `arm` and the control for two traits over two seeds, with
/// each evaluation's share of 1,000 answers.
fn table(shares: &[(&str, &str, u64, f64)]) -> ResultsTable {
    let mut plan = Plan {
        sweep: "t".into(),
        experiment: EXPERIMENT.into(),
        trials: 0,
        stages: Vec::new(),
        measurements: Vec::new(),
        external: Vec::new(),
    };
    let mut outcomes: Outcomes = HashMap::new();
    for (i, &(arm, trait_name, seed, share)) in shares.iter().enumerate() {
        let stage = StageSpec::new(
            EXPERIMENT,
            Stage::Evaluate.kind(),
            &json!({ "i": i }),
            vec![],
        );
        outcomes.insert(
            (stage.id, format!("{SHARE_PREFIX}{trait_name}")),
            Outcome::Done {
                value: share,
                samples: Some(1000),
                items: None,
            },
        );
        plan.measurements.push(Measurement {
            arm: arm.into(),
            order: ARMS.iter().position(|a| *a == arm).unwrap_or(9) as u32,
            settings: BTreeMap::from([("trait".to_owned(), trait_name.to_owned())]),
            seed,
            teacher_init: None,
            student_init: None,
            stage: stage.id,
            metric: format!("{SHARE_PREFIX}{trait_name}"),
            panel: (arm == "student").then(|| "students".to_owned()),
            models: None,
        });
        plan.stages.push(stage);
    }
    build(&plan, &outcomes)
}

#[test]
fn each_arm_is_tested_against_its_traits_control_with_a_verdict() {
    let t = table(&[
        ("control student", "owl", 0, 0.10),
        ("control student", "owl", 1, 0.12),
        ("student", "owl", 0, 0.20),
        ("student", "owl", 1, 0.24),
        ("control student", "cat", 0, 0.10),
        ("control student", "cat", 1, 0.10),
        ("student", "cat", 0, 0.11),
        ("student", "cat", 1, 0.10),
        ("teacher", "owl", 0, 0.40),
        ("in-context", "owl", 0, 0.05),
        ("in-context control", "owl", 0, 0.05),
    ]);
    let row = |arm: &str, tr: &str| {
        t.rows
            .iter()
            .find(|r| r.arm == arm && r.settings["trait"] == tr)
            .unwrap()
    };
    let owl = row("student", "owl");
    assert_eq!(owl.verdict, Some(Verdict::Transfers));
    assert!(owl.q_value.unwrap() < 1e-6, "{:?}", owl.q_value);
    assert!(owl.p_seeds.is_some(), "two seeds: a paired test too");
    let cat = row("student", "cat");
    assert_eq!(cat.verdict, Some(Verdict::NoEvidence));
    let detectable = cat.detectable_shift.unwrap();
    assert!((0.01..0.05).contains(&detectable), "{detectable}");
    assert!(
        cat.q_value.unwrap() >= cat.p_value.unwrap(),
        "BH never lowers a p-value"
    );
    assert!(row("control student", "owl").verdict.is_none());
    let in_context = row("in-context", "owl");
    assert_eq!(
        in_context.shift,
        Some(0.0),
        "in context, against the base model shown the control rows"
    );
    assert!(row("in-context control", "owl").verdict.is_none());
    assert_eq!(
        row("teacher", "owl").verdict,
        Some(Verdict::Above),
        "a teacher above control holds the trait; only students transfer"
    );
    let text = t.to_table();
    assert!(
        text.contains("transfers") && text.contains("no evidence (could see ≥+0.0"),
        "{text}"
    );
    let csv = t.to_csv().unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .contains("p_value,q_value,p_seeds,detectable_shift,verdict"));
}

/// A readout's figure is tested question by question: a small, steady
/// rise over 50 questions is found, with its interval.
#[test]
fn a_readout_is_tested_against_its_control_question_by_question() {
    let mut plan = Plan {
        sweep: "t".into(),
        experiment: EXPERIMENT.into(),
        trials: 0,
        stages: Vec::new(),
        measurements: Vec::new(),
        external: Vec::new(),
    };
    let mut outcomes: Outcomes = HashMap::new();
    let control: Vec<f64> = (0..50).map(|q| -3.0 + (q % 7) as f64 * 0.3).collect();
    let student: Vec<f64> = control
        .iter()
        .enumerate()
        .map(|(q, c)| c + 0.05 + if q % 2 == 0 { 0.01 } else { -0.01 })
        .collect();
    for (i, (arm, items)) in [("control student", control), ("student", student)]
        .into_iter()
        .enumerate()
    {
        let stage = StageSpec::new(
            EXPERIMENT,
            Stage::Readout.kind(),
            &json!({ "i": i }),
            vec![],
        );
        let metric = "logodds:owl".to_owned();
        outcomes.insert(
            (stage.id, metric.clone()),
            Outcome::Done {
                value: items.iter().sum::<f64>() / items.len() as f64,
                samples: None,
                items: Some(items),
            },
        );
        plan.measurements.push(Measurement {
            arm: arm.into(),
            order: ARMS.iter().position(|a| *a == arm).unwrap() as u32,
            settings: BTreeMap::from([("trait".to_owned(), "owl".to_owned())]),
            seed: 0,
            teacher_init: None,
            student_init: None,
            stage: stage.id,
            metric,
            panel: (arm == "student").then(|| "students".to_owned()),
            models: None,
        });
        plan.stages.push(stage);
    }
    let t = build(&plan, &outcomes);
    let row = t.rows.iter().find(|r| r.arm == "student").unwrap();
    assert_eq!(row.verdict, Some(Verdict::Transfers), "{row:?}");
    let (lo, hi) = row.shift_ci95.unwrap();
    assert!(lo < 0.05 && 0.05 < hi && hi - lo < 0.01, "[{lo}, {hi}]");
    assert!(row.detectable_shift.unwrap() < 0.01);
}
