//! Benchmark: SmolLM2-135M on this machine's CPU (or `--device cuda`):
//! generation tokens/s at batch 1 and batch 32, and LoRA fine-tuning tokens/s.
//!
//! Writes the prompts and training examples it used (token ids) to
//! `--workload FILE`, so that bench/llm_transformers.py (and
//! bench/llm_llamacpp.py) run exactly the same work through Hugging Face
//! transformers (and llama.cpp), and prints one JSON line of figures.
//! bench/llm-vs-transformers.sh runs them all and prints the ratios.
//!
//! The roofline: the machine's measured peak (the best of large libtorch
//! matmuls in f32 and in bf16) and each workload's achieved GFLOP/s, from
//! the model's matmul FLOPs (2 per weight per token computed forward, 4 per
//! weight per token trained: the forward and the input gradients of the
//! frozen base; attention's score and value products counted too).
//!
//! `--precision bf16` runs every workload with the base weights in bf16 (LoRA
//! adapters and their optimiser stay f32) and also compares the model's
//! next-token logits on the benchmark's prompts with f32's.
//!
//!   cargo bench --bench llm -- [--threads N] [--device cpu|cuda] [--workload FILE] [--precision f32|bf16]

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use subliminal_shared::llm::prompts::{prompt_seed, sequence_prompt};
use subliminal_worker::device::DeviceChoice;
use subliminal_worker::llm::finetune::{
    attach_lora, train, Example, Hooks, LoraSpec, TrainSettings,
};
use subliminal_worker::llm::generate::{generate, Request, Sampling, SpecialTokens};
use subliminal_worker::llm::load::load;
use subliminal_worker::llm::tokenizer::Message;
use subliminal_worker::llm::{instantiate, Config};
use tch::{nn, Device, Kind, Tensor};

