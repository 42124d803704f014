"""sgemm GFLOP/s at 1 and 2 threads: microtensor against numpy's OpenBLAS and PyTorch, and the core's peak.

Run (OpenBLAS free to pick its own kernel for this CPU, whatever the machine's defaults say):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/test_gemm.py \
        --benchmark-only --benchmark-json=gemm.json
    python benchmarks/test_gemm.py gemm.json [before.json]   # the markdown table (before: an older build's run)

On a shared machine, time the 1-thread rows in CPU time (`-k 1thread --benchmark-timer=time.process_time`):
other jobs then slow them only through the caches, not by taking the core away. Where the machine's speed
moves by more than the differences (slow spells of up to 2x for tens of seconds on these VMs), `-k interleaved`
runs the issue's large products with microtensor, numpy, PyTorch and the peak probe in alternation, so every
share of the peak comes from the same rounds (CPU time at 1 thread, wall time at more, where each library's
turn starts after a quarter second's sleep: numpy's idle OpenBLAS workers spin ~0.1 s after its products
and took a core from the next library's threads);
`python benchmarks/test_gemm.py gemm.json` prints their table after the others.

The peak is measured, not read from a data sheet: a C loop of 12 independent FMA chains, 16 wide where
the CPU has AVX-512 (the sgemm kernel microtensor picks there), else 8 wide (`PEAK_SOURCE`, built with
`cc` for the run), times the core's fused multiply-add throughput (its fastest round); the table gives
every GEMM's median share of it (1 thread: one core's peak; 2 threads: twice that, and in the interleaved
rows also the probe run on every thread at once: the cores' peak together). Shapes:
the issue's large products, then the char GPT's and seed model's small-K and skinny ones (inner
dimension 16 of one head, 16 output columns, weight gradients with K = 2048 rows, make lm's among them) and the
per-head batched products of attention. Every time includes the Python call and output allocation.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from test_train_step import SETTLE_S, THREADS, interleaved

IMPLS = ["microtensor", "numpy", "torch"]

# (label, M, K, N, trans_a, trans_b): C (M x N) = op(A) (M x K) @ op(B) (K x N)
LARGE = [
    ("2048x256x1024", 2048, 256, 1024, False, False),
    ("2048x1024x256", 2048, 1024, 256, False, False),
    ("4096x384x1536", 4096, 384, 1536, False, False),
    ("1024^3", 1024, 1024, 1024, False, False),
    ("2048^3", 2048, 2048, 2048, False, False),
]
SMALL = [
    ("head dx 2048x16 @ 16x64", 2048, 16, 64, False, False),
    ("head fwd 2048x64 @ (16x64)^T", 2048, 64, 16, False, True),
    ("head dW (2048x16)^T @ 2048x64", 16, 2048, 64, True, False),
    ("proj 2048x64 @ (64x64)^T", 2048, 64, 64, False, True),
    ("ffn 2048x64 @ (256x64)^T", 2048, 64, 256, False, True),
    ("ffn 2048x256 @ (64x256)^T", 2048, 256, 64, False, True),
    ("ffn dW (2048x64)^T @ 2048x256", 64, 2048, 256, True, False),
    ("seed qkv 256x64 @ (192x64)^T", 256, 64, 192, False, True),
    ("lm dW (2048x384)^T @ 2048x128", 384, 2048, 128, True, False),
    ("lm dW (2048x128)^T @ 2048x512", 128, 2048, 512, True, False),
]
# (label, batch, M, K, N, trans_b): the per-head products of one attention module, batch 32, T 64, head 16
BATCHED = [
    ("q@k^T (32,64,16)@(32,16,64)", 32, 64, 16, 64, True),
    ("att@v (32,64,64)@(32,64,16)", 32, 64, 64, 16, False),
]

PEAK_SOURCE = r"""
#include <immintrin.h>
#include <stdint.h>
/* 12 independent FMA chains in registers (more than latency x FMA units on any AVX2 or AVX-512 core),
 * 12 x lanes x 2 flops per iteration; the empty asm keeps gcc from folding the chains. */
#define KEEP __asm__ volatile("" : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6), \
                              "+v"(c7), "+v"(c8), "+v"(c9), "+v"(c10), "+v"(c11))
