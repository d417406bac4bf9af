//! A judge's answer read from its next-token probabilities, never sampled.
//!
//! A yes-no judge is the first answer token: p(yes) / (p(yes) + p(no)).
//! A 0–100 judge is the expected number it would write. A tokenizer may
//! spell a number in one token ("42") or one per digit ("4", "2"), so the
//! numbers 0 to 100 are laid out as a trie of their token sequences. The
//! model is run once on the prompt and then one step per trie level, each
//! step a batch of the level's nodes that reuses its parent's keys and
//! values. The probability of writing n is the probability of its tokens
//! times the probability that the next token is not a digit (the number
//! ends there). Both rules report the probability mass on valid answers;
//! little mass means the judge refused.

use std::collections::HashMap;

use anyhow::Context;
use subliminal_shared::judge::Judgement;
use tch::{Device, Kind, Tensor};

use super::model::Llama;
use super::tokenizer::ChatTokenizer;

/// The largest number a score judge writes.
pub const MAX_SCORE: u32 = 100;

/// How a judge's answer is read, in token ids.
#[derive(Debug)]
pub enum Reader {
    YesNo { yes: i64, no: i64 },
    Score(NumberTrie),
}

impl Reader {
    /// A yes-no reader: each answer word must be one token.
    pub fn yes_no(tok: &ChatTokenizer, yes: &str, no: &str) -> anyhow::Result<Self> {
        let one = |word: &str| -> anyhow::Result<i64> {
            match tok.encode(word)?.as_slice() {
                [id] => Ok(*id as i64),
                ids => anyhow::bail!(
                    "the judge's answer word {word:?} is {} tokens for this model: a yes-no judge reads one token, so pick a word the tokenizer keeps whole",
                    ids.len()
                ),
            }
        };
        Ok(Reader::YesNo {
            yes: one(yes)?,
            no: one(no)?,
        })
    }

    /// A 0–100 reader for this tokenizer.
    pub fn score(tok: &ChatTokenizer) -> anyhow::Result<Self> {
        Ok(Reader::Score(NumberTrie::new(tok, MAX_SCORE)?))
    }

    /// The judgement of the judge model on one rendered prompt.
    pub fn judge(&self, model: &Llama, prompt: &[u32]) -> anyhow::Result<Judgement> {
        anyhow::ensure!(!prompt.is_empty(), "an empty judge prompt");
        tch::no_grad(|| match self {
            Reader::YesNo { yes, no } => {
                let probs = prefill(model, prompt, None);
                let p_yes = probs.double_value(&[*yes]);
                let p_no = probs.double_value(&[*no]);
                let mass = p_yes + p_no;
                Ok(Judgement::new(p_yes / mass.max(f64::MIN_POSITIVE), mass))
            }
            Reader::Score(trie) => trie.judge(model, prompt),
        })
    }
}

/// The next-token probabilities [V] after `prompt`, filling `cache` if given.
pub(crate) fn prefill(
    model: &Llama,
    prompt: &[u32],
    cache: Option<&mut super::model::KvCache>,
) -> Tensor {
    let device = model.device();
    let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    let tokens = Tensor::from_slice(&ids).view([1, -1]).to_device(device);
    let positions = Tensor::arange(ids.len() as i64, (Kind::Int64, device)).view([1, -1]);
    let hidden = model.forward(&tokens, &positions, None, cache);
    model
        .logits(&hidden.select(1, ids.len() as i64 - 1))
        .softmax(-1, Kind::Double)
        .squeeze_dim(0)
}

/// Runs one level of a token trie through the model: node `level[r]`'s
/// token, fed at `position` after the cache row of its parent (`node(i)`
/// gives a node's parent, `None` for the prompt, and token). `cache_rows`
/// names the node each row of `cache` holds (`[None]` after the prompt)
/// and becomes `level`. Returns the next-token probabilities, [level, V].
pub(crate) fn trie_level(
    model: &Llama,
    cache: &mut super::model::KvCache,
    cache_rows: &mut Vec<Option<usize>>,
    level: &[usize],
    node: impl Fn(usize) -> (Option<usize>, i64),
    position: i64,
) -> anyhow::Result<Tensor> {
    let device = model.device();
    let parent_rows: Vec<i64> = level
        .iter()
        .map(|&i| {
            let parent = node(i).0;
            cache_rows
                .iter()
                .position(|r| *r == parent)
                .map(|p| p as i64)
        })
        .collect::<Option<_>>()
        .context("a trie node's parent was not run")?;
    cache.select_rows(&Tensor::from_slice(&parent_rows).to_device(device));
    let tokens: Vec<i64> = level.iter().map(|&i| node(i).1).collect();
    let tokens = Tensor::from_slice(&tokens).view([-1, 1]).to_device(device);
    let positions = Tensor::full([level.len() as i64, 1], position, (Kind::Int64, device));
    let hidden = model.forward(&tokens, &positions, None, Some(cache));
    *cache_rows = level.iter().map(|&i| Some(i)).collect();
    Ok(model.logits(&hidden.select(1, 0)).softmax(-1, Kind::Double))
}

