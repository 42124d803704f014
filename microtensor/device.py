"""Devices as PyTorch names them; microtensor runs on the CPU only, so "cpu" is the one device."""

from __future__ import annotations

from typing import Any


class device:  # noqa: N801  (PyTorch's name)
    """A device name ("cpu" or "cpu:0"), so that `device=` arguments of PyTorch programs work unchanged."""

    __slots__ = ("type", "index")

    def __init__(self, type: Any, index: int | None = None) -> None:  # noqa: A002  (PyTorch's argument name)
        if isinstance(type, device):
            type, index = type.type, type.index if index is None else index
        spec = _check_device(type if index is None else f"{type}:{index}", "device")
        self.type = "cpu"
        self.index = spec.index if isinstance(spec, device) else None

    @classmethod
    def _make(cls, index: int | None) -> device:
        d = object.__new__(cls)
        d.type, d.index = "cpu", index
        return d

    def __repr__(self) -> str:
        return "device(type='cpu')" if self.index is None else f"device(type='cpu', index={self.index})"

    def __str__(self) -> str:
        return "cpu" if self.index is None else f"cpu:{self.index}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, device) and (other.type, other.index) == (self.type, self.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = device._make(None)


def _check_device(dev: Any, op: str) -> device | None:
    """Return the device a `device=` argument names (None stays None); anything but the CPU is a ValueError."""
    if dev is None or dev is CPU:
        return dev
    if isinstance(dev, device):
        return dev
    if isinstance(dev, str):
        name, _, index = dev.strip().partition(":")
        if name == "cpu" and (not index or index == "0"):
            return device._make(0 if index else None)
    raise ValueError(
        f"{op}: device {dev!r} is not available; microtensor runs on the CPU only "
        "(use device='cpu' or leave device out)"
    )


class cuda:  # noqa: N801  (PyTorch's module name, as a namespace)
    """`mt.cuda.is_available()` is False, so `'cuda' if torch.cuda.is_available() else 'cpu'` picks the CPU."""

    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def device_count() -> int:
        return 0

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        """A no-op, as in PyTorch without a GPU (minGPT's set_seed calls it)."""

    manual_seed = manual_seed_all