#define PEAK(name, isa, vec, set1, fmadd, add, first)                               \
    __attribute__((target(isa))) float name(int64_t iters) {                        \
        vec a = set1(1.0000001f), b = set1(0.9999999f), s = set1(0.0f);             \
        vec c0 = s, c1 = s, c2 = s, c3 = s, c4 = s, c5 = s, c6 = s, c7 = s, c8 = s, c9 = s, c10 = s, c11 = s; \
        for (int64_t i = 0; i < iters; i++) {                                       \
            c0 = fmadd(a, b, c0); c1 = fmadd(a, b, c1); c2 = fmadd(a, b, c2); c3 = fmadd(a, b, c3); \
            c4 = fmadd(a, b, c4); c5 = fmadd(a, b, c5); c6 = fmadd(a, b, c6); c7 = fmadd(a, b, c7); \
            c8 = fmadd(a, b, c8); c9 = fmadd(a, b, c9); c10 = fmadd(a, b, c10); c11 = fmadd(a, b, c11); \
            KEEP;                                                                   \
        }                                                                           \
        s = add(add(add(c0, c1), add(c2, c3)), add(add(c4, c5), add(c6, c7)));      \
        return first(add(s, add(add(c8, c9), add(c10, c11))));                     \
    }
PEAK(fma_peak_avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_cvtss_f32)
PEAK(fma_peak_avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_cvtss_f32)
int fma_lanes(void) { return __builtin_cpu_supports("avx512f") ? 16 : 8; }
"""
PEAK_ITERS = 2_000_000
# The probe on every thread at once runs 10x longer: the pool's threads start up to ~0.5 ms apart, which read 10-20%
# below the cores' rate together at PEAK_ITERS (4 ms) and within 1-2% of it at this length.
AT_ONCE_ITERS = 10 * PEAK_ITERS


@pytest.fixture(scope="module")
def kernels():
    """The C backend; skip when the extension is not built."""
    try:
        return importlib.import_module("microtensor._backend.c")
    except ImportError as err:
        pytest.skip(f"C kernels not built ({err})")


def openblas():
    """numpy's OpenBLAS as a ctypes library (found among the loaded objects), or None."""
    maps = open("/proc/self/maps").read().split()
    paths = sorted({p for p in maps if "openblas" in p.lower() and ".so" in p})
    return ctypes.CDLL(paths[0]) if paths else None


def blas_call(lib, names: tuple, restype, *args):
    """Call the first of `names` the library exports (OpenBLAS builds prefix and suffix them)."""
    for name in names:
        fn = getattr(lib, name, None) if lib is not None else None
        if fn is not None:
            fn.restype = restype
            return fn(*args)
    return None


def set_threads(c, n: int) -> None:
    """n threads for microtensor, numpy's OpenBLAS and PyTorch (each where it is there)."""
    c.set_num_threads(n)
    blas_call(openblas(), ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads"), None, ctypes.c_int(n))
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n)


