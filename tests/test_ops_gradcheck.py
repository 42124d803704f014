"""Float64 finite-difference gradchecks for every differentiable op, including broadcasting shapes.

Each case is (function of Tensors, input specs). A spec is a shape (standard
normal draws), or a callable rng -> array for inputs that need a domain
(positive for log/sqrt, away from kinks for relu/abs/clip). Every float input
requires grad and is checked; integer and bool inputs are closed over.
"""

from __future__ import annotations

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn.functional as F


def pos(*shape):
    """Positive values in [0.5, 2): the domain of log, sqrt and a real power."""
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def away(*shape, kinks=(0.0,)):
    """Normal draws pushed at least 0.1 from every kink, so finite differences never straddle one."""

    def draw(rng):
        x = rng.standard_normal(shape)
        for kink in kinks:
            near = np.abs(x - kink) < 0.1
            x = np.where(near, x + 0.25 * np.where(x >= kink, 1.0, -1.0), x)
        return x

    return draw


def distinct(*shape):
    """A random permutation of well-separated values, so max/min have no ties."""
    return lambda rng: rng.permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape) * 0.3


IDX = np.array([2, 0, 2, 1])  # repeats: the gradient of row 2 must add up
MASK = np.array([[True, False, True, False], [False, False, True, True], [True, True, False, False]])

