#!/usr/bin/env bash
# Times one teacher + one aux-only student at the paper's settings in
# subliminal and in plain PyTorch (same torch, same machine, same threads),
# and prints both and their ratio. Each side runs --repeat times (default 3);
# the best time of each counts.
#
# Then the ensemble row: the paper sweep's models (10 seeds x (teacher + 4
# students), examples/mnist-paper.toml without its theorem stages) through
# `subliminal run` in groups of --ensemble K (default 10) and stage by stage,
# against plain PyTorch training them stacked and one by one. Once each.
#   bash bench/mnist-vs-pytorch.sh [--threads N] [--repeat K] [--ensemble K] [--no-ensemble]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh >/dev/null
source scripts/env.sh
threads=$(nproc); repeat=3; ensemble=10; paper=1
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2;;
    --repeat) repeat="$2"; shift 2;;
    --ensemble) ensemble="$2"; shift 2;;
    --no-ensemble) paper=0; shift;;
    *) echo "unknown option $1 (expected --threads N, --repeat K, --ensemble K, --no-ensemble)" >&2; exit 2;;
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

[ "$paper" = 1 ] || exit 0
cargo build --quiet --release -p subliminal-cli
bin="${CARGO_TARGET_DIR:-target}/release/subliminal"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed 's/^targets = \["aux", "all"\]$/&\ntheorem = false/' examples/mnist-paper.toml > "$work/paper.toml"
grep -q '^theorem = false' "$work/paper.toml" || { echo "cannot turn off the theorem stages in $work/paper.toml" >&2; exit 1; }
out=bench/out/mnist-paper-ensemble.jsonl
: > "$out"
for k in "$ensemble" 1; do
  start=$(date +%s.%N)
  "$bin" run "$work/paper.toml" --store "$work/store-$k" --device cpu --ensemble "$k" --no-progress > "$work/run-$k.txt" 2> "$work/run-$k.log"
  end=$(date +%s.%N)
  python - "$k" "$start" "$end" "$work/run-$k.txt" "$threads" >> "$out" <<'PY'
import json, sys
k, start, end, table, threads = sys.argv[1:]
means = {}
for line in open(table):
    cells = [c.strip() for c in line.replace("│", "┆").split("┆")]
    if len(cells) > 3 and (cells[1].startswith("student") or cells[1] == "teacher"):
        means[cells[1]] = float(cells[2])
print(json.dumps({"impl": f"subliminal --ensemble {k}", "threads": int(threads), "total_s": float(end) - float(start), "means": means}))
PY
done
for mode in --batched ""; do
  python bench/mnist_pytorch_paper.py --threads "$threads" --data "$SUBLIMINAL_DATA/mnist" $mode | tail -1 >> "$out"
done
python - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\nThe paper sweep's 50 models (10 seeds x (teacher + 4 students)), {rows[0]['threads']} thread(s), once each")
print(f"{'':26} {'total s':>8} {'teacher':>8} {'same aux':>9} {'same all':>9} {'cross aux':>10} {'cross all':>10}")
for r in rows:
    m = r["means"] if "means" in r else dict(r["student_accuracy"], teacher=r["teacher_accuracy"])
    cols = [m.get(k, float("nan")) for k in ("teacher", "student same-init aux", "student same-init all", "student cross-init aux", "student cross-init all")]
    print(f"{r['impl']:26} {r['total_s']:8.1f} " + " ".join(f"{c:9.3f}" for c in cols))
alone = next(r for r in rows if r["impl"] == "subliminal --ensemble 1")["total_s"]
grouped = rows[0]["total_s"]
print(f"speed-up of {rows[0]['impl']} over stage by stage: {alone / grouped:.2f}x (target >= 2x)")
PY
