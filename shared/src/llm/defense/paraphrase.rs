//! `paraphrase`: the base model rewrites each completion. It is for kinds
//! whose completions are free text; a number sequence has none to rewrite.

use super::RowDefense;

/// The `paraphrase` defense.
pub struct Paraphrase;

impl RowDefense for Paraphrase {
    fn refusal_for_numbers(&self) -> Option<&'static str> {
        Some(
            "paraphrase rewrites free text, and a number completion has none: \
              expected none, canonical, shuffle, random, mix or mask-divergence",
        )
    }
}
