"""Acceptance 4: a user's mistake raises ValueError/TypeError naming the op and the shapes/dtypes at fault."""

from __future__ import annotations

import re

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn as nn
import microtensor.nn.functional as F
from microtensor import optim


def ones(*shape, dtype=np.float32):
    return mt.tensor(np.ones(shape, dtype=dtype))


A34 = ones(3, 4)

# (label, callable, exception type, regex that the message must match)
CASES = [
    # shape mismatches
    (
        "matmul_2d",
        lambda: ones(4, 3) @ ones(2, 2),
        ValueError,
        r"^matmul: shapes \(4, 3\) and \(2, 2\) are not aligned",
    ),
    ("matmul_1d", lambda: ones(3) @ ones(2), ValueError, r"matmul: shapes \(3,\) and \(2,\) are not aligned"),
    (
        "matmul_batch",
        lambda: ones(2, 3, 4) @ ones(3, 4, 2),
        ValueError,
        r"matmul: batch shapes of \(2, 3, 4\) and \(3, 4, 2\) cannot be broadcast",
    ),
    ("matmul_scalar", lambda: mt.tensor(1.0) @ A34, ValueError, r"matmul: scalars are not allowed"),
    (
        "add_broadcast",
        lambda: ones(2, 3) + ones(4),
        ValueError,
        r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast together",
    ),
    ("add_numpy_left", lambda: np.ones((2, 3)) + ones(4), ValueError, r"add: shapes \(2, 3\) and \(4,\)"),
    ("sub_broadcast", lambda: ones(2, 3) - ones(2), ValueError, r"sub: shapes \(2, 3\) and \(2,\)"),
    ("mul_broadcast", lambda: ones(5) * ones(4), ValueError, r"mul: shapes \(5,\) and \(4,\)"),
    (
        "div_broadcast",
        lambda: ones(5, 1, 2) / ones(3, 3),
        ValueError,
        r"div: shapes \(5, 1, 2\) and \(3, 3\)",
    ),
    ("pow_broadcast", lambda: ones(2) ** ones(3), ValueError, r"pow: shapes \(2,\) and \(3,\)"),
    (
        "where_broadcast",
        lambda: mt.where(np.ones(3, dtype=bool), A34, 0.0),
        ValueError,
        r"where: shapes \(3,\), \(3, 4\) and \(\) cannot be broadcast",
    ),
    ("expand", lambda: A34.expand(2, 3), ValueError, r"expand: cannot broadcast shape \(3, 4\) to \(2, 3\)"),
    (
        "reshape",
        lambda: A34.reshape(5, 2),
        ValueError,
        r"reshape: cannot reshape shape \(3, 4\) .* into \(5, 2\)",
    ),
    ("permute", lambda: A34.permute(0, 0), ValueError, r"permute: \(0, 0\) is not a permutation .* \(3, 4\)"),
    (
        "transpose",
        lambda: A34.transpose(0, 5),
        ValueError,
        r"transpose: axes \(0, 5\) out of range for shape",
    ),
    ("sum_axis", lambda: A34.sum(axis=2), ValueError, r"sum: axis 2 is out of range for a tensor with 2 dim"),
    ("max_axis", lambda: A34.max(dim=-3), ValueError, r"max: axis -3 is out of range"),
    ("var_dof", lambda: ones(1).var(), ValueError, r"var: 1 elements with correction=1 leave no degrees"),
    (
        "softmax_axis",
        lambda: A34.softmax(dim=2),
        ValueError,
        r"softmax: axis 2 is out of range for shape \(3, 4\)",
    ),
    (
        "cat_shapes",
        lambda: mt.cat([A34, ones(2, 3)]),
        ValueError,
        r"cat: shapes \[\(3, 4\), \(2, 3\)\] do not match outside axis 0",
    ),
    ("cat_axis", lambda: mt.cat([A34, A34], dim=2), ValueError, r"cat: axis 2 is out of range for shapes"),
    ("cat_empty", lambda: mt.cat([]), ValueError, r"cat: expected at least one tensor"),
    (
        "stack_shapes",
        lambda: mt.stack([A34, ones(4, 3)]),
        ValueError,
        r"stack: all shapes must be equal, got \[\(3, 4\), \(4, 3\)\]",
    ),
    ("stack_axis", lambda: mt.stack([A34, A34], axis=3), ValueError, r"stack: axis 3 is out of range"),
    (
        "split_sections",
        lambda: mt.split(A34, [1, 1]),
        ValueError,
        r"split: sections \[1, 1\] do not add up to 3 \(axis 0 of shape \(3, 4\)\)",
    ),
    ("split_size", lambda: A34.split(0), ValueError, r"split: chunk size must be positive"),
    ("getitem_range", lambda: A34[5], ValueError, r"getitem: index 5 is invalid for shape \(3, 4\)"),
    (
        "getitem_mask_shape",
        lambda: A34[np.array([True, False])],
        ValueError,
        r"getitem: .* for shape \(3, 4\)",
    ),
    (
        "masked_fill_shape",
        lambda: A34.masked_fill(np.ones(3, dtype=bool), 0.0),
        ValueError,
        r"masked_fill: mask of shape \(3,\) does not broadcast to \(3, 4\)",
    ),
    (
        "masked_fill_enlarge",
        lambda: ones(4).masked_fill(np.ones((2, 4), dtype=bool), 0.0),
        ValueError,
        r"masked_fill: mask of shape \(2, 4\) would enlarge input of shape \(4,\)",
    ),
    (
        "linear",
        lambda: F.linear(ones(2, 3), ones(4, 2)),
        ValueError,
        r"linear: input of shape \(2, 3\) does not match weight of shape \(4, 2\)",
    ),
    (
        "linear_bias",
        lambda: F.linear(ones(2, 3), ones(4, 3), ones(3)),
        ValueError,
        r"linear: bias of shape \(3,\), expected \(4,\)",
    ),
    (
        "layer_norm",
        lambda: F.layer_norm(ones(2, 3), 4),
        ValueError,
        r"layer_norm: input of shape \(2, 3\) does not end in normalized_shape \(4,\)",
    ),
    (
        "layer_norm_weight",
        lambda: F.layer_norm(ones(2, 3), 3, ones(4)),
        ValueError,
        r"layer_norm: weight of shape \(4,\), expected \(3,\)",
    ),
    (
        "sdpa_shapes",
        lambda: F.scaled_dot_product_attention(ones(2, 3, 4), ones(2, 3, 5), ones(2, 3, 4)),
        ValueError,
        r"scaled_dot_product_attention: q \(2, 3, 4\), k \(2, 3, 5\), v \(2, 3, 4\) do not agree",
    ),
    (
        "sdpa_mask_shape",
        lambda: F.scaled_dot_product_attention(A34, A34, A34, attn_mask=np.ones((2, 2), dtype=bool)),
        ValueError,
        r"scaled_dot_product_attention: mask of shape \(2, 2\) does not broadcast to \(3, 3\)",
    ),
    (
        "cross_entropy_shape",
        lambda: F.cross_entropy(ones(2, 3), np.array([0, 1, 2])),
        ValueError,
        r"cross_entropy: target of shape \(3,\) for input \(2, 3\), expected \(2,\)",
    ),
    (
        "cross_entropy_range",
        lambda: F.cross_entropy(ones(2, 3), np.array([0, 3])),
        ValueError,
        r"cross_entropy: target 3 is out of range for 3 classes",
    ),
    (
        "cross_entropy_reduction",
        lambda: F.cross_entropy(ones(2, 3), np.array([0, 1]), reduction="avg"),
        ValueError,
        r"cross_entropy: reduction must be 'mean', 'sum' or 'none', got 'avg'",
    ),
    (
        "embedding_range",
        lambda: F.embedding(np.array([3]), ones(3, 2)),
        ValueError,
        r"embedding: id 3 is out of range for 3 embeddings",
    ),
    (
        "embedding_weight",
        lambda: F.embedding(np.array([0]), ones(3)),
        ValueError,
        r"embedding: weight must be 2-D .* got shape \(3,\)",
    ),
    ("dropout_p", lambda: F.dropout(A34, 1.0), ValueError, r"dropout: p must be in \[0, 1\), got 1.0"),
    ("clip_no_bounds", lambda: A34.clip(), ValueError, r"clamp: at least one of min and max"),
    ("item", lambda: A34.item(), ValueError, r"item: only one-element tensors .* got shape \(3, 4\)"),
    (
        "zeros_shape",
        lambda: mt.zeros(2, -1),
        ValueError,
        r"zeros: sizes must be non-negative integers, got \(2, -1\)",
    ),
    # wrong dtypes
    (
        "cross_entropy_float_targets",
        lambda: F.cross_entropy(ones(2, 3), np.array([0.0, 1.0])),
        TypeError,
        r"cross_entropy: target must hold integer class indices .*got dtype float64",
    ),
    (
        "cross_entropy_float_tensor_targets",
        lambda: F.cross_entropy(ones(2, 3), mt.tensor([0.0, 1.0])),
        TypeError,
        r"cross_entropy: target must hold integer class indices .*got dtype float32",
    ),
    (
        "embedding_float_ids",
        lambda: F.embedding(np.array([0.5]), ones(3, 2)),
        TypeError,
        r"embedding: ids must be integers, got dtype float64",
    ),
    (
        "getitem_float_index",
        lambda: A34[np.array([0.0, 1.0])],
        TypeError,
        r"getitem: index arrays must be integers or bools, got dtype float64",
    ),
    ("getitem_float_tensor_index", lambda: A34[mt.tensor([1.0])], TypeError, r"getitem: .* dtype float32"),
    (
        "where_cond",
        lambda: mt.where(np.ones(3), ones(3), ones(3)),
        TypeError,
        r"where: condition must be a bool array, got dtype float64",
    ),
    (
        "masked_fill_mask",
        lambda: A34.masked_fill(np.ones(4), 0.0),
        TypeError,
        r"masked_fill: mask must be a bool array, got dtype float64",
    ),
    (
        "sdpa_mask_dtype",
        lambda: F.scaled_dot_product_attention(A34, A34, A34, attn_mask=np.ones((3, 3), dtype=np.int64)),
        TypeError,
        r"scaled_dot_product_attention: mask must be bool .* got dtype int64",
    ),
    (
        "requires_grad_int",
        lambda: mt.tensor([1, 2], requires_grad=True),
        TypeError,
        r"only floating-point tensors can require grad, got dtype int64",
    ),
    (
        "requires_grad_int_method",
        lambda: mt.tensor([1, 2]).requires_grad_(),
        TypeError,
        r"requires_grad_: .* int64",
    ),
    ("tensor_from_str", lambda: mt.tensor("abc"), TypeError, r"tensor: cannot make a tensor from str"),
    ("invert_float", lambda: ~A34, TypeError, r"~: expected a bool tensor, got dtype float32"),
    (
        "gradcheck_float32",
        lambda: mt.gradcheck(lambda t: t, [mt.tensor([1.0], requires_grad=True)]),
        TypeError,
        r"gradcheck: input 0 has dtype float32",
    ),
    ("axis_and_dim", lambda: A34.sum(axis=0, dim=1), TypeError, r"sum: pass either axis or dim, not both"),
    # optimizers and modules
    ("optim_empty", lambda: optim.Adam([]), ValueError, r"Adam: got an empty parameter list"),
    (
        "optim_not_tensor",
        lambda: optim.SGD([np.ones(2)]),
        TypeError,
        r"SGD: parameters must be Tensors, got ndarray",
    ),
    ("optim_lr", lambda: optim.SGD([ones(1)], lr=-1.0), ValueError, r"SGD: lr must be >= 0, got -1.0"),
    (
        "optim_betas",
        lambda: optim.AdamW([ones(1)], betas=(0.9, 1.0)),
        ValueError,
        r"AdamW: beta2 must be in \[0, 1\), got 1.0",
    ),
    (
        "optim_nesterov",
        lambda: optim.SGD([ones(1)], lr=0.1, nesterov=True),
        ValueError,
        r"SGD: nesterov needs momentum > 0",
    ),
    (
        "clip_grad_norm",
        lambda: optim.clip_grad_norm_([ones(1)], 0.0),
        ValueError,
        r"clip_grad_norm_: max_norm must be > 0",
    ),
    ("dropout_module", lambda: nn.Dropout(-0.1), ValueError, r"Dropout: p must be in \[0, 1\)"),
    ("backend_name", lambda: mt.backend.use("cuda"), ValueError, r"backend: unknown backend 'cuda'"),
]


