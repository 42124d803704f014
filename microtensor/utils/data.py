"""Datasets and batching as `torch.utils.data`: Dataset, TensorDataset, Subset, random_split, samplers, DataLoader.

Loading runs in the calling process: `num_workers` and `pin_memory` are accepted and change nothing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..combine import stack
from ..random import resolve
from ..tensor import Tensor


class Dataset:
    """A map-style dataset: subclasses define `__getitem__(index)` and `__len__()`."""

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")


class TensorDataset(Dataset):
    """Rows of tensors that share their first dimension: item i is `(t[i] for t in tensors)`."""

    def __init__(self, *tensors: Tensor) -> None:
        if not tensors or any(t.shape[:1] != tensors[0].shape[:1] for t in tensors):
            raise ValueError(f"TensorDataset: needs tensors with one first dimension, got shapes "
                             f"{[tuple(t.shape) for t in tensors]}")
        self.tensors = tensors

    def __getitem__(self, index: int) -> tuple:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The items of `dataset` at `indices`, in that order."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]

    def __len__(self) -> int:
        return len(self.indices)


def random_split(
    dataset: Any, lengths: Sequence[int | float], generator: np.random.Generator | None = None
) -> list[Subset]:
    """Disjoint random Subsets of the given lengths, or of the given fractions (the remainder goes to the first)."""
    n = len(dataset)
    if lengths and all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1.0):
        if any(not 0 <= x <= 1 for x in lengths):
            raise ValueError(f"random_split: fractions must be in [0, 1], got {list(lengths)}")
        sizes = [math.floor(n * x) for x in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
    else:
        sizes = list(lengths)
    if any(isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 0 for x in sizes) or sum(sizes) != n:
        raise ValueError(f"random_split: lengths {list(lengths)} must be counts that sum to the dataset's length "
                         f"{n}, or fractions that sum to 1")
    order = resolve(generator).permutation(n).tolist()
    bounds = np.cumsum([0, *sizes]).tolist()
    return [Subset(dataset, order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


class SequentialSampler:
    """Indices 0..n-1 in order."""

    def __init__(self, data_source: Any) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler:
    """Random indices: a fresh permutation per pass, or draws with replacement; `num_samples` of them."""

    def __init__(
        self,
        data_source: Any,
        replacement: bool = False,
        num_samples: int | None = None,
        generator: np.random.Generator | None = None,
    ) -> None:
        self.data_source, self.replacement, self.generator = data_source, replacement, generator
        self.num_samples = len(data_source) if num_samples is None else num_samples
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(f"RandomSampler: num_samples must be a positive integer, got {num_samples!r}")

    def __iter__(self) -> Iterator[int]:
        rng, n, left = resolve(self.generator), len(self.data_source), self.num_samples
        while left > 0:  # in chunks, so that num_samples=10**10 (minGPT's trainer) costs nothing up front
            chunk = rng.integers(0, n, min(left, 1024)) if self.replacement else rng.permutation(n)[:left]
            left -= len(chunk)
            yield from chunk.tolist()

    def __len__(self) -> int:
        return self.num_samples


def default_collate(batch: Sequence[Any]) -> Any:
    """Stack a list of samples into a batch: tensors and arrays stacked, ints to int64, floats to float32
    (PyTorch gives float64; float32 is microtensor's default), bools to bool, containers element by element."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return stack(list(batch))
    if isinstance(elem, (np.ndarray, np.generic)):
        if elem.dtype.kind not in "biuf":
            raise TypeError(f"default_collate: arrays of dtype {elem.dtype} cannot be batched into a tensor")
        return Tensor(np.stack(batch))
    if isinstance(elem, bool):
        return Tensor(np.array(batch, dtype=np.bool_))
    if isinstance(elem, numbers.Integral):
        return Tensor(np.array(batch, dtype=np.int64))
    if isinstance(elem, numbers.Real):
        return Tensor(np.array(batch, dtype=np.float32))
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, Mapping):
        return {key: default_collate([sample[key] for sample in batch]) for key in elem}
    if isinstance(elem, (tuple, list)):
        if any(len(sample) != len(elem) for sample in batch):
            raise ValueError(f"default_collate: samples have {sorted({len(s) for s in batch})} elements; "
                             "each sample of a batch must have the same number")
        columns = [default_collate(samples) for samples in zip(*batch)]
        return type(elem)(*columns) if hasattr(elem, "_fields") else columns
    raise TypeError(f"default_collate: a batch must hold tensors, numpy arrays, numbers, strings, dicts or "
                    f"lists; found {type(elem).__name__}")


class DataLoader:
    """Batches of a dataset: `batch_size` items per batch (the last one shorter unless `drop_last`),
    shuffled anew each pass when `shuffle` (with `generator`), stacked by `collate_fn`."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        sampler: Iterable[int] | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[list], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        generator: np.random.Generator | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler and shuffle=True cannot be used together; shuffle in the sampler")
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.num_workers, self.pin_memory, self.generator = num_workers, pin_memory, generator
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        self.sampler = sampler

    def __iter__(self) -> Iterator[Any]:
        batch: list[int] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield self.collate_fn([self.dataset[i] for i in batch])
                batch = []
        if batch and not self.drop_last:
            yield self.collate_fn([self.dataset[i] for i in batch])

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
