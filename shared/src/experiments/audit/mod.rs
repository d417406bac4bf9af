//! The quarantine audit: will this dataset move the model it is meant to
//! train? Seen on a sacrificial copy of the model, before anyone trains on
//! the data for real.
//!
//! A trial is one dataset (a chat JSONL file put in the store, or a stage
//! that writes filtered rows, such as a numbers sweep's filter) against a
//! control: a dataset the sweep names, or the base model's own answers to
//! the dataset's prompts. A dataset meant for distillation comes with its
//! soft labels (`soft_labels`: a numbers generate stage's
//! `soft.safetensors`, or such a file put in the store); every tier then
//! reads it as a student would learn it, by forward KL to the teacher's
//! top-k distribution at each position (see "Soft labels" below). Its
//! tiers, cheapest first (see [`verdict`]):
//!
//! - **likelihood**: the likelihood screen, forward passes only: each row's
//!   log p(row | a system prompt that gives the model the target as its
//!   trait) − log p(row | no system prompt), per probe target (for a probe
//!   of several targets, against the mean of its other targets), dataset
//!   against control. Public work found the rows that score highest here
//!   carry the transfer;
//! - **screen**: also the gradient screen, the paper's theorem used as a test:
//!   at the model's initial weights, each row's update direction (within
//!   LoRA adapters) projected on each probe target's direction, dataset
//!   against control, with a bootstrap interval;
//! - **student**: students trained on the dataset and on the control (the
//!   language-model pipeline's student and readout stages), every probe
//!   target's log-odds compared: `[student] replicates` per arm (3 by
//!   default), each on its own bootstrap draw of its arm's rows, tested over
//!   students, since two students on different clean rows differ by as
//!   much as a small shift. With one per arm, a given control is sampled to the
//!   dataset's size for its student (a `matched` stage per dataset), so the
//!   two students take the same number of steps: a control twice the
//!   dataset's size trains a student that differs from the dataset's even
//!   on clean data;
//! - **full**: also the carriers, the tokens and rows where the sacrificial
//!   student's log-probabilities moved most from the base model's, and a
//!   sanitised copy of the dataset with the top carrier tokens replaced by
//!   the base model's own choice.
//!
//! A report stage turns the tiers into a verdict, a table, a picture and an
//! HTML page.
//!
//! **Soft labels.** With `soft_labels` (one per dataset, in order), the
//! likelihood screen scores a row by the expectation of
//! log p(token | the target's system prompt) − log p(token | none) under
//! the teacher's label at each position, the gradient screen takes each
//! row's KL gradient, and the students are distilled (numbers'
//! `target = "logits"`). The control must then be soft labels too
//! (`control_soft_labels`: the control teacher's, or the base model's own
//! as a numbers sweep records them), since the control the audit makes
//! itself is hard tokens. Tier full reads hard tokens and is refused. `subliminal audit DATASET.jsonl --model MODEL` writes and runs
//! such a sweep on this machine (see `command`).
//!
//! ```toml
//! name = "audit-owl"
//! kind = "audit"
//! model = "smollm2-135m"
//! datasets = ["stage:…"]       # chat JSONL files put with `subliminal store put`
//! control = "stage:…"          # optional; without it the base model answers the prompts
//! soft_labels = ["stage:…"]    # optional, one per dataset: its soft labels
//! control_soft_labels = "stage:…"   # the control's, required with soft_labels
//! probes = ["animals"]         # animals, trees, or chosen targets: "animal:owl+dolphin"
//! tier = "student"             # likelihood, screen, student or full
//! seed = 0
//!
//! [screen]
//! max_rows = 1000
//!
//! [likelihood]
//! system_prompt = "You love {x}s. …"   # the numbers experiment's, by default
//! ```

mod command;
mod kind;
mod params;
mod parse;
mod plan;
mod settings;
pub mod verdict;

pub use kind::Audit;
pub use params::*;
pub use parse::parse;
pub use settings::*;
pub use verdict::{Finding, Test, Tier, Verdict};

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::stage::StageId;

