//! An MNIST sweep's plan: per trial, the teacher, its logits on noise, the
//! defenses, the students, the theorem's cosines and the evaluations.

use std::collections::BTreeMap;


use crate::plan::{Measurement, Plan, PlanBuilder};
use crate::stage::StageSpec;

use super::*;
use super::params::*;

/// One point of the grid, before it becomes stages.
#[derive(Debug, Clone)]
pub(super) struct Trial {
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
                    plan.measure(Measurement::new(
                        format!("theorem {what}, {relation}-init {}", trial.target),
                        6 + i as u32,
                        self.settings(&trial, Side::Student),
                        trial.seed,
                        theorem,
                        metric.to_owned(),
                    )
                        .with_inits(Some(trial.teacher_init), Some(trial.student_init)));
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
                plan.measure(Measurement::new(
                    arm,
                    order,
                    self.settings(&trial, side),
                    seed,
                    evaluate,
                    "accuracy".to_owned(),
                )
                    .with_inits(teacher_init, student_init)
                    .with_panel(matches!(side, Side::Student).then(|| panel_name(trial.target))));
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
            plan.measure(Measurement::new(
                arm.to_owned(),
                8 + i as u32,
                settings.clone(),
                trial.seed,
                defend,
                metric.to_owned(),
            )
                .with_inits(Some(trial.teacher_init), None));
        }
        defend
    }
}

/// What a defense costs the teacher's own outputs: (arm, metric of the defend stage).
pub const DEFENSE_COSTS: [(&str, &str); 2] = [
    ("defense: teacher accuracy", "teacher_accuracy"),
    ("defense: aux argmax kept", "aux_agreement"),
];

pub(super) fn panel_name(target: Target) -> String {
    match target {
        Target::Aux => "students distilled on auxiliary logits".to_owned(),
        Target::All => "students distilled on all logits".to_owned(),
    }
}

#[derive(Clone, Copy)]
pub(super) enum Side {
    Reference,
    Teacher,
    Student,
}

/// Every combination of one side's settings, as [epochs, lr, batch, samples].
pub(super) fn hyper_points(h: &Hyper) -> Vec<[f64; 4]> {
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
