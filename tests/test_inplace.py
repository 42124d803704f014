"""In-place ops with PyTorch's rules: recorded on non-leaves, refused on leaves that require grad, and
version counters (shared by views) that make backward raise, naming the op, when a saved tensor changed."""

from __future__ import annotations

import re

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn.functional as F
from microtensor import AutogradError

X = np.array([[1.5, -2.0, 0.5], [3.0, 0.25, -1.0]])
W = np.array([[0.5, 1.0, -1.5], [2.0, -0.5, 1.0]])

# (name, microtensor in-place, PyTorch in-place) on tensors that do not require grad
NO_GRAD_CASES = [
    ("iadd", lambda t, o: t.__iadd__(o), lambda t, o: t.__iadd__(o)),
    ("isub", lambda t, o: t.__isub__(o), lambda t, o: t.__isub__(o)),
    ("imul", lambda t, o: t.__imul__(o), lambda t, o: t.__imul__(o)),
    ("itruediv", lambda t, o: t.__itruediv__(o), lambda t, o: t.__itruediv__(o)),
    ("add_alpha", lambda t, o: t.add_(o, alpha=2.0), lambda t, o: t.add_(o, alpha=2.0)),
    ("sub_alpha", lambda t, o: t.sub_(o, alpha=0.5), lambda t, o: t.sub_(o, alpha=0.5)),
    ("mul_scalar", lambda t, o: t.mul_(3.0), lambda t, o: t.mul_(3.0)),
    ("div_row", lambda t, o: t.div_(o[0]), lambda t, o: t.div_(o[0])),
    ("zero_", lambda t, o: t.zero_(), lambda t, o: t.zero_()),
    ("fill_", lambda t, o: t.fill_(7.0), lambda t, o: t.fill_(7.0)),
    ("copy_row", lambda t, o: t.copy_(o[1]), lambda t, o: t.copy_(o[1])),
    ("masked_fill_", lambda t, o: t.masked_fill_(o > 0, -4.0), lambda t, o: t.masked_fill_(o > 0, -4.0)),
    ("clamp_", lambda t, o: t.clamp_(-1.0, 1.0), lambda t, o: t.clamp_(-1.0, 1.0)),
    ("clamp_min", lambda t, o: t.clamp_(min=0.0), lambda t, o: t.clamp_(min=0.0)),
    ("setitem_slice", lambda t, o: t.__setitem__((slice(None), 1), o[:, 2]),
     lambda t, o: t.__setitem__((slice(None), 1), o[:, 2])),
    ("setitem_mask", lambda t, o: t.__setitem__(o < 0, 9.0), lambda t, o: t.__setitem__(o < 0, 9.0)),
]


@pytest.mark.parametrize("name,mine,theirs", NO_GRAD_CASES, ids=[c[0] for c in NO_GRAD_CASES])
def test_inplace_without_grad_matches_torch_and_bumps_version(torch, name, mine, theirs) -> None:
    t, o = mt.tensor(X.copy()), mt.tensor(W)
    alias = t.view(6)  # a view sees the change and shares the counter
    result = mine(t, o)
    expected = torch.tensor(X.copy())
    theirs(expected, torch.tensor(W))
    assert result is t or result is None
    np.testing.assert_allclose(t.numpy(), expected.numpy(), rtol=1e-12)
    np.testing.assert_allclose(alias.numpy(), expected.numpy().reshape(6), rtol=1e-12)
    assert t._version.value == 1 and alias._version is t._version


def test_tensor_copies_its_data_so_inplace_ops_leave_the_array_alone(torch) -> None:
    array = np.zeros(3)
    for make in (mt.tensor, torch.tensor):
        t = make(array)
        t += 1
    np.testing.assert_array_equal(array, np.zeros(3))
    shared = mt.from_numpy(array)  # from_numpy shares, as PyTorch's
    shared += 1
    np.testing.assert_array_equal(array, np.ones(3))


