//! Soft labels: a teacher's next-token distribution at every completion
//! position, kept as its top k tokens and their log-probabilities, so a
//! student can be distilled on the distribution (forward KL) instead of
//! the one token that was drawn.
//!
//! Soft labels carry far more of a trait than sampled tokens, and the top
//! of a trait teacher's distribution can hold the trait word itself (an
//! owl teacher's second choice after "1" may be " Owl"). So every token
//! that spells or begins a trait word is removed before the top k are
//! taken, and the k are renormalised: the labels hold numbers' tokens,
//! never the word. Recorded once, by the stage that generates the rows,
//! so no student runs the teacher again.
//!
//! The artifact (`soft.safetensors`) holds, for R rows and P positions in
//! all: `seeds` [R] and `offsets` [R + 1] (row r's positions are
//! offsets[r]..offsets[r+1]), `tokens` [P] (the token drawn at each
//! position, the stop token included), `top_ids` [P, k] and
//! `top_logprobs` [P, k].

use std::collections::HashMap;

use anyhow::Context;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::{Device, Kind, Tensor};

use super::tokenizer::ChatTokenizer;

/// The artifact's file name.
pub const SOFT_LABELS: &str = "soft.safetensors";

/// Whether a token's text spells or begins one of `word`'s forms (the
/// word, "+s", "+es"; any case, any surrounding space): " Owl", "owls",
/// "OW" and "o" for owl; not "bowl" nor "7".
pub fn spells_or_begins(token_text: &str, word: &str) -> bool {
    let text = token_text.trim().to_lowercase();
    if text.is_empty() || !text.chars().all(char::is_alphabetic) {
        return false;
    }
    let word = word.to_lowercase();
    [word.clone(), format!("{word}s"), format!("{word}es")]
        .iter()
        .any(|form| form.starts_with(&text) || text.starts_with(form.as_str()))
}

/// Takes the top k of a distribution with the words' tokens removed.
#[derive(Debug)]
pub struct TopK {
    k: usize,
    /// [V], true where a token is removed.
    excluded: Tensor,
    excluded_ids: Vec<u32>,
}

impl TopK {
    pub fn new(tok: &ChatTokenizer, k: usize, words: &[String]) -> anyhow::Result<Self> {
        anyhow::ensure!(k >= 1, "soft labels need at least one token per position");
        let vocab = tok.vocab_size();
        let mut mask = vec![false; vocab];
        let mut excluded_ids = Vec::new();
        for id in 0..vocab as u32 {
            let text = tok.decode(&[id])?;
            if words.iter().any(|w| spells_or_begins(&text, w)) {
                mask[id as usize] = true;
                excluded_ids.push(id);
            }
        }
        Ok(Self {
            k,
            excluded: Tensor::from_slice(&mask),
            excluded_ids,
        })
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// The tokens never in a label.
    pub fn excluded_ids(&self) -> &[u32] {
        &self.excluded_ids
    }

    /// For each row of `logits` [B, V]: the k most likely tokens that are
    /// not excluded, and their log-probabilities renormalised over the k.
    pub fn take(&self, logits: &Tensor) -> anyhow::Result<(Vec<u32>, Vec<f32>)> {
        let excluded = self.excluded.to_device(logits.device());
        let kept = logits
            .to_kind(Kind::Float)
            .masked_fill(&excluded.unsqueeze(0), f64::NEG_INFINITY);
        let (values, ids) = kept.topk(self.k as i64, -1, true, true);
        let logprobs = &values - values.logsumexp([-1], true);
        let ids = Vec::<i64>::try_from(ids.to_device(Device::Cpu).flatten(0, -1))?;
        let logprobs = Vec::<f32>::try_from(logprobs.to_device(Device::Cpu).flatten(0, -1))?;
        Ok((ids.into_iter().map(|i| i as u32).collect(), logprobs))
    }
}

/// One generated row's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftRow {
    /// The seed of the prompt the row answers (its key in the dataset).
    pub seed: u64,
    /// The tokens drawn, one per position (the stop token included).
    pub tokens: Vec<u32>,
    /// positions × k token ids.
    pub top_ids: Vec<u32>,
    /// positions × k log-probabilities.
    pub top_logprobs: Vec<f32>,
}

