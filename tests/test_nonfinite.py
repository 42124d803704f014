"""Fuzzing ops with NaN, +-inf, zero-size and odd-layout inputs: both backends agree with each other and with PyTorch.

Each example runs the op through the public API on the C and the numpy backend and, when torch is
installed, through PyTorch 2.x on a contiguous copy. NaN must sit where PyTorch puts it, infinities
must match, finite values agree to float32 tolerance. Attention follows PyTorch's math backend, the
definition of sdpa: its fused CPU kernel (taken for 4-D float inputs) gives 0 instead of NaN for a NaN
query row or a NaN key that scores 0 * NaN. A zero-size input gives PyTorch's result or a
ValueError naming the op; nothing else may escape, and nothing may crash.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import microtensor as mt
import microtensor.nn.functional as F
from microtensor import _backend

try:
    import torch
    import torch.nn.functional as TF
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # the backends are still compared with each other (torch_fn lambdas never run)
    torch = None

BACKENDS = ["c", "numpy"] if not isinstance(_backend._load_c(), ImportError) else ["numpy"]
FUZZ = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NAN, INF = np.nan, np.inf

# Finite values on a grid of 1/8 in [-8, 8] (well-conditioned rows, no cancellation noise), about 1 in 6
# values NaN, inf or -inf.
FINITE = st.integers(-64, 64).map(lambda i: i / 8)
VALUES = st.one_of(FINITE, FINITE, FINITE, FINITE, FINITE, st.sampled_from([NAN, INF, -INF]))


@st.composite
def arrays(draw, shape: tuple[int, ...], special: bool = True) -> np.ndarray:
    """A float32 array of `shape`, laid out contiguous, transposed, reversed or strided."""
    elements = VALUES if special else FINITE
    layout = draw(st.sampled_from(["contiguous", "transposed", "reversed", "strided"]))
    if layout == "transposed" and len(shape) >= 2:
        return draw(hnp.arrays(np.float32, shape[::-1], elements=elements)).T
    if layout == "reversed" and shape:
        return draw(hnp.arrays(np.float32, shape, elements=elements))[..., ::-1]
    if layout == "strided" and shape:
        return draw(hnp.arrays(np.float32, (*shape[:-1], 2 * shape[-1]), elements=elements))[..., ::2]
    return draw(hnp.arrays(np.float32, shape, elements=elements))


def shapes(min_dims: int = 1, max_dims: int = 3, min_side: int = 0) -> st.SearchStrategy:
    """Small shapes, zero-size sides included unless min_side says otherwise."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=5)


@contextlib.contextmanager
def backend(name: str):
    """Run the block on backend `name`, then restore the one that was active."""
    before = _backend.name()
    _backend.use(name)
    try:
        yield
    finally:
        _backend.use(before)


def outcome(fn, *args):
    """('ok', float64 array) or ('error', exception) of fn(*args); only ValueError/TypeError may escape mt."""
    try:
        out = fn(*args)
    except (ValueError, TypeError, IndexError, RuntimeError) as err:
        return "error", err
    return "ok", np.asarray(out.detach() if hasattr(out, "detach") else out, dtype=np.float64)


def _mt_args(inputs) -> list:
    """float32 arrays as tensors sharing their memory and layout (`as_tensor`); integer arrays as they are."""
    return [mt.as_tensor(a) if getattr(a, "dtype", None) == np.float32 else a for a in inputs]