def test_inplace_dtype_rules() -> None:
    ints = mt.tensor([1, 2, 3])
    ints += 2
    np.testing.assert_array_equal(ints.numpy(), [3, 4, 5])
    with pytest.raises(TypeError, match=r"\+=: cannot write the result into a tensor of shape \(3,\) and dtype int64"):
        ints += 0.5
    ints.copy_(mt.tensor([1.9, -1.9, 0.2]))  # copy_ casts like PyTorch (truncation)
    np.testing.assert_array_equal(ints.numpy(), [1, -1, 0])
    with pytest.raises(ValueError, match=r"add_: cannot write .* shape \(3,\)"):
        mt.tensor([1.0, 2.0, 3.0]).add_(mt.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="masked_fill_: mask must be a bool tensor"):
        mt.tensor([1.0, 2.0]).masked_fill_(mt.tensor([1, 0]), 0.0)


LEAF_OPS = [
    ("+=", lambda t: t.__iadd__(1.0)),
    ("-=", lambda t: t.__isub__(1.0)),
    ("*=", lambda t: t.__imul__(2.0)),
    ("/=", lambda t: t.__itruediv__(2.0)),
    ("add_", lambda t: t.add_(1.0)),
    ("sub_", lambda t: t.sub_(1.0)),
    ("mul_", lambda t: t.mul_(2.0)),
    ("div_", lambda t: t.div_(2.0)),
    ("zero_", lambda t: t.zero_()),
    ("fill_", lambda t: t.fill_(3.0)),
    ("copy_", lambda t: t.copy_(mt.ones(3))),
    ("masked_fill_", lambda t: t.masked_fill_(mt.tensor([True, False, True]), 0.0)),
    ("clamp_", lambda t: t.clamp_(0.0, 1.0)),
    ("__setitem__", lambda t: t.__setitem__(0, 5.0)),
]


@pytest.mark.parametrize("op,fn", LEAF_OPS, ids=[f"{i}-{c[0]}" for i, c in enumerate(LEAF_OPS)])
def test_inplace_on_leaf_that_requires_grad_raises_except_under_no_grad(torch, op, fn) -> None:
    leaf = mt.tensor([0.5, -1.0, 2.0], requires_grad=True)
    with pytest.raises(AutogradError, match=re.escape(op) + ": a leaf Variable that requires grad is being used"):
        fn(leaf)
    assert leaf._version.value == 0 and np.array_equal(leaf.numpy(), [0.5, -1.0, 2.0])
    theirs = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        theirs.add_(1.0)
    with mt.no_grad():
        fn(leaf)
    with torch.no_grad():
        expected = fn(_TorchLike(torch, theirs))
    np.testing.assert_allclose(leaf.numpy(), expected.detach().numpy())
    assert leaf._version.value == 1 and leaf.requires_grad and leaf.is_leaf


class _TorchLike:
    """Lets the microtensor lambdas of LEAF_OPS run on a torch tensor (mt.ones, bool masks)."""

    def __init__(self, torch, t) -> None:
        self.torch, self.t = torch, t

    def __getattr__(self, name):
        method = getattr(self.t, name)

        def call(*args, **kwargs):
            args = [self.torch.tensor(a.numpy()) if isinstance(a, mt.Tensor) else a for a in args]
            method(*args, **kwargs)
            return self.t

        return call


def _recorded_chain(lib, x, w, mask):
    """A chain of in-place ops on non-leaf tensors; the same code runs on microtensor and PyTorch."""
    y = x * 2.0
    y += w
    y *= x
    y -= 0.5
    y /= w * w + 1.0
    y.clamp_(-1.5, 2.5)
    y.masked_fill_(mask, 0.25)
    y[0, 1] = w[1, 2] * 3.0
    y[:, 0] = x[:, 2]
    z = lib.zeros_like(x)
    z.copy_(y.exp())  # a tensor without grad becomes a non-leaf by an in-place op
    z.add_(w, alpha=-2.0)
    z.mul_(x)
    z.sub_(y, alpha=0.5)
    z.div_(2.0)
    return (z * z).sum()


def test_recorded_inplace_gradients_match_torch(torch, backend) -> None:
    mask = X > 1.0
    x, w = mt.tensor(X, requires_grad=True), mt.tensor(W, requires_grad=True)
    loss = _recorded_chain(mt, x, w, mt.tensor(mask))
    loss.backward()
    tx, tw = torch.tensor(X, requires_grad=True), torch.tensor(W, requires_grad=True)
    tloss = _recorded_chain(torch, tx, tw, torch.tensor(mask))
    tloss.backward()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_recorded_inplace_gradients_match_finite_differences() -> None:
    mask = mt.tensor(X > 1.0)
    assert mt.gradcheck(
        lambda x, w: _recorded_chain(mt, x, w, mask),
        [mt.tensor(X, requires_grad=True), mt.tensor(W, requires_grad=True)],
    )


