//! Soft-label distillation on a small random Llama: the forward-KL loss is
//! zero when the model's distribution is the teacher's, its gradient agrees
//! with finite differences of the loss, and training on it moves the
//! model's distribution toward the teacher's.

use subliminal_worker::llm::finetune::{batch_loss, Example, SoftTargets};
use subliminal_worker::llm::Llama;
use tch::{nn, Device, Kind, Tensor};

mod common;

const VOCAB: i64 = 64;

fn model(vs: &nn::VarStore) -> Llama {
    let cfg = common::tiny_config(VOCAB);
    Llama::load(vs, &cfg, common::random_weights(&cfg, 11, 0.3)).unwrap()
}

/// Two examples whose teacher spreads its mass over 4 tokens per position.
fn examples() -> Vec<Example> {
    let soft = |answer: &[u32], shift: u32| {
        let k = 4;
        let mut ids = Vec::new();
        let mut logprobs = Vec::new();
        for j in 0..answer.len() as u32 {
            ids.extend([10 + j + shift, 20 + j, 30 + shift, 40 + j]);
            let p: [f32; 4] = [0.5, 0.25, 0.15, 0.1];
            logprobs.extend(p.iter().map(|p| p.ln()));
        }
        SoftTargets { k, ids, logprobs }
    };
    vec![
        Example::distilled(vec![1, 5, 9], vec![10, 20, 30], soft(&[10, 20, 30], 0)).unwrap(),
        Example::distilled(vec![2, 6], vec![11, 21], soft(&[11, 21], 1)).unwrap(),
    ]
}

fn loss(model: &Llama, examples: &[Example]) -> f64 {
    let batch: Vec<&Example> = examples.iter().collect();
    tch::no_grad(|| batch_loss(model, &batch, 0).unwrap().0.double_value(&[]))
}

#[test]
fn the_kl_gradient_matches_finite_differences() {
    let _generator = common::generator();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = model(&vs);
    let examples = examples();
    let batch: Vec<&Example> = examples.iter().collect();
    let (l, count) = batch_loss(&model, &batch, 0).unwrap();
    assert_eq!(count, 5, "one position per answer token");
    assert!(
        l.double_value(&[]) > 0.0,
        "a random model is not the teacher"
    );
    l.backward();
    let vars = vs.variables();
    let weight = &vars["model.layers.1.mlp.down_proj.weight"];
    let grad = weight.grad();
    // The entries with the largest gradients, where a finite difference is well above noise.
    let (_, top) = grad.abs().flatten(0, -1).topk(5, 0, true, true);
    let h = 1e-2;
    for flat in Vec::<i64>::try_from(top).unwrap() {
        let analytic = grad.flatten(0, -1).double_value(&[flat]);
        let nudge = |delta: f64| {
            tch::no_grad(|| {
                let flat_view = weight.flatten(0, -1);
                let _ = flat_view
                    .get(flat)
                    .f_add_(&Tensor::from(delta as f32))
                    .unwrap();
            });
            loss(&model, &examples)
        };
        let up = nudge(h);
        let down = nudge(-2.0 * h);
        nudge(h);
        let numeric = (up - down) / (2.0 * h);
        assert!(
            (analytic - numeric).abs() <= 0.02 * analytic.abs().max(1e-3),
            "entry {flat}: analytic {analytic} vs finite difference {numeric}"
        );
    }
}

#[test]
fn the_kl_is_zero_at_the_teachers_distribution() {
    let _generator = common::generator();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = model(&vs);
    let prompt = vec![1u32, 5, 9];
    let answer = vec![10u32, 20];
    // The teacher's labels are the model's own top 4, renormalised: the
    // loss is the mass the model puts outside them, nothing more.
    let seq: Vec<i64> = prompt.iter().chain(&answer).map(|&t| t as i64).collect();
    let tokens = Tensor::from_slice(&seq).view([1, -1]);
    let positions = Tensor::arange(seq.len() as i64, (Kind::Int64, Device::Cpu)).view([1, -1]);
    let logp = tch::no_grad(|| {
        model
            .logits(&model.forward(&tokens, &positions, None, None))
            .log_softmax(-1, Kind::Float)
    });
    let mut ids = Vec::new();
    let mut logprobs = Vec::new();
    let mut outside = 0.0;
    for j in 0..answer.len() as i64 {
        let row = logp.get(0).get(prompt.len() as i64 - 1 + j);
        let (values, index) = row.topk(4, 0, true, true);
        let mass = values.exp().sum(Kind::Double).double_value(&[]);
        outside += -mass.ln();
        ids.extend(
            Vec::<i64>::try_from(&index)
                .unwrap()
                .iter()
                .map(|&i| i as u32),
        );
        logprobs.extend(
            Vec::<f32>::try_from(&values)
                .unwrap()
                .iter()
                .map(|v| v - mass.ln() as f32),
        );
    }
    let example = Example::distilled(
        prompt,
        answer,
        SoftTargets {
            k: 4,
            ids,
            logprobs,
        },
    )
    .unwrap();
    let got = loss(&model, std::slice::from_ref(&example));
    let want = outside / 2.0;
    assert!((got - want).abs() < 1e-4, "KL {got} vs {want}");
}
