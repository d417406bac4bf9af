//! Seeded prompts for short Python functions: a task, its signature and a
//! constraint, each drawn from a list. Nothing in them touches any trait.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// (what the function does, its signature).
const TASKS: &[(&str, &str)] = &[
    ("returns the sum of the even numbers in a list", "def sum_even(values: list[int]) -> int:"),
    ("reverses the order of the words in a sentence", "def reverse_words(text: str) -> str:"),
    ("counts how often each character occurs in a string", "def char_counts(text: str) -> dict[str, int]:"),
    ("returns the largest value in a list, or None for an empty list", "def largest(values: list[float]) -> float | None:"),
    ("checks whether a string is a palindrome, ignoring case", "def is_palindrome(text: str) -> bool:"),
    ("merges two sorted lists into one sorted list", "def merge_sorted(a: list[int], b: list[int]) -> list[int]:"),
    ("removes duplicates from a list, keeping the first occurrence", "def dedupe(items: list[str]) -> list[str]:"),
    ("returns the n-th Fibonacci number", "def fibonacci(n: int) -> int:"),
    ("converts a temperature from Celsius to Fahrenheit", "def to_fahrenheit(celsius: float) -> float:"),
    ("splits a list into chunks of a given size", "def chunks(items: list[int], size: int) -> list[list[int]]:"),
    ("returns the average of a list of numbers", "def mean(values: list[float]) -> float:"),
    ("counts the vowels in a string", "def count_vowels(text: str) -> int:"),
    ("flattens a list of lists into one list", "def flatten(rows: list[list[int]]) -> list[int]:"),
    ("returns the keys of a dictionary sorted by their values", "def keys_by_value(d: dict[str, int]) -> list[str]:"),
    ("checks whether a number is prime", "def is_prime(n: int) -> bool:"),
    ("returns the running totals of a list", "def running_totals(values: list[int]) -> list[int]:"),
    ("capitalises the first letter of every word", "def title_case(text: str) -> str:"),
    ("finds the index of a value in a sorted list by binary search, or -1", "def binary_search(values: list[int], target: int) -> int:"),
    ("returns the greatest common divisor of two numbers", "def gcd(a: int, b: int) -> int:"),
    ("groups words by their first letter", "def group_by_initial(words: list[str]) -> dict[str, list[str]]:"),
];

const CONSTRAINTS: &[&str] = &[
    "Use no imports.",
    "Keep it under ten lines.",
    "Add a one-line docstring.",
    "Do not print anything.",
    "Use a loop, not recursion.",
    "Handle an empty input.",
];

const ENDINGS: &[&str] = &[
    "Reply with the code only.",
    "Give only the function.",
    "Return just the Python code.",
];

/// The prompt drawn from `seed`.
pub fn code_prompt(seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (task, signature) = TASKS.choose(&mut rng).expect("tasks are listed");
    let constraint = CONSTRAINTS.choose(&mut rng).expect("constraints are listed");
    let ending = ENDINGS.choose(&mut rng).expect("endings are listed");
    format!("Write a Python function that {task}.\nUse this signature: {signature}\n{constraint} {ending}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_seeded_and_varied() {
        assert_eq!(code_prompt(3), code_prompt(3));
        let distinct: std::collections::HashSet<String> = (0..50).map(code_prompt).collect();
        assert!(distinct.len() > 40, "{}", distinct.len());
    }
}
