"""Reference completion log-probabilities from Hugging Face transformers, for the likelihood test.

    likelihood_reference.py GGUF IN.json OUT.json

IN.json is a list of {"messages": [...], "prompt": [ids], "completion": [ids]}. The
prompt ids must be what the chat template renders for the messages with the generation
prompt (checked); the completion's ids follow them. OUT.json is, per item, the sum over
the completion's tokens of log p(token | everything before it), one whole sequence each.
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(gguf, inp, out):
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32
    )
    model.eval()
    results = []
    for item in json.load(open(inp)):
        text = tok.apply_chat_template(item["messages"], tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if ids != item["prompt"]:
            sys.exit(f"the prompt's tokens differ: {ids} vs {item['prompt']}")
        full = ids + item["completion"]
        with torch.no_grad():
            logp = model(torch.tensor([full])).logits[0].double().log_softmax(-1)
        total = sum(logp[len(ids) - 1 + j, t].item() for j, t in enumerate(item["completion"]))
        results.append(total)
    json.dump(results, open(out, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:])
