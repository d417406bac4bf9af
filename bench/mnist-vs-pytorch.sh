#!/usr/bin/env bash
# Times one teacher + one aux-only student at the paper's settings in
# subliminal and in plain PyTorch (same torch, same machine, same threads),
# and prints both and their ratio. Each side runs --repeat times (default 3);
# the best time of each counts.
#   bash bench/mnist-vs-pytorch.sh [--threads N] [--repeat K]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh >/dev/null
source scripts/env.sh
threads=$(nproc); repeat=3
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2;;
    --repeat) repeat="$2"; shift 2;;
    *) echo "unknown option $1 (expected --threads N, --repeat K)" >&2; exit 2;;
  esac
done
cargo bench --quiet --bench mnist_stages --no-run 2>/dev/null
mkdir -p bench/out
out=bench/out/mnist-vs-pytorch.jsonl
: > "$out"
for i in $(seq "$repeat"); do
  cargo bench --quiet --bench mnist_stages -- --threads "$threads" --data "$SUBLIMINAL_DATA" | tail -1 >> "$out"
  python bench/mnist_pytorch.py --threads "$threads" --data "$SUBLIMINAL_DATA/mnist" | tail -1 >> "$out"
done
python - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
best = {}
for r in rows:
    b = best.get(r["impl"])
    if b is None or r["total_s"] < b["total_s"]:
        best[r["impl"]] = r
s, p = best["subliminal"], best["pytorch"]
print(f"MNIST teacher + aux-only student, paper settings, {s['threads']} thread(s), best of {len(rows)//2}")
print(f"{'':12} {'teacher s':>10} {'student s':>10} {'eval s':>8} {'total s':>8} {'teacher acc':>12} {'student acc':>12}")
for name, r in (("subliminal", s), ("pytorch", p)):
    print(f"{name:12} {r['teacher_s']:10.2f} {r['student_s']:10.2f} {r['eval_s']:8.2f} {r['total_s']:8.2f} {r['teacher_accuracy']:12.3f} {r['student_accuracy']:12.3f}")
print(f"ratio subliminal/pytorch (total): {s['total_s'] / p['total_s']:.3f}  (target <= 1.0)")
PY
