//! The divergence mask on two small random Llamas: it marks exactly the
//! answer tokens where the two models' greedy choices differ, each choice
//! recomputed here prefix by prefix (a forward pass per position, no
//! shared computation with the one-pass code under test).

use subliminal_worker::llm::divergence::{divergent_tokens, greedy_choices};
use subliminal_worker::llm::model::Weights;
use subliminal_worker::llm::Llama;
use tch::{nn, Device, Kind, Tensor};

mod common;

/// The base model, and a "teacher": the same weights with one MLP nudged,
/// so that the two agree on some tokens and not on others.
fn models() -> ((nn::VarStore, Llama), (nn::VarStore, Llama)) {
    let cfg = common::tiny_config(16);
    let base = common::random_weights(&cfg, 0, 0.3);
    let nudge = common::random_weights(&cfg, 1, 0.3);
    let mut teacher = common::copy(&base);
    let key = "model.layers.1.mlp.down_proj.weight";
    teacher.insert(key.into(), &base[key] + &nudge[key] * 2.0);
    let load = |w: Weights| {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Llama::load(&vs, &cfg, w).unwrap();
        (vs, model)
    };
    (load(base), load(teacher))
}

/// The greedy next token after `prefix`, from a forward pass over it alone.
fn next_token(model: &Llama, prefix: &[u32]) -> i64 {
    let ids: Vec<i64> = prefix.iter().map(|&t| t as i64).collect();
    let n = ids.len() as i64;
    let tokens = Tensor::from_slice(&ids).view([1, n]);
    let positions = Tensor::arange(n, (Kind::Int64, Device::Cpu)).view([1, n]);
    tch::no_grad(|| {
        let hidden = model.forward(&tokens, &positions, None, None);
        model
            .logits(&hidden.select(1, n - 1))
            .argmax(-1, false)
            .int64_value(&[0])
    })
}

#[test]
fn the_mask_marks_exactly_the_tokens_where_two_models_choose_differently() {
    let _generator = common::generator();
    let ((_b, base), (_t, teacher)) = models();
    let mut disagreements = 0;
    let mut agreements = 0;
    for row in 0..6u32 {
        let base_prompt: Vec<u32> = vec![1, 2 + row % 5, 7, 3];
        // The teacher sees its own context first, as a system prompt would put it.
        let teacher_prompt: Vec<u32> = [vec![9, 9, 4], base_prompt.clone()].concat();
        let answer: Vec<u32> = (0..12).map(|j| (row * 7 + j * 3) % 16).collect();
        let mask =
            divergent_tokens(&teacher, &teacher_prompt, &base, &base_prompt, &answer).unwrap();
        assert_eq!(mask.len(), answer.len());
        for j in 0..answer.len() {
            let t = next_token(&teacher, &[&teacher_prompt[..], &answer[..j]].concat());
            let b = next_token(&base, &[&base_prompt[..], &answer[..j]].concat());
            assert_eq!(
                mask[j],
                t != b,
                "row {row}, answer token {j}: teacher {t}, base {b}"
            );
            if t != b {
                disagreements += 1;
            } else {
                agreements += 1;
            }
        }
    }
    // The test means something only if both cases occur.
    assert!(
        disagreements > 0 && agreements > 0,
        "{disagreements} / {agreements}"
    );
    // A model never diverges from itself.
    let same = divergent_tokens(&base, &[1, 2, 3], &base, &[1, 2, 3], &[4, 5, 6, 7]).unwrap();
    assert_eq!(same, vec![false; 4]);
    assert!(
        greedy_choices(&base, &[], &[1]).is_err(),
        "an empty prompt is refused"
    );
}
