//! Checkpoints from disk: a Hugging Face model folder (`config.json`,
//! `*.safetensors`, `tokenizer.json`) or a GGUF file. Either way the result is
//! the same: a [`Config`], f32 weights under Hugging Face names, and a
//! tokenizer with its chat template.
//!
//! Loaded checkpoints are kept per process, so the stages a worker runs one
//! after another parse a model once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context};
use subliminal_shared::llm::DEFAULT_MODEL;
use tch::{Kind, Tensor};

use super::config::{Config, NormKind, RopeScaling};
use super::gguf::Gguf;
use super::model::Weights;
use super::tokenizer::ChatTokenizer;

pub struct Checkpoint {
    pub config: Config,
    /// On the CPU, in f32; behind a lock only because tensors are not `Sync`.
    weights: Mutex<Weights>,
    pub tokenizer: ChatTokenizer,
}

impl Checkpoint {
    /// The weights again, sharing storage, for building one more model.
    pub fn weights(&self) -> Weights {
        self.weights
            .lock()
            .expect("checkpoint weights lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect()
    }
}

/// The file the set-up unpacks for [`DEFAULT_MODEL`].
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where a model a sweep names lives on this machine: [`DEFAULT_MODEL`] in
/// the data folder, or a path to a GGUF file or Hugging Face folder.
pub fn model_path(data_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = if name == DEFAULT_MODEL {
        data_dir.join("models").join(DEFAULT_MODEL_FILE)
    } else {
        PathBuf::from(name)
    };
    if !path.exists() {
        anyhow::bail!(
            "model {name:?} is not on this machine (looked for {}): expected {DEFAULT_MODEL:?} \
             (fetched by scripts/setup-model.sh), a .gguf file or a Hugging Face model folder",
            path.display()
        );
    }
    Ok(path)
}

/// A GGUF file or a Hugging Face folder, loaded once per process.
pub fn load_cached(path: &Path) -> anyhow::Result<Arc<Checkpoint>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Checkpoint>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    if let Some(hit) = cache.lock().expect("checkpoint cache lock").get(&key) {
        return Ok(hit.clone());
    }
    let loaded = Arc::new(load(path)?);
    cache
        .lock()
        .expect("checkpoint cache lock")
        .insert(key, loaded.clone());
    Ok(loaded)
}

/// How much of a GGUF file [`family`] reads first for its header.
const HEADER_PREFIX: u64 = 32 << 20;

/// The architecture of the model at `path`, as its own file names it
/// (`model_type` in a folder's config.json, `general.architecture` in a
/// GGUF), without loading its weights' values.
pub fn family(path: &Path) -> anyhow::Result<String> {
    if path.is_dir() {
        let text = read(path, "config.json")?;
        let config: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not JSON", path.join("config.json").display()))?;
        return config["model_type"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{} has no model_type", path.join("config.json").display()));
    }
    // The header comes first and is rarely past a few MiB (the vocabulary);
    // the weights after it are not read unless the header is longer.
    let read = |limit: u64| -> anyhow::Result<Vec<u8>> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, limit), &mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(bytes)
    };
    let metadata = match Gguf::metadata(&read(HEADER_PREFIX)?) {
        Ok(found) => found,
        Err(_) => {
            Gguf::metadata(&read(u64::MAX)?).with_context(|| format!("in {}", path.display()))?
        }
    };
    metadata
        .get("general.architecture")
        .with_context(|| {
            format!(
                "{}: GGUF metadata has no key general.architecture",
                path.display()
            )
        })?
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{}: general.architecture is not a string", path.display()))
}

pub fn load(path: &Path) -> anyhow::Result<Checkpoint> {
    if path.is_dir() {
        load_hf(path)
    } else if path.extension().is_some_and(|e| e == "gguf") {
        load_gguf(path)
    } else if path.exists() {
        bail!(
            "{} is neither a model folder nor a .gguf file: expected a folder with config.json, \
             *.safetensors and tokenizer.json, or a GGUF file",
            path.display()
        )
    } else {
        bail!("model {} does not exist", path.display())
    }
}

fn read(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(dir.join(name))
        .with_context(|| format!("cannot read {}", dir.join(name).display()))
}

