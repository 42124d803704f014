"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay (PyTorch's rules)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer


class SGD(Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov}
        super().__init__(params, defaults)
        self.buffers: list[np.ndarray | None] = [None] * len(self.params())

    def step(self) -> None:
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(group, p, i)
                i += 1

    def _update(self, group: dict, p: Any, i: int) -> None:
        g = p.grad.data
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        if group["momentum"]:
            buf = self.buffers[i]
            if buf is None:
                buf = self.buffers[i] = np.array(g, copy=True)
            else:
                buf *= group["momentum"]
                buf += (1 - group["dampening"]) * g
            g = g + group["momentum"] * buf if group["nesterov"] else buf
        p.data -= group["lr"] * g

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {f"momentum{i}": b for i, b in enumerate(self.buffers) if b is not None}

    def _load_state_arrays(self, state: dict[str, Any]) -> None:
        self.buffers = [
            np.array(state[f"momentum{i}"]) if f"momentum{i}" in state else None for i in range(len(self.buffers))
        ]
