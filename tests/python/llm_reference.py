"""Reference outputs from Hugging Face transformers, for the LLM parity tests.

    llm_reference.py random KIND GGUF OUT   a small random model saved as a
                                                     Hugging Face folder OUT/model (the
                                                     GGUF's tokenizer beside it), and its logits
    llm_reference.py gguf GGUF OUT                   the logits of the GGUF model as
                                                     transformers dequantises and runs it
    llm_reference.py gguf-random ARCH GGUF OUT       a small random model of llama.cpp's
                                                     ARCH written as OUT/model.gguf in f32,
                                                     as llama.cpp's converter writes it,
                                                     and its logits as transformers reads it

KIND is one of {KINDS}; ARCH one of {ARCHS}.

Both write OUT/reference.json: the token ids of a chat sample, the logits on
them (OUT/logits.safetensors, f32), the chat template's rendering, and token ids
of varied texts by the reference tokenizer.
"""
import json
import os
import sys

import gguf
import torch
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, AutoTokenizer, Gemma2Config, Gemma3TextConfig, GPTNeoXConfig,
                          LlamaConfig, MistralConfig, Olmo2Config, Phi3Config, Qwen2Config, Qwen3Config)

ARCHS = ["gemma2", "gemma3", "llama", "phi3", "qwen2", "qwen3"]
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


def gguf_config(arch):
    """A config whose every hyperparameter a GGUF file can state (transformers reads it back)."""
    common = dict(vocab_size=49152, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=512)
    if arch == "llama":
        return LlamaConfig(rope_theta=10000.0, tie_word_embeddings=False, **common)
    if arch == "qwen2":
        return Qwen2Config(rope_theta=1000000.0, tie_word_embeddings=True, **common)
    if arch == "qwen3":
        # transformers' GGUF reader takes Qwen3's head width from its default (128), not the file.
        return Qwen3Config(rope_theta=1000000.0, tie_word_embeddings=True, head_dim=128, **common)
    if arch == "phi3":
        return Phi3Config(rope_theta=10000.0, tie_word_embeddings=False, pad_token_id=2, bos_token_id=1,
                          eos_token_id=2, **common)
    # Gemma's query scale is the head's width in llama.cpp, 256 in transformers' GGUF reader:
    # heads of 256 agree with both.
    if arch == "gemma2":
        return Gemma2Config(head_dim=256, query_pre_attn_scalar=256, sliding_window=8, **common)
    if arch == "gemma3":
        # Six layers: five slide, the sixth attends to everything.
        return Gemma3TextConfig(head_dim=256, query_pre_attn_scalar=256, sliding_window=8,
                                **{**common, "num_hidden_layers": 6})
    sys.exit(f"unknown GGUF architecture {arch!r}: expected one of {', '.join(ARCHS)}")


def llama_permute(w, heads):
    """llama.cpp's interleaving of each head's rotary halves in q and k (its converter's `permute`)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, arch, tokenizer_gguf, path):
    """The model as llama.cpp's converter would write it, in f32, with the tokenizer of `tokenizer_gguf`."""
    cfg = model.config
    kind = gguf.MODEL_ARCH[arch.upper()]
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[kind])
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    rope = cfg.rope_parameters.get("full_attention", cfg.rope_parameters)
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if arch.startswith("gemma"):
        w.add_sliding_window(cfg.sliding_window)
    if arch == "gemma2":
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    reader = gguf.GGUFReader(tokenizer_gguf)
    for field in reader.fields.values():
        if field.name.startswith("tokenizer."):
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    names = gguf.get_tensor_name_map(kind, cfg.num_hidden_layers)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = t.detach().float().numpy()
        if arch == "llama" and name.endswith("q_proj.weight"):
            data = llama_permute(data, heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            data = llama_permute(data, kv_heads)
        elif arch.startswith("gemma") and name.endswith("norm.weight"):
            data = data + 1
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            sys.exit(f"{name} has no llama.cpp name for {arch}")
        w.add_tensor(new, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_random(arch, tokenizer_gguf, out):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(gguf_config(arch), dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    path = os.path.join(out, "model.gguf")
    write_gguf(model, arch, tokenizer_gguf, path)
    read = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32,
                                                attn_implementation="eager")
    # transformers reads back what was written: the file is as llama.cpp's.
    ids = torch.arange(2, 40).unsqueeze(0)
    model.eval()
    read.eval()
    with torch.no_grad():
        diff = (model(ids).logits - read(ids).logits).abs().max().item()
    if diff > 1e-4:
        sys.exit(f"transformers reads the written {arch} GGUF back with logits {diff} away")
    reference(read, gguf_tokenizer(path), out)


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
    elif len(sys.argv) == 5 and sys.argv[1] == "gguf-random":
        gguf_random(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__.replace("{KINDS}", ", ".join(KINDS)).replace("{ARCHS}", ", ".join(ARCHS)))