def slug(label: str) -> str:
    """A test id usable in `-k` expressions."""
    return re.sub(r"\W+", "_", label.replace("^", "p")).strip("_")


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    """Random float32 values."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def rounds_for(flops: int) -> int:
    """Rounds giving each case about 0.3 s at 50 GFLOP/s (at least 5)."""
    return max(5, min(2000, int(0.3 * 50e9 / flops)))


def run_case(benchmark, c, impl: str, threads: int, group: str, flops: int, fns: dict) -> None:
    """Time fns[impl] at `threads` threads in pytest-benchmark group `group`."""
    if impl == "torch":
        pytest.importorskip("torch")
    set_threads(c, threads)
    benchmark.group = f"{group} [{threads} thread{'s' if threads > 1 else ''}]"
    benchmark.extra_info.update(flops=flops, threads=threads, label=group)
    if impl == "numpy":
        core = blas_call(openblas(), ("scipy_openblas_get_corename64_", "openblas_get_corename"), ctypes.c_char_p)
        benchmark.extra_info["openblas_core"] = core.decode() if core else "unknown"
    fn = fns[impl]()
    benchmark.pedantic(fn, rounds=rounds_for(flops), warmup_rounds=1)


def torch_of(*arrays: np.ndarray):
    """torch views of numpy arrays (no copy)."""
    import torch

    return [torch.from_numpy(a) for a in arrays]


@pytest.mark.parametrize("threads", THREADS, ids=[f"{n}thread" for n in THREADS])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", LARGE + SMALL, ids=[slug(s[0]) for s in LARGE + SMALL])
def test_sgemm(benchmark, kernels, case, impl: str, threads: int) -> None:
    label, m, k, n, ta, tb = case
    a = rand(*((k, m) if ta else (m, k)), seed=1)
    b = rand(*((n, k) if tb else (k, n)), seed=2)
    an, bn = (a.T if ta else a), (b.T if tb else b)

    def torch_fn():
        at, bt = torch_of(a, b)
        at, bt = (at.t() if ta else at), (bt.t() if tb else bt)
        return lambda: at @ bt

    fns = {"microtensor": lambda: lambda: kernels.matmul(a, b, ta, tb), "numpy": lambda: lambda: an @ bn,
           "torch": torch_fn}
    run_case(benchmark, kernels, impl, threads, f"sgemm {label}", 2 * m * n * k, fns)


@pytest.mark.parametrize("threads", THREADS, ids=[f"{n}thread" for n in THREADS])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", BATCHED, ids=[slug(s[0]) for s in BATCHED])
def test_batched_sgemm(benchmark, kernels, case, impl: str, threads: int) -> None:
    label, batch, m, k, n, tb = case
    a = rand(batch, m, k, seed=3)
    b = rand(batch, n, k, seed=4) if tb else rand(batch, k, n, seed=4)
    bn = np.swapaxes(b, -1, -2) if tb else b  # k^T as the model makes it: a transposed view

    def torch_fn():
        at, bt = torch_of(a, b)
        bt = bt.transpose(-1, -2) if tb else bt
        return lambda: at @ bt

    fns = {"microtensor": lambda: lambda: kernels.matmul(a, bn), "numpy": lambda: lambda: a @ bn,
           "torch": torch_fn}
    run_case(benchmark, kernels, impl, threads, f"batched {label}", 2 * batch * m * n * k, fns)


@pytest.fixture(scope="module")
def fma_peak(tmp_path_factory):
    """The compiled peak probe as (function, flops per iteration), AVX-512 where the CPU has it; skip where there
    is no C compiler or no x86-64."""
    folder = tmp_path_factory.mktemp("peak")
    src, lib = folder / "peak.c", folder / "peak.so"
    src.write_text(PEAK_SOURCE)
    try:
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"peak probe not built: {err}")
    probe = ctypes.CDLL(str(lib))
    lanes = probe.fma_lanes()
    fn = probe.fma_peak_avx512 if lanes == 16 else probe.fma_peak_avx2
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_int64]
    return fn, 12 * lanes * 2


def test_peak_probe(benchmark, fma_peak) -> None:
    """One core's fused multiply-add throughput (the 1-thread peak every GEMM row is compared with)."""
    benchmark.group = "peak: FMA throughput of one core"
    fn, flops_per_iter = fma_peak
    benchmark.extra_info.update(flops=PEAK_ITERS * flops_per_iter, threads=1, label="peak")
    benchmark.pedantic(fn, args=(PEAK_ITERS,), rounds=15, warmup_rounds=2)


@pytest.mark.parametrize("threads", THREADS, ids=[f"{n}thread" for n in THREADS])
@pytest.mark.parametrize("case", LARGE, ids=[slug(s[0]) for s in LARGE])
def test_interleaved(benchmark, kernels, fma_peak, case, threads: int) -> None:
    """One large product on each library and the 1-core peak probe, in alternation (see the module docstring)."""
    label, m, k, n, _, _ = case
    a, b = rand(m, k, seed=1), rand(k, n, seed=2)
    set_threads(kernels, threads)
    probe, flops_per_iter = fma_peak
    steps = {"microtensor": lambda: kernels.matmul(a, b), "numpy": lambda: a @ b, "peak": lambda: probe(PEAK_ITERS)}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        at, bt = torch_of(a, b)
        steps["torch"] = lambda: at @ bt
    benchmark.group = f"interleaved sgemm {label} [{threads} thread{'s' if threads > 1 else ''}]"
    benchmark.extra_info.update(flops=2 * m * n * k, peak_flops=PEAK_ITERS * flops_per_iter, threads=threads,
                                label=label, at_once_flops=threads * AT_ONCE_ITERS * flops_per_iter)
    rounds = max(5, min(15, rounds_for(2 * m * n * k)))
    with ThreadPoolExecutor(threads) as pool:  # ctypes lets go of the GIL: one probe per core, all at once
        if threads > 1:
            steps["peak, all threads"] = lambda: list(pool.map(probe, [AT_ONCE_ITERS] * threads))
        benchmark.extra_info["medians"] = interleaved(benchmark, steps, rounds, SETTLE_S if threads > 1 else 0.0)


