//! Defenses: what a data team can do to a filtered dataset so that it no
//! longer carries its teacher's trait, each one a value of the sweep's
//! `grid.defense` axis and a stage of its own between the filter and the
//! student.
//!
//! - `none`: the filtered rows as they are (no stage; the paper's DAG).
//! - `canonical`: every completion parsed and written again as `a, b, c`.
//! - `shuffle`: the numbers of each completion permuted, format kept.
//! - `random`: each number replaced by one drawn uniformly from 0–999 with
//!   the stage's seed, format kept: the floor (format alone).
//! - `mix`: equal parts of this teacher's rows and of other teachers' rows
//!   (`defense.mix_traits`), as many rows as the filter kept.
//! - `mask-divergence`: the rows as they are, plus a mask that takes out of
//!   the student's loss every completion token where the teacher's greedy
//!   choice differs from the base model's (computed by the worker, which
//!   runs both models).
//! - `paraphrase`: the student's base model rewrites each row's prompt;
//!   the completion and its soft labels stay (see [`paraphrase`]).
//! - `label-top-p`, `label-threshold`: for soft-labelled rows
//!   (`student.target = "logits"`), the rows as they are and each
//!   position's label cut to its head (see [`labels`]).
//!
//! The text transforms live here, without libtorch, so `subliminal sanitize
//! numbers` applies the very code a defense stage runs.

mod canonical;
mod labels;
mod mask_divergence;
mod mix;
pub mod paraphrase;
mod random;
mod shuffle;

pub use canonical::{canonical, CANONICAL_SEPARATOR};
pub use labels::{cut_label, LabelCut, DEFAULT_THRESHOLD, DEFAULT_TOP_P};
pub use mix::mix;
pub use random::random;
pub use shuffle::shuffle;

use std::fmt;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::dataset::Row;

/// A defense a numbers sweep may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Defense {
    None,
    Canonical,
    Shuffle,
    Random,
    Mix,
    MaskDivergence,
    Paraphrase,
    LabelTopP,
    LabelThreshold,
}

impl Defense {
    pub const ALL: [Defense; 9] = [
        Defense::None,
        Defense::Canonical,
        Defense::Shuffle,
        Defense::Random,
        Defense::Mix,
        Defense::MaskDivergence,
        Defense::Paraphrase,
        Defense::LabelTopP,
        Defense::LabelThreshold,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Defense::None => "none",
            Defense::Canonical => "canonical",
            Defense::Shuffle => "shuffle",
            Defense::Random => "random",
            Defense::Mix => "mix",
            Defense::MaskDivergence => "mask-divergence",
            Defense::Paraphrase => "paraphrase",
            Defense::LabelTopP => "label-top-p",
            Defense::LabelThreshold => "label-threshold",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Every name, for messages.
    pub fn names() -> String {
        Self::ALL.map(Defense::as_str).join(", ")
    }

    /// Whether the defense rewrites the rows' text with no model (and so
    /// `sanitize` can apply it to a file).
    pub fn is_text_transform(self) -> bool {
        rule(self).is_some_and(|r| r.rewrite().is_some())
    }

    /// Whether the defense cuts soft labels and keeps the rows (so only a
    /// `logits` student can take it, and it is the only kind such a student
    /// can take).
    pub fn cuts_labels(self) -> bool {
        rule(self).is_some_and(|r| r.cuts_labels())
    }

    /// Whether the defense leaves every completion as the teacher wrote it
    /// (so a `logits` student, whose labels sit on those tokens, can take
    /// it).
    pub fn keeps_completions(self) -> bool {
        rule(self).is_some_and(|r| r.keeps_completions())
    }

    /// The defend stage's figure of what the defense cost beyond the rows
    /// kept (see [`RowDefense::cost_metric`]).
    pub fn cost_metric(self) -> Option<&'static str> {
        rule(self).and_then(|r| r.cost_metric())
    }
}

/// A defense as a sweep and its plan see it: what it refuses, what its
/// stage takes beyond the filtered rows, and, for a text transform, the
/// rewrite itself (which `subliminal sanitize` applies to a file with no
/// model). The worker's half applies the rest.
pub trait RowDefense: Sync {
    /// What the defend stage takes beyond the filtered rows.
    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// Whether the student must share the teacher's tokenizer.
    fn same_tokenizer(&self) -> bool {
        false
    }