CASES = {
    # arithmetic, same shape and broadcast
    "add": (lambda a, b: a + b, [(3, 4), (3, 4)]),
    "add_broadcast": (lambda a, b: a + b, [(2, 3, 4), (3, 1)]),
    "add_scalar_left": (lambda a: 2.5 + a, [(3,)]),
    "sub": (lambda a, b: a - b, [(3, 4), (3, 4)]),
    "sub_broadcast": (lambda a, b: a - b, [(4,), (2, 3, 1)]),
    "rsub_scalar": (lambda a: 1.0 - a, [(3, 2)]),
    "mul": (lambda a, b: a * b, [(3, 4), (3, 4)]),
    "mul_broadcast": (lambda a, b: a * b, [(2, 1, 4), (3, 1)]),
    "mul_self": (lambda a: a * a, [(5,)]),
    "div": (lambda a, b: a / b, [(3, 4), away(3, 4)]),
    "div_broadcast": (lambda a, b: a / b, [(2, 3, 4), pos(4)]),
    "rdiv_scalar": (lambda a: 2.0 / a, [pos(3)]),
    "pow_scalar": (lambda a: a**3, [(3, 4)]),
    "pow_fast_exponents": (lambda a: a**2 + a**3.0 + a**0.5 + a**-1 + a**-0.5 + a**2.5 + a**1 + a**0 + a**-3.5,
                           [pos(3, 4)]),
    "pow_fast_negative_base": (lambda a: a**3.0 + mt.pow(a, 4) + a**-2, [away(3, 4)]),
    "pow_slow_exponent": (lambda a: a**1.3 + a**20, [pos(3, 4)]),
    "pow_fractional": (lambda a: a**1.5, [pos(3, 4)]),
    "pow_tensor": (lambda a, b: a**b, [pos(3, 4), (3, 4)]),
    "pow_broadcast": (lambda a, b: a**b, [pos(2, 3), (3,)]),
    "rpow_scalar": (lambda a: 2.0**a, [(4,)]),
    "neg": (lambda a: -a, [(3, 4)]),
    # matmul: 1-D, 2-D, batched, broadcast batch axes
    "matmul_1d_1d": (lambda a, b: a @ b, [(4,), (4,)]),
    "matmul_1d_2d": (lambda a, b: a @ b, [(4,), (4, 3)]),
    "matmul_2d_1d": (lambda a, b: a @ b, [(3, 4), (4,)]),
    "matmul_2d": (lambda a, b: a @ b, [(3, 4), (4, 2)]),
    "matmul_batched": (lambda a, b: a @ b, [(2, 3, 4), (2, 4, 2)]),
    "matmul_batch_broadcast": (lambda a, b: a @ b, [(2, 1, 3, 4), (3, 4, 2)]),
    "matmul_3d_2d": (lambda a, b: a @ b, [(2, 3, 4), (4, 2)]),
    "matmul_2d_3d": (lambda a, b: a.matmul(b), [(3, 4), (2, 4, 2)]),
    "matmul_batched_1d": (lambda a, b: a @ b, [(2, 3, 4), (4,)]),
    "matmul_1d_batched": (lambda a, b: a @ b, [(4,), (2, 4, 3)]),
    # reductions with axis/keepdims and dim/keepdim
    "sum_all": (lambda a: a.sum(), [(3, 4)]),
    "sum_axis": (lambda a: a.sum(axis=1), [(2, 3, 4)]),
    "sum_axes_keepdims": (lambda a: a.sum(axis=(0, 2), keepdims=True), [(2, 3, 4)]),
    "sum_dim_keepdim": (lambda a: a.sum(dim=-1, keepdim=True), [(2, 3)]),
    "sum_dim_list": (lambda a: a.sum(dim=[0, 1]), [(2, 3, 2)]),
    "mean_all": (lambda a: a.mean(), [(3, 4)]),
    "mean_axis": (lambda a: a.mean(axis=0), [(3, 4)]),
    "mean_axes_keepdims": (lambda a: a.mean(axis=(1, 2), keepdims=True), [(2, 3, 4)]),
    "mean_dim_keepdim": (lambda a: a.mean(dim=1, keepdim=True), [(2, 3, 4)]),
    "max_all": (lambda a: a.max(), [distinct(3, 4)]),
    "max_dim_values": (lambda a: a.max(1).values, [distinct(3, 4)]),
    "max_dim_keepdim_values": (lambda a: a.max(dim=0, keepdim=True)[0], [distinct(3, 4)]),
    "amax_dims_keepdim": (lambda a: a.amax(dim=(0, 2), keepdim=True), [distinct(2, 3, 4)]),
    "amax_ties_share": (lambda a: mt.cat([a, a]).amax(0), [distinct(3, 4)]),
    "min_all": (lambda a: a.min(), [distinct(3, 4)]),
    "min_dim_values": (lambda a: a.min(-1)[0], [distinct(3, 4)]),
    "amin_dim_keepdim": (lambda a: mt.amin(a, 1, keepdim=True), [distinct(2, 3, 4)]),
    "maximum": (lambda a, b: mt.maximum(a, b), [distinct(3, 4), (3, 4)]),
    "maximum_broadcast": (lambda a: mt.maximum(a, mt.zeros(4, dtype="float64")), [away(3, 4)]),
    "minimum": (lambda a, b: mt.minimum(a, b), [distinct(3, 4), (1, 4)]),
    "max_other_tensor": (lambda a, b: a.max(b) - mt.min(a, b), [distinct(3, 4), (3, 4)]),
    "sort_values": (lambda a: a.sort(dim=0)[0] * mt.arange(3.0, dtype="float64")[:, None], [distinct(3, 4)]),
    "sort_descending": (lambda a: mt.sort(a, descending=True).values[:, :2], [distinct(3, 4)]),
    "topk_values": (lambda a: a.topk(2).values, [distinct(3, 5)]),
    "topk_smallest_dim0": (lambda a: mt.topk(a, 2, dim=0, largest=False)[0], [distinct(4, 3)]),
    "gather_repeats": (lambda a: a.gather(1, mt.tensor([[0, 0, 2], [1, 2, 1]])), [(2, 3)]),
    "gather_smaller_index": (lambda a: mt.gather(a, 0, mt.tensor([[2, 0], [2, 2]])), [(3, 4)]),
    "cumsum_dim1": (lambda a: a.cumsum(1), [(3, 4)]),
    "cumsum_dim0": (lambda a: mt.cumsum(a, dim=0), [(3, 2, 2)]),
    "std_dim": (lambda a: a.std(1), [(3, 4)]),
    "std_biased_keepdim": (lambda a: mt.std(a, dim=0, unbiased=False, keepdim=True), [(3, 4)]),
    "norm_all": (lambda a: a.norm(), [(3, 4)]),
    "norm_dim_keepdim": (lambda a: mt.norm(a, dim=1, keepdim=True), [(3, 4)]),
    "norm_p1_pinf_p3": (lambda a: a.norm(1) + a.norm(float("inf"), dim=0).sum() + a.norm(3, dim=1).sum(),
                        [away(3, 4)]),
    "tril_triu": (lambda a: a.tril() + 2 * mt.triu(a, diagonal=1) + a.tril(-1), [(2, 3, 4)]),
    "var_all": (lambda a: a.var(), [(3, 4)]),
    "var_axis": (lambda a: a.var(axis=1), [(3, 4)]),
    "var_keepdims_biased": (lambda a: a.var(axis=(0, 2), keepdims=True, correction=0), [(2, 3, 4)]),
    "var_dim_keepdim": (lambda a: a.var(dim=0, keepdim=True), [(3, 4)]),
    "var_unbiased_false": (lambda a: mt.var(a, 1, False), [(3, 4)]),
    # elementwise functions
    "exp": (lambda a: a.exp(), [(3, 4)]),
    "log": (lambda a: a.log(), [pos(3, 4)]),
    "sqrt": (lambda a: a.sqrt(), [pos(3, 4)]),
    "tanh": (lambda a: a.tanh(), [(3, 4)]),
    "sin_cos": (lambda a: a.sin() * mt.cos(a), [(3, 4)]),
    "logsumexp": (lambda a: a.logsumexp(1) + mt.logsumexp(a, dim=(0, 1), keepdim=True).sum(), [(3, 4)]),
    "square_rsqrt": (lambda a: a.square() + mt.rsqrt(a), [pos(3, 4)]),
    "sigmoid": (lambda a: a.sigmoid(), [(3, 4)]),
    "relu": (lambda a: a.relu(), [away(3, 4)]),
    "gelu": (lambda a: a.gelu(), [(3, 4)]),
    "abs": (lambda a: a.abs(), [away(3, 4)]),
    "functional_activations": (lambda a: F.relu(a) + F.gelu(a) + F.sigmoid(a) + F.tanh(a), [away(3, 4)]),
    # shape
    "reshape": (lambda a: a.reshape(4, 3), [(3, 4)]),
    "reshape_tuple_infer": (lambda a: a.reshape((2, -1)), [(3, 4)]),
    "view": (lambda a: a.view(2, 6), [(3, 4)]),
    "transpose_default": (lambda a: a.transpose(), [(2, 3, 4)]),
    "transpose_dims": (lambda a: a.transpose(0, 2), [(2, 3, 4)]),
    "permute": (lambda a: a.permute(2, 0, 1), [(2, 3, 4)]),
    "permute_tuple": (lambda a: a.permute((1, 0, 2)), [(2, 3, 4)]),
    "T": (lambda a: a.T, [(3, 4)]),
    "flatten_unsqueeze_squeeze": (lambda a: a.flatten(1).unsqueeze(0).squeeze(0), [(2, 3, 2)]),
    "expand": (lambda a: a.expand(3, 4), [(1, 4)]),
    # indexing
    "getitem_int": (lambda a: a[1], [(3, 4)]),
    "getitem_negative_int": (lambda a: a[-1, 2], [(3, 4)]),
    "getitem_slice": (lambda a: a[1:, ::2], [(3, 4)]),
    "getitem_negative_step": (lambda a: a[::-1, 1:3], [(3, 4)]),
    "getitem_ellipsis_none": (lambda a: a[..., None, 0], [(2, 3, 4)]),
    "getitem_int_array_repeats": (lambda a: a[IDX], [(3, 4)]),
    "getitem_int_tensor_repeats": (lambda a: a[:, mt.tensor(IDX)], [(2, 3)]),
    "getitem_two_arrays": (lambda a: a[IDX, np.array([0, 1, 0, 3])], [(3, 4)]),
    "getitem_bool_mask": (lambda a: a[MASK], [(3, 4)]),
    "getitem_bool_tensor_rows": (lambda a: a[mt.tensor(np.array([True, False, True]))], [(3, 4)]),
    # joining and splitting
    "cat_axis0": (lambda a, b: mt.cat([a, b]), [(2, 3), (1, 3)]),
    "cat_dim1": (lambda a, b, c: mt.cat([a, b, c], dim=1), [(2, 1), (2, 3), (2, 2)]),
    "cat_reused": (lambda a, b: mt.cat([a, b, a], axis=-1), [(2, 2), (2, 1)]),
    "stack_axis0": (lambda a, b: mt.stack([a, b]), [(2, 3), (2, 3)]),
    "stack_dim_last": (lambda a, b, c: mt.stack([a, b, c], dim=-1), [(2, 3), (2, 3), (2, 3)]),
    "split_size": (lambda a: mt.stack([p.sum(1) * (i + 1) for i, p in enumerate(a.split(2, dim=1))]),
                   [(2, 5)]),
    "split_sections": (lambda a: mt.cat(mt.split(a, [1, 3], 0)[::-1]), [(4, 3)]),
    "split_one_chunk_used": (lambda a: a.split(2)[1], [(5, 2)]),
    # selection
    "where": (lambda a, b: mt.where(MASK, a, b), [(3, 4), (3, 4)]),
    "where_broadcast": (lambda a, b: mt.where(MASK, a, b), [(1, 4), (3, 1)]),
    "where_tensor_cond_scalar": (lambda a: mt.where(a > 0, a, 0.5), [away(3, 4)]),
    "masked_fill": (lambda a: a.masked_fill(MASK, -1.0), [(3, 4)]),
    "masked_fill_broadcast_mask": (lambda a: a.masked_fill(mt.tensor(MASK[0]), 0.0), [(2, 3, 4)]),
    "clip_both": (lambda a: a.clip(-0.5, 0.5), [away(3, 4, kinks=(-0.5, 0.5))]),
    "clamp_tensor_bounds": (lambda a, lo, hi: mt.clamp(a, lo, hi), [away(3, 4, kinks=(-0.5, 0.5)),
                            lambda rng: np.full((4,), -0.5) + 0.01 * np.arange(4), lambda rng: np.full((3, 1), 0.5)]),
    "clamp_crossed_bounds": (lambda a, lo, hi: a.clamp(lo, hi), [(3, 4), lambda rng: np.full((4,), 1.0),
                             lambda rng: np.full((4,), -1.0)]),
    "clip_min_only": (lambda a: a.clip(min=0.0), [away(3, 4)]),
    "clamp_max_only": (lambda a: a.clamp(max=0.0), [away(3, 4)]),
    "cast_roundtrip": (lambda a: a.float().double() * 0 + a.to("float64"), [(3,)]),
}


