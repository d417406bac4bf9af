//! `random`: each number replaced by one drawn uniformly from 0–999 with the
//! stage's seed, the format kept: the floor, where only the format is left.

use rand::Rng;

use super::{replace_numbers, row_rng, Needs, Rewrite, RowDefense};
use crate::llm::filter;

/// The `random` defense.
pub struct Random;

impl RowDefense for Random {
    /// It never draws a number the filter bans.
    fn needs(&self) -> Needs {
        Needs {
            banned_numbers: true,
            ..Needs::default()
        }
    }

    fn rewrite(&self) -> Option<Rewrite> {
        Some(|completion, banned, seed, row| Some(random(completion, banned, seed, row)))
    }
}

/// The completion with each number replaced by one drawn uniformly from
/// 0–999 (none on the banned list); separators and brackets stay.
pub fn random(completion: &str, banned: &[u32], seed: u64, row: usize) -> String {
    let spans = filter::digit_runs(completion);
    let mut rng = row_rng(seed, row);
    let allowed = (0..=filter::MAX_VALUE as u32)
        .filter(|n| !banned.contains(n))
        .count();
    let numbers: Vec<String> = spans
        .iter()
        .map(|_| loop {
            let n: u32 = rng.gen_range(0..=filter::MAX_VALUE as u32);
            if allowed == 0 || !banned.contains(&n) {
                break n.to_string();
            }
        })
        .collect();
    replace_numbers(completion, &spans, &numbers)
}
