"""Attention forward+backward: microtensor's blocked kernels against PyTorch's scaled_dot_product_attention.

Run:   python -m pytest benchmarks/test_attention.py --benchmark-only --benchmark-json=attention.json
Table: python benchmarks/test_attention.py attention.json   (markdown rows for docs/PERFORMANCE.md)
On a shared machine, time the 1-thread cases in CPU time (wall time there measures the other users):
       python -m pytest benchmarks/test_attention.py --benchmark-only --benchmark-timer=time.process_time \
           -k "not -2 and not 2]" --benchmark-json=attention.json

T 64, 128, 256 and 512, head width 32 and 64, causal or not, 1024 tokens (batch 1024 / T) of 4 heads,
at 1 and 2 threads (PyTorch gets as many). Each microtensor case also records the forward's peak
traced memory (numpy's allocations; the kernel's own workspace is a few tiles of T x head width per
thread), which must stay within the output and its log-sum-exp whatever T, next to the size of one
(B, H, T, T) float32 score array, which the math path would make. The 1024^3 sgemm timed in the same
run gives the GEMM throughput the attention GFLOP/s are compared with. FLOPs count the products,
12 B H T^2 D for forward and backward (not the backward's recomputation), halved under a causal mask.
Both sides take their inputs without a copy (a 1 MiB copy of each of q, k, v is ~1 ms, a fifth of a
T 128 causal step here), so the times are attention and autograd only.
"""

from __future__ import annotations

import json
import sys
import tracemalloc

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn.functional as F
from microtensor import _backend

TOKENS, HEADS = 1024, 4
THREADS = [1, 2]
CASES = [(t, d, causal) for t in (64, 128, 256, 512) for d in (32, 64) for causal in (False, True)]
GEMM = 1024


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


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_attention_microtensor(benchmark, case: tuple, threads: int) -> None:
    t, d, causal = case
    _threads(threads)
    q, k, v, g = _inputs(t, d)
    grad = mt.tensor(g)

    def step() -> None:
        qt, kt, vt = (mt.from_numpy(x).requires_grad_() for x in (q, k, v))
        F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).backward(grad)

    inputs = [mt.tensor(x) for x in (q, k, v)]
    tracemalloc.start()
    F.scaled_dot_product_attention(*inputs, is_causal=causal)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    scores, out = q.shape[0] * HEADS * t * t * 4, q.size * 4
    assert peak < out + out // 8 + 65536, f"the forward's peak {peak} B is more than its output ({out} B) and lse"
    benchmark.group = f"attention {_case_id(case)} {threads}t"
    benchmark.extra_info.update(impl="microtensor", threads=threads, flops=_flops(*case), forward_peak_bytes=peak,
                                score_array_bytes=scores)
    benchmark.pedantic(step, rounds=15, warmup_rounds=2)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_attention_torch(benchmark, case: tuple, threads: int) -> None:
    torch = pytest.importorskip("torch")
    t, d, causal = case
    torch.set_num_threads(threads)
    q, k, v, g = (torch.from_numpy(x) for x in _inputs(t, d))

    def step() -> None:
        qt, kt, vt = (x.detach().requires_grad_() for x in (q, k, v))
        torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).backward(g)

    benchmark.group = f"attention {_case_id(case)} {threads}t"
    benchmark.extra_info.update(impl="torch", threads=threads, flops=_flops(*case))
    benchmark.pedantic(step, rounds=15, warmup_rounds=2)


@pytest.mark.parametrize("threads", THREADS)
def test_gemm_throughput(benchmark, threads: int) -> None:
    """The sgemm the attention GFLOP/s are compared with, in the same run."""
    _threads(threads)
    a = np.random.default_rng(0).standard_normal((GEMM, GEMM)).astype(np.float32)
    benchmark.group = f"sgemm {GEMM}^3 {threads}t"
    benchmark.extra_info.update(impl="sgemm", threads=threads, flops=2.0 * GEMM**3)
    benchmark.pedantic(lambda: _backend.K.matmul(a, a), rounds=10, warmup_rounds=2)


def table(path: str) -> str:
    """Markdown rows from a --benchmark-json file: times, ratio, GFLOP/s, share of the sgemm's, forward peak."""
    runs = json.load(open(path))["benchmarks"]
    gemm = {b["extra_info"]["threads"]: b["extra_info"]["flops"] / b["stats"]["median"] for b in runs
            if b["extra_info"]["impl"] == "sgemm"}
    by_group: dict = {}
    for b in runs:
        if b["extra_info"]["impl"] != "sgemm":
            by_group.setdefault(b["group"], {})[b["extra_info"]["impl"]] = b
    rows = ["| case | threads | microtensor ms | PyTorch ms | ratio | GFLOP/s | % of sgemm | forward peak / "
            "one T² array |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for group, impls in by_group.items():
        ours, theirs = impls.get("microtensor"), impls.get("torch")
        if ours is None or theirs is None:
            continue
        info, t_ours, t_theirs = ours["extra_info"], ours["stats"]["median"], theirs["stats"]["median"]
        rate = info["flops"] / t_ours
        rows.append(f"| {group.split()[1]} | {info['threads']} | {t_ours * 1e3:.2f} | {t_theirs * 1e3:.2f} | "
                    f"{t_ours / t_theirs:.2f} | {rate / 1e9:.1f} | {100 * rate / gemm[info['threads']]:.0f}% | "
                    f"{info['forward_peak_bytes'] / 2**20:.2f} / {info['score_array_bytes'] / 2**20:.1f} MiB |")
    rows.append("")
    rows += [f"sgemm {GEMM}^3 at {n} thread(s): {rate / 1e9:.1f} GFLOP/s" for n, rate in sorted(gemm.items())]
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(sys.argv[1]))
