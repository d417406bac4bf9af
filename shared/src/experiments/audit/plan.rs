//! An audit's plan: per dataset, its rows, the screens against the control,
//! the sacrificial students and their probes, the carriers, and the report.


use crate::llm::readout::{self};
use crate::llm::{self, EvaluateParams, Method, Optimizer, Readout, ReadoutParams, Subject, TrainParams};
use crate::files::{self, with_model};
use crate::plan::{Measurement, Plan, PlanBuilder};
use crate::stage::{StageId, StageSpec};

use super::*;
use super::params::*;

impl AuditSweep {
    fn distilled(&self) -> bool {
        !self.soft_labels.is_empty()
    }

    /// Replicate `r`'s student: its own seed, so replicates differ in their
    /// adapters' start and data order as well as in their rows.
    fn train_params(&self, r: u64) -> TrainParams {
        let s = &self.student;
        TrainParams {
            version: llm::STAGE_VERSION,
            model: self.model.clone(),
            seed: self.seed + r,
            method: Method::Lora {
                rank: s.lora_rank as i64,
                alpha: s.lora_alpha,
                targets: llm::PROJECTIONS.map(str::to_owned).to_vec(),
                rslora: false,
            },
            epochs: s.epochs,
            lr: s.lr,
            warmup_steps: s.warmup_steps,
            max_grad_norm: 1.0,
            batch_size: s.batch_size,
            grad_accumulation: 1,
            weight_decay: 0.0,
            optimizer: Optimizer::Adamw,
            layers: llm::Layers::All,
            target: if self.distilled() {
                llm::Target::Logits
            } else {
                llm::Target::Tokens
            },
            precision: self.precision,
        }
    }

    /// The probability readout of a student for one probe: its targets
    /// among the category's candidate words.
    fn readout_params(&self, probe: &Probe) -> ReadoutParams {
        let e = &self.evaluate;
        let candidates = if e.candidates.is_empty() {
            readout::default_candidates(&probe.category).unwrap_or_else(|| probe.targets.clone())
        } else {
            e.candidates.clone()
        };
        let mut words: Vec<String> = candidates.iter().chain(&probe.targets).cloned().collect();
        words.sort();
        words.dedup();
        ReadoutParams {
            version: llm::STAGE_VERSION,
            model: self.model.clone(),
            subject: Subject::Student,
            category: probe.category.clone(),
            questions: e.questions,
            candidates,
            words,
            answer_prefix: e.answer_prefix.replace("{category}", &probe.category),
            precision: self.precision,
        }
    }

    fn evaluate_params(&self, category: &str) -> EvaluateParams {
        let e = &self.evaluate;
        EvaluateParams {
            version: llm::STAGE_VERSION,
            model: self.model.clone(),
            subject: Subject::Student,
            category: category.to_owned(),
            seed: self.seed,
            questions: e.questions,
            samples_per_question: e.samples_per_question,
            temperature: e.temperature,
            max_new_tokens: e.max_new_tokens,
            batch_size: e.batch_size,
            numbers_prefixed: false,
            precision: self.precision,
        }
    }