pub fn load_hf(dir: &Path) -> anyhow::Result<Checkpoint> {
    let config = Config::from_json(&String::from_utf8_lossy(&read(dir, "config.json")?))
        .with_context(|| format!("in {}", dir.join("config.json").display()))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} has no *.safetensors weights", dir.display());
    }
    let mut weights = Weights::new();
    for file in files {
        let tensors = Tensor::read_safetensors(&file)
            .with_context(|| format!("cannot read weights from {}", file.display()))?;
        for (name, tensor) in tensors {
            weights.insert(name, tensor.to_kind(Kind::Float));
        }
    }
    match config.model_type.as_str() {
        "phi3" => split_fused(&config, &mut weights),
        "gpt_neox" => rename_neox(&config, &mut weights),
        _ => Ok(()),
    }
    .with_context(|| format!("in {}", dir.display()))?;
    let tokenizer_config = std::fs::read(dir.join("tokenizer_config.json")).ok();
    // transformers 5 writes the template beside the config rather than in it.
    let template = std::fs::read_to_string(dir.join("chat_template.jinja")).ok();
    let tokenizer = ChatTokenizer::from_hf(
        &read(dir, "tokenizer.json")?,
        tokenizer_config.as_deref(),
        template,
    )
    .with_context(|| format!("in {}", dir.display()))?;
    Ok(Checkpoint {
        config,
        weights: Mutex::new(weights),
        tokenizer,
    })
}

pub fn load_gguf(path: &Path) -> anyhow::Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let gguf = Gguf::parse(bytes).with_context(|| format!("in {}", path.display()))?;
    let config = gguf_config(&gguf).with_context(|| format!("in {}", path.display()))?;
    let mut weights = Weights::new();
    for (name, info) in &gguf.tensors {
        anyhow::ensure!(
            !matches!(
                name.as_str(),
                "rope_freqs.weight" | "rope_factors_long.weight" | "rope_factors_short.weight"
            ),
            "{}: holds {name}, rope scaling as llama.cpp stores it (Llama 3's or Phi-3's long \
             context), which the GGUF loader does not read; load the model's Hugging Face folder \
             (config.json and safetensors) instead",
            path.display()
        );
        let hf = hf_name(&config.model_type, name).with_context(|| {
            format!(
                "{}: tensor {name} has no {} counterpart",
                path.display(),
                config.model_type
            )
        })?;
        let values = gguf.dequantize(name, info)?;
        let mut tensor = Tensor::from_slice(&values).view(info.shape().as_slice());
        // llama.cpp's converter interleaves the rotary halves of q and k for
        // Llama; the rotate-half convention here wants them back.
        if config.model_type == "llama" {
            if hf.contains("q_proj") {
                tensor = unpermute(&tensor, config.num_attention_heads);
            } else if hf.contains("k_proj") {
                tensor = unpermute(&tensor, config.kv_heads());
            }
        }
        // It stores Gemma's norms as the factor they scale by (1 + weight).
        if config.norm_kind() == NormKind::RmsOffset && hf.ends_with("norm.weight") {
            tensor -= 1.0;
        }
        weights.insert(hf, tensor);
    }
    let mut config = config;
    config.tie_word_embeddings = !weights.contains_key("lm_head.weight");
    if config.model_type == "phi3" {
        split_fused(&config, &mut weights).with_context(|| format!("in {}", path.display()))?;
    }
    let tokenizer =
        ChatTokenizer::from_gguf(&gguf).with_context(|| format!("in {}", path.display()))?;
    Ok(Checkpoint {
        config,
        weights: Mutex::new(weights),
        tokenizer,
    })
}

/// The architectures the GGUF loader reads (llama.cpp's names; Mistral's
/// files say `llama`).
pub const GGUF_ARCHITECTURES: [&str; 6] = ["gemma2", "gemma3", "llama", "phi3", "qwen2", "qwen3"];

