"""The blocked attention kernels (csrc/attention.c) against their numpy reference and PyTorch.

Sizes straddle the kernel's blocks (48 queries; 48 keys backward, 128 forward), its 6-row tiles and
vector widths (head widths padded to 8); masks, causal, dropout, saved weights, strided inputs, a
packed projection's heads (read in place below 32 keys, gathered from 32), NaN and inf, thread counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn.functional as F
from microtensor import _backend
from microtensor.ops.attention import _Call
from microtensor.ops.dropout import reference_dropout_forward

C_BUILT = not isinstance(_backend._load_c(), ImportError)
needs_c = pytest.mark.skipif(not C_BUILT, reason="C kernels not built")
NAN, INF = np.nan, np.inf

# (B, H, Tq, Tk, D, Dv): one element, odd widths, below / at / above a block, cross lengths both ways, keys over two
# of the forward's blocks (FWD_BK 256); one or two queries with whole-vector widths (the row path: decoding one
# position, keys past whole vectors of 8)
SHAPES = [(1, 1, 1, 1, 1, 1), (2, 3, 5, 5, 17, 17), (2, 1, 49, 49, 32, 32), (1, 2, 130, 130, 64, 64),
          (2, 2, 65, 65, 8, 5), (1, 2, 37, 100, 12, 20), (1, 1, 100, 37, 16, 16), (2, 3, 1, 257, 32, 32),
          (1, 2, 2, 13, 40, 24), (1, 1, 1, 1, 8, 8), (1, 1, 20, 300, 16, 8)]
# mode: (mask kind, dropout p, need_weights)
MODES = {"plain": ("none", 0.0, False), "padding": ("padding", 0.0, False), "mask+weights": ("full", 0.0, True),
         "dropout": ("none", 0.3, False), "dropout+weights": ("padding", 0.3, True), "weights": ("none", 0.0, True)}


def _inputs(shape: tuple, seed: int) -> tuple[np.ndarray, ...]:
    """float32 q, k, v and an output gradient g of one shape."""
    B, H, tq, tk, d, dv = shape
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(np.float32) for s in
                 ((B, H, tq, d), (B, H, tk, d), (B, H, tk, dv), (B, H, tq, dv)))


def _attend(q, k, v, g, mask=None, causal=False, scale=0.3, p=0.0, need_weights=False) -> dict:
    """Forward and backward of one call (the C kernels for float32 on the C backend, else the reference)."""
    call = _Call(q, k, v, mask, causal, scale, p, np.random.default_rng(5))
    out = np.empty((*q.shape[:-1], v.shape[-1]), q.dtype)
    call.forward(out, need_weights)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    call.backward(g, out, dq, dk, dv)
    return {"out": out, "lse": call.lse, "weights": call.weights, "dq": dq, "dk": dk, "dv": dv}


def _close(got: dict, want: dict, atol: float = 2e-5) -> None:
    """Every array of `got` equals `want`'s to float32 tolerance (NaN where NaN, inf where inf)."""
    for name, a in got.items():
        if a is not None:
            np.testing.assert_allclose(a, want[name], rtol=1e-4, atol=atol, err_msg=name)


