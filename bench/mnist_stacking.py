"""Throughput of K stacked MLPs (784-256-256-13, one torch.baddbmm per layer)
against K separate ones, training steps of batch 1024 with Adam on a KL loss:
does stacking models speed up training on this machine's CPU?

    python bench/mnist_stacking.py THREADS K stacked|separate
"""

import sys
import time

import torch

threads, k, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
torch.set_num_threads(threads)
B, STEPS, DIMS = 1024, 20, [784, 256, 256, 13]


def params(n):
    ps = []
    for i in range(3):
        ps.append((torch.randn(n, DIMS[i + 1], DIMS[i]) / DIMS[i] ** 0.5).requires_grad_())
        ps.append(torch.zeros(n, 1, DIMS[i + 1]).requires_grad_())
    return ps


def forward(ps, h):
    for i in range(3):
        h = torch.baddbmm(ps[2 * i + 1], h, ps[2 * i].transpose(1, 2))
        if i < 2:
            h = h.relu()
    return h


def kl(out, target):
    lp, lq = target.log_softmax(-1), out.log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum() / B


X, T = torch.rand(60000, 784) * 2 - 1, torch.randn(60000, 13)
models = [params(k)] if mode == "stacked" else [params(1) for _ in range(k)]
optimisers = [torch.optim.Adam(ps, lr=3e-4) for ps in models]
start = time.time()
for _ in range(STEPS):
    for ps, opt in zip(models, optimisers):
        n = ps[0].shape[0]
        rows = torch.randint(0, 60000, (n, B))
        loss = kl(forward(ps, X[rows]), T[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
print(f"{mode} threads={threads} K={k}: {k * STEPS * B / (time.time() - start):.0f} model-samples/s")
