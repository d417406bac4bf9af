"""Reference word probabilities from Hugging Face transformers, for the readout test.

    readout_reference.py GGUF IN.json OUT.json

IN.json is {"words": [...], "items": [{"messages": [...], "answer_prefix": str}, ...]}.
For each item the chat template renders the messages with the generation prompt and
the answer prefix's tokens follow. A word is spelled 18 ways (singular, +"s", +"es";
lower, title and upper case; with and without a leading space); each spelling's
token sequence is kept once, and one that begins with another spelling's tokens is
left out. The word's probability is the sum over its spellings of the product of
their tokens' probabilities, each spelling run as one whole sequence (no cache, no
trie).

OUT.json holds, per item, the prompt's token ids and {word: probability}.
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def spellings(word):
    out = []
    for surface in (word, word + "s", word + "es"):
        for form in (surface, surface[:1].upper() + surface[1:], surface.upper()):
            for space in ("", " "):
                if space + form not in out:
                    out.append(space + form)
    return out


def sequences(tok, word):
    seqs = []
    for s in spellings(word):
        ids = tok(s, add_special_tokens=False)["input_ids"]
        if ids not in seqs:
            seqs.append(ids)
    return [a for a in seqs if not any(len(b) < len(a) and a[: len(b)] == b for b in seqs)]


def main(gguf, inp, out):
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32
    )
    model.eval()
    spec = json.load(open(inp))
    results = []
    for item in spec["items"]:
        text = tok.apply_chat_template(item["messages"], tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids += tok(item["answer_prefix"], add_special_tokens=False)["input_ids"]
        probs = {}
        with torch.no_grad():
            for word in spec["words"]:
                total = 0.0
                for seq in sequences(tok, word):
                    logp = model(torch.tensor([ids + seq])).logits[0].double().log_softmax(-1)
                    s = sum(logp[len(ids) - 1 + k, t].item() for k, t in enumerate(seq))
                    total += torch.tensor(s, dtype=torch.float64).exp().item()
                probs[word] = total
        results.append({"ids": ids, "probabilities": probs})
    json.dump(results, open(out, "w"))


if __name__ == "__main__":
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
