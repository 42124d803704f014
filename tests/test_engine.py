"""The backward engine: order, accumulation, graph lifetime, grad mode, version counters, custom Functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

import microtensor as mt
from microtensor import AutogradError, Function


def leaf(values, dtype=np.float64) -> mt.Tensor:
    return mt.tensor(np.asarray(values, dtype=dtype), requires_grad=True)


def test_chain_of_100000_ops_has_no_recursion_limit() -> None:
    a = leaf(1.0)
    x = a
    for _ in range(100_000):
        x = x * 1.00001
    x.backward()
    assert a.grad == pytest.approx(1.00001**100_000, rel=1e-9)
    assert a.grad == pytest.approx(math.e, rel=1e-4)


def test_deep_chain_through_several_op_kinds() -> None:
    a = leaf([0.5, -0.25])
    x = a
    for _ in range(2_000):
        x = (x + 0.001).tanh()
    x.sum().backward()
    expected = np.ones(2)
    with mt.no_grad():
        y = a
        ys = []
        for _ in range(2_000):
            y = (y + 0.001).tanh()
            ys.append(y.data)
    for y in ys:
        expected = expected * (1 - y * y)
    np.testing.assert_allclose(a.grad, expected, rtol=1e-10)


def test_b_equals_a_plus_a_then_c_equals_b_plus_b_regression() -> None:
    a = leaf([1.0, 2.0, 3.0])
    b = a + a
    c = b + b
    c.sum().backward()
    np.testing.assert_array_equal(a.grad, [4.0, 4.0, 4.0])


def test_node_reused_in_a_diamond_sums_all_paths() -> None:
    a = leaf([1.5, -2.0])
    b = a * a  # 2a
    c = b * b + b * 3.0 + b  # 4a^3 + 6a + 2a -> d/da (a^4 + 4 a^2) = 4a^3 + 8a
    c.sum().backward()
    np.testing.assert_allclose(a.grad, 4 * a.data**3 + 8 * a.data)


def test_gradient_accumulates_across_uses() -> None:
    a = leaf([2.0, -1.0])
    y = a * a + a * 3.0 + a.exp()
    y.sum().backward()
    np.testing.assert_allclose(a.grad, 2 * a.data + 3 + np.exp(a.data))


def test_gradients_accumulate_across_backward_calls_until_zeroed() -> None:
    a = leaf([1.0, 2.0])
    (a * a).sum().backward()
    (a * a).sum().backward()
    np.testing.assert_allclose(a.grad, 2 * (2 * a.data))
    a.zero_grad()
    assert a.grad is None
    (a * 3.0).sum().backward()
    np.testing.assert_allclose(a.grad, [3.0, 3.0])
    a.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad, [0.0, 0.0])


def test_broadcast_gradients_are_summed_back_to_each_shape() -> None:
    a = leaf(np.arange(3.0).reshape(3, 1))
    b = leaf(np.arange(4.0))
    ((a + b) * (a * b)).sum().backward()
    # d/da sum(a^2 b + a b^2) = sum_j (2 a b_j + b_j^2), d/db = sum_i (a_i^2 + 2 a_i b)
    np.testing.assert_allclose(a.grad, (2 * a.data * b.data + b.data**2).sum(1, keepdims=True))
    np.testing.assert_allclose(b.grad, (a.data**2 + 2 * a.data * b.data).sum(0))
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)


def test_leaf_grad_keeps_leaf_dtype_and_owns_its_array() -> None:
    w = mt.randn(3, 2, requires_grad=True)
    x = mt.tensor(np.ones((4, 3)))
    (x @ w).sum().backward()
    assert w.grad.dtype == np.float32 and w.grad.shape == (3, 2)
    a = leaf([1.0, 2.0])
    b = a * 1.0
    b.backward(np.array([5.0, 6.0]))
    grad_before = a.grad.clone()
    c = a * 1.0
    g = np.array([1.0, 1.0])
    c.backward(g)
    np.testing.assert_array_equal(a.grad, grad_before + 1)
    np.testing.assert_array_equal(g, [1.0, 1.0])


def test_retain_graph_allows_a_second_backward() -> None:
    a = leaf([1.0, 3.0])
    y = (a * a).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(a.grad, 2 * (2 * a.data))


def test_second_backward_on_freed_graph_is_a_clear_error() -> None:
    a = leaf([1.0, 3.0])
    y = (a.exp() * a).sum()
    y.backward()
    with pytest.raises(AutogradError, match="retain_graph=True"):
        y.backward()
    with pytest.raises(RuntimeError):
        y.backward()


def test_backward_on_non_scalar_needs_a_gradient() -> None:
    a = leaf(np.ones((2, 3)))
    y = a * 2.0
    with pytest.raises(AutogradError, match=r"shape \(2, 3\)"):
        y.backward()
    y.backward(np.full((2, 3), 0.5))
    np.testing.assert_allclose(a.grad, np.ones((2, 3)))
    with pytest.raises(AutogradError, match="gradient of shape"):
        (a * 2.0).backward(np.ones(3))


def test_backward_on_a_tensor_without_graph_is_an_error() -> None:
    with pytest.raises(AutogradError, match="does not require grad"):
        mt.tensor([1.0, 2.0]).sum().backward()


def test_backward_on_a_leaf_sets_its_own_gradient() -> None:
    a = leaf(3.0)
    a.backward()
    assert a.grad == 1.0


def test_unused_parameter_keeps_grad_none() -> None:
    used, unused = leaf([1.0, 2.0]), leaf([3.0])
    (used * 2.0).sum().backward()
    assert unused.grad is None
    np.testing.assert_array_equal(used.grad, [2.0, 2.0])


def test_no_grad_builds_no_graph() -> None:
    a = leaf([1.0, 2.0])
    with mt.no_grad():
        assert not mt.is_grad_enabled()
        y = (a * a).exp().sum()
        with mt.enable_grad():
            z = a * 2.0
    assert mt.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert z.requires_grad and z.grad_fn is not None

    @mt.no_grad()
    def double(t):
        return t * 2.0

    out = double(a)
    assert not out.requires_grad and out.grad_fn is None
    assert mt.is_grad_enabled()


def test_no_grad_restores_mode_after_an_exception() -> None:
    with pytest.raises(KeyError), mt.no_grad():
        raise KeyError("boom")
    assert mt.is_grad_enabled()


def test_in_place_change_of_a_saved_tensor_is_detected() -> None:
    a = leaf([1.0, 2.0])
    b = mt.tensor(np.array([3.0, 4.0]))
    y = (a * b).sum()
    b += 1.0  # b does not require grad, so the change itself is allowed ...
    with pytest.raises(AutogradError, match="modified in place"):
        y.backward()  # ... but Mul saved b for a's gradient


def test_in_place_change_through_detach_is_detected() -> None:
    a = leaf([1.0, 2.0])
    y = a.exp()  # Exp saves its output
    y.detach().mul_(2.0)
    with pytest.raises(AutogradError, match="Exp"):
        y.sum().backward()


def test_in_place_change_of_unsaved_tensor_is_fine() -> None:
    a = leaf([1.0, 2.0])
    b = mt.tensor(np.array([3.0, 4.0]))
    y = (a + b).sum()  # Add saves nothing
    b += 1.0
    y.backward()
    np.testing.assert_array_equal(a.grad, [1.0, 1.0])


def test_in_place_on_a_tensor_requiring_grad_is_refused_outside_no_grad() -> None:
    a = leaf([1.0, 2.0])
    with pytest.raises(AutogradError, match=r"\+="):
        a += 1.0
    with mt.no_grad():
        a -= 1.0
    np.testing.assert_array_equal(a.data, [0.0, 1.0])


def test_comparisons_carry_no_gradient_and_do_not_break_backward() -> None:
    a = leaf([-1.0, 0.5, 2.0])
    masks = [a < 0, a <= 0.5, a > 0, a >= 2.0, a == 0.5, a != 0.5]
    for m in masks:
        assert m.dtype == np.bool_ and not m.requires_grad and m.grad_fn is None
    np.testing.assert_array_equal(masks[1].data, [True, True, False])
    idx = a.argmax()
    assert idx.item() == 2 and not idx.requires_grad
    y = mt.where(a > 0, a * a, -a) + a.masked_fill(a == 0.5, 0.0) * (a > 0).to(np.float64)
    y.sum().backward()
    np.testing.assert_allclose(a.grad, [-1.0, 1.0, 5.0])


def test_detach_shares_data_and_leaves_the_graph() -> None:
    a = leaf([1.0, 2.0])
    d = (a * 2.0).detach()
    assert not d.requires_grad and d.grad_fn is None
    y = (a * d).sum()
    y.backward()
    np.testing.assert_array_equal(a.grad, [2.0, 4.0])


class Cube(Function):
    """x ** 3 with its own backward, saving the input."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x * x * grad


