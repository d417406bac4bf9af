//! Constrained sampling: at each step a completion may only take tokens
//! that keep it within a text grammar, so every completion is one the
//! grammar accepts.
//!
//! The grammar is a function of the text so far that says how many more
//! characters it needs at the least to be accepted (`None`: never). A
//! token is allowed when the text with it still has a continuation that
//! fits in the tokens left (one character per token at the least, so the
//! alphabet's single characters must be tokens of their own); a stop token
//! is allowed only where the text is accepted as it is. Only tokens spelled
//! wholly in the grammar's alphabet are candidates, which keeps a step's
//! work to a few hundred checks per row instead of the whole vocabulary.

use super::tokenizer::ChatTokenizer;

/// The fewest characters a text needs to be accepted, `None` if it never is.
pub type FinishCost = dyn Fn(&str) -> Option<usize> + Send + Sync;

/// A grammar over a tokenizer's tokens.
pub struct Constraint {
    /// Tokens spelled wholly in the alphabet, with their text.
    candidates: Vec<(i64, String)>,
    finish_cost: Box<FinishCost>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("candidates", &self.candidates.len())
            .finish()
    }
}

impl Constraint {
    /// The tokens of `tok` spelled in `alphabet`, under `finish_cost`.
    /// Refused when a character of the alphabet is no token of its own:
    /// the one-character-per-token bound that keeps every completion
    /// finishable would not hold.
    pub fn new(
        tok: &ChatTokenizer,
        alphabet: &str,
        finish_cost: Box<FinishCost>,
    ) -> anyhow::Result<Self> {
        let mut candidates = Vec::new();
        for id in 0..tok.vocab_size() as u32 {
            let text = tok.decode(&[id])?;
            if !text.is_empty() && text.chars().all(|c| alphabet.contains(c)) {
                candidates.push((id as i64, text));
            }
        }
        for c in alphabet.chars() {
            anyhow::ensure!(
                candidates.iter().any(|(_, t)| t.chars().eq(std::iter::once(c))),
                "constrained sampling needs {c:?} as a token of its own, and this tokenizer has none"
            );
        }
        Ok(Self {
            candidates,
            finish_cost,
        })
    }

    /// The tokens `text` may take next with `tokens_left` tokens left after
    /// it, and whether it may stop here.
    pub fn allowed(&self, text: &str, tokens_left: usize) -> (Vec<i64>, bool) {
        let mut next = String::with_capacity(text.len() + 8);
        let tokens = self
            .candidates
            .iter()
            .filter(|(_, piece)| {
                next.clear();
                next.push_str(text);
                next.push_str(piece);
                (self.finish_cost)(&next).is_some_and(|cost| cost <= tokens_left)
            })
            .map(|(id, _)| *id)
            .collect();
        (tokens, (self.finish_cost)(text) == Some(0))
    }

    /// The text of a candidate token; empty for any other (a stop token).
    pub fn piece(&self, id: i64) -> &str {
        self.candidates
            .binary_search_by_key(&id, |(c, _)| *c)
            .map_or("", |i| self.candidates[i].1.as_str())
    }
}
