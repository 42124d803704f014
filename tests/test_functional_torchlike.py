"""F and nn with PyTorch's arguments and numbers: GELU, sdpa, cross-entropy, small losses and modules, nn.init.

Values and gradients are compared with PyTorch on both kernel backends; wrong
dtypes and values must raise errors that name the op.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn as nn
import microtensor.nn.functional as F
from microtensor.ops.gelu import _normal_cdf

TOL = {np.float32: 1e-5, np.float64: 1e-10}
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def close(ours, ref, tol: float, what: str = "") -> None:
    """|ours - ref| <= tol * max(|ref|, 1, max|ref|), elementwise (the parity suite's rule)."""
    ref = np.asarray(ref.detach().numpy() if hasattr(ref, "detach") else ref, dtype=np.float64)
    ours = np.asarray(ours.data if isinstance(ours, mt.Tensor) else ours, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    scale = max(1.0, float(np.nanmax(np.abs(ref)))) if ref.size and not np.isnan(ref).all() else 1.0
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * scale, err_msg=what)


def both(torch, arrays, ours_fn, torch_fn, tol, upstream_seed: int = 0) -> None:
    """Forward values and the gradient of every float input, ours against PyTorch's."""
    ours = [mt.tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    out, ref = ours_fn(*ours), torch_fn(*theirs)
    close(out, ref, tol, "forward")
    g = np.random.default_rng(upstream_seed).standard_normal(ref.shape).astype(arrays[0].dtype)
    out.backward(g)
    ref.backward(torch.as_tensor(g))
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        close(a.grad, b.grad, tol, f"gradient of input {i}")


# ---- GELU -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(torch, kernels, approximate, dtype) -> None:
    x = np.concatenate([np.linspace(-9, 6, 301), np.random.default_rng(0).standard_normal(50)]).astype(dtype)
    both(torch, [x], lambda a: F.gelu(a, approximate=approximate),
         lambda a: torch.nn.functional.gelu(a, approximate=approximate), TOL[dtype])
    close(nn.GELU(approximate)(mt.tensor(x)), torch.nn.GELU(approximate)(torch.tensor(x)), TOL[dtype])


def test_gelu_defaults_to_exact_and_rejects_other_forms(torch) -> None:
    x = np.linspace(-3, 3, 13)
    close(F.gelu(mt.tensor(x)), torch.nn.functional.gelu(torch.tensor(x)), 1e-12)
    assert repr(nn.GELU()) == "GELU(approximate='none')"
    with pytest.raises(ValueError, match="gelu: approximate must be 'none' or 'tanh', got 'fast'"):
        F.gelu(mt.tensor(x), approximate="fast")


def test_float32_normal_cdf_is_accurate_to_float32_rounding() -> None:
    x = np.linspace(-12, 8, 20001).astype(np.float32)
    exact = np.array([0.5 * math.erfc(-float(v) / math.sqrt(2)) for v in x])
    got = _normal_cdf(x)
    assert got.dtype == np.float32
    assert np.max(np.abs(got - exact)) < 5e-7  # a few float32 steps at 1
    assert np.max(np.abs(got / exact - 1)[exact > 1e-5]) < 3e-6


# ---- scaled_dot_product_attention -----------------------------------------------------------------------

BOOL_MASK = np.array([[True, True, False, False], [True, False, True, True], [False, True, True, True]])


def _qkv(dtype, lead=(2,), tq=3, tk=4, d=5):
    rng = np.random.default_rng(3)
    return [rng.standard_normal((*lead, t, d)).astype(dtype) for t in (tq, tk, tk)]


SDPA_CASES = {
    "plain": ({}, (2,)),
    "bool_mask": ({"attn_mask": BOOL_MASK}, (2,)),
    "bool_mask_broadcast_4d": ({"attn_mask": BOOL_MASK[None, None]}, (2, 3)),
    "float_mask": ({"attn_mask": np.random.default_rng(1).standard_normal((3, 4))}, (2,)),
    "float_mask_with_inf": ({"attn_mask": np.where(BOOL_MASK, 0.5, -np.inf)}, (2,)),
    "fully_masked_rows": ({"attn_mask": np.array([[False] * 4, [True] * 4, [False, True, False, False]])}, (2,)),
    "fully_masked_float_rows": ({"attn_mask": np.array([[-np.inf] * 4, [0.0] * 4, [0.0] * 4])}, (2,)),
    "is_causal": ({"is_causal": True}, (2, 2)),
    "scale_and_dropout_zero": ({"scale": 0.3, "dropout_p": 0.0}, (2,)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(SDPA_CASES))
def test_sdpa_matches_torch(torch, kernels, case, dtype) -> None:
    kwargs, lead = SDPA_CASES[case]
    mask = kwargs.get("attn_mask")
    if mask is not None and mask.dtype != bool:
        mask = mask.astype(dtype)
    theirs_kwargs = {**kwargs, **({} if mask is None else {"attn_mask": torch.as_tensor(mask)})}
    ours_kwargs = {**kwargs, **({} if mask is None else {"attn_mask": mask})}
    both(torch, _qkv(dtype, lead), lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **ours_kwargs),
         lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, **theirs_kwargs), TOL[dtype])


def test_sdpa_float_mask_gradient_matches_torch(torch, kernels) -> None:
    q, k, v = _qkv(np.float64)
    mask = np.random.default_rng(4).standard_normal((3, 4))
    both(torch, [q, k, v, mask], lambda *a: F.scaled_dot_product_attention(*a[:3], attn_mask=a[3]),
         lambda *a: torch.nn.functional.scaled_dot_product_attention(*a[:3], attn_mask=a[3]), 1e-10)


def test_sdpa_dropout_is_seeded_and_unbiased(kernels) -> None:
    q, k, v = (mt.tensor(a) for a in _qkv(np.float64, (4,), 8, 16, 8))
    mt.manual_seed(5)
    a = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    mt.manual_seed(5)
    b = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    np.testing.assert_array_equal(a.data, b.data)
    plain = F.scaled_dot_product_attention(q, k, v).data
    assert not np.allclose(a.data, plain)
    runs = [F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).data for _ in range(400)]
    np.testing.assert_allclose(np.mean(runs, axis=0), plain, atol=0.15)  # inverted dropout keeps the mean


