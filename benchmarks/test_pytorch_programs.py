"""The training step of examples/char_gpt.py on microtensor and on PyTorch, at 1 and 2 threads.

The same program text runs on both (its imports switched by EXAMPLES_BACKEND):
n_embd 64, 4 heads (one module each), 4 layers, block 64, batch 32; one step is
zero_grad, forward, cross-entropy, backward, clip_grad_norm_ and AdamW. Both start
from the same weights and see the same batch. Read the ratio of the medians:

    python -m pytest benchmarks/test_pytorch_programs.py --benchmark-only --benchmark-columns=median,iqr,ops -s

`test_char_gpt_step_vs_pytorch` runs the two steps in alternation (so a shared machine's load hits
both) and prints both medians and their ratio, in wall and in the process's CPU time.
Threads are set through each library's own `set_num_threads`, as a PyTorch user would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from test_train_step import interleaved

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "char_gpt.py"
BATCH = 32
THREADS = [1, 2]
PAIRS = 30


def load(backend: str):
    """examples/char_gpt.py imported with its imports switched to `backend`."""
    os.environ["EXAMPLES_BACKEND"] = backend
    try:
        spec = importlib.util.spec_from_file_location(f"char_gpt_bench__{backend}", EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        del os.environ["EXAMPLES_BACKEND"]
    return module


def setup(mod, state=None):
    """(step closure, model) for the benchmark configuration, loaded from `state` when given."""
    mod.torch.manual_seed(0)
    dataset = mod.CharDataset(mod.TEXT, 64)
    config = mod.GPTConfig(vocab_size=len(dataset.chars), block_size=64, n_layer=4, n_head=4, n_embd=64)
    model = mod.GPT(config)
    if state is not None:
        model.load_state_dict({k: mod.torch.tensor(v) for k, v in state.items()})
    optimizer = mod.configure_optimizer(model, lr=1e-3, weight_decay=0.1)
    x, y = next(iter(mod.DataLoader(dataset, batch_size=BATCH, shuffle=False)))
    model.train()
    return (lambda: mod.train_step(model, optimizer, x, y)), model


def reference_state():
    """The initial weights of the PyTorch model as numpy arrays (None without PyTorch)."""
    try:
        tp = load("torch")
    except ImportError:
        return None
    _, model = setup(tp)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("threads", THREADS)
def test_char_gpt_step_microtensor(benchmark, threads):
    mp = load("microtensor")
    mp.torch.set_num_threads(threads)
    step, _ = setup(mp, reference_state())
    for _ in range(3):
        step()
    benchmark.extra_info.update(backend=mp.torch.backend.name(), threads=threads)
    benchmark.pedantic(step, rounds=50, warmup_rounds=2)


@pytest.mark.parametrize("threads", THREADS)
def test_char_gpt_step_torch(benchmark, threads):
    pytest.importorskip("torch")
    tp = load("torch")
    tp.torch.set_num_threads(threads)
    step, _ = setup(tp)
    for _ in range(3):
        step()
    benchmark.extra_info.update(threads=threads)
    benchmark.pedantic(step, rounds=50, warmup_rounds=2)


@pytest.mark.parametrize("threads", THREADS, ids=[f"{n}thread" for n in THREADS])
def test_char_gpt_step_vs_pytorch(benchmark, threads):
    """Interleaved pairs of steps; extra_info holds both medians (ms) and microtensor / PyTorch, wall and CPU."""
    pytest.importorskip("torch")
    mp, tp = load("microtensor"), load("torch")
    mp.torch.set_num_threads(threads)
    tp.torch.set_num_threads(threads)
    theirs, model = setup(tp)
    ours, _ = setup(mp, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()})
    medians = interleaved(benchmark, {"microtensor": ours, "torch": theirs}, PAIRS)
    ratio = {clock: m["microtensor"] / m["torch"] for clock, m in medians.items()}
    ms = {clock: {lib: round(s * 1e3, 2) for lib, s in m.items()} for clock, m in medians.items()}
    benchmark.extra_info.update(threads=threads, ms=ms["wall"], ratio=ratio["wall"], cpu_ms=ms["cpu"],
                                cpu_ratio=ratio["cpu"])
    for clock in medians:
        print(f"\nchar GPT step, {threads} thread(s), {clock} time: {json.dumps(ms[clock])} ms, "
              f"microtensor / PyTorch = {ratio[clock]:.2f}", end="")
