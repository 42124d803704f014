"""The C kernels added for speed (exact GELU, batched and blocked sgemm) against the numpy reference and PyTorch."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

try:
    c = importlib.import_module("microtensor._backend.c")
except ImportError as err:  # the extension is not built: nothing here can run
    pytest.skip(f"C kernels not built ({err})", allow_module_level=True)
ref = importlib.import_module("microtensor._backend.reference")
gelu = importlib.import_module("microtensor.ops.gelu")
masked_fill = importlib.import_module("microtensor.ops.masked_fill")

F32 = np.float32


def close(actual, expected, rtol: float, atol: float) -> None:
    """Assert a float32 kernel's output matches an expected array (compared in float64)."""
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=atol)


def gelu_inputs(n: int) -> np.ndarray:
    """n float32 values: a dense sweep of [-14, 9] (both tails and the centre) then normal values."""
    rng = np.random.default_rng(n)
    sweep = np.linspace(-14, 9, max(n // 2, 1))
    return np.concatenate([sweep, rng.standard_normal(n - len(sweep)) * 3]).astype(F32)[:n]


@pytest.mark.parametrize("n", [1, 7, 8, 9, 33, 1001, 70001])
def test_gelu_erf_matches_the_exact_reference(c_kernels, n: int) -> None:
    x = gelu_inputs(n)
    g = np.random.default_rng(1).standard_normal(n).astype(F32)
    y, cdf = gelu._gelu_erf_forward(x)
    y64, cdf64 = gelu.reference_gelu_erf_forward(x.astype(np.float64))  # math.erfc: exact
    close(cdf, cdf64, rtol=2e-6, atol=1.6e-7)
    close(y, y64, rtol=2e-6, atol=2e-7)
    want = gelu.reference_gelu_erf_backward(x.astype(np.float64), cdf64, g.astype(np.float64))
    close(gelu._gelu_erf_backward(x, cdf, g), want, rtol=2e-6, atol=3e-7)


def test_gelu_erf_matches_torch_with_non_finite_values(c_kernels, torch) -> None:
    x = np.concatenate([gelu_inputs(4001), [np.nan, np.inf, -np.inf, 0.0, -0.0]]).astype(F32).reshape(-1, 1)
    g = np.random.default_rng(2).standard_normal(x.shape).astype(F32)
    # In float64: PyTorch's float32 AVX-512 loop gives gelu(inf) = nan and an erf off by up to 9e-7 near
    # x = -3.5, where its scalar and AVX2 loops give inf and the float64 answer.
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.nn.functional.gelu(xt)
    yt.backward(torch.tensor(g, dtype=torch.float64))
    y, cdf = gelu._gelu_erf_forward(x)
    close(y, yt.detach().numpy(), rtol=1e-6, atol=4e-7)
    close(gelu._gelu_erf_backward(x, cdf, g), xt.grad.numpy(), rtol=1e-6, atol=4e-7)


def test_gelu_erf_float64_goes_to_the_reference(c_kernels) -> None:
    x = gelu_inputs(9).astype(np.float64)
    for got, want in zip(gelu._gelu_erf_forward(x), gelu.reference_gelu_erf_forward(x)):
        np.testing.assert_array_equal(got, want)


def test_gelu_erf_does_not_depend_on_the_thread_count(c_kernels) -> None:
    x = gelu_inputs(300001)
    g = np.random.default_rng(3).standard_normal(x.shape).astype(F32)
    before = c.num_threads()
    try:
        c.set_num_threads(1)
        one = (*gelu._gelu_erf_forward(x), gelu._gelu_erf_backward(x, gelu.reference_gelu_erf_forward(x)[1], g))
        c.set_num_threads(2)
        two = (*gelu._gelu_erf_forward(x), gelu._gelu_erf_backward(x, gelu.reference_gelu_erf_forward(x)[1], g))
    finally:
        c.set_num_threads(before)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- batched matmul through strides


def layouts(rng: np.random.Generator, shape: tuple) -> dict:
    """Arrays of `shape` in the layouts the batched kernel reads in place, and some it must refuse."""
    *batch, r, c_ = shape
    base = rng.standard_normal((*batch, r, c_ + 3)).astype(F32)
    return {
        "contiguous": np.ascontiguousarray(base[..., :c_]),
        "transposed": np.swapaxes(np.ascontiguousarray(np.swapaxes(base[..., :c_], -1, -2)), -1, -2),
        "row_stride": base[..., :c_],
        "reversed": base[..., ::-1, :c_],
        "every_other_batch": np.repeat(base[..., :c_], 2, axis=0)[::2],
        "expanded": np.broadcast_to(base[:1, ..., :c_], shape),
    }


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("batch", [(3,), (2, 3), (1,)])
def test_batched_matmul_reads_every_layout(batch: tuple, trans_a: bool, trans_b: bool) -> None:
    rng = np.random.default_rng(len(batch) * 4 + trans_a * 2 + trans_b)
    m, k, n = 7, 17, 9
    a_all = layouts(rng, (*batch, *((k, m) if trans_a else (m, k))))
    b_all = layouts(rng, (*batch, *((n, k) if trans_b else (k, n))))
    for (na, a), (nb, b) in zip(a_all.items(), list(b_all.items())[::-1]):
        want = ref.matmul(a.astype(np.float64), b.astype(np.float64), trans_a, trans_b)
        got = c.matmul(a, b, trans_a, trans_b)
        assert got.shape == want.shape and got.dtype == F32, (na, nb)
        close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("a_shape,b_shape", [((4, 5, 6), (6, 3)), ((5, 6), (4, 6, 3)), ((1, 5, 6), (4, 6, 3)),
                                             ((2, 4, 5, 6), (2, 4, 6, 3)), ((2, 1, 5, 6), (1, 4, 6, 3)),
                                             ((0, 5, 6), (6, 3)), ((4, 5, 0), (4, 0, 3))])
def test_batched_matmul_broadcasts_as_numpy(a_shape: tuple, b_shape: tuple) -> None:
    rng = np.random.default_rng(sum(a_shape))
    a, b = rng.standard_normal(a_shape).astype(F32), rng.standard_normal(b_shape).astype(F32)
    close(c.matmul(a, b), np.matmul(a.astype(np.float64), b.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_batched_matmul_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: op\(a\) is 5x6"):
        c.matmul(np.zeros((2, 5, 6), F32), np.zeros((2, 4, 3), F32))
    with pytest.raises(ValueError, match=r"matmul: batch shapes of a \(2, 5, 6\) and b \(3, 6, 3\)"):
        c.matmul(np.zeros((2, 5, 6), F32), np.zeros((3, 6, 3), F32))


def test_batched_matmul_does_not_depend_on_the_thread_count() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((32, 64, 16)).astype(F32), rng.standard_normal((32, 64, 16)).astype(F32)
    before = c.num_threads()
    try:
        c.set_num_threads(1)
        one = c.matmul(a, b, False, True)
        c.set_num_threads(2)
        two = c.matmul(a, b, False, True)
    finally:
        c.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("kernels", ["numpy", "c"])
def test_attention_products_match_torch_gradients(torch, kernels: str) -> None:
    """q @ k^T and att @ v of one module per head, concatenated: the layouts of the char GPT's backward."""
    import microtensor as mt
    from microtensor import backend

    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((2, 3, 5, 4)).astype(F32) for _ in range(3))
    g = rng.standard_normal((2, 3, 5, 8)).astype(F32)

    def run(lib, tensor):
        ts = [tensor(x, requires_grad=True) for x in (q, k, v)]
        att = lib.softmax(ts[0] @ ts[1].transpose(-2, -1) * 0.5, dim=-1)
        out = lib.cat([att @ ts[2], ts[0] @ ts[1].transpose(-2, -1)[..., :4]], dim=-1)
        out.backward(tensor(g))
        return [np.asarray(out.detach())] + [np.asarray(t.grad) for t in ts]

    before = backend.name()
    backend.use(kernels)
    try:
        got = run(mt, mt.tensor)
    finally:
        backend.use(before)
    want = run(torch, torch.tensor)
    for x, y in zip(got, want):
        close(x, y.numpy() if hasattr(y, "numpy") else y, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- masked_fill


@pytest.mark.parametrize("x_shape,mask_shape", [((32, 64, 64), (64, 64)), ((3, 5, 7), (1, 5, 7)), ((7,), (7,)),
                                                ((2, 3, 5), (2, 3, 5)), ((2, 3, 5), (3, 1)), ((4, 5), (1, 1)),
                                                ((0, 5), (5,))])
@pytest.mark.parametrize("value", [float("-inf"), 0.0, float("nan"), 1e40])
def test_masked_fill_matches_the_reference(c_kernels, x_shape: tuple, mask_shape: tuple, value: float) -> None:
    rng = np.random.default_rng(len(x_shape) + len(mask_shape))
    x = rng.standard_normal(x_shape).astype(F32)
    x.reshape(-1)[::7] = np.nan
    mask = rng.random(mask_shape) < 0.5
    with np.errstate(over="ignore"):  # 1e40 overflows to inf in float32 on both backends
        want, got = masked_fill.reference_masked_fill(x, mask, value), masked_fill._masked_fill(x, mask, value)
    assert got.dtype == F32 and got.shape == x.shape
    np.testing.assert_array_equal(got, want)


def test_masked_fill_reads_odd_layouts_and_other_dtypes(c_kernels) -> None:
    x = np.arange(60, dtype=F32).reshape(3, 4, 5)
    mask = np.eye(5, dtype=bool)[:4]
    for a, m in ((x[:, :, ::-1], mask), (x, mask[:, ::-1])):
        want = masked_fill.reference_masked_fill(a, m, -1.0)
        np.testing.assert_array_equal(masked_fill._masked_fill(a, m, -1.0), want)
    ints = np.arange(20).reshape(4, 5)
    np.testing.assert_array_equal(masked_fill._masked_fill(ints, mask, 7), np.where(mask, 7, ints))


def test_masked_fill_does_not_depend_on_the_thread_count(c_kernels) -> None:
    x = np.random.default_rng(8).standard_normal((64, 64, 65)).astype(F32)
    mask = np.tril(np.ones((64, 65), bool))
    before = c.num_threads()
    try:
        c.set_num_threads(1)
        one = masked_fill._masked_fill(x, mask, float("-inf"))
        c.set_num_threads(2)
        two = masked_fill._masked_fill(x, mask, float("-inf"))
    finally:
        c.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, masked_fill.reference_masked_fill(x, mask, float("-inf")))


# ---------------------------------------------------------------- blocked sgemm (packed panels, M x N task grid)

BLOCKED = [(300, 700, 400), (411, 531, 333), (7, 2100, 4600), (1000, 517, 140)]  # each >= 2**26 multiply-adds


def operands(rng: np.random.Generator, m: int, k: int, n: int, trans_a: bool, trans_b: bool) -> tuple:
    """float32 A and B stored for op(A) (m x k) and op(B) (k x n)."""
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(F32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(F32)
    return a, b


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,k,n", BLOCKED)
def test_blocked_sgemm_matches_the_reference(m: int, k: int, n: int, trans_a: bool, trans_b: bool) -> None:
    """Ragged row blocks, K slices, a column block past NC (4600) and partial micro-tiles."""
    a, b = operands(np.random.default_rng(m + k + n), m, k, n, trans_a, trans_b)
    want = ref.matmul(a.astype(np.float64), b.astype(np.float64), trans_a, trans_b)
    close(c.matmul(a, b, trans_a, trans_b), want, rtol=1e-4, atol=3e-4)


@pytest.mark.parametrize("m,k,n,trans_b", [(301, 600, 405, False), (1, 131, 7, True), (2, 131, 7, True)])
def test_sgemm_alpha_beta_leading_dims_and_bias(m: int, k: int, n: int, trans_b: bool) -> None:
    """The blocked driver, and one or two rows of A against B^T (a decoding step's linears, by dot products),
    with alpha, beta, padded leading dimensions and a bias."""
    rng = np.random.default_rng(11 + m)
    b_shape, ldb = ((n, k + 5), k + 5) if trans_b else ((k, n + 7), n + 7)
    big_a, big_b, big_c = (rng.standard_normal(s).astype(F32) for s in ((m + 3, k + 5), b_shape, (m, n + 9)))
    op_b = big_b[:, :k].T if trans_b else big_b[:, :n]
    want = 0.5 * big_a[:m, :k].astype(np.float64) @ op_b + 2.0 * big_c[:, :n]
    c.lib.mt_sgemm(0, int(trans_b), m, n, k, 0.5, c.ffi.from_buffer("float[]", big_a), k + 5,
                   c.ffi.from_buffer("float[]", big_b), ldb, 2.0, c.ffi.from_buffer("float[]", big_c), n + 9)
    close(big_c[:, :n], want, rtol=1e-4, atol=3e-4)
    x, w, bias = (rng.standard_normal(s).astype(F32) for s in ((m, k), (n, k), (n,)))
    close(c.linear(x, w, bias), ref.linear(x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64)),
          rtol=1e-4, atol=3e-4)


def _matmul_same_bits_at_each_thread_count(a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool) -> np.ndarray:
    """c.matmul at 1, 2, 3 and 8 threads, asserting every count gives the same bits; the product."""
    before = c.num_threads()
    try:
        outs = []
        for threads in (1, 2, 3, 8):
            c.set_num_threads(threads)
            outs.append(c.matmul(a, b, trans_a, trans_b))
    finally:
        c.set_num_threads(before)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    return outs[0]


@pytest.mark.parametrize("m,k,n", [(300, 700, 400), (1000, 300, 230), (40, 600, 4200)])
def test_blocked_sgemm_does_not_depend_on_the_thread_count(m: int, k: int, n: int) -> None:
    """Rows split over threads, and columns too when rows are few (300); from 2 threads the next K slice of B is
    packed while this one is used (ragged last slice, a second column block past NC): every count gives the same
    bits. On one AVX-512 thread (on an Ice Lake Xeon also on each of 2 or 3, with two row blocks each), A's panel
    stays in L1 under column parts of 512 (ragged last part)."""
    a, b = operands(np.random.default_rng(12), m, k, n, False, True)
    out = _matmul_same_bits_at_each_thread_count(a, b, False, True)
    close(out, ref.matmul(a.astype(np.float64), b.astype(np.float64), False, True), rtol=1e-4, atol=5e-4)


@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,k,n", [(500, 600, 90), (70, 530, 700), (64, 600, 128)])
def test_deep_weight_gradient_split_per_thread_matches_one_thread(m: int, k: int, n: int, trans_b: bool) -> None:
    """From 2 threads op(A) = A^T deeper than one K slice runs as one 1-thread product per thread on its rows of C
    (tall) or its columns (wide; ragged last part, partial panels; 128 columns in AVX-512's panels of 64): same
    bits at 1, 2, 3 and 8 threads."""
    a, b = operands(np.random.default_rng(m + n), m, k, n, True, trans_b)
    out = _matmul_same_bits_at_each_thread_count(a, b, True, trans_b)
    close(out, ref.matmul(a.astype(np.float64), b.astype(np.float64), True, trans_b), rtol=1e-4, atol=5e-4)


@pytest.mark.parametrize("m,k,n", [(390, 2100, 130), (1027, 1100, 70)])
@pytest.mark.parametrize("trans_b", [False, True])
def test_weight_gradient_sgemm_does_not_depend_on_the_thread_count(m: int, k: int, n: int, trans_b: bool) -> None:
    """op(A) = A^T and B packed by vector copies, row by row (A^T eight panels at a time: groups of 8 and a
    shorter last group, a partial last panel), a ragged last K slice."""
    a, b = operands(np.random.default_rng(13), m, k, n, True, trans_b)
    out = _matmul_same_bits_at_each_thread_count(a, b, True, trans_b)
    close(out, ref.matmul(a.astype(np.float64), b.astype(np.float64), True, trans_b), rtol=1e-4, atol=5e-4)


@pytest.mark.parametrize("n,i,o", [(1031, 77, 45), (1500, 130, 260), (1024, 1, 32), (2048, 64, 256), (2048, 200, 3),
                                   (1024, 128, 384)])
def test_fused_linear_backward_matches_the_separate_products(n: int, i: int, o: int) -> None:
    """From 1024 rows and 32 outputs dx, dw and db come from one walk down the rows (ragged last block, partial
    panels; 3 outputs, or inputs that fill one panel (1, 64), take the separate products; 128 inputs in AVX-512's
    panels of 64): each matches its own product, the float64 reference and itself at 1, 2, 3 and 8 threads, bit
    for bit; so are the three added into running sums (dx_into, dw_into, db_into)."""
    rng = np.random.default_rng(n + i + o)
    g, x, w = rng.standard_normal((n, o)).astype(F32), rng.standard_normal((n, i)).astype(F32), \
        rng.standard_normal((o, i)).astype(F32)
    running = [rng.standard_normal(s).astype(F32) for s in ((n, i), (o, i), (o,))]
    before = c.num_threads()
    try:
        outs, sums = [], []
        for threads in (1, 2, 3, 8):
            c.set_num_threads(threads)
            outs.append(c.linear_backward(g, x, w, True, True, True))
            sums.append([a.copy() for a in running])
            assert all(a is b for a, b in zip(c.linear_backward(g, x, w, True, True, True, *sums[-1]), sums[-1]))
    finally:
        c.set_num_threads(before)
    for out, total in zip(outs[1:] + sums[1:], outs[:1] * 3 + sums[:1] * 3):
        for a, b in zip(out, total):
            np.testing.assert_array_equal(a, b)
    for total, start, grad in zip(sums[0], running, outs[0]):
        close(total, start + grad, rtol=1e-5, atol=2e-4)
    dx, dw, db = outs[0]
    close(dx, c.matmul(g, w), rtol=1e-5, atol=1e-5)
    close(dw, c.matmul(g, x, trans_a=True), rtol=1e-5, atol=2e-4)  # sums of n products of size ~1
    close(db, g.sum(axis=0), rtol=1e-5, atol=2e-4)
    want = ref.linear_backward(*(a.astype(np.float64) for a in (g, x, w)), True, True, True)
    for ours, wanted in zip((dx, dw, db), want):
        close(ours, wanted, rtol=1e-4, atol=3e-4)


@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,k,n", [(2048, 16, 64), (2051, 37, 100), (1000, 64, 64), (1024, 128, 128)])
def test_small_sgemm_split_by_rows_or_columns_does_not_depend_on_the_thread_count(m: int, k: int, n: int,
                                                                                   trans_b: bool) -> None:
    """The small driver splits a C 16 or more times taller than wide by rows (ragged last chunk), a squarer one by
    columns (1000 x 64; 1024 x 128 in AVX-512's panels of 64): same bits at 1, 2, 3 and 8 threads, and the float64
    reference."""
    a, b = operands(np.random.default_rng(m + k + n), m, k, n, False, trans_b)
    out = _matmul_same_bits_at_each_thread_count(a, b, False, trans_b)
    close(out, ref.matmul(a.astype(np.float64), b.astype(np.float64), False, trans_b), rtol=1e-4, atol=2e-4)


SMALL_K = [(2048, 16, 64), (64, 16, 64), (2048, 64, 16), (16, 2048, 64), (37, 16, 29), (6, 1, 17),
           (1, 128, 387), (2, 129, 5), (1, 1, 3)]  # one or two rows of A: dot products along B's rows


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,k,n", SMALL_K)
def test_small_and_skinny_sgemm_matches_the_reference(m: int, k: int, n: int, trans_a: bool, trans_b: bool) -> None:
    """The char GPT's per-head shapes (inner dimension 16, 16 output columns) and ragged ones."""
    a, b = operands(np.random.default_rng(m * k + n), m, k, n, trans_a, trans_b)
    want = ref.matmul(a.astype(np.float64), b.astype(np.float64), trans_a, trans_b)
    close(c.matmul(a, b, trans_a, trans_b), want, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("m,k,widths", [(37, 40, range(1, 100)),
                                          (2048, 2048, [17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 80, 81, 96, 97, 112,
                                                        128, 256, 704, 767, 768, 784])], ids=["small", "blocked"])
def test_every_column_count_around_the_panel_widths_matches_the_reference(m: int, k: int, widths) -> None:
    """Column counts through the AVX-512 kernel's panels of 48, 64 (whole panels where 48 are not, below 768 columns)
    and 32 (where 48 would leave a last panel of 16 or fewer) and AVX2's 16, with a bias, on the small driver (37 x
    40: rows in tiles of 8 and of 6, and their ragged last tile) and the blocked one (2048 x 2048): every partial
    panel of one, two or three vectors."""
    rng = np.random.default_rng(m + k)
    x = rng.standard_normal((m, k)).astype(F32)
    for n in widths:
        w, bias = rng.standard_normal((n, k)).astype(F32), rng.standard_normal(n).astype(F32)
        want = ref.linear(x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64))
        close(c.linear(x, w, bias), want, rtol=1e-4, atol=5e-4 if k > 100 else 2e-4)
        close(c.matmul(x, w.T.copy()), want - bias, rtol=1e-4, atol=5e-4 if k > 100 else 2e-4)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_every_instruction_set_runs_the_blocked_and_small_drivers(isa: str) -> None:
    """Each micro-kernel family (forced in a child process) on blocked, small and batched products and the
    fused linear backward."""
    code = (
        "import numpy as np; from microtensor._backend import c, reference as r\n"
        f"assert c.ISA == {isa!r}, c.ISA\n"
        "rng = np.random.default_rng(0)\n"
        "for m, k, n, ta, tb in [(300, 700, 400, 0, 0), (300, 700, 400, 1, 1), (7, 2100, 4600, 0, 1),\n"
        "                        (2048, 16, 64, 0, 0), (37, 16, 29, 1, 0), (37, 16, 29, 0, 1), (1, 129, 387, 0, 1)]:\n"
        "    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)\n"
        "    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)\n"
        "    want = r.matmul(a.astype(float), b.astype(float), ta, tb)\n"
        "    np.testing.assert_allclose(c.matmul(a, b, ta, tb), want, rtol=1e-4, atol=3e-4)\n"
        "q, k = rng.standard_normal((2, 32, 64, 16)).astype(np.float32)\n"
        "want = np.matmul(q.astype(float), np.swapaxes(k, -1, -2).astype(float))\n"
        "np.testing.assert_allclose(c.matmul(q, np.swapaxes(k, -1, -2)), want, rtol=1e-4, atol=2e-4)\n"
        "g, x, w = rng.standard_normal((1031, 45)), rng.standard_normal((1031, 77)), rng.standard_normal((45, 77))\n"
        "ours = c.linear_backward(*(a.astype(np.float32) for a in (g, x, w)), True, True, True)\n"
        "for a, b in zip(ours, r.linear_backward(g, x, w, True, True, True)):\n"
        "    np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-4)\n"
    )
    env = dict(os.environ, MICROTENSOR_ISA=isa)
    if isa == "avx512":
        env.pop("MICROTENSOR_ISA")
        if c.ISA != "avx512":
            pytest.skip(f"this CPU has no AVX-512 (the kernel chosen is {c.ISA}); the AVX-512 path runs where it does")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("a_shape,b_shape", [((2, 1, 5, 6), (1, 4, 6, 3)), ((3, 5, 6), (2, 3, 6, 3)),
                                             ((2, 3, 5, 6), (2, 1, 6, 3)), ((2, 1, 3, 5, 6), (4, 1, 6, 3))])
def test_batched_matmul_broadcasts_in_c_where_one_stride_cannot(monkeypatch, a_shape: tuple, b_shape: tuple) -> None:
    """Batch axes broadcast against each other (and reversed, sliced batches) run in C, one call per leading index."""
    rng = np.random.default_rng(len(a_shape) * 10 + len(b_shape))
    a, b = rng.standard_normal(a_shape).astype(F32), rng.standard_normal(b_shape).astype(F32)
    a_odd = np.repeat(a, 2, axis=-3)[..., ::-2, :, :] if a.ndim > 2 else a  # negative batch stride
    monkeypatch.setattr(c.reference, "matmul", lambda *args: pytest.fail("went to numpy"))
    for x in (a, a_odd):
        want = np.matmul(x.astype(np.float64), b.astype(np.float64))
        close(c.matmul(x, b), want, rtol=1e-5, atol=1e-5)
        close(c.matmul(x, np.ascontiguousarray(np.swapaxes(b, -1, -2)), False, True), want, rtol=1e-5, atol=1e-5)