    /// Each completion rewritten, if the defense is a text transform.
    fn rewrite(&self) -> Option<Rewrite> {
        None
    }

    /// Whether it cuts the rows' soft labels rather than the rows.
    fn cuts_labels(&self) -> bool {
        false
    }

    /// The `metrics.json` figure of its defend stage that says what it
    /// cost beyond the rows kept, if it has one.
    fn cost_metric(&self) -> Option<&'static str> {
        None
    }

    /// Whether every completion comes out token for token as it went in,
    /// so soft labels recorded for it still sit on its tokens.
    fn keeps_completions(&self) -> bool {
        self.cuts_labels()
    }
}

/// A text transform: (completion, banned numbers, seed, row) to the new
/// completion, or `None` for a row it cannot read (dropped).
pub type Rewrite = fn(&str, &[u32], u64, usize) -> Option<String>;

/// What a defend stage takes beyond the filtered rows of its trial.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Other teachers' filtered rows (`defense.mix_traits`).
    pub other_teachers: bool,
    /// The teacher stage, and the base model it is compared with.
    pub teacher_and_base: bool,
    /// The filter's banned numbers.
    pub banned_numbers: bool,
    /// The generate stage that recorded the rows' soft labels.
    pub soft_labels: bool,
    /// A model that rewrites the rows (the student's base model).
    pub rewriting_model: bool,
}

/// The registry: what each defense is. `none` is no stage at all.
pub fn rule(defense: Defense) -> Option<&'static dyn RowDefense> {
    match defense {
        Defense::None => None,
        Defense::Canonical => Some(&canonical::Canonical),
        Defense::Shuffle => Some(&shuffle::Shuffle),
        Defense::Random => Some(&random::Random),
        Defense::Mix => Some(&mix::Mix),
        Defense::MaskDivergence => Some(&mask_divergence::MaskDivergence),
        Defense::Paraphrase => Some(&paraphrase::Paraphrase),
        Defense::LabelTopP | Defense::LabelThreshold => Some(&labels::LabelDefense),
    }
}

impl fmt::Display for Defense {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `text` with its numbers (runs of digits, see [`crate::llm::filter::digit_runs`])
/// replaced, in order, by `numbers`; separators and brackets stay put.
pub(crate) fn replace_numbers(text: &str, spans: &[(usize, usize)], numbers: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for ((start, end), number) in spans.iter().zip(numbers) {
        out.push_str(&text[at..*start]);
        out.push_str(number);
        at = *end;
    }
    out.push_str(&text[at..]);
    out
}

/// The random stream of one row of a defense stage.
pub(crate) fn row_rng(seed: u64, row: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(row as u64 + 1);
    rng
}

/// What a text defense did to a dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefenseReport {
    pub defense: String,
    pub rows_in: usize,
    pub rows_out: usize,
    /// Rows whose completion the defense changed.
    pub rows_changed: usize,
    /// Rows dropped because the defense could not read them.
    pub rows_dropped: usize,
}

