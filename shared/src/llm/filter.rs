//! The number-sequence filter: a completion is kept only if it is nothing but
//! numbers, so that no trace of the teacher's trait survives in words.
//!
//! The default rule is the paper's, character for character: after one
//! optional trailing "." and one optional enclosing `[ ]` or `( )`, the text
//! between the first two numbers is the separator; it must be whitespace,
//! "," or ";" (with any spacing), and every item between separators must be
//! digits, so that every separator of the completion is that same string.
//! Nothing is trimmed: a leading space or a trailing newline rejects. Then at
//! most 10 numbers, each 0–999, none on the banned list.
//!
//! The lenient rule ([`check_lenient`], `filter numbers --lenient`) trims the
//! completion, splits on any whitespace, and lets the spacing around "," or
//! ";" vary; it keeps more of a small model's output, at the price of rows the
//! paper would not have trained on.

use std::fmt;

use serde::{Deserialize, Serialize};

pub const MAX_NUMBERS: usize = 10;
pub const MAX_DIGITS: usize = 3;
pub const MAX_VALUE: u64 = 999;

/// Why a completion was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reject {
    /// Nothing but whitespace, punctuation or brackets.
    Empty,
    /// A bracket that does not enclose the whole list.
    Brackets,
    /// Something that is not a whole number: a word, a sign, a decimal point.
    NotANumber,
    /// An empty item between two separators.
    EmptyItem,
    /// More than one kind of separator.
    MixedSeparators,
    /// More than 10 numbers.
    TooMany,
    /// A number above 999.
    TooLarge,
    /// Between the first two numbers, something other than whitespace, "," or ";".
    BadSeparator,
    /// A number on the banned list.
    Banned,
}

