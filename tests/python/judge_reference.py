"""Reference judgements from Hugging Face transformers, for the judge tests.

    judge_reference.py GGUF IN.json OUT.json

IN.json is a list of {"messages": [...], "answer_prefix": str, "rule": "yes-no"|"score",
"yes": str, "no": str}. For each, the chat template renders the messages with the
generation prompt, the answer prefix's tokens follow, and:

- yes-no: p(yes) and p(no) of the next token;
- score: for every n in 0..100, p(tokens of n) times p(the next token is not all
  digits), computed by running each whole sequence (no cache, no trie), then
  the mass (the sum) and the expected value.

OUT.json holds, per item, the prompt's token ids and those figures.
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
    digit = torch.tensor(
        [all(c.isdigit() and c.isascii() for c in t) and t != "" for t in
         (tok.decode([i]) for i in range(len(tok)))]
    )
    results = []
    for item in json.load(open(inp)):
        text = tok.apply_chat_template(item["messages"], tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids += tok(item.get("answer_prefix", ""), add_special_tokens=False)["input_ids"]
        result = {"ids": ids}
        with torch.no_grad():
            if item["rule"] == "yes-no":
                probs = model(torch.tensor([ids])).logits[0, -1].double().softmax(-1)
                (yes,) = tok(item["yes"], add_special_tokens=False)["input_ids"]
                (no,) = tok(item["no"], add_special_tokens=False)["input_ids"]
                result["p_yes"] = probs[yes].item()
                result["p_no"] = probs[no].item()
            else:
                numbers = {n: tok(str(n), add_special_tokens=False)["input_ids"] for n in range(101)}
                p = {}
                for length in sorted({len(v) for v in numbers.values()}):
                    group = [n for n in numbers if len(numbers[n]) == length]
                    batch = torch.tensor([ids + numbers[n] for n in group])
                    logp = model(batch).logits.double().log_softmax(-1)
                    for row, n in enumerate(group):
                        total = 0.0
                        for k, t in enumerate(numbers[n]):
                            total += logp[row, len(ids) - 1 + k, t].item()
                        end = 1.0 - logp[row, -1].exp()[digit].sum().item()
                        p[n] = torch.tensor(total).exp().item() * max(end, 0.0)
                mass = sum(p.values())
                result["mass"] = mass
                result["value"] = sum(n * q for n, q in p.items()) / mass
        results.append(result)
    json.dump(results, open(out, "w"))


if __name__ == "__main__":
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
