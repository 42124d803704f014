"""Kernel benchmarks: the C backend against the numpy composite and PyTorch, one group per kernel/shape.

Run:   python -m pytest benchmarks/test_kernels.py --benchmark-only --benchmark-json=kernels.json
Table: python benchmarks/test_kernels.py kernels.json   (markdown rows for docs/PERFORMANCE.md)

Shapes are the seed model's (batch 32 x 8 tokens = 256 rows, d_model 64, FFN 256,
4 heads of 16, vocab 20) plus 512 and 1024 square sgemm. Every case times what op
code pays: the Python call, its argument checks and the output allocation.
"""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest

import microtensor as mt
from microtensor.ops import adam, cross_entropy, dropout, embedding, gelu, layernorm, softmax

IMPLS = ["microtensor", "numpy", "torch"]
ROWS, D, FFN, HEADS, T, VOCAB = 256, 64, 256, 4, 8, 20

# (label, M, K, N, trans_a, trans_b): C (M x N) = op(A) (M x K) @ op(B) (K x N)
SGEMM = [
    ("x@W 256x64@64x64", 256, 64, 64, False, False),
    ("x@W 256x64@64x192", 256, 64, 192, False, False),
    ("x@W 256x64@64x256", 256, 64, 256, False, False),
    ("h@W 256x256@256x64", 256, 256, 64, False, False),
    ("x@W^T 256x64@(64x64)^T", 256, 64, 64, False, True),
    ("x@W^T 256x64@(256x64)^T", 256, 64, 256, False, True),
    ("dW x^T@g (256x64)^T@256x64", 64, 256, 64, True, False),
    ("dW h^T@g (256x256)^T@256x64", 256, 256, 64, True, False),
    ("dx g@W 256x64@64x256", 256, 64, 256, False, False),
    ("square 512", 512, 512, 512, False, False),
    ("square 1024", 1024, 1024, 1024, False, False),
]


@pytest.fixture(scope="module")
def kernels():
    """The C backend module and the numpy reference; skip when the extension is not built."""
    try:
        c = importlib.import_module("microtensor._backend.c")
    except ImportError as err:
        pytest.skip(f"C kernels not built ({err})")
    return c, importlib.import_module("microtensor._backend.reference")


def torch_or_skip(c):
    """PyTorch with as many threads as the C kernels use; skip when it is not installed."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(c.num_threads())
    return torch


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    """Random float32 values."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", SGEMM, ids=[s[0] for s in SGEMM])
def test_sgemm(benchmark, kernels, case, impl: str) -> None:
    c, _ = kernels
    label, m, k, n, ta, tb = case
    a = rand(*((k, m) if ta else (m, k)), seed=1)
    b = rand(*((n, k) if tb else (k, n)), seed=2)
    benchmark.group = f"sgemm {label}"
    benchmark.extra_info["flops"] = 2 * m * n * k
    if impl == "microtensor":
        benchmark(c.matmul, a, b, ta, tb)
    elif impl == "numpy":
        an, bn = (a.T if ta else a), (b.T if tb else b)
        benchmark(np.matmul, an, bn)
    else:
        torch = torch_or_skip(c)
        at, bt = torch.from_numpy(a), torch.from_numpy(b)
        at, bt = (at.t() if ta else at), (bt.t() if tb else bt)
        benchmark(torch.matmul, at, bt)


def _softmax_case(k):
    bh = ROWS // T * HEADS
    x, g = rand(bh, T, T, seed=3), rand(bh, T, T, seed=4)

    def run():
        y = softmax._softmax_forward(x)
        return softmax._softmax_backward(y, g)

    return run, (x, g)


def _layernorm_case(k):
    x, g, w, b = rand(ROWS, D, seed=5), rand(ROWS, D, seed=6), rand(D, seed=7), rand(D, seed=8)

    def run():
        y, mean, rstd = layernorm._layernorm_forward(x, w, b, 1e-5)
        return layernorm._layernorm_backward(g, x, w, mean, rstd)

    return run, (x, g, w, b)