def _inputs(rng: np.random.Generator, specs: list) -> list:
    """Float64 tensors that require grad, drawn from the specs."""
    arrays = [spec(rng) if callable(spec) else rng.standard_normal(spec) for spec in specs]
    return [mt.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in arrays]


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_gradcheck(case: str, rng: np.random.Generator) -> None:
    fn, specs = CASES[case]
    inputs = _inputs(rng, specs)
    assert mt.gradcheck(fn, inputs)
    out = fn(*inputs)
    assert out.dtype == np.float64


TARGETS = np.array([2, 0, 1, 2])
ATTN_MASK = np.array([[True, True, False, False], [True, False, True, True], [False, True, True, True]])
PAD_MASK = mt.tensor(np.array([True, True, True, False]))[None, None, :]
ce, sdpa = F.cross_entropy, F.scaled_dot_product_attention
QKV = [(2, 3, 4), (2, 3, 4), (2, 3, 4)]
FUNCTIONAL = {
    "softmax_last": (lambda a: F.softmax(a, dim=-1), [(3, 4)]),
    "softmax_axis0": (lambda a: F.softmax(a, axis=0), [(3, 4)]),
    "softmax_method_mid": (lambda a: a.softmax(dim=1), [(2, 3, 4)]),
    "log_softmax_last": (lambda a: F.log_softmax(a, dim=-1), [(3, 4)]),
    "log_softmax_axis1": (lambda a: F.log_softmax(a, axis=1), [(2, 3, 2)]),
    "log_softmax_method": (lambda a: a.log_softmax(0), [(3, 2)]),
    "cross_entropy_mean": (lambda a: ce(a, TARGETS), [(4, 3)]),
    "cross_entropy_sum": (lambda a: ce(a, TARGETS, reduction="sum"), [(4, 3)]),
    "cross_entropy_none": (lambda a: ce(a, TARGETS, reduction="none"), [(4, 3)]),
    "cross_entropy_ignore_mean": (lambda a: ce(a, np.array([2, -100, 1, -100]), ignore_index=-100), [(4, 3)]),
    "cross_entropy_ignore_none": (lambda a: ce(a, TARGETS, ignore_index=2, reduction="none"), [(4, 3)]),
    "cross_entropy_ignore_sum": (lambda a: ce(a, TARGETS, ignore_index=0, reduction="sum"), [(4, 3)]),
    "cross_entropy_nc_d": (lambda a: ce(a, np.array([[0, 2], [1, 1]])), [(2, 3, 2)]),
    "cross_entropy_1d": (lambda a: ce(a, np.array(1)), [(3,)]),
    "cross_entropy_tensor_targets": (lambda a: ce(a, mt.tensor(TARGETS)), [(4, 3)]),
    "layer_norm_affine": (lambda x, w, b: F.layer_norm(x, 4, w, b), [(2, 3, 4), (4,), (4,)]),
    "layer_norm_plain": (lambda x: F.layer_norm(x, (4,)), [(3, 4)]),
    "add_layer_norm": (lambda x, r, w, b: F.add_layer_norm(x, r, 4, w, b), [(2, 3, 4), (2, 3, 4), (4,), (4,)]),
    "layer_norm_2d_shape": (lambda x, w, b: F.layer_norm(x, (2, 3), w, b, eps=1e-3),
                            [(2, 2, 3), (2, 3), (2, 3)]),
    "dropout_fixed_generator": (
        lambda x: F.dropout(x, 0.4, training=True, generator=np.random.default_rng(7)), [(4, 5)]),
    "dropout_eval_identity": (lambda x: F.dropout(x, 0.4, training=False), [(3,)]),
    "embedding_repeats": (lambda w: F.embedding(mt.tensor(np.array([[1, 3], [1, 1]])), w), [(4, 3)]),
    "linear_bias": (lambda x, w, b: F.linear(x, w, b), [(3, 4), (2, 4), (2,)]),
    "linear_no_bias_3d": (lambda x, w: F.linear(x, w), [(2, 3, 4), (5, 4)]),
    "linear_broadcast_input": (lambda x, w, b: F.linear(x, w, b) * 2, [(4,), (3, 4), (3,)]),
    "sdpa_plain": (lambda q, k, v: sdpa(q, k, v), QKV),
    "sdpa_cross_lengths": (lambda q, k, v: sdpa(q, k, v),
                           [(2, 2, 3), (2, 4, 3), (2, 4, 5)]),
    "sdpa_causal": (lambda q, k, v: sdpa(q, k, v, is_causal=True),
                    [(2, 2, 4, 3), (2, 2, 4, 3), (2, 2, 4, 3)]),
    "sdpa_mask": (lambda q, k, v: sdpa(q, k, v, attn_mask=ATTN_MASK), [(2, 3, 2), (2, 4, 2), (2, 4, 2)]),
    "sdpa_pad_mask_and_causal": (lambda q, k, v: sdpa(q, k, v, attn_mask=PAD_MASK & np.tril(np.ones((4, 4), bool))),
                                 [(2, 4, 3)] * 3),
    "sdpa_scale": (lambda q, k, v: sdpa(q, k, v, scale=0.3), [(3, 2), (3, 2), (3, 2)]),
    "self_attention_heads": (lambda qkv: F.self_attention(qkv, 2), [(2, 3, 12)]),
    "self_attention_pad_mask_causal": (
        lambda qkv: F.self_attention(qkv, 1, mask=PAD_MASK, is_causal=True), [(2, 4, 9)]),
    "self_attention_last_only": (
        lambda qkv: F.self_attention(qkv, 2, mask=PAD_MASK, is_causal=True, last_only=True), [(2, 4, 12)]),
    "gelu_exact": (lambda a: F.gelu(a), [(3, 4)]),
    "gelu_tanh": (lambda a: F.gelu(a, approximate="tanh"), [(3, 4)]),
    "silu": (lambda a: F.silu(a), [(3, 4)]),
    "mse_loss": (lambda a, b: F.mse_loss(a, b), [(3, 4), (3, 4)]),
    "cross_entropy_weight_smoothing_ignore": (lambda a: ce(a, np.array([2, -100, 1, 0]), weight=np.array(
        [0.5, 2.0, 1.0]), label_smoothing=0.2), [(4, 3)]),
    "cross_entropy_weight_none_nc_d": (lambda a: ce(a, np.array([[0, 2], [1, 1]]), weight=np.array(
        [0.5, 2.0, 1.0]), reduction="none"), [(2, 3, 2)]),
    "cross_entropy_probabilities": (lambda a, p: ce(a, p, label_smoothing=0.1),
                                    [(4, 3), lambda rng: rng.dirichlet(np.ones(3), 4)]),
    "sdpa_float_mask_with_grad": (lambda q, k, v, m: sdpa(q, k, v, attn_mask=m), [(2, 3, 2), (2, 4, 2), (2, 4, 2),
                                  (3, 4)]),
    "sdpa_dropout": (lambda q, k, v: sdpa(q, k, v, dropout_p=0.3, generator=np.random.default_rng(5)), QKV),
}