def _mask(shape: tuple, kind: str, rng: np.random.Generator) -> np.ndarray | None:
    """None, a key-padding mask (B, 1, 1, Tk) read with zero strides, or a full random one with empty rows."""
    B, H, tq, tk = shape[:4]
    if kind == "none":
        return None
    if kind == "padding":
        keys = rng.random((B, 1, 1, tk)) > 0.3
        keys[..., 0] = True
        return np.broadcast_to(keys, (B, H, tq, tk))
    full = rng.random((B, H, tq, tk)) > 0.4
    full[0, 0, tq // 2] = False  # a query with nothing to attend: zero weights and output
    return full


@needs_c
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_kernel_matches_the_float64_reference(shape: tuple, causal: bool, mode: str) -> None:
    q, k, v, g = _inputs(shape, sum(shape))
    kind, p, need_weights = MODES[mode]
    mask = _mask(shape, kind, np.random.default_rng(1))
    kw = {"mask": mask, "causal": causal, "p": p, "need_weights": need_weights}
    with _on("c"):
        got = _attend(q, k, v, g, **kw)
    want = _attend(*(x.astype(np.float64) for x in (q, k, v, g)), **kw)
    _close(got, want)
    if mask is not None and mask.ndim == 4 and not mask[0, 0, shape[2] // 2].any():
        assert not got["out"][0, 0, shape[2] // 2].any() and got["lse"][0, 0, shape[2] // 2] == INF


@needs_c
@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_the_other_builds_match_the_reference_too(isa: str) -> None:
    """MICROTENSOR_ISA=generic or avx2 (as for sgemm) runs the kernels' baseline or AVX2 compilation, which an
    AVX-512 CPU would not pick: checked in a child."""
    if isa == "avx2" and _backend._load_c().ISA == "generic":
        pytest.skip("this CPU has no AVX2")
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "import test_flash_attention as t\n"
            "from microtensor._backend import c\n"
            f"assert c.ISA == {isa!r}, c.ISA\n"
            "for shape in t.SHAPES:\n"
            "    for mode in t.MODES:\n"
            "        t.test_kernel_matches_the_float64_reference(shape, True, mode)\n"
            "t.test_few_queries_read_a_strided_cache_in_place()\n"
            "for n in (7, 130):\n"
            "    for mode in ('dropout+weights', 'weights'):\n"
            "        t.test_heads_of_a_packed_projection_match_the_float64_reference(n, True, mode)\n"
            "    t.test_self_attention_last_only_is_the_full_ops_last_row('c', n, n == 7)\n")
    env = dict(os.environ, MICROTENSOR_ISA=isa)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@needs_c
def test_the_avx512_build_gives_the_avx2_builds_bits(tmp_path) -> None:
    """On an AVX-512 CPU its build sums every value in the AVX2 build's order: the same bits, so a training run
    (and the seed model's held-out accuracy) does not depend on which of the two the CPU gets."""
    if _backend._load_c().ISA != "avx512":
        pytest.skip("this CPU has no AVX-512")
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "import numpy as np\n"
            "import test_flash_attention as t\n"
            "out = {}\n"
            "for i, shape in enumerate(t.SHAPES):\n"
            "    for causal in (False, shape[2] == shape[3]):\n"
            "        got = t._attend(*t._inputs(shape, i), causal=causal, need_weights=causal)\n"
            "        out.update({f'{i}{causal}{name}': a for name, a in got.items() if a is not None})\n"
            "np.savez(sys.argv[1], **out)\n")
    for isa in ("avx512", "avx2"):
        env = dict(os.environ, MICROTENSOR_ISA=isa)
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / isa)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    wide, narrow = np.load(tmp_path / "avx512.npz"), np.load(tmp_path / "avx2.npz")
    assert wide.files == narrow.files and len(wide.files) > 50
    for name in wide.files:
        np.testing.assert_array_equal(wide[name], narrow[name], err_msg=name)


@needs_c
def test_saved_weights_and_recomputation_give_one_gradient() -> None:
    q, k, v, g = _inputs((2, 2, 70, 70, 32, 32), 3)
    with _on("c"):
        kept, recomputed = (_attend(q, k, v, g, causal=True, p=0.2, need_weights=w) for w in (True, False))
    assert kept["weights"].shape == (2, 2, 70, 70) and recomputed["weights"] is None
    _close({n: kept[n] for n in ("out", "dq", "dk", "dv")}, recomputed, atol=1e-6)


def _same_bits_at_1_and_2_threads(attend) -> None:
    """attend() (a dict of arrays, None where absent) on the C kernels at 1 and 2 threads gives the same bits."""
    before = _backend.get_num_threads()
    runs = []
    with _on("c"):
        try:
            for n in (1, 2):
                _backend.K.set_num_threads(n)
                runs.append(attend())
        finally:
            _backend.K.set_num_threads(before)
    for name in runs[0]:
        if runs[0][name] is not None:
            np.testing.assert_array_equal(runs[0][name], runs[1][name], err_msg=name)


@needs_c
def test_thread_count_does_not_change_a_bit() -> None:
    """Each (batch, head) pair is one task computed in one order, whatever thread runs it."""
    q, k, v, g = _inputs((2, 3, 90, 90, 32, 32), 4)
    mask = _mask((2, 3, 90, 90), "padding", np.random.default_rng(2))
    _same_bits_at_1_and_2_threads(lambda: _attend(q, k, v, g, mask=mask, causal=True, p=0.1, need_weights=True))


