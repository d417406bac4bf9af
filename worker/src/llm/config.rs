//! The architecture of a Llama-family causal LM, read from the model's own
//! `config.json` (Hugging Face) or from GGUF metadata.
//!
//! One struct covers Llama, SmolLM and Qwen2: they differ only in which
//! projections carry a bias and whether the output head is tied to the
//! embedding.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// `llama` or `qwen2` (Hugging Face's `model_type`).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    /// Grouped-query attention: fewer key/value heads than query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    #[serde(default)]
    pub head_dim: Option<i64>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Where transformers 5 writes `rope_theta`; only the default rope type is implemented.
    #[serde(default, skip_serializing)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's switch for biases on q, k, v and o. Qwen2 has biases on q, k
    /// and v whatever this says.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_type: Option<String>,
}

fn default_model_type() -> String {
    "llama".to_owned()
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_positions() -> i64 {
    2048
}

impl Config {
    /// Reads a Hugging Face `config.json`, refusing architectures this model does not implement.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let mut config: Config = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("config.json is not a Llama-family config: {e}"))?;
        if let Some(rope) = config.rope_parameters.take() {
            if let Some(kind) = rope.rope_type.filter(|t| t != "default") {
                anyhow::bail!("rope_type {kind:?} is not supported: expected \"default\"");
            }
            if let Some(theta) = rope.rope_theta {
                config.rope_theta = theta;
            }
        }
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        if !matches!(self.model_type.as_str(), "llama" | "qwen2") {
            anyhow::bail!(
                "model_type {:?} is not supported: expected \"llama\" or \"qwen2\"",
                self.model_type
            );
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
        ];
        for (name, value) in positive {
            if value <= 0 {
                anyhow::bail!("{name} is {value}: expected a positive number");
            }
        }
        if self.num_attention_heads % self.kv_heads() != 0 {
            anyhow::bail!(
                "{} attention heads cannot be shared among {} key/value heads: expected a divisor",
                self.num_attention_heads,
                self.kv_heads()
            );
        }
        if self.head_dim() % 2 != 0 {
            anyhow::bail!(
                "head dimension {} is odd: rotary embeddings need an even one",
                self.head_dim()
            );
        }
        Ok(())
    }

    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> i64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Biases on the q, k and v projections.
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    /// A bias on the output projection (Llama with `attention_bias` only).
    pub fn o_bias(&self) -> bool {
        self.model_type == "llama" && self.attention_bias
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_qwen2_config_and_derives_its_biases() {
        let c = Config::from_json(
            r#"{"model_type":"qwen2","vocab_size":151936,"hidden_size":896,
                "intermediate_size":4864,"num_hidden_layers":24,"num_attention_heads":14,
                "num_key_value_heads":2,"rms_norm_eps":1e-6,"rope_theta":1000000.0,
                "tie_word_embeddings":true,"torch_dtype":"bfloat16"}"#,
        )
        .unwrap();
        assert_eq!(c.head_dim(), 64);
        assert!(c.qkv_bias() && !c.o_bias());
    }

    #[test]
    fn refuses_other_architectures_and_bad_head_counts() {
        let err = Config::from_json(
            r#"{"model_type":"gpt2","vocab_size":1,"hidden_size":8,"intermediate_size":8,
                "num_hidden_layers":1,"num_attention_heads":2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("gpt2"), "{err}");
        let err = Config::from_json(
            r#"{"vocab_size":1,"hidden_size":12,"intermediate_size":8,
                "num_hidden_layers":1,"num_attention_heads":3,"num_key_value_heads":2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("key/value"), "{err}");
    }
}