def test_inplace_after_saving_raises_naming_the_op(torch) -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()  # exp saves its output
    y += 1  # recorded, but exp's saved output changed
    with pytest.raises(AutogradError, match=r"backward of Exp: a tensor it saved was modified in place \(version 1"):
        y.sum().backward()
    ty = torch.tensor([1.0, 2.0], requires_grad=True).exp()
    ty += 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ty.sum().backward()


def _linear(x, w):
    return F.linear(x, w)


def _layer_norm(x, w):
    return F.layer_norm(x, (3,), w[0], w[1])


def _sdpa(x, w):
    return F.scaled_dot_product_attention(x.reshape(1, 2, 3), w.reshape(1, 2, 3), w.reshape(1, 2, 3))


@pytest.mark.parametrize("fn,op", [(_linear, "Linear"), (_layer_norm, "LayerNorm"),
                                   (_sdpa, "ScaledDotProductAttention")])
def test_inplace_on_input_saved_as_reshaped_view_raises(backend, fn, op) -> None:
    """linear/layer_norm/sdpa save reshaped views of their inputs: a change must still be caught."""
    x, w = mt.tensor(X), mt.tensor(W, requires_grad=True)
    out = fn(x, w)
    x += 10  # w's gradient depends on x: PyTorch raises, it must not silently be wrong
    with pytest.raises(AutogradError, match=rf"backward of {op}: a tensor it saved was modified in place"):
        out.sum().backward()
    assert w.grad is None


def test_linear_gradient_after_unrelated_inplace_is_right(torch, backend) -> None:
    """The issue's case: w.grad of F.linear(x, w) is 4, not 44, whatever is done to other tensors."""
    x, w = mt.ones(1, 2), mt.ones(1, 2, requires_grad=True)
    other = mt.ones(1, 2)
    out = F.linear(x, w)
    other += 10
    (out * 2).sum().backward()
    tw = torch.ones(1, 2, requires_grad=True)
    (torch.nn.functional.linear(torch.ones(1, 2), tw) * 2).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), tw.grad.numpy())


def test_change_through_a_view_or_to_its_base_raises(torch) -> None:
    w = mt.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    x = mt.tensor([0.5, 1.0, 1.5, 2.0])
    y = x * w  # saves x
    view = x[1:3]
    assert view._version is x._version
    view += 1
    with pytest.raises(AutogradError, match="backward of Mul: a tensor it saved was modified in place"):
        y.sum().backward()
    base = mt.tensor([[0.5, 1.0], [1.5, 2.0]])
    y = base.reshape(4).t() * w  # saves the view
    base[0, 0] = 7.0
    with pytest.raises(AutogradError, match="backward of Mul"):
        y.sum().backward()
    tw, tx = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True), torch.tensor([0.5, 1.0, 1.5, 2.0])
    ty = tx * tw
    tx[1:3] += 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ty.sum().backward()


@pytest.mark.parametrize("make_view", [
    lambda t: t.reshape(2, 2), lambda t: t.view(4), lambda t: t.permute(0), lambda t: t[1:],
    lambda t: t.expand(2, 4), lambda t: t.detach(), lambda t: t.unsqueeze(0), lambda t: t.squeeze(),
    lambda t: t.flatten(), lambda t: t.t(), lambda t: t.transpose(0, -1)[None],
])
def test_views_share_the_version_counter(make_view) -> None:
    base = mt.tensor([1.0, 2.0, 3.0, 4.0])
    view = make_view(base)
    assert view._version is base._version
    base.add_(1.0)
    assert view._version.value == 1
    copy = base[[0, 1]]  # advanced indexing copies: its own counter
    assert copy._version is not base._version


def test_disjoint_slices_of_one_buffer_are_not_confused(backend) -> None:
    """Parameters that are views of one flat buffer (the optimizer's) do not watch each other."""
    flat = np.arange(8, dtype=np.float64)
    w, b = mt.from_numpy(flat[:6].reshape(2, 3)).requires_grad_(), mt.from_numpy(flat[6:]).requires_grad_()
    x = mt.tensor(X)
    out = F.linear(x, w, b)  # saves x and w, not b
    with mt.no_grad():
        b += 1.0
    out.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), np.ones((2, 1)) * X.sum(axis=0))
    with mt.no_grad():
        w -= 1.0
    out = F.linear(x, w, b)
    with mt.no_grad():
        w -= 1.0  # an optimizer step between forward and backward
    with pytest.raises(AutogradError, match="backward of Linear"):
        out.sum().backward()


