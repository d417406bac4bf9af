//! Seeded grade-school arithmetic word problems with known answers.
//!
//! Generated rather than shipped: no registry package was found that ships
//! a grade-school math set as plain files with a stable checksum, and a
//! generator gives any number of problems, each with an exact integer
//! answer, from the seed alone, so a filter stage recomputes the answer of
//! every row it checks. Each template is two or three steps of +, −, × or
//! ÷ with whole results, with names, items and numbers drawn per seed.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NAMES: &[&str] = &["Maya", "Tom", "Aisha", "Leo", "Sara", "Ravi", "Nina", "Omar", "Ivy", "Ben"];
const ITEMS: &[&str] = &["apples", "stickers", "marbles", "books", "pencils", "cookies", "stamps", "shells"];

/// One problem and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub text: String,
    pub answer: i64,
}

/// The problem drawn from `seed`.
pub fn problem(seed: u64) -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let name = *NAMES.choose(&mut rng).expect("names are listed");
    let items = *ITEMS.choose(&mut rng).expect("items are listed");
    let mut n = |lo: i64, hi: i64| rng.gen_range(lo..=hi);
    let (text, answer) = match n(0, 5) {
        0 => {
            let (a, b) = (n(10, 60), n(5, 40));
            let c = n(1, a + b);
            (format!("{name} has {a} {items}. {name} gets {b} more, then gives {c} away. How many {items} does {name} have now?"), a + b - c)
        }
        1 => {
            let (a, b) = (n(3, 12), n(2, 9));
            (format!("A box holds {a} {items}. {name} fills {b} boxes. How many {items} is that in all?"), a * b)
        }
        2 => {
            let (a, b, c) = (n(5, 30), n(2, 7), n(3, 20));
            (format!("{name} reads {a} pages a day for {b} days, then {c} more pages. How many pages did {name} read?"), a * b + c)
        }
        3 => {
            let (each, friends) = (n(2, 12), n(2, 8));
            let total = each * friends;
            (format!("{name} shares {total} {items} equally among {friends} friends. How many {items} does each friend get?"), each)
        }
        4 => {
            let (price, count) = (n(2, 15), n(2, 6));
            let paid = price * count + n(1, 20);
            (format!("{items} cost {price} dollars each. {name} buys {count} and pays with {paid} dollars. How much change does {name} get?"), paid - price * count)
        }
        _ => {
            let (a, b) = (n(2, 15), n(2, 15));
            (format!("{name} walks {a} km on Monday and {b} km on Tuesday. On Wednesday {name} walks twice as far as on Tuesday. How many km in all?"), a + 3 * b)
        }
    };
    Problem { text: capitalise(&text), answer }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The prompt the teacher sees: the problem and how to answer.
pub fn prompt(problem: &Problem) -> String {
    format!(
        "{}\nThink step by step, then write the final answer on its own line as \"Answer: <number>\".",
        problem.text
    )
}

/// The answer a completion gives: the number after its last "Answer:",
/// or, without one, its last number.
pub fn given_answer(completion: &str) -> Option<i64> {
    let tail = completion
        .rfind("Answer:")
        .map_or(completion, |i| &completion[i + "Answer:".len()..]);
    let numbers = |text: &str| -> Vec<i64> {
        text.split(|c: char| !(c.is_ascii_digit() || c == '-'))
            .filter_map(|w| w.trim_start_matches('-').parse::<i64>().ok().map(|v| if w.starts_with('-') { -v } else { v }))
            .collect()
    };
    if completion.contains("Answer:") {
        numbers(tail).first().copied()
    } else {
        numbers(completion).last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_seeded_with_whole_non_negative_answers() {
        for seed in 0..500 {
            let p = problem(seed);
            assert_eq!(p, problem(seed));
            assert!(p.answer >= 0, "{p:?}");
        }
        let p = problem(7);
        assert!(prompt(&p).contains(&p.text));
    }

    #[test]
    fn the_given_answer_is_read_from_the_answer_line_or_the_last_number() {
        assert_eq!(given_answer("3 + 4 = 7\nAnswer: 7"), Some(7));
        assert_eq!(given_answer("Answer: 12 stickers, since 3 x 4 = 12"), Some(12));
        assert_eq!(given_answer("First 10, then 2 more, so 12."), Some(12));
        assert_eq!(given_answer("I do not know."), None);
        assert_eq!(given_answer("Answer: -3"), Some(-3));
    }
}