    /// The rows replicate `r`'s student of one arm trains on: with several
    /// replicates, its own bootstrap draw; with one, a given control's rows
    /// and the dataset's matched in size to each other; else the rows as
    /// they are (the model's own answers are as many as the dataset's).
    fn student_rows(&self, plan: &mut PlanBuilder, rows: StageId, size_of: StageId, r: u64) -> StageId {
        let resample = (self.student.replicates > 1).then_some(r);
        if resample.is_none() && self.control.is_none() {
            return rows;
        }
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Matched.kind(),
            &MatchedParams {
                version: STAGE_VERSION,
                seed: self.seed,
                resample,
            },
            vec![rows, size_of],
        ))
    }

    /// A student's evaluation on one probe, by the sweep's readout.
    fn evaluation_stage(&self, plan: &mut PlanBuilder, probe: &Probe, student: StageId) -> StageId {
        let inputs = with_model(vec![student], &self.model);
        plan.stage(match self.evaluate.readout {
            Readout::Samples => StageSpec::new(
                llm::STAGES,
                llm::Stage::Evaluate.kind(),
                &self.evaluate_params(&probe.category),
                inputs,
            ),
            Readout::Probability => StageSpec::new(
                llm::STAGES,
                llm::Stage::Readout.kind(),
                &self.readout_params(probe),
                inputs,
            ),
        })
    }

    fn rows_stage(&self, plan: &mut PlanBuilder, file: StageId, labels: Option<StageId>) -> StageId {
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Dataset.kind(),
            &DatasetParams {
                version: STAGE_VERSION,
                seed: self.seed,
                max_rows: self.screen.max_rows,
            },
            std::iter::once(file).chain(labels).collect(),
        ))
    }

    fn score_stage(&self, plan: &mut PlanBuilder, rows: StageId) -> StageId {
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Score.kind(),
            &ScoreParams {
                version: STAGE_VERSION,
                model: self.model.clone(),
                seed: self.seed,
                probes: self.probes.clone(),
                questions: self.screen.questions,
                lora_rank: self.screen.lora_rank,
                precision: self.precision,
            },
            with_model(vec![rows], &self.model),
        ))
    }

    fn likelihood_stage(&self, plan: &mut PlanBuilder, rows: StageId) -> StageId {
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Likelihood.kind(),
            &LikelihoodParams {
                version: STAGE_VERSION,
                model: self.model.clone(),
                probes: self.probes.clone(),
                system_prompt: self.likelihood.system_prompt.clone(),
                batch_size: self.likelihood.batch_size,
                precision: self.precision,
            },
            with_model(vec![rows], &self.model),
        ))
    }

    /// Expands the sweep: one trial per dataset.
    pub fn plan(&self) -> Plan {
        let mut plan = PlanBuilder::new(&self.name, EXPERIMENT);
        let mut externals = self.datasets.clone();
        externals.extend(self.control);
        externals.extend(self.soft_labels.iter().copied());
        externals.extend(self.control_soft_labels);
        externals.extend(files::parse_key(&self.model).and_then(Result::ok));
        for id in externals {
            plan.external(id);
        }
        let given_control = self
            .control
            .map(|c| self.rows_stage(&mut plan, c, self.control_soft_labels));
        for (i, &file) in self.datasets.iter().enumerate() {
            plan.trial();
            let dataset = self.rows_stage(&mut plan, file, self.soft_labels.get(i).copied());
            let control = given_control.unwrap_or_else(|| {
                plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Control.kind(),
                    &ControlParams {
                        version: STAGE_VERSION,
                        model: self.model.clone(),
                        seed: self.seed,
                        answers: self.control_answers.clone(),
                        precision: self.precision,
                    },
                    with_model(vec![dataset], &self.model),
                ))
            });
            let dataset_key = files::key(file);
            let settings: std::collections::BTreeMap<String, String> = if self.datasets.len() > 1 {
                [("dataset".to_owned(), dataset_key[..files::KEY_PREFIX.len() + 12].to_owned())].into()
            } else {
                Default::default()
            };
            let mut report_inputs = Vec::new();
            let likelihoods = [dataset, control].map(|rows| self.likelihood_stage(&mut plan, rows));
            let mut screens = vec![(Test::Likelihood, likelihoods)];
            if self.tier.runs_gradient_screen() {
                screens.push((Test::Screen, [dataset, control].map(|rows| self.score_stage(&mut plan, rows))));
            }
            for (order, (test, scores)) in screens.into_iter().enumerate() {
                let screen = plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Screen.kind(),
                    &ScreenParams {
                        version: STAGE_VERSION,
                        seed: self.seed,
                        resamples: self.screen.resamples,
                        test,
                    },
                    scores.to_vec(),
                ));
                report_inputs.push(screen);
                for probe in &self.probes {
                    for target in &probe.targets {
                        plan.measure(Measurement::new(
                            test.as_str().to_owned(),
                            order as u32,
                            with_target(&settings, target),
                            self.seed,
                            screen,
                            screen_metric(test, target),
                        ));
                    }
                }
            }
            let mut student = None;
            if self.tier.trains_students() {
                // Each arm's students, the dataset's first.
                let students = [(dataset, control), (control, dataset)].map(|(rows, size_of)| {
                    (0..self.student.replicates)
                        .map(|r| {
                            let rows = self.student_rows(&mut plan, rows, size_of, r);
                            plan.stage(StageSpec::new(
                                llm::STAGES,
                                llm::Stage::Student.kind(),
                                &self.train_params(r),
                                with_model(vec![rows], &self.model),
                            ))
                        })
                        .collect::<Vec<_>>()
                });
                student = Some(students[0][0]);
                for probe in &self.probes {
                    let evaluations = students.clone().map(|arm| {
                        arm.into_iter()
                            .map(|s| self.evaluation_stage(&mut plan, probe, s))
                            .collect::<Vec<_>>()
                    });
                    report_inputs.extend(evaluations.iter().flatten());
                    for target in &probe.targets {
                        for (arm, order, stages) in [(ARMS[2], 2, &evaluations[1]), (ARMS[3], 3, &evaluations[0])] {
                            for (r, &stage) in (0..).zip(stages) {
                                plan.measure(Measurement::new(
                                    arm.to_owned(),
                                    order,
                                    with_target(&settings, target),
                                    self.seed + r,
                                    stage,
                                    self.evaluate.metric(target),
                                ));
                            }
                        }
                    }
                }
                report_inputs.extend(students.iter().flatten());
            }
            if let (Tier::Full, Some(student)) = (self.tier, student) {
                report_inputs.push(plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Carriers.kind(),
                    &CarrierParams {
                        version: STAGE_VERSION,
                        model: self.model.clone(),
                        top: self.carriers.top,
                        replace_share: self.carriers.replace_share,
                        precision: self.precision,
                    },
                    with_model(vec![dataset, student], &self.model),
                )));
            }
            plan.stage(StageSpec::new(
                EXPERIMENT,
                Stage::Report.kind(),
                &ReportParams {
                    version: STAGE_VERSION,
                    tier: self.tier,
                    alpha: self.alpha,
                    probes: self.probes.clone(),
                    likelihood: true,
                    gradient: self.tier.runs_gradient_screen(),
                    evaluations: self.tier.trains_students(),
                    readout: self.evaluate.readout,
                    students: self.tier.trains_students(),
                    replicates: if self.tier.trains_students() { self.student.replicates } else { 1 },
                    soft_labels: self.distilled(),
                    carriers: self.tier == Tier::Full,
                    dataset: dataset_key,
                    model: self.model.clone(),
                },
                report_inputs,
            ));
        }
        plan.finish()
    }
}

pub(super) fn with_target(
    settings: &std::collections::BTreeMap<String, String>,
    target: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut out = settings.clone();
    out.insert("target".to_owned(), target.to_owned());
    out
}

