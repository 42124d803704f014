"""Adam and AdamW: one kernel call per group and step over flat buffers of the parameters and moments."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..ops.adam import adam_update
from ..tensor import Tensor
from .optimizer import Optimizer, check_array, check_entries, check_real, grad_of


class _FlatGroup:
    """One group's parameters as views into one flat buffer, with a flat gradient and moments beside it."""

    def __init__(self, params: list[Tensor], op: str) -> None:
        dtype = params[0].data.dtype if params else np.dtype(np.float32)
        if any(p.data.dtype != dtype for p in params):
            raise TypeError(f"{op}: parameters of one group must share a dtype, got {[str(p.dtype) for p in params]}")
        self.params = params
        offsets = np.cumsum([0] + [p.data.size for p in params]).tolist()
        self.bounds, total = list(zip(offsets[:-1], offsets[1:])), offsets[-1]
        self.data, self.grad = np.empty(total, dtype), np.zeros(total, dtype)
        self.m, self.v = np.zeros(total, dtype), np.zeros(total, dtype)
        self.steps = np.zeros(len(params), dtype=np.int64)
        self.views = [self.data[s:e].reshape(p.data.shape) for p, (s, e) in zip(params, self.bounds)]
        self.grad_views = [self.grad[s:e].reshape(p.data.shape) for p, (s, e) in zip(params, self.bounds)]
        self.grad_tensors = [Tensor._wrap(g) for g in self.grad_views]
        for p, view in zip(params, self.views):
            view[...] = p.data
            p.data = view

    def adopt(self, op: str) -> None:
        """Copy in parameters whose `.data` was rebound since (by user code or another optimizer)."""
        for p, view in zip(self.params, self.views):
            if p.data is not view:
                if p.data.shape != view.shape or p.data.dtype != view.dtype:
                    raise ValueError(f"{op}: a parameter of shape {view.shape} and dtype {view.dtype} was given data "
                                     f"of shape {p.data.shape} and dtype {p.data.dtype}; make the optimizer after "
                                     "changing the model (e.g. after .to(dtype))")
                view[...] = p.data
                p.data = view

    def zero_grads_in_place(self) -> None:
        """Make every gradient a zeroed view of the flat buffer, so backward accumulates straight into it
        (frozen parameters keep no gradient, so that they are not updated)."""
        self.grad.fill(0)
        for p, grad, view in zip(self.params, self.grad_tensors, self.grad_views):
            if p.requires_grad and (p.grad is not grad or grad.data is not view):  # set once, then reused
                grad.data = view
                p.grad = grad

    def gather_grads(self, op: str) -> bool:
        """Have every gradient in the flat buffer (copied unless it is its view); False if one is missing."""
        for p, view in zip(self.params, self.grad_views):
            grad = p.grad
            if grad is None:
                return False
            if grad.data is not view:
                view[...] = grad_of(p, op)
        return True


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
        self._flat: list[_FlatGroup] = []
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def add_param_group(self, group: Any) -> None:
        super().add_param_group(group)
        self.param_groups[-1]["betas"] = tuple(self.param_groups[-1]["betas"])
        self._flat.append(_FlatGroup(self.param_groups[-1]["params"], type(self).__name__))

    def _check_options(self, group: dict[str, Any], op: str) -> None:
        check_real(op, "lr", group["lr"])
        check_real(op, "eps", group["eps"], open_low=True)
        check_real(op, "weight_decay", group["weight_decay"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{op}: betas must be a pair of numbers, got {betas!r}")
        for i, beta in enumerate(betas, start=1):
            check_real(op, f"beta{i}", beta, high=1.0)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (default), or zero them as views of the flat buffer, which saves a copy per step."""
        if set_to_none:
            super().zero_grad(set_to_none)
            return
        for flat in self._flat:
            flat.zero_grads_in_place()

    def gradient_buffers(self, op: str) -> tuple[list[np.ndarray], list[Tensor]]:
        """Each group's flat gradient buffer once every gradient is in it (p.grad then views it, so a change made
        in place, such as an Allreduce, is what step() applies); the parameters of the other groups."""
        buffers, loose = [], []
        for flat in self._flat:
            if flat.params and flat.gather_grads(op):
                for p, grad, view in zip(flat.params, flat.grad_tensors, flat.grad_views):
                    grad.data, p.grad = view, grad
                buffers.append(flat.grad)
            else:
                loose.extend(flat.params)
        return buffers, loose

    def _step(self) -> None:
        """Update every parameter that has a gradient (one kernel call per group when all of them do)."""
        op = f"{type(self).__name__}.step"
        for group, flat in zip(self.param_groups, self._flat):
            if not flat.params:
                continue
            flat.adopt(op)
            if flat.gather_grads(op) and (flat.steps == flat.steps[0]).all():
                flat.steps += 1
                self._update(group, flat.data, flat.grad, flat.m, flat.v, int(flat.steps[0]))
                for p in flat.params:
                    p._version.value += 1
                continue
            for i, (p, (start, end)) in enumerate(zip(flat.params, flat.bounds)):
                grad = grad_of(p, op)
                if grad is None:
                    continue
                flat.steps[i] += 1
                grad = np.ascontiguousarray(grad.ravel(), dtype=flat.data.dtype)
                m, v = flat.m[start:end], flat.v[start:end]
                self._update(group, flat.data[start:end], grad, m, v, int(flat.steps[i]))
                p._version.value += 1

    def _update(self, group: dict, data, grad, m, v, step: int) -> None:
        beta1, beta2 = group["betas"]
        adam_update(data, grad, m, v, step, float(group["lr"]), float(beta1), float(beta2), float(group["eps"]),
                    float(group["weight_decay"]), self.decoupled)

    def _slots(self) -> list[tuple[_FlatGroup, int]]:
        return [(flat, i) for flat in self._flat for i in range(len(flat.params))]

    def _state(self) -> dict[int, dict[str, Any]]:
        """Per parameter that has taken a step: its step count and moments (views, as PyTorch returns its own)."""
        state = {}
        for index, (flat, i) in enumerate(self._slots()):
            if flat.steps[i]:
                (start, end), shape = flat.bounds[i], flat.params[i].data.shape
                state[index] = {
                    "step": Tensor(np.float32(flat.steps[i])),
                    "exp_avg": Tensor._wrap(flat.m[start:end].reshape(shape)),
                    "exp_avg_sq": Tensor._wrap(flat.v[start:end].reshape(shape)),
                }
        return state

    def _check_state(self, value: Any, p: Tensor, where: str) -> tuple:
        value = check_entries(value, ("step", "exp_avg", "exp_avg_sq"), where)
        step = value["step"]
        step = step.item() if isinstance(step, (Tensor, np.ndarray, np.generic)) else step
        check_real(where, "step", step, open_low=True)
        if step != int(step):
            raise ValueError(f"{where}: step must be a whole number, got {step}")
        shape = p.data.shape
        m, v = (check_array(value[k], shape, f"{where}[{k!r}]") for k in ("exp_avg", "exp_avg_sq"))
        return int(step), m, v

    def _load_state(self, state: dict[int, Any]) -> None:
        for flat in self._flat:
            flat.m.fill(0)
            flat.v.fill(0)
            flat.steps.fill(0)
        for index, (flat, i) in enumerate(self._slots()):
            if index in state:
                start, end = flat.bounds[i]
                flat.steps[i], m, v = state[index]
                flat.m[start:end], flat.v[start:end] = m.ravel(), v.ravel()


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
