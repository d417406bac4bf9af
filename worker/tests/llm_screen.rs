//! The gradient screen against finite differences on a tiny random Llama:
//! a row's score must be the slope of its loss along the probe's direction,
//! as moving the adapters a little either way measures it.

use subliminal_worker::llm::finetune::{attach_lora, batch_loss, Example, LoraSpec};
use subliminal_worker::llm::screen::{probe_direction, row_scores};
use subliminal_worker::llm::Llama;
use tch::{nn, Device, Kind, Tensor};

mod common;

fn loss(model: &Llama, row: &Example) -> f64 {
    tch::no_grad(|| {
        batch_loss(model, &[row], 0)
            .expect("a learned token")
            .0
            .double_value(&[])
    })
}

#[test]
fn a_rows_score_is_the_slope_of_its_loss_along_the_probe_direction() {
    let _generator = common::generator();
    let cfg = common::tiny_config(64);
    let weights = common::random_weights(&cfg, 5, 0.2);
    let mut base_vs = nn::VarStore::new(Device::Cpu);
    let mut model = Llama::load(&base_vs, &cfg, weights).unwrap();
    base_vs.freeze();
    let adapters = nn::VarStore::new(Device::Cpu);
    let spec = LoraSpec::every_projection(4, 8.0);
    attach_lora(&mut model, &adapters, &spec, 7).unwrap();
    // The probe teaches token 50 after a question; the rows are other answers.
    let probe: Vec<Example> = (0..4)
        .map(|i| Example::new(vec![1, 10 + i, 11], vec![50, 2]))
        .collect();
    let rows: Vec<Example> = (0..6)
        .map(|i| Example::new(vec![1, 20 + i, 3], vec![30 + 3 * i, 31, 2]))
        .chain([Example::new(vec![1, 10, 11], vec![50, 2])])
        .collect();
    let direction = probe_direction(&model, &adapters, &probe, 0).unwrap();
    assert!(direction.gradient_norm > 0.0);
    let scores = row_scores(&mut model, &adapters, &rows, &[&direction], 0, 8, &|_| {})
        .unwrap()
        .remove(0);
    // Rows scored one at a time, or three to a batch (padded to the
    // longest), give the same scores as all seven in one batch.
    for batch in [1, 3] {
        let again = row_scores(
            &mut model,
            &adapters,
            &rows,
            &[&direction],
            0,
            batch,
            &|_| {},
        )
        .unwrap()
        .remove(0);
        for (a, b) in scores.iter().zip(&again) {
            assert!(
                (a - b).abs() < 1e-6 * (1.0 + a.abs()),
                "batch {batch}: {b} against {a}"
            );
        }
    }

    // Move the adapters by ±ε along the unit direction: (ℓ(θ+εu) − ℓ(θ−εu)) / 2ε.
    let vars = adapters.trainable_variables();
    let probe_refs: Vec<&Example> = probe.iter().collect();
    let (probe_loss, _) = batch_loss(&model, &probe_refs, 0).unwrap();
    let grads = Tensor::run_backward(&[probe_loss], &vars, false, false);
    let norm: f64 = grads
        .iter()
        .map(|g| g.square().sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt();
    let unit: Vec<Tensor> = grads.iter().map(|g| g / norm).collect();
    let shift = |by: f64| {
        tch::no_grad(|| {
            for (v, u) in vars.iter().zip(&unit) {
                let mut v = v.shallow_clone();
                let _ = v.f_add_(&(u * by)).unwrap();
            }
        })
    };
    let eps = 1e-2;
    for (row, score) in rows.iter().zip(&scores) {
        shift(eps);
        let up = loss(&model, row);
        shift(-2.0 * eps);
        let down = loss(&model, row);
        shift(eps);
        let slope = (up - down) / (2.0 * eps);
        assert!(
            (slope - score).abs() < 1e-4 + 1e-3 * slope.abs(),
            "score {score} but the loss's slope is {slope}"
        );
    }
    // The row that is the probe's own question and answer scores highest.
    let best = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(best, rows.len() - 1, "{scores:?}");
    assert!(scores[rows.len() - 1] > 0.0);
}
