//! A Llama-family causal LM: token embedding, N blocks of (norm,
//! grouped-query attention with rotary embeddings, norm, gated MLP), a
//! final norm and an output head, tied to the embedding or not.
//!
//! Each block has `load` (take its weights, by their Hugging Face names, into
//! a var store) and `forward` (the maths). Weights come from [`super::load`];
//! nothing here knows about files. What the families change (biases, norms
//! and where they sit, q/k norms, sliding windows, Gemma's scales and soft
//! caps) [`Config`] reports; the pieces here are written once for all.

use std::collections::HashMap;

use anyhow::Context;
use tch::{nn, Device, Kind, Tensor};

use super::config::{Config, NormKind, QkNorm};

/// Weights by their Hugging Face names, e.g. `model.layers.0.self_attn.q_proj.weight`.
pub type Weights = HashMap<String, Tensor>;

/// Takes a weight out of the map into the var store under the same name.
fn take(p: &nn::Path, weights: &mut Weights, name: &str, shape: &[i64]) -> anyhow::Result<Tensor> {
    let full = p.path(name);
    let w = weights
        .remove(&full)
        .with_context(|| format!("the checkpoint has no weight {full}"))?;
    if w.size() != shape {
        anyhow::bail!(
            "weight {full} has shape {:?}: expected {shape:?} for this config",
            w.size()
        );
    }
    Ok(p.var_copy(name, &w))
}

/// A low-rank adapter on a linear layer: `x A^T B^T * alpha / r`, kept in f32.
#[derive(Debug)]
pub struct Lora {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    /// A B of each batch row's own, [rows, out, r], added to `b` for that
    /// row: how the gradient screen takes every row's slope along its
    /// probe directions in one backward pass (see `screen.rs`).
    pub rows: Option<Tensor>,
}

/// A linear layer, optionally with a LoRA adapter beside its frozen weight.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<Lora>,
}

impl Linear {
    fn load(p: nn::Path, w: &mut Weights, out: i64, inp: i64, bias: bool) -> anyhow::Result<Self> {
        Ok(Self {
            weight: take(&p, w, "weight", &[out, inp])?,
            bias: if bias {
                Some(take(&p, w, "bias", &[out])?)
            } else {
                None
            },
            lora: None,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.linear(&self.weight, self.bias.as_ref());
        match &self.lora {
            None => y,
            Some(l) => {
                let h = x.to_kind(l.a.kind()).linear::<Tensor>(&l.a, None);
                let delta = match &l.rows {
                    None => h.linear::<Tensor>(&l.b, None),
                    Some(rows) => {
                        h.linear::<Tensor>(&l.b, None) + h.matmul(&rows.transpose(-2, -1))
                    }
                };
                let kind = y.kind();
                y + (delta * l.scale).to_kind(kind)
            }
        }
    }

    pub fn in_features(&self) -> i64 {
        self.weight.size()[1]
    }

    pub fn out_features(&self) -> i64 {
        self.weight.size()[0]
    }
}

/// A norm of the kind `cfg`'s family uses ([`NormKind`]).
#[derive(Debug)]
struct Norm {
    weight: Tensor,
    /// A LayerNorm's; `None` for the RMS kinds.
    bias: Option<Tensor>,
    /// Gemma's: the weight scales as 1 + weight.
    offset: bool,
    eps: f64,
}

impl Norm {
    /// A norm over the last `size` dimensions.
    fn load(p: nn::Path, w: &mut Weights, size: i64, cfg: &Config) -> anyhow::Result<Self> {
        let kind = cfg.norm_kind();
        let bias = if kind == NormKind::Layer {
            Some(take(&p, w, "bias", &[size])?)
        } else {
            None
        };
        Ok(Self {
            weight: take(&p, w, "weight", &[size])?,
            bias,
            offset: kind == NormKind::RmsOffset,
            eps: cfg.rms_norm_eps,
        })
    }

    /// Normalises in f32 whatever the model's dtype, as the reference does
    /// (which also casts where each family's reference casts).
    fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x = x.to_kind(Kind::Float);
        if let Some(bias) = &self.bias {
            let size = [self.weight.size()[0]];
            return x
                .layer_norm(size, Some(&self.weight), Some(bias), self.eps, false)
                .to_kind(kind);
        }
        let variance = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = x * (variance + self.eps).rsqrt();
        if self.offset {
            (normed * (self.weight.to_kind(Kind::Float) + 1.0)).to_kind(kind)
        } else {
            &self.weight * normed.to_kind(kind)
        }
    }
}

/// Rotary position embedding: cos and sin for given positions, built in f32.
#[derive(Debug)]
pub struct Rope {
    inv_freq: Tensor,
}

impl Rope {
    /// The embedding of full-attention layers (every layer but Gemma-3's sliding ones).
    fn new(cfg: &Config, device: Device) -> Self {
        Self::with_base(cfg, cfg.rope_theta, device).scaled(&cfg.rope_scaling)
    }

