//! The plan of a sweep: its stage DAG and the measurements its results table
//! is made of.
//!
//! Stages are listed inputs-first and each appears once, however many trials
//! share it. A measurement names the evaluate stage whose `metrics.json`
//! holds one figure of the table, with the arm and settings it belongs to.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::stage::{StageId, StageKind, StageSpec};

/// A sweep expanded into work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub sweep: String,
    pub experiment: String,
    pub trials: usize,
    pub stages: Vec<StageSpec>,
    pub measurements: Vec<Measurement>,
    /// Stages the plan reads but does not make: files put in the store and
    /// other sweeps' checkpoints, named by key. They must be in the store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<StageId>,
}

/// One figure of the results table, read from an evaluate stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The row it belongs to, e.g. `student same-init aux`.
    pub arm: String,
    /// Where the arm sorts in the table (reference first, then teacher, students).
    pub order: u32,
    /// The swept settings (besides the seed) that this figure depends on.
    pub settings: BTreeMap<String, String>,
    pub seed: u64,
    pub teacher_init: Option<u64>,
    pub student_init: Option<u64>,
    /// The evaluate stage that produces the figure.
    pub stage: StageId,
    /// The key inside that stage's `metrics.json`.
    pub metric: String,
    /// For student arms: which panel of the transfer-grid plot it belongs to.
    pub panel: Option<String>,
    /// The (teacher, student) models, where families are named models rather
    /// than init seeds: the transfer grid's axes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<(String, String)>,
}

impl Measurement {
    /// A figure of `arm` read from `stage`'s `metric`, with no init seeds,
    /// panel or models (the setters below add them).
    pub fn new(
        arm: String,
        order: u32,
        settings: BTreeMap<String, String>,
        seed: u64,
        stage: StageId,
        metric: String,
    ) -> Self {
        Self {
            arm,
            order,
            settings,
            seed,
            teacher_init: None,
            student_init: None,
            stage,
            metric,
            panel: None,
            models: None,
        }
    }

    pub fn with_inits(mut self, teacher: Option<u64>, student: Option<u64>) -> Self {
        (self.teacher_init, self.student_init) = (teacher, student);
        self
    }

    pub fn with_panel(mut self, panel: Option<String>) -> Self {
        self.panel = panel;
        self
    }

    pub fn with_models(mut self, models: Option<(String, String)>) -> Self {
        self.models = models;
        self
    }
}

impl Plan {
    pub fn index(&self) -> HashMap<StageId, &StageSpec> {
        self.stages.iter().map(|s| (s.id, s)).collect()
    }

    pub fn count_by_kind(&self) -> BTreeMap<StageKind, usize> {
        let mut counts = BTreeMap::new();
        for stage in &self.stages {
            *counts.entry(stage.kind.clone()).or_default() += 1;
        }
        counts
    }

    /// The stage kinds of the plan in pipeline order: the order in which
    /// each first appears, inputs first (teacher before student).
    pub fn kinds(&self) -> Vec<StageKind> {
        let mut kinds: Vec<StageKind> = Vec::new();
        for stage in &self.stages {
            if !kinds.contains(&stage.kind) {
                kinds.push(stage.kind.clone());
            }
        }
        kinds
    }

    /// Stages not yet done whose inputs all are (external ones count as
    /// done): what a scheduler may start now.
    pub fn ready<'a>(
        &'a self,
        done: &'a HashSet<StageId>,
    ) -> impl Iterator<Item = &'a StageSpec> + 'a {
        self.stages.iter().filter(|s| {
            !done.contains(&s.id)
                && s.inputs
                    .iter()
                    .all(|i| done.contains(i) || self.external.contains(i))
        })
    }

    /// Every stage that depends, directly or not, on `id`.
    pub fn descendants(&self, id: StageId) -> HashSet<StageId> {
        let mut found = HashSet::new();
        // Inputs come first in `stages`, so one forward pass sees every path.
        for stage in &self.stages {
            if stage.inputs.iter().any(|i| *i == id || found.contains(i)) {
                found.insert(stage.id);
            }
        }
        found
    }
}

/// Builds a plan, keeping each stage and each measurement once.
#[derive(Debug)]
pub struct PlanBuilder {
    plan: Plan,
    stages: HashSet<StageId>,
    /// (arm, stage, metric): one evaluation may feed several rows, e.g. the
    /// base model's answers scored for each trait of a sweep.
    measurements: HashSet<(String, StageId, String)>,
}

impl PlanBuilder {
    pub fn new(sweep: &str, experiment: &str) -> Self {
        Self {
            plan: Plan {
                sweep: sweep.to_owned(),
                experiment: experiment.to_owned(),
                trials: 0,
                stages: Vec::new(),
                measurements: Vec::new(),
                external: Vec::new(),
            },
            stages: HashSet::new(),
            measurements: HashSet::new(),
        }
    }

    /// Adds a stage (once) and returns its id. Its inputs must be added
    /// first, as stages or as external ones.
    pub fn stage(&mut self, spec: StageSpec) -> StageId {
        let id = spec.id;
        debug_assert!(spec
            .inputs
            .iter()
            .all(|i| self.stages.contains(i) || self.plan.external.contains(i)));
        if self.stages.insert(id) {
            self.plan.stages.push(spec);
        }
        id
    }

    /// Records a stage that is read from the store, not made (once); returns its id.
    pub fn external(&mut self, id: StageId) -> StageId {
        if !self.plan.external.contains(&id) {
            self.plan.external.push(id);
        }
        id
    }

    pub fn measure(&mut self, measurement: Measurement) {
        let key = (
            measurement.arm.clone(),
            measurement.stage,
            measurement.metric.clone(),
        );
        if self.measurements.insert(key) {
            self.plan.measurements.push(measurement);
        }
    }

    pub fn trial(&mut self) {
        self.plan.trials += 1;
    }

    pub fn finish(self) -> Plan {
        self.plan
    }
}