def test_sdpa_errors_name_the_problem() -> None:
    q, k, v = (mt.tensor(a) for a in _qkv(np.float32))
    with pytest.raises(ValueError, match="attn_mask or is_causal=True, not both"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=BOOL_MASK, is_causal=True)
    with pytest.raises(TypeError, match="mask must be bool .* or float .*got dtype int64"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=BOOL_MASK.astype(np.int64))
    with pytest.raises(ValueError, match=r"mask of shape \(4, 3\) does not broadcast to \(2, 3, 4\)"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=BOOL_MASK.T)
    with pytest.raises(ValueError, match="dropout_p must be in"):
        F.scaled_dot_product_attention(q, k, v, dropout_p=1.0)
    with pytest.raises(TypeError, match="query, key, value must have one dtype, got float32, float32, float64"):
        F.scaled_dot_product_attention(q, k, v.double())


# ---- cross-entropy --------------------------------------------------------------------------------------

CE_TARGETS = np.array([2, 0, -100, 1, 2, 3])
CE_CASES = {
    "plain": {},
    "weight": {"weight": np.array([0.2, 1.0, 3.0, 0.5])},
    "label_smoothing": {"label_smoothing": 0.15},
    "weight_smoothing_ignore": {"weight": np.array([0.2, 1.0, 3.0, 0.5]), "label_smoothing": 0.3},
    "ignore_index_class": {"ignore_index": 2},
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", sorted(CE_CASES))
def test_cross_entropy_matches_torch(torch, kernels, case, reduction, dtype) -> None:
    kwargs = dict(CE_CASES[case], reduction=reduction)
    theirs = {k: torch.as_tensor(v.astype(dtype)) if k == "weight" else v for k, v in kwargs.items()}
    logits = np.random.default_rng(2).standard_normal((6, 4)).astype(dtype)
    target = np.where(CE_TARGETS == -100, kwargs.get("ignore_index", -100), CE_TARGETS)
    both(torch, [logits], lambda a: F.cross_entropy(a, target, **kwargs),
         lambda a: torch.nn.functional.cross_entropy(a, torch.as_tensor(target), **theirs), TOL[dtype])
    module = nn.CrossEntropyLoss(**kwargs)(mt.tensor(logits), target)
    close(module, torch.nn.CrossEntropyLoss(**theirs)(torch.as_tensor(logits), torch.as_tensor(target)), TOL[dtype])


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_spatial_and_probability_targets_match_torch(torch, kernels, reduction) -> None:
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((2, 3, 4))
    index = np.array([[0, 2, 1, -100], [1, 1, 0, 2]])
    weight = np.array([1.0, 2.0, 0.5])
    both(torch, [logits], lambda a: F.cross_entropy(a, index, weight=weight, label_smoothing=0.1, reduction=reduction),
         lambda a: torch.nn.functional.cross_entropy(a, torch.as_tensor(index), weight=torch.as_tensor(weight),
                                                     label_smoothing=0.1, reduction=reduction), 1e-10)
    probs = rng.dirichlet(np.ones(3), (2, 4)).transpose(0, 2, 1)
    both(torch, [logits, probs],
         lambda a, p: F.cross_entropy(a, p, weight=weight, label_smoothing=0.2, reduction=reduction),
         lambda a, p: torch.nn.functional.cross_entropy(a, p, weight=torch.as_tensor(weight), label_smoothing=0.2,
                                                        reduction=reduction), 1e-10)


def test_cross_entropy_empty_all_ignored_and_nan_in_ignored_rows_as_torch(torch, kernels) -> None:
    tf = torch.nn.functional
    empty = mt.zeros(0, 3)
    assert np.isnan(F.cross_entropy(empty, np.zeros(0, np.int64)).item())
    assert F.cross_entropy(empty, np.zeros(0, np.int64), reduction="sum").item() == 0.0
    assert F.cross_entropy(empty, np.zeros(0, np.int64), reduction="none").shape == (0,)
    ignored = np.array([-100, -100])
    assert np.isnan(F.cross_entropy(mt.ones(2, 3), ignored).item())
    assert np.isnan(tf.cross_entropy(torch.ones(2, 3), torch.as_tensor(ignored)).item())
    logits = np.array([[1.0, np.nan, 2.0], [0.5, 0.1, 0.2]], dtype=np.float32)
    target = np.array([-100, 2])
    for kwargs in ({}, {"label_smoothing": 0.1}, {"weight": np.ones(3, np.float32)}):
        theirs = {k: torch.as_tensor(v) if k == "weight" else v for k, v in kwargs.items()}
        both(torch, [logits], lambda a, kw=kwargs: F.cross_entropy(a, target, **kw),
             lambda a, kw=theirs: tf.cross_entropy(a, torch.as_tensor(target), **kw), 1e-5)


def test_cross_entropy_rejects_bad_dtypes_values_and_shapes() -> None:
    logits = mt.randn(4, 3)
    with pytest.raises(TypeError, match="cross_entropy: input must be float32 or float64, got dtype int64"):
        F.cross_entropy(mt.tensor(np.array([[2, 1, 0]])), np.array([0]))
    for bad in (np.array([0.0, 1.0, 2.0, 1.0]), np.array([True, False, True, False])):
        with pytest.raises(TypeError, match=f"target must hold integer class indices.*got dtype {bad.dtype}"):
            F.cross_entropy(logits, bad)
    for dtype in (np.int8, np.uint8, np.int32):
        F.cross_entropy(logits, np.array([0, 1, 2, 1], dtype=dtype))
    with pytest.raises(TypeError, match="ignore_index must be an integer, got 1.5"):
        F.cross_entropy(logits, np.array([0, 1, 2, 1]), ignore_index=1.5)
    with pytest.raises(ValueError, match="ignore_index 1180591620717411303424 does not fit in int64"):
        F.cross_entropy(logits, np.array([0, 1, 2, 1]), ignore_index=2**70)
    with pytest.raises(ValueError, match=r"cross_entropy: input of shape \(\) has no classes"):
        F.cross_entropy(mt.tensor(2.0), np.array(0))
    with pytest.raises(ValueError, match=r"target of shape \(3,\) for input \(4, 3\), expected \(4,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="target 3 is out of range for 3 classes"):
        F.cross_entropy(logits, np.array([0, 1, 3, 1]))
    with pytest.raises(ValueError, match=r"weight of shape \(2,\), expected \(3,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2, 1]), weight=np.ones(2))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        F.cross_entropy(logits, np.array([0, 1, 2, 1]), label_smoothing=1.5)


# ---- dtype policy and edge shapes of the other F ops ---------------------------------------------------

FLOAT_OPS = {
    "linear": lambda x: F.linear(x, mt.ones(2, 3)),
    "layer_norm": lambda x: F.layer_norm(x, 3),
    "softmax": lambda x: F.softmax(x, dim=-1),
    "log_softmax": lambda x: F.log_softmax(x, dim=-1),
    "gelu": lambda x: F.gelu(x),
    "scaled_dot_product_attention": lambda x: F.scaled_dot_product_attention(x, x, x),
    "self_attention": lambda x: F.self_attention(x, 1),
    "dropout": lambda x: F.dropout(x, 0.5),
}


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.complex64])
@pytest.mark.parametrize("op", sorted(FLOAT_OPS))
def test_float_ops_reject_integer_bool_and_complex_inputs(op, dtype) -> None:
    x = mt.tensor(np.ones((2, 3, 3), dtype=dtype))
    with pytest.raises(TypeError, match=f"{op}: .* must be float32 or float64, got dtype {np.dtype(dtype)}"):
        FLOAT_OPS[op](x)


def test_mixed_float_dtypes_raise_as_in_torch() -> None:
    with pytest.raises(TypeError, match="linear: input, weight, bias must have one dtype, got float64, float32, "):
        F.linear(mt.ones(2, 3, dtype=mt.float64), mt.ones(4, 3), mt.ones(4))
    with pytest.raises(TypeError, match="layer_norm: input, weight must have one dtype, got float32, float64"):
        F.layer_norm(mt.ones(2, 3), 3, mt.ones(3, dtype=mt.float64))


def test_linear_edge_shapes_as_torch(torch) -> None:
    with pytest.raises(ValueError, match=r"linear: input of shape \(\) does not match weight of shape \(2, 3\)"):
        F.linear(mt.tensor(1.0), mt.ones(2, 3))
    assert F.linear(mt.zeros(0, 3), mt.ones(2, 3)).shape == (0, 2)
    out = F.linear(mt.zeros(2, 0), mt.zeros(3, 0), mt.ones(3))
    close(out, torch.nn.functional.linear(torch.zeros(2, 0), torch.zeros(3, 0), torch.ones(3)), 0.0)
    assert F.layer_norm(mt.zeros(0, 4), 4).shape == (0, 4)


# ---- small functions and modules -----------------------------------------------------------------------


def test_activations_losses_and_modules_match_torch(torch, kernels) -> None:
    tf, tn = torch.nn.functional, torch.nn
    x, y = (np.random.default_rng(i).standard_normal((3, 4)) for i in (7, 8))
    both(torch, [x], F.silu, tf.silu, 1e-10)
    both(torch, [x, y], F.mse_loss, tf.mse_loss, 1e-10)
    both(torch, [x, y], lambda a, b: F.mse_loss(a, b, reduction="none"),
         lambda a, b: tf.mse_loss(a, b, reduction="none"), 1e-10)
    pairs = [
        (nn.Tanh(), tn.Tanh()), (nn.Sigmoid(), tn.Sigmoid()), (nn.SiLU(), tn.SiLU()), (nn.ReLU(), tn.ReLU()),
        (nn.Softmax(dim=0), tn.Softmax(dim=0)), (nn.Identity(7, k=1), tn.Identity(7, k=1)),
        (nn.Flatten(), tn.Flatten()), (nn.Flatten(0, 1), tn.Flatten(0, 1)),
    ]
    x3 = np.random.default_rng(9).standard_normal((2, 3, 4))
    for ours, theirs in pairs:
        both(torch, [x3], ours, theirs, 1e-10)
        assert repr(ours) == repr(theirs)
    both(torch, [x, y], nn.MSELoss(reduction="sum"), tn.MSELoss(reduction="sum"), 1e-10)
    assert repr(nn.ReLU(inplace=True)) == repr(tn.ReLU(inplace=True)) and nn.ReLU(True)(mt.tensor(x)).min() >= 0
    with pytest.warns(UserWarning, match="target of shape"):
        F.mse_loss(mt.tensor(x), y[:, :1])


def test_one_hot_matches_torch(torch) -> None:
    ids = np.array([[0, 3], [2, 2]])
    expected = torch.nn.functional.one_hot(torch.as_tensor(ids)).numpy()
    got = F.one_hot(mt.tensor(ids))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got.data, expected)
    assert F.one_hot(ids, num_classes=6).shape == (2, 2, 6)
    with pytest.raises(ValueError, match=r"one_hot: class values must be in \[0, 3\)"):
        F.one_hot(ids, 3)
    with pytest.raises(TypeError, match="one_hot: expected integer class indices, got dtype float64"):
        F.one_hot(np.array([1.0]))


