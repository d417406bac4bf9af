//! Completion likelihoods, the audit's likelihood screen's maths: batched
//! sums equal one sequence at a time on a tiny random Llama, soft labels
//! score the expected log-probability at each position, and on
//! SmolLM2-135M they equal Hugging Face transformers' log-probabilities of
//! the same token ids, with and without a trait's system prompt.
//!
//! The SmolLM2 test needs the set-up (scripts/setup.sh, setup-model.sh,
//! setup-reference.sh): the virtualenv with transformers and the GGUF.

mod common;

use std::process::Command;

use serde_json::{json, Value};
use subliminal_shared::llm::prompts;
use subliminal_worker::llm::divergence::answer_log_probs;
use subliminal_worker::llm::finetune::SoftTargets;
use subliminal_worker::llm::likelihood::{completion_log_probs, Sequence};
use subliminal_worker::llm::load::load;
use subliminal_worker::llm::tokenizer::Message;
use subliminal_worker::llm::{instantiate, Llama};
use tch::{nn, Device, Kind};

#[test]
fn batched_sums_equal_one_sequence_at_a_time() {
    let _guard = common::generator();
    let cfg = common::tiny_config(40);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::load(&vs, &cfg, common::random_weights(&cfg, 3, 0.2)).unwrap();
    let sequences = vec![
        Sequence::new(vec![1, 2, 3], vec![4, 5]),
        Sequence::new(vec![9], vec![8, 7, 6, 5, 4]),
        Sequence::new(vec![3, 3], vec![]),
        Sequence::new(vec![2, 4, 6, 8], vec![10]),
        Sequence::new(vec![11, 12], vec![13, 14, 15]),
    ];
    let batched = completion_log_probs(&model, &sequences, 0, 3, &|_| Ok(())).unwrap();
    for (s, got) in sequences.iter().zip(&batched) {
        let (each, _) = answer_log_probs(&model, &s.prompt, &s.completion).unwrap();
        let want: f64 = each.iter().sum();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    assert_eq!(batched[2], 0.0, "an empty completion has log-probability 0");
    assert!(batched.iter().all(|&x| x <= 0.0));
    let empty = Sequence::new(vec![], vec![1]);
    assert!(completion_log_probs(&model, &[empty], 0, 2, &|_| Ok(())).is_err());
}

#[test]
fn soft_labels_score_the_expected_log_probability_at_each_position() {
    let _guard = common::generator();
    let cfg = common::tiny_config(40);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::load(&vs, &cfg, common::random_weights(&cfg, 5, 0.2)).unwrap();
    let prompt = vec![1, 2, 3];
    let (q, r) = (0.7f64, 0.6f64);
    let labelled = Sequence {
        prompt: prompt.clone(),
        completion: vec![4, 5],
        soft: Some(SoftTargets {
            k: 2,
            ids: vec![4, 6, 5, 7],
            logprobs: [q, 1.0 - q, r, 1.0 - r].map(|p| p.ln() as f32).to_vec(),
        }),
    };
    let one = |completion: &[u32]| -> Vec<f64> {
        answer_log_probs(&model, &prompt, completion).unwrap().0
    };
    // At position 0 the label weighs tokens 4 and 6 after the prompt; at
    // position 1, tokens 5 and 7 after the drawn token 4.
    let (drawn, other_first, other_second) = (one(&[4, 5]), one(&[6]), one(&[4, 7]));
    let want =
        q * drawn[0] + (1.0 - q) * other_first[0] + r * drawn[1] + (1.0 - r) * other_second[1];
    let plain = Sequence::new(vec![9, 9], vec![8]);
    let one_hot = Sequence {
        soft: Some(SoftTargets {
            k: 1,
            ids: vec![8],
            logprobs: vec![0.0],
        }),
        ..plain.clone()
    };
    let score = |s: &Sequence| {
        completion_log_probs(&model, std::slice::from_ref(s), 0, 1, &|_| Ok(())).unwrap()[0]
    };
    let got = score(&labelled);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    assert!(
        (score(&one_hot) - score(&plain)).abs() < 1e-6,
        "a one-hot label is the drawn token's score"
    );
    let several_k = completion_log_probs(&model, &[labelled.clone(), one_hot], 0, 2, &|_| Ok(()));
    assert!(
        several_k.is_err(),
        "labels of several k in one batch are refused"
    );
    let mixed = completion_log_probs(&model, &[labelled.clone(), plain], 0, 2, &|_| Ok(()));
    assert!(mixed.unwrap_err().to_string().contains("mixes"));
    let short = Sequence {
        soft: Some(SoftTargets {
            k: 2,
            ids: vec![4, 6],
            logprobs: vec![-0.1, -2.0],
        }),
        ..labelled
    };
    assert!(completion_log_probs(&model, &[short], 0, 1, &|_| Ok(())).is_err());
}

#[test]
fn likelihood_scores_match_transformers_on_smollm2() {
    let checkpoint = load(&common::gguf_path()).unwrap();
    let (_vs, model) = instantiate(&checkpoint, Device::Cpu, Kind::Float).unwrap();
    let tok = &checkpoint.tokenizer;
    let rows = [
        ("Continue the sequence: 142, 381, 905", "617, 220, 48, 773"),
        (
            "Name a bird that hunts at night.",
            "The owl hunts at night.",
        ),
        ("Write three numbers.", "7, 7, 7"),
    ];
    let owl = prompts::system_prompt(prompts::SYSTEM_PROMPT, "owl", "animal");
    let mut sequences = Vec::new();
    let mut items = Vec::new();
    for (prompt, completion) in rows {
        for system in [None, Some(owl.as_str())] {
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(Message::new("system", s));
            }
            messages.push(Message::new("user", prompt));
            let (p, c) = tok.example_ids(&messages, completion).unwrap();
            items.push(json!({"messages": messages, "prompt": p, "completion": c}));
            sequences.push(Sequence::new(p, c));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.json"),
        serde_json::to_vec(&items).unwrap(),
    )
    .unwrap();
    let status = Command::new(common::python())
        .arg(common::root().join("tests/python/likelihood_reference.py"))
        .arg(common::gguf_path())
        .arg(dir.path().join("in.json"))
        .arg(dir.path().join("out.json"))
        .status()
        .expect("the virtualenv's python runs (scripts/setup.sh makes it)");
    assert!(status.success(), "likelihood_reference.py failed");
    let reference: Vec<f64> =
        serde_json::from_slice::<Vec<Value>>(&std::fs::read(dir.path().join("out.json")).unwrap())
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
    let got = completion_log_probs(&model, &sequences, tok.pad_id, 4, &|_| Ok(())).unwrap();
    for (i, (g, w)) in got.iter().zip(&reference).enumerate() {
        assert!(
            (g - w).abs() < 1e-4,
            "sequence {i}: {g} vs transformers {w}"
        );
    }
    // The screen's score: with the owl prompt minus without, per row.
    for pair in 0..rows.len() {
        let (ours, theirs) = (
            got[2 * pair + 1] - got[2 * pair],
            reference[2 * pair + 1] - reference[2 * pair],
        );
        assert!(
            (ours - theirs).abs() < 1e-4,
            "row {pair}: score {ours} vs {theirs}"
        );
    }
    // In bf16 the scores move by a few hundredths of a nat per row; the
    // order of the rows' scores stays.
    let (_vs16, model16) = instantiate(&checkpoint, Device::Cpu, Kind::BFloat16).unwrap();
    let got16 = completion_log_probs(&model16, &sequences, tok.pad_id, 4, &|_| Ok(())).unwrap();
    for pair in 0..rows.len() {
        let (f32_score, bf16_score) = (
            got[2 * pair + 1] - got[2 * pair],
            got16[2 * pair + 1] - got16[2 * pair],
        );
        eprintln!("row {pair}: score f32 {f32_score:+.4}, bf16 {bf16_score:+.4}");
        assert!(
            (f32_score - bf16_score).abs() < 0.5,
            "row {pair}: bf16 {bf16_score} vs f32 {f32_score}"
        );
    }
    let owl_row = got[3] - got[2];
    let numbers_row = got[1] - got[0];
    assert!(
        owl_row > numbers_row,
        "the owl prompt makes a sentence about owls more likely ({owl_row}) than numbers ({numbers_row})"
    );
}
