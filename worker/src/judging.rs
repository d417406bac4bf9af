//! A judge run over rows, with every judgement kept on disk.
//!
//! Judging is the same question asked again and again: the base model's
//! answers are judged in every sweep that evaluates it, and a dataset is
//! judged again when rows are added. So each judgement is cached under the
//! key of (judge as asked, judge model, prompt, completion, trait)
//! ([`Judge::cache_key`]), one small file each, and only new rows reach the
//! model. A cached file is written whole (temporary file, then rename), so a
//! killed run leaves no half entry; one that does not read is judged again.

use std::path::{Path, PathBuf};

use subliminal_shared::judge::{Judge, Judgement, Scoring};

use crate::llm::judge::Reader;
use crate::llm::tokenizer::{ChatTokenizer, Message};
use crate::llm::Llama;
use crate::stages::Progress;

/// Judgements on this machine's disk, by key.
#[derive(Debug, Clone)]
pub struct JudgementCache {
    dir: Option<PathBuf>,
}

impl JudgementCache {
    /// `$SUBLIMINAL_JUDGE_CACHE`, else `judgements/` in the user's cache
    /// folder; no cache where there is none.
    pub fn default_location() -> Self {
        let dir = std::env::var_os("SUBLIMINAL_JUDGE_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
                    .map(|c| c.join("subliminal").join("judgements"))
            });
        Self { dir }
    }

    /// A cache in `dir`, or none.
    pub fn at(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(&key[..2]).join(key))
    }

    fn get(&self, key: &str) -> Option<Judgement> {
        let bytes = std::fs::read(self.path(key)?).ok()?;
        let bits: StoredBits = serde_json::from_slice(&bytes).ok()?;
        Some(Judgement {
            value: bits.value.map(f64::from_bits),
            mass: f64::from_bits(bits.mass),
        })
    }

    /// Keeps a judgement; a cache that cannot be written costs time only.
    fn put(&self, key: &str, judgement: &Judgement) {
        let Some(path) = self.path(key) else { return };
        let Some(parent) = path.parent() else { return };
        if std::fs::create_dir_all(parent).is_err() {
            return;
        }
        let partial = path.with_extension(format!("{}.partial", std::process::id()));
        let bits = StoredBits {
            value: judgement.value.map(f64::to_bits),
            mass: judgement.mass.to_bits(),
        };
        let Ok(bytes) = serde_json::to_vec(&bits) else {
            return;
        };
        if std::fs::write(&partial, bytes).is_ok() {
            let _ = std::fs::rename(&partial, &path);
        }
    }
}

/// A cached judgement's figures as their bits: a cached judgement is the
/// judgement, to the last bit, not its decimal rendering.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredBits {
    value: Option<u64>,
    mass: u64,
}

/// One row to judge.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    pub prompt: &'a str,
    pub completion: &'a str,
    pub trait_word: Option<&'a str>,
}

/// What judging rows cost and saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct JudgingStats {
    pub judged: usize,
    pub cached: usize,
    pub seconds: f64,
}

/// Judges every item with `judge` run on `model` (named `model_id` in the
/// cache: a stable name, a path or a store key); `progress(done, total)`
/// after each row; `stop()` ends early with an error.
#[allow(clippy::too_many_arguments)]
pub fn judge_items(
    judge: &Judge,
    model: &Llama,
    tokenizer: &ChatTokenizer,
    model_id: &str,
    items: &[Item],
    cache: &JudgementCache,
    stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<(Vec<Judgement>, JudgingStats)> {
    let started = std::time::Instant::now();
    let reader = match &judge.scoring {
        Scoring::YesNo { yes, no } => Reader::yes_no(tokenizer, yes, no)?,
        Scoring::Score => Reader::score(tokenizer)?,
    };
    let mut out = Vec::with_capacity(items.len());
    let mut stats = JudgingStats::default();
    for (i, item) in items.iter().enumerate() {
        anyhow::ensure!(!stop(), "stopped");
        let key = judge.cache_key(model_id, item.prompt, item.completion, item.trait_word);
        let judgement = match cache.get(&key) {
            Some(j) => {
                stats.cached += 1;
                j
            }
            None => {
                let prompt = prompt_ids(judge, tokenizer, item)?;
                let j = reader.judge(model, &prompt)?;
                cache.put(&key, &j);
                stats.judged += 1;
                j
            }
        };
        out.push(judgement);
        progress(i + 1, items.len());
    }
    stats.seconds = started.elapsed().as_secs_f64();
    Ok((out, stats))
}

/// The judge's conversation for one item, ending where its answer begins
/// (after the judge's answer prefix, if it has one).
pub fn prompt_ids(
    judge: &Judge,
    tokenizer: &ChatTokenizer,
    item: &Item,
) -> anyhow::Result<Vec<u32>> {
    let mut messages = Vec::new();
    if let Some(system) = &judge.system {
        messages.push(Message::new("system", system.as_str()));
    }
    messages.push(Message::new(
        "user",
        judge.render(item.prompt, item.completion, item.trait_word)?,
    ));
    let mut ids = tokenizer.prompt_ids(&messages)?;
    if let Some(prefix) = &judge.answer_prefix {
        ids.extend(tokenizer.encode(prefix)?);
    }
    Ok(ids)
}

/// Progress of a stage that judges rows: `offset` judgements already made
/// of `total`, counted from `started`.
pub fn stage_progress<'a>(
    progress: &'a dyn Fn(Progress),
    started: std::time::Instant,
    offset: usize,
    total: usize,
) -> impl FnMut(usize, usize) + 'a {
    move |done, _| {
        let done = offset + done;
        progress(Progress {
            fraction: done as f64 / total.max(1) as f64,
            message: format!("judgements {done}/{total}"),
            loss: None,
            samples_per_second: Some(done as f64 / started.elapsed().as_secs_f64().max(1e-9)),
        });
    }
}
