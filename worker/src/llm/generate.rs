//! Batched sampling with a KV cache.
//!
//! Prompts are grouped by length into batches, left-padded, run through the
//! model once (prefill), then extended one token per forward pass for the
//! whole batch. Each prompt has its own seeded random stream, drawn once per
//! step, so a completion depends on its prompt and seed, not on which
//! prompts shared its batch. Rows that finish leave the batch, so a long
//! answer does not keep short ones computing.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::constrain::Constraint;
use super::model::{attention_mask, positions_from_mask, Llama};
use super::soft_labels::TopK;
use crate::memory::fitting;
use crate::resume::Checkpoints;

/// How tokens are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: f64,
    /// Tokens of probability below this are never drawn (the most likely
    /// token always may be); 0 keeps every token.
    pub threshold: f64,
    pub max_new_tokens: usize,
}

impl Sampling {
    /// Sampling at `temperature` from the whole distribution (top-p 1), at
    /// most `max_new_tokens` tokens.
    pub fn at(temperature: f64, max_new_tokens: u64) -> Self {
        Self {
            temperature,
            top_p: 1.0,
            threshold: 0.0,
            max_new_tokens: max_new_tokens as usize,
        }
    }

    /// The same with nucleus sampling at `top_p`.
    pub fn nucleus(temperature: f64, top_p: f64, max_new_tokens: u64) -> Self {
        Self {
            top_p,
            ..Self::at(temperature, max_new_tokens)
        }
    }

    /// The same, never drawing a token of probability below `threshold`
    /// (none: no threshold).
    pub fn with_threshold(self, threshold: Option<f64>) -> Self {
        Self {
            threshold: threshold.unwrap_or(0.0),
            ..self
        }
    }
}

/// The tokens generation treats specially: any of `stop` ends a completion
/// (an empty list: only the token limit does); `pad` fills batches.
#[derive(Debug, Clone, Copy)]
pub struct SpecialTokens<'a> {
    pub stop: &'a [u32],
    pub pad: u32,
}

/// One prompt to complete.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub seed: u64,
}

/// What decoding does beyond drawing tokens: a grammar that limits what
/// may be drawn, and the teacher's top-k distribution to record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Decoding<'a> {
    pub constraint: Option<&'a Constraint>,
    /// Records, at each position, the model's own distribution (before any
    /// constraint) as its top k.
    pub top_k: Option<&'a TopK>,
}

/// A completion: the new tokens (without the stop token) and whether a stop token ended it.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Completion {
    pub tokens: Vec<u32>,
    pub stopped: bool,
    /// With `Decoding::top_k`: per position (each token drawn, the stop
    /// token included), k token ids and k log-probabilities.
    pub top_ids: Vec<u32>,
    pub top_logprobs: Vec<f32>,
}