/// New tokens per completion: fixed (no stop token), so both sides do equal work.
const NEW_TOKENS: usize = 64;
const BATCH_ONE_PROMPTS: usize = 4;
const BATCH: usize = 32;
const TRAIN_EXAMPLES: usize = 64;
const TRAIN_BATCH: u64 = 8;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// GFLOP/s of the best of several `n`×`n` matmuls in `kind` on `device`.
fn peak_gflops(n: i64, kind: Kind, device: Device) -> f64 {
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let _ = a.matmul(&b); // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        let c = a.matmul(&b);
        let _ = c.sum(Kind::Float).double_value(&[]);
        best = best.min(started.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// Weights a token meets in matmuls: every projection of every block, and
/// the output head.
fn matmul_weights(config: &Config) -> f64 {
    let d = config.hidden_size as f64;
    let kv = (config.kv_heads() * config.head_dim()) as f64;
    let q = (config.num_attention_heads * config.head_dim()) as f64;
    let per_block = d * q + 2.0 * d * kv + q * d + 3.0 * d * config.intermediate_size as f64;
    per_block * config.num_hidden_layers as f64 + d * config.vocab_size as f64
}

/// Attention's FLOPs for one query over `context` keys, in every block.
fn attention_flops(config: &Config, context: f64) -> f64 {
    let q = (config.num_attention_heads * config.head_dim()) as f64;
    4.0 * q * context * config.num_hidden_layers as f64
}

/// The last-position logits of each prompt in `model` against the same
/// model in f32: the largest and mean absolute difference, the logits'
/// scale, and how often the top token agrees.
fn compare_logits(
    model: &subliminal_worker::llm::Llama,
    checkpoint: &subliminal_worker::llm::Checkpoint,
    prompts: &[Vec<u32>],
    device: Device,
) -> anyhow::Result<serde_json::Value> {
    let (_vs, reference) = instantiate(checkpoint, device, Kind::Float)?;
    let last_logits = |m: &subliminal_worker::llm::Llama, p: &[u32]| {
        let ids: Vec<i64> = p.iter().map(|&t| t as i64).collect();
        let tokens = Tensor::from_slice(&ids).view([1, -1]).to_device(device);
        let positions = Tensor::arange(ids.len() as i64, (Kind::Int64, device)).view([1, -1]);
        let hidden = tch::no_grad(|| m.forward(&tokens, &positions, None, None));
        m.logits(&hidden.select(1, ids.len() as i64 - 1)).squeeze()
    };
    let (mut largest, mut mean, mut scale, mut agree) = (0.0f64, 0.0, 0.0f64, 0);
    for p in prompts {
        let (a, b) = (last_logits(model, p), last_logits(&reference, p));
        let difference = (&a - &b).abs();
        largest = largest.max(difference.max().double_value(&[]));
        mean += difference.mean(Kind::Float).double_value(&[]) / prompts.len() as f64;
        scale = scale.max(b.abs().max().double_value(&[]));
        agree +=
            (a.argmax(0, false).int64_value(&[]) == b.argmax(0, false).int64_value(&[])) as usize;
    }
    Ok(json!({
        "prompts": prompts.len(),
        "max_abs_difference": largest,
        "mean_abs_difference": mean,
        "largest_logit": scale,
        "top1_agreement": agree as f64 / prompts.len() as f64,
    }))
}

fn main() -> anyhow::Result<()> {
    let threads: i32 = match arg("--threads") {
        Some(t) => t.parse()?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()) as i32,
    };
    tch::set_num_threads(threads);
    let device = arg("--device")
        .unwrap_or_else(|| "cpu".to_owned())
        .parse::<DeviceChoice>()
        .map_err(anyhow::Error::msg)?
        .resolve()?;
    let data = std::env::var("SUBLIMINAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data"));
    let gguf = data.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let checkpoint = load(&gguf)?;
    let tok = &checkpoint.tokenizer;
    let kind = match arg("--precision").as_deref() {
        None | Some("f32") => Kind::Float,
        Some("bf16") => Kind::BFloat16,
        Some(other) => anyhow::bail!("--precision {other:?}: expected f32 or bf16"),
    };
    let (_vs, model) = instantiate(&checkpoint, device, kind)?;

    let prompts: Vec<Vec<u32>> = (0..BATCH as u64)
        .map(|i| tok.prompt_ids(&[Message::new("user", sequence_prompt(prompt_seed(7, i)))]))
        .collect::<anyhow::Result<_>>()?;
    let sampling = Sampling {
        temperature: 1.0,
        top_p: 1.0,
        threshold: 0.0,
        max_new_tokens: NEW_TOKENS,
    };
    let run = |batch: &[Vec<u32>], batch_size: usize| -> anyhow::Result<f64> {
        let requests: Vec<Request> = batch
            .iter()
            .enumerate()
            .map(|(i, p)| Request {
                prompt: p.clone(),
                seed: i as u64,
            })
            .collect();
        let started = Instant::now();
        let out = generate(
            &model,
            &requests,
            sampling,
            SpecialTokens {
                stop: &[],
                pad: tok.pad_id,
            },
            Default::default(),
            batch_size,
            &|| false,
            &mut |_, _| {},
            None,
        )?
        .expect("not stopped");
        let new: usize = out.iter().map(|c| c.tokens.len()).sum();
        Ok(new as f64 / started.elapsed().as_secs_f64())
    };
    run(&prompts[..1], 1)?; // warm-up
    let gen_1 = run(&prompts[..BATCH_ONE_PROMPTS], 1)?;
    let gen_32 = run(&prompts, BATCH)?;
    // FLOPs per new token: each prompt's prefill shared over its new tokens,
    // attention over the mean context.
    let config = &checkpoint.config;
    let weights = matmul_weights(config);
    let mean_prompt = prompts.iter().map(|p| p.len()).sum::<usize>() as f64 / prompts.len() as f64;
    let per_new_token = (2.0 * weights
        + attention_flops(config, mean_prompt + NEW_TOKENS as f64 / 2.0))
        * (1.0 + mean_prompt / NEW_TOKENS as f64);
    let peak_f32 = peak_gflops(1024, Kind::Float, device);
    let peak_bf16 = peak_gflops(1024, Kind::BFloat16, device);

    // Fine-tuning: prompt → a number answer, LoRA r=8 on every projection.
    let examples: Vec<Example> = (0..TRAIN_EXAMPLES as u64)
        .map(|i| {
            let answer = format!("{}, {}, {}, {}", 100 + i, 200 + 3 * i, 300 + 7 * i, 400 + i);
            let (prompt, answer) = tok.example_ids(
                &[Message::new("user", sequence_prompt(prompt_seed(9, i)))],
                &answer,
            )?;
            Ok(Example::new(prompt, answer))
        })
        .collect::<anyhow::Result<_>>()?;
    let logits_vs_f32 = match kind {
        Kind::Float => None,
        _ => Some(compare_logits(&model, &checkpoint, &prompts, device)?),
    };
    let (_vs, mut student) = instantiate(&checkpoint, device, kind)?;
    let lora_vs = nn::VarStore::new(device);
    let spec = LoraSpec::every_projection(8, 8.0);
    attach_lora(&mut student, &lora_vs, &spec, 0)?;
    let settings = TrainSettings {
        epochs: 1,
        lr: 2e-4,
        warmup_steps: 5,
        max_grad_norm: 1.0,
        batch_size: TRAIN_BATCH,
        grad_accumulation: 1,
        weight_decay: 0.0,
        seed: 0,
        optimizer: Default::default(),
    };
    let report = train(
        &student,
        &lora_vs,
        &examples,
        &settings,
        tok.pad_id,
        Hooks {
            stop: &|| false,
            progress: &mut |_, _, _, _| {},
            checkpoints: None,
        },
    )?
    .expect("not stopped");

    // Trained positions cost 4 FLOPs per weight of the blocks (only answer
    // positions go through the head), attention about three times its forward.
    let head = config.hidden_size as f64 * config.vocab_size as f64;
    let answers: usize = examples.iter().map(|e| e.answer.len()).sum();
    let mean_length = report.padded_tokens as f64 / report.steps.max(1) as f64 / TRAIN_BATCH as f64;
    let finetune_flops = report.padded_tokens as f64
        * (4.0 * (weights - head) + 3.0 * attention_flops(config, mean_length / 2.0))
        + answers as f64 * 4.0 * head;
    let finetune_gflops = finetune_flops / report.seconds / 1e9;

    if let Some(path) = arg("--workload") {
        let ids = |v: &[u32]| v.to_vec();
        let workload = json!({
            "new_tokens": NEW_TOKENS,
            "batch_one_prompts": BATCH_ONE_PROMPTS,
            "prompts": prompts.iter().map(|p| ids(p)).collect::<Vec<_>>(),
            "pad_id": tok.pad_id,
            "train_batch": TRAIN_BATCH,
            "examples": examples.iter().map(|e| json!({"prompt": e.prompt, "answer": e.answer})).collect::<Vec<_>>(),
        });
        std::fs::write(&path, serde_json::to_vec(&workload)?)
            .map_err(|e| anyhow::anyhow!("cannot write the workload to {path}: {e}"))?;
    }
    println!(
        "{}",
        json!({
            "impl": "subliminal",
            "precision": format!("{kind:?}"),
            "logits_vs_f32": logits_vs_f32,
            "threads": threads,
            "device": format!("{device:?}"),
            "generate_batch1_tokens_per_s": gen_1,
            "generate_batch32_tokens_per_s": gen_32,
            "finetune_tokens_per_s": report.tokens_per_second,
            "finetune_steps": report.steps,
            "finetune_padding_share": report.padding_share,
            "generate_gflop_per_token": per_new_token / 1e9,
            "generate_batch1_gflops": gen_1 * per_new_token / 1e9,
            "generate_batch32_gflops": gen_32 * per_new_token / 1e9,
            "finetune_gflops": finetune_gflops,
            "peak_f32_gflops": peak_f32,
            "peak_bf16_gflops": peak_bf16,
        })
    );
    Ok(())
}