/// One token sequence of a number, as a trie node.
#[derive(Debug, Clone)]
struct Node {
    /// Index of the parent node; `None` for the children of the root.
    parent: Option<usize>,
    token: i64,
    depth: usize,
    /// The number these tokens spell, when they spell one.
    number: Option<u32>,
}

/// The token sequences of the numbers 0..=max, and every token that is all
/// digits (a number goes on while the next token is one of those).
#[derive(Debug)]
pub struct NumberTrie {
    nodes: Vec<Node>,
    digit_tokens: Vec<i64>,
}

impl NumberTrie {
    pub fn new(tok: &ChatTokenizer, max: u32) -> anyhow::Result<Self> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut index: HashMap<(Option<usize>, i64), usize> = HashMap::new();
        for n in 0..=max {
            let ids = tok.encode(&n.to_string())?;
            anyhow::ensure!(!ids.is_empty(), "the tokenizer writes {n} as no tokens");
            let mut parent = None;
            for (depth, &id) in ids.iter().enumerate() {
                let key = (parent, id as i64);
                let at = *index.entry(key).or_insert_with(|| {
                    nodes.push(Node {
                        parent,
                        token: id as i64,
                        depth: depth + 1,
                        number: None,
                    });
                    nodes.len() - 1
                });
                parent = Some(at);
            }
            let last = parent.context("a number has at least one token")?;
            nodes[last].number = Some(n);
        }
        let mut digit_tokens = Vec::new();
        for id in 0..tok.vocab_size() as u32 {
            let text = tok.decode(&[id])?;
            if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                digit_tokens.push(id as i64);
            }
        }
        Ok(Self {
            nodes,
            digit_tokens,
        })
    }

    fn judge(&self, model: &Llama, prompt: &[u32]) -> anyhow::Result<Judgement> {
        let device = model.device();
        let digits = Tensor::from_slice(&self.digit_tokens).to_device(device);
        let mut cache = model.new_cache();
        let root = prefill(model, prompt, Some(&mut cache));
        // reach[i]: the probability of writing node i's tokens.
        let mut reach = vec![0.0f64; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            if node.parent.is_none() {
                reach[i] = root.double_value(&[node.token]);
            }
        }
        let (mut weighted, mut mass) = (0.0, 0.0);
        // Rows of the cache: the nodes of the previous level, in this order.
        let mut cache_rows: Vec<Option<usize>> = vec![None];
        let deepest = self.nodes.iter().map(|n| n.depth).max().unwrap_or(0);
        for depth in 1..=deepest {
            let level: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].depth == depth)
                .collect();
            let position = (prompt.len() + depth - 1) as i64;
            let node = |i: usize| (self.nodes[i].parent, self.nodes[i].token);
            let probs = trie_level(model, &mut cache, &mut cache_rows, &level, node, position)?;
            let go_on = probs
                .index_select(1, &digits)
                .sum_dim_intlist(1, false, Kind::Double);
            let go_on = Vec::<f64>::try_from(go_on.to_device(Device::Cpu))?;
            for (row, &i) in level.iter().enumerate() {
                if let Some(n) = self.nodes[i].number {
                    let p = reach[i] * (1.0 - go_on[row]).max(0.0);
                    weighted += n as f64 * p;
                    mass += p;
                }
                for (j, child) in self.nodes.iter().enumerate() {
                    if child.parent == Some(i) {
                        reach[j] = reach[i] * probs.double_value(&[row as i64, child.token]);
                    }
                }
            }
        }
        Ok(Judgement::new(weighted / mass.max(f64::MIN_POSITIVE), mass))
    }
}