class ScaledAdd(Function):
    """a + alpha * b with a keyword argument; returns None for inputs that need no gradient."""

    @staticmethod
    def forward(ctx, a, b, alpha=1.0):
        ctx.alpha = alpha
        return a + alpha * b

    @staticmethod
    def backward(ctx, grad):
        need_a, need_b = ctx.needs_input_grad
        return (grad if need_a else None), (ctx.alpha * grad if need_b else None)


def test_user_defined_function_with_save_for_backward() -> None:
    x = leaf([1.0, -2.0, 0.5])
    y = Cube.apply(x)
    assert isinstance(y, mt.Tensor) and isinstance(y.grad_fn, Cube)
    np.testing.assert_allclose(y.data, x.data**3)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 3 * x.data**2)
    assert mt.gradcheck(lambda t: Cube.apply(t * 2.0), [leaf([0.3, -0.7])])


def test_user_defined_function_with_kwargs_and_a_constant_input() -> None:
    a = leaf([1.0, 2.0])
    b = mt.tensor(np.array([10.0, 20.0]))
    y = ScaledAdd.apply(a, b, alpha=0.5)
    np.testing.assert_allclose(y.data, [6.0, 12.0])
    assert tuple(y.grad_fn.needs_input_grad) == (True, False)
    (y * y).sum().backward()
    np.testing.assert_allclose(a.grad, 2 * y.data)
    assert b.grad is None
    assert mt.gradcheck(lambda p, q: ScaledAdd.apply(p, q, alpha=-3.0), [leaf([0.1, 0.2]), leaf([0.3, 0.4])])


