"""The same work as worker/benches/mnist_stages.rs, in plain PyTorch.

One teacher (MLP 784-256-256-13, Adam 3e-4, batch 1024, 5 epochs of
cross-entropy on the digit logits) and one auxiliary-logit student (5 epochs
of KL on the teacher's 3 auxiliary logits over 60,000 uniform noise images),
each evaluated on the 10,000 test images. Prints one JSON line of timings.

    python bench/mnist_pytorch.py --data data/mnist --threads 2
"""

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_idx(path, dims):
    with open(path, "rb") as f:
        data = f.read()
    header = 4 + 4 * dims
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(folder):
    """(train images, train labels, test images, test labels), images scaled to [-1, 1]."""
    scale = lambda a: torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32)) / 127.5 - 1.0
    labels = lambda name: torch.from_numpy(read_idx(f"{folder}/{name}", 1).astype(np.int64))
    return (
        scale(read_idx(f"{folder}/train-images-idx3-ubyte", 3)),
        labels("train-labels-idx1-ubyte"),
        scale(read_idx(f"{folder}/t10k-images-idx3-ubyte", 3)),
        labels("t10k-labels-idx1-ubyte"),
    )


def mlp(seed, m):
    g = torch.Generator().manual_seed(seed)
    dims = [784, 256, 256, 10 + m]
    params = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        w = (torch.randn(d_out, d_in, generator=g) / math.sqrt(d_in)).requires_grad_()
        b = torch.zeros(d_out, requires_grad=True)
        params += [w, b]
    return params


def forward(params, x):
    n = len(params) // 2
    for i in range(n):
        x = F.linear(x, params[2 * i], params[2 * i + 1])
        if i < n - 1:
            x = x.relu()
    return x


def train(params, inputs, loss_fn, epochs, seed):
    opt = torch.optim.Adam(params, lr=3e-4)
    g = torch.Generator().manual_seed(seed)
    n = inputs.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for start in range(0, n, 1024):
            idx = order[start : start + 1024]
            loss = loss_fn(forward(params, inputs.index_select(0, idx)), idx)
            opt.zero_grad()
            loss.backward()
            opt.step()


def accuracy(params, images, labels):
    with torch.no_grad():
        return (forward(params, images)[:, :10].argmax(1) == labels).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x_train, y_train, x_test, y_test = load_mnist(args.data)

    t0 = time.perf_counter()
    teacher = mlp(0, 3)
    train(teacher, x_train, lambda out, idx: F.cross_entropy(out[:, :10], y_train[idx]), 5, 0)
    t1 = time.perf_counter()
    teacher_acc = accuracy(teacher, x_test, y_test)
    t2 = time.perf_counter()
    noise = torch.rand(60000, 784, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        targets = torch.cat([forward(teacher, x) for x in noise.split(8192)])[:, 10:]
    student = mlp(0, 3)

    def kl(out, idx):
        t = targets.index_select(0, idx)
        return F.kl_div(out[:, 10:].log_softmax(-1), t.log_softmax(-1), reduction="batchmean", log_target=True)

    train(student, noise, kl, 5, 0)
    t3 = time.perf_counter()
    student_acc = accuracy(student, x_test, y_test)
    t4 = time.perf_counter()
    print(json.dumps({
        "impl": "pytorch",
        "threads": args.threads,
        "teacher_s": t1 - t0,
        "student_s": t3 - t2,
        "eval_s": (t2 - t1) + (t4 - t3),
        "total_s": t4 - t0,
        "teacher_accuracy": teacher_acc,
        "student_accuracy": student_acc,
    }))


if __name__ == "__main__":
    main()
