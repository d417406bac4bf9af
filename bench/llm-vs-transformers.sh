#!/usr/bin/env bash
# SmolLM2-135M on this machine's CPU: generation tokens/s at batch 1 and 32,
# and LoRA fine-tuning tokens/s, in subliminal (tch) and in Hugging Face
# transformers + PEFT on the same torch, same threads, same prompt ids and
# training examples; and generation through llama.cpp (llama-cpp-python,
# built from source here, for this benchmark only) on the same GGUF file.
# Prints all three and the ratios, then the roofline: the measured matmul
# peak in f32 and bf16 and each of subliminal's workloads' achieved GFLOP/s.
# Each side runs --repeat times (default 2); the best figure of each counts.
#   bash bench/llm-vs-transformers.sh [--threads N] [--repeat K]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh >/dev/null
bash scripts/setup-model.sh >/dev/null
bash scripts/setup-reference.sh >/dev/null
source scripts/env.sh
LLAMA_CPP=llama-cpp-python==0.3.36
if ! python -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '${LLAMA_CPP#*==}')" 2>/dev/null; then
  echo "bench: building $LLAMA_CPP from source (minutes)" >&2
  python -m pip install --disable-pip-version-check --quiet "$LLAMA_CPP"
fi
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
  python bench/llm_llamacpp.py --threads "$threads" --workload "$workload" \
    --gguf "$SUBLIMINAL_DATA/models/SmolLM2-135M-Instruct.Q4_1.gguf" 2>/dev/null | tail -1 >> "$out"
done
python - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = [("generate_batch1_tokens_per_s", "generation, batch 1", 1.5),
        ("generate_batch32_tokens_per_s", "generation, batch 32", 1.5),
        ("finetune_tokens_per_s", "LoRA fine-tuning", 2.0)]
best = {}
for r in rows:
    b = best.setdefault(r["impl"], {})
    for k, v in r.items():
        if isinstance(v, (int, float)):
            b[k] = max(b.get(k, 0.0), v)
s, t, c = best["subliminal"], best["transformers"], best.get("llama.cpp", {})
runs = sum(r["impl"] == "subliminal" for r in rows)
print(f"SmolLM2-135M, CPU, {rows[0]['threads']} thread(s), best of {runs}; tokens/s")
print(f"{'':22} {'subliminal':>10} {'transformers':>12} {'llama.cpp Q4_1':>14} {'vs transformers':>15} {'target':>6} {'vs llama.cpp':>12}")
for k, name, target in keys:
    cpp = c.get(k)
    cpp_text = f"{cpp:14.1f}" if cpp else f"{'-':>14}"
    vs_cpp = f"{s[k] / cpp:12.2f}" if cpp else f"{'-':>12}"
    print(f"{name:22} {s[k]:10.1f} {t[k]:12.1f} {cpp_text} {s[k] / t[k]:15.2f} {'>= ' + str(target):>6} {vs_cpp}")
print()
print(f"roofline: measured matmul peak {s['peak_f32_gflops']:.0f} GFLOP/s in f32, "
      f"{s['peak_bf16_gflops']:.0f} in bf16 (1024x1024, best of 5)")
print(f"{'':22} {'GFLOP/s':>8} {'share of f32 peak':>18}")
for k, name in (("generate_batch1_gflops", "generation, batch 1"),
                ("generate_batch32_gflops", "generation, batch 32"),
                ("finetune_gflops", "LoRA fine-tuning")):
    print(f"{name:22} {s[k]:8.1f} {s[k] / s['peak_f32_gflops']:18.1%}")
print(f"(generation: {s['generate_gflop_per_token']:.2f} GFLOP per new token, prefill included; "
      f"fine-tuning padding share {s['finetune_padding_share']:.1%})")
PY
