"""Sampling with the key/value cache against full recomputation, with 256 characters of context.

The GPT of `make lm` (examples/lm_demo.json: d_model 128, 4 heads, 2 blocks,
d_ff 512, pre-LN) with a block size of 512, so that nothing restarts the
context. Two groups, cache and recompute side by side in each, at 1 thread:

- `sample-step`: one new character after 256 cached ones (GPT.decode) against
  the forward pass over all 257 (what sampling without a cache does per character);
- `sample-32`: GPT.generate of 32 characters after a 256-character prompt, the
  cache's prefill of the prompt included.

- `sample-interleaved`: the two of `sample-step` in alternation (pairs), whose
  medians and their ratio it prints (with -s) and stores in extra_info: on a
  shared machine, the load changes less within a pair than between two tests.

    python -m pytest benchmarks/test_sample.py --benchmark-only --benchmark-columns=median,iqr,ops -s

The speed-up is the ratio of the medians in a group (issue 11 asks >= 5x).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

import microtensor as mt
from transformer.config import ModelConfig
from transformer.gpt import GPT

CONTEXT, NEW, VOCAB = 256, 32, 80


@pytest.fixture(scope="module")
def model() -> GPT:
    mt.backend.set_num_threads(1)
    config = ModelConfig(vocab_size=VOCAB, d_model=128, n_heads=4, d_ff=512, n_blocks=2, max_len=512, dropout=0.0,
                         pre_ln=True)
    return GPT(config, np.random.default_rng(0)).eval()


@pytest.fixture(scope="module")
def prompt() -> np.ndarray:
    return np.random.default_rng(1).integers(0, VOCAB, (1, CONTEXT + 1))


def one_character(model: GPT, prompt: np.ndarray, cache: bool) -> Callable[[], np.ndarray]:
    """The logits after the 257th character: decoded with 256 cached, or from the forward pass over all 257."""
    if cache:
        kv = model.new_cache(1)
        model.decode(prompt[:, :CONTEXT], kv, 0)
        return lambda: model.decode(prompt[:, CONTEXT:], kv, CONTEXT)

    def step() -> np.ndarray:
        with mt.no_grad():
            return model(prompt).numpy()[:, -1]

    return step


@pytest.mark.benchmark(group="sample-step")
@pytest.mark.parametrize("cache", [True, False], ids=["cache", "recompute"])
def test_one_character(benchmark, model, prompt, cache):
    benchmark.extra_info.update(backend=mt.backend.name(), threads=1, context=CONTEXT)
    logits = benchmark.pedantic(one_character(model, prompt, cache), rounds=200 if cache else 20, warmup_rounds=2)
    with mt.no_grad():
        np.testing.assert_allclose(logits, model(prompt).numpy()[:, -1], rtol=1e-4, atol=1e-4)


@pytest.mark.benchmark(group="sample-interleaved")
def test_one_character_interleaved(benchmark, model, prompt):
    steps = {cache: one_character(model, prompt, cache) for cache in (True, False)}
    seconds: dict[bool, list[float]] = {True: [], False: []}

    def pair() -> None:
        for cache, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[cache].append(time.perf_counter() - start)

    benchmark.pedantic(pair, rounds=30, warmup_rounds=2)
    cached, full = (1e3 * float(np.median(seconds[c][2:])) for c in (True, False))
    benchmark.extra_info.update(threads=1, context=CONTEXT, cache_ms=cached, recompute_ms=full, speedup=full / cached)
    print(f"\none character after {CONTEXT}: cache {cached:.3f} ms, recompute {full:.3f} ms (medians of 30 "
          f"interleaved pairs, 1 thread): {full / cached:.1f}x")


@pytest.mark.benchmark(group="sample-32")
@pytest.mark.parametrize("cache", [True, False], ids=["cache", "recompute"])
def test_32_characters(benchmark, model, prompt, cache):
    def run() -> np.ndarray:
        return np.stack(list(model.generate(prompt[:, :CONTEXT], NEW, lambda z: z.argmax(-1), cache=cache)))

    benchmark.extra_info.update(backend=mt.backend.name(), threads=1, context=CONTEXT, new=NEW)
    tokens = benchmark.pedantic(run, rounds=5 if cache is False else 20, warmup_rounds=1)
    assert tokens.shape == (NEW, 1)