# ---- nn.init and default initialisation -----------------------------------------------------------------


def test_fans_and_gains_as_torch(torch) -> None:
    for shape in [(3, 4), (8, 4, 3, 3), (5, 2, 7)]:
        assert nn.init._calculate_fan_in_and_fan_out(mt.zeros(*shape)) == \
            torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))
    for name, param in [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None), ("leaky_relu", None),
                        ("leaky_relu", 0.2), ("selu", None), ("conv2d", None)]:
        assert nn.init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))
    with pytest.raises(ValueError, match="fan in and fan out need a tensor of at least 2 dimensions"):
        nn.init.xavier_uniform_(mt.zeros(5))
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        nn.init.calculate_gain("swish")


INIT_CASES = {  # fill, expected (low, high) bounds or None, expected std
    "uniform": (lambda t: nn.init.uniform_(t, -2.0, 1.0), (-2.0, 1.0), 3.0 / math.sqrt(12)),
    "normal": (lambda t: nn.init.normal_(t, 0.5, 0.2), None, 0.2),
    "xavier_uniform": (lambda t: nn.init.xavier_uniform_(t, gain=2.0), "bound", 2.0 * math.sqrt(2 / (400 + 200))),
    "xavier_normal": (lambda t: nn.init.xavier_normal_(t), None, math.sqrt(2 / (400 + 200))),
    "kaiming_uniform_a5": (lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5)), "bound", 1 / math.sqrt(3 * 400)),
    "kaiming_normal_fan_out_relu": (lambda t: nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"),
                                    None, math.sqrt(2 / 200)),
}