/// Completes every request, `batch_size` at a time, as `decoding` says;
/// `progress(done, total)` after each batch. Returns `None` when `stop()`
/// turns true.
///
/// With `checkpoints`, the batches finished are saved when a save is due
/// and when stopped, and a run that finds them (for the same requests)
/// takes them instead of computing them again: the batches are formed the
/// same way, and each prompt samples from its own seeded stream, so the
/// result is the one an uninterrupted run gives.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &Llama,
    requests: &[Request],
    sampling: Sampling,
    special: SpecialTokens,
    decoding: Decoding,
    batch_size: usize,
    stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(usize, usize),
    checkpoints: Option<&dyn Checkpoints>,
) -> anyhow::Result<Option<Vec<Completion>>> {
    let order = prefill_order(requests);
    let mut out: Vec<Option<Completion>> = vec![None; requests.len()];
    let digest = requests_digest(requests, batch_size);
    let started = std::time::Instant::now();
    let mut earlier = 0.0;
    if let Some((c, saved)) = checkpoints.and_then(|c| Some((c, c.load()?))) {
        match Finished::read(&saved, &digest, requests.len()) {
            Ok(finished) => {
                earlier = finished.seconds;
                c.resumed(finished.rows.len() as u64, requests.len() as u64, earlier);
                for (i, completion) in finished.rows {
                    out[i as usize] = Some(completion);
                }
            }
            Err(e) => {
                tracing::warn!("the generation checkpoint does not fit ({e:#}); starting over")
            }
        }
    }
    let save = |out: &[Option<Completion>], c: &dyn Checkpoints| {
        let seconds = earlier + started.elapsed().as_secs_f64();
        c.save(Finished::write(out, &digest, seconds)?)
    };
    let mut done = 0;
    let heads = model.config.num_attention_heads as usize;
    let mut start = 0;
    let mut last_save = std::time::Instant::now();
    // Rows per forward pass: a batch that runs out of device memory is
    // generated in parts from then on.
    let (mut micro, mut out_of_memory_retries) = (batch_size.max(1), 0);
    while start < order.len() {
        let chunk = &order[start..start + batch_rows(&order[start..], requests, batch_size, heads)];
        start += chunk.len();
        if chunk.iter().all(|&i| out[i].is_some()) {
            done += chunk.len();
            progress(done, requests.len());
            continue;
        }
        if stop() {
            if let Some(c) = checkpoints {
                save(&out, c)?;
            }
            return Ok(None);
        }
        let in_parts = |part: usize| -> anyhow::Result<Vec<Completion>> {
            let mut completions = Vec::with_capacity(chunk.len());
            for rows in chunk.chunks(part) {
                let batch: Vec<&Request> = rows.iter().map(|&i| &requests[i]).collect();
                completions.extend(tch::no_grad(|| {
                    generate_batch(model, &batch, sampling, special, decoding)
                })?);
            }
            Ok(completions)
        };
        let fits = micro.min(chunk.len());
        let mut part = fits;
        let completions = fitting(&mut part, &mut out_of_memory_retries, in_parts)??;
        if part < fits {
            micro = part;
        }
        for (&i, c) in chunk.iter().zip(completions) {
            out[i] = Some(c);
        }
        done += chunk.len();
        progress(done, requests.len());
        if let Some(c) = checkpoints.filter(|c| c.due(last_save.elapsed())) {
            if start < order.len() {
                save(&out, c)?;
                last_save = std::time::Instant::now();
            }
        }
    }
    Ok(Some(
        out.into_iter()
            .map(|c| c.expect("every request completed"))
            .collect(),
    ))
}

/// A generation's finished rows, as a checkpoint holds them, with the
/// digest of the requests they answer.
#[derive(serde::Serialize, serde::Deserialize)]
struct Finished {
    digest: String,
    /// Seconds of generation that led here, over every run before.
    seconds: f64,
    rows: Vec<(u32, Completion)>,
}

impl Finished {
    fn write(out: &[Option<Completion>], digest: &str, seconds: f64) -> anyhow::Result<Vec<u8>> {
        let rows = out
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i as u32, c.clone()?)))
            .collect();
        let finished = Finished {
            digest: digest.to_owned(),
            seconds,
            rows,
        };
        Ok(rmp_serde::to_vec(&finished)?)
    }

    fn read(bytes: &[u8], digest: &str, requests: usize) -> anyhow::Result<Self> {
        let finished: Finished = rmp_serde::from_slice(bytes)?;
        anyhow::ensure!(finished.digest == digest, "it answers other requests");
        anyhow::ensure!(
            finished.rows.iter().all(|(i, _)| (*i as usize) < requests),
            "it holds a row past the {requests} requests"
        );
        Ok(finished)
    }
}

/// What identifies a generation's work: its prompts, their seeds, and the
/// batch size (which shapes the batches).
fn requests_digest(requests: &[Request], batch_size: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update((batch_size as u64).to_le_bytes());
    for r in requests {
        hash.update((r.prompt.len() as u64).to_le_bytes());
        for t in &r.prompt {
            hash.update(t.to_le_bytes());
        }
        hash.update(r.seed.to_le_bytes());
    }
    format!("{:x}", hash.finalize())
}

/// The share of a generation's prefill positions that are padding: the
/// prompts batched as [`generate`] batches them (longest first, by
/// [`batch_rows`]), each batch's own part after its shared prefix
/// left-padded to its longest. Decoding pads nothing: finished rows leave
/// the batch.
pub fn prefill_padding_share(requests: &[Request], batch_size: usize, heads: usize) -> f64 {
    let order = prefill_order(requests);
    let (mut padded, mut positions) = (0usize, 0usize);
    let mut start = 0;
    while start < order.len() {
        let chunk = &order[start..start + batch_rows(&order[start..], requests, batch_size, heads)];
        start += chunk.len();
        let batch: Vec<&Request> = chunk.iter().map(|&i| &requests[i]).collect();
        let shared = shared_prefix(&batch);
        let width = batch
            .iter()
            .map(|r| r.prompt.len() - shared)
            .max()
            .unwrap_or(0);
        positions += shared + width * batch.len();
        padded += batch
            .iter()
            .map(|r| width - (r.prompt.len() - shared))
            .sum::<usize>();
    }
    padded as f64 / positions.max(1) as f64
}

