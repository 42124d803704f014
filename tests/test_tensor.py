"""Tensor creation, dtypes and the small Tensor API (shape, item, detach, repr, ...)."""

from __future__ import annotations

import numpy as np
import pytest

import microtensor as mt


def test_python_data_defaults_to_float32_and_int64_and_bool() -> None:
    assert mt.tensor([1.0, 2.0]).dtype == np.float32
    assert mt.tensor(1.5).dtype == np.float32
    assert mt.tensor([1, 2]).dtype == np.int64
    assert mt.tensor([True, False]).dtype == np.bool_
    assert mt.tensor([1, 2], dtype=np.float64).dtype == np.float64


def test_numpy_arrays_keep_their_dtype() -> None:
    for dtype in (np.float64, np.float32, np.int32, np.int64, np.bool_):
        assert mt.tensor(np.zeros(3, dtype=dtype)).dtype == dtype
    assert mt.tensor(np.float64(2.0)).dtype == np.float64


def test_filled_and_random_creation() -> None:
    assert mt.zeros(2, 3).shape == (2, 3) and mt.zeros(2, 3).dtype == np.float32
    assert mt.ones((4,)).data.sum() == 4
    assert mt.full((2, 2), 7.0).data.tolist() == [[7.0, 7.0], [7.0, 7.0]]
    assert mt.zeros(2, dtype=np.float64).dtype == np.float64
    a = mt.randn(3, 4, generator=np.random.default_rng(5))
    b = mt.randn(3, 4, generator=np.random.default_rng(5))
    np.testing.assert_array_equal(a.data, b.data)
    assert a.dtype == np.float32
    u = mt.rand(1000, generator=np.random.default_rng(1))
    assert 0.0 <= u.data.min() and u.data.max() < 1.0
    mt.manual_seed(3)
    c = mt.randn(5)
    mt.manual_seed(3)
    np.testing.assert_array_equal(c.data, mt.randn(5).data)


def test_like_constructors_follow_the_input() -> None:
    t = mt.tensor(np.ones((2, 3), dtype=np.float64))
    assert mt.zeros_like(t).shape == (2, 3) and mt.zeros_like(t).dtype == np.float64
    assert mt.ones_like(t).data.sum() == 6
    assert mt.randn_like(t, generator=np.random.default_rng(0)).dtype == np.float64
    assert mt.rand_like(t).shape == (2, 3)
    assert mt.zeros_like(t, requires_grad=True).requires_grad


def test_arange_dtypes_follow_pytorch() -> None:
    assert mt.arange(5).dtype == np.int64 and mt.arange(5).tolist() == [0, 1, 2, 3, 4]
    assert mt.arange(0.0, 1.0, 0.25).dtype == np.float32
    assert mt.arange(2, 8, 3).tolist() == [2, 5]


def test_bad_shape_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        mt.zeros(2, -1)


def test_small_api() -> None:
    t = mt.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.numel() == 6 and len(t) == 2 and t.size(1) == 3
    assert t.numpy() is t.data
    assert t.sum().item() == 15.0 and isinstance(t.sum().item(), float)
    with pytest.raises(ValueError, match="one-element"):
        t.item()
    d = t.detach()
    assert d.data is t.data and not d.requires_grad
    assert t.is_leaf and not (t * 1).is_leaf
    with pytest.raises(TypeError, match="floating-point"):
        mt.tensor([1, 2]).requires_grad_()
    with pytest.raises(TypeError, match="floating-point"):
        mt.tensor([1, 2], requires_grad=True)
    assert mt.tensor([1.0]).requires_grad_().requires_grad


def test_repr_is_pytorch_like() -> None:
    assert repr(mt.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(mt.tensor([1.0], requires_grad=True)) == "tensor([1.], requires_grad=True)"
    assert repr(mt.tensor(np.array([1.0]))) == "tensor([1.], dtype=float64)"
    y = mt.tensor([1.0], requires_grad=True) * 2
    assert repr(y) == "tensor([2.], grad_fn=<Mul>)"


def test_dtype_conversion() -> None:
    t = mt.tensor([1.5, 2.5])
    assert t.double().dtype == np.float64 and t.long().dtype == np.int64 and t.long().tolist() == [1, 2]
    assert t.to("float64").float().dtype == np.float32