@pytest.mark.parametrize("case", sorted(INIT_CASES))
def test_init_distributions_follow_the_formulas(case) -> None:
    fill, bounds, std = INIT_CASES[case]
    w = nn.Parameter(np.zeros((200, 400), dtype=np.float32))
    buffer = w.data
    mt.manual_seed(0)
    assert fill(w) is w and w.data is buffer  # in place: views into a flat buffer stay valid
    assert w.grad is None and w.dtype == np.float32
    assert abs(w.data.std() / std - 1) < 0.01
    if bounds is not None:
        low, high = (-std * math.sqrt(3), std * math.sqrt(3)) if bounds == "bound" else bounds
        assert low <= w.data.min() < low + 0.01 * (high - low) and high - 0.01 * (high - low) < w.data.max() <= high
    mt.manual_seed(0)
    again = nn.Parameter(np.zeros((200, 400), dtype=np.float32))
    np.testing.assert_array_equal(fill(again).data, w.data)


def test_trunc_normal_constant_and_errors(torch) -> None:
    w = mt.zeros(300, 300)
    nn.init.trunc_normal_(w, mean=0.5, std=1.0, a=-0.5, b=1.0)
    theirs = torch.nn.init.trunc_normal_(torch.zeros(300, 300), mean=0.5, std=1.0, a=-0.5, b=1.0)
    assert -0.5 <= w.data.min() and w.data.max() <= 1.0
    assert abs(w.data.mean() - theirs.mean().item()) < 0.01 and abs(w.data.std() - theirs.std().item()) < 0.01
    assert (nn.init.constant_(w, 0.25).data == 0.25).all() and (nn.init.ones_(w).data == 1).all()
    assert (nn.init.zeros_(w).data == 0).all()
    with pytest.raises(ValueError, match="holds almost none of"):
        nn.init.trunc_normal_(w, mean=0.0, std=0.01, a=5.0, b=6.0)