def _long_rows_case(k):
    """Wider rows than the seed model's (GPT-2's d_model, a 1000-class head): the vector and blocked-sum paths."""
    x, g, w, b = rand(ROWS, 768, seed=25), rand(ROWS, 768, seed=26), rand(768, seed=27), rand(768, seed=28)
    logits = rand(ROWS, 1000, seed=29)

    def run():
        y, mean, rstd = layernorm._layernorm_forward(x, w, b, 1e-5)
        layernorm._layernorm_backward(g, x, w, mean, rstd)
        return softmax._softmax_forward(logits), softmax._log_softmax_forward(logits)

    return run, None


def _attend(k, q, kk, v, g, causal: bool, scale: float):
    """Forward and backward of attention on (B, H, T, d) views: the blocked kernels when k is the C backend,
    else their numpy reference (microtensor/ops/attention.py holds both)."""
    attention = importlib.import_module("microtensor.ops.attention")
    if k.NAME != "c":
        out, lse, _ = attention.reference_forward(q, kk, v, None, causal, scale, None)
        return attention.reference_backward(g, q, kk, v, out, lse, None, None, causal, scale, None)
    call = attention._Call(q, kk, v, None, causal, scale, 0.0, None)
    out = np.empty(g.shape, np.float32)
    call.forward(out, False)
    grads = [np.empty_like(x) for x in (q, kk, v)]
    call.backward(g, out, *grads)
    return grads


