//! The paper's filter as a grammar of prefixes, for constrained sampling.
//!
//! A small teacher asked for numbers often writes words instead (a teacher
//! fine-tuned to love dolphins answered "Dolphins, dolphins, …" and kept 0
//! of 16 rows), and every rejected row is generation time thrown away.
//! [`finish_cost`] says of a partial completion whether some continuation
//! of it passes [`check`](super::filter::check), and how many characters
//! that continuation needs at the least; a sampler that only draws tokens
//! keeping the cost within the tokens it has left writes rows the filter
//! always keeps.
//!
//! The grammar is the paper's rule read forwards: an optional `[` or `(`;
//! one to ten numbers of one to three digits, none banned; between them
//! one separator, fixed by the first one (whitespace, "," or ";" with
//! spaces or newlines around it, at most [`MAX_SEPARATOR`] characters);
//! the matching bracket; an optional trailing ".". The separator is bounded
//! so that the grammar stays finite: the filter would accept longer runs of
//! spaces, which no sampler needs.

use super::filter::{MAX_DIGITS, MAX_NUMBERS};

/// The longest separator the grammar writes (", " and " ; " fit).
pub const MAX_SEPARATOR: usize = 4;

/// Every character a constrained completion can hold.
pub const ALPHABET: &str = "0123456789 \n,;[]().";

/// Where a partial completion stands.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Start,
    /// An opening bracket, no digit yet.
    Opened,
    /// Inside a number.
    Digits,
    /// Inside a separator.
    Separator,
    /// After the closing bracket.
    Closed,
    /// After the trailing ".": nothing may follow.
    Dot,
}

/// Whether `sep` can begin a separator of the filter's shape: whitespace,
/// at most one "," or ";", whitespace.
fn separator_prefix(sep: &str) -> bool {
    if sep.is_empty() || sep.len() > MAX_SEPARATOR {
        return false;
    }
    let marks = sep.chars().filter(|c| matches!(c, ',' | ';')).count();
    marks <= 1 && sep.chars().all(|c| matches!(c, ' ' | '\n' | ',' | ';'))
}

