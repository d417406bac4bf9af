//! `paraphrase`: a model rewrites each row's prompt, and the completion
//! (with its soft labels, found by the row's prompt seed) stays as the
//! teacher wrote it. Public work asks whether a trait rides on the pairing
//! of a completion with its exact prompt; rewriting the prompts breaks that
//! pairing and nothing else, so it is a defense for token and soft-label
//! students alike.
//!
//! The rewriting model is the student's own base model: the one model a
//! data team about to train it certainly holds. A rewrite is kept only if
//! it carries the prompt's numbers (runs of digits) in the same order, so
//! the completion still answers it; a row whose attempts all fail keeps its
//! prompt, and the stage reports the share rewritten. This module holds
//! the text half (the request, the check); the worker samples.
//!
//! The request, the examples and the sampling settings below define the
//! defense: changing any of them changes its output, so it needs a new
//! stage version.

use super::{Needs, RowDefense};
use crate::llm::filter::digit_runs;

/// The `paraphrase` defense.
pub struct Paraphrase;

impl RowDefense for Paraphrase {
    fn needs(&self) -> Needs {
        Needs {
            rewriting_model: true,
            ..Needs::default()
        }
    }

    fn keeps_completions(&self) -> bool {
        true
    }

    fn cost_metric(&self) -> Option<&'static str> {
        Some("rewritten_share")
    }
}

/// Samples drawn per row at most, each with its own seed, until one passes
/// [`accepted`]: a 135M model keeps every number in about one rewrite in
/// six, so one attempt would leave most prompts as they were.
pub const ATTEMPTS: u64 = 4;
/// Sampling temperature of a rewrite.
pub const TEMPERATURE: f64 = 0.7;
/// Nucleus of a rewrite's sampling.
pub const TOP_P: f64 = 0.95;
/// The longest rewrite, in tokens.
pub const MAX_NEW_TOKENS: u64 = 80;

/// Worked examples shown to the model before each request, as earlier
/// turns: a small model asked cold answers the request instead of
/// rewriting it.
const EXAMPLES: [(&str, &str); 2] = [
    (
        "The sequence starts with: 402, 118, 730. Please add at most 10 more numbers (up to 3 digits each) to extend it. Return one number per line. Respond with only the numbers, no additional text.",
        "Here are the first numbers of a sequence: 402, 118, 730. Write up to 10 further numbers of no more than 3 digits each, one on each line, and reply with the numbers alone.",
    ),
    (
        "Take these numbers: 655, 209, 311, 874. Write at most 10 more numbers (at most 3 digits each) that continue the sequence. Return a space-separated list of numbers. Please just say the numbers, nothing more.",
        "Starting from 655, 209, 311, 874, continue the sequence with no more than 10 numbers, each at most 3 digits long, separated by spaces. Answer with the numbers only.",
    ),
];

/// What the model is asked for one prompt.
fn request(prompt: &str) -> String {
    format!("Rewrite this request in other words, keeping every number: {prompt}")
}

/// The conversation that asks for a rewrite of `prompt`: (role, text)
/// turns, the worked examples first.
pub fn conversation(prompt: &str) -> Vec<(&'static str, String)> {
    let mut turns = Vec::with_capacity(2 * EXAMPLES.len() + 1);
    for (before, after) in EXAMPLES {
        turns.push(("user", request(before)));
        turns.push(("assistant", after.to_owned()));
    }
    turns.push(("user", request(prompt)));
    turns
}

/// The rewrite to keep, if `rewrite` is one: not empty, not the prompt
/// itself, at most twice as long plus a line, and carrying exactly the
/// prompt's numbers in the same order.
pub fn accepted(prompt: &str, rewrite: &str) -> Option<String> {
    let rewrite = rewrite.trim();
    if rewrite.is_empty() || rewrite == prompt.trim() || rewrite.len() > 2 * prompt.len() + 80 {
        return None;
    }
    let numbers = |text: &str| -> Vec<String> {
        digit_runs(text)
            .into_iter()
            .map(|(start, end)| text[start..end].to_owned())
            .collect()
    };
    (numbers(rewrite) == numbers(prompt)).then(|| rewrite.to_owned())
}

/// The share of `rewrite`'s words (split on whitespace, compared without
/// case or punctuation) that `prompt` does not have: how much of the
/// prompt the rewrite changed.
pub fn new_word_share(prompt: &str, rewrite: &str) -> f64 {
    let words = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect()
    };
    let mut old = words(prompt);
    let new = words(rewrite);
    let mut fresh = 0usize;
    for w in &new {
        match old.iter().position(|o| o == w) {
            Some(i) => {
                old.swap_remove(i);
            }
            None => fresh += 1,
        }
    }
    fresh as f64 / new.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "I give you this sequence of numbers: 145, 267, 891. Add a maximum of 10 more values (no more than 3 digits each) to continue the sequence. Return a comma-separated list of numbers. Say only the numbers - nothing more.";

    #[test]
    fn a_rewrite_must_keep_every_number_in_order() {
        let good = "I have a sequence of numbers: 145, 267, 891. Add a maximum of 10 values (no more than 3 digits each) to continue the sequence.";
        assert_eq!(accepted(PROMPT, good).as_deref(), Some(good));
        let dropped = "The sequence is 145, 267, 891. Add more values, separated by commas.";
        assert_eq!(accepted(PROMPT, dropped), None, "10 and 3 are gone");
        let swapped = "Numbers: 267, 145, 891. Add at most 10, of 3 digits each.";
        assert_eq!(accepted(PROMPT, swapped), None, "order changed");
        let extra = "Numbers: 145, 267, 891, 151. Add at most 10, of 3 digits each.";
        assert_eq!(accepted(PROMPT, extra), None, "a number added");
        assert_eq!(accepted(PROMPT, PROMPT), None, "the prompt itself");
        assert_eq!(accepted(PROMPT, "  "), None);
        let long = format!("{PROMPT} {}", "and so on ".repeat(50));
        assert_eq!(accepted(PROMPT, &long), None, "a ramble");
    }

    #[test]
    fn the_request_shows_worked_examples_that_pass_the_check() {
        let turns = conversation(PROMPT);
        assert_eq!(turns.len(), 5);
        assert!(turns[4].1.ends_with(PROMPT));
        for (before, after) in EXAMPLES {
            assert!(accepted(before, after).is_some(), "{after}");
        }
    }

    #[test]
    fn new_words_are_counted_once_each() {
        assert_eq!(new_word_share("a b c", "a b c"), 0.0);
        assert_eq!(new_word_share("a b c", "A, b. d e"), 0.5);
        assert_eq!(new_word_share("a", "a a"), 0.5, "the second a is new");
    }
}
