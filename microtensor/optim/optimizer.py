"""Optimizer base: parameter groups with their own options, zero_grad, and PyTorch's state_dict layout."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ..autograd import enable_grad
from ..tensor import Tensor


def check_real(op: str, name: str, value: Any, low: float = 0.0, *, open_low: bool = False,
               high: float = math.inf) -> None:
    """A real number in [low, high) (or (low, high) with open_low): TypeError or ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    if not (low < value if open_low else low <= value) or not value < high:
        rule = f"{'>' if open_low else '>='} {low:g}"
        if high < math.inf:
            rule = f"in {'(' if open_low else '['}{low:g}, {high:g})"
        raise ValueError(f"{op}: {name} must be {rule}, got {value!r}")


def grad_of(p: Tensor, op: str) -> np.ndarray | None:
    """The gradient array of `p` (None when it has none); a gradient of another shape is a ValueError."""
    grad = p.grad
    if grad is None:
        return None
    if grad.data.shape != p.data.shape:
        raise ValueError(f"{op}: a parameter of shape {p.data.shape} has a gradient of shape {grad.data.shape}")
    return grad.data


class Optimizer:
    """Holds `param_groups` (dicts with 'params' and options such as 'lr' that may change between steps)."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Tensors or of dicts, got a Tensor")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        for group in groups if isinstance(groups[0], Mapping) else [{"params": groups}]:
            self.add_param_group(group)

    def add_param_group(self, group: Mapping[str, Any]) -> None:
        """Add a group: its options override the defaults; a parameter may belong to one group only."""
        op = type(self).__name__
        if not isinstance(group, Mapping) or "params" not in group:
            raise TypeError(f"{op}: a parameter group must be a dict with a 'params' entry, got {group!r}")
        params = group["params"]
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{op}: parameters must be in an ordered collection (a list), not a set: "
                            "state_dict() numbers them by position")
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{op}: parameters must be Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{op}: can't optimize a non-leaf Tensor (shape {p.shape})")
            if id(p) in seen:
                raise ValueError(f"{op}: a parameter of shape {p.shape} appears in more than one place")
            seen.add(id(p))
        full = {**self.defaults, **group, "params": params}
        self._check_options(full, op)
        self.param_groups.append(full)

    def _check_options(self, group: dict[str, Any], op: str) -> None:
        """Raise for an option out of range; each optimizer names its options."""
        check_real(op, "lr", group["lr"])

    def params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient (default, as PyTorch 2) or zero it in place."""
        for p in self.params():
            p.zero_grad(set_to_none)

    def gradient_buffers(self, op: str) -> tuple[list[np.ndarray], list[Tensor]]:
        """Flat gradient buffers holding whole groups, and the parameters outside them (for one reduction each)."""
        return [], self.params()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update the parameters that have gradients; `closure` re-evaluates the loss first (returned)."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self._step()
        return loss

    def _step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """PyTorch's layout: 'state' by integer parameter index, 'param_groups' with 'params' as indices."""
        groups, start = [], 0
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = list(range(start, start + len(group["params"])))
            start += len(group["params"])
            groups.append(packed)
        return {"state": self._state(), "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore options and per-parameter state; everything is checked before anything changes."""
        op = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError(f"{op}: expected a dict with 'state' and 'param_groups', as state_dict() returns")
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(f"{op}: the state has {len(saved)} parameter groups, "
                             f"the optimizer {len(self.param_groups)}")
        groups = []
        for i, (mine, theirs) in enumerate(zip(self.param_groups, saved)):
            theirs = check_entries(theirs, ("params",), f"{op}: param_groups[{i}]")
            if len(theirs["params"]) != len(mine["params"]):
                raise ValueError(f"{op}: param_groups[{i}] has {len(theirs['params'])} parameters in the state, "
                                 f"{len(mine['params'])} in the optimizer")
            group = {**mine, **theirs, "params": mine["params"]}
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
            self._check_options(group, f"{op}: param_groups[{i}]")
            groups.append(group)
        params = self.params()
        state = {}
        for key, value in state_dict["state"].items():
            index = int(key) if isinstance(key, (int, str)) and str(key).isdigit() else -1
            if not 0 <= index < len(params):
                raise ValueError(f"{op}: state key {key!r} is not the index of one of the {len(params)} parameters")
            state[index] = self._check_state(value, params[index], f"{op}: state[{key!r}]")
        self.param_groups[:] = groups
        self._load_state(state)

    def _state(self) -> dict[int, dict[str, Any]]:
        return {}

    def _check_state(self, value: Any, p: Tensor, where: str) -> Any:
        return value

    def _load_state(self, state: dict[int, Any]) -> None:
        pass


def check_array(value: Any, shape: tuple, where: str) -> np.ndarray:
    """A state array of the parameter's shape, as numpy; anything else is a TypeError/ValueError naming it."""
    array = np.asarray(value.data if isinstance(value, Tensor) else value)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{where} must be an array of numbers, got {value!r}")
    if array.shape != shape:
        raise ValueError(f"{where} has shape {array.shape}, the parameter {shape}")
    return array


def check_entries(value: Any, keys: tuple[str, ...], where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not set(keys) <= set(value):
        raise ValueError(f"{where} must be a dict with the entries {list(keys)}, got {value!r}")
    return value