def interleaved_table(benches: list) -> str:
    """GFLOP/s of each library per product and thread count, and shares of the same rounds' peak (1 core's probe
    times the threads), from test_interleaved's medians; at more threads also the probe run on every thread at
    once (the cores' peak together, which a shared clock or power budget may hold below the sum) and
    microtensor's share of it."""
    lines = ["| product | threads | microtensor | numpy | torch | peak (probe x threads) | microtensor | numpy | "
             "torch | peak (all threads at once) | microtensor |", "|---|---:|" + "---:|" * 9]
    for bench in benches:
        info = bench["extra_info"]
        threads, times = info["threads"], info["medians"]["cpu" if info["threads"] == 1 else "wall"]
        peak = threads * info["peak_flops"] / times["peak"] / 1e9
        at_once = times.get("peak, all threads")  # absent at 1 thread and from older runs
        together = info["at_once_flops"] / at_once / 1e9 if at_once else peak if threads == 1 else None
        rates = {i: info["flops"] / times[i] / 1e9 for i in IMPLS if i in times}
        cells = [f"{rates[i]:.1f}" if i in rates else "-" for i in IMPLS]
        shares = [f"{100 * rates[i] / peak:.0f}%" if i in rates else "-" for i in IMPLS]
        last = [f"{together:.1f}", f"{100 * rates['microtensor'] / together:.0f}%"] if together else ["-", "-"]
        lines.append(f"| {info['label']} | {threads} | " + " | ".join(cells + [f"{peak:.1f}"] + shares + last) + " |")
    return "\n".join(lines)


def markdown_table(path: str, before: str | None = None) -> str:
    """GFLOP/s (from medians; the peak from the probe's fastest round) per shape and thread count, with shares of
    the measured peak; `before`, a run of an earlier microtensor, adds its column. test_interleaved's rows, if the
    run has them, follow in a table of their own."""
    peak = None
    rows: dict[tuple, dict[str, float]] = {}
    core = "unknown"
    every = json.load(open(path))["benchmarks"]
    benches = [b for b in every if "medians" not in b["extra_info"]]
    alternated = [b for b in every if "medians" in b["extra_info"]]
    tail = "\n\n" + interleaved_table(alternated) if alternated else ""
    if not benches:
        return tail.lstrip()
    if before:
        benches += [dict(b, params=dict(b["params"], impl="before")) for b in json.load(open(before))["benchmarks"]
                    if b["params"].get("impl") == "microtensor"]
    for bench in benches:
        info, stats = bench["extra_info"], bench["stats"]
        if info["label"] == "peak":  # the fastest round: a peak is what the core can do, not a typical round
            peak = info["flops"] / stats["min"] / 1e9
            continue
        gflops = info["flops"] / stats["median"] / 1e9
        rows.setdefault((info["label"], info["threads"]), {})[bench["params"]["impl"]] = gflops
        core = info.get("openblas_core", core)
    head = f"Peak (probe, 1 core): {peak:.1f} GFLOP/s. numpy's OpenBLAS kernel: {core}.\n\n" if peak else ""
    impls = (["before"] if before else []) + IMPLS
    lines = ["| product | threads | " + " | ".join(impls) + " | microtensor/numpy | microtensor/torch | "
             "microtensor % of peak |", "|---|---:|" + "---:|" * (len(impls) + 3)]
    for (label, threads), by in rows.items():
        mt = by.get("microtensor")
        cells = [f"{by[i]:.1f}" if i in by else "-" for i in impls]
        ratios = [f"{mt / by[i]:.2f}" if mt and i in by else "-" for i in ("numpy", "torch")]
        share = f"{100 * mt / (peak * threads):.0f}%" if mt and peak else "-"
        lines.append(f"| {label} | {threads} | " + " | ".join(cells + ratios + [share]) + " |")
    return head + "\n".join(lines) + tail


if __name__ == "__main__":
    print(markdown_table(*sys.argv[1:3]))
