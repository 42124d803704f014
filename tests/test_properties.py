"""Hypothesis: random shapes for elementwise and reduction ops; forward as numpy, gradients as derived."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import microtensor as mt
import microtensor.nn.functional as F

FAST = settings(max_examples=30, deadline=None)
FLOATS = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False, width=64)


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum g over the axes that broadcasting added or stretched, back to `shape`."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


@st.composite
def broadcast_pair(draw):
    """Two float64 arrays of mutually broadcastable random shapes (up to 4-D), the second kept away from 0."""
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4))
    a = draw(hnp.arrays(np.float64, shapes.input_shapes[0], elements=FLOATS))
    b = draw(hnp.arrays(np.float64, shapes.input_shapes[1], elements=st.floats(0.25, 3.0)))
    sign = draw(hnp.arrays(np.float64, shapes.input_shapes[1], elements=st.sampled_from([-1.0, 1.0])))
    return a, b * sign


BINARY = {
    "add": (np.add, lambda a, b: (np.ones_like(a), np.ones_like(b))),
    "sub": (np.subtract, lambda a, b: (np.ones_like(a), -np.ones_like(b))),
    "mul": (np.multiply, lambda a, b: (b, a)),
    "div": (np.divide, lambda a, b: (1 / b, -a / b**2)),
}


@FAST
@given(pair=broadcast_pair(), op=st.sampled_from(sorted(BINARY)), upstream_seed=st.integers(0, 2**16))
def test_binary_ops_broadcast_like_numpy(pair, op, upstream_seed) -> None:
    a, b = pair
    np_op, local = BINARY[op]
    ta, tb = mt.tensor(a, requires_grad=True), mt.tensor(b, requires_grad=True)
    out = {"add": ta + tb, "sub": ta - tb, "mul": ta * tb, "div": ta / tb}[op]
    expected = np_op(a, b)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.data, expected, rtol=1e-12)
    g = np.random.default_rng(upstream_seed).standard_normal(expected.shape)
    out.backward(g)
    da, db = (np.broadcast_to(d, expected.shape) for d in local(a, b))
    np.testing.assert_allclose(ta.grad, unbroadcast(g * da, a.shape), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tb.grad, unbroadcast(g * db, b.shape), rtol=1e-10, atol=1e-12)


UNARY = {
    # name: (microtensor op, numpy forward, analytic derivative, domain)
    "neg": (lambda t: -t, np.negative, lambda x: -np.ones_like(x), FLOATS),
    "exp": (lambda t: t.exp(), np.exp, np.exp, FLOATS),
    "log": (lambda t: t.log(), np.log, lambda x: 1 / x, st.floats(0.05, 5.0)),
    "sqrt": (lambda t: t.sqrt(), np.sqrt, lambda x: 0.5 / np.sqrt(x), st.floats(0.05, 5.0)),
    "tanh": (lambda t: t.tanh(), np.tanh, lambda x: 1 - np.tanh(x) ** 2, FLOATS),
    "sigmoid": (
        lambda t: t.sigmoid(),
        lambda x: 1 / (1 + np.exp(-x)),
        lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2,
        FLOATS,
    ),
    "relu": (
        lambda t: t.relu(),
        lambda x: np.maximum(x, 0),
        lambda x: (x > 0).astype(float),
        FLOATS.filter(lambda v: v != 0),
    ),
    "abs": (lambda t: t.abs(), np.abs, np.sign, FLOATS.filter(lambda v: v != 0)),
    "square": (lambda t: t**2, np.square, lambda x: 2 * x, FLOATS),
    "cube_root": (lambda t: t ** (1 / 3), np.cbrt, lambda x: np.cbrt(x) / (3 * x), st.floats(0.05, 5.0)),
    "gelu": (
        lambda t: F.gelu(t, approximate="tanh"),
        lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
        None,
        FLOATS,
    ),
}


@FAST
@given(data=st.data(), name=st.sampled_from(sorted(UNARY)))
def test_unary_ops_match_numpy_and_their_derivative(data, name) -> None:
    op, forward, derivative, domain = UNARY[name]
    x = data.draw(
        hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=4, max_side=5), elements=domain)
    )
    t = mt.tensor(x, requires_grad=True)
    out = op(t)
    np.testing.assert_allclose(out.data, forward(x), rtol=1e-12, atol=1e-15)
    out.backward(np.ones_like(x))
    if derivative is None:  # no closed form worth writing: central differences of the numpy forward
        h = 1e-6
        expected = (forward(x + h) - forward(x - h)) / (2 * h)
        np.testing.assert_allclose(t.grad, expected, rtol=1e-6, atol=1e-8)
    else:
        np.testing.assert_allclose(t.grad, derivative(x), rtol=1e-10, atol=1e-12)


@st.composite
def reduction_case(draw, distinct: bool = False):
    """A random array, a random axis (None, an int or a tuple) and keepdims."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    if distinct:
        values = draw(st.permutations(range(int(np.prod(shape)))))
        x = np.asarray(values, dtype=np.float64).reshape(shape) * 0.5 - 3
    else:
        x = draw(hnp.arrays(np.float64, shape, elements=FLOATS))
    ndim = len(shape)
    axis = draw(
        st.one_of(
            st.none(),
            st.integers(-ndim, ndim - 1),
            st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
        )
    )
    return x, axis, draw(st.booleans())


