"""Acceptance 2: forward values and gradients of every op, and optimizer steps, against PyTorch.

Tolerance is 1e-5 (float32) / 1e-10 (float64) relative to the size of the
reference tensor: |ours - torch| <= tol * max(|torch_i|, max(1, max|torch|)) per element.
The module skips as a whole when PyTorch is not installed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

import microtensor as mt  # noqa: E402
import microtensor.nn as nn  # noqa: E402
import microtensor.nn.functional as F  # noqa: E402
from microtensor import optim  # noqa: E402
from microtensor.optim import lr_scheduler  # noqa: E402

TOL = {np.float32: 1e-5, np.float64: 1e-10}
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def assert_close(ours: np.ndarray, ref: np.ndarray, tol: float, what: str) -> None:
    """Elementwise relative tolerance, with an absolute floor scaled to the reference's magnitude."""
    ref = np.asarray(ref, dtype=np.float64)
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs torch {ref.shape}"
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * scale, err_msg=what)


def _torch_self_attention(qkv, n_heads: int):
    """PyTorch's multi-head causal self-attention on a packed (B, T, 3*D) projection, heads split by hand."""
    B, T, D3 = qkv.shape
    heads = qkv.reshape(B, T, 3, n_heads, D3 // 3 // n_heads).permute(2, 0, 3, 1, 4)
    out = TF.scaled_dot_product_attention(heads[0], heads[1], heads[2], is_causal=True)
    return out.transpose(1, 2).reshape(B, T, D3 // 3)


def pos(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def distinct(*shape):
    return lambda rng: rng.permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape) * 0.3


IDX = np.array([2, 0, 2, 1])
MASK = np.array([[True, False, True, False], [False, False, True, True], [True, True, False, False]])
TARGETS = np.array([2, 0, 1, 2])
ATTN_MASK = np.array([[True, True, False, False], [True, False, True, True], [False, True, True, True]])


def t_(a):
    return torch.as_tensor(a)


# name: (microtensor fn, torch fn, input specs)
OPS = {
    "add_broadcast": (lambda a, b: a + b, lambda a, b: a + b, [(2, 3, 4), (3, 1)]),
    "sub_broadcast": (lambda a, b: a - b, lambda a, b: a - b, [(4,), (2, 3, 1)]),
    "rsub_scalar": (lambda a: 1.5 - a, lambda a: 1.5 - a, [(3, 2)]),
    "mul_broadcast": (lambda a, b: a * b, lambda a, b: a * b, [(2, 1, 4), (3, 1)]),
    "div_broadcast": (lambda a, b: a / b, lambda a, b: a / b, [(2, 3, 4), pos(4)]),
    "rdiv_scalar": (lambda a: 2.0 / a, lambda a: 2.0 / a, [pos(3)]),
    "pow_scalar": (lambda a: a**3, lambda a: a**3, [(3, 4)]),
    "pow_tensor_broadcast": (lambda a, b: a**b, lambda a, b: a**b, [pos(2, 3), (3,)]),
    "rpow_scalar": (lambda a: 2.0**a, lambda a: 2.0**a, [(4,)]),
    "neg": (lambda a: -a, lambda a: -a, [(3, 4)]),
    "matmul_1d_1d": (lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4,)]),
    "matmul_1d_2d": (lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4, 3)]),
    "matmul_2d_1d": (lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4,)]),
    "matmul_2d": (lambda a, b: a @ b, lambda a, b: a @ b, [(5, 4), (4, 3)]),
    "matmul_batched": (lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (2, 4, 2)]),
    "matmul_batch_broadcast": (lambda a, b: a @ b, lambda a, b: a @ b, [(2, 1, 3, 4), (3, 4, 2)]),
    "matmul_3d_1d": (lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (4,)]),
    "sum_all": (lambda a: a.sum(), lambda a: a.sum(), [(3, 4)]),
    "sum_dims_keepdim": (
        lambda a: a.sum(dim=(0, 2), keepdim=True),
        lambda a: a.sum(dim=(0, 2), keepdim=True),
        [(2, 3, 4)],
    ),
    "mean_axis": (lambda a: a.mean(axis=1), lambda a: a.mean(dim=1), [(2, 3, 4)]),
    "mean_all": (lambda a: a.mean(), lambda a: a.mean(), [(3, 4)]),
    "max_all": (lambda a: a.max(), lambda a: a.max(), [distinct(3, 4)]),
    "max_dim": (lambda a: a.max(dim=1).values, lambda a: a.max(dim=1).values, [distinct(3, 4)]),
    "min_dims_keepdim": (
        lambda a: a.amin(dim=(0, 2), keepdim=True),
        lambda a: a.amin(dim=(0, 2), keepdim=True),
        [distinct(2, 3, 4)],
    ),
    "var_all": (lambda a: a.var(), lambda a: a.var(), [(3, 4)]),
    "var_dim_keepdim": (lambda a: a.var(dim=1, keepdim=True), lambda a: a.var(dim=1, keepdim=True), [(3, 4)]),
    "var_biased": (lambda a: a.var(axis=0, correction=0), lambda a: a.var(dim=0, correction=0), [(3, 4)]),
    "exp": (lambda a: a.exp(), torch.exp, [(3, 4)]),
    "log": (lambda a: a.log(), torch.log, [pos(3, 4)]),
    "sqrt": (lambda a: a.sqrt(), torch.sqrt, [pos(3, 4)]),
    "tanh": (lambda a: a.tanh(), torch.tanh, [(3, 4)]),
    "sigmoid": (lambda a: a.sigmoid(), torch.sigmoid, [(3, 4)]),
    "relu": (lambda a: a.relu(), torch.relu, [(3, 4)]),
    "gelu_tanh": (lambda a: a.gelu(), lambda a: TF.gelu(a, approximate="tanh"), [(3, 4)]),
    "abs": (lambda a: a.abs(), torch.abs, [(3, 4)]),
    "reshape": (lambda a: a.reshape(4, -1), lambda a: a.reshape(4, -1), [(3, 4)]),
    "view": (lambda a: a.view(2, 6), lambda a: a.reshape(2, 6), [(3, 4)]),
    "transpose": (lambda a: a.transpose(0, 2), lambda a: a.transpose(0, 2), [(2, 3, 4)]),
    "permute": (lambda a: a.permute(2, 0, 1), lambda a: a.permute(2, 0, 1), [(2, 3, 4)]),
    "T": (lambda a: a.T, lambda a: a.T, [(3, 4)]),
    "getitem_int_slice": (lambda a: a[1, ::2], lambda a: a[1, ::2], [(3, 4)]),
    "getitem_int_array_repeats": (lambda a: a[IDX], lambda a: a[t_(IDX)], [(3, 4)]),
    "getitem_bool_mask": (lambda a: a[MASK], lambda a: a[t_(MASK)], [(3, 4)]),
    "cat": (
        lambda a, b: mt.cat([a, b, a], dim=1),
        lambda a, b: torch.cat([a, b, a], dim=1),
        [(2, 1), (2, 3)],
    ),
    "stack": (
        lambda a, b: mt.stack([a, b], dim=-1),
        lambda a, b: torch.stack([a, b], dim=-1),
        [(2, 3), (2, 3)],
    ),
    "split": (
        lambda a: mt.cat(a.split(2, dim=1)[::-1], dim=1) * mt.arange(5).to(a.dtype),
        lambda a: torch.cat(a.split(2, dim=1)[::-1], dim=1) * torch.arange(5).to(a.dtype),
        [(2, 5)],
    ),
    "split_sections": (lambda a: mt.split(a, [1, 3])[1], lambda a: torch.split(a, [1, 3])[1], [(4, 3)]),
    "where": (lambda a, b: mt.where(MASK, a, b), lambda a, b: torch.where(t_(MASK), a, b), [(1, 4), (3, 1)]),
    "masked_fill": (
        lambda a: a.masked_fill(MASK[0], -2.0),
        lambda a: a.masked_fill(t_(MASK[0]), -2.0),
        [(2, 3, 4)],
    ),
    "clip": (lambda a: a.clip(-0.5, 0.7), lambda a: a.clamp(-0.5, 0.7), [(3, 4)]),
    "softmax": (lambda a: F.softmax(a, dim=1), lambda a: TF.softmax(a, dim=1), [(2, 3, 4)]),
    "log_softmax": (lambda a: F.log_softmax(a, dim=-1), lambda a: TF.log_softmax(a, dim=-1), [(3, 5)]),
    "cross_entropy_mean": (
        lambda a: F.cross_entropy(a, TARGETS),
        lambda a: TF.cross_entropy(a, t_(TARGETS)),
        [(4, 3)],
    ),
    "cross_entropy_sum": (
        lambda a: F.cross_entropy(a, TARGETS, reduction="sum"),
        lambda a: TF.cross_entropy(a, t_(TARGETS), reduction="sum"),
        [(4, 3)],
    ),
    "cross_entropy_none": (
        lambda a: F.cross_entropy(a, TARGETS, reduction="none"),
        lambda a: TF.cross_entropy(a, t_(TARGETS), reduction="none"),
        [(4, 3)],
    ),
    "cross_entropy_ignore_index": (
        lambda a: F.cross_entropy(a, TARGETS, ignore_index=2),
        lambda a: TF.cross_entropy(a, t_(TARGETS), ignore_index=2),
        [(4, 3)],
    ),
    "cross_entropy_nc_d": (
        lambda a: F.cross_entropy(a, TARGETS.reshape(2, 2)),
        lambda a: TF.cross_entropy(a, t_(TARGETS.reshape(2, 2))),
        [(2, 3, 2)],
    ),
    "layer_norm": (
        lambda x, w, b: F.layer_norm(x, (4,), w, b),
        lambda x, w, b: TF.layer_norm(x, (4,), w, b),
        [(2, 3, 4), (4,), (4,)],
    ),
    "layer_norm_2d_eps": (
        lambda x: F.layer_norm(x, (3, 4), eps=1e-3),
        lambda x: TF.layer_norm(x, (3, 4), eps=1e-3),
        [(2, 3, 4)],
    ),
    "embedding": (
        lambda w: F.embedding(IDX.reshape(2, 2), w),
        lambda w: TF.embedding(t_(IDX.reshape(2, 2)), w),
        [(3, 4)],
    ),
    "linear": (lambda x, w, b: F.linear(x, w, b), TF.linear, [(2, 3, 4), (5, 4), (5,)]),
    "linear_no_bias": (lambda x, w: F.linear(x, w), TF.linear, [(3, 4), (2, 4)]),
    "sdpa": (
        F.scaled_dot_product_attention,
        TF.scaled_dot_product_attention,
        [(2, 3, 4), (2, 5, 4), (2, 5, 3)],
    ),
    "sdpa_causal": (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
        [(2, 2, 4, 3), (2, 2, 4, 3), (2, 2, 4, 3)],
    ),
    "sdpa_causal_fewer_queries": (  # causal aligned at the first query, as PyTorch
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
        [(2, 3, 4), (2, 5, 4), (2, 5, 3)],
    ),
    "self_attention": (
        lambda qkv: F.self_attention(qkv, 2, is_causal=True),
        lambda qkv: _torch_self_attention(qkv, 2),
        [(2, 5, 12)],
    ),
    "sdpa_mask": (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=ATTN_MASK),
        lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=t_(ATTN_MASK)),
        [(2, 3, 2), (2, 4, 2), (2, 4, 2)],
    ),
    "sdpa_scale": (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3),
        lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, scale=0.3),
        [(3, 2), (3, 2), (3, 2)],
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_matches_torch(name: str, dtype, rng: np.random.Generator) -> None:
    ours_fn, torch_fn, specs = OPS[name]
    arrays = [(spec(rng) if callable(spec) else rng.standard_normal(spec)).astype(dtype) for spec in specs]
    ours = [mt.tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    out, ref = ours_fn(*ours), torch_fn(*theirs)
    tol = TOL[dtype]
    assert out.dtype == dtype
    assert_close(out.data, ref.detach().numpy(), tol, f"{name} forward")
    upstream = rng.standard_normal(ref.shape).astype(dtype)
    out.backward(upstream)
    ref.backward(torch.as_tensor(upstream))
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.grad is not None and a.grad.dtype == dtype
        assert_close(a.grad, b.grad.numpy(), tol, f"{name} gradient of input {i}")


def test_comparisons_and_argmax_match_torch(rng: np.random.Generator) -> None:
    a, b = rng.standard_normal((3, 4)), rng.standard_normal(4)
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    ma, mb = mt.tensor(a), mt.tensor(b)
    for op in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
        np.testing.assert_array_equal(getattr(ma, op)(mb).data, getattr(ta, op)(tb).numpy())
    np.testing.assert_array_equal(ma.argmax(dim=1).data, ta.argmax(dim=1).numpy())
    np.testing.assert_array_equal(ma.argmax().data, ta.argmax().numpy())


def model_pair(dtype):
    """The same small MLP in microtensor and in torch, with equal weights."""
    ours = nn.Sequential(
        nn.Linear(4, 8, generator=np.random.default_rng(0)),
        nn.GELU(),
        nn.LayerNorm(8),
        nn.Linear(8, 3, generator=np.random.default_rng(1)),
    )
    theirs = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3)
    ).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for p in ours.parameters():
            p.data = p.data.astype(dtype)
        for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
            assert p.shape == tuple(q.shape), name
            q.copy_(torch.as_tensor(p.data))
    return ours, theirs