def test_layers_default_init_device_and_dtype() -> None:
    layer = nn.Linear(300, 200, device="cpu")
    bound = 1 / math.sqrt(300)
    assert np.abs(layer.weight.data).max() <= bound and abs(layer.weight.data.std() * math.sqrt(3) / bound - 1) < 0.02
    assert np.abs(layer.bias.data).max() <= bound
    emb = nn.Embedding(300, 100, dtype=mt.float64)
    assert emb.weight.dtype == np.float64 and abs(emb.weight.data.std() - 1) < 0.02
    ln = nn.LayerNorm(5, device=mt.device("cpu"))
    assert (ln.weight.data == 1).all() and (ln.bias.data == 0).all()
    with pytest.raises(ValueError, match="Linear: device 'cuda' is not available; microtensor runs on the CPU"):
        nn.Linear(2, 2, device="cuda")
    with pytest.raises(TypeError, match="Embedding: parameters must be float32 or float64, got dtype int64"):
        nn.Embedding(2, 2, dtype="int64")
    mt.manual_seed(3)
    a = nn.Linear(4, 3)
    mt.manual_seed(3)
    np.testing.assert_array_equal(nn.Linear(4, 3).weight.data, a.weight.data)


# ---- in-place changes to inputs saved as reshaped views (issue 9, item 3) -----------------------------

SAVED_VIEWS = {
    "Linear": lambda h: F.linear(h, mt.randn(5, 4, requires_grad=True)),
    "LayerNorm": lambda h: F.layer_norm(h, 4),
    "ScaledDotProductAttention": lambda h: F.scaled_dot_product_attention(h, h, h),
    "GeluErf": lambda h: F.gelu(h),
}


@pytest.mark.parametrize("op", sorted(SAVED_VIEWS))
def test_changing_a_saved_input_in_place_makes_backward_raise(op) -> None:
    x = mt.randn(2, 3, 4, requires_grad=True)
    h = x * 1.0
    y = SAVED_VIEWS[op](h)
    h += 10
    with pytest.raises(mt.AutogradError, match=f"backward of {op}: a tensor it saved was modified in place"):
        y.sum().backward()


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_of_a_zero_dim_tensor(torch, kernels, approximate) -> None:
    both(torch, [np.array(1.5, np.float32)], lambda a: F.gelu(a, approximate=approximate),
         lambda a: torch.nn.functional.gelu(a, approximate=approximate), TOL[np.float32])
