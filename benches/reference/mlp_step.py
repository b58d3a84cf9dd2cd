"""PyTorch eager reference for benches/train_step.rs: the paper's 8-layer ReLU MLP (no biases,
He init, SGD without momentum, CE, batch 64, 784 -> n -> ... -> 10) trained on a synthetic
Fashion-MNIST-shaped dataset, timed exactly like the Rust side: STEPS steps in BLOCKS
timing blocks (default 1), steps/s of the fastest block. Prints one JSON line.

Usage: python mlp_step.py WIDTH STEPS THREADS [BLOCKS]
"""
import json
import sys
import time

import torch


def main():
    width, steps, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    blocks = int(sys.argv[4]) if len(sys.argv) > 4 else 1
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

    for i in range(3):  # warm-up
        step(i)
    per_block = max(1, steps // blocks)
    best, total, i = 0.0, 0.0, 0
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(per_block):
            step(i)
            i += 1
        dt = time.perf_counter() - t0
        best, total = max(best, per_block / dt), total + dt
    print(json.dumps({"width": width, "steps": i, "seconds": total, "steps_per_s": best}))


if __name__ == "__main__":
    main()
