"""PyTorch eager reference for benches/train_step.rs: the paper's 8-layer ReLU MLP (no biases,
He init, SGD without momentum, CE, batch 64, 784 -> n -> ... -> 10) trained on a synthetic
Fashion-MNIST-shaped dataset.

Usage: python mlp_step.py WIDTH THREADS
Serves timing blocks for benches/train_step.rs, which alternates them with its own so that
both sides see the same machine: after 3 warm-up steps it prints `ready`, then for every line
`N` read from stdin it runs N steps and prints one JSON line {"steps": N, "seconds": t}; it
exits at the end of stdin.
"""
import json
import sys
import time

import torch


def main():
    width, threads = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    depth, d_in, d_out, batch, n_data = 8, 784, 10, 64, 4096
    dims = [d_in] + [width] * (depth - 1) + [d_out]
    layers = []
    for i in range(depth):
        lin = torch.nn.Linear(dims[i], dims[i + 1], bias=False)
        torch.nn.init.normal_(lin.weight, std=(2.0 / dims[i]) ** 0.5)
        layers.append(lin)
        if i + 1 < depth:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_all = torch.randn(n_data, d_in)
    y_all = torch.randint(0, d_out, (n_data,))
    per_epoch = n_data // batch

    def step(i):
        j = (i % per_epoch) * batch
        x, y = x_all[j:j + batch], y_all[j:j + batch]
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    i = 0
    for _ in range(3):  # warm-up
        step(i)
        i += 1
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        t0 = time.perf_counter()
        for _ in range(n):
            step(i)
            i += 1
        print(json.dumps({"steps": n, "seconds": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