OPTIMIZERS = {
    "adam": (lambda ps: optim.Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    "adam_wd_betas": (
        lambda ps: optim.Adam(ps, lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
    ),
    "adamw": (lambda ps: optim.AdamW(ps, lr=0.01), lambda ps: torch.optim.AdamW(ps, lr=0.01)),
    "adamw_wd": (
        lambda ps: optim.AdamW(ps, lr=0.03, weight_decay=0.2),
        lambda ps: torch.optim.AdamW(ps, lr=0.03, weight_decay=0.2),
    ),
    "sgd": (lambda ps: optim.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd_momentum_wd": (
        lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
    ),
    "sgd_nesterov": (
        lambda ps: optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_steps_match_torch(name: str, dtype, rng: np.random.Generator) -> None:
    """Five steps of a whole model (forward, cross-entropy, backward, clip, step) stay with PyTorch."""
    ours, theirs = model_pair(dtype)
    make_ours, make_theirs = OPTIMIZERS[name]
    opt, topt = make_ours(list(ours.parameters())), make_theirs(theirs.parameters())
    x = rng.standard_normal((6, 4)).astype(dtype)
    y = rng.integers(0, 3, 6)
    tol = TOL[dtype]
    for step in range(5):
        loss = F.cross_entropy(ours(mt.tensor(x)), y)
        tloss = TF.cross_entropy(theirs(torch.as_tensor(x)), torch.as_tensor(y))
        assert_close(loss.data, tloss.detach().numpy(), tol, f"{name} loss at step {step}")
        opt.zero_grad()
        topt.zero_grad()
        loss.backward()
        tloss.backward()
        norm = optim.clip_grad_norm_(ours.parameters(), 1.0)
        tnorm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        assert_close(np.asarray(norm), tnorm.numpy(), tol, f"{name} grad norm at step {step}")
        opt.step()
        topt.step()
    for (pname, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert_close(p.data, q.detach().numpy(), tol, f"{name}: {pname} after 5 steps")


def test_lr_schedules_match_torch() -> None:
    def pair(make, lr=0.1):
        ours = optim.SGD([mt.zeros(1, requires_grad=True)], lr=lr)
        theirs = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        return make(lr_scheduler, ours), make(torch.optim.lr_scheduler, theirs), ours, theirs

    makers = {
        "step": lambda m, o: m.StepLR(o, step_size=3, gamma=0.5),
        "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
        "linear": lambda m, o: m.LinearLR(o, start_factor=0.1, total_iters=4),
        "warmup_cosine": lambda m, o: m.SequentialLR(
            o,
            [m.LinearLR(o, start_factor=0.2, total_iters=3), m.CosineAnnealingLR(o, T_max=6)],
            milestones=[3],
        ),
    }
    for name, make in makers.items():
        ours, theirs, opt, topt = pair(make)
        for step in range(10):
            assert math.isclose(
                ours.get_last_lr()[0], theirs.get_last_lr()[0], rel_tol=1e-9, abs_tol=1e-12
            ), f"{name} at step {step}: {ours.get_last_lr()} vs {theirs.get_last_lr()}"
            opt.step()
            topt.step()
            ours.step()
            theirs.step()


def test_module_repr_matches_torch() -> None:
    ours = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2, bias=False))
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2, bias=False))
    assert repr(ours) == repr(theirs)
    for kwargs in ({}, {"bias": False}, {"elementwise_affine": False}):
        assert repr(nn.LayerNorm(8, **kwargs)) == repr(torch.nn.LayerNorm(8, **kwargs))
    ln, tln = nn.LayerNorm(8, bias=False), torch.nn.LayerNorm(8, bias=False)
    assert list(dict(ln.named_parameters())) == list(dict(tln.named_parameters())) == ["weight"]
    assert repr(nn.Embedding(10, 3)) == repr(torch.nn.Embedding(10, 3))
    assert list(dict(ours.named_parameters())) == list(dict(theirs.named_parameters()))