def test_user_function_under_no_grad_records_nothing() -> None:
    x = leaf([1.0])
    with mt.no_grad():
        y = Cube.apply(x)
    assert not y.requires_grad and y.grad_fn is None


def test_user_function_returning_too_few_gradients_is_an_error() -> None:
    class Bad(Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, grad):
            return (grad,)

    with pytest.raises(AutogradError, match="Bad returned 1 gradients for 2 inputs"):
        Bad.apply(leaf([1.0]), leaf([2.0])).sum().backward()


def test_gradcheck_reports_input_and_worst_element_of_a_wrong_gradient() -> None:
    class WrongSquare(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            wrong = 2 * x * grad
            wrong[1] *= 1.5
            return wrong

    x = leaf([0.5, 1.0, -1.0])
    with pytest.raises(mt.GradcheckError, match=r"input 0 .*index \(1,\)"):
        mt.gradcheck(WrongSquare.apply, [x])


def test_gradcheck_needs_float64_and_an_input_requiring_grad() -> None:
    with pytest.raises(TypeError, match="float64"):
        mt.gradcheck(lambda t: t * 2, [mt.tensor([1.0], requires_grad=True)])
    with pytest.raises(ValueError, match="no input requires grad"):
        mt.gradcheck(lambda t: t * 2, [mt.tensor(np.array([1.0]))])


def test_forward_sees_which_gradients_are_needed() -> None:
    """ctx.needs_input_grad is set before forward, so a Function saves only what its backward will use."""
    seen = []

    class Scale(mt.Function):
        @staticmethod
        def forward(ctx, x, w):
            seen.append(tuple(ctx.needs_input_grad))
            ctx.save_for_backward(x if ctx.needs_input_grad and ctx.needs_input_grad[1] else None, w)
            return x * w

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g * w, (None if x is None else (g * x).sum())

    x = mt.tensor(np.array([1.0, 2.0]), requires_grad=True)
    w = mt.tensor(np.array(3.0))
    Scale.apply(x, w).sum().backward()
    with mt.no_grad():
        Scale.apply(x, w)
    assert seen == [(True, False), ()]
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
    y = Scale.apply(x, w)
    with mt.no_grad():
        x += 1  # not saved (w needs no gradient): changing it after the forward pass is fine, as in PyTorch
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 6.0])


