"""microtensor.utils.data against torch.utils.data: collation, batching, shuffling, splits, errors."""

from __future__ import annotations

import itertools
from collections import namedtuple

import numpy as np
import pytest

import microtensor as mt
from microtensor.utils.data import (
    DataLoader,
    Dataset,
    RandomSampler,
    Subset,
    TensorDataset,
    default_collate,
    random_split,
)

Pair = namedtuple("Pair", "x y")


def samples(lib=mt) -> list:
    return [(np.full(2, i, np.float32), i, 0.5 * i, i % 2 == 0, f"s{i}", {"a": np.int16(i)}, lib.ones(2, 2) * i,
             Pair(i, [i, i]))
            for i in range(3)]


def describe(x) -> object:
    """Containers, and (kind, shape, dtype name) of each leaf, the same for torch and microtensor."""
    if isinstance(x, dict):
        return {k: describe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return (type(x).__name__ if hasattr(x, "_fields") else "seq", [describe(v) for v in x])
    if hasattr(x, "shape"):
        return ("tensor", tuple(x.shape), str(x.dtype).replace("torch.", ""), np.asarray(x).tolist())
    return x


def test_default_collate_matches_pytorch(torch) -> None:
    from torch.utils.data import default_collate as torch_collate

    ours, theirs = describe(default_collate(samples())), describe(torch_collate(samples(torch)))
    assert ours[1][2] == ("tensor", (3,), "float32", [0.0, 0.5, 1.0])  # PyTorch: float64 (see the docstring)
    assert theirs[1][2] == ("tensor", (3,), "float64", [0.0, 0.5, 1.0])
    ours[1][2] = theirs[1][2]
    assert ours == theirs


def test_data_loader_batches_like_pytorch(torch) -> None:
    x, y = np.arange(20, dtype=np.float32).reshape(10, 2), np.arange(10)
    for kwargs in ({"batch_size": 4}, {"batch_size": 4, "drop_last": True}, {"batch_size": 10}, {}):
        ours = DataLoader(TensorDataset(mt.tensor(x), mt.tensor(y)), **kwargs)
        theirs = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), **kwargs)
        assert len(ours) == len(theirs)
        for (a, b), (ta, tb) in itertools.zip_longest(ours, theirs):
            assert a.dtype == np.float32 and b.dtype == np.int64
            np.testing.assert_array_equal(a, ta.numpy())
            np.testing.assert_array_equal(b, tb.numpy())


def test_shuffle_is_a_fresh_permutation_each_pass_and_follows_the_generator() -> None:
    class Squares(Dataset):
        def __len__(self) -> int:
            return 9

        def __getitem__(self, i: int) -> dict:
            return {"i": i, "sq": np.float32(i * i)}

    def passes(seed: int) -> list[list[int]]:
        loader = DataLoader(Squares(), batch_size=4, shuffle=True, generator=mt.Generator().manual_seed(seed))
        return [[int(v) for batch in loader for v in batch["i"]] for _ in range(2)]

    first, second = passes(0)
    assert sorted(first) == sorted(second) == list(range(9)) and first != second
    assert passes(0) == [first, second] and passes(1) != [first, second]
    batch = next(iter(DataLoader(Squares(), batch_size=4)))
    np.testing.assert_array_equal(batch["sq"], [0.0, 1.0, 4.0, 9.0])


def test_random_split_lengths_match_pytorch(torch) -> None:
    for lengths in ([0.7, 0.2, 0.1], [0.5, 0.5], [3, 8], [0.34, 0.33, 0.33]):
        ours = random_split(list(range(11)), lengths, generator=mt.Generator().manual_seed(0))
        theirs = torch.utils.data.random_split(list(range(11)), lengths)
        assert [len(s) for s in ours] == [len(s) for s in theirs]
        items = [s[i] for s in ours for i in range(len(s))]
        assert sorted(items) == list(range(11))  # disjoint and complete
        assert all(isinstance(s, Subset) for s in ours)


def test_random_sampler_with_replacement_is_lazy() -> None:
    sampler = RandomSampler(list(range(5)), replacement=True, num_samples=10**10, generator=mt.Generator())
    draws = list(itertools.islice(iter(sampler), 2000))
    assert len(sampler) == 10**10 and set(draws) == set(range(5))
    loader = DataLoader(list(range(5)), batch_size=3, sampler=RandomSampler(list(range(5)), generator=mt.Generator()))
    assert sorted(int(v) for batch in loader for v in batch) == list(range(5)) and len(loader) == 2


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        DataLoader([1, 2], batch_size=0)
    with pytest.raises(ValueError, match="sampler and shuffle=True cannot be used together"):
        DataLoader([1, 2], shuffle=True, sampler=[0, 1])
    with pytest.raises(ValueError, match=r"lengths \[2, 2\] must be counts that sum to the dataset's length 5"):
        random_split(list(range(5)), [2, 2])
    with pytest.raises(ValueError, match=r"got shapes \[\(3,\), \(4,\)\]"):
        TensorDataset(mt.zeros(3), mt.zeros(4))
    with pytest.raises(TypeError, match="found object"):
        default_collate([object(), object()])
    with pytest.raises(ValueError, match=r"samples have \[1, 2\] elements"):
        default_collate([(1,), (1, 2)])
    with pytest.raises(TypeError, match="dtype <U1 cannot be batched"):
        default_collate([np.array(["a"]), np.array(["b"])])