def axes_of(axis, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,)))


def expand_like(g: np.ndarray, x: np.ndarray, axis, keepdims: bool) -> np.ndarray:
    """An upstream gradient of the reduced shape, broadcast back to x's shape."""
    if not keepdims:
        g = np.expand_dims(g, axes_of(axis, x.ndim))
    return np.broadcast_to(g, x.shape)


@FAST
@given(case=reduction_case(), use_dim=st.booleans())
def test_sum_and_mean(case, use_dim) -> None:
    x, axis, keepdims = case
    count = int(np.prod([x.shape[a] for a in axes_of(axis, x.ndim)]))
    for name, np_fn, scale in (("sum", np.sum, 1.0), ("mean", np.mean, 1.0 / count)):
        t = mt.tensor(x, requires_grad=True)
        kwargs = {"dim": axis, "keepdim": keepdims} if use_dim else {"axis": axis, "keepdims": keepdims}
        out = getattr(t, name)(**kwargs)
        expected = np_fn(x, axis=axis, keepdims=keepdims)
        assert out.shape == np.shape(expected), name
        np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
        g = np.random.default_rng(0).standard_normal(np.shape(expected))
        out.backward(g)
        np.testing.assert_allclose(t.grad, expand_like(g, x, axis, keepdims) * scale, rtol=1e-12)


@FAST
@given(case=reduction_case(distinct=True))
def test_amax_and_amin_route_the_gradient_to_the_extreme(case) -> None:
    x, axis, keepdims = case
    for name, np_fn in (("amax", np.max), ("amin", np.min)):
        t = mt.tensor(x, requires_grad=True)
        out = getattr(t, name)(dim=axis, keepdim=keepdims)
        expected = np_fn(x, axis=axis, keepdims=keepdims)
        np.testing.assert_array_equal(out.data, expected)
        g = np.random.default_rng(1).standard_normal(np.shape(expected))
        out.backward(g)
        hit = x == np_fn(x, axis=axis, keepdims=True)
        np.testing.assert_allclose(t.grad, expand_like(g, x, axis, keepdims) * hit, rtol=1e-12)
        assert np.count_nonzero(hit) == int(np.prod(np.shape(expected)))


@FAST
@given(case=reduction_case(), correction=st.sampled_from([0, 1]))
def test_var(case, correction) -> None:
    x, axis, keepdims = case
    count = int(np.prod([x.shape[a] for a in axes_of(axis, x.ndim)]))
    if count - correction <= 0:
        return
    t = mt.tensor(x, requires_grad=True)
    out = t.var(axis=axis, keepdims=keepdims, correction=correction)
    expected = np.var(x, axis=axis, keepdims=keepdims, ddof=correction)
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(2).standard_normal(np.shape(expected))
    out.backward(g)
    centered = x - x.mean(axis=axis, keepdims=True)
    analytic = expand_like(g, x, axis, keepdims) * 2 * centered / (count - correction)
    np.testing.assert_allclose(t.grad, analytic, rtol=1e-9, atol=1e-12)


@FAST
@given(
    x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), elements=FLOATS),
    data=st.data(),
)
def test_softmax_and_log_softmax_rows(x, data) -> None:
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    expected = e / e.sum(axis=axis, keepdims=True)
    t = mt.tensor(x, requires_grad=True)
    y = F.softmax(t, dim=axis)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        F.log_softmax(mt.tensor(x), axis=axis).data, np.log(expected), rtol=1e-10, atol=1e-12
    )
    g = np.random.default_rng(3).standard_normal(x.shape)
    y.backward(g)
    analytic = expected * (g - (g * expected).sum(axis=axis, keepdims=True))
    np.testing.assert_allclose(t.grad, analytic, rtol=1e-10, atol=1e-12)
