"""Utilities at PyTorch's paths: `microtensor.utils.data` (Dataset, DataLoader, random_split)."""

from . import data

__all__ = ["data"]
