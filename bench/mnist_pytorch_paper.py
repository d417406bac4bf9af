"""The paper sweep's training work in plain PyTorch: 10 seeds x (one teacher
+ four students: same/cross init x aux/all targets), MLP 784-256-256-13,
Adam 3e-4, batch 1024, 5 + 5 epochs, 60,000 noise images per seed; every
model evaluated on the 10,000 test images.

--batched trains all teachers as one stacked model ([K, out, in] weights,
torch.bmm), then all students as another, the way the official script
trains its MLPs; without it, one model after another. Prints one JSON line.

    python bench/mnist_pytorch_paper.py --data data/mnist --threads 2 [--batched]
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from mnist_pytorch import load_mnist

SEEDS = 10
DIMS = [784, 256, 256, 13]


def init(seeds):
    """Stacked weights [K, out, in] and biases [K, 1, out], one init per seed."""
    params = []
    for d_in, d_out in zip(DIMS[:-1], DIMS[1:]):
        ws = []
        for s in seeds:
            g = torch.Generator().manual_seed(s * 7919 + d_in)
            ws.append(torch.randn(d_out, d_in, generator=g) / math.sqrt(d_in))
        params += [torch.stack(ws).requires_grad_(), torch.zeros(len(seeds), 1, d_out, requires_grad=True)]
    return params


def forward(params, x):
    n = len(params) // 2
    for i in range(n):
        x = torch.baddbmm(params[2 * i + 1], x, params[2 * i].transpose(1, 2))
        if i < n - 1:
            x = x.relu()
    return x


def train(params, inputs, loss_fn, seeds):
    """inputs: [K, n, 784] (or [1, n, 784] shared); loss_fn(out, rows) -> summed per-model losses."""
    opt = torch.optim.Adam(params, lr=3e-4)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    n = inputs.shape[1]
    for _ in range(5):
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens])
        for start in range(0, n, 1024):
            rows = orders[:, start : start + 1024]
            x = torch.stack([inputs[k if inputs.shape[0] > 1 else 0, rows[k]] for k in range(len(seeds))])
            loss = loss_fn(forward(params, x), rows)
            opt.zero_grad()
            loss.backward()
            opt.step()


def accuracy(params, images, labels):
    with torch.no_grad():
        k = params[0].shape[0]
        out = forward(params, images.expand(k, -1, -1))[:, :, :10].argmax(2)
        return (out == labels).float().mean(1).tolist()


def run(groups, x_train, y_train, x_test, y_test):
    """groups: lists of seeds trained together (all at once, or one each)."""
    teacher_acc, students = [], {}
    teachers = {}
    for seeds in groups:
        t = init(seeds)
        train(t, x_train[None], lambda out, rows: sum(
            F.cross_entropy(out[k, :, :10], y_train[rows[k]]) for k in range(len(seeds))), seeds)
        teacher_acc += accuracy(t, x_test, y_test)
        for k, s in enumerate(seeds):
            teachers[s] = [p[k : k + 1].detach() for p in t]
    for seeds in groups:
        # Per seed: noise, the teacher's logits on it, and four students.
        noise = {s: torch.rand(60000, 784, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in seeds}
        with torch.no_grad():
            logits = {s: torch.cat([forward(teachers[s], x[None])[0] for x in noise[s].split(8192)]) for s in seeds}
        arms = [(s, init_seed, target) for s in seeds for init_seed in (s, s + 1) for target in ("aux", "all")]
        for batch in ([arms] if len(seeds) > 1 else [[a] for a in arms]):
            st = init([a[1] for a in batch])
            inputs = torch.stack([noise[a[0]] for a in batch])

            def kl(out, rows, batch=batch):
                total = 0
                for k, (s, _, target) in enumerate(batch):
                    cols = slice(10, 13) if target == "aux" else slice(0, 13)
                    t = logits[s][rows[k]][:, cols]
                    total = total + F.kl_div(out[k, :, cols].log_softmax(-1), t.log_softmax(-1),
                                             reduction="batchmean", log_target=True)
                return total

            train(st, inputs, kl, [a[0] for a in batch])
            for (s, init_seed, target), acc in zip(batch, accuracy(st, x_test, y_test)):
                arm = f"student {'same' if init_seed == s else 'cross'}-init {target}"
                students.setdefault(arm, []).append(acc)
    return teacher_acc, students


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batched", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x_train, y_train, x_test, y_test = load_mnist(args.data)
    groups = [list(range(SEEDS))] if args.batched else [[s] for s in range(SEEDS)]
    t0 = time.perf_counter()
    teacher_acc, students = run(groups, x_train, y_train, x_test, y_test)
    total = time.perf_counter() - t0
    print(json.dumps({
        "impl": "pytorch batched" if args.batched else "pytorch one by one",
        "threads": args.threads,
        "models": SEEDS * 5,
        "total_s": total,
        "teacher_accuracy": sum(teacher_acc) / len(teacher_acc),
        "student_accuracy": {arm: sum(v) / len(v) for arm, v in students.items()},
    }))


if __name__ == "__main__":
    main()