@needs_c
def test_few_queries_read_a_strided_cache_in_place() -> None:
    """Decoding: one or two new queries (heads of a packed projection) against the first Tk positions of a key/value
    cache (2, B, H, max_len, d), read in place by strides; the same bits at 1 and 2 threads."""
    rng = np.random.default_rng(9)
    cache = rng.standard_normal((2, 3, 4, 300, 32)).astype(np.float32)
    for tq, tk in ((1, 257), (2, 131), (1, 9)):
        q = rng.standard_normal((3, tq, 3, 4, 32)).astype(np.float32).transpose(2, 0, 3, 1, 4)[0]
        g = rng.standard_normal(q.shape).astype(np.float32)
        k, v = cache[0, :, :, :tk], cache[1, :, :, :tk]
        with _on("c"):
            got = _attend(q, k, v, g, need_weights=True)
        _close(got, _attend(*(x.astype(np.float64) for x in (q, k, v, g)), need_weights=True))
        _same_bits_at_1_and_2_threads(lambda: _attend(q, k, v, g))  # noqa: B023 (called at once)


def _packed(B: int, H: int, t: int, d: int, seed: int) -> tuple[np.ndarray, ...]:
    """q, k, v and g as F.self_attention passes them: (B, H, T, d) views of a packed (B, T, 3, H, d)
    projection and of a (B, T, H, d) gradient, heads side by side in every row."""
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((B, t, 3, H, d)).astype(np.float32)
    g = rng.standard_normal((B, t, H, d)).astype(np.float32)
    return (*qkv.transpose(2, 0, 3, 1, 4), g.transpose(0, 2, 1, 3))


def _attend_packed(q, k, v, g, **kw) -> dict:
    """_attend with the output and gradients in F.self_attention's layouts (split views of (B, T, ...))."""
    B, H, t, d = q.shape
    call = _Call(q, k, v, kw.get("mask"), kw.get("causal", False), 0.3, kw.get("p", 0.0), np.random.default_rng(5))
    out = np.empty((B, t, H, d), q.dtype).transpose(0, 2, 1, 3)
    call.forward(out, kw.get("need_weights", False))
    dq, dk, dv = np.empty((B, t, 3, H, d), q.dtype).transpose(2, 0, 3, 1, 4)
    call.backward(g, out, dq, dk, dv)
    return {"out": out, "lse": call.lse, "weights": call.weights, "dq": dq, "dk": dk, "dv": dv}


@needs_c
@pytest.mark.parametrize("t", [7, 49, 130, 200])  # read in place; gathered, below / above the forward's key block
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", ["plain", "padding", "dropout+weights", "weights"])  # weights: kept, read in place
def test_heads_of_a_packed_projection_match_the_float64_reference(t: int, causal: bool, mode: str) -> None:
    """The path that gathers a batch row's heads at once (F.self_attention's layout), tiles cut at the diagonal."""
    q, k, v, g = _packed(2, 3, t, 16, t)
    kind, p, need_weights = MODES[mode]
    kw = {"mask": _mask((2, 3, t, t), kind, np.random.default_rng(1)), "causal": causal, "p": p,
          "need_weights": need_weights}
    with _on("c"):
        got = _attend_packed(q, k, v, g, **kw)
    _close(got, _attend(*(np.ascontiguousarray(x, np.float64) for x in (q, k, v, g)), **kw))


@needs_c
def test_thread_count_does_not_change_a_bit_for_packed_heads() -> None:
    """9 (batch, head) pairs on 2 threads: a thread starts inside a batch row, gathering part of its heads."""
    q, k, v, g = _packed(3, 3, 75, 8, 11)
    _same_bits_at_1_and_2_threads(lambda: _attend_packed(q, k, v, g, causal=True))


def test_dropout_mask_is_the_dropout_kernels_and_fixed_by_the_generator(backend: str) -> None:
    rng = np.random.default_rng(6)
    q, k, v = (mt.tensor(rng.standard_normal((2, 3, 50, 16)).astype(np.float32)) for _ in range(3))
    out, weights = F.scaled_dot_product_attention(q, k, v, dropout_p=0.25, generator=np.random.default_rng(9),
                                                  need_weights=True)
    again = F.scaled_dot_product_attention(q, k, v, dropout_p=0.25, generator=np.random.default_rng(9))
    np.testing.assert_array_equal(out.numpy(), again.numpy())
    seed = int(np.random.default_rng(9).integers(1 << 63))
    _, factors = reference_dropout_forward(np.ones(weights.shape, np.float32), 0.25, seed)
    np.testing.assert_allclose(out.numpy(), (weights.numpy() * factors) @ v.numpy(), rtol=1e-5, atol=1e-6)
    assert 0.2 < (factors == 0).mean() < 0.3


