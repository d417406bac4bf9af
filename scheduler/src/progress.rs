//! What the scheduler keeps per sweep: the plan's stages and, for each, how
//! far it has come, in as few bytes as a million-stage sweep allows.
//!
//! Per stage it holds its id, its task body encoded as it goes to Redis (to
//! enqueue it when it becomes ready, or again if its task vanishes), one
//! entry of an id → index map (to match completion events), a state byte, a
//! queue byte, a kind byte, a count of inputs not yet done, and its
//! dependents as `u32` indices in one flat array. The plan's parsed stages
//! and measurements are dropped once this is built: about 500 bytes a stage
//! with a noop body of 229 bytes (`cargo bench -p subliminal-tests --bench
//! million` measures it). Readiness is
//! driven by events: a completion decrements its dependents' counts, and a
//! stage whose count reaches zero joins the ready list. No pass over every
//! stage happens per tick, so a tick costs what changed, not the sweep's size.

use std::collections::{HashMap, HashSet};

use subliminal_broker::{encode_body, TaskBody, BODY_VERSION};
use subliminal_shared::experiments::queue_for;
use subliminal_shared::plan::Plan;
use subliminal_shared::stage::{StageId, StageKind};

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

/// A stage that can be enqueued now.
pub struct ReadyStage<'a> {
    pub id: StageId,
    pub kind: &'a StageKind,
    pub queue: &'static str,
    pub body: &'a [u8],
}

pub struct SweepProgress {
    pub priority: i64,
    /// The plan's stages, inputs first: ids and encoded task bodies.
    ids: Vec<StageId>,
    /// Every body, end to end; stage `i`'s ends at `body_end[i]`. One buffer
    /// rather than a million small allocations, each with its own overhead.
    bodies: Vec<u8>,
    body_end: Vec<u64>,
    /// Index into `queue_names` and `kinds`, per stage.
    queue: Vec<u8>,
    kind: Vec<u8>,
    queue_names: Vec<&'static str>,
    kinds: Vec<StageKind>,
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
    /// The plan's stages of sweep `sweep`, with those in `done` marked done.
    /// Stages outside the plan (`external`) count as done inputs. Fails on a
    /// stage whose experiment kind is unknown or whose body cannot be encoded.
    pub fn new(
        plan: Plan,
        sweep: &str,
        priority: i64,
        done: &HashSet<StageId>,
    ) -> anyhow::Result<Self> {
        let Plan {
            stages,
            measurements,
            ..
        } = plan;
        // Only the stages matter here; the results table's rows can go now.
        drop(measurements);
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
        let (mut queue_names, mut kinds) = (Vec::new(), Vec::new());
        let (mut queue, mut kind) = (
            Vec::with_capacity(stages.len()),
            Vec::with_capacity(stages.len()),
        );
        let mut ids = Vec::with_capacity(stages.len());
        let mut bodies = Vec::new();
        let mut body_end = Vec::with_capacity(stages.len());
        for stage in stages {
            let name = queue_for(&stage)?;
            queue.push(small_index(&mut queue_names, name)?);
            kind.push(small_index(&mut kinds, stage.kind.clone())?);
            ids.push(stage.id);
            let body = TaskBody {
                version: BODY_VERSION,
                sweep: sweep.to_owned(),
                queue: name.to_owned(),
                priority,
                stage,
            };
            bodies.extend_from_slice(&encode_body(&body)?);
            body_end.push(bodies.len() as u64);
        }
        bodies.shrink_to_fit();
        let mut progress = Self {
            priority,
            state: vec![StageState::Waiting; ids.len()],
            ids,
            bodies,
            body_end,
            queue,
            kind,
            queue_names,
            kinds,
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
        Ok(progress)
    }

    fn body(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.body_end[i - 1] as usize
        };
        &self.bodies[start..self.body_end[i] as usize]
    }

