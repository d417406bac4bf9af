"""One LoRA step by transformers + PEFT, for the LLM parity tests.

    lora_reference.py MODEL ADAPTERS EXAMPLES OUT

MODEL is a Hugging Face folder; ADAPTERS a safetensors file of LoRA weights
under the tool's names (`model.layers.N.self_attn.q_proj.lora_A.weight`: the
module names of the Llama family, which GPT-NeoX's are mapped from); EXAMPLES
a JSON file of {"examples": [{"prompt": ids, "answer": ids}], "lr", "weight_decay",
"max_grad_norm", "rank", "alpha", "pad"}. PEFT attaches adapters of that rank
and alpha to the same modules, takes their values from ADAPTERS, and makes one
AdamW step on the mean cross-entropy of the answer tokens, all examples in one
batch, right-padded. OUT/lora.json holds the loss; OUT/lora.safetensors each
adapter's gradient (`grad.NAME`, before clipping) and value after the step
(`after.NAME`), under the tool's names.
"""
import json
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

# GPT-NeoX's module names for the Llama-family names the tool uses.
NEOX = {
    "self_attn.o_proj": "attention.dense",
    "mlp.up_proj": "mlp.dense_h_to_4h",
    "mlp.down_proj": "mlp.dense_4h_to_h",
}


def hf_module(model_type, name):
    """The reference's module path for the tool's `model.layers.N.<module>`."""
    if model_type != "gpt_neox":
        return name
    layer, module = name.removeprefix("model.layers.").split(".", 1)
    if module not in NEOX:
        sys.exit(f"{name}: GPT-NeoX has no separate {module} (its q, k and v are fused)")
    return f"gpt_neox.layers.{layer}.{NEOX[module]}"


def main(model_dir, adapters_file, examples_file, out):
    torch.manual_seed(0)
    with open(examples_file) as f:
        spec = json.load(f)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model_type = model.config.model_type
    if model_type.startswith("gemma"):
        model.config._attn_implementation = "eager"
    adapters = load_file(adapters_file)
    modules = sorted({n.rsplit(".lora_", 1)[0] for n in adapters})
    leaves = sorted({hf_module(model_type, m).rsplit(".", 1)[1] for m in modules})
    config = LoraConfig(r=spec["rank"], lora_alpha=spec["alpha"], lora_dropout=0.0, target_modules=leaves,
                        bias="none")
    peft = get_peft_model(model, config)
    params = {}
    with torch.no_grad():
        for module in modules:
            layer = peft.get_submodule("base_model.model." + hf_module(model_type, module))
            for side, ab in (("A", layer.lora_A), ("B", layer.lora_B)):
                weight = ab["default"].weight
                weight.copy_(adapters[f"{module}.lora_{side}.weight"])
                params[f"{module}.lora_{side}.weight"] = weight
    attached = sum(p.requires_grad for p in peft.parameters())
    if attached != len(params):
        sys.exit(f"PEFT attached {attached} adapter tensors, the tool {len(params)}")

    examples = spec["examples"]
    width = max(len(e["prompt"]) + len(e["answer"]) for e in examples)
    ids, rows, cols, targets = [], [], [], []
    for r, e in enumerate(examples):
        seq = e["prompt"] + e["answer"]
        ids.append(seq + [spec["pad"]] * (width - len(seq)))
        for j, t in enumerate(e["answer"]):
            rows.append(r)
            cols.append(len(e["prompt"]) + j - 1)
            targets.append(t)
    peft.train()
    logits = peft(torch.tensor(ids)).logits[rows, cols]
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(targets))
    loss.backward()
    tensors = {f"grad.{n}": p.grad.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=spec["lr"], betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=spec["weight_decay"])
    torch.nn.utils.clip_grad_norm_(list(params.values()), spec["max_grad_norm"])
    opt.step()
    tensors.update({f"after.{n}": p.detach().clone().contiguous() for n, p in params.items()})
    save_file(tensors, os.path.join(out, "lora.safetensors"))
    with open(os.path.join(out, "lora.json"), "w") as f:
        json.dump({"loss": loss.item()}, f)


if __name__ == "__main__":
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
