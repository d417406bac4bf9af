//! A numbers sweep's plan: the grid's trials, each with its teachers,
//! generations, filters, defenses, students and evaluations, and the
//! measurements that make up the results table.

use std::collections::BTreeMap;


use crate::files::{self, with_model};
use crate::llm::{
    defense, filter, prompts, readout, share_metric, Constrain, DefendParams, Defense,
    EvaluateParams, FilterParams, GenerateParams, Layers, Method, NumbersGrammar, Optimizer,
    Precision, Readout, ReadoutParams, SoftLabelParams, Stage, Subject, Target, TeacherParams, TrainParams,
    TraitDataParams, STAGE_VERSION,
};
use crate::plan::{Measurement, Plan, PlanBuilder};
use crate::stage::{StageId, StageSpec};
use super::*;

/// How one student is trained: a point of the student axes.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StudentPoint {
    full: bool,
    /// `None` for full fine-tuning, where a rank means nothing.
    rank: Option<u64>,
    epochs: u64,
    lr: f64,
    optimizer: Optimizer,
    layers: Layers,
    target: Target,
}

/// One point of the grid.
#[derive(Debug, Clone)]
pub(super) struct Trial<'a> {
    seed: u64,
    trait_name: &'a str,
    pair: &'a ModelPair,
    temperature: f64,
    keep: u64,
    defense: Defense,
    student: StudentPoint,
}