class _ConstGrad(Function):
    """y = x; backward hands back an array the ctx owns (as ops that return a saved array do)."""

    @staticmethod
    def forward(ctx, x):
        ctx.const = np.full_like(x, 2.0)
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        return ctx.const


class _PassGrad(Function):
    """y = x; backward hands back the incoming gradient array itself."""

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        return g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_consumers_sum_in_place_without_touching_their_arrays(dtype) -> None:
    """Twelve gradients into one node add up, and the arrays the consumers returned stay as they were."""
    a = leaf(np.arange(6.0).reshape(2, 3), dtype)
    h = a * 1.0
    outs = [_ConstGrad.apply(h) for _ in range(4)] + [_PassGrad.apply(h) for _ in range(4)]
    outs += [h * float(i) for i in range(4)]
    consts = [o._ctx.const for o in outs[:4]]
    total = outs[0]
    for o in outs[1:]:
        total = total + o
    (total * 3.0).sum().backward()
    assert a.grad.dtype == dtype
    np.testing.assert_array_equal(a.grad.numpy(), np.full((2, 3), 4 * 2.0 + 4 * 3.0 + 3.0 * (0 + 1 + 2 + 3)))
    for c in consts:
        np.testing.assert_array_equal(c, np.full((2, 3), 2.0))



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linears_sharing_an_input_add_dx_into_the_engines_sum(backend, rng, dtype) -> None:
    """One x feeding six linears (a per-head model): dx, dW and db match the sum written out in numpy."""
    x = mt.tensor(rng.standard_normal((4, 5, 8)).astype(dtype), requires_grad=True)
    ws = [mt.tensor(rng.standard_normal((3, 8)).astype(dtype), requires_grad=True) for _ in range(6)]
    b = mt.tensor(rng.standard_normal(3).astype(dtype), requires_grad=True)
    h = x * 1.0
    coef = [rng.standard_normal((4, 5, 3)).astype(dtype) for _ in ws]
    total = None
    for w, c in zip(ws, coef):
        term = (mt.nn.functional.linear(h, w, b) * mt.tensor(c)).sum()
        total = term if total is None else total + term
    total.backward()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    expected_dx = sum(c @ w.numpy() for w, c in zip(ws, coef))
    np.testing.assert_allclose(x.grad.numpy(), expected_dx, rtol=tol, atol=tol)
    for w, c in zip(ws, coef):
        np.testing.assert_allclose(w.grad.numpy(), c.reshape(-1, 3).T @ x.numpy().reshape(-1, 8), rtol=tol, atol=tol)
    np.testing.assert_allclose(b.grad.numpy(), sum(c.reshape(-1, 3).sum(0) for c in coef), rtol=tol, atol=tol)
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_adds_into_gradients_zeroed_in_place(backend, rng, dtype) -> None:
    """With .grad zeroed in place (zero_grad(set_to_none=False), as the trainer keeps them: views of Adam's flat
    buffer), linear's backward adds dw and db into those very arrays, over two backward calls; fresh ones the
    first time."""
    x = mt.tensor(rng.standard_normal((4, 5, 8)).astype(dtype))
    w, b = (mt.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in ((3, 8), (3,)))
    coef = rng.standard_normal((4, 5, 3)).astype(dtype)
    expected_dw, expected_db = coef.reshape(-1, 3).T @ x.numpy().reshape(-1, 8), coef.reshape(-1, 3).sum(0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    (mt.nn.functional.linear(x, w, b) * mt.tensor(coef)).sum().backward()
    for p in (w, b):
        p.zero_grad(set_to_none=False)
    kept = w.grad.data, b.grad.data
    for calls in (1, 2):
        (mt.nn.functional.linear(x, w, b) * mt.tensor(coef)).sum().backward()
        assert w.grad.data is kept[0] and b.grad.data is kept[1]
        np.testing.assert_allclose(w.grad.numpy(), calls * expected_dw, rtol=tol, atol=tol)
        np.testing.assert_allclose(b.grad.numpy(), calls * expected_db, rtol=tol, atol=tol)


def test_a_read_only_gradient_is_not_added_into(backend) -> None:
    """A .grad the program made read-only is not offered to linear's kernel: backward fails as numpy's add does."""
    w = mt.tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    frozen = np.zeros((2, 3), dtype=np.float32)
    frozen.flags.writeable = False
    w.grad = mt.from_numpy(frozen)
    with pytest.raises(ValueError, match="read-only"):
        mt.nn.functional.linear(mt.tensor(np.ones((4, 3), dtype=np.float32)), w).sum().backward()
    np.testing.assert_array_equal(frozen, 0.0)


class _Shared(Function):
    """The sum of its inputs; backward hands one array to all of them, as add_layer_norm's does."""

    @staticmethod
    def forward(ctx, *xs):
        return sum(xs[1:], xs[0].copy())

    @staticmethod
    def backward(ctx, g):
        g = g.copy()
        return (g,) * len(ctx.parents)


class _TimesThree(Function):
    """3 x, adding its gradient into the engine's running sum when offered one (as linear does); records the offers."""

    sums_into = True
    offers: list = []

    @staticmethod
    def forward(ctx, x):
        return 3 * x

    @staticmethod
    def backward(ctx, g):
        into = ctx.grad_into[0]
        _TimesThree.offers.append(into is not None)
        if into is None:
            return 3 * g
        into += 3 * g
        return into


@pytest.mark.parametrize("order", ["scaled first", "scaled last"])
def test_a_gradient_given_to_several_inputs_is_summed_into_once_the_others_used_it(order) -> None:
    """x + f(x) through one op whose backward returns one array for both inputs (a residual add fused into a
    LayerNorm): a sums_into op under f adds into that array once no pending node holds it, and not before. A third
    input, 5 x, holds it until its node runs: whichever node runs first, d/dx of sum(x + 6 x + 5 x) is 12."""
    x = mt.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    h = x * 1.0
    scaled, five = _TimesThree.apply(h) * 2.0, h * 5.0
    _TimesThree.offers = []
    (_Shared.apply(scaled, h, five) if order == "scaled first" else _Shared.apply(five, h, scaled)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 12.0))
    x.grad, h = None, x * 1.0
    _TimesThree.offers = []
    _Shared.apply(_TimesThree.apply(h) * 2.0, h).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 7.0))
    assert _TimesThree.offers == [True]  # h's gradient, held only by the engine once x * 2's node has run


