"""Adam and AdamW: one kernel call per step over flat buffers of all parameters and moments."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import _backend
from .optimizer import Optimizer


class _FlatGroup:
    """The parameters of one group as views into one flat buffer, with flat gradient and moments."""

    def __init__(self, params: list) -> None:
        dtype = params[0].data.dtype
        sizes = [p.data.size for p in params]
        self.params = params
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.data = np.concatenate([p.data.ravel() for p in params]).astype(dtype)
        for p, start, end in zip(params, *self._bounds()):
            p.data = self.data[start:end].reshape(p.data.shape)
        self.grad = np.zeros_like(self.data)
        self.grad_views = [self.grad[s:e].reshape(p.data.shape) for p, s, e in zip(params, *self._bounds())]
        self.m = np.zeros_like(self.data)
        self.v = np.zeros_like(self.data)
        self.steps = np.zeros(len(params), dtype=np.int64)

    def _bounds(self) -> tuple:
        return self.offsets[:-1], self.offsets[1:]

    def zero_grads_in_place(self) -> None:
        """Make every gradient a zeroed view of the flat buffer, so backward accumulates straight into it."""
        self.grad.fill(0)
        for p, view in zip(self.params, self.grad_views):
            p.grad = view

    def gather_grads(self) -> bool:
        """Have all gradients in the flat buffer (a copy unless they are its views); False if one is None."""
        grads = [None if p.grad is None else p.grad.data for p in self.params]
        if any(g is None for g in grads):
            return False
        if not all(g is view for g, view in zip(grads, self.grad_views)):
            np.concatenate([g.ravel() for g in grads], out=self.grad)
        return True

    def slices(self):
        return zip(range(len(self.params)), *self._bounds())


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's defaults; weight_decay adds an L2 term to the gradient."""

    decoupled = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        for name, value in (("beta1", betas[0]), ("beta2", betas[1])):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{type(self).__name__}: {name} must be in [0, 1), got {value}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        self._flat = [self._flatten(group["params"]) for group in self.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (default), or zero them as views of the flat buffer, which saves a copy per step."""
        if set_to_none:
            super().zero_grad(set_to_none)
            return
        for flat in self._flat:
            flat.zero_grads_in_place()

    @staticmethod
    def _flatten(params: list) -> _FlatGroup:
        if len({p.data.dtype for p in params}) != 1:
            raise TypeError(f"Adam: parameters of one group must share a dtype, got {[p.dtype for p in params]}")
        return _FlatGroup(params)

    def step(self) -> None:
        """Update every parameter that has a gradient (one kernel call when all of them do)."""
        for group, flat in zip(self.param_groups, self._flat):
            if flat.gather_grads() and (flat.steps == flat.steps[0]).all():
                flat.steps += 1
                self._update(group, flat.data, flat.grad, flat.m, flat.v, int(flat.steps[0]))
                continue
            for i, start, end in flat.slices():
                p = flat.params[i]
                if p.grad is None:
                    continue
                flat.steps[i] += 1
                grad = np.ascontiguousarray(p.grad.data.ravel())
                self._update(
                    group, flat.data[start:end], grad, flat.m[start:end], flat.v[start:end], int(flat.steps[i])
                )

    def _update(self, group: dict, data, grad, m, v, step: int) -> None:
        beta1, beta2 = group["betas"]
        _backend.K.adam_update(
            data, grad, m, v, step, group["lr"], beta1, beta2, group["eps"], group["weight_decay"], self.decoupled
        )

    def _state_arrays(self) -> dict[str, np.ndarray]:
        state = {}
        for i, flat in enumerate(self._flat):
            state[f"state{i}.m"], state[f"state{i}.v"] = flat.m.copy(), flat.v.copy()
            state[f"state{i}.steps"] = flat.steps.copy()
        return state

    def _load_state_arrays(self, state: dict[str, Any]) -> None:
        for i, flat in enumerate(self._flat):
            for key, target in (("m", flat.m), ("v", flat.v), ("steps", flat.steps)):
                name = f"state{i}.{key}"
                if name not in state:
                    raise ValueError(f"{type(self).__name__}.load_state_dict: missing key {name!r}")
                value = np.asarray(state[name])
                if value.shape != target.shape:
                    raise ValueError(
                        f"{type(self).__name__}.load_state_dict: {name} has shape {value.shape}, "
                        f"expected {target.shape}"
                    )
                target[...] = value


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter); PyTorch's default decay 0.01."""

    decoupled = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
