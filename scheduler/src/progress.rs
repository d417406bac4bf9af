//! What the scheduler keeps per sweep: the plan's stages and, for each, how
//! far it has come, in as few bytes as a million-stage sweep allows.
//!
//! Per stage it holds the stage itself (to build its task body when it
//! becomes ready, or again if its task vanishes), one entry of an id → index
//! map (to match completion events), a state byte, a count of inputs not yet
//! done, and its dependents as `u32` indices in one flat array. Readiness is
//! driven by events: a completion decrements its dependents' counts, and a
//! stage whose count reaches zero joins the ready list. No pass over every
//! stage happens per tick, so a tick costs what changed, not the sweep's size.

use std::collections::{HashMap, HashSet};

use subliminal_shared::plan::Plan;
use subliminal_shared::stage::{StageId, StageSpec};

/// Where a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageState {
    /// Some input is not done yet, or it is ready and not yet enqueued.
    Waiting,
    /// A task for it was put in Redis.
    Enqueued,
    /// Its manifest is in the store (or its completion was seen).
    Done,
}

pub struct SweepProgress {
    pub priority: i64,
    /// The plan's stages, inputs first.
    stages: Vec<StageSpec>,
    index: HashMap<StageId, u32>,
    state: Vec<StageState>,
    /// Inputs of each stage that are not done yet.
    waiting_on: Vec<u32>,
    /// Dependents of stage `i`: `dependents[dependent_start[i]..dependent_start[i + 1]]`.
    dependent_start: Vec<u32>,
    dependents: Vec<u32>,
    /// Stages whose inputs are all done, not yet enqueued (may hold stale entries).
    ready: Vec<u32>,
    done: usize,
    /// Where the next resync pass starts, so that each pass checks a bounded slice.
    resync_cursor: usize,
}

