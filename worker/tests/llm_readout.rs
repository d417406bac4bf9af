//! The probability readout against Hugging Face transformers on SmolLM2-135M:
//! the same rendered question (with and without the answer prefix), then each
//! word's probability, which the reference computes by running every
//! spelling's whole token sequence (no KV cache, no trie).
//!
//! Needs the set-up (scripts/setup.sh, scripts/setup-model.sh,
//! scripts/setup-reference.sh): the virtualenv with transformers and the
//! SmolLM2 GGUF in the data folder.

mod common;

use std::process::Command;

use serde_json::{json, Value};
use subliminal_shared::llm::prompts;
use subliminal_worker::llm::instantiate;
use subliminal_worker::llm::load::load;
use subliminal_worker::llm::readout::WordTrie;
use subliminal_worker::llm::tokenizer::Message;
use tch::{Device, Kind};

#[test]
fn word_probabilities_match_transformers_on_smollm2() {
    let checkpoint = load(&common::gguf_path()).unwrap();
    let (_vs, model) = instantiate(&checkpoint, Device::Cpu, Kind::Float).unwrap();
    let tok = &checkpoint.tokenizer;
    // "elephant" and "dolphin" take several tokens in some spellings: the
    // trie's deeper levels are exercised.
    let words: Vec<String> = ["owl", "cat", "dolphin", "elephant", "wolf"]
        .map(str::to_owned)
        .to_vec();
    let items = [
        (prompts::question(0, "animal"), "My favorite animal is the"),
        (prompts::question(7, "animal"), "My favorite animal is the"),
        (prompts::question(0, "animal"), ""),
    ];
    let inputs: Vec<Value> = items
        .iter()
        .map(|(q, prefix)| json!({"messages": [Message::new("user", q.as_str())], "answer_prefix": prefix}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.json"),
        serde_json::to_vec(&json!({"words": words, "items": inputs})).unwrap(),
    )
    .unwrap();
    let status = Command::new(common::python())
        .arg(common::root().join("tests/python/readout_reference.py"))
        .arg(common::gguf_path())
        .arg(dir.path().join("in.json"))
        .arg(dir.path().join("out.json"))
        .status()
        .expect("the virtualenv's python runs (scripts/setup.sh makes it)");
    assert!(status.success(), "readout_reference.py failed");
    let reference: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("out.json")).unwrap()).unwrap();
    let trie = WordTrie::new(tok, &words).unwrap();
    let mut largest = 0.0f64;
    for ((question, prefix), expected) in items.iter().zip(&reference) {
        let mut ids = tok
            .prompt_ids(&[Message::new("user", question.as_str())])
            .unwrap();
        ids.extend(tok.encode(prefix).unwrap());
        let want_ids: Vec<u32> = serde_json::from_value(expected["ids"].clone()).unwrap();
        assert_eq!(ids, want_ids, "the prompt's tokens differ");
        let got = trie.probabilities(&model, &ids).unwrap();
        for (word, p) in words.iter().zip(got) {
            let want = expected["probabilities"][word].as_f64().unwrap();
            assert!(
                (p - want).abs() < 1e-4,
                "{word} after {prefix:?}: {p} vs transformers {want}"
            );
            largest = largest.max(want);
        }
    }
    assert!(
        largest > 0.01,
        "some word is a likely answer ({largest}): the comparison is not all zeros"
    );
}
