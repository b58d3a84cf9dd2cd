"""PyTorch eager reference for benches/sharpness.rs: the top Hessian eigenvalue of the paper's
8-layer ReLU MLP (no biases, 784 -> n -> ... -> 10) under CE on a fixed batch, by Lanczos with
full reorthogonalisation on Hessian-vector products in the PyHessian recipe (Yao et al.
2020): the gradient once with `create_graph=True`, then every product as
`torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)`, vectors as lists of
per-parameter tensors (PyHessian's `group_product` / `group_add`), each new vector
orthogonalised against the whole basis twice (as the Rust side), the tridiagonal matrix's
eigenvalues by `torch.linalg.eigvalsh`.

Weights, batch and start vector are the Rust side's, read from raw little-endian files in DIR
(w{l}.bin float32 [fan_out, fan_in], x.bin float32 [B, 784], y.bin int64 [B], v.bin float32
[N]), so both sides compute the same numbers.

Usage: python sharpness.py DIR WIDTH BATCH ITERS THREADS
Serves timing blocks: after one warm-up estimate it prints `ready`, then for every line `N`
read from stdin it runs N estimates and prints one JSON line {"estimates": N, "seconds": t,
"top": lambda}; it exits at the end of stdin.
"""
import json
import os
import sys
import time

import numpy as np
import torch


def load(path, dtype, shape):
    return torch.from_numpy(np.fromfile(path, dtype=dtype).reshape(shape).copy())


def main():
    d, width, batch, iters, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    depth, d_in, d_out = 8, 784, 10
    dims = [d_in] + [width] * (depth - 1) + [d_out]
    layers = []
    for i in range(depth):
        lin = torch.nn.Linear(dims[i], dims[i + 1], bias=False)
        with torch.no_grad():
            lin.weight.copy_(load(os.path.join(d, f"w{i}.bin"), np.float32, (dims[i + 1], dims[i])))
        layers.append(lin)
        if i + 1 < depth:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    params = [p for p in model.parameters()]
    x = load(os.path.join(d, "x.bin"), np.float32, (batch, d_in))
    y = load(os.path.join(d, "y.bin"), np.int64, (batch,))
    n = sum(p.numel() for p in params)
    v0 = load(os.path.join(d, "v.bin"), np.float32, (n,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def group_product(xs, ys):
        return sum(torch.sum(a * b) for a, b in zip(xs, ys))

    def split(flat):
        out, k = [], 0
        for p in params:
            out.append(flat[k:k + p.numel()].view_as(p))
            k += p.numel()
        return out

    def estimate():
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        v = split(v0.clone())
        norm = group_product(v, v).sqrt()
        v = [a / norm for a in v]
        basis, alphas, betas = [v], [], []
        for j in range(iters):
            w = torch.autograd.grad(grads, params, grad_outputs=v, only_inputs=True, retain_graph=True)
            w = [a.detach() for a in w]
            alphas.append(group_product(w, v).item())
            for _ in range(2):
                for q in basis:
                    c = group_product(w, q)
                    w = [a - c * b for a, b in zip(w, q)]
            beta = group_product(w, w).sqrt().item()
            if j + 1 == iters:
                break
            betas.append(beta)
            v = [a / beta for a in w]
            basis.append(v)
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        for i, b in enumerate(betas):
            t[i, i + 1] = t[i + 1, i] = b
        return torch.linalg.eigvalsh(t)[-1].item()

    estimate()
    print("ready", flush=True)
    for line in sys.stdin:
        k = int(line)
        t0 = time.perf_counter()
        for _ in range(k):
            top = estimate()
        print(json.dumps({"estimates": k, "seconds": time.perf_counter() - t0, "top": top}), flush=True)


if __name__ == "__main__":
    main()
