#!/usr/bin/env bash
# SmolLM2-135M on this machine's CPU: generation tokens/s at batch 1 and 32,
# and LoRA fine-tuning tokens/s, in subliminal (tch) and in Hugging Face
# transformers + PEFT on the same torch, same threads, same prompt ids and
# training examples. Prints both and their ratios. Each side runs --repeat
# times (default 2); the best figure of each counts.
#   bash bench/llm-vs-transformers.sh [--threads N] [--repeat K]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh >/dev/null
bash scripts/setup-model.sh >/dev/null
bash scripts/setup-reference.sh >/dev/null
source scripts/env.sh
threads=$(nproc); repeat=2
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2;;
    --repeat) repeat="$2"; shift 2;;
    *) echo "unknown option $1 (expected --threads N, --repeat K)" >&2; exit 2;;
  esac
done
cargo bench --quiet --bench llm --no-run 2>/dev/null
mkdir -p bench/out
out=bench/out/llm-vs-transformers.jsonl
workload="$PWD/bench/out/llm-workload.json"
: > "$out"
for i in $(seq "$repeat"); do
  cargo bench --quiet --bench llm -- --threads "$threads" --workload "$workload" | tail -1 >> "$out"
  python bench/llm_transformers.py --threads "$threads" --workload "$workload" \
    --gguf "$SUBLIMINAL_DATA/models/SmolLM2-135M-Instruct.Q4_1.gguf" 2>/dev/null | tail -1 >> "$out"
done
python - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = [("generate_batch1_tokens_per_s", "generation, batch 1", 1.5),
        ("generate_batch32_tokens_per_s", "generation, batch 32", 1.5),
        ("finetune_tokens_per_s", "LoRA fine-tuning", 1.0)]
best = {}
for r in rows:
    b = best.setdefault(r["impl"], {})
    for k, _, _ in keys:
        b[k] = max(b.get(k, 0.0), r[k])
s, t = best["subliminal"], best["transformers"]
print(f"SmolLM2-135M, CPU, {rows[0]['threads']} thread(s), best of {len(rows)//2}; tokens/s")
print(f"{'':24} {'subliminal':>11} {'transformers':>13} {'ratio':>7} {'target':>7}")
for k, name, target in keys:
    print(f"{name:24} {s[k]:11.1f} {t[k]:13.1f} {s[k]/t[k]:7.2f} {'>= ' + str(target):>7}")
PY
