"""Optimizer base: parameter groups with hyperparameters, zero_grad, and state as flat arrays."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..tensor import Tensor


class Optimizer:
    """Holds `param_groups` (dicts with 'params' and hyperparameters such as 'lr'), as PyTorch."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        for group in groups:
            group = {**defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"{type(self).__name__}: parameters must be Tensors, got {type(p).__name__}")
            self.param_groups.append(group)
        for key in ("lr",):
            for group in self.param_groups:
                if group[key] < 0:
                    raise ValueError(f"{type(self).__name__}: {key} must be >= 0, got {group[key]}")

    def params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient (default, as PyTorch) or zero it in place."""
        for p in self.params():
            p.zero_grad(set_to_none)

    def step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Hyperparameters of each group and the per-parameter state, as name -> array."""
        state = {}
        for i, group in enumerate(self.param_groups):
            for key, value in group.items():
                if key != "params":
                    state[f"group{i}.{key}"] = np.asarray(value)
        state.update(self._state_arrays())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned; a missing key is a ValueError."""
        for i, group in enumerate(self.param_groups):
            for key, value in group.items():
                if key == "params":
                    continue
                name = f"group{i}.{key}"
                if name not in state:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: missing key {name!r}")
                restored = np.asarray(state[name])
                group[key] = tuple(restored.tolist()) if isinstance(value, tuple) else restored.item()
        self._load_state_arrays(state)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _load_state_arrays(self, state: dict[str, Any]) -> None:
        pass