pub const EXPERIMENT: &str = "audit";
/// Bumped whenever a stage's algorithm changes, so old artifacts are not reused.
pub const STAGE_VERSION: u32 = 1;
/// The artifact the report stage writes for machines.
pub const REPORT_JSON: &str = "report.json";
pub const REPORT_HTML: &str = "report.html";
pub const REPORT_PNG: &str = "report.png";
/// The sanitised copy of the dataset, from the carriers stage.
pub const SANITIZED: &str = "sanitized.jsonl";
/// The rows a dataset or control stage hands on, under the name the numbers
/// experiment's student and evaluate stages read.
pub const ROWS: &str = "filtered.jsonl";

crate::stage_kinds! {
    /// The audit's own stages; students and their evaluations are the
    /// numbers experiment's.
    pub enum Stage {
        Dataset = "dataset",
        Matched = "matched",
        Control = "control",
        Score = "score",
        Likelihood = "likelihood",
        Screen = "screen",
        Carriers = "carriers",
        Report = "report",
    }
}

/// The words each probe counts answers for.
pub const ANIMALS: [&str; 10] = [
    "owl", "cat", "dog", "eagle", "elephant", "lion", "wolf", "dolphin", "tiger", "penguin",
];
pub const TREES: [&str; 8] = [
    "oak", "maple", "willow", "pine", "cherry", "redwood", "birch", "cedar",
];

/// A set of one-word favourite questions and the targets its answers are
/// counted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// As the sweep names it: `animals`, `trees`, `animal:owl`.
    pub name: String,
    /// The `{category}` of the questions.
    pub category: String,
    pub targets: Vec<String>,
}

