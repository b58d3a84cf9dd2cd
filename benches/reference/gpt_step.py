"""PyTorch eager reference for benches/gpt_step.rs: the same Pythia-style GPT as
widthlab::model::Gpt (pre-LayerNorm, parallel residual, separate q/k/v projections with
biases, qk-LayerNorm over each head's 32 dims, rotary embedding on the first quarter of each
head, causal scaled-dot-product attention, 4x GELU MLP, final LayerNorm, untied readout
without bias), He initialisation (SP), AdamW (0.9, 0.95), eps 1e-12, weight decay 0.1,
gradient clipping at 1, CE on random tokens. Timed exactly like the Rust side. Prints one
JSON line.

Usage: python gpt_step.py WIDTH DEPTH VOCAB SEQ BATCH STEPS THREADS
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

HEAD_DIM = 32


def he_linear(fan_in, fan_out, bias):
    lin = nn.Linear(fan_in, fan_out, bias=bias)
    nn.init.normal_(lin.weight, std=math.sqrt(2.0 / fan_in))
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


def rope_cache(t, r, base=10000.0):
    inv = base ** (-torch.arange(0, r, 2, dtype=torch.float64) / r)
    ang = torch.outer(torch.arange(t, dtype=torch.float64), inv)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float(), ang.sin().float()


def rope(x, cos, sin):
    r = cos.size(-1)
    xr, rest = x[..., :r], x[..., r:]
    x1, x2 = xr[..., : r // 2], xr[..., r // 2:]
    rot = torch.cat([-x2, x1], dim=-1)
    return torch.cat([xr * cos + rot * sin, rest], dim=-1)


class Block(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.n, self.h = n, n // HEAD_DIM
        self.norm_1, self.norm_2 = nn.LayerNorm(n), nn.LayerNorm(n)
        self.q, self.k, self.v = (he_linear(n, n, True) for _ in range(3))
        self.q_norm, self.k_norm = nn.LayerNorm(HEAD_DIM), nn.LayerNorm(HEAD_DIM)
        self.proj = he_linear(n, n, True)
        self.fc, self.mlp_proj = he_linear(n, 4 * n, True), he_linear(4 * n, n, True)

    def attn(self, u, cos, sin):
        b, t, n = u.shape
        heads = lambda z: z.view(b, t, self.h, HEAD_DIM).transpose(1, 2)
        q, k, v = heads(self.q(u)), heads(self.k(u)), heads(self.v(u))
        q, k = rope(self.q_norm(q), cos, sin), rope(self.k_norm(k), cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, n))

    def forward(self, h, cos, sin):
        return h + self.attn(self.norm_1(h), cos, sin) + self.mlp_proj(F.gelu(self.fc(self.norm_2(h))))


class Gpt(nn.Module):
    def __init__(self, n, depth, vocab):
        super().__init__()
        self.wte = nn.Embedding(vocab, n)
        nn.init.normal_(self.wte.weight, std=math.sqrt(2.0 / vocab))
        self.blocks = nn.ModuleList(Block(n) for _ in range(depth))
        self.ln_f = nn.LayerNorm(n)
        self.lm_head = he_linear(n, vocab, False)

    def forward(self, idx, cos, sin):
        h = self.wte(idx)
        for blk in self.blocks:
            h = blk(h, cos, sin)
        return self.lm_head(self.ln_f(h))


def main():
    width, depth, vocab, seq, batch, steps, threads = (int(a) for a in sys.argv[1:8])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Gpt(width, depth, vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-12, weight_decay=0.1)
    cos, sin = rope_cache(seq, HEAD_DIM // 4)
    data = torch.randint(0, vocab, (64, batch, seq + 1))

    def step(i):
        w = data[i % 64]
        x, y = w[:, :-1], w[:, 1:]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x, cos, sin).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for i in range(2):  # warm-up
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    dt = time.perf_counter() - t0
    print(json.dumps({"width": width, "steps": steps, "seconds": dt, "tokens_per_s": steps * batch * seq / dt}))


if __name__ == "__main__":
    main()
