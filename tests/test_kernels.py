"""Every C kernel against its numpy reference, plus the argument checks that keep C in bounds."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

import microtensor as mt

try:
    c = importlib.import_module("microtensor._backend.c")
except ImportError as err:  # the extension is not built: nothing here can run
    pytest.skip(f"C kernels not built ({err})", allow_module_level=True)
ref = importlib.import_module("microtensor._backend.reference")
softmax = importlib.import_module("microtensor.ops.softmax")
layernorm = importlib.import_module("microtensor.ops.layernorm")
cross_entropy = importlib.import_module("microtensor.ops.cross_entropy")
gelu = importlib.import_module("microtensor.ops.gelu")
embedding = importlib.import_module("microtensor.ops.embedding")
dropout = importlib.import_module("microtensor.ops.dropout")
adam = importlib.import_module("microtensor.ops.adam")

SIZES = [1, 3, 15, 16, 17, 33, 64]
F32 = np.float32


pytestmark = pytest.mark.usefixtures("c_kernels")  # the ops' kernel entry points run C for float32


def rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    """Standard-normal float32 values times scale."""
    return (rng.standard_normal(shape) * scale).astype(F32)


def close(actual, expected, rtol: float = 2e-5, atol: float = 2e-5) -> None:
    """Assert float32 kernel output matches the (float64-evaluated) reference."""
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=atol)


def f64(*arrays: np.ndarray) -> list[np.ndarray]:
    """float64 copies, so the reference is computed more precisely than the kernel."""
    return [a.astype(np.float64) for a in arrays]


# ---------------------------------------------------------------- sgemm


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 7, 1), (5, 1, 9), (17, 33, 31), (256, 64, 64),
                                   (256, 64, 192), (64, 256, 64), (33, 300, 47), (300, 17, 500)])
def test_matmul_2d(m: int, k: int, n: int, trans_a: bool, trans_b: bool) -> None:
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = rand(rng, *((k, m) if trans_a else (m, k)))
    b = rand(rng, *((n, k) if trans_b else (k, n)))
    close(c.matmul(a, b, trans_a, trans_b), ref.matmul(*f64(a, b), trans_a, trans_b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_blocked_path(trans_a: bool, trans_b: bool) -> None:
    rng = np.random.default_rng(7)
    m, k, n = 411, 531, 333  # above the packing threshold (2**26), ragged against every tile size
    a = rand(rng, *((k, m) if trans_a else (m, k)))
    b = rand(rng, *((n, k) if trans_b else (k, n)))
    close(c.matmul(a, b, trans_a, trans_b), ref.matmul(*f64(a, b), trans_a, trans_b), rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("shapes", [((4, 5, 6), (4, 6, 7)), ((1, 5, 6), (3, 6, 7)), ((3, 5, 6), (6, 7)),
                                    ((5, 6), (3, 6, 7)), ((128, 8, 16), (128, 16, 8))])
def test_matmul_batched(shapes) -> None:
    rng = np.random.default_rng(1)
    a, b = rand(rng, *shapes[0]), rand(rng, *shapes[1])
    close(c.matmul(a, b), ref.matmul(*f64(a, b)), rtol=1e-4, atol=1e-4)
    bt = np.ascontiguousarray(np.swapaxes(b, -1, -2))
    close(c.matmul(a, bt, False, True), ref.matmul(*f64(a, bt), False, True), rtol=1e-4, atol=1e-4)


def test_matmul_views_and_zero_sizes() -> None:
    rng = np.random.default_rng(2)
    a, b = rand(rng, 40, 30), rand(rng, 50, 30)
    close(c.matmul(a, b.T), a.astype(np.float64) @ b.T.astype(np.float64), rtol=1e-4, atol=1e-4)
    close(c.matmul(a[:, ::2], b[:, ::2], False, True), ref.matmul(*f64(a[:, ::2], b[:, ::2]), False, True),
          rtol=1e-4, atol=1e-4)
    assert c.matmul(np.zeros((0, 3), F32), np.zeros((3, 4), F32)).shape == (0, 4)
    assert np.all(c.matmul(np.zeros((2, 0), F32), np.zeros((0, 4), F32)) == 0)


def test_sgemm_alpha_beta_leading_dims() -> None:
    rng = np.random.default_rng(3)
    big_a, big_b, big_c = rand(rng, 20, 40), rand(rng, 30, 50), rand(rng, 25, 60)
    m, n, k = 9, 21, 13
    expected = 0.5 * big_a[:m, :k] @ big_b[:k, :n] + 2.0 * big_c[:m, :n]
    c.lib.mt_sgemm(0, 0, m, n, k, 0.5, c.ffi.from_buffer("float[]", big_a), 40,
                   c.ffi.from_buffer("float[]", big_b), 50, 2.0, c.ffi.from_buffer("float[]", big_c), 60)
    close(big_c[:m, :n], expected, rtol=1e-5, atol=1e-5)


def test_linear_matches_reference() -> None:
    rng = np.random.default_rng(4)
    for n, i, o in [(1, 1, 1), (256, 64, 192), (7, 33, 20), (32, 256, 64)]:
        x, w, b = rand(rng, n, i), rand(rng, o, i), rand(rng, o)
        close(c.linear(x, w, b), ref.linear(*f64(x, w, b)), rtol=1e-4, atol=1e-4)
        close(c.linear(x, w, None), ref.linear(*f64(x, w), None), rtol=1e-4, atol=1e-4)
    x3 = rand(rng, 4, 8, 64)
    w, b = rand(rng, 16, 64), rand(rng, 16)
    close(c.linear(x3, w, b), ref.linear(*f64(x3, w, b)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n,i,o", [(1, 1, 1), (256, 64, 192), (7, 33, 20), (32, 256, 64), (5, 17, 3)])
def test_linear_backward_matches_reference(n: int, i: int, o: int) -> None:
    rng = np.random.default_rng(n + i + o)
    g, x, w = rand(rng, n, o), rand(rng, n, i), rand(rng, o, i)
    for need in [(True, True, True), (True, False, False), (False, True, True), (False, False, True)]:
        ours, theirs = c.linear_backward(g, x, w, *need), ref.linear_backward(*f64(g, x, w), *need)
        for a, b, wanted in zip(ours, theirs, need):
            assert (a is None) == (not wanted)
            if wanted:
                close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="linear_backward"):
        c.linear_backward(g, x[:, :-1] if i > 1 else x[:-1], w, True, True, True)


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_lower_instruction_sets_agree(isa: str) -> None:
    """The AVX2 and portable micro-kernels (forced in a child process) match the reference too."""
    code = (
        "import numpy as np; from microtensor._backend import c, reference as r\n"
        f"assert c.ISA == {isa!r}, c.ISA\n"
        "rng = np.random.default_rng(0)\n"
        "for m, k, n in [(1, 1, 1), (7, 5, 3), (256, 64, 192), (65, 300, 41), (300, 270, 290)]:\n"
        "    for ta in (0, 1):\n"
        "        for tb in (0, 1):\n"
        "            a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)\n"
        "            b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)\n"
        "            want = r.matmul(a.astype(float), b.astype(float), ta, tb)\n"
        "            np.testing.assert_allclose(c.matmul(a, b, ta, tb), want, rtol=1e-4, atol=2e-4)\n"
    )
    env = dict(os.environ, MICROTENSOR_ISA=isa)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- softmax


@pytest.mark.parametrize("cols", SIZES)
def test_softmax_forward_backward(cols: int) -> None:
    rng = np.random.default_rng(cols)
    x, g = rand(rng, 5, cols, scale=3.0), rand(rng, 5, cols)
    y = softmax._softmax_forward(x)
    close(y, softmax.reference_softmax_forward(x.astype(np.float64)))
    close(softmax._softmax_backward(y, g), softmax.reference_softmax_backward(*f64(y, g)))
    ly = softmax._log_softmax_forward(x)
    close(ly, softmax.reference_log_softmax_forward(x.astype(np.float64)), rtol=1e-5, atol=1e-5)
    close(softmax._log_softmax_backward(ly, g), softmax.reference_log_softmax_backward(*f64(ly, g)),
          rtol=1e-5, atol=1e-5)


def test_softmax_large_magnitude_stays_finite() -> None:
    x = np.array([[1e4, -1e4, 3e4, 88.0], [-1e30, 1e30, 0.0, 5.0], [1e38, 1e38, -1e38, 0.0]], F32)
    y = softmax._softmax_forward(x)
    assert np.isfinite(y).all()
    close(y, softmax.reference_softmax_forward(x.astype(np.float64)))
    ly = softmax._log_softmax_forward(x)
    assert np.isfinite(ly).all()
    close(ly, softmax.reference_log_softmax_forward(x.astype(np.float64)), rtol=1e-6)


def test_softmax_many_rows_threads() -> None:
    rng = np.random.default_rng(9)
    x, g = rand(rng, 2000, 37), rand(rng, 2000, 37)
    y = softmax._softmax_forward(x)
    close(y, softmax.reference_softmax_forward(x.astype(np.float64)))
    close(softmax._softmax_backward(y, g), softmax.reference_softmax_backward(*f64(y, g)))


# ---------------------------------------------------------------- layernorm


# Widths past each loop of the row sums: 32-float blocks, then 8, then single floats (47), and blocks of 1024
# added in double (1100).
@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 5), (7, 16), (256, 64), (33, 17), (3000, 40), (5, 47), (3, 1100)])
@pytest.mark.parametrize("affine", [True, False])
def test_layernorm(rows: int, cols: int, affine: bool) -> None:
    rng = np.random.default_rng(rows + cols)
    x, g = rand(rng, rows, cols, scale=2.0) + 3.0, rand(rng, rows, cols)
    w, b = (rand(rng, cols), rand(rng, cols)) if affine else (None, None)
    wd, bd = (w.astype(np.float64), b.astype(np.float64)) if affine else (None, None)
    y, mean, rstd = layernorm._layernorm_forward(x, w, b, 1e-5)
    ry, rmean, rrstd = layernorm.reference_layernorm_forward(x.astype(np.float64), wd, bd, 1e-5)
    close(y, ry, rtol=1e-4, atol=1e-4)
    close(mean, rmean, rtol=1e-5, atol=1e-5)
    close(rstd, rrstd, rtol=1e-4, atol=1e-4)
    grads = layernorm._layernorm_backward(g, x, w, mean, rstd)
    expected = layernorm.reference_layernorm_backward(*f64(g, x), wd, *f64(mean, rstd))
    for got, want in zip(grads, expected, strict=True):
        close(got, want, rtol=1e-4, atol=2e-4 * np.sqrt(rows))


# ---------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("n,classes", [(1, 1), (1, 20), (256, 20), (7, 17), (300, 1000)])
def test_cross_entropy(n: int, classes: int) -> None:
    rng = np.random.default_rng(n + classes)
    logits = rand(rng, n, classes, scale=4.0)
    targets = rng.integers(0, classes, n)
    targets[::3] = -100
    loss, count, d = cross_entropy._cross_entropy_forward(logits, targets, -100)
    rloss, rcount, rd = cross_entropy.reference_cross_entropy_forward(logits.astype(np.float64), targets, -100)
    assert count == rcount
    assert loss == pytest.approx(rloss, rel=1e-5, abs=1e-5)
    close(d, rd)
    want = cross_entropy.reference_cross_entropy_rows(logits.astype(np.float64), targets, -100)
    close(cross_entropy._cross_entropy_rows(logits, targets, -100), want, atol=1e-5)


def test_cross_entropy_large_logits_and_all_ignored() -> None:
    logits = np.array([[1e4, -1e4, 0.0], [3e38, -3e38, 1.0], [-50.0, 50.0, 0.0]], F32)
    targets = np.array([1, 0, 2])
    loss, count, d = cross_entropy._cross_entropy_forward(logits, targets, -1)
    rloss, _, rd = cross_entropy.reference_cross_entropy_forward(logits.astype(np.float64), targets, -1)
    assert np.isfinite(loss) and np.isfinite(d).all() and count == 3
    assert loss == pytest.approx(rloss, rel=1e-6)
    close(d, rd)
    loss, count, d = cross_entropy._cross_entropy_forward(logits, np.full(3, 7), 7)
    assert (loss, count) == (0.0, 0) and not d.any()


# ---------------------------------------------------------------- gelu, adam, embedding


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 100_003])
def test_gelu(n: int) -> None:
    rng = np.random.default_rng(n)
    x, g = rand(rng, n, scale=3.0), rand(rng, n)
    x[:3] = [-30.0, 30.0, 0.0][: min(3, n)]
    close(gelu._gelu_backward(x, g), gelu.reference_gelu_backward(*f64(x, g)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoupled,weight_decay", [(False, 0.0), (False, 0.1), (True, 0.1)])
def test_adam_update(decoupled: bool, weight_decay: float) -> None:
    rng = np.random.default_rng(11)
    n = 1001
    p, m, v = rand(rng, n), rand(rng, n) * 0.1, np.abs(rand(rng, n)) * 0.01
    pr, mr, vr = p.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
    for step in range(1, 4):
        grad = rand(rng, n)
        adam.adam_update(p, grad, m, v, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled)
        adam.reference_adam_update(pr, grad.astype(np.float64), mr, vr, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay,
                                   decoupled)
    close(p, pr, rtol=1e-5, atol=1e-6)
    close(m, mr, rtol=1e-5, atol=1e-6)
    close(v, vr, rtol=1e-5, atol=1e-7)


def test_embedding() -> None:
    rng = np.random.default_rng(12)
    w = rand(rng, 20, 17)
    ids = rng.integers(0, 20, 256)
    close(embedding._embedding_forward(w, ids), embedding.reference_embedding_forward(w, ids))
    g = rand(rng, 256, 17)
    want = embedding.reference_embedding_backward(ids, g.astype(np.float64), 20)
    close(embedding._embedding_backward(ids, g, 20), want, atol=1e-5)


# ---------------------------------------------------------------- routing and argument checks


def test_float64_goes_to_the_reference() -> None:
    rng = np.random.default_rng(13)
    a, b = rng.standard_normal((5, 6)), rng.standard_normal((6, 7))
    out = c.matmul(a, b)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, a @ b)
    assert softmax._softmax_forward(a).dtype == np.float64


@pytest.mark.parametrize("call", [
    lambda: c.matmul(np.zeros((3, 4), F32), np.zeros((5, 6), F32)),
    lambda: c.matmul(np.zeros((2, 3, 4), F32), np.zeros((3, 4, 5), F32)),
    lambda: c.linear(np.zeros((3, 4), F32), np.zeros((5, 6), F32), None),
    lambda: c.linear(np.zeros((3, 4), F32), np.zeros((5, 4), F32), np.zeros(4, F32)),
    lambda: adam.adam_update(np.zeros(3, F32), np.zeros(4, F32), np.zeros(3, F32), np.zeros(3, F32), 1, 0.1, 0.9,
                          0.99, 1e-8, 0.0, False),
])
def test_bad_shapes_and_ids_raise_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("call", [
    lambda: c.matmul([[1.0]], np.zeros((1, 1), F32)),
])
def test_bad_types_raise_type_error(call) -> None:
    with pytest.raises(TypeError):
        call()


def test_non_contiguous_inputs_are_copied_once() -> None:
    rng = np.random.default_rng(14)
    x = rand(rng, 8, 40)[:, ::2]  # the Functions hand the kernels a contiguous copy
    close(gelu.Gelu.apply(x).data, gelu.reference_gelu_forward(x.astype(np.float64)), rtol=1e-5, atol=1e-6)
    close(softmax.Softmax.apply(x).data, softmax.reference_softmax_forward(x.astype(np.float64)))
    big = rand(rng, 5000, 3)
    before = big[:, 0].copy()
    m, v = np.zeros(5000, F32), np.zeros(5000, F32)
    adam.adam_update(big[:, 0], np.ones(5000, F32), m, v, 1, 0.1, 0.9, 0.99, 1e-8, 0.0, False)  # strided: numpy
    close(big[:, 0], before - 0.1, atol=1e-5)


# ---------------------------------------------------------------- dropout


@pytest.mark.parametrize("n", SIZES + [4099])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_dropout_mask_equals_reference(n: int, p: float) -> None:
    x = rand(np.random.default_rng(n), n, 3)
    y, mask = dropout._dropout_forward(x, p, seed=2**63 + n)
    y_ref, mask_ref = dropout.reference_dropout_forward(x, p, seed=2**63 + n)
    np.testing.assert_array_equal(mask, mask_ref)
    close(y, y_ref)
    assert set(np.unique(mask)) <= {0.0, np.float32(1.0 / (1.0 - p))}


def test_dropout_keeps_about_one_minus_p() -> None:
    x = np.ones(200_000, F32)
    _, mask = dropout._dropout_forward(x, 0.1, seed=5)
    assert abs((mask == 0).mean() - 0.1) < 0.003
    _, other = dropout._dropout_forward(x, 0.1, seed=6)
    assert not np.array_equal(mask, other)


@pytest.mark.parametrize("n", [4099, 100_003])
def test_dropout_mask_does_not_depend_on_the_thread_count(n: int) -> None:
    """Threads split the elements (from 4096): at 1, 2 and 3 threads the mask is the reference's, bit for bit."""
    x = rand(np.random.default_rng(n), n)
    y_ref, mask_ref = dropout.reference_dropout_forward(x, 0.3, seed=7)
    before = c.num_threads()
    try:
        for threads in (1, 2, 3):
            c.set_num_threads(threads)
            y, mask = dropout._dropout_forward(x, 0.3, seed=7)
            np.testing.assert_array_equal(mask, mask_ref)
            np.testing.assert_array_equal(y, x * mask)
    finally:
        c.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_dropout_backward_draws_the_forwards_mask_again(threads: int) -> None:
    """The backward keeps no mask: it draws the forward's from the seed (the C kernel's mask-free path), so the
    gradient is g * mask, the mask being y / x, and both match the reference's, bit for bit, at any thread count."""
    rng = np.random.default_rng(threads)
    x, g = rand(rng, 100_003) + 2.0, rand(rng, 100_003)  # x away from 0, so y / x recovers the mask
    before = c.num_threads()
    try:
        c.set_num_threads(threads)
        xt = mt.tensor(x, requires_grad=True)
        y = mt.nn.functional.dropout(xt, 0.3, True, np.random.default_rng(9))
        y.backward(mt.tensor(g))
    finally:
        c.set_num_threads(before)
    seed = int(np.random.default_rng(9).integers(1 << 63))
    y_ref, mask = dropout.reference_dropout_forward(x, 0.3, seed)
    np.testing.assert_array_equal(y.data, y_ref)
    np.testing.assert_array_equal(xt.grad.data, g * mask)
    assert 0.25 < (mask == 0).mean() < 0.35