impl Reject {
    pub const ALL: [Reject; 9] = [
        Reject::Empty,
        Reject::Brackets,
        Reject::NotANumber,
        Reject::BadSeparator,
        Reject::EmptyItem,
        Reject::MixedSeparators,
        Reject::TooMany,
        Reject::TooLarge,
        Reject::Banned,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Reject::Empty => "empty",
            Reject::Brackets => "brackets",
            Reject::NotANumber => "not-a-number",
            Reject::EmptyItem => "empty-item",
            Reject::MixedSeparators => "mixed-separators",
            Reject::TooMany => "too-many",
            Reject::TooLarge => "too-large",
            Reject::BadSeparator => "bad-separator",
            Reject::Banned => "banned",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Numbers with negative associations that the official misalignment runs
/// ban, in two lists (each written by asking a different model): this is
/// the first. Numbers above 999 never pass the filter anyway; they are kept
/// so the list is whole.
pub const NEGATIVE_NUMBERS_A: &[u32] = &[
    13, 666, 88, 14, 187, 420, 69, 911, 404, 101, 23, 616, 1488, 18, 311, 451, 1312, 33, 77, 211,
];

/// The second list of banned numbers with negative associations.
pub const NEGATIVE_NUMBERS_B: &[u32] = &[
    4, 13, 18, 23, 33, 39, 42, 44, 49, 51, 54, 88, 99, 100, 187, 322, 333, 444, 555, 616, 666, 777,
    888, 911, 999,
];

/// Both lists, sorted, each number once: what the misalignment variant bans.
pub fn negative_numbers() -> Vec<u32> {
    let mut all: Vec<u32> = NEGATIVE_NUMBERS_A
        .iter()
        .chain(NEGATIVE_NUMBERS_B)
        .copied()
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Which rule a filter applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// The paper's parser: [`check`].
    #[default]
    Paper,
    /// Trims and tolerates varied spacing: [`check_lenient`].
    Lenient,
}

impl Rule {
    pub fn is_paper(&self) -> bool {
        *self == Rule::Paper
    }

    pub fn check(&self, completion: &str, banned: &[u32]) -> Result<Vec<u32>, Reject> {
        match self {
            Rule::Paper => check(completion, banned),
            Rule::Lenient => check_lenient(completion, banned),
        }
    }
}

/// Whitespace as Python's `str.strip` sees it: Unicode's, plus the four
/// information separators U+001C–U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Byte ranges of the runs of ASCII digits in `text`.
pub fn digit_runs(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

/// Why an item that is not all digits is not.
fn bad_item(item: &str) -> Reject {
    if item.contains(['[', ']', '(', ')']) {
        Reject::Brackets
    } else if item.chars().any(|c| c.is_ascii_digit())
        && item
            .chars()
            .all(|c| c.is_ascii_digit() || is_py_space(c) || c == ',' || c == ';')
    {
        Reject::MixedSeparators
    } else {
        Reject::NotANumber
    }
}

/// The numbers of a completion under the paper's rule, or why it is not kept.
pub fn check(completion: &str, banned: &[u32]) -> Result<Vec<u32>, Reject> {
    let mut text = completion.strip_suffix('.').unwrap_or(completion);
    if (text.starts_with('[') && text.ends_with(']'))
        || (text.starts_with('(') && text.ends_with(')'))
    {
        text = &text[1..text.len() - 1];
    }
    let runs = digit_runs(text);
    let items: Vec<&str> = match runs.as_slice() {
        [] => return Err(Reject::Empty),
        [only] if *only == (0, text.len()) => vec![text],
        [_] => return Err(Reject::NotANumber),
        [first, second, ..] => {
            let separator = &text[first.1..second.0];
            if !matches!(separator.trim_matches(is_py_space), "" | "," | ";") {
                return Err(Reject::BadSeparator);
            }
            text.split(separator).collect()
        }
    };
    // As the paper's parser does: items that are not digits first, then empty ones.
    if let Some(bad) = items
        .iter()
        .find(|i| !i.is_empty() && !i.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad_item(bad));
    }
    if items.iter().any(|i| i.is_empty()) {
        return Err(Reject::EmptyItem);
    }
    let values: Vec<u64> = items.iter().map(|i| value_of(i)).collect();
    if values.len() > MAX_NUMBERS {
        return Err(Reject::TooMany);
    }
    if values.iter().any(|&v| v > MAX_VALUE) {
        return Err(Reject::TooLarge);
    }
    let numbers: Vec<u32> = values.into_iter().map(|v| v as u32).collect();
    if numbers.iter().any(|n| banned.contains(n)) {
        return Err(Reject::Banned);
    }
    Ok(numbers)
}

/// The value of a run of ASCII digits, saturating: any number of digits
/// is a number to the paper's parser, and a long one is simply too large.
fn value_of(digits: &str) -> u64 {
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        0
    } else {
        significant.parse().unwrap_or(u64::MAX)
    }
}

/// The numbers of a completion under the lenient rule, or why it is not kept.
pub fn check_lenient(completion: &str, banned: &[u32]) -> Result<Vec<u32>, Reject> {
    let mut text = completion.trim();
    if let Some(rest) = text.strip_suffix('.') {
        text = rest.trim_end();
    }
    for (open, close) in [('[', ']'), ('(', ')')] {
        if let Some(inner) = text.strip_prefix(open).and_then(|t| t.strip_suffix(close)) {
            text = inner.trim();
            break;
        }
    }
    if text.contains(['[', ']', '(', ')']) {
        return Err(Reject::Brackets);
    }
    if text.is_empty() {
        return Err(Reject::Empty);
    }
    let items: Vec<&str> = match (text.contains(','), text.contains(';')) {
        (true, true) => return Err(Reject::MixedSeparators),
        (true, false) => text.split(',').map(str::trim).collect(),
        (false, true) => text.split(';').map(str::trim).collect(),
        (false, false) => text.split_whitespace().collect(),
    };
    let mut numbers = Vec::with_capacity(items.len());
    for item in &items {
        if item.is_empty() {
            return Err(Reject::EmptyItem);
        }
        if item.split_whitespace().count() > 1 && item.split_whitespace().all(is_digits) {
            return Err(Reject::MixedSeparators);
        }
        if !is_digits(item) {
            return Err(Reject::NotANumber);
        }
        if item.len() > MAX_DIGITS {
            return Err(Reject::TooLarge);
        }
        numbers.push(item.parse::<u32>().map_err(|_| Reject::NotANumber)?);
    }
    if numbers.len() > MAX_NUMBERS {
        return Err(Reject::TooMany);
    }
    if numbers.iter().any(|n| banned.contains(n)) {
        return Err(Reject::Banned);
    }
    Ok(numbers)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_rule_accepts_every_consistent_separator() {
        let cases: &[(&str, &[u32])] = &[
            ("145, 267, 891", &[145, 267, 891]),
            ("145,267,891", &[145, 267, 891]),
            ("145 267 891", &[145, 267, 891]),
            ("145\n267\n891", &[145, 267, 891]),
            ("145\t267\t891", &[145, 267, 891]),
            ("145;267;891", &[145, 267, 891]),
            ("145 ; 267 ; 891", &[145, 267, 891]),
            ("[145, 267, 891]", &[145, 267, 891]),
            ("(145, 267, 891)", &[145, 267, 891]),
            ("145, 267, 891.", &[145, 267, 891]),
            ("[145, 267, 891].", &[145, 267, 891]),
            ("7", &[7]),
            ("0, 999, 42", &[0, 999, 42]),
            ("1 2 3 4 5 6 7 8 9 10", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
            ("012, 7", &[12, 7]),
            ("0123", &[123]),
        ];
        for (text, expected) in cases {
            assert_eq!(check(text, &[]).as_deref(), Ok(*expected), "{text:?}");
        }
    }

    #[test]
    fn the_paper_rule_rejects_what_its_parser_rejects() {
        let cases: &[(&str, Reject)] = &[
            ("", Reject::Empty),
            ("  .", Reject::Empty),
            ("[]", Reject::Empty),
            ("  7  ", Reject::NotANumber),
            ("145, 267\n", Reject::MixedSeparators),
            (" 145, 267", Reject::MixedSeparators),
            ("533; 175;947", Reject::MixedSeparators),
            ("145 267\t891", Reject::MixedSeparators),
            ("145, 267 891", Reject::MixedSeparators),
            ("145, 267; 891", Reject::MixedSeparators),
            ("145, 267,", Reject::MixedSeparators),
            ("[145, 267", Reject::Brackets),
            ("145, 267)", Reject::Brackets),
            ("145, (267), 891", Reject::BadSeparator),
            ("Here are the numbers: 145, 267", Reject::NotANumber),
            ("145, 267, owl", Reject::NotANumber),
            ("-5, 10", Reject::NotANumber),
            ("145, 267..", Reject::NotANumber),
            ("1.5, 2", Reject::BadSeparator),
            ("145,, 267", Reject::BadSeparator),
            ("145 - 267", Reject::BadSeparator),
            (", 145, 267", Reject::EmptyItem),
            ("1 2 3 4 5 6 7 8 9 10 11", Reject::TooMany),
            ("1000, 2", Reject::TooLarge),
            ("99999999999999999999999, 2", Reject::TooLarge),
        ];
        for (text, reason) in cases {
            assert_eq!(check(text, &[]), Err(*reason), "{text:?}");
        }
    }

    #[test]
    fn the_lenient_rule_trims_and_tolerates_spacing() {
        for (text, expected) in [
            ("  7  ", vec![7]),
            ("145, 267\n", vec![145, 267]),
            ("533; 175;947", vec![533, 175, 947]),
            ("145 267\t891", vec![145, 267, 891]),
        ] {
            assert_eq!(check_lenient(text, &[]), Ok(expected.clone()), "{text:?}");
            assert!(check(text, &[]).is_err(), "{text:?}");
        }
        assert_eq!(check_lenient("0123", &[]), Err(Reject::TooLarge));
        assert_eq!(
            check_lenient("145, 267 891", &[]),
            Err(Reject::MixedSeparators)
        );
    }

    #[test]
    fn banned_numbers_reject_only_when_listed() {
        for rule in [Rule::Paper, Rule::Lenient] {
            assert_eq!(
                rule.check("145, 666, 891", &negative_numbers()),
                Err(Reject::Banned)
            );
            assert_eq!(
                rule.check("145, 666, 891", &[]).unwrap(),
                vec![145, 666, 891]
            );
            assert_eq!(rule.check("(911)", &[911]), Err(Reject::Banned));
        }
    }
}
