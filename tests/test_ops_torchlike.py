"""PyTorch's op API on microtensor: the same line runs with T = torch and T = microtensor, with the same numbers.

Values and gradients are compared with PyTorch on both kernel backends (max/min
indices, sort/topk ties, clamp with tensor bounds, std/var/norm, the torch.*
module functions, the fast scalar powers); random functions are checked for
ranges, determinism and, for multinomial, frequencies within a statistical
tolerance; wrong dtypes and values raise errors that name the op.
"""

from __future__ import annotations

import numpy as np
import pytest

import microtensor as mt
from microtensor import backend

TOL = {np.float32: 2e-5, np.float64: 1e-10}


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def pos(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def distinct(*shape):
    """Well-separated values in random order: no ties, so every op has one right answer."""
    return lambda rng: rng.permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape) * 0.3 - 1


def ties(*shape):
    """Few distinct values (many ties) for max/min/sort/argmax index rules."""
    return lambda rng: rng.integers(0, 3, shape).astype(np.float64)


INDEX = np.array([[0, 2, 2], [1, 0, 1]])

# name: (the same function of (T, *tensors) for both libraries, input specs)
OPS = {
    "max_all": (lambda T, a: T.max(a), [distinct(3, 4)]),
    "max_dim": (lambda T, a: T.max(a, 1), [distinct(3, 4)]),
    "max_dim_keepdim": (lambda T, a: a.max(dim=0, keepdim=True), [distinct(3, 4)]),
    "max_index_by_position": (lambda T, a: a.max(-1)[1], [distinct(3, 4)]),
    "max_named_fields": (lambda T, a: a.max(-1).values * 2 + a.max(-1).indices, [distinct(3, 4)]),
    "max_ties_first_index": (lambda T, a: T.max(a, dim=1), [ties(4, 6)]),
    "min_dim": (lambda T, a: T.min(a, -1), [distinct(2, 3, 4)]),
    "min_ties": (lambda T, a: a.min(0), [ties(5, 3)]),
    "max_all_ties_share": (lambda T, a: a.max() + a.min(), [ties(3, 4)]),
    "max_of_two": (lambda T, a, b: T.max(a, b) + a.min(b), [normal(3, 4), normal(3, 4)]),
    "amax_dims": (lambda T, a: T.amax(a, dim=(0, 2), keepdim=True), [distinct(2, 3, 4)]),
    "amin_ties": (lambda T, a: a.amin(1), [ties(3, 5)]),
    "argmax_flat": (lambda T, a: T.argmax(a), [ties(3, 4)]),
    "argmax_dim_keepdim": (lambda T, a: a.argmax(1, keepdim=True), [ties(3, 4)]),
    "argmin_dim": (lambda T, a: T.argmin(a, dim=0), [ties(3, 4)]),
    "sort": (lambda T, a: T.sort(a, dim=1), [normal(3, 5)]),
    "sort_descending_dim0": (lambda T, a: a.sort(0, descending=True), [normal(4, 3)]),
    "sort_ties_stable": (lambda T, a: T.sort(a, stable=True), [ties(3, 8)]),
    "sort_ties_default": (lambda T, a: a.sort(descending=True), [ties(3, 8)]),
    "argsort": (lambda T, a: T.argsort(a, dim=0, descending=True), [ties(6, 3)]),
    "topk": (lambda T, a: T.topk(a, 3), [distinct(3, 6)]),
    "topk_smallest_dim0": (lambda T, a: a.topk(2, dim=0, largest=False), [distinct(5, 3)]),
    "topk_values_with_ties": (lambda T, a: T.topk(a, 4).values.detach(), [ties(3, 7)]),  # tied picks differ
    "cumsum": (lambda T, a: T.cumsum(a, 1), [normal(3, 4)]),
    "cumsum_dim0": (lambda T, a: a.cumsum(dim=0), [normal(3, 2, 2)]),
    "gather": (lambda T, a: T.gather(a, 1, T.tensor(INDEX)), [normal(2, 4)]),
    "gather_dim0_smaller": (lambda T, a: a.gather(0, T.tensor(INDEX)), [normal(3, 4)]),
    "clamp_numbers": (lambda T, a: T.clamp(a, -0.5, 0.5), [normal(3, 4)]),
    "clamp_min_only": (lambda T, a: a.clamp(min=0.1), [normal(3, 4)]),
    "clip_max_only": (lambda T, a: T.clip(a, max=0.2), [normal(3, 4)]),
    "clamp_tensor_bounds": (lambda T, a, lo, hi: T.clamp(a, lo, hi), [normal(3, 4), normal(4), normal(3, 1)]),
    "clamp_min_tensor": (lambda T, a, lo: a.clamp(min=lo), [normal(3, 4), normal(3, 4)]),
    "maximum_ties": (lambda T, a, b: T.maximum(a, b) * 3 + T.minimum(a, b), [ties(3, 4), ties(3, 4)]),
    "std": (lambda T, a: a.std(), [normal(3, 4)]),
    "std_dim": (lambda T, a: T.std(a, 1), [normal(3, 4)]),
    "std_dims_keepdim": (lambda T, a: a.std(dim=(0, 2), keepdim=True), [normal(2, 3, 4)]),
    "var_unbiased_false": (lambda T, a: a.var(0, unbiased=False), [normal(3, 4)]),
    "var_correction_keepdim": (lambda T, a: T.var(a, dim=1, correction=0, keepdim=True), [normal(3, 4)]),
    "norm": (lambda T, a: a.norm(), [normal(3, 4)]),
    "norm_dim": (lambda T, a: T.norm(a, dim=1), [normal(3, 4)]),
    "norm_fro_keepdim": (lambda T, a: a.norm(p="fro", dim=(0, 1), keepdim=True), [normal(2, 3, 4)]),
    "norm_p1": (lambda T, a: a.norm(p=1, dim=0), [normal(3, 4)]),
    "norm_inf": (lambda T, a: a.norm(float("inf")), [distinct(3, 4)]),
    "norm_p3_keepdim": (lambda T, a: a.norm(3, dim=1, keepdim=True), [normal(3, 4)]),
    "tril": (lambda T, a: T.tril(a), [normal(3, 4)]),
    "triu_diagonal": (lambda T, a: a.triu(1) + T.triu(a, diagonal=-1), [normal(2, 4, 3)]),
    "tril_negative": (lambda T, a: a.tril(diagonal=-1), [normal(4, 4)]),
    # torch.* module functions over the elementwise ops and reductions
    "exp": (lambda T, a: T.exp(a), [normal(3, 4)]),
    "log": (lambda T, a: T.log(a), [pos(3, 4)]),
    "sqrt": (lambda T, a: T.sqrt(a), [pos(3, 4)]),
    "tanh_sigmoid_relu_abs": (lambda T, a: T.tanh(a) + T.sigmoid(a) + T.relu(a) * T.abs(a), [normal(3, 4)]),
    "pow_int": (lambda T, a: T.pow(a, 3), [normal(3, 4)]),
    "pow_half": (lambda T, a: T.pow(a, 2.5), [pos(3, 4)]),
    "add_sub_mul_div_neg": (lambda T, a, b: T.div(T.mul(T.add(a, b), T.sub(a, b)), b) + T.neg(a), [
        normal(3, 4), pos(3, 4)]),
    "sum_mean": (lambda T, a: T.sum(a, 1) + T.mean(a, dim=1), [normal(3, 4)]),
    "matmul_mm_bmm": (lambda T, a, b: T.matmul(a, b).sum(0) + T.mm(a[0], b[0]) + T.bmm(a, b)[1],
                      [normal(2, 3, 4), normal(2, 4, 5)]),
    "softmax_log_softmax": (lambda T, a: T.softmax(a, dim=-1) + T.log_softmax(a, 0), [normal(3, 4)]),
    "shape_functions": (lambda T, a: T.flatten(T.transpose(T.reshape(a, (2, 2, 3)), 0, 2), 1).unsqueeze(0)
                        + T.squeeze(T.unsqueeze(a.reshape(3, 4), 0), 0)[0].sum(), [normal(3, 4)]),
    "masked_fill": (lambda T, a: T.masked_fill(a, a > 0.5, -1.0), [normal(3, 4)]),
    "broadcast_to_clone_t": (lambda T, a: T.broadcast_to(T.clone(a), (2, 3, 4)).sum(0) @ T.t(a) * T.numel(a),
                             [normal(3, 4)]),
    "sin_cos": (lambda T, a: T.sin(a) * a.cos(), [normal(3, 4)]),
    "square_rsqrt": (lambda T, a: T.square(a) + a.rsqrt(), [pos(3, 4)]),
    "logsumexp": (lambda T, a: T.logsumexp(a * 50, 1) + a.logsumexp(dim=(0, 1), keepdim=True), [normal(3, 4)]),
    "isnan_isinf_isfinite_any_all": (lambda T, a: T.stack([T.isnan(a).any(1), a.isinf().all(1), T.isfinite(a).all(1),
                                                            T.any(a > 1, dim=1), T.all(a > -3, 1)]), [normal(3, 4)]),
}
POWERS = {  # the fast path (integers and half-integers up to 16) and numpy's pow beyond it
    "integers": ([0, 1, 2, 3, 4, 5, -1, -2, -3, 3.0, 16], pos(3, 4)),
    "halves": ([0.5, -0.5, 1.5, 2.5, -1.5, 7.5], pos(3, 4)),
    "negative_base": ([2, 3, -1, 4.0, -3], normal(3, 4)),
    "numpy_pow": ([1.3, 16.5, -17], pos(3, 4)),
}
for _name, (_exponents, _spec) in POWERS.items():
    OPS[f"pow_{_name}"] = (lambda T, a, es=tuple(_exponents): T.stack([a**e for e in es]), [_spec])