@pytest.mark.parametrize("t", [1, 7, 49, 130])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_and_self_attention_match_torch(torch, backend: str, t: int, causal: bool) -> None:
    rng = np.random.default_rng(t)
    B, H, hd = 2, 2, 24
    qkv = rng.standard_normal((B, t, 3 * H * hd)).astype(np.float32)
    keys = rng.random((B, 1, 1, t)) > 0.25
    keys[..., 0] = True
    mask = None if causal else keys
    x = mt.tensor(qkv, requires_grad=True)
    out = F.self_attention(x, H, mask=mask, is_causal=causal)
    tx = torch.tensor(qkv, requires_grad=True)
    heads = [h.reshape(B, t, H, hd).transpose(1, 2) for h in tx.split(H * hd, dim=-1)]
    tmask = None if mask is None else torch.tensor(mask)
    expected = torch.nn.functional.scaled_dot_product_attention(*heads, attn_mask=tmask, is_causal=causal)
    expected = expected.transpose(1, 2).reshape(B, t, H * hd)
    g = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(mt.tensor(g))
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=5e-5)
    q, k, v = (mt.tensor(h.detach().numpy()) for h in heads)  # transposed views: read in place by strides
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    np.testing.assert_allclose(sdpa.numpy(), out.numpy().reshape(B, t, H, hd).transpose(0, 2, 1, 3), atol=1e-6)


@pytest.mark.parametrize("t", [1, 7, 49, 130])
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_last_only_is_the_full_ops_last_row(backend: str, t: int, causal: bool) -> None:
    """Only the last position querying gives the full op's last output and weights row, and its gradient:
    the other queries' q rows get zeros, every k and v row its share. The kernels give the same bits while
    all keys fit one block (the one-query path sums as the blocked pass does), so a model switching to
    last_only trains exactly as before."""
    rng = np.random.default_rng(t)
    B, H, hd = 2, 3, 16
    qkv = rng.standard_normal((B, t, 3 * H * hd)).astype(np.float32)
    mask = rng.random((B, 1, 1, t)) > 0.25
    mask[..., -1] = True
    g = rng.standard_normal((B, 1, H * hd)).astype(np.float32)
    results = []
    for last_only in (False, True):
        x = mt.tensor(qkv, requires_grad=True)
        out, weights = F.self_attention(x, H, mask=mask, is_causal=causal, need_weights=True, last_only=last_only)
        out, weights = (out, weights) if last_only else (out[:, -1:], weights[:, :, -1:])
        (out * mt.tensor(g)).sum().backward()
        results.append((out.numpy(), weights.numpy(), x.grad.numpy()))
    (out, weights, grad), (out1, weights1, grad1) = results
    assert out1.shape == (B, 1, H * hd) and weights1.shape == (B, H, 1, t)
    if backend == "c" and t <= 128:
        for a, b in zip(results[0], results[1]):
            np.testing.assert_array_equal(b, a)
    np.testing.assert_allclose(out1, out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights1, weights, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad1, grad, rtol=1e-5, atol=1e-6)
    assert not grad1[:, :-1, : H * hd].any()


def test_self_attention_last_only_of_no_positions_is_an_error() -> None:
    with pytest.raises(ValueError, match="self_attention: last_only needs a last position"):
        F.self_attention(mt.tensor(np.zeros((2, 0, 12), np.float32)), 2, last_only=True)


def test_reversed_and_strided_views(backend: str) -> None:
    """Views with reversed rows or heads are read in place by strides; strided columns are copied first."""
    rng = np.random.default_rng(8)
    big = rng.standard_normal((3, 2, 40, 50)).astype(np.float32)
    views = big[::-1, :, ::-1, :16], big[:, ::-1, :, 16:32], big[..., ::2][..., 9:25]
    g = rng.standard_normal((3, 2, 40, 16)).astype(np.float32)
    q, k, v = (mt.tensor(x, requires_grad=True) for x in views)
    F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(mt.tensor(g))
    want = _attend(*(np.ascontiguousarray(x, np.float64) for x in (*views, g)), causal=True, scale=0.25)
    _close({"dq": q.grad.numpy(), "dk": k.grad.numpy(), "dv": v.grad.numpy()}, want)