def check(op: str, mt_fn, torch_fn, *inputs, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """mt_fn on both backends agrees with each other and with torch_fn, on the same inputs.

    Inputs are numpy arrays: float32 ones become tensors (`_mt_args`), integer ones stay arrays.
    """
    zero_size = any(np.size(a) == 0 for a in inputs if isinstance(a, np.ndarray))
    results = {}
    for name in BACKENDS:
        with backend(name):
            results[name] = outcome(mt_fn, *_mt_args(inputs))
        kind, value = results[name]
        if kind == "error":
            assert isinstance(value, (ValueError, TypeError)), f"{op} on {name}: {type(value).__name__}: {value}"
            assert zero_size, f"{op} on {name} raised {value!r} for non-empty inputs"
            assert op.split("(")[0] in str(value), f"{op} on {name}: the error does not name the op: {value}"
    kinds = {kind for kind, _ in results.values()}
    assert len(kinds) == 1, f"{op}: the backends disagree: {results}"
    if kinds == {"ok"}:
        first, *others = [value for _, value in results.values()]
        for other in others:
            np.testing.assert_allclose(other, first, rtol=rtol, atol=atol, err_msg=f"{op}: C vs numpy")
    if torch is None:
        return
    targs = [torch.from_numpy(np.array(a, order="C")) if isinstance(a, np.ndarray) else a for a in inputs]
    expected = outcome(torch_fn, *targs)
    kind, value = next(iter(results.values()))
    if expected[0] == "error" or kind == "error":
        assert zero_size, f"{op}: torch gave {expected}, microtensor {value!r}"
        return
    assert value.shape == expected[1].shape, f"{op}: shape {value.shape}, torch {expected[1].shape}"
    np.testing.assert_allclose(value, expected[1], rtol=rtol, atol=atol, err_msg=f"{op}: vs torch")


def _grads(lib, fn, inputs: list) -> list[np.ndarray]:
    """Gradients of sum(fn(*inputs) * w), w a fixed ramp, for the float inputs; `lib` is mt or torch."""
    is_mt = lib is mt
    leaves = [(mt.as_tensor(a).requires_grad_() if is_mt else torch.tensor(np.array(a, order="C"), requires_grad=True))
              if isinstance(a, np.ndarray) and a.dtype == np.float32 else
              (a if is_mt else torch.from_numpy(a) if isinstance(a, np.ndarray) else a) for a in inputs]
    out = fn(*leaves)
    ramp = np.linspace(-1.0, 1.0, max(int(np.prod(out.shape)), 1), dtype=np.float32)[: int(np.prod(out.shape))]
    weight = ramp.reshape(tuple(out.shape))
    (out * (mt.tensor(weight) if is_mt else torch.from_numpy(weight))).sum().backward()
    floats = [leaf for leaf, a in zip(leaves, inputs, strict=True) if getattr(a, "dtype", None) == np.float32]
    return [np.zeros(leaf.shape) if leaf.grad is None else np.asarray(leaf.grad, dtype=np.float64) for leaf in floats]


def check_grads(op: str, mt_fn, torch_fn, *inputs, rtol: float = 1e-4, atol: float = 1e-4) -> None:
    """Gradients through mt_fn on both backends agree with each other and with torch_fn's (finite inputs)."""
    if outcome(mt_fn, *_mt_args(inputs))[0] == "error":
        return  # a clear error on the forward pass, which `check` holds to PyTorch
    per_backend = []
    for name in BACKENDS:
        with backend(name):
            per_backend.append(_grads(mt, mt_fn, list(inputs)))
    expected = _grads(torch, torch_fn, list(inputs)) if torch is not None else per_backend[0]
    for grads in per_backend:
        for got, want in zip(grads, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"{op}: gradient")


@given(st.data())
@FUZZ
def test_gradients_on_odd_layouts_and_zero_sizes(data) -> None:
    x = data.draw(arrays(data.draw(shapes()), special=False))
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    check_grads("softmax", lambda t: F.softmax(t, dim), lambda t: TF.softmax(t, dim), x)
    check_grads("log_softmax", lambda t: F.log_softmax(t, dim), lambda t: TF.log_softmax(t, dim), x)
    check_grads("gelu", lambda t: F.gelu(t, approximate="tanh"), lambda t: TF.gelu(t, approximate="tanh"), x)
    normalized = x.shape[-1:]
    w, b = data.draw(arrays(normalized, special=False)), data.draw(arrays(normalized, special=False))
    check_grads("layer_norm", lambda *t: F.layer_norm(t[0], normalized, *t[1:]),
                lambda *t: TF.layer_norm(t[0], normalized, *t[1:]), x, w, b, atol=2e-3)
    n, classes = data.draw(st.integers(0, 5)), data.draw(st.integers(1, 5))
    logits = data.draw(arrays((n, classes), special=False))
    targets = np.array(data.draw(st.lists(st.sampled_from([*range(classes), -100]), min_size=n, max_size=n)),
                       dtype=np.int64)
    check_grads("cross_entropy", F.cross_entropy, lambda *t: TF.cross_entropy(*t), logits, targets)
    rows, n_in, n_out = (data.draw(st.integers(0, 4)) for _ in range(3))
    lin = [data.draw(arrays(s, special=False)) for s in ((rows, n_in), (n_out, n_in), (n_out,))]
    check_grads("linear", F.linear, lambda *t: TF.linear(*t), *lin, atol=1e-3)
    tq, tk, d = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    qkv = [data.draw(arrays((2, t, d), special=False)) for t in (tq, tk, tk)]
    causal = data.draw(st.booleans())
    check_grads("scaled_dot_product_attention", lambda *t: F.scaled_dot_product_attention(*t, is_causal=causal),
                lambda *t: _torch_sdpa(*t, is_causal=causal), *qkv, atol=1e-3)


@given(st.data())
@FUZZ
def test_softmax_and_log_softmax(data) -> None:
    x = data.draw(arrays(data.draw(shapes())))
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    check(f"softmax(dim={dim})", lambda t: F.softmax(t, dim), lambda t: TF.softmax(t, dim), x)
    check(f"log_softmax(dim={dim})", lambda t: F.log_softmax(t, dim), lambda t: TF.log_softmax(t, dim), x)


@given(st.data())
@FUZZ
def test_layer_norm(data) -> None:
    shape = data.draw(shapes())
    x = data.draw(arrays(shape))
    n = data.draw(st.integers(1, x.ndim))
    normalized = shape[x.ndim - n:]
    affine = data.draw(st.booleans())
    w, b = (data.draw(arrays(normalized)), data.draw(arrays(normalized))) if affine else (None, None)
    params = () if not affine else (w, b)
    check("layer_norm", lambda t, *p: F.layer_norm(t, normalized, *p),
          lambda t, *p: TF.layer_norm(t, normalized, *p), x, *params, rtol=1e-4, atol=1e-4)


@given(st.data())
@FUZZ
def test_cross_entropy(data) -> None:
    n, classes = data.draw(st.integers(0, 6)), data.draw(st.integers(1, 6))
    logits = data.draw(arrays((n, classes)))
    targets = np.array(data.draw(st.lists(st.sampled_from([*range(classes), -100]), min_size=n, max_size=n)),
                       dtype=np.int64)
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]))
    check("cross_entropy", lambda t, y: F.cross_entropy(t, y, reduction=reduction),
          lambda t, y: TF.cross_entropy(t, y, reduction=reduction), logits, targets)


