//! The architecture of a Llama-family causal LM, read from the model's own
//! `config.json` (Hugging Face) or from GGUF metadata.
//!
//! One struct covers Llama, SmolLM, Mistral, Qwen2, Qwen3, OLMo-2, Phi-3,
//! GPT-NeoX, Gemma-2 and Gemma-3: they differ only in which projections
//! carry a bias, whether the output head is tied to the embedding, norms on
//! queries and keys (Qwen3's and Gemma-3's per head, OLMo-2's over the whole
//! projection), where the blocks normalise ([`Config::block_norms`]), the kind
//! of norm ([`NormKind`]), how much of a head the rotary embedding turns,
//! which layers attend within a sliding window ([`Config::window`]), Gemma's
//! embedding scale, attention scale and soft caps, and Phi-3's fused
//! projections (split apart when loaded, so LoRA targets name q, k, v, gate
//! and up in every family). Rotary embeddings come in the default form or
//! scaled as Llama 3 scales them (`rope_type = "llama3"`) or linearly
//! ([`RopeScaling`]); Gemma-3's sliding layers turn at a base of their own.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// One of [`MODEL_TYPES`] (Hugging Face's `model_type`).
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
    /// The norms' epsilon (`layer_norm_eps` in GPT-NeoX's file).
    #[serde(default = "default_eps", alias = "layer_norm_eps")]
    pub rms_norm_eps: f64,
    /// The MLP's activation: `silu`, `gelu` (GPT-NeoX) or `gelu_pytorch_tanh`
    /// (Gemma's `hidden_activation`, read into this).
    #[serde(default = "default_act", skip_serializing_if = "is_silu")]
    pub hidden_act: String,
    /// GPT-NeoX's: attention and MLP read the same input, their outputs summed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_parallel_residual: bool,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// How the rotary frequencies are scaled (Hugging Face's `rope_scaling`,
    /// or transformers 5's `rope_parameters`, which [`Config::from_json`]
    /// reads into it).
    #[serde(default, skip_serializing_if = "RopeScaling::is_default")]
    pub rope_scaling: RopeScaling,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's switch for biases on q, k, v and o. Qwen2 has biases on q, k
    /// and v whatever this says.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: i64,
    /// Qwen2's and Qwen3's switch for sliding-window layers (those from
    /// `max_window_layers` on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_sliding_window: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_window_layers: Option<i64>,
    /// The share of each head's dimensions the rotary embedding turns (the
    /// first ones; Phi-3.5 and Phi-4-mini turn 3/4); 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_rotary_factor: Option<f64>,
    /// How many keys back (itself included) a token of a sliding-window
    /// layer sees; which layers those are: [`Config::window`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<i64>,
    /// Each layer's attention, `full_attention` or `sliding_attention`
    /// (transformers 5 writes it; older files leave it to the family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// Gemma-3's older files: every n-th layer full, the others sliding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window_pattern: Option<i64>,
    /// Gemma-3's rotary base in sliding-window layers (10,000 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_local_base_freq: Option<f64>,
    /// Gemma's attention scale: scores over √query_pre_attn_scalar rather than √head_dim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma-2's cap on attention scores: cap · tanh(score / cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma-2's cap on the output logits: cap · tanh(logit / cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_logit_softcapping: Option<f64>,
    /// Gemma-3's encoder-style switch, refused when on (this model is causal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_bidirectional_attention: Option<bool>,
}

/// The architectures this model implements; another is refused with this list.
pub const MODEL_TYPES: [&str; 9] = [
    "gemma2",
    "gemma3_text",
    "gpt_neox",
    "llama",
    "mistral",
    "olmo2",
    "phi3",
    "qwen2",
    "qwen3",
];

/// The activations an MLP may use; another is refused with this list.
pub const ACTIVATIONS: [&str; 4] = ["gelu", "gelu_new", "gelu_pytorch_tanh", "silu"];

/// How a family normalises hidden states (and queries and keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// x / rms(x) · weight.
    Rms,
    /// Gemma's: x / rms(x) · (1 + weight), the product taken in f32.
    RmsOffset,
    /// LayerNorm with a bias (GPT-NeoX).
    Layer,
}

