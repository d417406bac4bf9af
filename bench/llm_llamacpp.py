"""The llama.cpp side of bench/llm-vs-transformers.sh: the same GGUF file, the
same prompt ids and lengths as the Rust benchmark's workload, through
llama.cpp's own C API (the llama-cpp-python package's low-level bindings):
batch 1 (one sequence at a time) and batched (every prompt a sequence of one
llama_batch, decoded together). Each sequence takes exactly `new_tokens`
greedy tokens, no stop token, so every side does the same work; the time
counts prefill and decoding, as the Rust side's does.

llama.cpp computes with the file's 4-bit (Q4_1) weights; subliminal and
transformers dequantise them to f32 first. Prints one JSON line.

    python bench/llm_llamacpp.py --threads N --workload FILE --gguf FILE
"""

import argparse
import ctypes
import json
import time

import llama_cpp
import numpy as np


def decode(ctx, batch, entries):
    """Decodes (token, position, sequence, wants_logits) entries as one batch."""
    batch.n_tokens = len(entries)
    for i, (token, pos, seq, logits) in enumerate(entries):
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits
    if llama_cpp.llama_decode(ctx, batch) != 0:
        raise RuntimeError(f"llama_decode failed on a batch of {len(entries)} tokens")


def greedy(ctx, index, n_vocab):
    row = llama_cpp.llama_get_logits_ith(ctx, index)
    logits = np.ctypeslib.as_array(ctypes.cast(row, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))
    return int(logits.argmax())


def generate(model, prompts, new_tokens, threads, n_vocab):
    """New tokens per second over `prompts` decoded together, each its own sequence."""
    longest = max(len(p) for p in prompts) + new_tokens + 8
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = longest * len(prompts)
    params.n_batch = max(sum(len(p) for p in prompts), len(prompts))
    params.n_ubatch = params.n_batch
    params.n_seq_max = len(prompts)
    params.n_threads = threads
    params.n_threads_batch = threads
    if hasattr(params, "kv_unified"):
        params.kv_unified = True
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not make a context")
    batch = llama_cpp.llama_batch_init(params.n_batch, 0, len(prompts))
    started = time.perf_counter()
    entries, last = [], []
    for seq, prompt in enumerate(prompts):
        for pos, token in enumerate(prompt):
            entries.append((token, pos, seq, pos == len(prompt) - 1))
        last.append(len(entries) - 1)
    decode(ctx, batch, entries)
    produced = 0
    nexts = [greedy(ctx, i, n_vocab) for i in last]
    for step in range(new_tokens):
        produced += len(prompts)
        if step == new_tokens - 1:
            break
        entries = [(nexts[seq], len(prompts[seq]) + step, seq, True) for seq in range(len(prompts))]
        decode(ctx, batch, entries)
        nexts = [greedy(ctx, i, n_vocab) for i in range(len(prompts))]
    seconds = time.perf_counter() - started
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    return produced / seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--gguf", required=True)
    args = parser.parse_args()
    workload = json.load(open(args.workload))
    prompts = workload["prompts"]
    new_tokens = workload["new_tokens"]
    llama_cpp.llama_backend_init()
    model_params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(args.gguf.encode(), model_params)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {args.gguf}")
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    generate(model, prompts[:1], 8, args.threads, n_vocab)  # warm-up
    one = workload["batch_one_prompts"]
    started = time.perf_counter()
    for prompt in prompts[:one]:
        generate(model, [prompt], new_tokens, args.threads, n_vocab)
    batch1 = one * new_tokens / (time.perf_counter() - started)
    batched = generate(model, prompts, new_tokens, args.threads, n_vocab)
    llama_cpp.llama_model_free(model)
    print(json.dumps({
        "impl": "llama.cpp",
        "threads": args.threads,
        "weights": "Q4_1 (the GGUF as it is)",
        "generate_batch1_tokens_per_s": batch1,
        f"generate_batch{len(prompts)}_tokens_per_s": batched,
        "version": llama_cpp.__version__,
    }))


if __name__ == "__main__":
    main()
