//! `shuffle`: the numbers of each completion permuted with the stage's seed,
//! the format kept: whatever an order carries is gone, the numbers stay.

use rand::seq::SliceRandom;

use super::{replace_numbers, row_rng, Rewrite, RowDefense};
use crate::llm::filter;

/// The `shuffle` defense.
pub struct Shuffle;

impl RowDefense for Shuffle {
    fn rewrite(&self) -> Option<Rewrite> {
        Some(|completion, _, seed, row| Some(shuffle(completion, seed, row)))
    }
}

/// The completion with its numbers permuted (each number's digits kept as
/// written); separators and brackets stay where they were.
pub fn shuffle(completion: &str, seed: u64, row: usize) -> String {
    let spans = filter::digit_runs(completion);
    let mut numbers: Vec<String> = spans
        .iter()
        .map(|&(s, e)| completion[s..e].to_owned())
        .collect();
    numbers.shuffle(&mut row_rng(seed, row));
    replace_numbers(completion, &spans, &numbers)
}
