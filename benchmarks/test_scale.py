"""The training step of the seed transformer and three larger ones, microtensor against PyTorch.

Each config's step (forward, loss, backward, Adam) runs on microtensor and on the
same model in PyTorch (same weights, same batch) at 1 and 2 threads (MICROTENSOR_BENCH_THREADS sets
others, e.g. 1,2,4,8,16); every (config, threads) pair is one pytest-benchmark group, so the ratio of the two
medians is read from one run:

    python -m pytest benchmarks/test_scale.py --benchmark-only --benchmark-columns=median,iqr,rounds \
        --benchmark-group-by=group

`test_scale_vs_pytorch` runs the two steps in alternation instead, together with the step's linear
products alone on each library (y = x w^T + b, then dx, dw, db), so all four share the machine's load. It
prints microtensor / PyTorch in wall and CPU time for the steps and for the linears, and what the linears
set: the step ratio were microtensor's linears as fast as PyTorch's (the rest of each step as measured), were
the rest of microtensor's step free (its linears alone against PyTorch's whole step), and PyTorch's linears'
share of its own step (the step ratio were microtensor's linears as fast as PyTorch's and the rest free), and the
median and quartiles of the step ratio taken round by round (each round's two steps seconds apart), which the
machine's drifts between rounds do not move:

    python -m pytest benchmarks/test_scale.py --benchmark-only -k test_scale_vs_pytorch -s

`-k d256` picks one config. The models and the steps are benchmarks/test_train_step.py's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_train_step import THREADS, _set_microtensor_threads, interleaved, microtensor_step, torch_step

import microtensor as mt
from microtensor import _backend
from transformer.data import make_splits
from transformer.model import ModelConfig, Transformer

# name: (d_model, n_heads, d_ff, n_blocks, tokens T, batch, rounds)
CONFIGS = {
    "seed": (64, 4, 256, 2, 8, 32, 100),
    "d128": (128, 4, 512, 4, 32, 32, 20),
    "d256": (256, 8, 1024, 4, 64, 32, 8),
    "d384": (384, 6, 1536, 6, 128, 16, 5),
}
CASES = [pytest.param(name, threads, id=f"{name}-{threads}t") for name in CONFIGS for threads in THREADS]


def group(name: str, threads: int) -> str:
    """The benchmark group of one config at one thread count: microtensor and PyTorch side by side."""
    return f"{name} {threads} thread{'s' * (threads > 1)}"


def config_and_batch(name: str) -> tuple[ModelConfig, tuple[np.ndarray, np.ndarray, np.ndarray], int]:
    """The model config, a batch (ids, mask, targets) and the round count of config `name`."""
    d, heads, d_ff, blocks, T, batch, rounds = CONFIGS[name]
    if name == "seed":
        data = make_splits(train_size=batch, seed=0).train
        return ModelConfig(), (data.ids[:batch], data.mask[:batch], data.targets[:batch]), rounds
    config = ModelConfig(d_model=d, n_heads=heads, d_ff=d_ff, n_blocks=blocks, max_len=T)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config.vocab_size, size=(batch, T))
    targets = rng.integers(0, config.vocab_size, size=batch)
    return config, (ids, np.ones((batch, T), dtype=bool), targets), rounds


@pytest.mark.parametrize("name, threads", CASES)
def test_scale_microtensor(benchmark, name, threads):
    config, batch, rounds = config_and_batch(name)
    _set_microtensor_threads(threads)
    model = Transformer(config, np.random.default_rng(0))
    step = microtensor_step(model, mt.optim.Adam(model.parameters(), lr=1e-3), *batch)
    benchmark.group = group(name, threads)
    benchmark.extra_info.update(backend=mt.backend.name(), threads=threads)
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=2)


@pytest.mark.parametrize("name, threads", CASES)
def test_scale_torch(benchmark, name, threads):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    config, batch, rounds = config_and_batch(name)
    step = torch_step(config, *batch)
    benchmark.group = group(name, threads)
    benchmark.extra_info.update(threads=threads)
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=2)


def step_linears(name: str) -> list[tuple[int, int, int]]:
    """(rows, in, out) of every linear in one step of config `name`: the last block runs its last position only."""
    d, _, d_ff, blocks, T, batch, _ = CONFIGS[name]
    after_attention = [(d, d), (d, d_ff), (d_ff, d)]  # projection, FFN in, FFN out
    full, last = [(batch * T, *io) for io in after_attention], [(batch, *io) for io in after_attention]
    return [(batch * T, d, 3 * d)] * blocks + full * (blocks - 1) + last + [(batch, d, ModelConfig().vocab_size)]


def linears(name: str, torch) -> dict:
    """The linear products of one step of config `name` (forward and backward) on each library, as closures."""
    rng = np.random.default_rng(0)
    arrays = [[rng.standard_normal(shape, dtype=np.float32) for shape in ((n, i), (o, i), (o,), (n, o))]
              for n, i, o in step_linears(name)]
    tensors = [[torch.from_numpy(a) for a in operands] for operands in arrays]

    def ours() -> None:
        for x, w, b, g in arrays:
            _backend.K.linear(x, w, b)
            _backend.K.linear_backward(g, x, w, True, True, True)

    def theirs() -> None:
        for x, w, b, g in tensors:
            torch.nn.functional.linear(x, w, b)
            g @ w, g.t() @ x, g.sum(0)

    return {"microtensor linears": ours, "torch linears": theirs}


@pytest.mark.parametrize("name, threads", CASES)
def test_scale_vs_pytorch(benchmark, name, threads):
    """Interleaved steps and linears; extra_info holds the medians (ms) and microtensor / PyTorch, wall and CPU."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    _set_microtensor_threads(threads)
    config, batch, rounds = config_and_batch(name)
    model = Transformer(config, np.random.default_rng(0))
    steps = {"microtensor": microtensor_step(model, mt.optim.Adam(model.parameters(), lr=1e-3), *batch),
             "torch": torch_step(config, *batch), **linears(name, torch)}
    per_round: dict = {}
    medians = interleaved(benchmark, steps, rounds, per_round=per_round)
    report(benchmark, f"{group(name, threads)}, interleaved", name, threads, medians, per_round)