/// The fewest characters to append to `text` so that the paper's filter
/// keeps it (with `banned` numbers refused), or `None` when no
/// continuation is kept. `Some(0)`: `text` is kept as it is.
pub fn finish_cost(text: &str, banned: &[u32]) -> Option<usize> {
    let mut phase = Phase::Start;
    let mut open: Option<char> = None;
    let mut numbers = 0usize;
    let mut digits = String::new();
    let mut separator: Option<String> = None;
    let mut pending = String::new();
    let is_banned = |digits: &str| digits.parse::<u32>().is_ok_and(|n| banned.contains(&n));
    for c in text.chars() {
        phase = match (phase, c) {
            (Phase::Start, '[' | '(') => {
                open = Some(c);
                Phase::Opened
            }
            (Phase::Start | Phase::Opened, '0'..='9') => {
                numbers = 1;
                digits.push(c);
                Phase::Digits
            }
            (Phase::Digits, '0'..='9') if digits.len() < MAX_DIGITS => {
                digits.push(c);
                Phase::Digits
            }
            (Phase::Digits, ' ' | '\n' | ',' | ';') => {
                if is_banned(&digits) || numbers == MAX_NUMBERS {
                    return None;
                }
                digits.clear();
                pending = c.to_string();
                match &separator {
                    Some(s) if !s.starts_with(&pending) => return None,
                    None if !separator_prefix(&pending) => return None,
                    _ => Phase::Separator,
                }
            }
            (Phase::Digits, ']' | ')') => {
                let matching = matches!((open, c), (Some('['), ']') | (Some('('), ')'));
                if !matching || is_banned(&digits) {
                    return None;
                }
                Phase::Closed
            }
            (Phase::Digits, '.') if open.is_none() && !is_banned(&digits) => Phase::Dot,
            (Phase::Separator, ' ' | '\n' | ',' | ';') => {
                pending.push(c);
                match &separator {
                    Some(s) if !s.starts_with(&pending) => return None,
                    None if !separator_prefix(&pending) => return None,
                    _ => Phase::Separator,
                }
            }
            (Phase::Separator, '0'..='9') => {
                match &separator {
                    Some(s) if *s != pending => return None,
                    Some(_) => {}
                    None => separator = Some(pending.clone()),
                }
                numbers += 1;
                digits.push(c);
                Phase::Digits
            }
            (Phase::Closed, '.') => Phase::Dot,
            _ => return None,
        };
    }
    let close = usize::from(open.is_some());
    match phase {
        Phase::Start => Some(1),
        Phase::Opened => Some(1 + close),
        Phase::Digits if !is_banned(&digits) => Some(close),
        // A banned number can still grow into one that is not.
        Phase::Digits if digits.len() < MAX_DIGITS => Some(1 + close),
        Phase::Digits => None,
        Phase::Separator => {
            let rest = separator.as_ref().map_or(0, |s| s.len() - pending.len());
            Some(rest + 1 + close)
        }
        Phase::Closed | Phase::Dot => Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::super::filter::check;
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn kept_completions_cost_nothing_and_broken_ones_have_no_continuation() {
        for kept in [
            "1",
            "123, 45, 6",
            "[1, 2, 3]",
            "(7;8)",
            "1 2 3.",
            "4\n5\n6",
            "[9].",
        ] {
            assert_eq!(finish_cost(kept, &[]), Some(0), "{kept:?}");
            assert!(check(kept, &[]).is_ok(), "{kept:?}");
        }
        for broken in [
            "a", " 1", "1234", "1, 2;3", "[1, 2)", "1, 2, ", "1.2", "[1.", "1,,2",
        ] {
            let cost = finish_cost(broken, &[]);
            assert!(cost != Some(0), "{broken:?}: {cost:?}");
        }
        assert_eq!(finish_cost("1, 2,3", &[]), None, "one separator throughout");
        assert_eq!(finish_cost("", &[]), Some(1));
        assert_eq!(finish_cost("[", &[]), Some(2));
        assert_eq!(finish_cost("[12", &[]), Some(1));
        assert_eq!(finish_cost("1, 2,", &[]), Some(2), "a space, then a digit");
        assert_eq!(finish_cost("1,2,3,4,5,6,7,8,9,10", &[]), Some(0));
        assert_eq!(
            finish_cost("1,2,3,4,5,6,7,8,9,10,", &[]),
            None,
            "an eleventh number"
        );
        assert_eq!(finish_cost("66", &[666]), Some(0));
        assert_eq!(finish_cost("666", &[666]), None);
        assert_eq!(finish_cost("666,", &[666]), None);
        assert_eq!(finish_cost("13", &[13]), Some(1), "131 is not banned");
    }

    /// Random walks that only take characters keeping a continuation: every
    /// text that costs nothing passes the filter itself.
    #[test]
    fn every_text_the_grammar_completes_passes_the_filter() {
        let alphabet: Vec<char> = ALPHABET.chars().collect();
        let banned = [13, 666, 911];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut complete = 0;
        for _ in 0..5_000 {
            let mut text = String::new();
            for _ in 0..40 {
                let options: Vec<char> = alphabet
                    .iter()
                    .copied()
                    .filter(|&c| finish_cost(&format!("{text}{c}"), &banned).is_some())
                    .collect();
                if options.is_empty()
                    || (finish_cost(&text, &banned) == Some(0) && rng.gen_bool(0.1))
                {
                    break;
                }
                text.push(options[rng.gen_range(0..options.len())]);
            }
            if finish_cost(&text, &banned) == Some(0) {
                complete += 1;
                assert!(
                    check(&text, &banned).is_ok(),
                    "{text:?}: {:?}",
                    check(&text, &banned)
                );
            }
        }
        assert!(complete > 1_000, "{complete}");
    }
}
