//! The theorem's measurement on a small random Llama: the inner product of
//! the loss gradient with a weight change equals the finite difference of
//! the loss along that change, and the gradient's norm from the blocks'
//! inner products equals the norm of the whole gradient.

use std::collections::HashMap;

use subliminal_worker::llm::finetune::{batch_loss, Example};
use subliminal_worker::llm::theorem::{block_gradients, Change};
use subliminal_worker::llm::Llama;
use tch::{nn, Device, Kind, Tensor};

mod common;

fn examples() -> Vec<Example> {
    (0..9u32)
        .map(|i| Example::new(vec![1, 3 + i % 5, 7], vec![40 + i % 7, 41, 2 + i % 3]))
        .collect()
}

fn mean_loss(model: &Llama, examples: &[Example]) -> f64 {
    let batch: Vec<&Example> = examples.iter().collect();
    tch::no_grad(|| batch_loss(model, &batch, 0).unwrap().0.double_value(&[]))
}

#[test]
fn the_gradient_along_a_change_is_the_loss_finite_difference() {
    let _generator = common::generator();
    let cfg = common::tiny_config(64);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = Llama::load(&vs, &cfg, common::random_weights(&cfg, 5, 0.3)).unwrap();
    let mut change = HashMap::new();
    for module in [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.mlp.down_proj",
    ] {
        let shape = vs.variables()[&format!("{module}.weight")].size();
        change.insert(
            module.to_owned(),
            Tensor::randn(&shape, (Kind::Float, Device::Cpu)) * 0.05,
        );
    }
    let change = Change(change);
    let examples = examples();
    let blocks = block_gradients(&mut model, &examples, 3, 2, 0, &[&change], &|| false)
        .unwrap()
        .unwrap();
    assert_eq!(blocks.tokens.len(), 3);
    let total: usize = blocks.tokens.iter().sum();
    let inner: f64 = blocks
        .tokens
        .iter()
        .zip(&blocks.along[0])
        .map(|(&t, a)| t as f64 / total as f64 * a)
        .sum();
    let h = 1e-2;
    let step = |model: &mut Llama, sign: f64| {
        tch::no_grad(|| {
            for (name, linear) in model.linears_mut() {
                if let Some(delta) = change.0.get(&name) {
                    let _ = linear.weight.f_add_(&(delta * (sign * h))).unwrap();
                }
            }
        });
    };
    step(&mut model, 1.0);
    let up = mean_loss(&model, &examples);
    step(&mut model, -2.0);
    let down = mean_loss(&model, &examples);
    step(&mut model, 1.0);
    let numeric = (up - down) / (2.0 * h);
    assert!(
        (inner - numeric).abs() <= 0.02 * numeric.abs().max(1e-3),
        "<g, ΔW> {inner} vs finite difference {numeric}"
    );
    // cos(−g, ΔW) with g whole: the sign and size the blocks give.
    let cos = blocks.cosine(0, change.norm(), &[1.0, 1.0, 1.0]);
    assert!(
        cos.abs() <= 1.0 && cos * inner <= 0.0,
        "cos {cos} against <g, ΔW> {inner}"
    );
    let (lo, hi) = blocks.interval(0, change.norm(), 500, 1);
    assert!(lo <= hi && lo >= -1.0 && hi <= 1.0, "[{lo}, {hi}]");
}
