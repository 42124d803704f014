"""Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay (PyTorch's rules)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..tensor import Tensor
from .optimizer import Optimizer, check_array, check_entries, check_real, grad_of


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
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov}
        super().__init__(params, defaults)
        self.buffers: list[np.ndarray | None] = [None] * len(self.params())

    def _check_options(self, group: dict[str, Any], op: str) -> None:
        for name in ("lr", "momentum", "weight_decay"):
            check_real(op, name, group[name])
        check_real(op, "dampening", group["dampening"], low=-np.inf)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{op}: nesterov needs momentum > 0 and dampening 0")

    def add_param_group(self, group: Any) -> None:
        super().add_param_group(group)
        if hasattr(self, "buffers"):
            self.buffers += [None] * len(self.param_groups[-1]["params"])

    def _step(self) -> None:
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                grad = grad_of(p, "SGD.step")
                if grad is not None:
                    self._update(group, p, grad, i)
                    p._version.value += 1
                i += 1

    def _update(self, group: dict, p: Tensor, g: np.ndarray, i: int) -> None:
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

    def _state(self) -> dict[int, dict[str, Any]]:
        return {i: {"momentum_buffer": Tensor._wrap(b)} for i, b in enumerate(self.buffers) if b is not None}

    def _check_state(self, value: Any, p: Tensor, where: str) -> np.ndarray:
        value = check_entries(value, ("momentum_buffer",), where)
        return check_array(value["momentum_buffer"], p.data.shape, f"{where}['momentum_buffer']")

    def _load_state(self, state: dict[int, Any]) -> None:
        self.buffers = [np.array(state[i], copy=True) if i in state else None for i in range(len(self.buffers))]