def test_dropout_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\), got 1.0"):
        dropout.Dropout.apply(np.ones(4, F32), 1.0)


def test_thread_count_does_not_change_sgemm_or_row_kernels() -> None:
    """Every output element is computed by one thread in the same order, whatever the thread count."""
    rng = np.random.default_rng(16)
    a, b, x = rand(rng, 300, 200), rand(rng, 200, 170), rand(rng, 4000, 20)
    bt = np.ascontiguousarray(b.T)

    def outputs():
        return c.matmul(a, b), c.matmul(a, bt, False, True), softmax._softmax_forward(x), gelu._gelu_forward(x)

    before = c.num_threads()
    try:
        c.set_num_threads(1)
        one = outputs()
        c.set_num_threads(max(2, before))
        many = outputs()
    finally:
        c.set_num_threads(before)
    for got, want in zip(many, one, strict=True):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- NaN, inf, fully masked rows (PyTorch's rules)

NAN, INF = np.nan, np.inf


@pytest.mark.parametrize("cols", [3, 40, 5000])  # the short-row tile, one vector row, blocked sums
def test_softmax_rows_with_nan_or_inf_are_nan(cols: int) -> None:
    x = rand(np.random.default_rng(cols), 6, cols)
    x[0, 1], x[1, 1], x[2], x[3, 1], x[4, 0] = NAN, INF, -INF, -INF, -INF  # row 5 untouched
    for kernel in ("_softmax_forward", "_log_softmax_forward"):
        y = getattr(softmax, kernel)(x)
        assert np.isnan(y[:3]).all() and not np.isnan(y[3:]).any()  # torch: [1, nan, 2] -> all nan
        close(y, getattr(softmax, "reference" + kernel)(x.astype(np.float64)), rtol=1e-5, atol=1e-5)
    assert softmax._softmax_forward(x)[3, 1] == 0.0 and softmax._log_softmax_forward(x)[3, 1] == -INF


@pytest.mark.parametrize("classes", [3, 5000])
def test_cross_entropy_nan_in_an_ignored_row_stays_out_of_the_loss(classes: int) -> None:
    logits = rand(np.random.default_rng(classes), 4, classes)
    logits[0, 1], logits[2, 0] = NAN, INF
    targets = np.array([-100, 1, -100, 2])
    loss, count, d = cross_entropy._cross_entropy_forward(logits, targets, -100)
    rloss, rcount, rd = cross_entropy.reference_cross_entropy_forward(logits.astype(np.float64), targets, -100)
    assert count == rcount == 2 and np.isfinite(loss) and loss == pytest.approx(rloss, rel=1e-5)
    assert np.isnan(d[[0, 2]]).all() and np.isfinite(d[[1, 3]]).all()  # torch's gradient: NaN rows stay NaN
    close(d, rd)
    rows = cross_entropy._cross_entropy_rows(logits, targets, -100)
    assert rows[0] == rows[2] == 0.0
    close(rows, cross_entropy.reference_cross_entropy_rows(logits.astype(np.float64), targets, -100), atol=1e-5)


def test_layernorm_nan_or_inf_makes_its_row_nan() -> None:
    x = rand(np.random.default_rng(3), 5, 40) + 2.0
    x[0, 3], x[1, 0], x[2, 39], x[3, 5] = NAN, INF, -INF, 1e18
    y, _, _ = layernorm._layernorm_forward(x, None, None, 1e-5)
    assert np.isnan(y[:3]).all() and np.isfinite(y[3:]).all()
    want = layernorm.reference_layernorm_forward(x.astype(np.float64), None, None, 1e-5)[0]
    close(y, want, rtol=1e-4, atol=1e-4)



def test_layernorm_of_finite_rows_whose_squares_overflow_float(kernels) -> None:
    x = rand(np.random.default_rng(4), 3, 37, scale=1e30)  # (x - mean)^2 overflows float32
    y, _, rstd = layernorm._layernorm_forward(x, None, None, 1e-5)
    x64 = x.astype(np.float64) - x.astype(np.float64).mean(axis=1, keepdims=True)
    close(y, x64 / np.sqrt((x64 * x64).mean(axis=1, keepdims=True)), rtol=1e-5, atol=1e-5)  # PyTorch: NaN
    assert y.dtype == F32 and (rstd > 0).all()

def test_gelu_inf_and_nan_as_the_reference() -> None:
    x = np.array([INF, -INF, NAN, 1e30, -1e30, 20.0, -20.0, 0.0], F32)
    g = np.ones_like(x)
    y, dx = gelu._gelu_forward(x), gelu._gelu_backward(x, g)
    np.testing.assert_array_equal(np.isnan(y), [False, True, True, False, False, False, False, False])  # torch
    close(y, gelu.reference_gelu_forward(x.astype(np.float64)))
    close(dx, gelu.reference_gelu_backward(x, g), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- precision of long rows

# PyTorch 2.13 CPU (float32) against float64, on the same data: layer_norm of 2^24 features of mean
# 1000 is off by 2.3e-6 (4e-5 at 2^20); softmax of 2^24 values sums to 1 - 6.8e-5. Before the
# blocked double sums the C kernels were off by 6.0 and 1.9e-4, and summed to 1 - 6.8e-5.


@pytest.mark.parametrize("log2n", [20, 24])
def test_layernorm_long_rows_far_from_zero(log2n: int) -> None:
    rng = np.random.default_rng(log2n)
    x = (1000.0 + rng.standard_normal((1, 2**log2n))).astype(F32)
    y, mean, _ = layernorm._layernorm_forward(x, None, None, 1e-5)
    x64 = x.astype(np.float64)
    exact_mean = x64.mean()
    x64 -= exact_mean
    x64 /= np.sqrt(np.mean(x64 * x64) + 1e-5)
    assert np.abs(y - x64).max() < 2e-6  # PyTorch: 2.3e-6 (2^24), 3.9e-5 (2^20)
    assert mean[0] == pytest.approx(exact_mean, rel=1e-7)


def test_softmax_log_softmax_cross_entropy_over_2_to_24_values() -> None:
    x = rand(np.random.default_rng(24), 1, 2**24)
    x64 = x.astype(np.float64)
    lse = np.log(np.exp(x64 - x64.max()).sum()) + x64.max()
    y = softmax._softmax_forward(x)
    assert abs(y.sum(dtype=np.float64) - 1.0) < 1e-5  # PyTorch: 6.8e-5 short
    assert np.abs(softmax._log_softmax_forward(x) - (x64 - lse)).max() < 1e-5  # PyTorch: 6.9e-5
    assert cross_entropy._cross_entropy_forward(x, np.array([7]), -100)[0] == pytest.approx(lse - x64[0, 7], abs=1e-5)
    assert cross_entropy._cross_entropy_rows(x, np.array([7]), -100)[0] == pytest.approx(lse - x64[0, 7], abs=1e-5)


# ---------------------------------------------------------------- threads

_PARKED_WORKERS = r"""
import os, numpy as np
from microtensor._backend import c
from microtensor.ops import softmax
x = np.ones((4000, 64), np.float32)
def ticks():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out[tid] = int(fields[11]) + int(fields[12])  # user + system CPU ticks
    return out
c.set_num_threads(64)
for _ in range(20):
    softmax._softmax_forward(x)
c.set_num_threads(2)
for _ in range(5):
    softmax._softmax_forward(x)
before = ticks()
for _ in range(3000):
    softmax._softmax_forward(x)
spent = sorted(t - before.get(tid, 0) for tid, t in ticks().items())
print(len(spent), sum(spent[:-2]), sum(spent[-2:]))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc to count thread CPU time")
def test_workers_beyond_the_thread_count_park() -> None:
    """After 64 threads then 2, the 62 surplus workers take no CPU (they spun and slowed kernels 2x before)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MICROTENSOR_NUM_THREADS": ""}
    done = subprocess.run([sys.executable, "-c", _PARKED_WORKERS], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    threads, surplus, busy = map(int, done.stdout.split())
    assert threads >= 64 and busy > 0  # the pool did grow to 64, and the kernels ran
    assert surplus <= 3  # CPU ticks (10 ms) of every thread but the caller and the one worker in use


def test_set_num_threads_is_capped_at_the_cores() -> None:
    from microtensor import _backend

    before = c.num_threads()
    cores = _backend.available_cores()
    try:
        with pytest.warns(UserWarning, match=rf"set_num_threads: {cores + 62} threads is more than the {cores} cores"):
            _backend.set_num_threads(cores + 62)
        assert c.num_threads() == min(cores, 64)  # the pool's own limit
        _backend.set_num_threads(1)
        assert c.num_threads() == 1
        with pytest.raises(ValueError, match="set_num_threads: expected an integer >= 1, got 0"):
            _backend.set_num_threads(0)
        with pytest.raises(TypeError, match="set_num_threads: expected an integer"):
            _backend.set_num_threads(2.0)
    finally:
        c.set_num_threads(before)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "2.5"])
def test_bad_microtensor_num_threads_warns(monkeypatch, value: str) -> None:
    from microtensor import _backend

    before = c.num_threads()
    monkeypatch.setenv("MICROTENSOR_NUM_THREADS", value)
    with pytest.warns(UserWarning, match=rf"MICROTENSOR_NUM_THREADS='{value}' is not a positive integer; ignored"):
        _backend._threads_from_env(c)
    assert c.num_threads() == before
    monkeypatch.setenv("MICROTENSOR_NUM_THREADS", "1000")
    try:
        with pytest.warns(UserWarning, match="MICROTENSOR_NUM_THREADS=1000: 1000 threads is more than"):
            _backend._threads_from_env(c)
        assert c.num_threads() == min(_backend.available_cores(), 64)
        monkeypatch.setenv("MICROTENSOR_NUM_THREADS", "1")
        _backend._threads_from_env(c)
        assert c.num_threads() == 1
    finally:
        c.set_num_threads(before)
