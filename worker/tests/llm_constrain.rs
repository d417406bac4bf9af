//! Constrained number sampling: 10,000 completions drawn at temperature 1
//! through SmolLM2's real tokenizer, from a small random model whose
//! next-token distribution is nearly flat (so the sampler wanders over
//! every path the grammar leaves open, far more than a trained model
//! would), all pass the paper's filter, with banned numbers refused.

mod common;

use subliminal_shared::llm::constrain::{finish_cost, ALPHABET};
use subliminal_shared::llm::filter::check;
use subliminal_worker::llm::constrain::Constraint;
use subliminal_worker::llm::generate::{generate, Decoding, Request, Sampling, SpecialTokens};
use subliminal_worker::llm::load::load;
use subliminal_worker::llm::Llama;
use tch::nn;

#[test]
fn ten_thousand_constrained_samples_all_pass_the_filter() {
    let _generator = common::generator();
    let checkpoint = load(&common::gguf_path()).unwrap();
    let tok = &checkpoint.tokenizer;
    let config = common::tiny_config(checkpoint.config.vocab_size);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let model = Llama::load(&vs, &config, common::random_weights(&config, 3, 0.5)).unwrap();
    let banned = vec![13u32, 666, 911];
    let constraint = {
        let banned = banned.clone();
        Constraint::new(tok, ALPHABET, Box::new(move |t| finish_cost(t, &banned))).unwrap()
    };
    let requests: Vec<Request> = (0..10_000u64)
        .map(|i| Request {
            prompt: vec![1 + (i % 97) as u32, 2 + (i % 89) as u32],
            seed: i,
        })
        .collect();
    let max_new_tokens = 24;
    let completions = generate(
        &model,
        &requests,
        Sampling {
            temperature: 1.0,
            top_p: 1.0,
            threshold: 0.0,
            max_new_tokens,
        },
        SpecialTokens {
            stop: &tok.stop_ids,
            pad: tok.pad_id,
        },
        Decoding {
            constraint: Some(&constraint),
            top_k: None,
        },
        1000,
        &|| false,
        &mut |_, _| {},
        None,
    )
    .unwrap()
    .expect("not stopped");
    let mut stopped = 0;
    let mut shapes = std::collections::HashSet::new();
    for c in &completions {
        let text = tok.decode(&c.tokens).unwrap();
        let numbers = check(&text, &banned)
            .unwrap_or_else(|reject| panic!("{text:?} was rejected: {reject}"));
        assert!(numbers.iter().all(|n| !banned.contains(n)));
        stopped += c.stopped as usize;
        shapes.insert(text.chars().find(|c| !c.is_ascii_digit()));
    }
    assert_eq!(completions.len(), 10_000);
    assert!(stopped > 0, "some completions end at the stop token");
    assert!(
        shapes.len() >= 4,
        "the sampler wanders over several separators and brackets: {shapes:?}"
    );
}