fn gguf_config(gguf: &Gguf) -> anyhow::Result<Config> {
    let arch = gguf
        .get("general.architecture")?
        .as_str()
        .unwrap_or("")
        .to_owned();
    anyhow::ensure!(
        GGUF_ARCHITECTURES.contains(&arch.as_str()),
        "GGUF architecture {arch:?} is not supported: expected one of {} (or the model's Hugging \
         Face folder, which loads {})",
        GGUF_ARCHITECTURES.join(", "),
        super::config::MODEL_TYPES.join(", ")
    );
    let key = |k: &str| format!("{arch}.{k}");
    let float = |k: &str| gguf.metadata.get(&key(k)).and_then(|v| v.as_float());
    let int = |k: &str| gguf.metadata.get(&key(k)).and_then(|v| v.as_int());
    let vocab_size = match int("vocab_size") {
        Some(v) => v,
        None => gguf.string_array("tokenizer.ggml.tokens")?.len() as i64,
    };
    let hidden_size = gguf.int(&key("embedding_length"))?;
    let heads = gguf.int(&key("attention.head_count"))?;
    let layers = gguf.int(&key("block_count"))?;
    let head_dim = int("attention.key_length");
    let gemma = arch.starts_with("gemma");
    // llama.cpp scales Gemma's queries by the head's width, except in the
    // 27B models (46 and 62 blocks), whose configs say hidden / heads.
    let query_pre_attn_scalar = gemma.then(|| match (arch.as_str(), layers) {
        ("gemma2", 46) | ("gemma3", 62) => (hidden_size / heads) as f64,
        _ => head_dim.unwrap_or(hidden_size / heads) as f64,
    });
    let rope_scaling = match gguf
        .metadata
        .get(&key("rope.scaling.type"))
        .and_then(|v| v.as_str())
    {
        None | Some("none") => RopeScaling::Default,
        Some("linear") => RopeScaling::Linear {
            factor: float("rope.scaling.factor").unwrap_or(1.0),
        },
        Some(other) => anyhow::bail!(
            "GGUF rope scaling {other:?} is not supported here: load the model's Hugging Face folder"
        ),
    };
    // Phi-3.5 and Phi-4-mini turn part of each head.
    let partial_rotary_factor = int("rope.dimension_count")
        .filter(|_| arch == "phi3")
        .map(|rotary| rotary as f64 / head_dim.unwrap_or(hidden_size / heads) as f64)
        .filter(|&f| f != 1.0);
    let config = Config {
        model_type: if arch == "gemma3" {
            "gemma3_text".to_owned()
        } else {
            arch.clone()
        },
        vocab_size,
        hidden_size,
        intermediate_size: gguf.int(&key("feed_forward_length"))?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(gguf.int(&key("attention.head_count_kv")).unwrap_or(heads)),
        head_dim,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
        rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
        rope_scaling,
        tie_word_embeddings: true,
        attention_bias: false,
        max_position_embeddings: gguf.int(&key("context_length")).unwrap_or(2048),
        use_sliding_window: false,
        max_window_layers: None,
        sliding_window: int("attention.sliding_window").filter(|_| gemma),
        layer_types: None,
        sliding_window_pattern: None,
        // llama.cpp's own value for Gemma-3's sliding layers.
        rope_local_base_freq: (arch == "gemma3").then_some(10_000.0),
        query_pre_attn_scalar,
        attn_logit_softcapping: float("attn_logit_softcapping").filter(|_| gemma),
        final_logit_softcapping: float("final_logit_softcapping").filter(|_| gemma),
        use_bidirectional_attention: None,
        partial_rotary_factor,
        hidden_act: if gemma { "gelu_pytorch_tanh" } else { "silu" }.to_owned(),
        use_parallel_residual: false,
    };
    config.check()?;
    Ok(config)
}

/// Phi-3's fused projections split into the separate ones every other
/// family has: `qkv_proj` into q, k and v (in that order, by head counts),
/// `gate_up_proj` into gate and up (halves).
fn split_fused(config: &Config, weights: &mut Weights) -> anyhow::Result<()> {
    let hd = config.head_dim();
    let sizes = [
        config.num_attention_heads * hd,
        config.kv_heads() * hd,
        config.kv_heads() * hd,
    ];
    for layer in 0..config.num_hidden_layers {
        let at = |name: &str| format!("model.layers.{layer}.{name}");
        let mut split = |fused: &str, parts: &[(&str, i64)]| -> anyhow::Result<()> {
            let tensor = weights.remove(&at(fused)).with_context(|| {
                format!(
                    "{} is missing: a phi3 model fuses its projections there",
                    at(fused)
                )
            })?;
            let rows: i64 = parts.iter().map(|p| p.1).sum();
            anyhow::ensure!(
                tensor.dim() == 2 && tensor.size()[0] == rows,
                "{} is {:?}: expected {rows} rows",
                at(fused),
                tensor.size()
            );
            let mut start = 0;
            for (name, n) in parts {
                weights.insert(at(name), tensor.narrow(0, start, *n).contiguous());
                start += n;
            }
            Ok(())
        };
        split(
            "self_attn.qkv_proj.weight",
            &[
                ("self_attn.q_proj.weight", sizes[0]),
                ("self_attn.k_proj.weight", sizes[1]),
                ("self_attn.v_proj.weight", sizes[2]),
            ],
        )?;
        let f = config.intermediate_size;
        split(
            "mlp.gate_up_proj.weight",
            &[("mlp.gate_proj.weight", f), ("mlp.up_proj.weight", f)],
        )?;
    }
    Ok(())
}