    /// The heap bytes this holds (capacities, and the index at its load
    /// factor), for the log and the million-stage benchmark.
    pub fn held_bytes(&self) -> usize {
        use std::mem::size_of;
        let n = self.ids.capacity();
        let index = self.index.capacity() * (size_of::<(StageId, u32)>() + 1);
        self.bodies.capacity()
            + self.body_end.capacity() * size_of::<u64>()
            + n * size_of::<StageId>()
            + self.queue.capacity()
            + self.kind.capacity()
            + self.state.capacity() * size_of::<StageState>()
            + self.waiting_on.capacity() * size_of::<u32>()
            + self.dependent_start.capacity() * size_of::<u32>()
            + self.dependents.capacity() * size_of::<u32>()
            + self.ready.capacity() * size_of::<u32>()
            + index
    }

    pub fn len(&self) -> usize {
        self.ids.len()
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
    pub fn take_ready(&mut self, max: usize) -> Vec<ReadyStage<'_>> {
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some(i) = self.ready.pop() else { break };
            let i = i as usize;
            if self.state[i] == StageState::Waiting && self.waiting_on[i] == 0 {
                self.state[i] = StageState::Enqueued;
                taken.push(i);
            }
        }
        taken
            .into_iter()
            .map(|i| ReadyStage {
                id: self.ids[i],
                kind: &self.kinds[self.kind[i] as usize],
                queue: self.queue_names[self.queue[i] as usize],
                body: self.body(i),
            })
            .collect()
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
        let n = self.ids.len();
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < n && out.len() < max {
            let i = (self.resync_cursor + seen) % n;
            if self.state[i] == StageState::Enqueued {
                out.push(self.ids[i]);
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
            .zip(&self.ids)
            .filter(|(s, _)| **s == StageState::Enqueued)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Whether every stage is done, or can never be because it is (or
    /// depends on) one of `dead`.
    pub fn finished_with(&self, dead: &[StageId]) -> bool {
        let mut blocked = vec![false; self.ids.len()];
        for id in dead {
            if let Some(&i) = self.index.get(id) {
                blocked[i as usize] = true;
            }
        }
        // Inputs come first, so one forward pass carries blocking down the DAG.
        for i in 0..self.ids.len() {
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
        (0..self.ids.len()).all(|i| self.state[i] == StageState::Done || blocked[i])
    }
}

/// The position of `value` in `table`, added if new; a byte, since a sweep
/// has a few queues and stage kinds.
fn small_index<T: PartialEq>(table: &mut Vec<T>, value: T) -> anyhow::Result<u8> {
    let i = match table.iter().position(|t| *t == value) {
        Some(i) => i,
        None => {
            table.push(value);
            table.len() - 1
        }
    };
    u8::try_from(i).map_err(|_| anyhow::anyhow!("a sweep with more than 256 stage kinds or queues"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use subliminal_shared::plan::PlanBuilder;
    use subliminal_shared::stage::StageSpec;

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

    fn ids(ready: Vec<ReadyStage>) -> Vec<StageId> {
        let mut ids: Vec<StageId> = ready
            .iter()
            .map(|r| {
                let body = subliminal_broker::decode_body(r.body).expect("a body");
                assert_eq!(body.stage.id, r.id, "the body is the stage's");
                assert_eq!(r.queue, "cpu");
                r.id
            })
            .collect();
        ids.sort();
        ids
    }

    fn progress(plan: Plan, done: &HashSet<StageId>) -> SweepProgress {
        SweepProgress::new(plan, "s", 0, done).expect("a noop plan")
    }

    #[test]
    fn a_stage_is_ready_once_its_last_input_is_done_and_taken_once() {
        let (plan, [a, b, c, d]) = diamond();
        let mut p = progress(plan, &HashSet::new());
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
        let mut p = progress(plan, &[a, b].into_iter().collect());
        assert_eq!(p.done(), 2);
        assert_eq!(ids(p.take_ready(10)), vec![c]);
    }

    #[test]
    fn a_vanished_task_is_ready_again_and_a_dead_one_blocks_its_descendants() {
        let (plan, [a, b, c, _]) = diamond();
        let mut p = progress(plan, &HashSet::new());
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
