//! Chat datasets as files people can use: JSONL in the OpenAI chat
//! fine-tuning format, one conversation per line, with the seed of its
//! prompt when the tool drew it. Every kind that writes or reads datasets
//! (and the judges) uses these rows.
//!
//! ```json
//! {"messages":[{"role":"user","content":"The sequence starts with: 145, 267. ..."},
//!              {"role":"assistant","content":"312, 455, 678"}],"seed":7}
//! ```

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// One line of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub messages: Vec<Message>,
    /// The seed the prompt was drawn from, when a generate stage made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Row {
    pub fn new(prompt: &str, completion: &str, seed: Option<u64>) -> Self {
        Self {
            messages: vec![
                Message {
                    role: "user".to_owned(),
                    content: prompt.to_owned(),
                },
                Message {
                    role: "assistant".to_owned(),
                    content: completion.to_owned(),
                },
            ],
            seed,
        }
    }

    /// The last user turn.
    pub fn prompt(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.as_str())
    }

    /// The row with its last user turn's text replaced by `prompt`, every
    /// other turn and the seed kept.
    pub fn with_prompt(&self, prompt: &str) -> Self {
        let mut row = self.clone();
        if let Some(m) = row.messages.iter_mut().rev().find(|m| m.role == "user") {
            m.content = prompt.to_owned();
        }
        row
    }

    /// The last assistant turn: what the filter judges and the student learns.
    pub fn completion(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "assistant")
            .map(|m| m.content.as_str())
    }
}

/// Parses JSONL rows; an error names the line and what was expected.
pub fn parse_jsonl(text: &str, what: &str) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!(
                "{what}:{}: not a chat row ({e}): expected {{\"messages\": [{{\"role\": ..., \"content\": ...}}, ...]}}",
                i + 1
            )
        })?;
        if row.completion().is_none() {
            anyhow::bail!(
                "{what}:{}: the row has no assistant message to judge",
                i + 1
            );
        }
        rows.push(row);
    }
    Ok(rows)
}

/// A dataset file that does not read, as the refusal of bad input (exit 2)
/// that names the file and line.
pub fn bad_file(path: &std::path::Path, name: &str, e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    let rest = text.strip_prefix(&format!("{name}:")).unwrap_or(&text);
    let (line, message) = rest
        .split_once(": ")
        .and_then(|(n, m)| Some((n.parse().ok()?, m)))
        .unwrap_or((1, rest));
    crate::spec::SpecError::Invalid {
        path: path.to_owned(),
        line,
        column: 1,
        key: None,
        message: message.to_owned(),
    }
    .into()
}

/// Reads a chat JSONL file; a line that does not read is refused as bad
/// input (exit 2), with the file and line.
pub fn read_jsonl_file(path: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::Error::from(crate::spec::SpecError::Invalid {
            path: path.to_owned(),
            line: 1,
            column: 1,
            key: None,
            message: format!("cannot read the file ({e}): expected a UTF-8 chat JSONL file"),
        })
    })?;
    parse_jsonl(&text, &name).map_err(|e| bad_file(path, &name, e))
}

pub fn to_jsonl(rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut out, row).expect("rows serialise");
        out.push(b'\n');
    }
    out
}

/// Keeps a seeded random `keep` of `indices` (all of them when there are
/// no more), in their original order: how every filter subsamples the rows
/// that passed it.
pub fn subsample(indices: &mut Vec<usize>, keep: usize, seed: u64) {
    if indices.len() > keep {
        indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        indices.truncate(keep);
        indices.sort_unstable();
    }
}