@given(st.data())
@FUZZ
def test_gelu(data) -> None:
    x = data.draw(arrays(data.draw(shapes())))
    for approximate in ("tanh", "none"):  # PyTorch in float64: its float32 AVX-512 loop gives gelu(inf) = nan
        check("gelu", lambda t, a=approximate: F.gelu(t, approximate=a),
              lambda t, a=approximate: TF.gelu(t.double(), approximate=a), x, atol=1e-5)


@given(st.data())
@FUZZ
def test_linear_and_matmul(data) -> None:
    rows, n_in, n_out = (data.draw(st.integers(0, 5)) for _ in range(3))
    lead = data.draw(st.sampled_from([(), (2,)]))
    x, w = data.draw(arrays((*lead, rows, n_in))), data.draw(arrays((n_out, n_in)))
    bias = data.draw(st.sampled_from([None, data.draw(arrays((n_out,)))]))
    extra = () if bias is None else (bias,)
    check("linear", F.linear, lambda *t: TF.linear(*t), x, w, *extra, atol=1e-4)
    wt = np.ascontiguousarray(w.T)
    check("matmul", mt.matmul, torch.matmul if torch else None, x, wt, atol=1e-4)


@given(st.data())
@FUZZ
def test_scaled_dot_product_attention(data) -> None:
    b, tq, tk = data.draw(st.integers(0, 2)), data.draw(st.integers(1, 5)), data.draw(st.integers(0, 5))
    d, dv = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    # No keys and a NaN query somewhere make PyTorch's whole output NaN (finite queries give zeros): not followed.
    q = data.draw(arrays((b, tq, d), special=tk > 0))
    k, v = data.draw(arrays((b, tk, d))), data.draw(arrays((b, tk, dv)))
    how = data.draw(st.sampled_from(["none", "causal", "mask"]))
    mask = data.draw(hnp.arrays(np.bool_, (tq, tk))) if how == "mask" else None
    kw = {"is_causal": how == "causal"}
    check("scaled_dot_product_attention",
          lambda *t: F.scaled_dot_product_attention(*t, attn_mask=None if mask is None else mt.tensor(mask), **kw),
          lambda *t: _torch_sdpa(*t, attn_mask=None if mask is None else torch.from_numpy(mask), **kw),
          q, k, v, atol=1e-4)