    /// Unscaled, with its own base: Gemma-3's sliding layers.
    fn local(cfg: &Config, device: Device) -> Option<Self> {
        cfg.local_rope_theta()
            .map(|theta| Self::with_base(cfg, theta, device))
    }

    fn with_base(cfg: &Config, theta: f64, device: Device) -> Self {
        let dim = cfg.rotary_dim();
        let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Float, device)) / dim as f64;
        let inv_freq = Tensor::from(theta)
            .to_kind(Kind::Float)
            .to_device(device)
            .pow(&exponents)
            .reciprocal();
        Self { inv_freq }
    }

    fn scaled(self, scaling: &super::config::RopeScaling) -> Self {
        Self {
            inv_freq: scaling.scale(self.inv_freq),
        }
    }

    /// (cos, sin), each [B, 1, T, head_dim], for positions [B, T].
    fn tables(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(&[x2.neg(), x1], 3)
}

/// Turns the first `cos.size()[3]` dimensions of each head; the rest pass.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let (turned, all) = (cos.size()[3], x.size()[3]);
    if turned == all {
        return x * cos + rotate_half(x) * sin;
    }
    let rotary = x.narrow(3, 0, turned);
    let rest = x.narrow(3, turned, all - turned);
    Tensor::cat(&[&rotary * cos + rotate_half(&rotary) * sin, rest], 3)
}

/// Keys and values of the tokens seen so far, one entry per layer, and, for
/// a model with sliding layers, their positions (a window is measured in
/// positions: a batch may hold padding between a shared prefix and each
/// row's own tokens).
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// [B, S], once something is cached by a model with sliding layers.
    positions: Option<Tensor>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self {
            layers: (0..layers).map(|_| None).collect(),
            positions: None,
        }
    }

    /// Repeats a one-row cache (a shared prompt prefix) for `rows` rows.
    pub fn expand_rows(&mut self, rows: i64) {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.expand([rows, -1, -1, -1], false);
            *v = v.expand([rows, -1, -1, -1], false);
        }
        if let Some(p) = &mut self.positions {
            *p = p.expand([rows, -1], false);
        }
    }

    /// Keeps only the given batch rows (sequences that are still generating).
    pub fn select_rows(&mut self, rows: &Tensor) {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(0, rows);
            *v = v.index_select(0, rows);
        }
        if let Some(p) = &mut self.positions {
            *p = p.index_select(0, rows);
        }
    }

    /// The positions of every key once `new` [B, T] are added: [B, S].
    fn extend_positions(&mut self, new: &Tensor) -> Tensor {
        let all = match &self.positions {
            Some(past) => Tensor::cat(&[past, new], 1),
            None => new.shallow_clone(),
        };
        self.positions = Some(all.shallow_clone());
        all
    }
}

#[derive(Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Norms of queries and keys, and where they apply.
    qk_norm: Option<(Norm, Norm, QkNorm)>,
    scores: Scores,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

/// How attention scores are formed beyond q·kᵀ: Gemma's scale and soft cap.
#[derive(Debug, Clone, Copy, Default)]
struct Scores {
    /// Replaces 1/√head_dim.
    scale: Option<f64>,
    /// cap · tanh(score / cap), after scaling, before the mask.
    softcap: Option<f64>,
}