def report(benchmark, benchmark_group: str, label: str, threads: int, medians: dict, per_round: dict) -> None:
    """The medians (ms), microtensor / PyTorch for the steps and the linears, the step ratios the linears set
    (see the module docstring), and the quartiles of the step ratio taken round by round, wall and CPU, into
    extra_info and printed."""
    ratios, quartiles = {}, {}
    for clock, m in medians.items():
        ours, theirs, ours_lin, theirs_lin = (m[k] for k in ("microtensor", "torch", "microtensor linears",
                                                             "torch linears"))
        ratios[clock] = {"step": ours / theirs, "linears": ours_lin / theirs_lin,
                         "step with PyTorch's linears": (ours - ours_lin + theirs_lin) / theirs,
                         "step with the rest free": ours_lin / theirs,
                         "PyTorch's linears / its step": theirs_lin / theirs}
        by_round = np.divide(per_round[clock]["microtensor"], per_round[clock]["torch"])
        quartiles[clock] = np.percentile(by_round, (25, 50, 75)).tolist()
    ms = {clock: {lib: round(s * 1e3, 2) for lib, s in m.items()} for clock, m in medians.items()}
    benchmark.group = benchmark_group
    benchmark.extra_info.update(threads=threads, ms=ms["wall"], ratio=ratios["wall"]["step"], cpu_ms=ms["cpu"],
                                cpu_ratio=ratios["cpu"]["step"], ratios=ratios, step_ratio_by_round=quartiles)
    for clock in medians:
        shown = ", ".join(f"{what} {r:.2f}" for what, r in ratios[clock].items())
        q1, mid, q3 = quartiles[clock]
        shown += f", step round by round {mid:.2f} (quartiles {q1:.2f}-{q3:.2f})"
        print(f"\n{label}, {threads} thread(s), {clock} time: {json.dumps(ms[clock])} ms; microtensor / PyTorch: "
              f"{shown}", end="")
