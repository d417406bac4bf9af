//! The theorem for language models (`[theorem]` in a numbers sweep with
//! fine-tuned teachers): for each student, the cosine between its first
//! update on its dataset (the loss gradient at the base model, over the
//! matrices the teacher's fine-tune changed) and the teacher's weight
//! change, with a bootstrap interval over blocks of rows. Measured for the
//! trait teacher's rows and, as the null, the control teacher's rows;
//! against the trait teacher's whole change and against its trait-specific
//! part (the trait teacher's change minus the control teacher's, both made
//! by the same recipe), since two teachers that learned the same number
//! format share most of their change.

use serde::{Deserialize, Serialize};

use crate::llm::Target;

/// `[theorem]`: how many rows each measurement reads, in how many blocks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TheoremSettings {
    #[serde(default = "d_rows")]
    pub rows: u64,
    #[serde(default = "d_blocks")]
    pub blocks: u64,
    #[serde(default = "d_batch")]
    pub batch_size: u64,
}

fn d_rows() -> u64 {
    200
}
fn d_blocks() -> u64 {
    10
}
fn d_batch() -> u64 {
    8
}

impl TheoremSettings {
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !(1..=1_000_000).contains(&self.rows) {
            return Err(("rows", "a number of rows from 1 to 1000000"));
        }
        if !(2..=100).contains(&self.blocks) {
            return Err(("blocks", "2 to 100 blocks of rows (the bootstrap resamples them)"));
        }
        if !(1..=4096).contains(&self.batch_size) {
            return Err(("batch_size", "a batch size from 1 to 4096"));
        }
        Ok(())
    }
}

/// Inputs: the rows (a filter stage, 0), the trait teacher (1), the
/// control teacher (2), and for soft labels the rows' generate stage (3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TheoremParams {
    pub version: u32,
    pub model: String,
    pub target: Target,
    pub rows: u64,
    pub blocks: u64,
    pub batch_size: u64,
    pub seed: u64,
}

/// The rows of the table: arm, whose rows, and the metric.
pub const FIGURES: [(&str, bool, &str); 4] = [
    ("theorem: cos(update, teacher change)", false, "cos_whole"),
    ("theorem: cos(update, teacher change), control rows", true, "cos_whole"),
    ("theorem: cos(update, trait-specific change)", false, "cos_specific"),
    ("theorem: cos(update, trait-specific change), control rows", true, "cos_specific"),
];