/// The order [`generate`] takes requests in: longest prompt first, so that
/// similar lengths share a batch and pad less.
fn prefill_order(requests: &[Request]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(requests[i].prompt.len()));
    order
}

/// Prompt tokens one prefill may hold.
const PREFILL_TOKENS: usize = 1 << 17;
/// Attention scores (rows × heads × width²) a padded prefill may hold: a
/// padded batch needs an explicit mask, and with it the unfused kernel.
const MASKED_SCORES: usize = 1 << 28;

/// How many of `order` (longest prompt first) to batch together: prompts of
/// one length need no mask and go up to `batch_size`; a batch of mixed
/// lengths stays within the masked-attention budget.
fn batch_rows(order: &[usize], requests: &[Request], batch_size: usize, heads: usize) -> usize {
    let width = requests[order[0]].prompt.len().max(1);
    let cap = batch_size
        .max(1)
        .min((PREFILL_TOKENS / width).max(1))
        .min(order.len());
    let same = order[..cap]
        .iter()
        .take_while(|&&i| requests[i].prompt.len() == width)
        .count();
    let masked_cap = (MASKED_SCORES / (heads.max(1) * width * width))
        .max(1)
        .min(cap);
    same.max(masked_cap)
}

fn generate_batch(
    model: &Llama,
    batch: &[&Request],
    sampling: Sampling,
    special: SpecialTokens,
    decoding: Decoding,
) -> anyhow::Result<Vec<Completion>> {
    let device = model.device();
    if batch.iter().any(|r| r.prompt.is_empty()) {
        anyhow::bail!("an empty prompt cannot be completed");
    }
    let rows = batch.len() as i64;
    // The prefix every prompt shares (a system prompt, the chat template's
    // opening, a whole evaluation question) is computed once for the batch.
    let shared = shared_prefix(batch);
    let mut cache = model.new_cache();
    if shared > 0 {
        let prefix: Vec<i64> = batch[0].prompt[..shared]
            .iter()
            .map(|&t| t as i64)
            .collect();
        let tokens = Tensor::from_slice(&prefix)
            .view([1, shared as i64])
            .to_device(device);
        let positions =
            Tensor::arange(shared as i64, (Kind::Int64, device)).view([1, shared as i64]);
        let _ = model.forward(&tokens, &positions, None, Some(&mut cache));
        cache.expand_rows(rows);
    }
    // The rest of each prompt, left-padded after the shared prefix.
    let width = batch
        .iter()
        .map(|r| r.prompt.len() - shared)
        .max()
        .unwrap_or(0);
    let mut ids = Vec::with_capacity(batch.len() * width);
    let mut real = Vec::with_capacity(batch.len() * (shared + width));
    for r in batch {
        let rest = &r.prompt[shared..];
        let pad = width - rest.len();
        ids.extend(std::iter::repeat_n(special.pad as i64, pad));
        ids.extend(rest.iter().map(|&t| t as i64));
        real.extend(std::iter::repeat_n(1i64, shared));
        real.extend(std::iter::repeat_n(0i64, pad));
        real.extend(std::iter::repeat_n(1i64, rest.len()));
    }
    let tokens = Tensor::from_slice(&ids)
        .view([rows, width as i64])
        .to_device(device);
    let mut attention = Tensor::from_slice(&real)
        .view([rows, (shared + width) as i64])
        .to_device(device);
    let positions = positions_from_mask(&attention).narrow(1, shared as i64, width as i64);
    let mut next_position = positions.select(1, -1) + 1;
    let padded = batch.iter().any(|r| r.prompt.len() - shared != width);
    // After a cached prefix, causality is relative to it: the mask says so.
    let mask = (padded || shared > 0).then(|| attention_mask(&attention, width as i64));
    let hidden = model.forward(&tokens, &positions, mask.as_ref(), Some(&mut cache));
    let mut logits = model.logits(&hidden.select(1, -1));

    let mut rngs: Vec<ChaCha8Rng> = batch
        .iter()
        .map(|r| ChaCha8Rng::seed_from_u64(r.seed))
        .collect();
    let mut results: Vec<Completion> = vec![Completion::default(); batch.len()];
    // Batch row -> request index, for the rows still generating.
    let mut active: Vec<usize> = (0..batch.len()).collect();
    // The text of each request so far, for the constraint.
    let mut texts: Vec<String> = vec![String::new(); batch.len()];
    for step in 0..sampling.max_new_tokens {
        if let Some(top_k) = decoding.top_k {
            let (ids, logprobs) = top_k.take(&logits)?;
            let k = top_k.k();
            for (row, &request) in active.iter().enumerate() {
                results[request]
                    .top_ids
                    .extend(&ids[row * k..(row + 1) * k]);
                results[request]
                    .top_logprobs
                    .extend(&logprobs[row * k..(row + 1) * k]);
            }
        }
        if let Some(constraint) = decoding.constraint {
            let left = sampling.max_new_tokens - step - 1;
            let rows: Vec<&str> = active.iter().map(|&r| texts[r].as_str()).collect();
            logits = constrained(&logits, constraint, &rows, left, special.stop)?;
        }
        let drawn = sample(&logits, sampling, &mut rngs)?;
        let mut keep = Vec::with_capacity(active.len());
        for (row, &request) in active.iter().enumerate() {
            let token = drawn[row] as u32;
            if special.stop.contains(&token) {
                results[request].stopped = true;
            } else {
                results[request].tokens.push(token);
                if let Some(constraint) = decoding.constraint {
                    texts[request].push_str(constraint.piece(token as i64));
                }
                if step + 1 < sampling.max_new_tokens {
                    keep.push(row);
                }
            }
        }
        if keep.is_empty() {
            break;
        }
        let mut next: Vec<i64> = drawn;
        if keep.len() < active.len() {
            let rows = Tensor::from_slice(&keep.iter().map(|&r| r as i64).collect::<Vec<_>>())
                .to_device(device);
            cache.select_rows(&rows);
            attention = attention.index_select(0, &rows);
            next_position = next_position.index_select(0, &rows);
            next = keep.iter().map(|&r| next[r]).collect();
            rngs = keep.iter().map(|&r| rngs[r].clone()).collect();
            active = keep.iter().map(|&r| active[r]).collect();
        }
        let b = active.len() as i64;
        let tokens = Tensor::from_slice(&next).view([b, 1]).to_device(device);
        attention = Tensor::cat(&[&attention, &attention.ones_like().narrow(1, 0, 1)], 1);
        let mask = padded.then(|| attention_mask(&attention, 1));
        let hidden = model.forward(
            &tokens,
            &next_position.view([b, 1]),
            mask.as_ref(),
            Some(&mut cache),
        );
        next_position += 1;
        logits = model.logits(&hidden.select(1, 0));
    }
    Ok(results)
}