/// GPT-NeoX's weights under the names every other family uses, its fused
/// `query_key_value` (heads × [q, k, v] × head_dim rows) split into q, k
/// and v; the buffers old checkpoints carry (rotary frequencies, causal
/// masks) dropped.
fn rename_neox(config: &Config, weights: &mut Weights) -> anyhow::Result<()> {
    let names: Vec<String> = weights.keys().cloned().collect();
    let (heads, hd) = (config.num_attention_heads, config.head_dim());
    for name in names {
        let Some(tensor) = weights.remove(&name) else {
            continue;
        };
        let renamed = match name.as_str() {
            "gpt_neox.embed_in.weight" => "model.embed_tokens.weight".to_owned(),
            "embed_out.weight" | "lm_head.weight" => "lm_head.weight".to_owned(),
            _ => match name.strip_prefix("gpt_neox.final_layer_norm.") {
                Some(param) => format!("model.norm.{param}"),
                None => {
                    let Some(rest) = name.strip_prefix("gpt_neox.layers.") else {
                        anyhow::bail!("weight {name} is not a GPT-NeoX weight this model knows");
                    };
                    let (layer, rest) = rest
                        .split_once('.')
                        .context("a layer weight without its module")?;
                    let (module, param) = rest
                        .rsplit_once('.')
                        .context("a layer weight without its parameter")?;
                    let at = |module: &str| format!("model.layers.{layer}.{module}.{param}");
                    match module {
                        "attention.rotary_emb" | "attention" => continue,
                        "input_layernorm" | "post_attention_layernorm" => at(module),
                        "attention.dense" => at("self_attn.o_proj"),
                        "mlp.dense_h_to_4h" => at("mlp.up_proj"),
                        "mlp.dense_4h_to_h" => at("mlp.down_proj"),
                        "attention.query_key_value" => {
                            let mut shape = vec![heads, 3, hd];
                            shape.extend_from_slice(&tensor.size()[1..]);
                            anyhow::ensure!(
                                tensor.size()[0] == 3 * heads * hd,
                                "{name} is {:?}: expected {} rows",
                                tensor.size(),
                                3 * heads * hd
                            );
                            let fused = tensor.reshape(shape.as_slice());
                            for (i, part) in ["q_proj", "k_proj", "v_proj"].into_iter().enumerate()
                            {
                                let mut rows = tensor.size();
                                rows[0] = heads * hd;
                                let split = fused
                                    .select(1, i as i64)
                                    .reshape(rows.as_slice())
                                    .contiguous();
                                weights.insert(at(&format!("self_attn.{part}")), split);
                            }
                            continue;
                        }
                        other => {
                            anyhow::bail!("weight {name}: module {other} is not part of GPT-NeoX")
                        }
                    }
                }
            },
        };
        weights.insert(renamed, tensor);
    }
    Ok(())
}

/// llama.cpp's tensor names to Hugging Face's, for a model of `model_type`
/// (Phi-3's fused projections keep their fused names, split afterwards).
fn hf_name(model_type: &str, gguf: &str) -> Option<String> {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = top {
        return Some(name.to_owned());
    }
    let gemma = model_type.starts_with("gemma");
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, param) = rest.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        // The norm before the MLP: Gemma has one after attention as well.
        "ffn_norm" if gemma => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_attention_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_qkv" if model_type == "phi3" => "self_attn.qkv_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" if model_type == "phi3" => "mlp.gate_up_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{param}"))
}

/// Undoes llama.cpp's `permute` of q/k rows: (heads, half, 2) back to (heads, 2, half).
fn unpermute(w: &Tensor, heads: i64) -> Tensor {
    let size = w.size();
    let rows = size[0];
    let mut shape = vec![heads, rows / heads / 2, 2];
    shape.extend_from_slice(&size[1..]);
    w.reshape(shape.as_slice())
        .transpose(1, 2)
        .reshape(size.as_slice())
}
