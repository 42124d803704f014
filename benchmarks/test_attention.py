"""Attention forward+backward: microtensor's blocked kernels against PyTorch's scaled_dot_product_attention.

Run:   python -m pytest benchmarks/test_attention.py --benchmark-only --benchmark-json=attention.json
Table: python benchmarks/test_attention.py attention.json   (markdown rows for docs/PERFORMANCE.md)
One thread only: add -k "not -2]".

T 64, 128, 256 and 512, head width 32 and 64, causal or not, 1024 tokens (batch 1024 / T) of 4 heads,
at 1 and 2 threads (PyTorch gets as many). Each case runs microtensor's step, PyTorch's (when installed)
and a 1024^3 sgemm in alternation, so the machine's slow spells (on these shared VMs, up to 1.5x for
tens of seconds) hit all three: the ratio to PyTorch and the share of the sgemm's GFLOP/s come from the
same rounds. The table reads CPU time at 1 thread (a step's own cost on a shared machine) and wall time
at more (CPU time there also counts waiting). Each case also records the forward's peak traced memory
(numpy's allocations; the kernel's own workspace is a few tiles of T x head width per thread), which must
stay within the output and its log-sum-exp whatever T, next to the size of one (B, H, T, T) float32 score
array, which the math path would make. FLOPs count the products, 12 B H T^2 D for forward and backward
(not the backward's recomputation), halved under a causal mask. Both sides take their inputs without a
copy (a 1 MiB copy of each of q, k, v is ~1 ms, a fifth of a T 128 causal step here), so the times are
attention and autograd only.
"""

from __future__ import annotations

import json
import sys
import tracemalloc

import numpy as np
import pytest
from test_train_step import interleaved

import microtensor as mt
import microtensor.nn.functional as F
from microtensor import _backend

TOKENS, HEADS = 1024, 4
THREADS = [1, 2]
CASES = [(t, d, causal) for t in (64, 128, 256, 512) for d in (32, 64) for causal in (False, True)]
GEMM = 1024
ROUNDS = 15


def _threads(n: int) -> None:
    """Run the C kernels on n threads; skip when they are not built."""
    if _backend.name() != "c":
        pytest.skip("C kernels not built")
    _backend.set_num_threads(n)


def _inputs(t: int, d: int) -> list[np.ndarray]:
    """q, k, v and the output's gradient, (TOKENS / t, HEADS, t, d) float32."""
    rng = np.random.default_rng(t + d)
    return [rng.standard_normal((TOKENS // t, HEADS, t, d)).astype(np.float32) for _ in range(4)]


def _flops(t: int, d: int, causal: bool) -> float:
    """Multiply-adds x 2 of the forward and backward products."""
    return 12.0 * TOKENS * HEADS * t * d * (0.5 if causal else 1.0)


def _case_id(case: tuple) -> str:
    t, d, causal = case
    return f"T{t}-D{d}-{'causal' if causal else 'full'}"


def _forward_peak(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool) -> int:
    """Peak bytes numpy allocates during microtensor's forward (tracemalloc)."""
    inputs = [mt.tensor(x) for x in (q, k, v)]
    tracemalloc.start()
    F.scaled_dot_product_attention(*inputs, is_causal=causal)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_attention(benchmark, case: tuple, threads: int) -> None:
    t, d, causal = case
    _threads(threads)
    q, k, v, g = _inputs(t, d)
    grad = mt.tensor(g)

    def ours() -> None:
        qt, kt, vt = (mt.from_numpy(x).requires_grad_() for x in (q, k, v))
        F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).backward(grad)

    peak = _forward_peak(q, k, v, causal)
    out = q.size * 4
    assert peak < out + out // 8 + 65536, f"the forward's peak {peak} B is more than its output ({out} B) and lse"
    a = np.random.default_rng(0).standard_normal((GEMM, GEMM)).astype(np.float32)
    steps = {"microtensor": ours, "sgemm": lambda: _backend.K.matmul(a, a)}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(threads)
        tq, tk, tv, tg = (torch.from_numpy(x) for x in (q, k, v, g))

        def theirs() -> None:
            qt, kt, vt = (x.detach().requires_grad_() for x in (tq, tk, tv))
            torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).backward(tg)

        steps["torch"] = theirs
    benchmark.group = f"attention {_case_id(case)} {threads}t"
    benchmark.extra_info.update(threads=threads, flops=_flops(*case), forward_peak_bytes=peak,
                                score_array_bytes=q.shape[0] * HEADS * t * t * 4)
    benchmark.extra_info["medians"] = interleaved(benchmark, steps, ROUNDS)


def table(path: str) -> str:
    """Markdown rows from a --benchmark-json file: times, ratio, GFLOP/s, share of the same rounds' sgemm, peak."""
    rows = ["| case | threads | microtensor ms | PyTorch ms | ratio | GFLOP/s | sgemm GFLOP/s | % of sgemm | "
            "forward peak / one T² array |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b in json.load(open(path))["benchmarks"]:
        info = b["extra_info"]
        m = info["medians"]["cpu" if info["threads"] == 1 else "wall"]
        ours, theirs = m["microtensor"], m.get("torch")
        rate, gemm = info["flops"] / ours, 2.0 * GEMM**3 / m["sgemm"]
        torch_cells = f"{theirs * 1e3:.2f} | {ours / theirs:.2f}" if theirs else "- | -"
        rows.append(f"| {b['group'].split()[1]} | {info['threads']} | {ours * 1e3:.2f} | {torch_cells} | "
                    f"{rate / 1e9:.1f} | {gemm / 1e9:.1f} | {100 * rate / gemm:.0f}% | "
                    f"{info['forward_peak_bytes'] / 2**20:.2f} / {info['score_array_bytes'] / 2**20:.1f} MiB |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(sys.argv[1]))