@pytest.mark.parametrize("label", [c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(label: str) -> None:
    _, fn, exc, pattern = next(c for c in CASES if c[0] == label)
    with pytest.raises(exc) as info:
        fn()
    assert re.search(pattern, str(info.value)), f"message {str(info.value)!r} does not match {pattern!r}"


def test_error_keeps_the_graph_usable() -> None:
    """A failed op raises before recording anything, so earlier work still backpropagates."""
    a = mt.tensor(np.ones((2, 3)), requires_grad=True)
    b = a * 2.0
    with pytest.raises(ValueError):
        b @ mt.tensor(np.ones((2, 2)))
    b.sum().backward()
    np.testing.assert_array_equal(a.grad, np.full((2, 3), 2.0))


def test_backward_twice_without_retain_graph() -> None:
    a = mt.tensor(np.ones(3), requires_grad=True)
    loss = (a * a).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        loss.backward()


def test_backward_on_a_non_scalar() -> None:
    a = mt.tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(ValueError, match=r"backward: the output has shape \(2, 2\); pass a gradient"):
        (a * 3.0).backward()


def test_load_state_dict_mismatches() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"Linear got missing keys \['bias'\] and unexpected keys \[\]"):
        model.load_state_dict({"weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"missing keys \[\] and unexpected keys \['scale'\]"):
        model.load_state_dict({**model.state_dict(), "scale": np.ones(1)})
    with pytest.raises(ValueError, match=r"weight has shape \(3, 2\) in the state but \(2, 3\) in the model"):
        model.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.zeros(2)})