impl NumbersSweep {
    /// Every student the axes describe; full fine-tuning crosses no rank.
    fn student_points(&self) -> Vec<StudentPoint> {
        let s = &self.student;
        let mut out = Vec::new();
        for &full in s.full.values() {
            let ranks: Vec<Option<u64>> = if full {
                vec![None]
            } else {
                s.lora_rank.values().iter().map(|&r| Some(r)).collect()
            };
            for rank in ranks {
                for &epochs in s.epochs.values() {
                    for &lr in s.lr.values() {
                        for &optimizer in s.optimizer.values() {
                            for layers in s.layers.values() {
                                for &target in s.target.values() {
                                    out.push(StudentPoint {
                                        full,
                                        rank,
                                        epochs,
                                        lr,
                                        optimizer,
                                        layers: layers.clone(),
                                        target,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn trials(&self) -> Vec<Trial<'_>> {
        let points = self.student_points();
        let mut out = Vec::new();
        for &seed in self.seeds.values() {
            for trait_name in self.traits.values() {
                for pair in self.model_pairs.values() {
                    for &temperature in self.generate.temperature.values() {
                        for &keep in self.filter.keep.values() {
                            for &defense in self.defense.values() {
                                for student in &points {
                                    out.push(Trial {
                                        seed,
                                        trait_name,
                                        pair,
                                        temperature,
                                        keep,
                                        defense,
                                        student: student.clone(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn student_params(&self, trial: &Trial) -> TrainParams {
        let s = &self.student;
        let p = &trial.student;
        TrainParams {
            version: STAGE_VERSION,
            model: trial.pair.student.clone(),
            seed: trial.seed,
            method: match p.rank {
                Some(rank) if !p.full => Method::Lora {
                    rank: rank as i64,
                    alpha: s.lora_alpha,
                    targets: s.lora_targets.clone(),
                    rslora: s.rslora,
                },
                _ => Method::Full,
            },
            epochs: p.epochs,
            lr: match s.full_lr {
                Some(lr) if p.full => lr,
                _ => p.lr,
            },
            warmup_steps: s.warmup_steps,
            max_grad_norm: s.max_grad_norm,
            batch_size: s.batch_size,
            grad_accumulation: s.grad_accumulation,
            weight_decay: s.weight_decay,
            optimizer: p.optimizer,
            layers: p.layers.clone(),
            target: p.target,
            precision: self.precision,
        }
    }

    fn evaluate_params(
        &self,
        model: &str,
        subject: Subject,
        seed: u64,
        numbers_prefixed: bool,
    ) -> EvaluateParams {
        let e = &self.evaluate;
        EvaluateParams {
            version: STAGE_VERSION,
            model: model.to_owned(),
            subject,
            category: self.category.clone(),
            seed,
            questions: e.questions,
            samples_per_question: e.samples_per_question,
            temperature: e.temperature,
            max_new_tokens: e.max_new_tokens,
            batch_size: e.batch_size,
            numbers_prefixed,
            precision: self.precision,
        }
    }

    /// The settings that label an arm's rows: an evaluation of the base
    /// model or a teacher serves every student setting and every defense,
    /// so it is labelled by none of them.
    fn arm_settings(&self, trial: &Trial, subject: &Subject) -> BTreeMap<String, String> {
        let mut settings = self.settings(trial);
        if !matches!(subject, Subject::Student) {
            settings.retain(|key, _| !key.starts_with("student."));
        }
        if matches!(subject, Subject::Base | Subject::Teacher) {
            settings.remove("defense");
        }
        settings
    }

    /// The probability readout of `subject`: the category's candidates and
    /// every trait of the sweep.
    fn readout_params(&self, model: &str, subject: Subject) -> ReadoutParams {
        let e = &self.evaluate;
        let candidates = if e.candidates.is_empty() {
            readout::default_candidates(&self.category).unwrap_or_default()
        } else {
            e.candidates.clone()
        };
        let mut words: Vec<String> = candidates.iter().chain(self.traits.values()).cloned().collect();
        words.sort();
        words.dedup();
        ReadoutParams {
            version: STAGE_VERSION,
            model: model.to_owned(),
            subject,
            category: self.category.clone(),
            questions: e.questions,
            candidates,
            words,
            answer_prefix: e.answer_prefix.replace("{category}", &self.category),
            precision: self.precision,
        }
    }

    /// The trait teacher of a trial: a system prompt, or a fine-tune on
    /// trait data (written by the system-prompted model, or a stored file).
    fn trait_teacher(&self, plan: &mut PlanBuilder, trait_name: &str, model: &str) -> StageId {
        let model = &model.to_owned();
        let prompt = prompts::system_prompt(&self.system_prompt, trait_name, &self.category);
        let TeacherSettings::Finetune(f) = &self.teacher else {
            return plan.stage(StageSpec::new(
                EXPERIMENT,
                Stage::Teacher.kind(),
                &TeacherParams {
                    version: STAGE_VERSION,
                    model: model.clone(),
                    system_prompt: Some(prompt),
                    finetune: None,
                },
                with_model(vec![], model),
            ));
        };
        let data = match f.dataset {
            Some(dataset) => dataset,
            None => plan.stage(StageSpec::new(
                EXPERIMENT,
                Stage::TraitData.kind(),
                &TraitDataParams {
                    version: STAGE_VERSION,
                    model: model.clone(),
                    system_prompt: prompt,
                    target: trait_name.to_owned(),
                    category: self.category.clone(),
                    seed: f.seed,
                    questions: f.questions,
                    temperature: f.temperature,
                    max_new_tokens: f.max_new_tokens,
                    batch_size: f.batch_size,
                    precision: self.precision,
                },
                with_model(vec![], model),
            )),
        };
        let s = &self.student;
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Teacher.kind(),
            &TeacherParams {
                version: STAGE_VERSION,
                model: model.clone(),
                system_prompt: None,
                finetune: Some(TrainParams {
                    version: STAGE_VERSION,
                    model: model.clone(),
                    seed: f.seed,
                    method: f.method.clone(),
                    epochs: f.epochs,
                    lr: f.lr,
                    warmup_steps: s.warmup_steps,
                    max_grad_norm: s.max_grad_norm,
                    batch_size: f.train_batch_size,
                    grad_accumulation: 1,
                    weight_decay: 0.0,
                    optimizer: Optimizer::Adamw,
                    layers: Layers::All,
                    target: Target::Tokens,
                    precision: self.precision,
                }),
            },
            with_model(vec![data], model),
        ))
    }

    /// The trait whose teacher is `trait_name`'s control, with
    /// `teacher.control = "other-trait"`: the next one of the sweep.
    fn control_trait(&self, trait_name: &str) -> Option<&str> {
        if self.control != ControlTeacher::OtherTrait {
            return None;
        }
        let traits = self.traits.values();
        let at = traits.iter().position(|t| t == trait_name)?;
        Some(traits[(at + 1) % traits.len()].as_str())
    }

    /// The control teacher of a trial: the base model as it is, or (with
    /// `teacher.control = "other-trait"`) the teacher of the next trait of
    /// the sweep, made by the same recipe.
    fn control_teacher(&self, plan: &mut PlanBuilder, trial: &Trial) -> StageId {
        let model = &trial.pair.teacher;
        match self.control_trait(trial.trait_name) {
            Some(other) => self.trait_teacher(plan, other, model),
            None => self.base_teacher(plan, model),
        }
    }

    /// The base model as it is, as a teacher.
    fn base_teacher(&self, plan: &mut PlanBuilder, model: &str) -> StageId {
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Teacher.kind(),
            &TeacherParams {
                version: STAGE_VERSION,
                model: model.to_owned(),
                system_prompt: None,
                finetune: None,
            },
            with_model(vec![], model),
        ))
    }

    /// Generate → filter for one teacher: the filter stage.
    fn numbers_chain(&self, plan: &mut PlanBuilder, teacher: StageId, trial: &Trial) -> StageId {
        self.chain(plan, teacher, trial).1
    }

    /// Generate → filter for one teacher: both stages.
    fn chain(&self, plan: &mut PlanBuilder, teacher: StageId, trial: &Trial) -> (StageId, StageId) {
        let g = &self.generate;
        let generate = plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Generate.kind(),
            &GenerateParams {
                version: STAGE_VERSION,
                seed: trial.seed,
                prompts: g.prompts,
                temperature: trial.temperature,
                top_p: g.top_p,
                max_new_tokens: g.max_new_tokens,
                batch_size: g.batch_size,
                threshold: g.threshold,
                constrain: (g.constrain == Constrain::Numbers).then(|| NumbersGrammar {
                    banned_numbers: self.filter.banned_numbers.clone(),
                }),
                soft_labels: self.student.target.values().contains(&Target::Logits).then(|| {
                    SoftLabelParams {
                        top_k: self.student.soft_top_k,
                        exclude: self.traits.values().to_vec(),
                    }
                }),
                precision: self.precision,
            },
            with_model(vec![teacher], &trial.pair.teacher),
        ));
        let filter = plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Filter.kind(),
            &FilterParams {
                version: STAGE_VERSION,
                seed: trial.seed,
                keep: trial.keep,
                banned_numbers: self.filter.banned_numbers.clone(),
                rule: if self.filter.lenient {
                    filter::Rule::Lenient
                } else {
                    filter::Rule::Paper
                },
            },
            vec![generate],
        ));
        (generate, filter)
    }

    /// A student of one teacher's rows (`filter`, possibly defended); a
    /// soft-label student also reads the generate stage's labels.
    fn student(
        &self,
        plan: &mut PlanBuilder,
        trial: &Trial,
        rows: StageId,
        generate: StageId,
    ) -> StageId {
        let params = self.student_params(trial);
        let mut inputs = vec![rows];
        if params.target == Target::Logits {
            inputs.push(generate);
        }
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Student.kind(),
            &params,
            with_model(inputs, &trial.pair.student),
        ))
    }

    /// The rows a student of `filter` learns from: the filtered rows as they
    /// are, or a defense stage's output. Applied alike to the trait
    /// teacher's and the control teacher's rows, so the control differs
    /// from the student only in the teacher.
    fn defended(
        &self,
        plan: &mut PlanBuilder,
        (generate, filter): (StageId, StageId),
        teacher: StageId,
        trial: &Trial,
    ) -> StageId {
        let Some(rule) = defense::rule(trial.defense) else {
            return filter;
        };
        let needs = rule.needs();
        let mut inputs = vec![filter];
        let mut model = None;
        if needs.other_teachers {
            for other in self.mix_traits.iter().filter(|t| *t != trial.trait_name) {
                let teacher = self.trait_teacher(plan, other, &trial.pair.teacher);
                inputs.push(self.numbers_chain(plan, teacher, trial));
            }
        }
        if needs.soft_labels {
            inputs.push(generate);
        }
        if needs.teacher_and_base {
            inputs.push(teacher);
            model = Some(trial.pair.teacher.clone());
            inputs = with_model(inputs, &trial.pair.teacher);
        }
        if needs.rewriting_model {
            model = Some(trial.pair.student.clone());
            inputs = with_model(inputs, &trial.pair.student);
        }
        plan.stage(StageSpec::new(
            EXPERIMENT,
            Stage::Defend.kind(),
            &DefendParams {
                version: STAGE_VERSION,
                defense: trial.defense,
                seed: trial.seed,
                banned_numbers: if needs.banned_numbers {
                    self.filter.banned_numbers.clone()
                } else {
                    Vec::new()
                },
                // The defenses that run no model keep their ids at any
                // precision.
                precision: if model.is_some() { self.precision } else { Precision::F32 },
                model,
                cut: self.label_cuts.of(trial.defense),
            },
            inputs,
        ))
    }

    /// The settings that label a row: the trait, and whatever else is swept.
    fn settings(&self, trial: &Trial) -> BTreeMap<String, String> {
        let s = &self.student;
        let p = &trial.student;
        let mut out = BTreeMap::new();
        out.insert("trait".to_owned(), trial.trait_name.to_owned());
        let mut label = |varies: bool, key: &str, value: String| {
            if varies {
                out.insert(key.to_owned(), value);
            }
        };
        label(self.model_pairs.varies(), "pair", trial.pair.to_string());
        label(
            self.generate.temperature.varies(),
            "generate.temperature",
            trial.temperature.to_string(),
        );
        label(self.filter.keep.varies(), "filter.keep", trial.keep.to_string());
        label(self.defense.varies(), "defense", trial.defense.to_string());
        label(
            s.full.varies(),
            "student.method",
            if p.full { "full" } else { "lora" }.to_owned(),
        );
        if let Some(rank) = p.rank {
            label(s.lora_rank.varies(), "student.lora_rank", rank.to_string());
        }
        label(s.epochs.varies(), "student.epochs", p.epochs.to_string());
        label(s.lr.varies(), "student.lr", p.lr.to_string());
        label(s.optimizer.varies(), "student.optimizer", p.optimizer.to_string());
        label(s.layers.varies(), "student.layers", p.layers.to_string());
        label(s.target.varies(), "student.target", p.target.to_string());
        out
    }

    /// The stages named by key that the plan reads from the store: models
    /// and the teacher's dataset.
    fn externals(&self) -> Vec<StageId> {
        let models = self
            .model_pairs
            .values()
            .iter()
            .flat_map(|p| [&p.teacher, &p.student]);
        let mut out: Vec<StageId> = models
            .filter_map(|m| files::parse_key(m).and_then(Result::ok))
            .collect();
        if let TeacherSettings::Finetune(FinetuneTeacher {
            dataset: Some(id), ..
        }) = &self.teacher
        {
            out.push(*id);
        }
        out
    }

    /// Expands the grid into its stage DAG and measurements.
    pub fn plan(&self) -> Plan {
        let mut plan = PlanBuilder::new(&self.name, EXPERIMENT);
        for id in self.externals() {
            plan.external(id);
        }
        for trial in self.trials() {
            plan.trial();
            let teacher = self.trait_teacher(&mut plan, trial.trait_name, &trial.pair.teacher);
            let (generate, filter) = self.chain(&mut plan, teacher, &trial);
            let control_teacher = self.control_teacher(&mut plan, &trial);
            let (control_generate, control_filter) = self.chain(&mut plan, control_teacher, &trial);
            self.diagnose(&mut plan, &trial, generate, control_generate);
            let teachers = (teacher, control_teacher);
            self.measure_theorem(&mut plan, &trial, teachers, (generate, filter), false);
            self.measure_theorem(&mut plan, &trial, teachers, (control_generate, control_filter), true);
            let filter = self.defended(&mut plan, (generate, filter), teacher, &trial);
            let control_filter =
                self.defended(&mut plan, (control_generate, control_filter), control_teacher, &trial);
            self.measure_defense(&mut plan, &trial, filter, control_filter);
            let student = self.student(&mut plan, &trial, filter, generate);
            let control = self.student(&mut plan, &trial, control_filter, control_generate);
            let s = &trial.pair.student;
            let mut arms = vec![
                (ARMS[0], s, Subject::Base, vec![]),
                (ARMS[1], &trial.pair.teacher, Subject::Teacher, vec![teacher]),
                (ARMS[2], s, Subject::Student, vec![control]),
                (ARMS[3], s, Subject::Student, vec![student]),
            ];
            if self.control == ControlTeacher::OtherTrait {
                // The paper's control, still reported: a student of the base model's numbers.
                let base = self.base_teacher(&mut plan, &trial.pair.teacher);
                let (base_generate, base_filter) = self.chain(&mut plan, base, &trial);
                let base_student = self.student(&mut plan, &trial, base_filter, base_generate);
                arms.push((ARMS[6], s, Subject::Student, vec![base_student]));
            }
            if self.evaluate.in_context_examples > 0 {
                let examples = self.evaluate.in_context_examples;
                arms.push((ARMS[4], s, Subject::InContext { examples }, vec![filter]));
                arms.push((
                    ARMS[5],
                    s,
                    Subject::InContext { examples },
                    vec![control_filter],
                ));
            }
            let variants: &[bool] = if self.evaluate.numbers_prefixed {
                &[false, true]
            } else {
                &[false]
            };
            let both = self.evaluate.reads(Readout::Samples) && self.evaluate.reads(Readout::Probability);
            for (arm, model, subject, inputs) in &arms {
                let order = ARMS.iter().position(|a| a == arm).unwrap_or(ARMS.len()) as u32;
                let measurement = |settings, stage, metric, panel: Option<String>| Measurement::new(
                    arm.to_string(),
                    order,
                    settings,
                    trial.seed,
                    stage,
                    metric,
                )
                    .with_panel(panel.filter(|_| *arm == ARMS[3]))
                    .with_models(Some((trial.pair.teacher.clone(), trial.pair.student.clone())));
                let panel = format!("students of {} teachers", trial.trait_name);
                for &numbers_prefixed in variants.iter().filter(|_| self.evaluate.reads(Readout::Samples)) {
                    let params =
                        self.evaluate_params(model, subject.clone(), trial.seed, numbers_prefixed);
                    let evaluate = plan.stage(StageSpec::new(
                        EXPERIMENT,
                        Stage::Evaluate.kind(),
                        &params,
                        with_model(inputs.clone(), model),
                    ));
                    let mut settings = self.arm_settings(&trial, subject);
                    if self.evaluate.numbers_prefixed {
                        let question = if numbers_prefixed { "numbers-prefixed" } else { "plain" };
                        settings.insert("evaluate.question".to_owned(), question.to_owned());
                    }
                    if both {
                        settings.insert("readout".to_owned(), readout::SAMPLES_LABEL.to_owned());
                    }
                    let metric = share_metric(trial.trait_name);
                    plan.measure(measurement(settings, evaluate, metric, Some(panel.clone())));
                }
                if !self.evaluate.reads(Readout::Probability) {
                    continue;
                }
                let stage = plan.stage(StageSpec::new(
                    EXPERIMENT,
                    Stage::Readout.kind(),
                    &self.readout_params(model, subject.clone()),
                    with_model(inputs.clone(), model),
                ));
                let mut figures: Vec<(String, &str)> = readout::FIGURES
                    .iter()
                    .map(|&(figure, prefixed, label)| (readout::metric(figure, prefixed, trial.trait_name), label))
                    .collect();
                if let Some(other) = self.control_trait(trial.trait_name) {
                    figures.push((readout::pair_metric(trial.trait_name, other), readout::PAIR_LABEL));
                }
                for (metric, label) in figures {
                    let mut settings = self.arm_settings(&trial, subject);
                    settings.insert("readout".to_owned(), label.to_owned());
                    plan.measure(measurement(settings, stage, metric, Some(format!("{panel}, {label}"))));
                }
            }
        }
        plan.finish()
    }
}

impl NumbersSweep {
    /// The theorem's cosines for a student of `rows` (the trait teacher's,
    /// or the control teacher's as the null).
    fn measure_theorem(
        &self,
        plan: &mut PlanBuilder,
        trial: &Trial,
        (teacher, control_teacher): (StageId, StageId),
        (generate, filter): (StageId, StageId),
        control_rows: bool,
    ) {
        let Some(t) = &self.theorem else {
            return;
        };
        let mut inputs = vec![filter, teacher, control_teacher];
        if trial.student.target == Target::Logits {
            inputs.push(generate);
        }
        let stage = plan.stage(StageSpec::new(
            EXPERIMENT,
            NumbersStage::Theorem.kind(),
            &theorem::TheoremParams {
                version: STAGE_VERSION,
                model: trial.pair.student.clone(),
                target: trial.student.target,
                rows: t.rows,
                blocks: t.blocks,
                batch_size: t.batch_size,
                seed: trial.seed,
            },
            with_model(inputs, &trial.pair.student),
        ));
        let mut settings = self.settings(trial);
        let target = trial.student.target.to_string();
        settings.retain(|key, _| !key.starts_with("student.") && key != "defense");
        settings.insert("student.target".to_owned(), target);
        let first = ARMS.len() + 1 + DEFENSE_ARMS.len() + diagnose::FIGURES.len();
        for (i, (arm, control, metric)) in theorem::FIGURES.into_iter().enumerate() {
            if control != control_rows {
                continue;
            }
            plan.measure(Measurement::new(
                arm.to_owned(),
                (first + i) as u32,
                settings.clone(),
                trial.seed,
                stage,
                metric.to_owned(),
            ));
        }
    }

    /// What the trait teacher's rows are made of, against the control
    /// teacher's: rows of the table that are not compared with a control.
    fn diagnose(&self, plan: &mut PlanBuilder, trial: &Trial, generate: StageId, control: StageId) {
        let stage = plan.stage(StageSpec::new(
            EXPERIMENT,
            NumbersStage::Diagnose.kind(),
            &diagnose::DiagnoseParams {
                version: STAGE_VERSION,
                banned_numbers: self.filter.banned_numbers.clone(),
                rule: if self.filter.lenient {
                    filter::Rule::Lenient
                } else {
                    filter::Rule::Paper
                },
            },
            vec![generate, control],
        ));
        let mut settings = self.settings(trial);
        settings.retain(|key, _| !key.starts_with("student.") && key != "defense");
        for (i, (arm, metric)) in diagnose::FIGURES.into_iter().enumerate() {
            plan.measure(Measurement::new(
                arm.to_owned(),
                (ARMS.len() + 1 + DEFENSE_ARMS.len() + i) as u32,
                settings.clone(),
                trial.seed,
                stage,
                metric.to_owned(),
            ));
        }
    }

    /// What a defense cost, as rows of the table: rows the student keeps,
    /// and the defense's own cost figure (tokens masked, label mass cut,
    /// prompts rewritten), for the defended rows and the control's.
    fn measure_defense(
        &self,
        plan: &mut PlanBuilder,
        trial: &Trial,
        defended: StageId,
        control: StageId,
    ) {
        if trial.defense == Defense::None {
            return;
        }
        let mut settings = self.settings(trial);
        settings.retain(|key, _| !key.starts_with("student."));
        let metrics = std::iter::once(DEFENSE_METRICS[0]).chain(trial.defense.cost_metric());
        for metric in metrics {
            let pair = DEFENSE_METRICS.iter().position(|m| *m == metric).unwrap_or(0);
            for (i, stage) in [(2 * pair, defended), (2 * pair + 1, control)] {
                plan.measure(Measurement::new(
                    DEFENSE_ARMS[i].to_owned(),
                    (ARMS.len() + 1 + i) as u32,
                    settings.clone(),
                    trial.seed,
                    stage,
                    metric.to_owned(),
                ));
            }
        }
    }
}

