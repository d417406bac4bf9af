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
  cargo bench --quiet --bench llm -- --threads "$threads" --precision bf16 | tail -1 >> "$out"
  python bench/llm_transformers.py --threads "$threads" --workload "$workload" \
    --gguf "$SUBLIMINAL_DATA/models/SmolLM2-135M-Instruct.Q4_1.gguf" 2>/dev/null | tail -1 >> "$out"
  python bench/llm_transformers.py --threads "$threads" --workload "$workload" --dtype bf16 \
    --gguf "$SUBLIMINAL_DATA/models/SmolLM2-135M-Instruct.Q4_1.gguf" 2>/dev/null | tail -1 >> "$out"
  python bench/llm_llamacpp.py --threads "$threads" --workload "$workload" \
    --gguf "$SUBLIMINAL_DATA/models/SmolLM2-135M-Instruct.Q4_1.gguf" 2>/dev/null | tail -1 >> "$out"
done
python - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def name(r):
    return r["impl"] + " bf16" if r.get("precision") == "BFloat16" else r["impl"]
best = {}
for r in rows:
    b = best.setdefault(name(r), {})
    for k, v in r.items():
        if isinstance(v, (int, float)):
            b[k] = max(b.get(k, 0.0), v)
        elif k == "logits_vs_f32":
            b[k] = v
keys = [("generate_batch1_tokens_per_s", "generation, batch 1", 1.5),
        ("generate_batch32_tokens_per_s", "generation, batch 32", 1.5),
        ("finetune_tokens_per_s", "LoRA fine-tuning", 2.0)]
columns = ["subliminal", "subliminal bf16", "transformers", "transformers bf16", "llama.cpp"]
s, t = best["subliminal"], best["transformers"]
runs = sum(name(r) == "subliminal" for r in rows)
print(f"SmolLM2-135M, CPU, {rows[0]['threads']} thread(s), best of {runs}; tokens/s "
      f"(subliminal and transformers f32 unless named; llama.cpp on the file's Q4_1 weights)")
print(f"{'':22}" + "".join(f"{c:>18}" for c in columns))
for k, label, target in keys:
    print(f"{label:22}" + "".join(f"{best.get(c, {}).get(k, float('nan')):18.1f}" for c in columns))
print()
print(f"{'ratios':22}{'f32 / transf. f32':>18}{'bf16 / transf. bf16':>20}{'bf16 / transf. f32':>19}{'target':>8}{'bf16 / llama.cpp':>17}")
for k, label, target in keys:
    bf = best.get("subliminal bf16", {}).get(k, float("nan"))
    tbf = best.get("transformers bf16", {}).get(k, float("nan"))
    cpp = best.get("llama.cpp", {}).get(k, float("nan"))
    print(f"{label:22}{s[k] / t[k]:18.2f}{bf / tbf:20.2f}{bf / t[k]:19.2f}{'>= ' + str(target):>8}{bf / cpp:17.2f}")
d = best.get("subliminal bf16", {}).get("logits_vs_f32")
if d:
    print(f"bf16 against f32, next-token logits on the {d['prompts']} prompts: largest difference "
          f"{d['max_abs_difference']:.3f} (mean {d['mean_abs_difference']:.4f}, logits up to "
          f"{d['largest_logit']:.1f}), top token the same on {d['top1_agreement']:.0%}")
print()
print(f"roofline: measured matmul peak {s['peak_f32_gflops']:.0f} GFLOP/s in f32, "
      f"{s['peak_bf16_gflops']:.0f} in bf16 (1024x1024, best of 5)")
print(f"{'':22} {'f32 GFLOP/s':>12} {'of f32 peak':>12} {'bf16 GFLOP/s':>13} {'of bf16 peak':>13}")
bf = best.get("subliminal bf16", {})
for k, label in (("generate_batch1_gflops", "generation, batch 1"),
                 ("generate_batch32_gflops", "generation, batch 32"),
                 ("finetune_gflops", "LoRA fine-tuning")):
    b = bf.get(k, float("nan"))
    print(f"{label:22} {s[k]:12.1f} {s[k] / s['peak_f32_gflops']:12.1%} {b:13.1f} {b / s['peak_bf16_gflops']:13.1%}")
print(f"(generation: {s['generate_gflop_per_token']:.2f} GFLOP per new token, prefill included; "
      f"fine-tuning padding share {s['finetune_padding_share']:.1%})")
PY

# Real stages: bench/llm-real-stages.toml's two generate and two student
# stages, one at a time (as the benchmark's workloads run), with the figures
# their manifests record; then the same sweep at precision = "bf16", and
# each run's probability readout, to show what bf16 changes in a result.
cargo build --quiet --release -p subliminal-cli
real=$(mktemp -d)
trap 'rm -rf "$real"' EXIT
sed 's/^kind = "numbers"$/kind = "numbers"\nprecision = "bf16"/' bench/llm-real-stages.toml \
  >"$real/llm-real-stages-bf16.toml"
for precision in f32 bf16; do
  sweep=bench/llm-real-stages.toml
  [ "$precision" = bf16 ] && sweep="$real/llm-real-stages-bf16.toml"
  store="$real/store-$precision"
  "${CARGO_TARGET_DIR:-target}/release/subliminal" run "$sweep" --store "$store" \
    --jobs 1 --no-progress >/dev/null 2>&1
  python - "$store/stages" "$precision" <<'PY'
import json, pathlib, sys
generate, train = [], []
for stage in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    kind = json.loads((stage / "manifest.json").read_text())["kind"]
    if kind == "generate":
        generate.append(json.loads((stage / "metrics.json").read_text()))
    elif kind == "student":
        train.append(json.loads((stage / "train.json").read_text()))
print()
print(f"real stages of bench/llm-real-stages.toml in {sys.argv[2]}, one at a time")
for g in generate:
    print(f"  generate: {g['completions']} completions, {g['new_tokens']} new tokens in {g['seconds']:.1f} s, "
          f"{g['new_tokens_per_second']:.1f} new tokens/s (batch 32, numbers grammar, stop tokens end rows early)")
for t in train:
    print(f"  student:  {t['steps']} steps, {t['tokens']} tokens in {t['seconds']:.1f} s, "
          f"{t['tokens_per_second']:.1f} tokens/s, padding share {t['padding_share']:.1%}, "
          f"loss {t['losses'][0]:.3f} -> {t['losses'][-1]:.3f}")
PY
  "${CARGO_TARGET_DIR:-target}/release/subliminal" results llm-real-stages --store "$store"
done