def test_unaligned_views_are_copied(backend: str) -> None:
    """float32 views at an odd byte offset (of a byte buffer) are copied, never read through a misaligned pointer."""
    rng = np.random.default_rng(10)
    q, k, v, g = _inputs((2, 2, 1, 9, 8, 8), 11)
    raw = np.zeros(k.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(k.shape)
    unaligned[...] = rng.standard_normal(k.shape)
    assert not unaligned.flags.aligned
    out = F.scaled_dot_product_attention(mt.from_numpy(q), mt.from_numpy(unaligned), mt.from_numpy(v), scale=0.3)
    want = _attend(*(x.astype(np.float64) for x in (q, unaligned, v, g)))
    np.testing.assert_allclose(out.numpy(), want["out"], rtol=1e-4, atol=2e-5)


@needs_c
def test_every_row_length_modulo_the_vector_width_under_a_causal_mask() -> None:
    """Rows see 1..T keys, padded with -inf to whole vectors of 8: sharp scores (large scale) expose any padding
    that would take part in a row's max, sum or gradient, for tiles ending at every position in a vector."""
    for t in (*range(1, 18), 55):
        q, k, v, g = _inputs((1, 2, t, t, 8, 8), t)
        with _on("c"):
            got = _attend(q, k, v, g, causal=True, scale=3.0)
        _close(got, _attend(*(x.astype(np.float64) for x in (q, k, v, g)), causal=True, scale=3.0), atol=1e-4)


@needs_c
@pytest.mark.parametrize("causal", [False, True])
def test_nan_inf_and_overflow_follow_pytorchs_math_backend(causal: bool) -> None:
    """A masked score has -inf added (NaN and +inf stay NaN); a NaN value reaches rows through zero weights."""
    rng = np.random.default_rng(17)
    qkv = rng.standard_normal((4, 70, 3, 2, 16)).astype(np.float32)
    qkv[0, 2, 0, 0, 0] = NAN  # a query: its row
    qkv[1, 64, 1, 1, 0] = NAN  # a key past the first key block: under causal, rows 0-63 get NaN + -inf
    qkv[2, 3, 1, 0, 0] = INF  # an inf key
    qkv[3, :, :2] = np.sign(qkv[3, :, :2]) * 1e20  # finite q and k whose scores overflow to +-inf, or NaN
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)
    g = rng.standard_normal(q.shape).astype(np.float32)
    mask = rng.random((4, 2, 70, 70)) > 0.3
    mask[:, :, 1] = False
    for m in (None, mask):
        with _on("c"):
            got = _attend(q, k, v, g, mask=m, causal=causal, need_weights=True)
        with _on("numpy"):  # in float32: the same overflows
            want = _attend(q, k, v, g, mask=m, causal=causal, need_weights=True)
        assert np.isnan(got["out"][0, 0, 2]).all() and np.isnan(got["out"][1, 1, :64 if causal else 70]).all()
        _close({n: got[n] for n in ("out", "weights")}, want, atol=1e-5)


def test_forward_memory_does_not_grow_as_t_squared(backend: str) -> None:
    """Without need_weights no (T, T) array is made: the forward's peak stays below one such matrix."""
    t, d = 1024, 32
    q, k, v = (mt.tensor(np.random.default_rng(i).standard_normal((1, 1, t, d)).astype(np.float32),
                         requires_grad=True) for i in range(3))
    peaks = []
    for need_weights in (False, True):
        tracemalloc.start()
        F.scaled_dot_product_attention(q, k, v, is_causal=True, need_weights=need_weights)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    if backend == "c":
        assert peaks[0] < t * t * 4 // 4 <= peaks[1]
    else:  # the reference materialises the scores: it is the definition, not the kernel
        assert peaks[1] >= t * t * 4


class _on:
    """Context manager: the named backend active inside."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.previous = _backend.name()
        _backend.use(self.name)

    def __exit__(self, *exc: object) -> None:
        _backend.use(self.previous)