def _torch_sdpa(*args, **kwargs):
    """PyTorch's scaled_dot_product_attention on its math backend."""
    with sdpa_kernel(SDPBackend.MATH):
        return TF.scaled_dot_product_attention(*args, **kwargs)


def _torch_self_attention(qkv, heads: int, mask, causal: bool):
    """PyTorch's sdpa on heads split by hand from a packed (B, T, 3*D) projection."""
    B, T, D3 = qkv.shape
    q, k, v = (t.reshape(B, T, heads, -1).transpose(1, 2) for t in qkv.split(D3 // 3, dim=-1))
    out = _torch_sdpa(q, k, v, attn_mask=mask, is_causal=causal)
    return out.transpose(1, 2).reshape(B, T, D3 // 3)


@given(st.data())
@FUZZ
def test_self_attention(data) -> None:
    b, t, heads, hd = data.draw(st.integers(0, 2)), data.draw(st.integers(1, 5)), data.draw(st.integers(1, 2)), \
        data.draw(st.integers(1, 3))
    qkv = data.draw(arrays((b, t, 3 * heads * hd)))
    causal = data.draw(st.booleans())
    mask = None if causal or data.draw(st.booleans()) else data.draw(hnp.arrays(np.bool_, (t, t)))
    check("self_attention",
          lambda x: F.self_attention(x, heads, mask=mask, is_causal=causal),
          lambda x: _torch_self_attention(x, heads, None if mask is None else torch.from_numpy(mask), causal),
          qkv, atol=1e-4)


@given(st.data())
@FUZZ
def test_embedding(data) -> None:
    vocab, dim = data.draw(st.integers(1, 5)), data.draw(st.integers(0, 4))
    weight = data.draw(arrays((vocab, dim)))
    ids = data.draw(hnp.arrays(np.int64, data.draw(shapes(max_dims=2)), elements=st.integers(0, vocab - 1)))
    check("embedding", F.embedding, lambda *t: TF.embedding(*t), ids, weight)


UNARY = {
    "exp": (mt.exp, "exp"), "log": (mt.log, "log"), "tanh": (mt.tanh, "tanh"), "sqrt": (mt.sqrt, "sqrt"),
    "abs": (mt.abs, "abs"), "sigmoid": (mt.sigmoid, "sigmoid"), "relu": (F.relu, "relu"),
}
BINARY = ["add", "sub", "mul", "div"]


@given(st.data())
@FUZZ
def test_elementwise(data) -> None:
    shape = data.draw(shapes())
    x = data.draw(arrays(shape))
    for name, (fn, torch_name) in UNARY.items():
        check(name, fn, getattr(torch, torch_name) if torch else None, x, atol=1e-5)
    y = data.draw(arrays(shape[data.draw(st.integers(0, len(shape))):]))  # broadcasts against x
    for name in BINARY:
        check(name, getattr(mt.Tensor, f"__{'truediv' if name == 'div' else name}__"),
              getattr(torch, name) if torch else None, x, y)


@pytest.mark.skipif(torch is None, reason="the PyTorch values are the reference here")
@pytest.mark.parametrize("name", BACKENDS)
def test_pinned_pytorch_results(name: str) -> None:
    """The cases issue 9 lists, pinned: softmax rows with NaN/inf/all -inf, a NaN query, a NaN in an ignored row."""
    rows = np.array([[1, NAN, 2], [1, INF, 2], [-INF, -INF, -INF], [1, -INF, 2]], np.float32)
    wide = np.full((2, 40), -INF, np.float32)
    wide[1, :3] = [1, INF, 2]
    with backend(name):
        for x in (rows, wide):
            y = F.softmax(mt.tensor(x), -1).numpy()
            assert np.isnan(y[:3]).all() if x is rows else np.isnan(y).all()
        assert F.softmax(mt.tensor(rows), -1).numpy()[3].tolist() == pytest.approx([0.268941, 0.0, 0.731059],
                                                                                  abs=1e-6)
        logits = np.array([[1, NAN, 2], [1, 2, 3]], np.float32)
        loss = F.cross_entropy(mt.tensor(logits), np.array([-100, 1]))
        assert loss.item() == pytest.approx(1.4076059, rel=1e-6)
        qkv = np.random.default_rng(0).standard_normal((1, 4, 6)).astype(np.float32)
        qkv[0, 2, 0] = NAN
        out = F.self_attention(mt.tensor(qkv), 1, is_causal=True).numpy()
        assert np.isnan(out[0, 2]).all() and np.isfinite(out[0, [0, 1, 3]]).all()