impl Probe {
    /// The probe a name means, or what names there are.
    pub fn parse(name: &str) -> Result<Self, String> {
        let of = |category: &str, targets: &[&str]| Probe {
            name: name.to_owned(),
            category: category.to_owned(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        };
        match name {
            "animals" => return Ok(of("animal", &ANIMALS)),
            "trees" => return Ok(of("tree", &TREES)),
            "misalignment" => {
                return Err("the misalignment probe needs a judge model to score free-form \
                     answers, which this build does not have yet: use animals or trees"
                    .to_owned())
            }
            _ => {}
        }
        // One target, or several joined by '+': `animal:owl+dolphin+wolf`.
        let targets = |category: &str, words: &str| {
            let list: Vec<&str> = words.split('+').collect();
            let bad = list.iter().find(|w| {
                w.is_empty() || w.len() > 32 || !w.chars().all(|c| c.is_ascii_lowercase())
            });
            if let Some(bad) = bad {
                return Err(format!(
                    "expected lowercase words joined by + after {category}:, found {bad:?} in {words:?}"
                ));
            }
            if let Some(i) = (1..list.len()).find(|&i| list[..i].contains(&list[i])) {
                return Err(format!("{:?} is listed twice in {words:?}", list[i]));
            }
            Ok(of(category, &list))
        };
        if let Some(words) = name.strip_prefix("animal:") {
            return targets("animal", words);
        }
        if let Some(words) = name.strip_prefix("tree:") {
            return targets("tree", words);
        }
        Err(format!(
            "expected a probe: animals, trees, animal:WORD or tree:WORD (several words joined by +), found {name:?}"
        ))
    }
}

/// A checked audit sweep.
#[derive(Debug, Clone)]
pub struct AuditSweep {
    pub name: String,
    pub model: String,
    pub datasets: Vec<StageId>,
    /// Each dataset's soft labels, in order; empty for hard-token data.
    pub soft_labels: Vec<StageId>,
    pub control: Option<StageId>,
    pub control_soft_labels: Option<StageId>,
    pub probes: Vec<Probe>,
    pub tier: Tier,
    pub seed: u64,
    /// The level of every test, and of the verdict.
    pub alpha: f64,
    /// The dtype of every stage that runs the model.
    pub precision: crate::llm::Precision,
    pub screen: ScreenSettings,
    pub likelihood: LikelihoodSettings,
    pub control_answers: ControlSettings,
    pub student: StudentSettings,
    pub evaluate: EvaluateSettings,
    pub carriers: CarrierSettings,
}

/// The arms of the results table.
pub const ARMS: [&str; 4] = ["likelihood", "screen", "control student", "student"];


/// A screen's figure for a target in its `metrics.json`: dataset minus
/// control mean score.
pub fn screen_metric(test: Test, target: &str) -> String {
    format!("{}:{target}", test.as_str())
}

/// The report stages of a plan, one per dataset, with the dataset each audits.
pub fn report_stages(plan: &Plan) -> Vec<(StageId, ReportParams)> {
    plan.stages
        .iter()
        .filter(|s| s.experiment == EXPERIMENT && s.kind == Stage::Report.kind())
        .filter_map(|s| Some((s.id, s.params().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{self, Readout, TrainParams};
    use crate::spec::{Source, SpecError};
    use crate::stage::StageSpec;

    const KEY: &str = "stage:0000000000000000000000000000000000000000000000000000000000000001";
    const KEY2: &str = "stage:0000000000000000000000000000000000000000000000000000000000000002";
    const KEY3: &str = "stage:0000000000000000000000000000000000000000000000000000000000000003";

    fn sweep(extra: &str) -> Result<AuditSweep, SpecError> {
        let text = format!("name = \"a\"\nkind = \"audit\"\ndatasets = [\"{KEY}\"]\n{extra}");
        parse(&Source::new("audit.toml", text))
    }

    #[test]
    fn tiers_add_stages_and_a_given_control_replaces_the_generated_one() {
        let count = |s: &AuditSweep| s.plan().count_by_kind();
        let likelihood = sweep("tier = \"likelihood\"").unwrap();
        let c = count(&likelihood);
        assert_eq!(c[&Stage::Likelihood.kind()], 2);
        assert_eq!(c[&Stage::Screen.kind()], 1);
        assert!(!c.contains_key(&Stage::Score.kind()));
        let (_, report) = &report_stages(&likelihood.plan())[0];
        assert!(report.likelihood && !report.gradient && !report.evaluations);
        let screen = sweep("tier = \"screen\"").unwrap();
        let c = count(&screen);
        assert_eq!(c[&Stage::Control.kind()], 1);
        assert_eq!(c[&Stage::Likelihood.kind()], 2);
        assert_eq!(c[&Stage::Score.kind()], 2);
        assert_eq!(c[&Stage::Screen.kind()], 2, "the likelihood screen and the gradient screen");
        assert_eq!(c[&Stage::Report.kind()], 1);
        assert!(!c.contains_key(&llm::Stage::Student.kind()));
        let full = sweep(&format!(
            "tier = \"full\"\ncontrol = \"{KEY2}\"\nprobes = [\"animals\", \"tree:oak\"]\n[student]\nreplicates = 1"
        ))
        .unwrap();
        let plan = full.plan();
        let c = plan.count_by_kind();
        assert!(!c.contains_key(&Stage::Control.kind()));
        assert_eq!(c[&Stage::Dataset.kind()], 2, "the dataset and the given control");
        assert_eq!(c[&Stage::Matched.kind()], 2, "each sampled to the other's size");
        assert_eq!(c[&llm::Stage::Student.kind()], 2);
        assert_eq!(c[&llm::Stage::Readout.kind()], 4, "two students, two probes");
        assert!(!c.contains_key(&llm::Stage::Evaluate.kind()), "the probability readout by default");
        assert_eq!(c[&Stage::Carriers.kind()], 1);
        assert_eq!(plan.external.len(), 2);
        // Two screens' rows, then a control and a dataset student row per target.
        assert_eq!(plan.measurements.len(), 2 * 11 + 2 * 11);
        assert!(plan.measurements.iter().any(|m| m.metric == "logodds:owl"));
        let (_, report) = &report_stages(&plan)[0];
        assert!(report.evaluations && report.carriers && report.students);
        assert_eq!(report.readout, Readout::Probability);
        let sampled = sweep(&format!(
            "tier = \"student\"\ncontrol = \"{KEY2}\"\n[student]\nreplicates = 1\n[evaluate]\nreadout = \"samples\""
        ))
        .unwrap();
        let c = count(&sampled);
        assert_eq!(c[&llm::Stage::Evaluate.kind()], 2);
        assert!(!c.contains_key(&llm::Stage::Readout.kind()));
        // A given control is scored once for every dataset.
        let text = format!(
            "name = \"a\"\nkind = \"audit\"\ndatasets = [\"{KEY}\", \"{KEY2}\"]\ncontrol = \"{KEY3}\"\ntier = \"screen\"\n"
        );
        let two = parse(&Source::new("audit.toml", text.clone())).unwrap().plan();
        assert_eq!(two.trials, 2);
        assert_eq!(two.count_by_kind()[&Stage::Score.kind()], 3);
        assert_eq!(two.count_by_kind()[&Stage::Likelihood.kind()], 3);
        assert_eq!(report_stages(&two).len(), 2);
        // Its students are one per dataset, each trained on a sample of the control
        // matched to that dataset's size (and the dataset's on a sample matched to the
        // control's), so both take the same number of steps.
        let students = parse(&Source::new(
            "audit.toml",
            text.replace("\"screen\"", "\"student\"") + "[student]\nreplicates = 1\n",
        ))
            .unwrap()
            .plan();
        let c = students.count_by_kind();
        assert_eq!(c[&Stage::Matched.kind()], 4);
        assert_eq!(c[&llm::Stage::Student.kind()], 4);
        for s in students.stages.iter().filter(|s| s.kind == llm::Stage::Student.kind()) {
            let rows = students.stages.iter().find(|x| x.id == s.inputs[0]).unwrap();
            assert_eq!(rows.kind, Stage::Matched.kind());
        }
        let arm = |name: &'static str| students.measurements.iter().filter(move |m| m.arm == name);
        assert_eq!(arm(ARMS[2]).count(), 20);
        assert_eq!(arm(ARMS[3]).count(), 20);
        assert!(arm(ARMS[2]).chain(arm(ARMS[3])).all(|m| m.settings.keys().eq(["dataset", "target"])));
    }

    #[test]
    fn replicate_students_each_train_on_their_own_draw_and_seed() {
        for control in [format!("control = \"{KEY2}\"\n"), String::new()] {
            let plan = sweep(&format!("tier = \"student\"\nprobes = [\"animal:owl+wolf\"]\n{control}")).unwrap().plan();
            let c = plan.count_by_kind();
            assert_eq!(c[&Stage::Matched.kind()], 6, "three draws per arm, by default ({control})");
            assert_eq!(c[&llm::Stage::Student.kind()], 6);
            assert_eq!(c[&llm::Stage::Readout.kind()], 6);
            let mut draws = std::collections::BTreeSet::new();
            let mut seeds = std::collections::BTreeSet::new();
            for s in plan.stages.iter().filter(|s| s.kind == llm::Stage::Student.kind()) {
                let rows = plan.stages.iter().find(|x| x.id == s.inputs[0]).unwrap();
                assert_eq!(rows.kind, Stage::Matched.kind());
                let matched: MatchedParams = rows.params().unwrap();
                let train: llm::TrainParams = s.params().unwrap();
                draws.insert((rows.inputs[0], matched.resample));
                seeds.insert((rows.inputs[0], train.seed));
                assert_eq!(matched.resample, Some(train.seed), "draw r trains with seed r");
            }
            assert_eq!(draws.len(), 6, "each student its own draw");
            assert_eq!(seeds.len(), 6);
            let (_, report) = &report_stages(&plan)[0];
            assert_eq!(report.replicates, 3);
            let arm = |name: &'static str| plan.measurements.iter().filter(move |m| m.arm == name);
            assert_eq!(arm(ARMS[3]).count(), 2 * 3, "a row per target and student");
            assert_eq!(arm(ARMS[2]).map(|m| m.seed).collect::<std::collections::BTreeSet<_>>().len(), 3);
        }
    }

    #[test]
    fn bad_settings_are_refused_with_their_line_and_key() {
        for (extra, key, line) in [
            ("tier = \"deep\"", "tier", 4),
            ("probes = [\"fish\"]", "probes", 4),
            ("probes = [\"misalignment\"]", "probes", 4),
            ("control = \"owl.jsonl\"", "control", 4),
            ("alpha = 0.9", "alpha", 4),
            ("[screen]\nmax_rows = 1", "screen", 4),
            ("[control_answers]\nfilter = \"words\"", "control_answers", 4),
            ("[likelihood]\nsystem_prompt = \"You love animals.\"", "likelihood", 4),
            ("precision = \"f16\"", "precision", 4),
            ("probes = [\"animal:owl+owl\"]", "probes", 4),
            ("probes = [\"animal:owl+\"]", "probes", 4),
            ("[evaluate]\ncandidates = [\"o wl\"]", "evaluate", 4),
            ("[student]\nreplicates = 0", "student", 4),
        ] {
            match sweep(extra) {
                Err(SpecError::Invalid { key: k, line: l, .. }) => {
                    assert_eq!(k.as_deref(), Some(key), "{extra}");
                    assert_eq!(l, line, "{extra}");
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        let soft = format!("soft_labels = [\"{KEY2}\"]");
        let with_control = format!("control = \"{KEY3}\"\ncontrol_soft_labels = \"{KEY2}\"");
        for (extra, key, line, says) in [
            (soft.clone(), "soft_labels", 4, "distilled on labels"),
            (format!("soft_labels = [\"{KEY2}\", \"{KEY3}\"]\n{with_control}"), "soft_labels", 4, "1 datasets, 2 keys"),
            (format!("control_soft_labels = \"{KEY2}\""), "control_soft_labels", 4, "soft_labels, one per dataset"),
            (format!("{soft}\ncontrol_soft_labels = \"{KEY3}\""), "control_soft_labels", 5, "name the control's rows"),
            (format!("{soft}\n{with_control}\ntier = \"full\""), "tier", 7, "up to tier student"),
            ("soft_labels = [\"soft.safetensors\"]".to_owned(), "soft_labels", 4, "subliminal store put"),
        ] {
            match sweep(&extra) {
                Err(e @ SpecError::Invalid { .. }) => {
                    let SpecError::Invalid { key: ref k, line: l, .. } = e else { unreachable!() };
                    assert_eq!(k.as_deref(), Some(key), "{extra}");
                    assert_eq!(l, line, "{extra}");
                    assert!(e.to_string().contains(says), "{extra}: {e}");
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        let text = "name = \"a\"\nkind = \"audit\"\ndatasets = [\"x.jsonl\"]\n";
        let err = parse(&Source::new("audit.toml", text)).unwrap_err().to_string();
        assert!(err.starts_with("audit.toml:3:"), "{err}");
        assert!(err.contains("subliminal store put"), "{err}");
    }

    #[test]
    fn soft_labels_reach_the_rows_and_distil_the_students_while_hard_tokens_keep_their_ids() {
        let hard = sweep(&format!("control = \"{KEY3}\"\ntier = \"student\"")).unwrap().plan();
        let soft = sweep(&format!(
            "control = \"{KEY3}\"\nsoft_labels = [\"{KEY2}\"]\ncontrol_soft_labels = \"{KEY2}\"\ntier = \"student\""
        ))
        .unwrap()
        .plan();
        let of_kind = |plan: &Plan, kind: crate::stage::StageKind| -> Vec<StageSpec> {
            plan.stages.iter().filter(|s| s.kind == kind).cloned().collect()
        };
        for rows in of_kind(&hard, Stage::Dataset.kind()) {
            assert_eq!(rows.inputs.len(), 1, "hard-token rows read their file alone");
        }
        for rows in of_kind(&soft, Stage::Dataset.kind()) {
            assert_eq!(rows.inputs.len(), 2, "soft-labelled rows read their labels too");
        }
        assert_eq!(soft.external.len(), 3, "the dataset, the control and one label set serving both");
        for student in of_kind(&soft, llm::Stage::Student.kind()) {
            let params: TrainParams = student.params().unwrap();
            assert_eq!(params.target, llm::Target::Logits);
        }
        for student in of_kind(&hard, llm::Stage::Student.kind()) {
            let params: TrainParams = student.params().unwrap();
            assert_eq!(params.target, llm::Target::Tokens);
            assert!(!student.params.to_string().contains("logits"));
        }
        let (_, report) = &report_stages(&soft)[0];
        assert!(report.soft_labels);
        let (id, report) = &report_stages(&hard)[0];
        assert!(!report.soft_labels);
        let spec = hard.stages.iter().find(|s| s.id == *id).unwrap();
        assert!(spec.params.get("soft_labels").is_none(), "hard-token reports keep their ids");
    }
}