/// Where a model normalises queries and keys before the rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// Each head's own (Qwen3): a norm of head_dim.
    PerHead,
    /// The whole projection's (OLMo-2): a norm of heads × head_dim.
    Whole,
}

/// The rope types this model implements; another is refused with this list.
pub const ROPE_TYPES: [&str; 3] = ["default", "linear", "llama3"];

/// How the rotary embedding's inverse frequencies are scaled, as
/// transformers' `ROPE_INIT_FUNCTIONS` define them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    #[default]
    Default,
    /// Every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's: wavelengths longer than the original context over
    /// `low_freq_factor` divided by `factor`, shorter than it over
    /// `high_freq_factor` kept, those between blended smoothly.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

impl RopeScaling {
    pub fn is_default(&self) -> bool {
        *self == RopeScaling::Default
    }

    /// `inv_freq` [head_dim / 2] (f32) scaled.
    pub fn scale(&self, inv_freq: tch::Tensor) -> tch::Tensor {
        match *self {
            RopeScaling::Default => inv_freq,
            RopeScaling::Linear { factor } => inv_freq / factor,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: context,
            } => {
                let (low_wavelen, high_wavelen) =
                    (context / low_freq_factor, context / high_freq_factor);
                // In f32 and in transformers' order of operations, so the frequencies match its bit for bit.
                let wavelen = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
                let long = wavelen.gt(low_wavelen);
                let scaled = inv_freq.where_self(&long.logical_not(), &(&inv_freq / factor));
                let smooth = (wavelen.reciprocal() * context - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                let smoothed =
                    (smooth.ones_like() - &smooth) * &scaled / factor + &smooth * &scaled;
                let medium = wavelen.ge(high_wavelen).logical_and(&long.logical_not());
                smoothed.where_self(&medium, &scaled)
            }
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        let positive = |name: &str, v: f64| {
            anyhow::ensure!(
                v.is_finite() && v > 0.0,
                "rope {name} is {v}: expected a positive number"
            );
            Ok(())
        };
        match *self {
            RopeScaling::Default => Ok(()),
            RopeScaling::Linear { factor } => positive("factor", factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                positive("factor", factor)?;
                positive("low_freq_factor", low_freq_factor)?;
                positive(
                    "original_max_position_embeddings",
                    original_max_position_embeddings,
                )?;
                anyhow::ensure!(
                    high_freq_factor > low_freq_factor,
                    "rope high_freq_factor {high_freq_factor} is not above low_freq_factor {low_freq_factor}"
                );
                Ok(())
            }
        }
    }
}

/// Brings the ways config files write rotary settings to one: transformers
/// 5's `rope_parameters` (theta and scaling together), older files'
/// `rope_theta` beside `rope_scaling` (whose oldest form says `type`), and
/// a null or missing scaling (the default).
fn normalise_rope(config: &mut serde_json::Map<String, serde_json::Value>) -> anyhow::Result<()> {
    use serde_json::Value;
    // GPT-NeoX's files before transformers 5.
    for (old, new) in [
        ("rotary_pct", "partial_rotary_factor"),
        ("rotary_emb_base", "rope_theta"),
    ] {
        if let Some(value) = config.remove(old) {
            config.entry(new.to_owned()).or_insert(value);
        }
    }
    if let Some(mut params) = config.remove("rope_parameters") {
        // Gemma-3's: one set per layer type; the sliding layers' may only move the base.
        if let Some(by_layer) = params
            .as_object_mut()
            .filter(|p| p.contains_key("full_attention"))
        {
            if let Some(sliding) = by_layer.remove("sliding_attention") {
                let kind = sliding.get("rope_type").and_then(Value::as_str);
                anyhow::ensure!(
                    matches!(kind, None | Some("default")),
                    "the sliding layers' rope_type is {kind:?}: only the default is implemented there"
                );
                if let Some(theta) = sliding.get("rope_theta") {
                    config.insert("rope_local_base_freq".to_owned(), theta.clone());
                }
            }
            params = by_layer
                .remove("full_attention")
                .unwrap_or_else(|| Value::Object(Default::default()));
        }
        for key in ["rope_theta", "partial_rotary_factor"] {
            if let Some(value) = params.get(key) {
                config.insert(key.to_owned(), value.clone());
            }
        }
        config.insert("rope_scaling".to_owned(), params);
    }
    let positions = config.get("max_position_embeddings").cloned();
    match config.get_mut("rope_scaling") {
        None => {}
        Some(Value::Null) => {
            config.remove("rope_scaling");
        }
        Some(Value::Object(scaling)) => {
            if let Some(kind) = scaling.remove("type") {
                scaling.entry("rope_type").or_insert(kind);
            }
            let kind = scaling
                .entry("rope_type")
                .or_insert_with(|| "default".into());
            let known = kind.as_str().is_some_and(|k| ROPE_TYPES.contains(&k));
            anyhow::ensure!(
                known,
                "rope_type {kind} is not supported: expected one of {}",
                ROPE_TYPES.join(", ")
            );
            if let Some(positions) = positions {
                scaling
                    .entry("original_max_position_embeddings")
                    .or_insert(positions);
            }
        }
        Some(other) => anyhow::bail!("rope_scaling is {other}: expected an object"),
    }
    Ok(())
}

fn default_model_type() -> String {
    "llama".to_owned()
}
fn default_act() -> String {
    "silu".to_owned()
}
fn is_silu(act: &String) -> bool {
    act == "silu"
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
        let mut value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("config.json is not JSON: {e}"))?;
        let object = value.as_object_mut().ok_or_else(|| {
            anyhow::anyhow!("config.json is not a JSON object: expected a model config")
        })?;
        normalise_rope(object)?;
        // Gemma's files name the activation `hidden_activation` (some write both).
        if let Some(act) = object.remove("hidden_activation") {
            object.insert("hidden_act".to_owned(), act);
        }
        let config: Config = serde_json::from_value(value)
            .map_err(|e| anyhow::anyhow!("config.json is not a Llama-family config: {e}"))?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        self.rope_scaling.check()?;
        if !MODEL_TYPES.contains(&self.model_type.as_str()) {
            anyhow::bail!(
                "model_type {:?} is not supported: expected one of {}",
                self.model_type,
                MODEL_TYPES.join(", ")
            );
        }
        if !ACTIVATIONS.contains(&self.hidden_act.as_str()) {
            anyhow::bail!(
                "hidden_act {:?} is not supported: expected one of {}",
                self.hidden_act,
                ACTIVATIONS.join(", ")
            );
        }
        if self.use_bidirectional_attention == Some(true) {
            anyhow::bail!(
                "use_bidirectional_attention is true: this model implements causal attention only"
            );
        }
        self.check_windows()?;
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
        let factor = self.partial_rotary_factor.unwrap_or(1.0);
        if !(factor > 0.0 && factor <= 1.0) {
            anyhow::bail!("partial_rotary_factor is {factor}: expected more than 0 and at most 1");
        }
        if self.rotary_dim() % 2 != 0 || self.rotary_dim() == 0 {
            anyhow::bail!(
                "the rotary embedding turns {} of the head's {} dimensions: it needs an even, positive number",
                self.rotary_dim(),
                self.head_dim()
            );
        }
        Ok(())
    }

    /// The layer types, their count and the window they need.
    fn check_windows(&self) -> anyhow::Result<()> {
        if let Some(types) = &self.layer_types {
            anyhow::ensure!(
                types.len() as i64 == self.num_hidden_layers,
                "layer_types lists {} layers, the model has {}",
                types.len(),
                self.num_hidden_layers
            );
            if let Some(other) = types
                .iter()
                .find(|t| !matches!(t.as_str(), "full_attention" | "sliding_attention"))
            {
                anyhow::bail!(
                    "layer type {other:?} is not supported: expected full_attention or sliding_attention"
                );
            }
        }
        if let Some(pattern) = self.sliding_window_pattern {
            anyhow::ensure!(
                pattern > 0,
                "sliding_window_pattern is {pattern}: expected a positive number"
            );
        }
        let sliding = (0..self.num_hidden_layers).any(|l| self.is_sliding(l));
        match self.sliding_window {
            Some(w) if w <= 0 && sliding => {
                anyhow::bail!("sliding_window is {w}: expected a positive number of tokens")
            }
            None if sliding => anyhow::bail!(
                "some layers attend within a sliding window, but sliding_window is not set"
            ),
            _ => Ok(()),
        }
    }

    /// Whether `layer` attends within a sliding window: as `layer_types`
    /// says, or as the family's files have said before it existed.
    fn is_sliding(&self, layer: i64) -> bool {
        match (self.model_type.as_str(), &self.layer_types) {
            // Mistral's model reads no layer types: a window, if set, is everywhere.
            ("mistral", _) => self.sliding_window.is_some(),
            (_, Some(types)) => types
                .get(layer as usize)
                .is_some_and(|t| t == "sliding_attention"),
            ("gemma2", None) => layer % 2 == 0,
            ("gemma3_text", None) => (layer + 1) % self.sliding_window_pattern.unwrap_or(6) != 0,
            ("qwen2" | "qwen3", None) => {
                self.use_sliding_window && layer >= self.max_window_layers.unwrap_or(28)
            }
            _ => false,
        }
    }

    /// The window of `layer` (how many keys back, itself included, a token
    /// sees), or `None` for full attention.
    pub fn window(&self, layer: i64) -> Option<i64> {
        self.sliding_window.filter(|_| self.is_sliding(layer))
    }

    /// The rotary base of `layer`: Gemma-3's sliding layers have their own.
    pub fn local_rope_theta(&self) -> Option<f64> {
        (self.model_type == "gemma3_text").then(|| self.rope_local_base_freq.unwrap_or(10_000.0))
    }

    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> i64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// How many of each head's first dimensions the rotary embedding turns.
    pub fn rotary_dim(&self) -> i64 {
        (self.head_dim() as f64 * self.partial_rotary_factor.unwrap_or(1.0)) as i64
    }

    /// Biases on the q, k and v projections.
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    /// A bias on the output projection (`attention_bias`, which Qwen2 ignores there).
    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias
    }

    /// The norm of hidden states, queries and keys.
    pub fn norm_kind(&self) -> NormKind {
        match self.model_type.as_str() {
            "gpt_neox" => NormKind::Layer,
            "gemma2" | "gemma3_text" => NormKind::RmsOffset,
            _ => NormKind::Rms,
        }
    }

    /// Gemma's: embeddings are multiplied by √hidden_size.
    pub fn embedding_scale(&self) -> Option<f64> {
        matches!(self.model_type.as_str(), "gemma2" | "gemma3_text")
            .then(|| (self.hidden_size as f64).sqrt())
    }

    /// A gate beside the MLP's up projection (every family but GPT-NeoX).
    pub fn gated_mlp(&self) -> bool {
        self.model_type != "gpt_neox"
    }

    /// Biases on the MLP's projections (GPT-NeoX).
    pub fn mlp_bias(&self) -> bool {
        self.model_type == "gpt_neox"
    }

    /// RMS norms on queries and keys before the rotary embedding.
    pub fn qk_norm(&self) -> QkNorm {
        match self.model_type.as_str() {
            "qwen3" | "gemma3_text" => QkNorm::PerHead,
            "olmo2" => QkNorm::Whole,
            _ => QkNorm::None,
        }
    }

    /// The Hugging Face names of a block's norms, where it has them: before
    /// attention, after it, before the MLP, after it.
    pub fn block_norms(&self) -> [Option<&'static str>; 4] {
        match self.model_type.as_str() {
            "olmo2" => [
                None,
                Some("post_attention_layernorm"),
                None,
                Some("post_feedforward_layernorm"),
            ],
            "gemma2" | "gemma3_text" => [
                Some("input_layernorm"),
                Some("post_attention_layernorm"),
                Some("pre_feedforward_layernorm"),
                Some("post_feedforward_layernorm"),
            ],
            _ => [
                Some("input_layernorm"),
                None,
                Some("post_attention_layernorm"),
                None,
            ],
        }
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
        let err = Config::from_json(&format!(
            r#"{{"model_type":"gemma3_text","use_bidirectional_attention":true,{SMALL}}}"#
        ))
        .unwrap_err();
        assert!(err.to_string().contains("bidirectional"), "{err}");
        let err = Config::from_json(&format!(r#"{{"hidden_act":"relu",{SMALL}}}"#)).unwrap_err();
        assert!(err.to_string().contains("gelu_pytorch_tanh"), "{err}");
    }

    /// Which layers slide, in each way a family's files say it.
    #[test]
    fn reads_each_familys_sliding_layers() {
        let windows = |extra: &str| {
            let c = Config::from_json(&format!(
                r#"{{{extra},"vocab_size":1,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":6,"num_attention_heads":2}}"#
            ))
            .unwrap();
            (0..6).map(|l| c.window(l)).collect::<Vec<_>>()
        };
        let (w, none) = (Some(4), None);
        // Mistral v0.1: everywhere; v0.2 on: nowhere.
        assert_eq!(
            windows(r#""model_type":"mistral","sliding_window":4"#),
            [w; 6]
        );
        assert_eq!(
            windows(r#""model_type":"mistral","sliding_window":null"#),
            [none; 6]
        );
        // Qwen: only when switched on, from max_window_layers on.
        assert_eq!(
            windows(r#""model_type":"qwen2","sliding_window":4"#),
            [none; 6]
        );
        assert_eq!(
            windows(
                r#""model_type":"qwen3","sliding_window":4,"use_sliding_window":true,"max_window_layers":4"#
            ),
            [none, none, none, none, w, w]
        );
        // Gemma-2: every other layer, starting with the first.
        assert_eq!(
            windows(r#""model_type":"gemma2","sliding_window":4"#),
            [w, none, w, none, w, none]
        );
        // Gemma-3: five sliding, one full (older files' pattern), or transformers 5's list.
        assert_eq!(
            windows(r#""model_type":"gemma3_text","sliding_window":4"#),
            [w, w, w, w, w, none]
        );
        assert_eq!(
            windows(r#""model_type":"gemma3_text","sliding_window":4,"sliding_window_pattern":2"#),
            [w, none, w, none, w, none]
        );
        let types = r#""layer_types":["full_attention","sliding_attention","full_attention","full_attention","full_attention","sliding_attention"]"#;
        assert_eq!(
            windows(&format!(
                r#""model_type":"gemma3_text","sliding_window":4,{types}"#
            )),
            [none, w, none, none, none, w]
        );
        for (bad, says) in [
            (
                r#""model_type":"gemma2","sliding_window":null"#,
                "sliding_window is not set",
            ),
            (r#""model_type":"gemma2","sliding_window":0"#, "positive"),
            (r#""layer_types":["full_attention"]"#, "layer_types lists 1"),
            (
                r#""layer_types":["chunked_attention","full_attention","full_attention","full_attention","full_attention","full_attention"]"#,
                "chunked_attention",
            ),
        ] {
            let err = Config::from_json(&format!(
                r#"{{{bad},"vocab_size":1,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":6,"num_attention_heads":2}}"#
            ))
            .unwrap_err();
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    /// Gemma-3 1B's own config.json, and transformers 5's form of its rope settings.
    #[test]
    fn reads_gemma3s_rope_bases_scales_and_activation() {
        let hub = r#"{"architectures":["Gemma3ForCausalLM"],"attention_bias":false,"attn_logit_softcapping":null,
            "bos_token_id":2,"eos_token_id":[1,106],"final_logit_softcapping":null,"head_dim":256,
            "hidden_activation":"gelu_pytorch_tanh","hidden_size":1152,"intermediate_size":6912,
            "max_position_embeddings":32768,"model_type":"gemma3_text","num_attention_heads":4,
            "num_hidden_layers":26,"num_key_value_heads":1,"pad_token_id":0,"query_pre_attn_scalar":256,
            "rms_norm_eps":1e-06,"rope_local_base_freq":10000,"rope_scaling":null,"rope_theta":1000000,
            "sliding_window":512,"sliding_window_pattern":6,"torch_dtype":"bfloat16","vocab_size":262144}"#;
        let c = Config::from_json(hub).unwrap();
        assert_eq!(c.hidden_act, "gelu_pytorch_tanh");
        assert_eq!((c.rope_theta, c.local_rope_theta()), (1e6, Some(10_000.0)));
        assert_eq!(c.query_pre_attn_scalar, Some(256.0));
        assert_eq!(c.norm_kind(), NormKind::RmsOffset);
        assert_eq!(c.qk_norm(), QkNorm::PerHead);
        assert_eq!(c.embedding_scale(), Some(1152f64.sqrt()));
        assert_eq!((c.window(0), c.window(5)), (Some(512), None));
        let v5 = format!(
            "{{{SMALL},\"model_type\":\"gemma3_text\",\"sliding_window\":4,\"rope_parameters\":{{\
             \"full_attention\":{{\"rope_type\":\"linear\",\"factor\":8.0,\"rope_theta\":1000000.0}},\
             \"sliding_attention\":{{\"rope_type\":\"default\",\"rope_theta\":10000.0}}}}}}"
        );
        let c = Config::from_json(&v5).unwrap();
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!((c.rope_theta, c.local_rope_theta()), (1e6, Some(10_000.0)));
        let scaled_local = v5.replace(
            "\"rope_type\":\"default\",\"rope_theta\":10000.0",
            "\"rope_type\":\"linear\",\"factor\":2.0",
        );
        let err = Config::from_json(&scaled_local).unwrap_err();
        assert!(err.to_string().contains("sliding layers"), "{err}");
    }

    const SMALL: &str = r#""vocab_size":1,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2"#;

    #[test]
    fn reads_rope_scaling_in_each_form_a_config_writes_it() {
        let llama3 = RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        // Llama-3.2's own config.json; transformers 5's rope_parameters; the oldest `type`.
        for scaling in [
            r#""rope_theta":500000.0,"rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,"original_max_position_embeddings":8192,"rope_type":"llama3"}"#,
            r#""rope_parameters":{"rope_theta":500000.0,"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,"original_max_position_embeddings":8192,"rope_type":"llama3"}"#,
            r#""rope_theta":500000.0,"rope_scaling":{"type":"llama3","factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,"original_max_position_embeddings":8192}"#,
        ] {
            let c = Config::from_json(&format!("{{{SMALL},{scaling}}}")).unwrap();
            assert_eq!(c.rope_scaling, llama3, "{scaling}");
            assert_eq!(c.rope_theta, 500000.0);
        }
        let c = Config::from_json(&format!("{{{SMALL},\"rope_scaling\":null}}")).unwrap();
        assert!(c.rope_scaling.is_default());
        let c = Config::from_json(&format!(
            "{{{SMALL},\"rope_scaling\":{{\"type\":\"linear\",\"factor\":2.0}}}}"
        ))
        .unwrap();
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
        // Serialised and read back the same; the default is not written at all.
        let back: Config = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let err = Config::from_json(&format!(
            "{{{SMALL},\"rope_scaling\":{{\"rope_type\":\"yarn\",\"factor\":4.0}}}}"
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("yarn") && err.to_string().contains("llama3"),
            "{err}"
        );
        let err = Config::from_json(&format!(
            "{{{SMALL},\"rope_scaling\":{{\"rope_type\":\"linear\",\"factor\":-1.0}}}}"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("factor"), "{err}");
    }

    #[test]
    fn llama3_scaling_keeps_short_wavelengths_divides_long_ones_and_blends_between() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        };
        // Wavelengths 2π/f: 6.3 (short, kept), 32 (between 16 and 64: blended), 628 (long, divided).
        let f = [1.0f32, (2.0 * std::f32::consts::PI) / 32.0, 0.01];
        let scaled = Vec::<f32>::try_from(scaling.scale(tch::Tensor::from_slice(&f))).unwrap();
        assert_eq!(scaled[0], f[0]);
        assert!((scaled[2] - 0.01 / 8.0).abs() < 1e-9, "{scaled:?}");
        // smooth = (64/32 − 1) / (4 − 1) = 1/3: (2/3)·f/8 + (1/3)·f.
        let blended = f[1] * (2.0 / 3.0 / 8.0 + 1.0 / 3.0);
        assert!((scaled[1] - blended).abs() < 1e-6, "{scaled:?}");
    }
}
