"""The Tensor as a PyTorch user reaches for it: devices, dtype names, the Python protocol, formatting,
PyTorch-named methods and autograd switches, checked against PyTorch where numbers are involved."""

from __future__ import annotations

import numpy as np
import pytest

import microtensor as mt
from microtensor import AutogradError
from microtensor.device import _check_device

A = np.array([[1.5, -2.25, 0.0], [3.0, 0.5, -1.75]])


# ---- devices ----------------------------------------------------------------------------
def test_device_objects_print_and_compare_like_torch(torch) -> None:
    for spec in ("cpu", "cpu:0"):
        assert repr(mt.device(spec)) == repr(torch.device(spec))
        assert str(mt.device(spec)) == str(torch.device(spec))
        assert mt.device(spec).type == "cpu" and mt.device(spec).index == torch.device(spec).index
    assert mt.device("cpu", 0) == mt.device("cpu:0") != mt.device("cpu")
    assert mt.device(mt.device("cpu")) == mt.device("cpu")
    assert str(mt.tensor(A).device) == str(torch.tensor(A).device) == "cpu"


@pytest.mark.parametrize("bad", ["cuda", "cuda:0", "mps", "cpu:1", "gpu", 0])
def test_other_devices_are_a_clear_error(bad) -> None:
    with pytest.raises(ValueError, match=r"zeros: device .* is not available; microtensor runs on the CPU only"):
        _check_device(bad, "zeros")
    with pytest.raises(ValueError, match="to: device .* microtensor runs on the CPU only"):
        mt.tensor(A).to(bad)
    with pytest.raises(ValueError, match="runs on the CPU only"):
        mt.device(bad)


def test_check_device_accepts_the_cpu_spellings() -> None:
    assert _check_device(None, "op") is None
    assert _check_device("cpu", "op") == mt.device("cpu")
    assert _check_device("cpu:0", "op") == mt.device("cpu:0")
    assert _check_device(mt.device("cpu"), "op") == mt.device("cpu")


def test_cuda_idiom_picks_the_cpu() -> None:
    assert mt.cuda.is_available() is False and mt.cuda.device_count() == 0
    device = "cuda" if mt.cuda.is_available() else "cpu"
    t = mt.tensor(A)
    assert t.to(device) is t and t.cpu() is t
    assert t.to(mt.device(device)) is t and t.to(device=device) is t
    with pytest.raises(ValueError, match="cuda: device 'cuda' is not available"):
        t.cuda()


# ---- dtypes -------------------------------------------------------------------------------
DTYPE_NAMES = ["float32", "float", "float64", "double", "float16", "half", "int64", "long", "int32", "int",
               "int16", "short", "int8", "uint8", "bool"]


@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_dtype_names_mean_what_they_mean_in_torch(torch, name) -> None:
    ours, theirs = getattr(mt, name), getattr(torch, name)
    assert isinstance(ours, np.dtype)
    assert ours.itemsize == theirs.itemsize and ours.kind == _kind(theirs)
    assert mt.zeros(2, dtype=ours).dtype == ours
    assert mt.tensor([1, 0], dtype=ours).dtype == ours


def _kind(dtype) -> str:
    """numpy's kind letter for a torch dtype."""
    if dtype.is_floating_point:
        return "f"
    return "b" if dtype == __import__("torch").bool else ("u" if dtype == __import__("torch").uint8 else "i")


@pytest.mark.parametrize("method", ["float", "double", "long", "int", "bool"])
def test_conversion_methods_match_torch(torch, method) -> None:
    values = np.array([1.7, -1.7, 0.0, 2.5], dtype=np.float32)
    ours, theirs = getattr(mt.tensor(values), method)(), getattr(torch.tensor(values), method)()
    assert ours.dtype.itemsize == theirs.element_size() == ours.element_size()
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_to_with_dtypes_tensors_and_both() -> None:
    t = mt.tensor(A.astype(np.float32), requires_grad=True)
    assert t.to(mt.float32) is t and t.to("cpu", mt.float32) is t and t.type_as(t) is t
    assert t.to(mt.float32, copy=True) is not t
    for converted in (t.to(mt.float64), t.to("cpu", mt.double), t.to(dtype=mt.float64, device="cpu",
                                                                         non_blocking=True),
                      t.to(mt.zeros(1, dtype=mt.float64)), t.type_as(mt.zeros(1, dtype=mt.float64))):
        assert converted.dtype == np.float64
        np.testing.assert_array_equal(converted.numpy(), A.astype(np.float32))
    (t.to(mt.float64) * 2).sum().backward()  # the cast stays in the graph
    np.testing.assert_array_equal(t.grad.numpy(), np.full(A.shape, 2.0, np.float32))
    assert t.is_floating_point() and not t.long().is_floating_point()


