//! Text to token ids and back, and chat messages to text through the model's
//! own chat template.
//!
//! The tokenizer is the tokenizers crate's, loaded from `tokenizer.json` or
//! built from a GGUF file's byte-level BPE vocabulary and merges. The chat
//! template is the model's Jinja template (from `tokenizer_config.json` or
//! GGUF metadata), rendered with minijinja; a model without one gets ChatML.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::gguf::Gguf;

/// One turn of a conversation, as in the OpenAI chat fine-tuning format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

/// ChatML, the template of SmolLM2 and Qwen, for models that ship none.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

pub struct ChatTokenizer {
    inner: Tokenizer,
    template: String,
    bos_token: String,
    eos_token: String,
    /// Tokens that end an assistant turn: generation stops at any of them.
    pub stop_ids: Vec<u32>,
    pub pad_id: u32,
}

impl ChatTokenizer {
    /// From a Hugging Face folder's `tokenizer.json` and `tokenizer_config.json` (optional).
    pub fn from_hf(
        tokenizer_json: &[u8],
        tokenizer_config: Option<&[u8]>,
        template: Option<String>,
    ) -> anyhow::Result<Self> {
        let inner = Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| anyhow::anyhow!("tokenizer.json cannot be read: {e}"))?;
        let config: serde_json::Value = match tokenizer_config {
            Some(bytes) => {
                serde_json::from_slice(bytes).context("tokenizer_config.json is not JSON")?
            }
            None => serde_json::Value::Null,
        };
        let token = |key: &str| -> Option<String> {
            match config.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                other => other.get("content")?.as_str().map(str::to_owned),
            }
        };
        let eos_token = token("eos_token").unwrap_or_else(|| "<|endoftext|>".to_owned());
        let template = template.unwrap_or_else(|| {
            config
                .get("chat_template")
                .and_then(|t| t.as_str())
                .unwrap_or(CHATML)
                .to_owned()
        });
        let pad = token("pad_token").unwrap_or_else(|| eos_token.clone());
        Self::finish(inner, template, token("bos_token"), eos_token, &pad)
    }

    /// From the `tokenizer.ggml.*` metadata of a GGUF file (byte-level BPE only).
    pub fn from_gguf(gguf: &Gguf) -> anyhow::Result<Self> {
        let model = gguf.get("tokenizer.ggml.model")?.as_str().unwrap_or("");
        if model != "gpt2" {
            bail!("GGUF tokenizer model {model:?} is not supported: expected \"gpt2\" (byte-level BPE)");
        }
        let tokens = gguf.string_array("tokenizer.ggml.tokens")?;
        let merges = gguf
            .string_array("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .with_context(|| format!("GGUF merge {m:?} is not two tokens"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let types: Vec<i64> = match gguf.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .as_array()
                .map(|a| a.iter().map(|t| t.as_int().unwrap_or(1)).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| anyhow::anyhow!("GGUF vocabulary does not make a BPE model: {e}"))?;
        let mut inner = Tokenizer::new(bpe);
        inner
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
            .with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| matches!(**t, TOKEN_CONTROL | TOKEN_USER_DEFINED))
            .map(|(tok, _)| AddedToken::from(tok.clone(), true))
            .collect();
        inner.add_special_tokens(&special);
        let token_at = |key: &str| -> Option<String> {
            let id = gguf.metadata.get(key)?.as_int()?;
            tokens.get(usize::try_from(id).ok()?).cloned()
        };
        let eos_token = token_at("tokenizer.ggml.eos_token_id")
            .context("GGUF metadata names no end-of-sequence token")?;
        let pad = token_at("tokenizer.ggml.padding_token_id").unwrap_or_else(|| eos_token.clone());
        let template = gguf
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|t| t.as_str())
            .unwrap_or(CHATML)
            .to_owned();
        let bos = token_at("tokenizer.ggml.bos_token_id");
        Self::finish(inner, template, bos, eos_token, &pad)
    }

    fn finish(
        inner: Tokenizer,
        template: String,
        bos_token: Option<String>,
        eos_token: String,
        pad: &str,
    ) -> anyhow::Result<Self> {
        let mut stop_ids = Vec::new();
        for stop in [
            eos_token.as_str(),
            "<|im_end|>",
            "<|endoftext|>",
            "<|eot_id|>",
        ] {
            if let Some(id) = inner.token_to_id(stop) {
                if !stop_ids.contains(&id) {
                    stop_ids.push(id);
                }
            }
        }
        if stop_ids.is_empty() {
            bail!("the tokenizer has no end-of-sequence token {eos_token:?}");
        }
        let pad_id = inner.token_to_id(pad).unwrap_or(stop_ids[0]);
        let tokenizer = Self {
            inner,
            template,
            bos_token: bos_token.unwrap_or_default(),
            eos_token,
            stop_ids,
            pad_id,
        };
        tokenizer
            .render(&[Message::new("user", "hi")], true)
            .context("the model's chat template does not render")?;
        Ok(tokenizer)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of a text; special tokens written in the text become their ids.
    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow::anyhow!("cannot tokenise {text:?}: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// One token as a person reads it: its text, or its name for a special
    /// token (`<|im_end|>`), which has no text.
    pub fn token_text(&self, id: u32) -> anyhow::Result<String> {
        let text = self.decode(&[id])?;
        if !text.is_empty() {
            return Ok(text);
        }
        Ok(self
            .inner
            .id_to_token(id)
            .unwrap_or_else(|| format!("<token {id}>")))
    }

    /// The text of token ids, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow::anyhow!("cannot decode tokens: {e}"))
    }

    /// A conversation as the model saw such text in training, optionally
    /// ending where the assistant's answer begins.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> anyhow::Result<String> {
        let mut env = minijinja::Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", &self.template)
            .map_err(|e| anyhow::anyhow!("chat template does not parse: {e}"))?;
        let template = env.get_template("chat")?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| anyhow::anyhow!("chat template does not render: {e}"))
    }

    /// The token ids of a prompt that ends where the assistant's answer begins.
    pub fn prompt_ids(&self, messages: &[Message]) -> anyhow::Result<Vec<u32>> {
        self.encode(&self.render(messages, true)?)
    }

    /// A training example: the prompt's ids, then the answer's ids ending with
    /// the template's end of turn. Only the answer is learned.
    pub fn example_ids(
        &self,
        messages: &[Message],
        answer: &str,
    ) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
        let prompt = self.render(messages, true)?;
        let mut all = messages.to_vec();
        all.push(Message::new("assistant", answer));
        let full = self.render(&all, false)?;
        let Some(rest) = full.strip_prefix(&prompt) else {
            bail!("the chat template renders the answer's turn in a way that changes the prompt before it");
        };
        let rest = rest.trim_end_matches('\n');
        Ok((self.encode(&prompt)?, self.encode(rest)?))
    }
}