def test_an_intermediate_no_op_saved_is_freed_when_dropped() -> None:
    """Nodes keep their parents' nodes, not their output tensors: as in PyTorch, `(x @ x) * 2` does not keep
    the product alive (a per-head attention step would otherwise hold every score array until backward)."""
    import weakref

    x = mt.tensor(np.arange(9, dtype=np.float32).reshape(3, 3) / 9, requires_grad=True)
    y = x @ x
    product = weakref.ref(y.data)
    z = (y * 2.0).sum()
    del y
    assert product() is None
    z.backward()
    ones = np.ones((3, 3), dtype=np.float32)
    np.testing.assert_allclose(x.grad.data, 2 * (ones @ x.data.T + x.data.T @ ones), rtol=1e-6)


class _OwnedProbe(Function):
    """Identity that records whether the engine let its backward write into the gradient it got."""

    seen: list = []

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        _OwnedProbe.seen.append(ctx.grad_owned)
        return g


def test_backward_writes_into_a_gradient_only_when_nothing_else_holds_it() -> None:
    """x * scale and masked_fill reuse their output gradient in place only when no other node, retained
    gradient or view shares it: one gradient handed to two consumers (a + b) reaches both intact."""
    rng = np.random.default_rng(0)
    w = mt.tensor(rng.standard_normal((3, 4)).astype(np.float32))
    m1, m2 = rng.random((3, 4)) < 0.5, rng.random((3, 4)) < 0.5
    x, x2 = (mt.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True) for _ in range(2))
    s = x * 2.0 + x * 3.0
    s.retain_grad()
    t = s.masked_fill(mt.tensor(m1), 0.0) + x2.masked_fill(mt.tensor(m2), 0.0)
    (t * w).sum().backward()
    np.testing.assert_allclose(s.grad.numpy(), np.where(m1, 0, w.numpy()), rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), 5 * np.where(m1, 0, w.numpy()), rtol=1e-6)
    np.testing.assert_allclose(x2.grad.numpy(), np.where(m2, 0, w.numpy()), rtol=1e-6)
    _OwnedProbe.seen.clear()
    a = _OwnedProbe.apply(x)
    (_OwnedProbe.apply(a * 2.0) * w).sum().backward()  # w * g: a fresh array, then x * 2.0's output gradient
    b = _OwnedProbe.apply(x)
    (b + b.reshape(4, 3).reshape(3, 4)).sum().backward()  # the engine's own sum of two gradients
    assert _OwnedProbe.seen == [True, True, True]
    np.testing.assert_allclose(x.grad.numpy(), 5 * np.where(m1, 0, w.numpy()) + 2 * w.numpy() + 2, rtol=1e-6)