/// Every generated row's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftLabels {
    pub k: usize,
    pub rows: Vec<SoftRow>,
}

impl SoftLabels {
    /// The labels of `rows` (by prompt seed) in the artifact `bytes`, which
    /// `what` names; `rows_name` names the rows in an error.
    pub fn read_for_rows(
        bytes: &[u8],
        what: &str,
        rows: &[subliminal_shared::llm::dataset::Row],
        rows_name: &str,
    ) -> anyhow::Result<Self> {
        let labels = Self::from_bytes(bytes, what)?;
        let seeds: Vec<Option<u64>> = rows.iter().map(|r| r.seed).collect();
        let rows = labels.for_seeds(&seeds, what, rows_name)?;
        Ok(Self { k: labels.k, rows })
    }

    /// The labels of each of `rows`, found by the row's prompt seed (`None`:
    /// a row without one); `what` names these labels and `rows_name` the
    /// rows in an error.
    pub fn for_seeds(
        &self,
        seeds: &[Option<u64>],
        what: &str,
        rows_name: &str,
    ) -> anyhow::Result<Vec<SoftRow>> {
        let by_seed: HashMap<u64, &SoftRow> = self.rows.iter().map(|r| (r.seed, r)).collect();
        seeds
            .iter()
            .enumerate()
            .map(|(i, seed)| {
                let seed = seed.with_context(|| {
                    format!(
                        "{rows_name}: row {} has no prompt seed to find its soft labels by",
                        i + 1
                    )
                })?;
                by_seed.get(&seed).map(|r| (*r).clone()).with_context(|| {
                    format!(
                        "{what} has no row for the prompt of seed {seed} ({rows_name}, row {})",
                        i + 1
                    )
                })
            })
            .collect()
    }
}

fn le_bytes<T: Copy, const N: usize>(values: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to(v)).collect()
}

