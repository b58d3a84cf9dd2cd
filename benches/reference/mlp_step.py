"""PyTorch eager reference for benches/train_step.rs: the paper's 8-layer ReLU MLP (no biases,
He init, SGD without momentum, CE, batch 64, 784 -> n -> ... -> 10) trained on a synthetic
Fashion-MNIST-shaped dataset, timed exactly like the Rust side. Prints one JSON line.

Usage: python mlp_step.py WIDTH STEPS THREADS
"""
import json
import sys
import time

import torch


def main():
    width, steps, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
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
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    dt = time.perf_counter() - t0
    print(json.dumps({"width": width, "steps": steps, "seconds": dt, "steps_per_s": steps / dt}))


if __name__ == "__main__":
    main()
