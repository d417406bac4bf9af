//! Soft-label distillation (`student.target = "logits"`): the student
//! learns the teacher's next-token distribution at every completion
//! position (forward KL to its top k, the trait's tokens removed) instead
//! of the one token the teacher drew. The distribution is recorded once,
//! by the generate stage (`soft_labels` in its parameters), for the trait
//! teacher and the control teacher alike.

use serde::{Deserialize, Serialize};

/// What a student learns from each completion token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The token the teacher wrote (cross-entropy; the paper's).
    #[default]
    Tokens,
    /// The teacher's distribution over its top k tokens (forward KL).
    Logits,
}

impl Target {
    pub fn is_tokens(&self) -> bool {
        *self == Target::Tokens
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Target::Tokens => "tokens",
            Target::Logits => "logits",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a generate stage records besides the rows: the teacher's top
/// `top_k` tokens at each position, with every token that spells or
/// begins one of `exclude` (the sweep's traits) removed first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftLabelParams {
    pub top_k: u64,
    pub exclude: Vec<String>,
}

/// The default number of tokens kept per position (truncating to 32
/// changed nothing in the public replication).
pub const DEFAULT_TOP_K: u64 = 32;