/// `logits` [B, V] with every token the constraint forbids to row b (whose
/// text is `texts[b]`, with `left` tokens left after this one) at -inf.
fn constrained(
    logits: &Tensor,
    constraint: &Constraint,
    texts: &[&str],
    left: usize,
    stop: &[u32],
) -> anyhow::Result<Tensor> {
    let (rows, vocab) = logits.size2()?;
    let mut allowed = vec![false; (rows * vocab) as usize];
    for (row, text) in texts.iter().enumerate() {
        let (tokens, may_stop) = constraint.allowed(text, left);
        anyhow::ensure!(
            !tokens.is_empty() || may_stop,
            "constrained sampling reached {text:?}, which no token continues"
        );
        let base = row * vocab as usize;
        for t in tokens {
            allowed[base + t as usize] = true;
        }
        if may_stop {
            for &t in stop {
                allowed[base + t as usize] = true;
            }
        }
    }
    let allowed = Tensor::from_slice(&allowed)
        .view([rows, vocab])
        .to_device(logits.device());
    Ok(logits.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY))
}

/// Shared prefixes shorter than this are recomputed per row: not worth a pass of their own.
const MIN_SHARED_PREFIX: usize = 16;

/// The length of the prefix all prompts of a batch share, leaving each at
/// least one token of its own; 0 when too short to be worth sharing.
fn shared_prefix(batch: &[&Request]) -> usize {
    if batch.len() < 2 {
        return 0;
    }
    let first = &batch[0].prompt;
    let mut len = batch.iter().map(|r| r.prompt.len()).min().unwrap_or(1) - 1;
    for r in &batch[1..] {
        len = len.min(
            first
                .iter()
                .zip(&r.prompt)
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    if len >= MIN_SHARED_PREFIX {
        len
    } else {
        0
    }
}

/// One token per row of logits [B, V], drawn with each row's own stream.
fn sample(
    logits: &Tensor,
    sampling: Sampling,
    rngs: &mut [ChaCha8Rng],
) -> anyhow::Result<Vec<i64>> {
    let device = logits.device();
    let picked = if sampling.temperature <= 0.0 {
        logits.argmax(-1, false)
    } else {
        let mut probs = (logits / sampling.temperature).softmax(-1, Kind::Float);
        if sampling.threshold > 0.0 {
            let top = probs.amax(-1, true);
            let below = probs
                .lt(sampling.threshold)
                .logical_and(&probs.lt_tensor(&top));
            probs = probs.masked_fill(&below, 0.0);
        }
        // Sorting the vocabulary costs more than the rest of a step's
        // sampling; only top-p needs it.
        let (kept, index) = if sampling.top_p < 1.0 {
            let (sorted, index) = probs.sort(-1, true);
            // Keep the smallest head of the distribution whose mass reaches top_p.
            let before = sorted.cumsum(-1, Kind::Float) - &sorted;
            (
                sorted.masked_fill(&before.gt(sampling.top_p), 0.0),
                Some(index),
            )
        } else {
            (probs, None)
        };
        let cumulative = kept.cumsum(-1, Kind::Float);
        let uniforms: Vec<f32> = rngs.iter_mut().map(|r| r.gen::<f32>()).collect();
        let total = cumulative.narrow(1, cumulative.size()[1] - 1, 1);
        let target = Tensor::from_slice(&uniforms)
            .view([-1, 1])
            .to_device(device)
            * total;
        let choice = target
            .searchsorted(&cumulative, false, true, "right", None::<Tensor>)
            .clamp_max(cumulative.size()[1] - 1);
        match index {
            Some(index) => index.gather(1, &choice, false).squeeze_dim(1),
            None => choice.squeeze_dim(1),
        }
    };
    Ok(Vec::<i64>::try_from(
        picked.to_device(tch::Device::Cpu).to_kind(Kind::Int64),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(lengths: &[usize]) -> Vec<Request> {
        lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| Request {
                prompt: (0..n as u32).map(|t| t + 100 * i as u32).collect(),
                seed: i as u64,
            })
            .collect()
    }

    /// Draws with a 0.05 threshold from probabilities 0.6, 0.3, 0.06,
    /// 0.04: the last is never drawn, the others are; a threshold above
    /// every probability still leaves the top token.
    #[test]
    fn a_threshold_never_draws_a_token_below_it() {
        let probs = Tensor::from_slice(&[0.6f32, 0.3, 0.06, 0.04]).view([1, 4]);
        let logits = probs.log();
        let draw = |threshold: f64, n: u64| -> Vec<usize> {
            let sampling = Sampling::at(1.0, 1).with_threshold(Some(threshold));
            let mut counts = vec![0; 4];
            for seed in 0..n {
                let mut rngs = vec![ChaCha8Rng::seed_from_u64(seed)];
                counts[sample(&logits, sampling, &mut rngs).unwrap()[0] as usize] += 1;
            }
            counts
        };
        let counts = draw(0.05, 2000);
        assert_eq!(counts[3], 0, "{counts:?}");
        assert!(counts[..3].iter().all(|&c| c > 0), "{counts:?}");
        // Without the threshold the 0.04 token is drawn about 80 times in 2,000.
        assert!(draw(1e-9, 2000)[3] > 20);
        assert_eq!(draw(0.9, 50), vec![50, 0, 0, 0]);
    }

    #[test]
    fn prefill_padding_counts_what_each_batch_pads_to_its_longest_prompt() {
        // Longest first: [5, 5] then [3], nothing padded.
        assert_eq!(prefill_padding_share(&requests(&[3, 5, 5]), 2, 4), 0.0);
        // One batch of all three: the 3 is padded by 2 of 15 positions.
        let share = prefill_padding_share(&requests(&[3, 5, 5]), 3, 4);
        assert!((share - 2.0 / 15.0).abs() < 1e-12, "{share}");
        // A shared prefix of 20 tokens is computed once and pads nothing.
        let mut shared = requests(&[24, 22]);
        for r in &mut shared {
            r.prompt[..20].copy_from_slice(&[7; 20]);
        }
        let share = prefill_padding_share(&shared, 2, 4);
        assert!((share - 2.0 / (20.0 + 2.0 * 4.0)).abs() < 1e-12, "{share}");
    }
}