impl Attention {
    fn load(p: nn::Path, w: &mut Weights, cfg: &Config) -> anyhow::Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim());
        let (h, kvh) = (cfg.num_attention_heads, cfg.kv_heads());
        Ok(Self {
            q_proj: Linear::load(&p / "q_proj", w, h * hd, d, cfg.qkv_bias())?,
            k_proj: Linear::load(&p / "k_proj", w, kvh * hd, d, cfg.qkv_bias())?,
            v_proj: Linear::load(&p / "v_proj", w, kvh * hd, d, cfg.qkv_bias())?,
            o_proj: Linear::load(&p / "o_proj", w, d, h * hd, cfg.o_bias())?,
            qk_norm: match cfg.qk_norm() {
                QkNorm::None => None,
                QkNorm::PerHead => Some((
                    Norm::load(&p / "q_norm", w, hd, cfg)?,
                    Norm::load(&p / "k_norm", w, hd, cfg)?,
                    QkNorm::PerHead,
                )),
                QkNorm::Whole => Some((
                    Norm::load(&p / "q_norm", w, h * hd, cfg)?,
                    Norm::load(&p / "k_norm", w, kvh * hd, cfg)?,
                    QkNorm::Whole,
                )),
            },
            scores: Scores {
                scale: cfg.query_pre_attn_scalar.map(|s| s.powf(-0.5)),
                softcap: cfg.attn_logit_softcapping,
            },
            heads: h,
            kv_heads: kvh,
            head_dim: hd,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Tensor {
        let (b, t, _) = x.size3().expect("hidden states are [batch, time, dim]");
        let split = |y: Tensor, heads: i64| y.view([b, t, heads, self.head_dim]).transpose(1, 2);
        let (mut q, mut k) = (self.q_proj.forward(x), self.k_proj.forward(x));
        if let Some((q_norm, k_norm, QkNorm::Whole)) = &self.qk_norm {
            (q, k) = (q_norm.forward(&q), k_norm.forward(&k));
        }
        let (mut q, mut k) = (split(q, self.heads), split(k, self.kv_heads));
        if let Some((q_norm, k_norm, QkNorm::PerHead)) = &self.qk_norm {
            (q, k) = (q_norm.forward(&q), k_norm.forward(&k));
        }
        let q = apply_rope(&q, &rope.0, &rope.1);
        let mut k = apply_rope(&k, &rope.0, &rope.1);
        let mut v = split(self.v_proj.forward(x), self.kv_heads);
        if let Some(cache) = cache {
            if let Some((past_k, past_v)) = cache.as_ref() {
                k = Tensor::cat(&[past_k, &k], 2);
                v = Tensor::cat(&[past_v, &v], 2);
            }
            *cache = Some((k.shallow_clone(), v.shallow_clone()));
        }
        // Without a mask the sequence is unpadded (or right-padded, whose pads
        // no real token attends to), and the fused causal kernel applies. Its
        // causality is aligned to the first key, so several new tokens after
        // cached ones need a mask (generation passes one).
        debug_assert!(mask.is_some() || t == 1 || k.size()[2] == t);
        let causal = mask.is_none() && t > 1;
        let gqa = self.kv_heads != self.heads;
        // A fused kernel may refuse a shape (cuDNN does, for some long
        // batches); the explicit computation below accepts every shape. It
        // alone soft-caps scores.
        let explicit = || explicit_attention(&q, &k, &v, mask, causal, self.scores);
        let y = if self.scores.softcap.is_some() {
            explicit()
        } else {
            Tensor::f_scaled_dot_product_attention(
                &q,
                &k,
                &v,
                mask,
                0.0,
                causal,
                self.scores.scale,
                gqa,
            )
            .unwrap_or_else(|_| explicit())
        };
        self.o_proj.forward(
            &y.transpose(1, 2)
                .reshape([b, t, self.heads * self.head_dim]),
        )
    }
}

/// softmax(q kᵀ / √d + mask) v over [B, heads, T, d] (keys and values with
/// fewer, shared heads), written out: for shapes the fused kernels refuse,
/// and for soft-capped scores.
fn explicit_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    how: Scores,
) -> Tensor {
    explicit_attention_within(q, k, v, mask, causal, how, 1 << 28)
}

