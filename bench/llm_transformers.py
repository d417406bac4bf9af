"""The work of `cargo bench --bench llm`, through Hugging Face transformers
(and PEFT for LoRA) on the same torch: SmolLM2-135M from the same GGUF, the
same prompt token ids, the same number of new tokens, the same training
examples and settings. Prints one JSON line of figures.

    python bench/llm_transformers.py --workload FILE --gguf FILE [--threads N] [--dtype f32|bf16]

With `--dtype bf16` the model's weights are bf16; PEFT keeps the LoRA
adapters (and so AdamW's state) in f32, as subliminal's `--precision bf16`
does.
"""
import argparse
import json
import os
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def generate_rate(model, prompts, pad_id, new_tokens, batch):
    torch.manual_seed(0)
    produced = 0
    started = time.perf_counter()
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=pad_id,
            )
        produced += (out.shape[1] - width) * len(chunk)
    return produced / (time.perf_counter() - started)


def finetune_rate(model, examples, pad_id, batch):
    config = LoraConfig(
        r=8,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(model, config)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.0)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    tokens = 0
    started = time.perf_counter()
    for i in range(0, len(order), batch):
        rows = [examples[j] for j in order[i : i + batch]]
        width = max(len(r["prompt"]) + len(r["answer"]) for r in rows)
        ids, labels = [], []
        for r in rows:
            seq = r["prompt"] + r["answer"]
            pad = width - len(seq)
            ids.append(seq + [pad_id] * pad)
            labels.append([-100] * len(r["prompt"]) + r["answer"] + [-100] * pad)
            tokens += len(seq)
        out = model(input_ids=torch.tensor(ids), labels=torch.tensor(labels))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad()
    return tokens / (time.perf_counter() - started)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = json.load(open(args.workload))
    folder, name = os.path.split(args.gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    if args.dtype == "bf16":
        model = model.to(torch.bfloat16)
    model.eval()
    prompts, pad, n = work["prompts"], work["pad_id"], work["new_tokens"]
    generate_rate(model, prompts[:1], pad, n, 1)  # warm-up
    gen_1 = generate_rate(model, prompts[: work["batch_one_prompts"]], pad, n, 1)
    gen_32 = generate_rate(model, prompts, pad, n, len(prompts))
    tune = finetune_rate(model, work["examples"], pad, work["train_batch"])
    print(
        json.dumps(
            {
                "impl": "transformers",
                "precision": "BFloat16" if args.dtype == "bf16" else "Float",
                "threads": args.threads,
                "generate_batch1_tokens_per_s": gen_1,
                "generate_batch32_tokens_per_s": gen_32,
                "finetune_tokens_per_s": tune,
            }
        )
    )


if __name__ == "__main__":
    main()