# ---- the Python protocol --------------------------------------------------------------------
def test_iteration_and_unpacking_follow_the_first_axis(torch) -> None:
    t = mt.tensor(A)
    rows = list(t)
    assert len(rows) == len(t) == 2
    for row, theirs in zip(rows, torch.tensor(A)):
        np.testing.assert_array_equal(row.numpy(), theirs.numpy())
    first, second = t
    np.testing.assert_array_equal(second.numpy(), A[1])
    a, b, c = t[0]
    assert (a.item(), b.item(), c.item()) == (1.5, -2.25, 0.0)
    assert -2.25 in t and 7.0 not in t and (-2.25 in torch.tensor(A)) and (7.0 not in torch.tensor(A))
    values, indices = mt.stack([mt.tensor([1.0, 2.0]), mt.tensor([0.0, 1.0])])
    assert values.tolist() == [1.0, 2.0] and indices.tolist() == [0.0, 1.0]
    with pytest.raises(IndexError, match=r"getitem: index 2 is invalid for shape \(2, 3\)"):
        t[2]
    with pytest.raises(IndexError):
        torch.tensor(A)[2]
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(mt.tensor(3.0))
    with pytest.raises(TypeError, match="0-d tensor"):
        iter(mt.tensor(3.0))


def test_iteration_keeps_the_graph() -> None:
    x = mt.tensor(A, requires_grad=True)
    total = sum(row.sum() * (i + 1) for i, row in enumerate(x))
    total.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0] * 3, [2.0] * 3])


def test_format_and_bool(torch) -> None:
    loss = mt.tensor(1.234567)
    assert f"{loss:.4f}" == f"{torch.tensor(1.234567):.4f}" == "1.2346"
    assert f"{mt.tensor([2.5]):>6.2f}" == "  2.50"
    assert f"{mt.tensor(A)}" == str(mt.tensor(A))
    assert f"{mt.tensor(2.5)}" == f"{torch.tensor(2.5)}" == "2.5" and f"{mt.tensor([2.5])}" == "tensor([2.5])"
    with pytest.raises(TypeError, match=r"format: spec '.2f' needs a one-element tensor, got shape \(2, 3\)"):
        f"{mt.tensor(A):.2f}"
    assert bool(mt.tensor([1.0])) is bool(torch.tensor([1.0])) is True
    assert bool(mt.tensor(0.0)) is bool(torch.tensor(0.0)) is False
    with pytest.raises(ValueError, match=r"bool: the truth value of a tensor of shape \(2, 3\) is ambiguous"):
        bool(mt.tensor(A))
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(torch.tensor(A))


def test_indexing_with_tensors_matches_torch(torch) -> None:
    t, tt = mt.tensor(A), torch.tensor(A)
    for index, tindex in (
        (mt.tensor([1, 0, 1]), torch.tensor([1, 0, 1])),
        (mt.tensor([True, False]), torch.tensor([True, False])),
        (mt.tensor(1), torch.tensor(1)),
        ((slice(None), mt.tensor([2, 0])), (slice(None), torch.tensor([2, 0]))),
        (mt.tensor(A) > 0, torch.tensor(A) > 0),
    ):
        np.testing.assert_array_equal(t[index].numpy(), tt[tindex].numpy())
    assert [10, 20, 30][mt.tensor(2)] == 30 and range(5)[mt.tensor(4)] == 4
    with pytest.raises(TypeError, match="index: only one-element integer tensors"):
        [1, 2][mt.tensor(1.0)]


# ---- PyTorch-named methods ------------------------------------------------------------------
def test_shape_methods_match_torch(torch) -> None:
    t, tt = mt.tensor(A), torch.tensor(A)
    np.testing.assert_array_equal(t.t().numpy(), tt.t().numpy())
    np.testing.assert_array_equal(t[0].t().numpy(), tt[0].t().numpy())
    assert t.dim() == tt.dim() == 2 and t.numel() == tt.numel() == 6
    assert t.element_size() == tt.element_size() == 8
    assert t.tolist() == tt.tolist()
    for sizes in ((2, 1), (1, 3), (2, 2, 2), ((3, 1),)):
        np.testing.assert_array_equal(t.repeat(*sizes).numpy(), tt.repeat(*sizes).numpy())
    with pytest.raises(ValueError, match=r"repeat: 1 repeat counts for a tensor of shape \(2, 3\)"):
        t.repeat(2)
    with pytest.raises(ValueError, match="t: expects a tensor with at most 2 dimensions"):
        mt.zeros(2, 2, 2).t()