/// [`explicit_attention`] a few rows at a time, at most `scores` attention
/// scores per step (and at least one row).
fn explicit_attention_within(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    how: Scores,
    scores: i64,
) -> Tensor {
    let (b, heads, t, s) = (q.size()[0], q.size()[1], q.size()[2], k.size()[2]);
    let rows = (scores / (heads * t * s).max(1)).max(1);
    if b > rows {
        let parts: Vec<Tensor> = (0..b)
            .step_by(rows as usize)
            .map(|start| {
                let len = rows.min(b - start);
                let part = |x: &Tensor| x.narrow(0, start, len);
                let m = mask.map(|m| {
                    if m.size()[0] == b {
                        part(m)
                    } else {
                        m.shallow_clone()
                    }
                });
                explicit_attention_within(
                    &part(q),
                    &part(k),
                    &part(v),
                    m.as_ref(),
                    causal,
                    how,
                    scores,
                )
            })
            .collect();
        return Tensor::cat(&parts, 0);
    }
    let repeat = q.size()[1] / k.size()[1];
    let k = k.repeat_interleave_self_int(repeat, 1, None);
    let v = v.repeat_interleave_self_int(repeat, 1, None);
    let (t, s, d) = (q.size()[2], k.size()[2], q.size()[3]);
    let mut scores = q
        .to_kind(Kind::Float)
        .matmul(&k.to_kind(Kind::Float).transpose(-2, -1))
        * how.scale.unwrap_or(1.0 / (d as f64).sqrt());
    if let Some(cap) = how.softcap {
        scores = (scores / cap).tanh() * cap;
    }
    if causal {
        let future = Tensor::ones([t, s], (Kind::Bool, q.device())).triu(s - t + 1);
        scores = scores.masked_fill(&future, f64::NEG_INFINITY);
    }
    if let Some(mask) = mask {
        scores += mask.to_kind(Kind::Float);
    }
    scores.softmax(-1, Kind::Float).to_kind(v.kind()).matmul(&v)
}

#[derive(Debug)]
pub struct Mlp {
    /// None in an ungated MLP (GPT-NeoX's: up, activation, down).
    pub gate_proj: Option<Linear>,
    pub up_proj: Linear,
    pub down_proj: Linear,
    act: Activation,
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    Silu,
    /// Exact, with the error function (GPT-NeoX's `gelu`).
    Gelu,
    /// The tanh approximation (Gemma's `gelu_pytorch_tanh`, `gelu_new`).
    GeluTanh,
}

impl Mlp {
    fn load(p: nn::Path, w: &mut Weights, cfg: &Config) -> anyhow::Result<Self> {
        let (d, f, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias());
        Ok(Self {
            gate_proj: if cfg.gated_mlp() {
                Some(Linear::load(&p / "gate_proj", w, f, d, bias)?)
            } else {
                None
            },
            up_proj: Linear::load(&p / "up_proj", w, f, d, bias)?,
            down_proj: Linear::load(&p / "down_proj", w, d, f, bias)?,
            act: match cfg.hidden_act.as_str() {
                "gelu" => Activation::Gelu,
                "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
                _ => Activation::Silu,
            },
        })
    }