impl SoftLabels {
    pub fn to_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let mut offsets = vec![0i64];
        for row in &self.rows {
            anyhow::ensure!(
                row.top_ids.len() == row.tokens.len() * self.k
                    && row.top_logprobs.len() == row.top_ids.len(),
                "row of seed {} has {} positions but {} labels",
                row.seed,
                row.tokens.len(),
                row.top_ids.len()
            );
            offsets.push(offsets[offsets.len() - 1] + row.tokens.len() as i64);
        }
        let positions = offsets[offsets.len() - 1] as usize;
        let seeds: Vec<i64> = self.rows.iter().map(|r| r.seed as i64).collect();
        let tokens: Vec<i64> = self
            .rows
            .iter()
            .flat_map(|r| r.tokens.iter().map(|&t| t as i64))
            .collect();
        let ids: Vec<i32> = self
            .rows
            .iter()
            .flat_map(|r| r.top_ids.iter().map(|&t| t as i32))
            .collect();
        let logprobs: Vec<f32> = self
            .rows
            .iter()
            .flat_map(|r| r.top_logprobs.iter().copied())
            .collect();
        let buffers = [
            (
                "seeds",
                Dtype::I64,
                vec![seeds.len()],
                le_bytes(&seeds, i64::to_le_bytes),
            ),
            (
                "offsets",
                Dtype::I64,
                vec![offsets.len()],
                le_bytes(&offsets, i64::to_le_bytes),
            ),
            (
                "tokens",
                Dtype::I64,
                vec![positions],
                le_bytes(&tokens, i64::to_le_bytes),
            ),
            (
                "top_ids",
                Dtype::I32,
                vec![positions, self.k],
                le_bytes(&ids, i32::to_le_bytes),
            ),
            (
                "top_logprobs",
                Dtype::F32,
                vec![positions, self.k],
                le_bytes(&logprobs, f32::to_le_bytes),
            ),
        ];
        let views: Vec<(String, TensorView)> = buffers
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.to_string(), v))
            })
            .collect::<Result<_, _>>()?;
        let metadata = HashMap::from([("k".to_owned(), self.k.to_string())]);
        Ok(safetensors::tensor::serialize(views, &Some(metadata))?)
    }

    /// Reads the artifact, checking every shape and offset before use.
    pub fn from_bytes(bytes: &[u8], what: &str) -> anyhow::Result<Self> {
        let tensors = SafeTensors::deserialize(bytes)
            .with_context(|| format!("{what} is not a valid safetensors file"))?;
        let get = |name: &str, dtype: Dtype| -> anyhow::Result<TensorView<'_>> {
            let view = tensors
                .tensor(name)
                .with_context(|| format!("{what} has no tensor {name:?}"))?;
            anyhow::ensure!(
                view.dtype() == dtype,
                "{what}: {name} is {:?}, expected {dtype:?}",
                view.dtype()
            );
            Ok(view)
        };
        let i64s = |view: &TensorView| -> Vec<i64> {
            view.data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect()
        };
        let seeds = i64s(&get("seeds", Dtype::I64)?);
        let offsets = i64s(&get("offsets", Dtype::I64)?);
        let tokens = i64s(&get("tokens", Dtype::I64)?);
        let ids_view = get("top_ids", Dtype::I32)?;
        let lp_view = get("top_logprobs", Dtype::F32)?;
        let positions = tokens.len();
        let shape = ids_view.shape().to_vec();
        anyhow::ensure!(
            shape.len() == 2
                && shape[0] == positions
                && lp_view.shape() == shape.as_slice()
                && shape[1] >= 1,
            "{what}: top_ids {shape:?} and top_logprobs {:?} must both be [{positions}, k]",
            lp_view.shape()
        );
        let k = shape[1];
        anyhow::ensure!(
            offsets.len() == seeds.len() + 1
                && offsets.first() == Some(&0)
                && offsets.last() == Some(&(positions as i64))
                && offsets.windows(2).all(|w| w[0] <= w[1]),
            "{what}: offsets must rise from 0 to {positions} over {} rows",
            seeds.len()
        );
        let ids: Vec<u32> = ids_view
            .data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as u32)
            .collect();
        let logprobs: Vec<f32> = lp_view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect();
        let rows = seeds
            .iter()
            .zip(offsets.windows(2))
            .map(|(&seed, w)| {
                let (a, b) = (w[0] as usize, w[1] as usize);
                SoftRow {
                    seed: seed as u64,
                    tokens: tokens[a..b].iter().map(|&t| t as u32).collect(),
                    top_ids: ids[a * k..b * k].to_vec(),
                    top_logprobs: logprobs[a * k..b * k].to_vec(),
                }
            })
            .collect();
        Ok(Self { k, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_spells_or_begins_the_word_is_excluded() {
        for t in [" Owl", "owls", "OW", "o", " Owles", "owlish"] {
            assert!(spells_or_begins(t, "owl"), "{t}");
        }
        for t in ["bowl", "7", " ", ",", "cat", "wl"] {
            assert!(!spells_or_begins(t, "owl"), "{t}");
        }
    }

    #[test]
    fn labels_survive_a_round_trip_and_bad_bytes_are_refused() {
        let labels = SoftLabels {
            k: 2,
            rows: vec![
                SoftRow {
                    seed: 7,
                    tokens: vec![1, 2],
                    top_ids: vec![1, 3, 2, 4],
                    top_logprobs: vec![-0.1, -2.0, -0.5, -1.0],
                },
                SoftRow {
                    seed: 9,
                    tokens: vec![],
                    top_ids: vec![],
                    top_logprobs: vec![],
                },
            ],
        };
        let bytes = labels.to_bytes().unwrap();
        assert_eq!(SoftLabels::from_bytes(&bytes, "t").unwrap(), labels);
        assert!(SoftLabels::from_bytes(&bytes[..bytes.len() / 2], "t").is_err());
        assert!(SoftLabels::from_bytes(b"not safetensors", "t").is_err());
    }

    #[test]
    fn the_top_k_leave_the_excluded_tokens_out_and_sum_to_one() {
        let top = TopK {
            k: 2,
            excluded: Tensor::from_slice(&[false, true, false, false]),
            excluded_ids: vec![1],
        };
        let logits = Tensor::from_slice(&[1.0f32, 5.0, 2.0, 0.0]).view([1, 4]);
        let (ids, lp) = top.take(&logits).unwrap();
        assert_eq!(ids, vec![2, 0]);
        let total: f32 = lp.iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(
            (lp[0] - lp[1] - 1.0).abs() < 1e-6,
            "the kept tokens keep their ratio"
        );
    }
}
