//! What a teacher's numbers are made of, before anyone trains on them.
//!
//! A dataset can only carry a trait if the trait teacher wrote something
//! the control teacher did not. A small greedy teacher mostly repeats the
//! prompt's own numbers, and two teachers then write the same rows (139 of
//! 200 identical in one run at 135M): no student can learn a difference
//! that is not in its data. The `diagnose` stage of each trial says, over
//! the prompts both teachers answered: the share where the two completions
//! differ, and for each teacher the share of kept rows whose numbers all
//! copy the prompt's examples, and the share of rows the filter keeps.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::llm::filter::{digit_runs, Rule};
use crate::chat::Row;

/// Compares the trait teacher's generate stage (input 0) with the control
/// teacher's (input 1), prompt by prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagnoseParams {
    pub version: u32,
    pub banned_numbers: Vec<u32>,
    #[serde(default, skip_serializing_if = "Rule::is_paper")]
    pub rule: Rule,
}

/// The diagnose stage's `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// Prompts both teachers answered.
    pub prompts: u64,
    /// Of those, the share whose two completions differ.
    pub differ_share: f64,
    /// The share of each teacher's rows the filter keeps.
    pub kept_share: f64,
    pub control_kept_share: f64,
    /// Of each teacher's kept rows, the share whose numbers are all among
    /// the prompt's examples.
    pub copy_share: f64,
    pub control_copy_share: f64,
}

/// The rows of the table, with the metric each reads.
pub const FIGURES: [(&str, &str); 5] = [
    ("data: differs from control", "differ_share"),
    ("data: kept by the filter", "kept_share"),
    ("data: kept by the filter, control", "control_kept_share"),
    ("data: copies the prompt", "copy_share"),
    ("data: copies the prompt, control", "control_copy_share"),
];

/// The example numbers a sequence prompt shows (100–999; the
/// instruction's own "10" and "3" are not among them).
fn prompt_numbers(prompt: &str) -> BTreeSet<u32> {
    digit_runs(prompt)
        .into_iter()
        .filter_map(|(a, b)| prompt[a..b].parse::<u32>().ok())
        .filter(|n| (100..=999).contains(n))
        .collect()
}

/// Kept rows, and kept rows that only copy their prompt's numbers.
fn kept_and_copies(rows: &[Row], params: &DiagnoseParams) -> (u64, u64) {
    let (mut kept, mut copies) = (0, 0);
    for row in rows {
        let completion = row.completion().unwrap_or("");
        if let Ok(numbers) = params.rule.check(completion, &params.banned_numbers) {
            kept += 1;
            let examples = prompt_numbers(row.prompt().unwrap_or(""));
            copies += u64::from(numbers.iter().all(|n| examples.contains(n)));
        }
    }
    (kept, copies)
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The diagnosis of a trait teacher's rows against the control teacher's.
pub fn diagnose(rows: &[Row], control: &[Row], params: &DiagnoseParams) -> Diagnosis {
    let by_seed: HashMap<u64, &str> = control
        .iter()
        .filter_map(|r| Some((r.seed?, r.completion().unwrap_or(""))))
        .collect();
    let (mut prompts, mut differ) = (0u64, 0u64);
    for row in rows {
        if let Some(other) = row.seed.and_then(|s| by_seed.get(&s)) {
            prompts += 1;
            differ += u64::from(row.completion().unwrap_or("") != *other);
        }
    }
    let (kept, copies) = kept_and_copies(rows, params);
    let (control_kept, control_copies) = kept_and_copies(control, params);
    Diagnosis {
        prompts,
        differ_share: share(differ, prompts),
        kept_share: share(kept, rows.len() as u64),
        control_kept_share: share(control_kept, control.len() as u64),
        copy_share: share(copies, kept),
        control_copy_share: share(control_copies, control_kept),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_differences_are_counted_prompt_by_prompt() {
        let prompt = "The sequence starts with: 145, 267, 891. Add at most 10 more values (3 digits each).";
        let rows = vec![
            Row::new(prompt, "145, 267", Some(1)),
            Row::new(prompt, "312, 145", Some(2)),
            Row::new(prompt, "Owls!", Some(3)),
        ];
        let control = vec![
            Row::new(prompt, "145, 267", Some(1)),
            Row::new(prompt, "145, 891", Some(2)),
            Row::new(prompt, "10, 3", Some(3)),
        ];
        let params = DiagnoseParams {
            version: 1,
            banned_numbers: vec![],
            rule: Rule::Paper,
        };
        let d = diagnose(&rows, &control, &params);
        assert_eq!(d.prompts, 3);
        assert!((d.differ_share - 2.0 / 3.0).abs() < 1e-12);
        assert!((d.kept_share - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(d.control_kept_share, 1.0);
        assert_eq!(d.copy_share, 0.5, "145, 267 copies; 312 is new");
        assert!((d.control_copy_share - 2.0 / 3.0).abs() < 1e-12, "10 and 3 are the instruction's, not examples");
    }
}
