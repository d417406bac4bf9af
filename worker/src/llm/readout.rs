//! The exact readout: a model's probability of answering with a word,
//! computed from its next-token distributions, never sampled.
//!
//! Sampled one-word answers need thousands of samples to see a shift of a
//! point; the probability itself moves measurably after a few updates. A
//! word is spelled many ways ("owl", " Owl", " owls", "OWL", …), and a
//! tokenizer may split a spelling into several tokens. Every spelling's
//! token sequence goes into one trie; the model runs once on the prompt,
//! then one batched step per trie level that reuses the parent's keys and
//! values, and the probability of a spelling is the product of its tokens'
//! probabilities. A word's probability is the sum over its spellings, where
//! a spelling that begins with another spelling's tokens is left out (its
//! probability is already inside the shorter one's).

use std::collections::HashMap;

use anyhow::Context;
use tch::Device;

use super::judge::{prefill, trie_level};
use super::model::Llama;
use super::tokenizer::ChatTokenizer;

/// The surface forms of a word: singular and the two plural endings the
/// sampled readout counts, in lower, title and upper case, with and without
/// a leading space.
pub fn spellings(word: &str) -> Vec<String> {
    let lower = word.to_lowercase();
    let mut out = Vec::new();
    for surface in [lower.clone(), format!("{lower}s"), format!("{lower}es")] {
        let mut title = surface.clone();
        if let Some(first) = title.get(..1) {
            title = first.to_uppercase() + &surface[1..];
        }
        for form in [surface.clone(), title, surface.to_uppercase()] {
            for space in ["", " "] {
                let spelled = format!("{space}{form}");
                if !out.contains(&spelled) {
                    out.push(spelled);
                }
            }
        }
    }
    out
}

/// Token sequences of `word`'s spellings, each once, without those that
/// extend another of them.
pub fn spelling_tokens(tok: &ChatTokenizer, word: &str) -> anyhow::Result<Vec<Vec<u32>>> {
    let mut all: Vec<Vec<u32>> = Vec::new();
    for spelled in spellings(word) {
        let ids = tok.encode(&spelled)?;
        anyhow::ensure!(
            !ids.is_empty(),
            "the tokenizer writes {spelled:?} as no tokens"
        );
        if !all.contains(&ids) {
            all.push(ids);
        }
    }
    let kept = all
        .iter()
        .filter(|ids| {
            !all.iter()
                .any(|other| other.len() < ids.len() && ids.starts_with(other))
        })
        .cloned()
        .collect();
    Ok(kept)
}

/// One token of a spelling, as a trie node.
#[derive(Debug, Clone)]
struct Node {
    parent: Option<usize>,
    token: i64,
    depth: usize,
}

/// The spellings of several words as one trie of token sequences.
#[derive(Debug)]
pub struct WordTrie {
    nodes: Vec<Node>,
    /// For each word, the nodes where its spellings end.
    ends: Vec<Vec<usize>>,
}

impl WordTrie {
    pub fn new(tok: &ChatTokenizer, words: &[String]) -> anyhow::Result<Self> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut index: HashMap<(Option<usize>, i64), usize> = HashMap::new();
        let mut ends = Vec::with_capacity(words.len());
        for word in words {
            let mut word_ends = Vec::new();
            for ids in spelling_tokens(tok, word)? {
                let mut parent = None;
                for (depth, &id) in ids.iter().enumerate() {
                    let at = *index.entry((parent, id as i64)).or_insert_with(|| {
                        nodes.push(Node {
                            parent,
                            token: id as i64,
                            depth: depth + 1,
                        });
                        nodes.len() - 1
                    });
                    parent = Some(at);
                }
                word_ends.push(parent.context("a spelling has at least one token")?);
            }
            ends.push(word_ends);
        }
        Ok(Self { nodes, ends })
    }

    /// Each word's probability of being what follows `prompt`, in the
    /// order the words were given.
    pub fn probabilities(&self, model: &Llama, prompt: &[u32]) -> anyhow::Result<Vec<f64>> {
        anyhow::ensure!(!prompt.is_empty(), "an empty readout prompt");
        let reach = tch::no_grad(|| self.reach(model, prompt))?;
        Ok(self
            .ends
            .iter()
            .map(|ends| ends.iter().map(|&i| reach[i]).sum())
            .collect())
    }

    /// The probability of writing each node's tokens after `prompt`.
    fn reach(&self, model: &Llama, prompt: &[u32]) -> anyhow::Result<Vec<f64>> {
        let mut cache = model.new_cache();
        let root = prefill(model, prompt, Some(&mut cache));
        let mut reach = vec![0.0f64; self.nodes.len()];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            match node.parent {
                None => reach[i] = root.double_value(&[node.token]),
                Some(p) => children[p].push(i),
            }
        }
        // Rows of the cache: the nodes of the previous level that were run.
        let mut cache_rows: Vec<Option<usize>> = vec![None];
        let deepest = self.nodes.iter().map(|n| n.depth).max().unwrap_or(0);
        for depth in 1..deepest {
            let level: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].depth == depth && !children[i].is_empty())
                .collect();
            let position = (prompt.len() + depth - 1) as i64;
            let node = |i: usize| (self.nodes[i].parent, self.nodes[i].token);
            let probs = trie_level(model, &mut cache, &mut cache_rows, &level, node, position)?
                .to_device(Device::Cpu);
            for (row, &i) in level.iter().enumerate() {
                for &child in &children[i] {
                    reach[child] =
                        reach[i] * probs.double_value(&[row as i64, self.nodes[child].token]);
                }
            }
        }
        Ok(reach)
    }
}

#[cfg(test)]
mod tests {
    use super::spellings;

    #[test]
    fn a_word_is_spelled_in_every_case_and_number_with_and_without_a_space() {
        let s = spellings("owl");
        for form in ["owl", " owl", " Owl", "OWL", " owls", " Owls", "owles"] {
            assert!(s.contains(&form.to_owned()), "{form}: {s:?}");
        }
        assert_eq!(s.len(), 18);
    }
}
