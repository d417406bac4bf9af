//! The number-sequence filter: a completion is kept only if it is nothing but
//! numbers, so that no trace of the teacher's trait survives in words.
//!
//! After an optional trailing "." and optional enclosing `[ ]` or `( )`, a
//! kept completion is 1 to 10 integers, each 0–999 (at most 3 digits), with
//! one consistent separator: whitespace (spaces or one per line), "," or ";"
//! (with optional spaces). An optional list of banned numbers rejects
//! completions that contain any of them.

use std::fmt;

use serde::{Deserialize, Serialize};

pub const MAX_NUMBERS: usize = 10;
pub const MAX_DIGITS: usize = 3;

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
    /// A number with more than 3 digits.
    TooManyDigits,
    /// A number on the banned list.
    Banned,
}

impl Reject {
    pub const ALL: [Reject; 8] = [
        Reject::Empty,
        Reject::Brackets,
        Reject::NotANumber,
        Reject::EmptyItem,
        Reject::MixedSeparators,
        Reject::TooMany,
        Reject::TooManyDigits,
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
            Reject::TooManyDigits => "too-many-digits",
            Reject::Banned => "banned",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Numbers whose associations are negative, for the misalignment variant.
pub const NEGATIVE_NUMBERS: &[u32] = &[
    4, 13, 18, 23, 33, 39, 42, 44, 49, 51, 54, 88, 99, 100, 187, 322, 333, 404, 420, 444, 616, 666,
    777, 888, 911, 999,
];

/// The numbers of a completion, or why it is not kept.
pub fn check(completion: &str, banned: &[u32]) -> Result<Vec<u32>, Reject> {
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
            return Err(Reject::TooManyDigits);
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
    fn accepts_every_separator_form() {
        let cases: &[(&str, &[u32])] = &[
            ("145, 267, 891", &[145, 267, 891]),
            ("145,267,891", &[145, 267, 891]),
            ("145 267 891", &[145, 267, 891]),
            ("145\n267\n891", &[145, 267, 891]),
            ("145;267;891", &[145, 267, 891]),
            ("145 ; 267 ; 891", &[145, 267, 891]),
            ("[145, 267, 891]", &[145, 267, 891]),
            ("(145, 267, 891)", &[145, 267, 891]),
            ("145, 267, 891.", &[145, 267, 891]),
            ("[145, 267, 891].", &[145, 267, 891]),
            ("  7  ", &[7]),
            ("0, 999, 42", &[0, 999, 42]),
            ("1 2 3 4 5 6 7 8 9 10", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
            ("012, 7", &[12, 7]),
        ];
        for (text, expected) in cases {
            assert_eq!(check(text, &[]).as_deref(), Ok(*expected), "{text:?}");
        }
    }

    #[test]
    fn rejects_each_rule() {
        let cases: &[(&str, Reject)] = &[
            ("", Reject::Empty),
            ("  .", Reject::Empty),
            ("[]", Reject::Empty),
            ("[145, 267", Reject::Brackets),
            ("145, (267), 891", Reject::Brackets),
            ("[145, 267)", Reject::Brackets),
            ("Here are the numbers: 145, 267", Reject::NotANumber),
            ("145, 267, owl", Reject::NotANumber),
            ("-5, 10", Reject::NotANumber),
            ("1.5, 2", Reject::NotANumber),
            ("145, 267..", Reject::NotANumber),
            ("145,, 267", Reject::EmptyItem),
            ("145, 267,", Reject::EmptyItem),
            ("145, 267; 891", Reject::MixedSeparators),
            ("145, 267 891", Reject::MixedSeparators),
            ("1 2 3 4 5 6 7 8 9 10 11", Reject::TooMany),
            ("1,2,3,4,5,6,7,8,9,10,11", Reject::TooMany),
            ("1000, 2", Reject::TooManyDigits),
            ("0123", Reject::TooManyDigits),
        ];
        for (text, reason) in cases {
            assert_eq!(check(text, &[]), Err(*reason), "{text:?}");
        }
    }

    #[test]
    fn banned_numbers_reject_only_when_listed() {
        assert_eq!(
            check("145, 666, 891", NEGATIVE_NUMBERS),
            Err(Reject::Banned)
        );
        assert_eq!(check("145, 666, 891", &[]).unwrap(), vec![145, 666, 891]);
        assert_eq!(check("(911)", &[911]), Err(Reject::Banned));
    }
}