def test_view_shares_memory_and_refuses_to_copy(torch) -> None:
    t = mt.tensor(A.copy())
    v = t.view(3, 2)
    v[0, 0] = 42.0
    assert t[0, 0].item() == 42.0
    with pytest.raises(ValueError, match=r"view: a tensor of shape \(3, 2\) .* use .reshape\(...\) instead"):
        t.t().view(6)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        torch.tensor(A).t().view(6)
    np.testing.assert_array_equal(t.t().reshape(6).numpy(), torch.tensor(t.numpy()).t().reshape(6).numpy())


def test_clone_contiguous_and_repeat_are_differentiable() -> None:
    x = mt.tensor(A, requires_grad=True)
    c = x.clone()
    c.data[0, 0] = 99.0
    assert x.data[0, 0] == 1.5
    assert mt.gradcheck(lambda a: a.clone() * a, [x])
    assert mt.gradcheck(lambda a: a.t().contiguous() * 2, [x])
    assert mt.gradcheck(lambda a: a.repeat(2, 1, 2), [x])
    assert x.contiguous() is x and x.t().contiguous().data.flags.c_contiguous


# ---- autograd switches ------------------------------------------------------------------
def test_grad_is_a_tensor_that_numpy_reads() -> None:
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert isinstance(x.grad, mt.Tensor) and not x.grad.requires_grad
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    np.testing.assert_array_equal(np.asarray(x.grad, dtype=np.float64), [2.0, 4.0])
    assert x.grad.norm().item() == pytest.approx(np.sqrt(20.0))
    x.grad = np.zeros(2, np.float32)  # arrays are wrapped without a copy
    assert isinstance(x.grad, mt.Tensor)
    with pytest.raises(ValueError, match=r"grad: assigned a gradient of shape \(3,\) to a tensor of shape \(2,\)"):
        x.grad = mt.zeros(3)


def test_requires_grad_detach_and_retain_grad(torch) -> None:
    x = mt.tensor([1.0, -2.0]).requires_grad_()
    assert x.requires_grad and x.is_leaf
    y = x * x
    with pytest.raises(AutogradError, match="requires_grad_: only leaf tensors can stop requiring grad"):
        y.requires_grad_(False)
    d = y.detach()
    assert not d.requires_grad and d._version is y._version and np.shares_memory(d.data, y.data)
    y.retain_grad()
    z = (y * 3).sum()
    z.backward()
    ty = torch.tensor([1.0, -2.0], requires_grad=True) ** 2
    ty.retain_grad()
    (ty * 3).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), ty.grad.numpy())
    w = x * 2
    assert w.detach_() is w and w.is_leaf and not w.requires_grad
    with pytest.raises(AutogradError, match="retain_grad: the tensor does not require grad"):
        w.retain_grad()


def test_inference_mode_and_set_grad_enabled() -> None:
    x = mt.tensor([1.0], requires_grad=True)
    with mt.inference_mode():
        assert not (x * 2).requires_grad
    with mt.inference_mode(False):
        assert (x * 2).requires_grad

    @mt.inference_mode()
    def predict(t):
        return t * 2

    assert not predict(x).requires_grad and mt.is_grad_enabled()
    with mt.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert mt.is_grad_enabled()
    mt.set_grad_enabled(False)
    assert not mt.is_grad_enabled()
    mt.set_grad_enabled(True)

    @mt.no_grad
    def bare(t):
        return t * 2

    @mt.inference_mode
    def bare_inference(t):
        return t * 2

    assert not bare(x).requires_grad and not bare_inference(x).requires_grad and mt.is_grad_enabled()

    @mt.no_grad()
    def recurse(n):
        return recurse(n - 1) if n else mt.is_grad_enabled()

    assert recurse(3) is False and mt.is_grad_enabled()


@pytest.mark.parametrize("name,hint", [("compile", "eagerly"), ("amp", "float32"), ("backends", "CPU")])
def test_pytorch_only_names_say_what_to_use(name, hint) -> None:
    with pytest.raises(AttributeError, match=f"no attribute '{name}': .*{hint}"):
        getattr(mt, name)