impl SweepProgress {
    /// The plan's stages with those in `done` marked done. Stages outside the
    /// plan (`external`) count as done inputs.
    pub fn new(plan: Plan, priority: i64, done: &HashSet<StageId>) -> Self {
        let stages = plan.stages;
        let index: HashMap<StageId, u32> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i as u32))
            .collect();
        let mut counts = vec![0u32; stages.len() + 1];
        let mut waiting_on = vec![0u32; stages.len()];
        for (i, stage) in stages.iter().enumerate() {
            for input in &stage.inputs {
                if let Some(&from) = index.get(input) {
                    counts[from as usize + 1] += 1;
                    waiting_on[i] += 1;
                }
            }
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let dependent_start = counts.clone();
        let mut dependents = vec![0u32; *counts.last().unwrap_or(&0) as usize];
        for (i, stage) in stages.iter().enumerate() {
            for input in &stage.inputs {
                if let Some(&from) = index.get(input) {
                    let slot = &mut counts[from as usize];
                    dependents[*slot as usize] = i as u32;
                    *slot += 1;
                }
            }
        }
        let ready = (0..stages.len() as u32)
            .filter(|&i| waiting_on[i as usize] == 0)
            .collect();
        let mut progress = Self {
            priority,
            state: vec![StageState::Waiting; stages.len()],
            stages,
            index,
            waiting_on,
            dependent_start,
            dependents,
            ready,
            done: 0,
            resync_cursor: 0,
        };
        for id in done {
            progress.mark_done(*id);
        }
        progress
    }

    pub fn len(&self) -> usize {
        self.stages.len()
    }

    pub fn done(&self) -> usize {
        self.done
    }

    /// Marks a stage done and readies the dependents it was the last input of.
    /// Returns false when the stage is not in this sweep or was done already.
    pub fn mark_done(&mut self, id: StageId) -> bool {
        let Some(&i) = self.index.get(&id) else {
            return false;
        };
        let i = i as usize;
        if self.state[i] == StageState::Done {
            return false;
        }
        self.state[i] = StageState::Done;
        self.done += 1;
        let (from, to) = (
            self.dependent_start[i] as usize,
            self.dependent_start[i + 1] as usize,
        );
        for &d in &self.dependents[from..to] {
            let waiting = &mut self.waiting_on[d as usize];
            *waiting = waiting.saturating_sub(1);
            if *waiting == 0 {
                self.ready.push(d);
            }
        }
        true
    }

    /// Takes the stages that are ready and not enqueued, up to `max`.
    pub fn take_ready(&mut self, max: usize) -> Vec<&StageSpec> {
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some(i) = self.ready.pop() else { break };
            let i = i as usize;
            if self.state[i] == StageState::Waiting && self.waiting_on[i] == 0 {
                self.state[i] = StageState::Enqueued;
                taken.push(i);
            }
        }
        taken.into_iter().map(|i| &self.stages[i]).collect()
    }

    /// Whether any stage waits to be enqueued.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Puts an enqueued stage whose task vanished back among the ready ones.
    pub fn requeue(&mut self, id: StageId) {
        if let Some(&i) = self.index.get(&id) {
            if self.state[i as usize] == StageState::Enqueued {
                self.state[i as usize] = StageState::Waiting;
                self.ready.push(i);
            }
        }
    }

    /// Up to `max` enqueued, not done stages, continuing where the last call ended.
    pub fn enqueued_slice(&mut self, max: usize) -> Vec<StageId> {
        let n = self.stages.len();
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < n && out.len() < max {
            let i = (self.resync_cursor + seen) % n;
            if self.state[i] == StageState::Enqueued {
                out.push(self.stages[i].id);
            }
            seen += 1;
        }
        self.resync_cursor = (self.resync_cursor + seen) % n.max(1);
        out
    }

    /// How many stages are enqueued and not done.
    pub fn enqueued(&self) -> usize {
        self.state
            .iter()
            .filter(|s| **s == StageState::Enqueued)
            .count()
    }

    /// Every enqueued stage, for the check whether all of them are dead.
    pub fn all_enqueued(&self) -> Vec<StageId> {
        self.state
            .iter()
            .zip(&self.stages)
            .filter(|(s, _)| **s == StageState::Enqueued)
            .map(|(_, stage)| stage.id)
            .collect()
    }

    /// Whether every stage is done, or can never be because it is (or
    /// depends on) one of `dead`.
    pub fn finished_with(&self, dead: &[StageId]) -> bool {
        let mut blocked = vec![false; self.stages.len()];
        for id in dead {
            if let Some(&i) = self.index.get(id) {
                blocked[i as usize] = true;
            }
        }
        // Inputs come first, so one forward pass carries blocking down the DAG.
        for i in 0..self.stages.len() {
            if blocked[i] {
                let (from, to) = (
                    self.dependent_start[i] as usize,
                    self.dependent_start[i + 1] as usize,
                );
                for &d in &self.dependents[from..to] {
                    blocked[d as usize] = true;
                }
            }
        }
        (0..self.stages.len()).all(|i| self.state[i] == StageState::Done || blocked[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subliminal_shared::plan::PlanBuilder;
    use subliminal_shared::stage::StageKind;

    /// a → b → d, a → c → d.
    fn diamond() -> (Plan, [StageId; 4]) {
        let mut p = PlanBuilder::new("s", "noop");
        let stage = |n: u32, inputs: Vec<StageId>| {
            StageSpec::new("noop", StageKind::from_static("work"), &n, inputs)
        };
        let a = p.stage(stage(0, vec![]));
        let b = p.stage(stage(1, vec![a]));
        let c = p.stage(stage(2, vec![a]));
        let d = p.stage(stage(3, vec![b, c]));
        (p.finish(), [a, b, c, d])
    }

    fn ids(specs: Vec<&StageSpec>) -> Vec<StageId> {
        let mut ids: Vec<StageId> = specs.iter().map(|s| s.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_stage_is_ready_once_its_last_input_is_done_and_taken_once() {
        let (plan, [a, b, c, d]) = diamond();
        let mut p = SweepProgress::new(plan, 0, &HashSet::new());
        assert_eq!(ids(p.take_ready(10)), vec![a]);
        assert!(p.take_ready(10).is_empty(), "taken once");
        assert!(p.mark_done(a));
        assert!(!p.mark_done(a), "done once");
        let mut bc = vec![b, c];
        bc.sort();
        assert_eq!(ids(p.take_ready(10)), bc);
        p.mark_done(b);
        assert!(p.take_ready(10).is_empty(), "d still waits on c");
        p.mark_done(c);
        assert_eq!(ids(p.take_ready(10)), vec![d]);
        p.mark_done(d);
        assert_eq!(p.done(), 4);
        assert!(p.finished_with(&[]));
    }

    #[test]
    fn done_stages_from_the_store_ready_their_dependents() {
        let (plan, [a, b, c, _]) = diamond();
        let mut p = SweepProgress::new(plan, 0, &[a, b].into_iter().collect());
        assert_eq!(p.done(), 2);
        assert_eq!(ids(p.take_ready(10)), vec![c]);
    }

    #[test]
    fn a_vanished_task_is_ready_again_and_a_dead_one_blocks_its_descendants() {
        let (plan, [a, b, c, _]) = diamond();
        let mut p = SweepProgress::new(plan, 0, &HashSet::new());
        p.take_ready(10);
        assert_eq!(p.enqueued_slice(10), vec![a]);
        p.requeue(a);
        assert_eq!(ids(p.take_ready(10)), vec![a]);
        p.mark_done(a);
        p.take_ready(10);
        p.mark_done(b);
        assert!(!p.finished_with(&[]));
        assert!(p.finished_with(&[c]), "d is blocked by the dead c");
    }
}
