"""One full training step of the seed transformer (forward, loss, backward, Adam) at batch 32.

microtensor and, when installed, the same model in PyTorch (same shapes,
same initial weights, same batch), at 1 and 2 threads, so the ratio of the
medians can be read from one run:

    python -m pytest benchmarks/test_train_step.py --benchmark-only --benchmark-columns=median,iqr,ops

The C kernels' thread count is set in-process through the C backend's
`set_num_threads` (the MICROTENSOR_NUM_THREADS cap read at import also works:
run the file once per value to cross-check).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn.functional as F
from transformer.data import make_splits
from transformer.model import ModelConfig, Transformer

BATCH = 32


def thread_counts() -> list[int]:
    """The thread counts every benchmark runs: MICROTENSOR_BENCH_THREADS ("1,2,4,8,16" on a big machine), else 1, 2."""
    raw = os.environ.get("MICROTENSOR_BENCH_THREADS", "1,2")
    return [int(n) for n in raw.split(",")]


THREADS = thread_counts()
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
# Seconds after which every library's idle workers have stopped spinning: numpy's OpenBLAS spins 2^28 cycles
# (~0.1 s) after each call; on 2 cores microtensor's 2-thread 2048x256x1024 product ran at 61-70 GFLOP/s up to
# 20 ms after a numpy product and 119-134 from 100 ms on (PyTorch's workers: no measurable effect).
SETTLE_S = 0.25
# Seconds of untimed steps before each timed one: PyTorch's idle OpenMP workers spin for a few ms after its call
# (libgomp's default), and on 2 cores took one from the next call's threads: microtensor's 2-thread 2048x256x768
# linear ran at 110 GFLOP/s right after PyTorch's, 167 2 ms later and 203 10 ms later (201 after its own). One
# untimed call of a 2 ms kernel (attention at T 128) did not cover that.
WARM_S = 0.02


def _set_microtensor_threads(n: int) -> None:
    """Cap the C kernels at n threads (a no-op on the numpy backend)."""
    setter = getattr(mt.backend, "set_num_threads", None)
    if setter is None:
        from microtensor import _backend

        setter = getattr(_backend.K, "set_num_threads", None)
    if setter is not None:
        setter(n)


def interleaved(benchmark, steps: dict, pairs: int, settle_s: float = 0.0,
                per_round: dict | None = None) -> dict[str, dict[str, float]]:
    """Median seconds of each step, run in alternation (so the machine's load hits all), in wall and CPU time.

    CPU time is the process's: a step's own cost on a shared machine (at 2 threads it also counts waiting).
    Each timed step follows untimed ones of the same library, for WARM_S seconds at least: on 2 cores, the
    other library's idle OpenMP threads spin on after its step and took a core from the next step's threads
    (microtensor's make lm step ran 6-12% slower right after PyTorch's at 2 threads, not at all with
    GOMP_SPINCOUNT=0). Numpy's OpenBLAS spins longer: `settle_s` seconds of sleep before each library's
    turn let its workers park first (see SETTLE_S). `per_round`, when given, receives each step's seconds round by
    round ({clock: {name: [...]}}), for ratios within a round, which the machine's slow drifts do not move."""
    times: dict[str, dict[str, list[float]]] = {clock: {name: [] for name in steps} for clock in CLOCKS}

    def pair() -> None:
        for name, step in steps.items():
            if settle_s:
                time.sleep(settle_s)
            warm_until = time.perf_counter() + WARM_S
            step()
            while time.perf_counter() < warm_until:
                step()
            started = {clock: read() for clock, read in CLOCKS.items()}
            step()
            for clock, read in CLOCKS.items():
                times[clock][name].append(read() - started[clock])

    benchmark.pedantic(pair, rounds=pairs, warmup_rounds=2)
    if per_round is not None:
        per_round.update({clock: {name: t[-pairs:] for name, t in by_name.items()} for clock, by_name in times.items()})
    return {clock: {name: float(np.median(t[-pairs:])) for name, t in by_name.items()}
            for clock, by_name in times.items()}


@pytest.fixture(scope="module")
def batch():
    data = make_splits(train_size=BATCH, seed=0).train
    return data.ids[:BATCH], data.mask[:BATCH], data.targets[:BATCH]


def microtensor_step(model: Transformer, optimizer, ids, mask, targets):
    """Returns a closure doing one training step."""

    def step() -> float:
        optimizer.zero_grad(set_to_none=False)  # as transformer.train: gradients stay views of Adam's flat buffer
        loss = F.cross_entropy(model(ids, mask), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


@pytest.mark.parametrize("threads", THREADS)
def test_step_microtensor(benchmark, batch, threads):
    _set_microtensor_threads(threads)
    model = Transformer(ModelConfig(), np.random.default_rng(0))
    optimizer = mt.optim.Adam(model.parameters(), lr=1e-3)
    step = microtensor_step(model, optimizer, *batch)
    for _ in range(5):
        step()
    benchmark.extra_info.update(backend=mt.backend.name(), threads=threads)
    benchmark.pedantic(step, rounds=200, warmup_rounds=5)


def torch_model(config: ModelConfig, state: dict[str, np.ndarray]):
    """The seed transformer in PyTorch, with parameter names matching microtensor's, loaded from `state`."""
    import torch
    from torch import nn
    from torch.nn import functional as TF

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d, h = config.d_model, config.d_ff
            self.attn, self.ffn = nn.Module(), nn.Module()
            self.attn.qkv_weight = nn.Parameter(torch.empty(3 * d, d))
            self.attn.qkv_bias = nn.Parameter(torch.empty(3 * d))
            self.attn.proj_weight, self.attn.proj_bias = (
                nn.Parameter(torch.empty(d, d)),
                nn.Parameter(torch.empty(d)),
            )
            self.ffn.fc_weight, self.ffn.fc_bias = (
                nn.Parameter(torch.empty(h, d)),
                nn.Parameter(torch.empty(h)),
            )
            self.ffn.proj_weight, self.ffn.proj_bias = (
                nn.Parameter(torch.empty(d, h)),
                nn.Parameter(torch.empty(d)),
            )
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)

        def forward(self, x, mask, last_only=False):
            B, T, D = x.shape
            H = config.n_heads
            a, f, p = self.attn, self.ffn, config.dropout
            qkv = TF.linear(x, a.qkv_weight, a.qkv_bias).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
            q = qkv[0][:, :, -1:] if last_only else qkv[0]
            y = TF.scaled_dot_product_attention(q, qkv[1], qkv[2], attn_mask=mask)
            y = TF.linear(y.transpose(1, 2).reshape(B, q.shape[2], D), a.proj_weight, a.proj_bias)
            x = self.ln1((x[:, -1:] if last_only else x) + TF.dropout(y, p, self.training))
            h = TF.gelu(TF.linear(x, f.fc_weight, f.fc_bias), approximate="tanh")
            y = TF.linear(h, f.proj_weight, f.proj_bias)
            return self.ln2(x + TF.dropout(y, p, self.training))

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok_emb = nn.Parameter(torch.empty(config.vocab_size, config.d_model))
            self.head_weight = nn.Parameter(torch.empty(config.vocab_size, config.d_model))
            self.head_bias = nn.Parameter(torch.empty(config.vocab_size))
            self.blocks = nn.ModuleList(Block() for _ in range(config.n_blocks))
            self.register_buffer("pos_table", torch.from_numpy(state["pos_table"]))

        def forward(self, ids, mask):
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            x = TF.embedding(ids, self.tok_emb) + self.pos_table[positions]
            key_mask = mask[:, None, None, :]
            for i, block in enumerate(self.blocks):
                x = block(x, key_mask, last_only=i == len(self.blocks) - 1)  # as microtensor's model
            return TF.linear(x[:, -1], self.head_weight, self.head_bias)

    model = Model()
    names = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            if name in names:
                names[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return model


def torch_step(config: ModelConfig, ids, mask, targets):
    """A closure doing one PyTorch training step of the model microtensor's Transformer(config, rng 0) starts as."""
    import torch

    ours = Transformer(config, np.random.default_rng(0))
    model = torch_model(config, {**ours.state_dict(), "pos_table": ours.pos_table})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids, mask, targets = (torch.from_numpy(np.ascontiguousarray(a)) for a in (ids, mask, targets))

    def step() -> float:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(ids, mask), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


@pytest.mark.parametrize("threads", THREADS)
def test_step_torch(benchmark, batch, threads):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    step = torch_step(ModelConfig(), *batch)
    for _ in range(5):
        step()
    benchmark.extra_info.update(threads=threads)
    benchmark.pedantic(step, rounds=200, warmup_rounds=5)