    fn act(&self, x: Tensor) -> Tensor {
        match self.act {
            Activation::Silu => x.silu(),
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let up = self.up_proj.forward(x);
        let hidden = match &self.gate_proj {
            Some(gate) => self.act(gate.forward(x)) * up,
            None => self.act(up),
        };
        self.down_proj.forward(&hidden)
    }
}

#[derive(Debug)]
pub struct Block {
    /// The norms each family has where it has them ([`Config::block_norms`]).
    pre_attention: Option<Norm>,
    pub self_attn: Attention,
    post_attention: Option<Norm>,
    pre_mlp: Option<Norm>,
    pub mlp: Mlp,
    post_mlp: Option<Norm>,
    /// Attention and MLP both read the block's input, their outputs summed (GPT-NeoX).
    parallel: bool,
    /// Attends within a sliding window (and, in Gemma-3, turns at its own base).
    sliding: bool,
}

fn maybe_norm(norm: &Option<Norm>, x: Tensor) -> Tensor {
    match norm {
        Some(norm) => norm.forward(&x),
        None => x,
    }
}

impl Block {
    fn load(p: nn::Path, w: &mut Weights, cfg: &Config, layer: i64) -> anyhow::Result<Self> {
        let [pre_attention, post_attention, pre_mlp, post_mlp] = cfg
            .block_norms()
            .map(|name| name.map(|name| Norm::load(&p / name, w, cfg.hidden_size, cfg)));
        Ok(Self {
            pre_attention: pre_attention.transpose()?,
            self_attn: Attention::load(&p / "self_attn", w, cfg)?,
            post_attention: post_attention.transpose()?,
            pre_mlp: pre_mlp.transpose()?,
            mlp: Mlp::load(&p / "mlp", w, cfg)?,
            post_mlp: post_mlp.transpose()?,
            parallel: cfg.use_parallel_residual,
            sliding: cfg.window(layer).is_some(),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Tensor {
        let attention_in = maybe_norm(&self.pre_attention, x.shallow_clone());
        let attended = self.self_attn.forward(&attention_in, rope, mask, cache);
        let attended = maybe_norm(&self.post_attention, attended);
        let h = if self.parallel {
            x.shallow_clone()
        } else {
            x + &attended
        };
        let out = self
            .mlp
            .forward(&maybe_norm(&self.pre_mlp, h.shallow_clone()));
        let out = maybe_norm(&self.post_mlp, out);
        if self.parallel {
            x + attended + out
        } else {
            h + out
        }
    }
}

/// The whole causal LM.
#[derive(Debug)]
pub struct Llama {
    pub config: Config,
    embed_tokens: Tensor,
    pub layers: Vec<Block>,
    norm: Norm,
    /// `None` when tied to the embedding.
    lm_head: Option<Tensor>,
    rope: Rope,
    /// Gemma-3's sliding layers' own.
    local_rope: Option<Rope>,
    /// The sliding layers' window, if any layer has one.
    window: Option<i64>,
}

impl Llama {
    /// Moves `weights` into `vs` (under their Hugging Face names) and builds the
    /// model on the var store's device, in f32; see [`Llama::set_kind`].
    pub fn load(vs: &nn::VarStore, config: &Config, mut weights: Weights) -> anyhow::Result<Self> {
        config.check()?;
        let w = &mut weights;
        let root = vs.root();
        let model = &root / "model";
        let embed_tokens = take(
            &(&model / "embed_tokens"),
            w,
            "weight",
            &[config.vocab_size, config.hidden_size],
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Block::load(&model / "layers" / i, w, config, i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let norm = Norm::load(&model / "norm", w, config.hidden_size, config)?;
        let lm_head = if config.tie_word_embeddings {
            w.remove("lm_head.weight");
            None
        } else {
            Some(take(
                &(&root / "lm_head"),
                w,
                "weight",
                &[config.vocab_size, config.hidden_size],
            )?)
        };
        let rest: Vec<&String> = w
            .keys()
            .filter(|k| !k.ends_with("rotary_emb.inv_freq"))
            .collect();
        if !rest.is_empty() {
            anyhow::bail!("the checkpoint has weights this architecture does not use: {rest:?}");
        }
        Ok(Self {
            config: config.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope: Rope::new(config, vs.device()),
            local_rope: Rope::local(config, vs.device()),
            window: (0..config.num_hidden_layers).find_map(|l| config.window(l)),
        })
    }

    pub fn device(&self) -> Device {
        self.embed_tokens.device()
    }

    pub fn kind(&self) -> Kind {
        self.embed_tokens.kind()
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Hidden states [B, T, D] of tokens [B, T] at positions [B, T].
    ///
    /// `mask` is additive, [B, 1, T, S] over the S = cached + T keys; `None`
    /// means plain causal attention over an unpadded (or right-padded) batch.
    pub fn forward(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let mut x = Tensor::embedding(&self.embed_tokens, tokens, -1, false, false);
        if let Some(scale) = self.config.embedding_scale() {
            // In the model's dtype, as the reference rounds it.
            x = &x * Tensor::from(scale).to_kind(x.kind()).to_device(x.device());
        }
        let rope = self.rope.tables(positions, x.kind());
        let local_rope = self
            .local_rope
            .as_ref()
            .map(|r| r.tables(positions, x.kind()));
        let mask = mask.map(|m| m.to_kind(x.kind()));
        // Only a model with sliding layers needs its keys' positions (and
        // the cache keeps them only for such a model).
        let window_mask = self.window.map(|w| {
            let key_positions = match cache.as_deref_mut() {
                Some(cache) => cache.extend_positions(positions),
                None => positions.shallow_clone(),
            };
            window_mask(mask.as_ref(), positions, &key_positions, w, x.kind())
        });
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let (rope, mask) = if layer.sliding {
                (
                    local_rope.as_ref().unwrap_or(&rope),
                    window_mask.as_ref().or(mask.as_ref()),
                )
            } else {
                (&rope, mask.as_ref())
            };
            x = layer.forward(&x, rope, mask, slot);
        }
        self.norm.forward(&x)
    }

    /// Next-token logits, in f32, from hidden states [..., D] (soft-capped
    /// where the family caps them).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        let logits = hidden.linear::<Tensor>(head, None).to_kind(Kind::Float);
        match self.config.final_logit_softcapping {
            Some(cap) => (logits / cap).tanh() * cap,
            None => logits,
        }
    }

    /// Every linear layer by its Hugging Face module name, for attaching adapters.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let a = &mut layer.self_attn;
            let m = &mut layer.mlp;
            let prefix = format!("model.layers.{i}");
            // In this order (adapters are initialised from one seeded stream in it).
            let linears = [
                ("self_attn.q_proj", Some(&mut a.q_proj)),
                ("self_attn.k_proj", Some(&mut a.k_proj)),
                ("self_attn.v_proj", Some(&mut a.v_proj)),
                ("self_attn.o_proj", Some(&mut a.o_proj)),
                ("mlp.gate_proj", m.gate_proj.as_mut()),
                ("mlp.up_proj", Some(&mut m.up_proj)),
                ("mlp.down_proj", Some(&mut m.down_proj)),
            ];
            for (name, linear) in linears {
                if let Some(linear) = linear {
                    out.push((format!("{prefix}.{name}"), linear));
                }
            }
        }
        out
    }
}

/// `mask` (or, when it is `None`, plain causality over an unpadded batch)
/// [B or 1, 1, T, S] further limited to the keys less than `window`
/// positions before each query: queries at `positions` [B, T], keys at
/// `key_positions` [B, S].
fn window_mask(
    mask: Option<&Tensor>,
    positions: &Tensor,
    key_positions: &Tensor,
    window: i64,
    kind: Kind,
) -> Tensor {
    let distance = positions.unsqueeze(-1) - key_positions.unsqueeze(1);
    let base = match mask {
        Some(mask) => mask.shallow_clone(),
        None => Tensor::zeros(distance.size(), (kind, positions.device()))
            .masked_fill(&distance.lt(0), f64::NEG_INFINITY)
            .unsqueeze(1),
    };
    base.masked_fill(&distance.ge(window).unsqueeze(1), f64::NEG_INFINITY)
}

/// Positions [B, T] of a left-padded batch: each row counts from its first real token.
pub fn positions_from_mask(attention: &Tensor) -> Tensor {
    (attention.cumsum(-1, Kind::Int64) - 1).clamp_min(0)
}

/// The additive mask [B, 1, T, S] for T new tokens after S - T cached ones:
/// causal, blind to padding. A padding query sees itself so that no row of
/// the softmax is empty.
pub fn attention_mask(attention: &Tensor, new_tokens: i64) -> Tensor {
    let (_, s) = attention.size2().expect("attention is [batch, keys]");
    let device = attention.device();
    let past = s - new_tokens;
    let q = Tensor::arange_start(past, s, (Kind::Int64, device)).view([new_tokens, 1]);
    let k = Tensor::arange(s, (Kind::Int64, device)).view([1, s]);
    let causal = k.le_tensor(&q).unsqueeze(0);
    let real = attention.gt(0).unsqueeze(1);
    let own = k.eq_tensor(&q).unsqueeze(0);
    let allowed = causal.logical_and(&real.logical_or(&own));
    Tensor::zeros(allowed.size(), (Kind::Float, device))
        .masked_fill(&allowed.logical_not(), f64::NEG_INFINITY)
        .unsqueeze(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_attention_equals_the_fused_kernel() {
        tch::manual_seed(1);
        let opts = (Kind::Float, Device::Cpu);
        let q = Tensor::randn([2, 4, 5, 8], opts);
        let k = Tensor::randn([2, 2, 5, 8], opts);
        let v = Tensor::randn([2, 2, 5, 8], opts);
        let fused =
            Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, true, None, true);
        let explicit = explicit_attention(&q, &k, &v, None, true, Scores::default());
        assert!((fused - explicit).abs().max().double_value(&[]) < 1e-5);
        let real = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 5]);
        let mask = attention_mask(&real, 5);
        let fused =
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&mask), 0.0, false, None, true);
        let explicit = explicit_attention(&q, &k, &v, Some(&mask), false, Scores::default());
        assert!((fused - &explicit).abs().max().double_value(&[]) < 1e-5);
        // One row per step when the scores of two would pass the bound: the same result.
        let chunked =
            explicit_attention_within(&q, &k, &v, Some(&mask), false, Scores::default(), 4 * 5 * 5);
        assert!((explicit - chunked).abs().max().double_value(&[]) < 1e-6);
    }
}
