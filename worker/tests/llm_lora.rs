//! LoRA fine-tuning on a small random Llama: training moves the adapters and
//! nothing else, the loss falls, and an adapter checkpoint reloads to the
//! same logits.

use std::collections::HashMap;

use subliminal_worker::llm::finetune::{
    attach_lora, load_lora, lora_tensors, schedule, train, Example, Hooks, LoraSpec, TrainSettings,
};
use subliminal_worker::llm::model::Weights;
use subliminal_worker::llm::{Config, Llama};
use subliminal_worker::safetensors_io;
use tch::{nn, Device, Kind, Tensor};

mod common;

use common::copy;

fn config() -> Config {
    common::tiny_config(64)
}

fn random_weights(cfg: &Config) -> Weights {
    common::random_weights(cfg, 0, 0.2)
}

fn spec() -> LoraSpec {
    LoraSpec::every_projection(4, 8.0)
}

fn logits(model: &Llama) -> Tensor {
    let tokens = Tensor::from_slice(&[1i64, 5, 9, 13, 17, 21, 2]).view([1, 7]);
    let positions = Tensor::arange(7, (Kind::Int64, Device::Cpu)).view([1, 7]);
    tch::no_grad(|| model.logits(&model.forward(&tokens, &positions, None, None)))
}

fn examples() -> Vec<Example> {
    (0..12)
        .map(|i| Example::new(vec![1, 3 + i % 5, 7], vec![40 + i % 5, 41, 2]))
        .collect()
}

fn settings() -> TrainSettings {
    TrainSettings {
        epochs: 12,
        lr: 5e-2,
        warmup_steps: 2,
        max_grad_norm: 1.0,
        batch_size: 4,
        grad_accumulation: 2,
        weight_decay: 0.0,
        seed: 3,
        optimizer: Default::default(),
    }
}

#[test]
fn training_moves_only_the_adapters_and_a_checkpoint_reloads() {
    let _generator = common::generator();
    let cfg = config();
    let weights = random_weights(&cfg);
    let mut base_vs = nn::VarStore::new(Device::Cpu);
    let mut model = Llama::load(&base_vs, &cfg, copy(&weights)).unwrap();
    base_vs.freeze();
    let before: HashMap<String, Tensor> = base_vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.copy()))
        .collect();
    let base_logits = logits(&model);

    let lora_vs = nn::VarStore::new(Device::Cpu);
    attach_lora(&mut model, &lora_vs, &spec(), 1).unwrap();
    assert_eq!(lora_vs.variables().len(), 2 * 7 * 2);
    // B starts at zero: the adapters change nothing until trained.
    assert_eq!(
        (logits(&model) - &base_logits)
            .abs()
            .max()
            .double_value(&[]),
        0.0
    );
    let lora_before: HashMap<String, Tensor> = lora_vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.copy()))
        .collect();

    let report = train(
        &model,
        &lora_vs,
        &examples(),
        &settings(),
        0,
        Hooks {
            stop: &|| false,
            progress: &mut |_, _, _, _| {},
            checkpoints: None,
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(report.steps, 12 * 2);
    let first = report.losses[..2].iter().sum::<f64>();
    let last = report.losses[report.losses.len() - 2..].iter().sum::<f64>();
    assert!(last < first * 0.8, "loss did not fall: {:?}", report.losses);

    for (name, var) in base_vs.variables() {
        assert!(var.equal(&before[&name]), "base weight {name} changed");
    }
    let mut moved = 0;
    for (name, var) in lora_vs.variables() {
        if !var.equal(&lora_before[&name]) {
            moved += 1;
        }
    }
    assert_eq!(
        moved,
        lora_vs.variables().len(),
        "every adapter should move"
    );
    let trained_logits = logits(&model);
    assert!(
        (&trained_logits - &base_logits)
            .abs()
            .max()
            .double_value(&[])
            > 1e-3
    );

    // Save the adapters as the student stage does, reload into a fresh model.
    let tensors = lora_tensors(&lora_vs);
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let bytes = safetensors_io::to_bytes(&named, Default::default()).unwrap();
    let loaded = safetensors_io::parse(&bytes, "adapter").unwrap();
    let saved: HashMap<String, Tensor> = loaded
        .names()
        .into_iter()
        .map(|n| {
            let t = loaded.tensor(&n, Device::Cpu).unwrap();
            (n, t)
        })
        .collect();
    let fresh_vs = nn::VarStore::new(Device::Cpu);
    let mut fresh = Llama::load(&fresh_vs, &cfg, copy(&weights)).unwrap();
    let mut fresh_lora = nn::VarStore::new(Device::Cpu);
    attach_lora(&mut fresh, &fresh_lora, &spec(), 99).unwrap();
    load_lora(&mut fresh_lora, &saved).unwrap();
    let diff = (logits(&fresh) - &trained_logits)
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-6, "reloaded adapters give other logits: {diff}");
}

#[test]
fn adapters_refuse_unknown_targets_and_mismatched_checkpoints() {
    let _generator = common::generator();
    let cfg = config();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = Llama::load(&vs, &cfg, random_weights(&cfg)).unwrap();
    let lora_vs = nn::VarStore::new(Device::Cpu);
    let mut bad = spec();
    bad.targets = vec!["qkv".to_owned()];
    let err = attach_lora(&mut model, &lora_vs, &bad, 0).unwrap_err();
    assert!(err.to_string().contains("qkv"), "{err}");
    let mut lora_vs = nn::VarStore::new(Device::Cpu);
    attach_lora(&mut model, &lora_vs, &spec(), 0).unwrap();
    let err = load_lora(&mut lora_vs, &HashMap::new()).unwrap_err();
    assert!(err.to_string().contains("other targets"), "{err}");
}

#[test]
fn schedule_warms_up_then_decays_to_zero() {
    assert_eq!(schedule(0, 5, 20), 0.0);
    assert_eq!(schedule(1, 5, 20), 0.2);
    assert_eq!(schedule(5, 5, 20), 1.0);
    assert!((schedule(10, 5, 20) - 10.0 / 15.0).abs() < 1e-12);
    assert_eq!(schedule(20, 5, 20), 0.0);
    assert_eq!(schedule(3, 0, 4), 0.25);
}