@pytest.mark.parametrize("case", sorted(FUNCTIONAL))
def test_functional_gradcheck(case: str, rng: np.random.Generator) -> None:
    fn, specs = FUNCTIONAL[case]
    assert mt.gradcheck(fn, _inputs(rng, specs))


def test_dropout_fixed_generator_mask_is_scaled_and_reproducible(rng: np.random.Generator) -> None:
    x = mt.tensor(rng.standard_normal((50, 40)), requires_grad=True)
    a = F.dropout(x, 0.25, generator=np.random.default_rng(3))
    b = F.dropout(x, 0.25, generator=np.random.default_rng(3))
    np.testing.assert_array_equal(a.data, b.data)
    kept = a.data != 0
    np.testing.assert_allclose(a.data[kept], x.data[kept] / 0.75)
    assert 0.65 < kept.mean() < 0.85
    a.sum().backward()
    np.testing.assert_allclose(x.grad, kept / 0.75)


def test_self_attention_equals_sdpa_on_split_heads(rng: np.random.Generator) -> None:
    """The packed op is multi-head attention: split q, k, v into heads by hand and the numbers agree."""
    B, T, H, hd = 2, 5, 3, 4
    qkv = mt.tensor(rng.standard_normal((B, T, 3 * H * hd)))
    mask = rng.random((B, 1, 1, T)) > 0.3
    mask[..., -1] = True
    out, weights = F.self_attention(qkv, H, mask=mask, is_causal=True, need_weights=True)
    heads = qkv.reshape(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
    causal = mask & np.tril(np.ones((T, T), bool))
    ref, ref_weights = sdpa(heads[0], heads[1], heads[2], attn_mask=causal, need_weights=True)
    np.testing.assert_allclose(out.data, ref.permute(0, 2, 1, 3).reshape(B, T, H * hd).data, atol=1e-12)
    np.testing.assert_allclose(weights.data, ref_weights.data, atol=1e-12)


def test_attention_weights_returned_and_rows_sum_to_one(rng: np.random.Generator) -> None:
    q, k, v = (mt.tensor(rng.standard_normal((2, 4, 3))) for _ in range(3))
    out, weights = sdpa(q, k, v, is_causal=True, need_weights=True)
    assert out.shape == (2, 4, 3) and weights.shape == (2, 4, 4)
    np.testing.assert_allclose(weights.data.sum(-1), 1.0)
    assert np.all(np.triu(weights.data[0], k=1) == 0)
    assert not weights.requires_grad


def test_every_builtin_op_is_covered() -> None:
    """Each Function in microtensor.ops appears in at least one gradcheck case above."""
    covered: set[str] = set()
    for table in (CASES, FUNCTIONAL):
        for fn, specs in table.values():
            inputs = _inputs(np.random.default_rng(0), specs)
            out = fn(*inputs)
            stack = [out._ctx]
            while stack:
                node = stack.pop()
                if node is None:
                    continue
                covered.add(type(node).__name__)
                stack.extend(p for p in node.parents if isinstance(p, mt.autograd.Function))
    expected = {name for name in mt.ops.__all__}
    assert expected - covered == set()
