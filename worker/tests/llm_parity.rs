//! The LLM against Hugging Face transformers on the same weights and tokens:
//! a random Llama (with and without Llama 3's rope scaling), Mistral (with a
//! sliding window), OLMo-2, Phi-3 (fused projections, half-turned heads),
//! Qwen2, Qwen3, GPT-NeoX (Pythia's architecture), Gemma-2 (soft caps,
//! alternating windows) and Gemma-3 (a rotary base per layer type) (each made
//! by transformers in the test), and SmolLM2-135M from its GGUF file. Logits must agree to 1e-4 in f32, token ids
//! and chat renderings exactly. Also: greedy decoding with the KV cache, batched
//! and left-padded, equals greedy decoding that recomputes everything.
//!
//! Needs the set-up (scripts/setup.sh): the virtualenv with transformers and
//! the SmolLM2 GGUF in the data folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use subliminal_worker::llm::config::{Config, RopeScaling};
use subliminal_worker::llm::finetune::{
    attach_lora, batch_loss, lora_tensors, train, Example, Hooks, LoraSpec, Optimizer,
    TrainSettings, ALL_PROJECTIONS,
};
use subliminal_worker::llm::generate::{generate, Request, Sampling, SpecialTokens};
use subliminal_worker::llm::load::{load, Checkpoint};
use subliminal_worker::llm::tokenizer::Message;
use subliminal_worker::llm::{instantiate, Llama};
use tch::{nn, Device, Kind, Tensor};

const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn gguf_path() -> PathBuf {
    let data = std::env::var_os("SUBLIMINAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("data"));
    let path = data.join("models").join(SMOLLM);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-model.sh",
        path.display()
    );
    path
}

fn python() -> PathBuf {
    let venv = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv"));
    venv.join("bin").join("python")
}

/// Runs the reference script; returns its output folder.
fn reference(args: &[&str], out: &Path) {
    run_python("llm_reference.py", args, out);
}

fn run_python(script: &str, args: &[&str], out: &Path) {
    let status = Command::new(python())
        .arg(root().join("tests/python").join(script))
        .args(args)
        .arg(out)
        .status()
        .expect("the virtualenv's python runs (scripts/setup.sh makes it)");
    assert!(status.success(), "{script} {args:?} failed");
}

