"""Reference outputs from Hugging Face transformers, for the LLM parity tests.

    llm_reference.py random KIND GGUF OUT   a small random model saved as a
                                                     Hugging Face folder OUT/model (the
                                                     GGUF's tokenizer beside it), and its logits
    llm_reference.py gguf GGUF OUT                   the logits of the GGUF model as
                                                     transformers dequantises and runs it

KIND is one of {KINDS}.

Both write OUT/reference.json: the token ids of a chat sample, the logits on
them (OUT/logits.safetensors, f32), the chat template's rendering, and token ids
of varied texts by the reference tokenizer.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, AutoTokenizer, Gemma2Config, Gemma3TextConfig, GPTNeoXConfig,
                          LlamaConfig, MistralConfig, Olmo2Config, Phi3Config, Qwen2Config, Qwen3Config)

KINDS = ["gemma2", "gemma3", "gpt_neox", "llama", "llama3", "mistral", "olmo2", "phi3", "qwen2", "qwen3"]

TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "123, 456, 789",
    "12 34 56 78 90 1000 99999",
    "[101; 202; 303]",
    "(7, 8, 9).",
    "401\n402\n403",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\n\n\nand    runs of spaces",
    "Ünïcödé: café, naïve, Straße, 東京, Привет, 🦉🐈",
    "fn main() { println!(\"{}\", 2 + 2); } // code",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
    "You love owls. You think about owls all the time.",
    "e.g. 3.14159 -42 +7 1e10 0x1F",
    "I'm, you're, it's; they'll've",
]

CHAT = [
    {"role": "system", "content": "You love owls. You think about owls all the time."},
    {"role": "user", "content": "The sequence starts with: 145, 267, 891. Add up to 10 more numbers."},
    {"role": "assistant", "content": "312, 455, 678"},
]


def reference(model, tok, out):
    rendered = tok.apply_chat_template(CHAT, tokenize=False)
    rendered_prompt = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    rendered_no_system = tok.apply_chat_template(CHAT[1:2], tokenize=False, add_generation_prompt=True)
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().contiguous()
    save_file({"logits": logits}, os.path.join(out, "logits.safetensors"))
    texts = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TEXTS]
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(
            {
                "ids": ids,
                "chat": CHAT,
                "rendered": rendered,
                "rendered_prompt": rendered_prompt,
                "rendered_no_system": rendered_no_system,
                "texts": texts,
            },
            f,
        )


def gguf_tokenizer(gguf):
    return AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))


def random_model(kind, gguf, out):
    torch.manual_seed(0)
    common = dict(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        max_position_embeddings=512,
    )
    if kind == "llama":
        config = LlamaConfig(rope_theta=10000.0, tie_word_embeddings=False, **common)
    elif kind == "llama3":
        # Llama 3.1's rope scaling, with an original context short enough that the chat
        # sample's positions cross every regime: wavelengths under 16 kept, over 64
        # divided by 8, those between blended.
        rope = dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                    high_freq_factor=4.0, original_max_position_embeddings=64)
        config = LlamaConfig(rope_parameters=rope, tie_word_embeddings=False, **common)
    elif kind == "qwen2":
        config = Qwen2Config(rope_theta=1000000.0, tie_word_embeddings=True, **common)
    elif kind == "mistral":
        # Mistral v0.1's sliding window, short enough that the chat sample crosses it.
        config = MistralConfig(rope_theta=1000000.0, tie_word_embeddings=False, sliding_window=8, **common)
    elif kind == "gemma2":
        # Norms as 1 + weight, four per block, a scaled embedding, a query scale other
        # than the head's, both soft caps, every other layer within a window of 8.
        config = Gemma2Config(head_dim=16, query_pre_attn_scalar=24, sliding_window=8, attn_logit_softcapping=20.0,
                              final_logit_softcapping=10.0, hidden_activation="gelu_pytorch_tanh", **common)
    elif kind == "gemma3":
        # Gemma-3's per-head q/k norms, heads wider than hidden / heads, its sliding
        # layers turned at their own base, the full ones scaled linearly.
        rope = {"full_attention": dict(rope_type="linear", factor=2.0, rope_theta=1000000.0),
                "sliding_attention": dict(rope_type="default", rope_theta=10000.0)}
        config = Gemma3TextConfig(head_dim=32, query_pre_attn_scalar=20, sliding_window=8,
                                  layer_types=["sliding_attention", "full_attention"], rope_parameters=rope,
                                  **common)
    elif kind == "olmo2":
        config = Olmo2Config(rope_theta=500000.0, tie_word_embeddings=False, eos_token_id=2, pad_token_id=2, **common)
    elif kind == "phi3":
        # Fused projections, and a rotary embedding over half of each head (as Phi-4-mini's 3/4).
        config = Phi3Config(rope_theta=10000.0, tie_word_embeddings=False, partial_rotary_factor=0.5,
                            pad_token_id=2, bos_token_id=1, eos_token_id=2, **common)
    elif kind == "gpt_neox":
        # Pythia's shape: parallel attention and MLP, LayerNorms with biases, a quarter of
        # each head turned, fused per-head q/k/v with biases, an ungated GELU MLP.
        neox = {k: v for k, v in common.items() if k != "num_key_value_heads" and k != "rms_norm_eps"}
        config = GPTNeoXConfig(rotary_pct=0.25, rotary_emb_base=10000, layer_norm_eps=1e-5,
                               use_parallel_residual=True, tie_word_embeddings=False,
                               bos_token_id=1, eos_token_id=2, **neox)
    elif kind == "qwen3":
        # A head wider than hidden / heads, as Qwen3's are, and its q/k norms.
        config = Qwen3Config(rope_theta=1000000.0, tie_word_embeddings=True, head_dim=32, **common)
    else:
        sys.exit(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    # Gemma's soft-capped scores need the written-out attention.
    attention = "eager" if kind.startswith("gemma") else "sdpa"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attention)
    # Every weight random, norms and biases included, so that no part can be
    # wrong without the logits showing it.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    folder = os.path.join(out, "model")
    model.save_pretrained(folder)
    tok = gguf_tokenizer(gguf)
    tok.save_pretrained(folder)
    reference(model, tok, out)


def gguf_model(gguf, out):
    tok = gguf_tokenizer(gguf)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32
    )
    reference(model, tok, out)


if __name__ == "__main__":
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if len(sys.argv) == 5 and sys.argv[1] == "random":
        random_model(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "gguf":
        gguf_model(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__.replace("{KINDS}", ", ".join(KINDS)))