def _attention_case(k):
    bh = ROWS // T * HEADS
    q, kk, v, g = (rand(bh, T, D // HEADS, seed=s) for s in (9, 10, 11, 12))
    scale = 1.0 / np.sqrt(D // HEADS)

    def run():
        return _attend(k, *(x[:, None] for x in (q, kk, v, g)), True, scale)

    return run, (q, kk, v, g, scale)


def _self_attention_case(k):
    qkv, g = rand(ROWS // T, T, 3 * D, seed=22), rand(ROWS // T, T, D, seed=23)
    scale = 1.0 / np.sqrt(D // HEADS)
    heads = qkv.reshape(ROWS // T, T, 3, HEADS, D // HEADS).transpose(2, 0, 3, 1, 4)  # views of the packed qkv
    g_heads = g.reshape(ROWS // T, T, HEADS, D // HEADS).transpose(0, 2, 1, 3)

    def run():
        return _attend(k, *heads, g_heads, False, scale)

    return run, (qkv, g)


def _dropout_case(k):
    x = rand(ROWS, D, seed=24)

    def run():
        return dropout._dropout_forward(x, 0.1, 12345)

    return run, None


def _cross_entropy_case(k):
    logits = rand(ROWS, VOCAB, seed=13) * 3
    targets = np.random.default_rng(14).integers(0, VOCAB, ROWS)

    def run():
        return cross_entropy._cross_entropy_forward(logits, targets, -100)

    return run, (logits, targets)


def _gelu_case(k):
    x, g = rand(ROWS, FFN, seed=15), rand(ROWS, FFN, seed=16)

    def run():
        gelu._gelu_forward(x)
        return gelu._gelu_backward(x, g)

    return run, (x, g)


def _adam_case(k):
    n = 100_000
    p, grad, m, v = rand(n, seed=17), rand(n, seed=18), np.zeros(n, np.float32), np.zeros(n, np.float32)

    def run():
        adam.adam_update(p, grad, m, v, 10, 1e-3, 0.9, 0.999, 1e-8, 0.01, True)

    return run, None


def _embedding_case(k):
    w, g = rand(VOCAB, D, seed=19), rand(ROWS, D, seed=21)
    ids = np.random.default_rng(20).integers(0, VOCAB, ROWS)

    def run():
        embedding._embedding_forward(w, ids)
        return embedding._embedding_backward(ids, g, VOCAB)

    return run, None


CASES = {
    "softmax fwd+bwd (128,8,8)": _softmax_case,
    "layernorm fwd+bwd (256,64)": _layernorm_case,
    "long rows: layernorm fwd+bwd (256,768), softmax and log_softmax fwd (256,1000)": _long_rows_case,
    "attention causal fwd+bwd (128,8,16)": _attention_case,
    "self_attention packed qkv fwd+bwd (32,8,3x64)": _self_attention_case,
    "dropout fwd (256,64)": _dropout_case,
    "cross_entropy fwd+bwd (256,20)": _cross_entropy_case,
    "gelu fwd+bwd (256,256)": _gelu_case,
    "adamw step 100k params": _adam_case,
    "embedding fwd+bwd (256 ids,20x64)": _embedding_case,
}


def _torch_run(torch, name: str, arrays):
    """The same forward+backward in PyTorch (autograd), or None where there is no counterpart."""
    if arrays is None:
        return None
    if name.startswith("softmax"):
        x, g = (torch.from_numpy(a) for a in arrays)

        def run():
            xr = x.detach().requires_grad_()
            torch.softmax(xr, -1).backward(g)
    elif name.startswith("layernorm"):
        x, g, w, b = (torch.from_numpy(a) for a in arrays)

        def run():
            xr = x.detach().requires_grad_()
            torch.nn.functional.layer_norm(xr, (D,), w.requires_grad_(), b.requires_grad_(), 1e-5).backward(g)
    elif name.startswith("attention"):
        q, kk, v, g = (torch.from_numpy(a) for a in arrays[:4])

        def run():
            qr, kr, vr = (a.detach().requires_grad_() for a in (q, kk, v))
            torch.nn.functional.scaled_dot_product_attention(qr, kr, vr, is_causal=True).backward(g)
    elif name.startswith("self_attention"):
        qkv, g = (torch.from_numpy(a) for a in arrays)

        def run():
            xr = qkv.detach().requires_grad_()
            B = xr.shape[0]
            heads = xr.view(B, T, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
            out = torch.nn.functional.scaled_dot_product_attention(heads[0], heads[1], heads[2])
            out.transpose(1, 2).reshape(B, T, D).backward(g)
    elif name.startswith("cross_entropy"):
        logits, targets = torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1])

        def run():
            lr = logits.detach().requires_grad_()
            torch.nn.functional.cross_entropy(lr, targets, reduction="sum").backward()
    elif name.startswith("gelu"):
        x, g = (torch.from_numpy(a) for a in arrays)

        def run():
            xr = x.detach().requires_grad_()
            torch.nn.functional.gelu(xr, approximate="tanh").backward(g)
    else:
        return None
    return run


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(CASES))
def test_fused(benchmark, kernels, name: str, impl: str) -> None:
    c, ref = kernels
    benchmark.group = name
    if impl == "torch":
        torch = torch_or_skip(c)
        run = _torch_run(torch, name, CASES[name](ref)[1])
        if run is None:
            pytest.skip("no PyTorch counterpart timed")
        benchmark(run)
        return
    previous = mt.backend.name()
    mt.backend.use("c" if impl == "microtensor" else "numpy")  # the ops' homes run the active backend's kernels
    try:
        run, _ = CASES[name](c if impl == "microtensor" else ref)
        benchmark(run)
    finally:
        mt.backend.use(previous)


def markdown_table(path: str) -> str:
    """Rows (kernel/shape, microtensor, numpy, torch medians in us, ratios) from a --benchmark-json file."""
    data = json.load(open(path))
    groups: dict[str, dict[str, dict]] = {}
    for bench in data["benchmarks"]:
        groups.setdefault(bench["group"], {})[bench["params"]["impl"]] = bench
    lines = ["| kernel, shape | microtensor (us) | numpy (us) | torch (us) | numpy/microtensor | "
             "torch/microtensor | microtensor GFLOP/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for group, by_impl in groups.items():
        med = {impl: by_impl[impl]["stats"]["median"] * 1e6 for impl in by_impl}
        mt = med.get("microtensor")
        flops = by_impl.get("microtensor", {}).get("extra_info", {}).get("flops")
        cells = [f"{med[i]:.1f}" if i in med else "-" for i in IMPLS]
        ratios = [f"{med[i] / mt:.2f}x" if mt and i in med else "-" for i in ("numpy", "torch")]
        gflops = f"{flops / (mt * 1e3):.0f}" if flops and mt else ""
        lines.append(f"| {group} | " + " | ".join(cells + ratios + [gflops]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table(sys.argv[1]))