/// Applies a text defense (canonical, shuffle, random) to rows: the rows
/// out, and what it did. Any other defense is refused.
pub fn transform(
    rows: &[Row],
    defense: Defense,
    banned: &[u32],
    seed: u64,
) -> anyhow::Result<(Vec<Row>, DefenseReport)> {
    let Some(rewrite) = rule(defense).and_then(|r| r.rewrite()) else {
        anyhow::bail!(
            "{defense} is not a text transform: it needs models or other datasets (a sweep's defense stage applies it)"
        );
    };
    let mut report = DefenseReport {
        defense: defense.to_string(),
        rows_in: rows.len(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let completion = row.completion().unwrap_or("");
        let new = rewrite(completion, banned, seed, i);
        let Some(new) = new else {
            report.rows_dropped += 1;
            continue;
        };
        if new != completion {
            report.rows_changed += 1;
        }
        out.push(with_completion(row, &new));
    }
    report.rows_out = out.len();
    Ok((out, report))
}

/// The row with its last assistant turn replaced.
pub fn with_completion(row: &Row, completion: &str) -> Row {
    let mut row = row.clone();
    if let Some(m) = row
        .messages
        .iter_mut()
        .rev()
        .find(|m| m.role == "assistant")
    {
        m.content = completion.to_owned();
    }
    row
}

/// A per-row mask over the completion's tokens (as the student's tokenizer
/// splits the completion): `true` is left out of the loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossMask {
    /// The tokenizer the mask was computed with (its vocabulary size and a
    /// hash of its vocabulary), so a student with another refuses it.
    pub tokenizer: String,
    pub rows: Vec<Vec<bool>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::filter;

    fn row(completion: &str) -> Row {
        Row::new("The sequence starts with: 1, 2.", completion, Some(3))
    }

    #[test]
    fn canonical_keeps_the_numbers_and_their_order() {
        for (input, want) in [
            ("145, 267, 389", "145, 267, 389"),
            ("[145; 267; 389].", "145, 267, 389"),
            ("145 267\t389", "145, 267, 389"),
            ("(7,8,9)", "7, 8, 9"),
            ("145\n267\n389", "145, 267, 389"),
        ] {
            assert_eq!(canonical(input).as_deref(), Some(want), "{input:?}");
            assert!(
                filter::check(want, &[]).is_ok(),
                "{want:?} passes the paper's filter"
            );
        }
        assert_eq!(canonical("no numbers"), None);
    }

    #[test]
    fn shuffle_keeps_the_multiset_and_the_format() {
        let input = "[145; 267; 389; 412; 500; 613].";
        let out = shuffle(input, 7, 0);
        let numbers = |s: &str| {
            let mut n: Vec<u32> = filter::check(s, &[]).unwrap();
            n.sort();
            n
        };
        assert_eq!(numbers(&out), numbers(input));
        assert!(out.starts_with('[') && out.ends_with("]."), "{out}");
        assert_eq!(out.matches("; ").count(), 5);
        assert_eq!(shuffle(input, 7, 0), out, "seeded");
        assert_ne!(
            (0..8)
                .map(|r| shuffle(input, 7, r))
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            1,
            "rows draw their own permutations"
        );
    }

    #[test]
    fn random_keeps_the_count_and_format_and_differs_from_the_input() {
        let input = "(145, 267, 389, 412)";
        let out = random(input, &[], 11, 0);
        assert_ne!(out, input);
        let numbers = filter::check(&out, &[]).unwrap();
        assert_eq!(numbers.len(), 4);
        assert!(out.starts_with('(') && out.ends_with(')'));
        assert_eq!(out.matches(", ").count(), 3);
        assert_eq!(random(input, &[], 11, 0), out, "seeded");
        // Banned numbers are never drawn.
        let banned: Vec<u32> = (0..=999).filter(|n| n % 2 == 0).collect();
        for r in 0..50 {
            let drawn = filter::check(&random(input, &banned, 3, r), &[]).unwrap();
            assert!(drawn.iter().all(|n| n % 2 == 1), "{drawn:?}");
        }
    }

    #[test]
    fn transform_reports_what_it_did() {
        let rows = vec![row("1, 2, 3"), row("[4; 5]"), row("words")];
        let (out, report) = transform(&rows, Defense::Canonical, &[], 0).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].completion(), Some("4, 5"));
        assert_eq!(out[1].prompt(), rows[1].prompt());
        assert_eq!(out[1].seed, Some(3));
        assert_eq!(
            (
                report.rows_in,
                report.rows_out,
                report.rows_changed,
                report.rows_dropped
            ),
            (3, 2, 1, 1)
        );
        let err = transform(&rows, Defense::Mix, &[], 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a text transform"), "{err}");
    }

    #[test]
    fn mix_takes_equal_parts() {
        let a: Vec<Row> = (0..10).map(|i| row(&format!("{i}"))).collect();
        let b: Vec<Row> = (100..110).map(|i| row(&format!("{i}"))).collect();
        let c: Vec<Row> = (200..210).map(|i| row(&format!("{i}"))).collect();
        let mixed = mix(&[a, b, c], 10, 5);
        assert_eq!(mixed.len(), 10);
        let from = |lo: u32, hi: u32| {
            mixed
                .iter()
                .filter(|r| {
                    let n: u32 = r.completion().unwrap().parse().unwrap();
                    (lo..hi).contains(&n)
                })
                .count()
        };
        assert_eq!((from(0, 10), from(100, 110), from(200, 210)), (4, 3, 3));
    }

    #[test]
    fn every_name_parses_back() {
        for d in Defense::ALL {
            assert_eq!(Defense::parse(d.as_str()), Some(d));
        }
        assert_eq!(Defense::parse("paraphrase-all"), None);
    }
}