def _arrays(out) -> list:
    """The tensors of a result, as a list (named tuples give values then indices)."""
    return list(out) if isinstance(out, tuple) else [out]


@pytest.fixture
def float32_kernels(request):
    """The C backend for float32 cases and the numpy one for every dtype (C kernels take float32 only)."""
    name, dtype = request.param
    before = backend.name()
    try:
        backend.use(name)
    except ValueError:
        pytest.skip("C extension not built")
    yield dtype
    backend.use(before)


@pytest.mark.parametrize("float32_kernels", [("numpy", np.float32), ("numpy", np.float64), ("c", np.float32)],
                         ids=["numpy-float32", "numpy-float64", "c-float32"], indirect=True)
@pytest.mark.parametrize("case", sorted(OPS))
def test_op_matches_torch(case: str, float32_kernels, torch, rng) -> None:
    dtype = float32_kernels
    fn, specs = OPS[case]
    arrays = [np.asarray(spec(rng), dtype=dtype) for spec in specs]
    ours = [mt.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = _arrays(fn(mt, *ours)), _arrays(fn(torch, *theirs))
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        r = r.detach().numpy()
        assert o.shape == r.shape and o.dtype == r.dtype, f"{case}: {o.shape} {o.dtype} vs {r.shape} {r.dtype}"
        np.testing.assert_allclose(o.data, r, rtol=TOL[dtype], atol=TOL[dtype])
    if not out[0].requires_grad:
        return
    g = rng.standard_normal(out[0].shape).astype(dtype)
    out[0].backward(g)
    ref[0].backward(torch.tensor(g))
    for i, (o, r) in enumerate(zip(ours, theirs)):
        expected = np.zeros(arrays[i].shape) if r.grad is None else r.grad.numpy()
        got = np.zeros(arrays[i].shape) if o.grad is None else np.asarray(o.grad)
        np.testing.assert_allclose(got, expected, rtol=TOL[dtype], atol=TOL[dtype], err_msg=f"{case} input {i}")


def test_topk_ties_pick_the_lowest_indices_and_pytorchs_values(torch, rng) -> None:
    """PyTorch's CPU topk order among tied values is unspecified; ours is sort's stable order (lowest index first)."""
    x = rng.integers(0, 4, (6, 30)).astype(np.float32)
    for largest in (True, False):
        values, indices = mt.topk(mt.tensor(x), 7, largest=largest)
        ref = torch.topk(torch.tensor(x), 7, largest=largest)
        np.testing.assert_array_equal(values.data, ref.values.numpy())
        stable = torch.sort(torch.tensor(x), descending=largest, stable=True).indices[:, :7]
        np.testing.assert_array_equal(indices.data, stable.numpy())
        np.testing.assert_array_equal(np.take_along_axis(x, indices.data, 1), values.data)


def test_sort_puts_nan_last_ascending_and_first_descending(torch) -> None:
    x = np.array([[2.0, np.nan, -1.0, 2.0, np.inf, -np.inf]], np.float32)
    for descending in (False, True):
        ours = mt.sort(mt.tensor(x), descending=descending)
        ref = torch.sort(torch.tensor(x), descending=descending, stable=True)
        np.testing.assert_array_equal(ours.values.data, ref.values.numpy())
        np.testing.assert_array_equal(ours.indices.data, ref.indices.numpy())
    np.testing.assert_array_equal(mt.tensor(x).max(1).indices.data, torch.tensor(x).max(1).indices.numpy())


def test_max_with_dim_is_a_named_tuple_that_unpacks() -> None:
    x = mt.tensor([[1.0, 5.0, 5.0], [7.0, 0.0, 7.0]])
    values, indices = x.max(-1)
    assert type(x.max(-1)).__name__ == "max" and x.max(-1)._fields == ("values", "indices")
    np.testing.assert_array_equal(values.data, [5.0, 7.0])
    np.testing.assert_array_equal(indices.data, [1, 0])
    np.testing.assert_array_equal(x.max(-1)[1].data, [1, 0])
    assert indices.dtype == np.int64 and not indices.requires_grad
    assert isinstance(x.max(), mt.Tensor) and x.max().item() == 7.0


SPECIAL = np.array([[-np.inf, np.inf, 0.0, -0.0, np.nan, -1.0, 2.0, 1e30]], np.float32)
EDGE = {
    "powers_of_specials": (lambda T, x: T.cat([x**e for e in (0.5, 1.5, -1.5, 2.5, 2, 3, -1, -2, 0, 1)]), SPECIAL),
    "var_std_of_huge": (lambda T, x: T.stack([x.var(), x.var(1)[0], x.std(), T.std(x, 1)[0]]),
                        np.array([[1e30, -1e30, 3e30]], np.float32)),
    "max_sort_cumsum_of_0d": (lambda T, x: T.stack([T.max(x, 0).values, T.amax(x, 0), x.sort(0).values,
                                                    x.cumsum(0), T.argmax(x, 0).float(), x.topk(1).values]),
                              np.array(1.5, np.float32)),
    "max_sort_of_nan_inf": (lambda T, x: T.cat([x.max(1).values, x.min(1).indices.float(), x.sort(1).values[0],
                                                x.argsort(1, descending=True).float()[0], x.cumsum(1)[0]]), SPECIAL),
    "clamp_nan": (lambda T, x: x.clamp(-1.0, 1.0), SPECIAL),
    "maximum_nan": (lambda T, x: T.maximum(x, T.zeros(1)), SPECIAL),
    "norm_inf_values": (lambda T, x: T.stack([x[:, :4].norm(), x[:, 5:7].norm(1), x[:, :3].norm(float("inf"))]),
                        SPECIAL),
    "logsumexp_of_inf_rows": (lambda T, x: T.logsumexp(x, 1), np.array([[-np.inf] * 3, [np.inf, 1, 2], [np.nan, 0, 1]],
                                                                         np.float32)),
    "empty_rows": (lambda T, x: T.cat([x.cumsum(1).sum(1), x.sort(1).values.sum(1), x.norm(dim=1)]),
                   np.zeros((0, 3), np.float32)),
    "multinomial_no_rows": (lambda T, x: T.multinomial(x, 2), np.zeros((0, 3), np.float32)),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy warns about NaN and inf where PyTorch does not
@pytest.mark.parametrize("case", sorted(EDGE))
def test_nan_inf_0d_and_empty_inputs_match_torch(case: str, kernels, torch) -> None:
    fn, x = EDGE[case]
    ours = np.asarray(fn(mt, mt.tensor(x)).data, dtype=np.float64)
    ref = fn(torch, torch.tensor(x)).detach().numpy().astype(np.float64)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=0)  # NaN where PyTorch has NaN


def test_allclose_and_unsorted_topk_match_torch(torch, rng) -> None:
    a = rng.standard_normal((3, 4)).astype(np.float32)
    for b, kwargs in [(a + 1e-6, {}), (a + 1e-3, {}), (a + 1e-3, {"atol": 1e-2}), (a * 1.01, {"rtol": 0.02})]:
        assert mt.allclose(mt.tensor(a), mt.tensor(b), **kwargs) == torch.allclose(
            torch.tensor(a), torch.tensor(b), **kwargs)
    nan = np.array([1.0, np.nan])
    assert mt.tensor(nan).allclose(mt.tensor(nan), equal_nan=True) and not mt.allclose(mt.tensor(nan), nan)
    values, indices = mt.topk(mt.tensor(a), 2, sorted=False)
    ref = torch.topk(torch.tensor(a), 2, sorted=False)
    np.testing.assert_array_equal(np.sort(values.data), np.sort(ref.values.numpy()))
    np.testing.assert_array_equal(np.sort(indices.data), np.sort(ref.indices.numpy()))


# ---- creation and random ---------------------------------------------------------------------


def test_creation_shapes_dtypes_and_values_match_torch(torch) -> None:
    pairs = [
        (mt.zeros(2, 3), torch.zeros(2, 3)),
        (mt.zeros((2, 3)), torch.zeros((2, 3))),
        (mt.ones([2, 1], dtype=mt.float64), torch.ones([2, 1], dtype=torch.float64)),
        (mt.full((2, 2), 3), torch.full((2, 2), 3)),
        (mt.full((2,), 1.5), torch.full((2,), 1.5)),
        (mt.full((2,), True), torch.full((2,), True)),
        (mt.eye(3), torch.eye(3)),
        (mt.eye(2, 4, dtype=mt.int64), torch.eye(2, 4, dtype=torch.int64)),
        (mt.linspace(-1, 2, 7), torch.linspace(-1, 2, 7)),
        (mt.arange(5), torch.arange(5)),
        (mt.arange(5.0), torch.arange(5.0)),
        (mt.arange(1, 10, 3), torch.arange(1, 10, 3)),
        (mt.arange(0, 1, 0.25), torch.arange(0, 1, 0.25)),
        (mt.arange(10, 0, -3), torch.arange(10, 0, -3)),
        (mt.arange(4, dtype=mt.float64), torch.arange(4, dtype=torch.float64)),
        (mt.tril(mt.ones(3, 3)), torch.tril(torch.ones(3, 3))),
        (mt.ones(2, 3).triu(), torch.ones(2, 3).triu()),
        (mt.empty(2, 0, 3), torch.empty(2, 0, 3)),
        (mt.full_like(mt.zeros(2), 7), torch.full_like(torch.zeros(2), 7)),
    ]
    for ours, ref in pairs:
        assert str(ours.dtype) == str(ref.dtype).replace("torch.", "") and ours.shape == tuple(ref.shape)
        np.testing.assert_allclose(ours.data, ref.numpy(), rtol=1e-6)
    assert mt.zeros(2, device="cpu", requires_grad=True).requires_grad
    assert mt.randn(2, 3, device=mt.device("cpu")).shape == (2, 3)


def test_generator_and_manual_seed_make_every_random_function_repeat() -> None:
    def draw(generator=None):
        return [
            mt.rand(3, generator=generator).data, mt.randn(2, 2, generator=generator).data,
            mt.randint(0, 100, (5,), generator=generator).data, mt.randperm(6, generator=generator).data,
            mt.multinomial(mt.tensor([0.2, 0.3, 0.5]), 2, generator=generator).data,
        ]

    g = mt.Generator()
    first, second = draw(g.manual_seed(7)), draw(g.manual_seed(7))
    assert all(np.array_equal(a, b) for a, b in zip(first, second)) and g.initial_seed() == 7
    mt.manual_seed(3)
    a = draw() + [mt.nn.functional.dropout(mt.ones(50), 0.5).data]
    mt.manual_seed(3)
    b = draw() + [mt.nn.functional.dropout(mt.ones(50), 0.5).data]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(draw(mt.Generator().manual_seed(8))[0], first[0])
    assert isinstance(mt.manual_seed(0), mt.Generator)


def test_randint_range_shape_and_dtype() -> None:
    g = mt.Generator().manual_seed(0)
    x = mt.randint(3, 10, (4000,), generator=g)
    assert x.dtype == np.int64 and x.shape == (4000,)
    assert set(np.unique(x.data)) == set(range(3, 10))
    assert mt.randint(5, (2, 3)).shape == (2, 3) and mt.randint(2, size=(3,)).data.max() < 2
    assert mt.randint(low=4, high=6, size=(50,)).data.min() == 4 and mt.randint(3, 4, size=[2]).tolist() == [3, 3]
    assert mt.randint(-2, 2, (10,), dtype=mt.float32).dtype == np.float32
    assert sorted(mt.randperm(9, generator=g).data.tolist()) == list(range(9))


def test_multinomial_frequencies_with_replacement(torch) -> None:
    p = np.array([[0.1, 0.2, 0.3, 0.4, 0.0], [5.0, 0.0, 1.0, 2.0, 2.0]])  # rows need not sum to 1
    n = 20000
    draws = mt.multinomial(mt.tensor(p), n, replacement=True, generator=mt.Generator().manual_seed(1))
    ref = torch.multinomial(torch.tensor(p), n, replacement=True, generator=torch.Generator().manual_seed(1))
    assert draws.shape == (2, n) and draws.dtype == np.int64
    expected = p / p.sum(1, keepdims=True)
    for samples in (draws.data, ref.numpy()):
        freq = np.stack([np.bincount(row, minlength=5) / n for row in samples])
        sigma = np.sqrt(expected * (1 - expected) / n)
        assert np.all(np.abs(freq - expected) <= 5 * sigma + 1e-12)
    assert not np.any(draws.data[0] == 4) and not np.any(draws.data[1] == 1)


def test_multinomial_without_replacement_draws_in_sequence(torch) -> None:
    """P(first = i, second = j) = p_i * p_j / (1 - p_i): both libraries within 5 sigma over many draws."""
    p = np.array([0.5, 0.3, 0.2, 0.0])
    rows = 20000
    probs = np.tile(p, (rows, 1))
    ours = mt.multinomial(mt.tensor(probs), 2, generator=mt.Generator().manual_seed(2)).data
    ref = torch.multinomial(torch.tensor(probs), 2, generator=torch.Generator().manual_seed(2)).numpy()
    exact = np.array([[p[i] * p[j] / (1 - p[i]) if i != j else 0.0 for j in range(4)] for i in range(4)])
    for pairs in (ours, ref):
        assert np.all(pairs[:, 0] != pairs[:, 1]) and not np.any(pairs == 3)
        freq = np.zeros((4, 4))
        np.add.at(freq, (pairs[:, 0], pairs[:, 1]), 1 / rows)
        assert np.all(np.abs(freq - exact) <= 5 * np.sqrt(exact * (1 - exact) / rows) + 1e-12)
    every = mt.multinomial(mt.tensor(p), 3).data
    assert sorted(every.tolist()) == [0, 1, 2]


# ---- dtypes and errors ----------------------------------------------------------------------


def test_result_dtypes_follow_pytorch_promotion(torch) -> None:
    i, f64 = np.array([1, 2, 3]), np.array([0.5, 1.0, 2.0])
    b = np.array([True, False, True])
    cases = [
        lambda T: T.tensor(i) * 1.5,
        lambda T: T.tensor(i) / T.tensor(i),
        lambda T: T.tensor(i) / 2,
        lambda T: T.tensor(i) + T.tensor(f64.astype(np.float32)),
        lambda T: T.tensor(f64.astype(np.float32)) + T.tensor(f64),
        lambda T: T.tensor(i) ** 2,
        lambda T: T.tensor(i) ** 0.5,
        lambda T: T.tensor(b) * 1.5,
        lambda T: T.tensor(b) + T.tensor(b),
        lambda T: T.exp(T.tensor(i)),
        lambda T: T.sqrt(T.tensor(b)),
        lambda T: T.tensor(i).cumsum(0),
        lambda T: T.tensor(b).cumsum(0),
        lambda T: T.tensor(i).clamp(min=2),
        lambda T: T.tensor(i).clamp(min=1.5),
        lambda T: T.tensor(i).max(0).values,
        lambda T: T.tensor(i).sum(),
        lambda T: T.tensor(f64.astype(np.float32)) * np.float64(2.0),
        lambda T: T.tensor(f64.astype(np.float32)) * T.tensor(2.0, dtype=T.float64),
        lambda T: T.tensor(i) * T.tensor(2.0, dtype=T.float64),
        lambda T: T.tensor(3.0, dtype=T.float32) + T.tensor(2.0, dtype=T.float64),
        lambda T: T.tensor(i) * T.tensor(2),
    ]
    for k, case in enumerate(cases):
        ours, ref = case(mt), case(torch)
        assert str(ours.dtype) == str(ref.dtype).replace("torch.", ""), f"case {k}: {ours.dtype} vs {ref.dtype}"
        np.testing.assert_allclose(ours.data, ref.numpy(), rtol=1e-6)


BAD = [
    ("mean_int", lambda: mt.tensor([1, 2]).mean(), TypeError, r"mean: expected a float32 or float64 .*int64"),
    ("var_int", lambda: mt.tensor([1, 2]).var(), TypeError, r"var: .*int64"),
    ("std_bool", lambda: mt.std(mt.tensor([True, False])), TypeError, r"std: .*bool"),
    ("norm_int", lambda: mt.tensor([1, 2]).norm(), TypeError, r"norm: .*int64"),
    ("gelu_int", lambda: mt.ops.Gelu.apply(mt.tensor([1, 2])), TypeError, r"gelu: .*int64"),
    ("exp_complex", lambda: mt.ops.Exp.apply(np.array([1j])), TypeError, r"exp: .*complex128"),
    ("add_complex", lambda: mt.ones(2) + np.array([1j, 2j]), TypeError, r"add: .*complex128"),
    ("mul_object", lambda: mt.ones(2) * np.array([None, 1], dtype=object), TypeError, r"mul: .*object"),
    ("sub_bool", lambda: mt.tensor([True]) - mt.tensor([False]), TypeError, r"sub: not supported for dtypes bool"),
    ("neg_bool", lambda: -mt.tensor([True]), TypeError, r"neg: expected a float or integer tensor, got dtype bool"),
    ("pow_int_negative", lambda: mt.tensor([2]) ** -1, ValueError, r"pow: Integers to negative integer powers"),
    ("add_shapes", lambda: mt.ones(2, 3) + mt.ones(4), ValueError, r"add: shapes \(2, 3\) and \(4,\)"),
    ("matmul_int_float", lambda: mt.ones(2, 2) @ mt.tensor([[1, 2], [3, 4]]), TypeError, r"matmul: .*int64"),
    ("max_dim_range", lambda: mt.ones(2, 3).max(2), ValueError, r"max: axis 2 is out of range"),
    ("max_dim_tuple", lambda: mt.ones(2, 3).max((0, 1)), TypeError, r"max: dim must be one int.*amax"),
    ("max_empty_dim", lambda: mt.ones(2, 0).max(1), ValueError, r"max: cannot reduce dim 1 of size 0"),
    ("argmax_empty", lambda: mt.ones(0).argmax(), ValueError, r"argmax: cannot reduce an empty tensor"),
    ("argmax_bool", lambda: mt.tensor([True]).argmax(), TypeError, r"argmax: not supported for dtype bool"),
    ("max_complex", lambda: mt.tensor(np.array([1j])).max(0), TypeError, r"max: not supported for dtype complex"),
    ("topk_k", lambda: mt.ones(2, 3).topk(4), ValueError, r"topk: k must be an integer in \[0, 3\]"),
    ("sort_dim", lambda: mt.ones(2, 3).sort(dim=2), ValueError, r"sort: axis 2 is out of range"),
    ("cumsum_dim", lambda: mt.ones(2).cumsum(1), ValueError, r"cumsum: axis 1 is out of range"),
    ("gather_range", lambda: mt.ones(2, 3).gather(1, mt.tensor([[3]])), ValueError, r"gather: index values .*\[0, 3\)"),
    ("gather_negative", lambda: mt.ones(2, 3).gather(1, mt.tensor([[-1]])), ValueError, r"gather: index values"),
    ("gather_float_index", lambda: mt.ones(2, 3).gather(1, mt.ones(2, 3)), TypeError, r"gather: index must be an int"),
    ("gather_ndim", lambda: mt.ones(2, 3).gather(1, mt.tensor([1])), ValueError, r"gather: index of shape \(1,\)"),
    ("clamp_none", lambda: mt.clamp(mt.ones(2)), ValueError, r"clamp: at least one of min and max"),
    ("clamp_bool", lambda: mt.tensor([True]).clamp(0, 1), TypeError, r"clamp: .*bool"),
    ("clamp_shapes", lambda: mt.ones(2, 3).clamp(mt.ones(4)), ValueError, r"clamp: shapes \(2, 3\) and \(4,\)"),
    ("var_both", lambda: mt.ones(3).var(unbiased=True, correction=0), TypeError, r"var: pass either unbiased or"),
    ("norm_nuc", lambda: mt.ones(2, 2).norm("nuc"), ValueError, r"norm: p must be 'fro' or a number"),
    ("tril_1d", lambda: mt.ones(3).tril(), ValueError, r"tril: .* at least 2 dimensions, got shape \(3,\)"),
    ("zeros_negative", lambda: mt.zeros(2, -1), ValueError, r"zeros: sizes must be non-negative integers"),
    ("zeros_cuda", lambda: mt.zeros(2, device="cuda"), ValueError, r"zeros: device 'cuda' is not available"),
    ("randn_float_size", lambda: mt.randn(2.5), ValueError, r"randn: sizes must be non-negative integers"),
    ("arange_step0", lambda: mt.arange(0, 5, 0), ValueError, r"arange: need finite start, end and a nonzero step"),
    ("arange_direction", lambda: mt.arange(5, 0, 1), ValueError, r"arange: step 1 points away from end 0"),
    ("arange_nan", lambda: mt.arange(float("nan")), ValueError, r"arange: need finite"),
    ("randint_empty_range", lambda: mt.randint(5, 5, (2,)), ValueError, r"randint: need integers low < high"),
    ("randint_no_size", lambda: mt.randint(5), TypeError, r"randint: expected randint\(high, size\)"),
    ("randint_too_many", lambda: mt.randint(1, 2, 3, (4,)), TypeError, r"randint: expected randint\(high, size\)"),
    ("multinomial_negative", lambda: mt.multinomial(mt.tensor([0.5, -0.1]), 1), ValueError,
     r"multinomial: weights must be finite and non-negative"),
    ("multinomial_zero_row", lambda: mt.multinomial(mt.tensor([[0.5, 0.5], [0.0, 0.0]]), 1, True), ValueError,
     r"multinomial: every row of weights needs a positive sum"),
    ("multinomial_too_many", lambda: mt.multinomial(mt.tensor([0.5, 0.0, 0.5]), 3), ValueError,
     r"multinomial: cannot draw 3 samples without replacement from a row with only 2 nonzero"),
    ("multinomial_int", lambda: mt.multinomial(mt.tensor([1, 2]), 1), TypeError,
     r"multinomial: weights must be float32 or float64, got dtype int64"),
    ("multinomial_3d", lambda: mt.multinomial(mt.ones(2, 2, 2), 1), ValueError, r"multinomial: .*1-D or 2-D"),
    ("multinomial_samples", lambda: mt.multinomial(mt.ones(2), 0), ValueError, r"multinomial: num_samples must be"),
    ("generator_seed", lambda: mt.Generator().manual_seed(-1), ValueError, r"manual_seed: seed must be a non-negative"),
    ("generator_device", lambda: mt.Generator("cuda"), ValueError, r"Generator: device 'cuda' is not available"),
]


@pytest.mark.parametrize("case", [pytest.param(c[1:], id=c[0]) for c in BAD])
def test_bad_input_raises_a_clear_error(case) -> None:
    fn, error, pattern = case
    with pytest.raises(error, match=pattern):
        fn()