class _Gives(Function):
    """Identity whose backward returns factor * g as a new array, a reshaped view of one, or one it also keeps."""

    kept: list = []

    @staticmethod
    def forward(ctx, x, factor, how):
        ctx.factor, ctx.how = factor, how
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        d = g * ctx.factor
        if ctx.how == "view":
            d = d.reshape(-1).reshape(g.shape)
        elif ctx.how == "kept":
            _Gives.kept.append(d)
        return d, None, None


@pytest.mark.parametrize("order", [("new", "view", "kept"), ("kept", "new", "view"), ("view", "kept", "new")])
def test_fresh_gradients_take_later_sums_and_held_ones_stay_intact(order) -> None:
    """The engine sums a node's gradients into an array a backward made and nobody else holds (a new array, or a
    reshape of one; a leaf's first gradient is kept without a copy), never into one a backward also kept."""
    _Gives.kept.clear()
    x = mt.tensor(np.arange(6.0, dtype=np.float32).reshape(2, 3), requires_grad=True)
    h = x * 1.0
    factors = {"new": 2.0, "view": 3.0, "kept": 5.0}
    (sum(_Gives.apply(h, factors[how], how) for how in order) * 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 10.0))
    np.testing.assert_array_equal(_Gives.kept[0], np.full((2, 3), 5.0))
    y = _Gives.apply(x, 1.0, "kept")
    x.grad = None
    y.sum().backward()
    assert x.grad.data is not _Gives.kept[1]
    x.grad.data += 1.0
    np.testing.assert_array_equal(_Gives.kept[1], np.ones((2, 3)))