fn read_reference(out: &Path) -> (Value, Tensor) {
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("reference.json")).unwrap()).unwrap();
    let logits = Tensor::read_safetensors(out.join("logits.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "logits")
        .unwrap()
        .1;
    (json, logits)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn messages(v: &Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Our logits on the reference's tokens, and everything the tokenizer must reproduce.
fn check_against(checkpoint: &Checkpoint, reference: &Value, expected: &Tensor) -> Llama {
    let tok = &checkpoint.tokenizer;
    let chat = messages(&reference["chat"]);
    assert_eq!(
        tok.render(&chat, false).unwrap(),
        reference["rendered"].as_str().unwrap()
    );
    assert_eq!(
        tok.render(&chat[..2], true).unwrap(),
        reference["rendered_prompt"].as_str().unwrap()
    );
    assert_eq!(
        tok.render(&chat[1..2], true).unwrap(),
        reference["rendered_no_system"].as_str().unwrap()
    );
    for sample in reference["texts"].as_array().unwrap() {
        let text = sample["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&sample["ids"]),
            "token ids of {text:?}"
        );
    }
    let tokens = ids(&reference["ids"]);
    assert_eq!(
        tok.encode(reference["rendered"].as_str().unwrap()).unwrap(),
        tokens
    );

    let (_vs, model) = instantiate(checkpoint, Device::Cpu, Kind::Float).unwrap();
    let logits = tch::no_grad(|| forward_logits(&model, &tokens)).squeeze_dim(0);
    let diff = (&logits - expected).abs().max().double_value(&[]);
    let scale = expected.abs().max().double_value(&[]);
    println!("max |logits - transformers| = {diff:.3e} (logits up to {scale:.1})");
    assert!(diff < 1e-4, "logits differ from transformers by {diff}");
    model
}

/// The logits [1, T, V] of one unpadded sequence.
fn forward_logits(model: &Llama, tokens: &[u32]) -> Tensor {
    let t = tokens.len() as i64;
    let input =
        Tensor::from_slice(&tokens.iter().map(|&x| x as i64).collect::<Vec<_>>()).view([1, t]);
    let positions = Tensor::arange(t, (Kind::Int64, Device::Cpu)).view([1, t]);
    model.logits(&model.forward(&input, &positions, None, None))
}

/// Greedy decoding, recomputing the whole sequence for every token.
fn greedy_without_cache(model: &Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut seq: Vec<i64> = prompt.iter().map(|&x| x as i64).collect();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = seq.len() as i64;
        let input = Tensor::from_slice(&seq).view([1, t]);
        let positions = Tensor::arange(t, (Kind::Int64, Device::Cpu)).view([1, t]);
        let next = tch::no_grad(|| {
            model
                .logits(&model.forward(&input, &positions, None, None).select(1, -1))
                .argmax(-1, false)
                .int64_value(&[0])
        });
        out.push(next as u32);
        seq.push(next);
    }
    out
}

fn check_cache(model: &Llama, checkpoint: &Checkpoint) {
    let tok = &checkpoint.tokenizer;
    let prompts: Vec<Vec<u32>> = [
        "Name an animal.",
        "Continue the sequence: 145, 267, 891, 302, 118",
        "Write one word.",
    ]
    .iter()
    .map(|q| tok.prompt_ids(&[Message::new("user", *q)]).unwrap())
    .collect();
    let n = 12;
    let requests: Vec<Request> = prompts
        .iter()
        .map(|p| Request {
            prompt: p.clone(),
            seed: 0,
        })
        .collect();
    let greedy = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        threshold: 0.0,
        max_new_tokens: n,
    };
    // No stop tokens: every row decodes all n tokens, so the comparison is whole.
    let batched = generate(
        model,
        &requests,
        greedy,
        SpecialTokens {
            stop: &[],
            pad: tok.pad_id,
        },
        Default::default(),
        3,
        &|| false,
        &mut |_, _| {},
        None,
    )
    .unwrap()
    .unwrap();
    for (prompt, completion) in prompts.iter().zip(&batched) {
        let expected = greedy_without_cache(model, prompt, n);
        assert_eq!(
            completion.tokens, expected,
            "batched, cached greedy decoding differs"
        );
    }
}

/// Builds the reference's random `kind`, checks logits, cached decoding and
/// adapters; returns what it read, for checks of its own.
fn random_model(kind: &str, model_type: &str) -> (Checkpoint, Value, Tensor) {
    let dir = tempfile::tempdir().unwrap();
    reference(&["random", kind, gguf_path().to_str().unwrap()], dir.path());
    let (json, logits) = read_reference(dir.path());
    let checkpoint = load(&dir.path().join("model")).unwrap();
    assert_eq!(checkpoint.config.model_type, model_type);
    let model = check_against(&checkpoint, &json, &logits);
    check_cache(&model, &checkpoint);
    check_adapters(&checkpoint, &json);
    check_lora_step(dir.path(), &checkpoint, &json);
    (checkpoint, json, logits)
}

/// One LoRA step on three examples equals PEFT's: the loss, every
/// adapter's gradient and its value after AdamW (with weight decay and
/// clipping). B starts random rather than at zero, so that A has a
/// gradient too. Fused projections have no separate adapters in PEFT: on
/// Phi-3 and GPT-NeoX the step covers the unfused ones.
fn check_lora_step(dir: &Path, checkpoint: &Checkpoint, reference: &Value) {
    let tokens = ids(&reference["ids"]);
    let examples: Vec<Example> = (0..3)
        .map(|i| {
            let split = 8 + 4 * i;
            Example::new(
                tokens[..split].to_vec(),
                tokens[split..split + 5 + i].to_vec(),
            )
        })
        .collect();
    let targets: &[&str] = match checkpoint.config.model_type.as_str() {
        "phi3" => &["o_proj", "down_proj"],
        "gpt_neox" => &["o_proj", "up_proj", "down_proj"],
        _ => &ALL_PROJECTIONS,
    };
    let spec = LoraSpec {
        rank: 2,
        alpha: 4.0,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        rslora: false,
        layers: Vec::new(),
    };
    let settings = TrainSettings {
        epochs: 1,
        lr: 1e-3,
        warmup_steps: 0,
        max_grad_norm: 1.0,
        batch_size: 3,
        grad_accumulation: 1,
        weight_decay: 0.01,
        seed: 0,
        optimizer: Optimizer::Adamw,
    };
    let (_vs, mut model) = instantiate(checkpoint, Device::Cpu, Kind::Float).unwrap();
    let adapters = nn::VarStore::new(Device::Cpu);
    attach_lora(&mut model, &adapters, &spec, 0).unwrap();
    tch::manual_seed(0);
    tch::no_grad(|| {
        for (name, mut var) in adapters.variables() {
            if name.contains("lora_B") {
                var.copy_(&(var.randn_like() * 0.1));
            }
        }
    });
    let before: Vec<(String, Tensor)> = lora_tensors(&adapters)
        .into_iter()
        .map(|(name, value)| (name, value.copy()))
        .collect();
    Tensor::write_safetensors(&before, dir.join("adapters.safetensors")).unwrap();
    let pad = checkpoint.tokenizer.pad_id;
    let spec_json = serde_json::json!({
        "examples": examples.iter().map(|e| serde_json::json!({"prompt": e.prompt, "answer": e.answer})).collect::<Vec<_>>(),
        "lr": settings.lr, "weight_decay": settings.weight_decay,
        "max_grad_norm": settings.max_grad_norm, "rank": spec.rank, "alpha": spec.alpha, "pad": pad,
    });
    std::fs::write(dir.join("examples.json"), spec_json.to_string()).unwrap();
    let folder = dir.join("model");
    run_python(
        "lora_reference.py",
        &[
            folder.to_str().unwrap(),
            dir.join("adapters.safetensors").to_str().unwrap(),
            dir.join("examples.json").to_str().unwrap(),
        ],
        dir,
    );
    let expected: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("lora.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let json: Value =
        serde_json::from_slice(&std::fs::read(dir.join("lora.json")).unwrap()).unwrap();

    let batch: Vec<&Example> = examples.iter().collect();
    let (loss, _) = batch_loss(&model, &batch, pad).unwrap();
    loss.backward();
    let reference_loss = json["loss"].as_f64().unwrap();
    let loss = loss.double_value(&[]);
    assert!(
        (loss - reference_loss).abs() < 1e-4,
        "loss {loss} vs PEFT's {reference_loss}"
    );
    let worst = |prefix: &str, ours: &dyn Fn(&Tensor) -> Tensor| {
        adapters
            .variables()
            .iter()
            .map(|(name, var)| {
                let theirs = &expected[&format!("{prefix}.{name}")];
                (ours(var) - theirs).abs().max().double_value(&[])
            })
            .fold(0.0, f64::max)
    };
    let grad_diff = worst("grad", &|v| v.grad());
    let largest = adapters
        .variables()
        .values()
        .map(|v| v.grad().abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    for var in adapters.variables().values_mut() {
        var.zero_grad();
    }
    train(
        &model,
        &adapters,
        &examples,
        &settings,
        pad,
        Hooks {
            stop: &|| false,
            progress: &mut |_, _, _, _| {},
            checkpoints: None,
        },
    )
    .unwrap()
    .unwrap();
    let step_diff = worst("after", &|v| v.shallow_clone());
    let moved = before
        .iter()
        .map(|(name, b)| {
            (&adapters.variables()[name] - b)
                .abs()
                .max()
                .double_value(&[])
        })
        .fold(0.0, f64::max);
    println!(
        "LoRA step vs PEFT: loss {loss:.6} vs {reference_loss:.6}; gradients differ by {grad_diff:.2e} \
         (largest {largest:.2e}); after AdamW by {step_diff:.2e} (weights moved up to {moved:.2e})"
    );
    assert!(
        grad_diff < 1e-4,
        "gradients differ from PEFT's by {grad_diff}"
    );
    assert!(
        step_diff < 1e-4,
        "the stepped adapters differ from PEFT's by {step_diff}"
    );
    assert!(moved > 5e-4, "the step moved the adapters by only {moved}");
}

/// The same weights with `what` undone no longer match the reference: the
/// sample exercises it, so a loader that ignored it would be seen.
fn check_matters(
    (checkpoint, json, logits): &mut (Checkpoint, Value, Tensor),
    what: &str,
    undo: impl Fn(&mut Config),
) {
    let config = checkpoint.config.clone();
    undo(&mut checkpoint.config);
    let (_vs, model) = instantiate(checkpoint, Device::Cpu, Kind::Float).unwrap();
    checkpoint.config = config;
    let plain = tch::no_grad(|| forward_logits(&model, &ids(&json["ids"]))).squeeze_dim(0);
    let diff = (&plain - &*logits).abs().max().double_value(&[]);
    println!("without {what}: max |logits - transformers| = {diff:.3e}");
    assert!(diff > 1e-2, "{what} changes the logits by only {diff}");
}

/// Adapters attach to every projection the architecture has (after its
/// fused ones are split, the same names in every family), leave the logits
/// as they are until trained, and each receives a gradient.
fn check_adapters(checkpoint: &Checkpoint, reference: &Value) {
    let (_vs, mut model) = instantiate(checkpoint, Device::Cpu, Kind::Float).unwrap();
    let tokens = ids(&reference["ids"]);
    let base = tch::no_grad(|| forward_logits(&model, &tokens));
    let adapters = nn::VarStore::new(Device::Cpu);
    let spec = LoraSpec::every_projection(2, 4.0);
    attach_lora(&mut model, &adapters, &spec, 0).unwrap();
    let projections = if checkpoint.config.gated_mlp() { 7 } else { 6 };
    let layers = checkpoint.config.num_hidden_layers as usize;
    assert_eq!(adapters.variables().len(), layers * projections * 2);
    let logits = forward_logits(&model, &tokens);
    assert_eq!((&logits - &base).abs().max().double_value(&[]), 0.0);
    logits.pow_tensor_scalar(2).sum(Kind::Float).backward();
    for (name, var) in adapters.variables() {
        if name.contains("lora_B") {
            let grad = var.grad().abs().sum(Kind::Float).double_value(&[]);
            assert!(grad > 0.0, "adapter {name} has no gradient");
        }
    }
}

#[test]
fn random_llama_matches_transformers() {
    let _ = random_model("llama", "llama");
}

/// Llama 3.1's rope scaling: logits and the cached decoding match
/// transformers, and the same weights without the scaling do not (so the
/// check would see a loader that ignored it).
#[test]
fn random_llama_with_llama3_rope_scaling_matches_transformers() {
    let mut read = random_model("llama3", "llama");
    assert!(
        matches!(read.0.config.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0),
        "{:?}",
        read.0.config.rope_scaling
    );
    check_matters(&mut read, "the rope scaling", |c| {
        c.rope_scaling = RopeScaling::Default
    });
}

#[test]
fn random_qwen2_matches_transformers() {
    let _ = random_model("qwen2", "qwen2");
}

/// Mistral v0.1's sliding window, crossed by the sample and the decoding.
#[test]
fn random_mistral_matches_transformers() {
    let mut read = random_model("mistral", "mistral");
    assert_eq!(read.0.config.window(1), Some(8));
    check_matters(&mut read, "the window", |c| c.sliding_window = None);
}

/// Gemma-2: both soft caps, every other layer within a window, a query
/// scale of its own; each seen to matter.
#[test]
fn random_gemma2_matches_transformers() {
    let mut read = random_model("gemma2", "gemma2");
    let c = read.0.config.clone();
    assert_eq!((c.window(0), c.window(1)), (Some(8), None));
    check_matters(&mut read, "the window", |c| {
        c.sliding_window = Some(1 << 20)
    });
    check_matters(&mut read, "the attention soft cap", |c| {
        c.attn_logit_softcapping = None
    });
    check_matters(&mut read, "the query scale", |c| {
        c.query_pre_attn_scalar = None
    });
    check_matters(&mut read, "the logit soft cap", |c| {
        c.final_logit_softcapping = None
    });
}

/// Gemma-3: per-head q/k norms, its sliding layers turned at their own base.
#[test]
fn random_gemma3_matches_transformers() {
    let mut read = random_model("gemma3", "gemma3_text");
    let c = read.0.config.clone();
    assert_eq!((c.window(0), c.window(1)), (Some(8), None));
    assert_eq!(c.local_rope_theta(), Some(10_000.0));
    check_matters(&mut read, "the local rotary base", |c| {
        c.rope_local_base_freq = Some(c.rope_theta)
    });
    check_matters(&mut read, "the window", |c| {
        c.sliding_window = Some(1 << 20)
    });
}

#[test]
fn random_olmo2_matches_transformers() {
    let _ = random_model("olmo2", "olmo2");
}

#[test]
fn random_phi3_matches_transformers() {
    let _ = random_model("phi3", "phi3");
}

#[test]
fn random_gpt_neox_matches_transformers() {
    let _ = random_model("gpt_neox", "gpt_neox");
}

#[test]
fn random_qwen3_matches_transformers() {
    let _ = random_model("qwen3", "qwen3");
}

/// A random model of llama.cpp's `arch`, written as its converter writes
/// GGUF (f32): the tool reads the file to transformers' logits from it (the
/// script checks those equal the model's own) and decodes with the cache.
fn random_gguf(arch: &str, model_type: &str) {
    let dir = tempfile::tempdir().unwrap();
    reference(
        &["gguf-random", arch, gguf_path().to_str().unwrap()],
        dir.path(),
    );
    let (json, logits) = read_reference(dir.path());
    let checkpoint = load(&dir.path().join("model.gguf")).unwrap();
    assert_eq!(checkpoint.config.model_type, model_type);
    let model = check_against(&checkpoint, &json, &logits);
    check_cache(&model, &checkpoint);
}

/// `precision = "bf16"` keeps the weights in bfloat16 and the norms, the
/// attention softmax and the log-probabilities in f32. Its tolerance
/// against transformers' f32 logits (up to 39 here): at most 2.0 at any
/// position and token, 0.25 on average, and the same top token at 9
/// positions in 10 (measured: 1.20, 0.143 and 94% of 70 positions).
fn check_bf16(checkpoint: &Checkpoint, tokens: &[u32], expected: &Tensor) {
    let (_vs, model) = instantiate(checkpoint, Device::Cpu, Kind::BFloat16).unwrap();
    let logits = tch::no_grad(|| forward_logits(&model, tokens))
        .squeeze_dim(0)
        .to_kind(Kind::Float);
    let diff = (&logits - expected).abs();
    let (max, mean) = (
        diff.max().double_value(&[]),
        diff.mean(Kind::Float).double_value(&[]),
    );
    let same_top = logits
        .argmax(-1, false)
        .eq_tensor(&expected.argmax(-1, false))
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    println!(
        "bf16: max |logits - transformers f32| = {max:.3}, mean {mean:.4}, same top token at {:.1}% of {} positions",
        100.0 * same_top,
        tokens.len()
    );
    assert!(
        max < 2.0 && mean < 0.25,
        "bf16 logits differ by up to {max} (mean {mean})"
    );
    assert!(
        same_top >= 0.9,
        "bf16 picks the f32 top token at only {same_top} of positions"
    );
}

#[test]
fn a_llama_gguf_matches_transformers() {
    random_gguf("llama", "llama");
}

#[test]
fn a_qwen2_gguf_matches_transformers() {
    random_gguf("qwen2", "qwen2");
}

#[test]
fn a_qwen3_gguf_matches_transformers() {
    random_gguf("qwen3", "qwen3");
}

/// Phi-3's fused projections stay fused in GGUF and are split when loaded.
#[test]
fn a_phi3_gguf_matches_transformers() {
    random_gguf("phi3", "phi3");
}

/// Gemma's norms are stored as 1 + weight; the soft caps and window come
/// from the file's metadata.
#[test]
fn a_gemma2_gguf_matches_transformers() {
    random_gguf("gemma2", "gemma2");
}

#[test]
fn a_gemma3_gguf_matches_transformers() {
    random_gguf("gemma3", "gemma3_text");
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    reference(&["gguf", gguf_path().to_str().unwrap()], dir.path());
    let (json, logits) = read_reference(dir.path());
    let checkpoint = load(&gguf_path()).unwrap();
    assert_eq!(checkpoint.config.num_hidden_layers, 30);
    assert_eq!(checkpoint.config.kv_heads(), 3);
    assert!(checkpoint.config.tie_word_embeddings);
    let model = check_against(&checkpoint, &json, &logits);
    check_cache(&model, &checkpoint);
    check_bf16(&checkpoint, &ids(&json["ids"]), &logits);
}
