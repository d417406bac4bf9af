//! The pipeline's datasets: chat rows ([`crate::chat`]) and the
//! filter that keeps the ones that are nothing but numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::filter::{Reject, Rule};

pub use crate::chat::{bad_file, parse_jsonl, read_jsonl_file, to_jsonl, Message, Row};

/// What the filter did to a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterReport {
    pub rows: usize,
    pub passed: usize,
    /// Passed rows after the subsample (at most `keep`).
    pub kept: usize,
    pub rejected: BTreeMap<Reject, usize>,
}

/// The verdict on each row: `Ok` or why it was rejected.
pub fn judge(rows: &[Row], rule: Rule, banned: &[u32]) -> Vec<Result<(), Reject>> {
    rows.iter()
        .map(|r| rule.check(r.completion().unwrap_or(""), banned).map(|_| ()))
        .collect()
}

/// The rows that pass, subsampled (seeded, order kept) to at most `keep`.
pub fn filter_rows(
    rows: &[Row],
    rule: Rule,
    banned: &[u32],
    keep: usize,
    seed: u64,
) -> (Vec<Row>, FilterReport) {
    let verdicts = judge(rows, rule, banned);
    let mut rejected = BTreeMap::new();
    let mut passed = Vec::new();
    for (i, v) in verdicts.iter().enumerate() {
        match v {
            Ok(()) => passed.push(i),
            Err(reason) => *rejected.entry(*reason).or_insert(0) += 1,
        }
    }
    let passed_count = passed.len();
    crate::chat::subsample(&mut passed, keep, seed);
    let kept: Vec<Row> = passed.iter().map(|&i| rows[i].clone()).collect();
    let report = FilterReport {
        rows: rows.len(),
        passed: passed_count,
        kept: kept.len(),
        rejected,
    };
    (kept, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_reports_and_subsamples_reproducibly() {
        let rows: Vec<Row> = (0..20)
            .map(|i| {
                let completion = match i % 4 {
                    0 => "I love 2 owls!".to_owned(),
                    1 => "1, 2; 3".to_owned(),
                    _ => format!("{i}, {}, {}", i + 1, i + 2),
                };
                Row::new("continue", &completion, Some(i))
            })
            .collect();
        let (kept, report) = filter_rows(&rows, Rule::Paper, &[], 5, 3);
        assert_eq!(report.rows, 20);
        assert_eq!(report.passed, 10);
        assert_eq!(report.kept, 5);
        assert_eq!(report.rejected[&Reject::NotANumber], 5);
        assert_eq!(report.rejected[&Reject::MixedSeparators], 5);
        assert_eq!(kept, filter_rows(&rows, Rule::Paper, &[], 5, 3).0);
        assert!(kept.windows(2).all(|w| w[0].seed < w[1].seed));
        let text = String::from_utf8(to_jsonl(&kept)).unwrap();
        assert_eq!(parse_jsonl(&text, "kept").unwrap(), kept);
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = parse_jsonl("{\"messages\": []}\n", "x.jsonl").unwrap_err();
        assert!(err.to_string().contains("x.jsonl:1"), "{err}");
        let err = parse_jsonl("\nnot json\n", "x.jsonl").unwrap_err();
        assert!(err.to_string().contains("x.jsonl:2"), "{err}");
    }
}