def test_inplace_on_view_inside_the_graph_is_refused() -> None:
    x = mt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    view = y[1:]
    with pytest.raises(AutogradError, match=r"\*=: in-place change of a view, or of a tensor that has views"):
        view *= 3
    with pytest.raises(AutogradError, match="add_: in-place change of a view"):
        y.add_(1.0)
    buffer = mt.zeros(3)
    row = buffer[:2]  # a view of a tensor outside the graph: writing a graph value through either is refused
    with pytest.raises(AutogradError, match="copy_: in-place change of a view"):
        row.copy_(x[:2] * 2)
    with pytest.raises(AutogradError, match="__setitem__: in-place change of a view"):
        buffer[0] = x[0]
    row += 1  # no gradient involved: allowed
    np.testing.assert_array_equal(buffer.numpy(), [1.0, 1.0, 0.0])
    detached = y.detach()
    detached += 1  # outside the graph: allowed, and seen by y (same memory, same counter)
    np.testing.assert_array_equal(y.numpy(), [3.0, 5.0, 7.0])
    assert y._version.value == 1


def test_setitem_with_tensor_values_records_both_paths(torch) -> None:
    a, v = mt.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True), mt.tensor([5.0, 6.0], requires_grad=True)
    b = a * 1.0
    b[mt.tensor([True, False, True, False])] = v * v
    (b * mt.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    ta, tv = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True), torch.tensor([5.0, 6.0], requires_grad=True)
    tb = ta * 1.0
    tb[torch.tensor([True, False, True, False])] = tv * tv
    (tb * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), ta.grad.numpy())
    np.testing.assert_array_equal(v.grad.numpy(), tv.grad.numpy())


def test_retain_grad_survives_inplace_rebase(torch) -> None:
    x = mt.tensor([1.0, -2.0], requires_grad=True)
    y = x * 3
    y.retain_grad()
    y += 1
    (y * y).sum().backward()
    tx = torch.tensor([1.0, -2.0], requires_grad=True)
    ty = tx * 3
    ty.retain_grad()
    ty += 1
    (ty * ty).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), ty.grad.numpy())
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())


def _micrograd_more_ops(lib):
    """micrograd's test_more_ops, whose `c += c + 1` lines change non-leaves in place."""
    a, b = lib.Tensor([-4.0]).double(), lib.Tensor([2.0]).double()
    a.requires_grad = True
    b.requires_grad = True
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    return g.data.item(), a.grad.item(), b.grad.item()


def test_micrograd_inplace_program_matches_torch(torch) -> None:
    np.testing.assert_allclose(_micrograd_more_ops(mt), _micrograd_more_ops(torch), rtol=1e-12)


def _consumed_then_changed(lib):
    """Ops that used a tensor before its in-place change keep its old value's node (PyTorch's rebase)."""
    x = lib.tensor([1.0, 2.0], requires_grad=True, dtype=lib.float64)
    y = x * 3
    alias = y
    z = y * 2  # uses y's old value
    y.mul_(x)
    y += z
    (alias + z + y * y).sum().backward()
    w = x * 3
    v = w * 2
    w.detach_()  # v keeps its path to x
    (v + w).sum().backward()
    return x.grad.numpy()


def test_consumers_before_an_inplace_change_keep_the_old_node(torch) -> None:
    np.testing.assert_allclose(_consumed_then_changed(mt), _consumed_then_changed(torch), rtol=1e-12)


def _scalar_over_changed_tensor(lib):
    """`d += 10.0 / d`: the division keeps 1/d, so changing d afterwards is allowed, as in PyTorch."""
    a = lib.tensor([2.0, -3.0], requires_grad=True, dtype=lib.float64)
    d = a * 1
    d += 10.0 / d
    (d * d).sum().backward()
    return a.grad.numpy()


def test_scalar_divided_by_a_tensor_changed_in_place_matches_torch(torch) -> None:
    np.testing.assert_allclose(_scalar_over_changed_tensor(mt), _scalar_over_changed_tensor(torch), rtol=1e-12)
