"""Tensor: a numpy array with a gradient and the Function node that made it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from . import autograd
from . import device as _device
from .autograd import AutogradError, _GradMode

DEFAULT_DTYPE = np.dtype(np.float32)


class _Version:
    """A counter shared by a tensor, its views and its detached copies; in-place ops bump it."""

    __slots__ = ("value", "views")

    def __init__(self) -> None:
        self.value = 0
        self.views = False  # True once a view shares it: in-place ops that need the graph then refuse


def _as_array(data: Any, dtype: Any = None) -> np.ndarray:
    """numpy arrays keep their dtype; Python floats become float32, Python ints int64, bools bool."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.array(data, dtype=dtype)
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, np.generic):
        return np.asarray(data)
    arr = np.array(data)
    if arr.dtype.kind == "f":
        return arr.astype(DEFAULT_DTYPE)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind != "b":
        raise TypeError(f"tensor: cannot make a tensor from {type(data).__name__} (numpy dtype {arr.dtype})")
    return arr


def _axis(axis: Any, dim: Any, op: str, default: Any = None) -> Any:
    """Accept numpy's `axis` or PyTorch's `dim`, not both (neither means `default`); lists become tuples."""
    if dim is not None:
        if axis is not None:
            raise TypeError(f"{op}: pass either axis or dim, not both")
        axis = dim
    elif axis is None:
        axis = default
    return tuple(axis) if isinstance(axis, list) else axis


def _keep(keepdims: bool, keepdim: bool | None) -> bool:
    """Accept numpy's `keepdims` or PyTorch's `keepdim`."""
    return keepdims if keepdim is None else keepdim


class Tensor:
    """An n-dimensional array that records the ops applied to it for reverse-mode autograd.

    `.data` is the numpy array, `.grad` its gradient (a Tensor, or None) after
    `backward()`. Operators and methods follow PyTorch's names and numpy's
    broadcasting.
    """

    __slots__ = ("data", "_grad", "requires_grad", "_ctx", "_version", "__weakref__")
    __array_ufunc__ = None  # numpy defers to Tensor's reflected operators

    def __init__(self, data: Any, dtype: Any = None, requires_grad: bool = False) -> None:
        self.data = _as_array(data, dtype)
        self._grad: Tensor | None = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self._version = _Version()
        if self.requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"tensor: only floating-point tensors can require grad, got dtype {self.dtype}")

    @classmethod
    def _wrap(cls, data: Any) -> Tensor:
        """Fast constructor for op results: no dtype conversion, no grad."""
        t = object.__new__(Tensor)
        t.data = data if type(data) is np.ndarray else np.asarray(data)
        t._grad = None
        t.requires_grad = False
        t._ctx = None
        t._version = _Version()
        return t

    # ---- properties -------------------------------------------------------------------
    @property
    def grad(self) -> Tensor | None:
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        """A Tensor (or an array, wrapped without a copy) of this tensor's shape, or None."""
        if value is not None:
            if type(value) is not Tensor:
                value = Tensor._wrap(np.asarray(value))
            if value.data.shape != self.data.shape:
                raise ValueError(f"grad: assigned a gradient of shape {value.shape} to a tensor of shape {self.shape}")
        self._grad = value

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """numpy's view of the tensor (`np.asarray(t)`, np.testing on tensors and gradients)."""
        if dtype is not None and np.dtype(dtype) != self.data.dtype:
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def grad_fn(self) -> Any:
        return self._ctx

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def T(self) -> Tensor:
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim: int | None = None) -> Any:
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.data.ndim

    def element_size(self) -> int:
        return self.data.itemsize

    @property
    def device(self) -> _device.device:
        return _device.CPU

    def is_floating_point(self) -> bool:
        return self.data.dtype.kind == "f"

    def __len__(self) -> int:
        if not self.data.ndim:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __contains__(self, value: Any) -> bool:
        return bool((self.data == _data(value)).any())

    def __iter__(self) -> Iterator[Tensor]:
        """Rows along the first axis (each in the graph), so that `for row in t` and `a, b = t` work."""
        return (self[i] for i in range(len(self)))

    def numpy(self) -> np.ndarray:
        """The underlying numpy array (shared, not copied)."""
        return self.data

    def item(self) -> Any:
        """The single value of a one-element tensor, as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item: only one-element tensors convert to a number, got shape {self.shape}")
        return self.data.item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def clone(self) -> Tensor:
        """A copy with its own memory that stays in the graph (gradients flow back to self)."""
        return _Clone.apply(self)

    def detach(self) -> Tensor:
        """The same data (shared, with its version counter) outside the graph."""
        t = Tensor._wrap(self.data)
        t._version = self._version
        return t

    def detach_(self) -> Tensor:
        """Take this tensor out of the graph (it becomes a leaf that does not require grad)."""
        self._ctx = None  # nodes recorded before keep the old one (they hold nodes, not tensors)
        self.requires_grad = False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"requires_grad_: only floating-point tensors can require grad, got {self.dtype}")
        if not requires_grad and self._ctx is not None:
            raise AutogradError(
                "requires_grad_: only leaf tensors can stop requiring grad; use .detach() for a copy outside the graph"
            )
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in .grad after backward (leaves keep theirs anyway)."""
        if not self.requires_grad:
            raise AutogradError("retain_grad: the tensor does not require grad")
        if self._ctx is not None:
            self._ctx._retain = self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradient (or zero it in place with set_to_none=False)."""
        if set_to_none or self._grad is None:
            self._grad = None
        else:
            self._grad.data.fill(0)

    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Accumulate gradients of this tensor into every leaf's `.grad` (they add up across calls)."""
        autograd.backward(self, gradient, retain_graph)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(", precision=4)
        extras = []
        if self.data.dtype != DEFAULT_DTYPE:
            extras.append(f"dtype={self.data.dtype}")
        if self._ctx is not None:
            extras.append(f"grad_fn=<{type(self._ctx).__name__}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body, *extras]) + ")"

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ValueError(
                f"bool: the truth value of a tensor of shape {self.shape} is ambiguous; use .any() or .all()"
            )
        return bool(self.data)

    def __format__(self, spec: str) -> str:
        """f"{loss:.4f}" formats a one-element tensor as its number (0-d ones always, as PyTorch)."""
        if self.data.ndim == 0 or (spec and self.data.size == 1):
            return format(self.data.item(), spec)
        if spec:
            raise TypeError(f"format: spec {spec!r} needs a one-element tensor, got shape {self.shape}")
        return repr(self)

    def __index__(self) -> int:
        if self.data.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError(f"index: only one-element integer tensors are indices, got {self.dtype} {self.shape}")
        return int(self.data.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __hash__(self) -> int:
        return id(self)

    # ---- device and dtype conversion -------------------------------------------------
    def to(self, *args: Any, dtype: Any = None, device: Any = None, non_blocking: bool = False, copy: bool = False):
        """PyTorch's `to(device)`, `to(dtype)`, `to(device, dtype)`, `to(tensor)`: self when nothing changes."""
        for arg in args:
            if isinstance(arg, Tensor):
                dtype = arg.dtype
            elif isinstance(arg, (str, int, _device.device)):
                try:
                    device = _device._check_device(arg, "to")
                except ValueError:
                    if not isinstance(arg, str) or arg not in np.sctypeDict:
                        raise
                    dtype = arg
            else:
                dtype = arg
        _device._check_device(device, "to")
        if dtype is None or np.dtype(dtype) == self.data.dtype:
            return self.clone() if copy else self
        return ops.Cast.apply(self, dtype=np.dtype(dtype))

    def astype(self, dtype: Any) -> Tensor:
        return self.to(dtype)

    def cpu(self) -> Tensor:
        return self

    def cuda(self, *args: Any, **kwargs: Any) -> Tensor:
        _device._check_device("cuda", "cuda")
        return self

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    def float(self) -> Tensor:
        return self.to(np.float32)

    def double(self) -> Tensor:
        return self.to(np.float64)

    def long(self) -> Tensor:
        return self.to(np.int64)

    def int(self) -> Tensor:
        return self.to(np.int32)

    def bool(self) -> Tensor:
        return self.to(np.bool_)

    # ---- arithmetic ---------------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return ops.Add.apply(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return ops.Add.apply(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return ops.Sub.apply(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return ops.Sub.apply(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return ops.Mul.apply(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return ops.Mul.apply(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return ops.Div.apply(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return ops.Div.apply(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return ops.Pow.apply(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return ops.Pow.apply(other, self)

    def __neg__(self) -> Tensor:
        return ops.Neg.apply(self)

    def __matmul__(self, other: Any) -> Tensor:
        return ops.MatMul.apply(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return ops.MatMul.apply(other, self)

    def matmul(self, other: Any) -> Tensor:
        return ops.MatMul.apply(self, other)

    # ---- comparisons: results are bool tensors without a graph ----------------------------
    def __lt__(self, other: Any) -> Tensor:
        return Tensor._wrap(self.data < _data(other))

    def __le__(self, other: Any) -> Tensor:
        return Tensor._wrap(self.data <= _data(other))

    def __gt__(self, other: Any) -> Tensor:
        return Tensor._wrap(self.data > _data(other))

    def __ge__(self, other: Any) -> Tensor:
        return Tensor._wrap(self.data >= _data(other))

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor._wrap(self.data == _data(other))

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor._wrap(self.data != _data(other))

    def __invert__(self) -> Tensor:
        if self.data.dtype != np.bool_:
            raise TypeError(f"~: expected a bool tensor, got dtype {self.dtype}")
        return Tensor._wrap(~self.data)

    def __and__(self, other: Any) -> Tensor:
        return Tensor._wrap(self.data & _data(other))

    def __or__(self, other: Any) -> Tensor:
        return Tensor._wrap(self.data | _data(other))

    # ---- elementwise functions ----------------------------------------------------------
    def exp(self) -> Tensor:
        return ops.Exp.apply(self)

    def log(self) -> Tensor:
        return ops.Log.apply(self)

    def sqrt(self) -> Tensor:
        return ops.Sqrt.apply(self)

    def tanh(self) -> Tensor:
        return ops.Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        return ops.Sigmoid.apply(self)

    def relu(self) -> Tensor:
        return ops.Relu.apply(self)

    def gelu(self) -> Tensor:
        return ops.Gelu.apply(self)

    def abs(self) -> Tensor:
        return ops.Abs.apply(self)

    def masked_fill(self, mask: Any, value: float) -> Tensor:
        return ops.MaskedFill.apply(self, _data(mask), value=value)

    # ---- reductions -----------------------------------------------------------------
    def sum(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None):
        return ops.Sum.apply(self, axis=_axis(axis, dim, "sum"), keepdims=_keep(keepdims, keepdim))

    def mean(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: bool | None = None):
        return ops.Mean.apply(self, axis=_axis(axis, dim, "mean"), keepdims=_keep(keepdims, keepdim))

    def softmax(self, axis: int | None = None, *, dim: int | None = None) -> Tensor:
        return ops.Softmax.apply(self, axis=_axis(axis, dim, "softmax", -1))

    def log_softmax(self, axis: int | None = None, *, dim: int | None = None) -> Tensor:
        return ops.LogSoftmax.apply(self, axis=_axis(axis, dim, "log_softmax", -1))

    # ---- shape ------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.Reshape.apply(self, shape=shape)

    def view(self, *shape: Any) -> Tensor:
        """reshape that must not copy, as PyTorch's view (which needs compatible strides)."""
        out = self.reshape(*shape)
        if out._version is not self._version and out.data.size:  # reshape had to copy
            raise ValueError(
                f"view: a tensor of shape {self.shape} and strides {self.data.strides} cannot be viewed as "
                f"{out.shape} without a copy; use .reshape(...) instead"
            )
        return out

    def t(self) -> Tensor:
        """Transpose a 2-D tensor (0-D and 1-D tensors come back as they are), as PyTorch's t()."""
        if self.ndim > 2:
            raise ValueError(f"t: expects a tensor with at most 2 dimensions, got shape {self.shape}; use transpose")
        return self.transpose(0, 1) if self.ndim == 2 else self

    def contiguous(self) -> Tensor:
        return self if self.data.flags.c_contiguous else self.clone()

    def repeat(self, *sizes: Any) -> Tensor:
        """Tile the tensor `sizes[i]` times along each axis (PyTorch's repeat, numpy's tile)."""
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = tuple(sizes[0])
        if len(sizes) < self.ndim:
            raise ValueError(f"repeat: {len(sizes)} repeat counts for a tensor of shape {self.shape}")
        shape = (1,) * (len(sizes) - self.ndim) + self.shape
        spread = self.reshape(*[m for n in shape for m in (1, n)])
        tiled = spread.expand(*[m for r, n in zip(sizes, shape) for m in (r, n)])
        return tiled.reshape(*[r * n for r, n in zip(sizes, shape)])

    def flatten(self, start_dim: int = 0) -> Tensor:
        return self.reshape(*self.shape[:start_dim], -1)

    def permute(self, *dims: Any) -> Tensor:
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        return ops.Permute.apply(self, dims=dims)

    def transpose(self, dim0: int = -2, dim1: int = -1) -> Tensor:
        """Swap two axes (PyTorch's signature); defaults swap the last two."""
        dims = list(range(self.ndim))
        try:
            dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        except IndexError:
            raise ValueError(f"transpose: axes ({dim0}, {dim1}) out of range for shape {self.shape}") from None
        return ops.Permute.apply(self, dims=tuple(dims))

    def unsqueeze(self, dim: int) -> Tensor:
        shape = list(self.shape)
        shape.insert(dim if dim >= 0 else len(shape) + dim + 1, 1)
        return self.reshape(*shape)

    def squeeze(self, dim: int | None = None) -> Tensor:
        if dim is None:
            return self.reshape(*[n for n in self.shape if n != 1])
        if self.shape[dim] != 1:
            return self
        shape = list(self.shape)
        del shape[dim]
        return self.reshape(*shape)

    def expand(self, *shape: Any) -> Tensor:
        return ops.BroadcastTo.apply(self, shape=tuple(shape[0] if len(shape) == 1 else shape))

    def split(self, split_size_or_sections: Any, dim: int = 0) -> list[Tensor]:
        return split(self, split_size_or_sections, dim)

    def __getitem__(self, index: Any) -> Tensor:
        return ops.GetItem.apply(self, index=_index(index))

    # ---- in-place ops, with PyTorch's rules ------------------------------------------------
    def _records(self, op: str, *others: Any) -> bool:
        """True when the in-place op must be recorded in the graph; raises where PyTorch refuses it."""
        if not _GradMode.enabled or not (
            self.requires_grad or any(isinstance(o, Tensor) and o.requires_grad for o in others)
        ):
            return False
        if self.requires_grad and self._ctx is None:
            raise AutogradError(
                f"{op}: a leaf Variable that requires grad is being used in an in-place operation; "
                "wrap it in mt.no_grad() or use the out-of-place op"
            )
        if self._version.views:
            raise AutogradError(
                f"{op}: in-place change of a view, or of a tensor that has views, inside the graph is not "
                "supported; use the out-of-place op (x = x + y)"
            )
        return True

    def _record(self, op: str, fn: Any) -> Tensor:
        """PyTorch's rebase: self's new node computes fn(old value), whose parent is self's old node."""
        old = Tensor._wrap(self.data.copy())
        old.requires_grad, old._ctx = self.requires_grad, self._ctx
        new = fn(old)
        self._store(op, np.copyto, new.data)
        if self._ctx is not None and self._ctx._retain is self:
            self._ctx._retain, new._ctx._retain = None, self
        self._ctx = new._ctx  # nodes recorded before keep the old one (they hold nodes, not tensors)
        self.requires_grad = True
        return self

    def _store(self, op: str, ufunc: Any, *args: Any) -> Tensor:
        """Write ufunc(self, *args) into self's memory and bump its version; numpy's errors name the op."""
        try:
            if ufunc is np.copyto:
                np.copyto(self.data, args[0], casting="unsafe")
            else:
                ufunc(self.data, *args, out=self.data, casting="same_kind")
        except (TypeError, ValueError) as err:
            shapes = [np.shape(a) for a in args]
            raise (TypeError if isinstance(err, TypeError) else ValueError)(
                f"{op}: cannot write the result into a tensor of shape {self.shape} and dtype {self.dtype} "
                f"(other operands: shapes {shapes}): {err}"
            ) from None
        self._version.value += 1
        return self

    def _arith_(self, op: str, ufunc: Any, fn: Any, other: Any) -> Tensor:
        if self._records(op, other):
            return self._record(op, lambda old: fn(old, other))
        return self._store(op, ufunc, _data(other))

    def __iadd__(self, other: Any) -> Tensor:
        return self._arith_("+=", np.add, ops.Add.apply, other)

    def __isub__(self, other: Any) -> Tensor:
        return self._arith_("-=", np.subtract, ops.Sub.apply, other)

    def __imul__(self, other: Any) -> Tensor:
        return self._arith_("*=", np.multiply, ops.Mul.apply, other)

    def __itruediv__(self, other: Any) -> Tensor:
        return self._arith_("/=", np.divide, ops.Div.apply, other)

    def add_(self, other: Any, *, alpha: float = 1) -> Tensor:
        return self._arith_("add_", np.add, ops.Add.apply, other if alpha == 1 else other * alpha)

    def sub_(self, other: Any, *, alpha: float = 1) -> Tensor:
        return self._arith_("sub_", np.subtract, ops.Sub.apply, other if alpha == 1 else other * alpha)

    def mul_(self, other: Any) -> Tensor:
        return self._arith_("mul_", np.multiply, ops.Mul.apply, other)

    def div_(self, other: Any) -> Tensor:
        return self._arith_("div_", np.divide, ops.Div.apply, other)

    def _copy(self, op: str, src: Any) -> Tensor:
        """Copy src's values (broadcast, cast to self's dtype) into self; gradients flow to src."""
        if self._records(op, src):
            return self._record(op, lambda old: _CopyInto.apply(old, src))
        return self._store(op, np.copyto, _data(src))

    def copy_(self, src: Any, non_blocking: bool = False) -> Tensor:
        return self._copy("copy_", src)

    def fill_(self, value: Any) -> Tensor:
        return self._copy("fill_", value)

    def zero_(self) -> Tensor:
        return self._copy("zero_", 0)

    def masked_fill_(self, mask: Any, value: Any) -> Tensor:
        if self._records("masked_fill_"):
            return self._record("masked_fill_", lambda old: old.masked_fill(mask, value))
        mask = _data(mask)
        if getattr(mask, "dtype", None) != np.bool_:
            raise TypeError(f"masked_fill_: mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
        try:
            np.copyto(self.data, _data(value), casting="unsafe", where=mask)
        except ValueError:
            raise ValueError(f"masked_fill_: mask of shape {mask.shape} does not broadcast to {self.shape}") from None
        self._version.value += 1
        return self

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002  (PyTorch's names)
        if self._records("clamp_"):
            return self._record("clamp_", lambda old: old.clamp(min, max))
        return self._store("clamp_", np.copyto, self.clamp(min, max).data)

    clip_ = clamp_

    def __setitem__(self, index: Any, value: Any) -> None:
        index = _index(index)
        if self._records("__setitem__", value):
            self._record("__setitem__", lambda old: _SetItem.apply(old, value, index=index))
            return
        try:
            self.data[index] = _data(value)
        except (IndexError, ValueError, TypeError) as err:
            raise type(err)(f"__setitem__: cannot assign to index {index!r} of shape {self.shape}: {err}") from None
        self._version.value += 1

    # ---- PyTorch-style ops (OPS): each calls the function of the same name in microtensor/ops/api.py -----
    def max(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.max(self, *args, **kwargs)

    def min(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.min(self, *args, **kwargs)

    def amax(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.amax(self, *args, **kwargs)

    def amin(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.amin(self, *args, **kwargs)

    def argmax(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.argmax(self, *args, **kwargs)

    def argmin(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.argmin(self, *args, **kwargs)

    def var(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.var(self, *args, **kwargs)

    def std(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.std(self, *args, **kwargs)

    def norm(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.norm(self, *args, **kwargs)

    def clamp(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.clamp(self, *args, **kwargs)

    def clip(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.clip(self, *args, **kwargs)

    def maximum(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.maximum(self, *args, **kwargs)

    def minimum(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.minimum(self, *args, **kwargs)

    def sort(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.sort(self, *args, **kwargs)

    def argsort(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.argsort(self, *args, **kwargs)

    def topk(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.topk(self, *args, **kwargs)

    def cumsum(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.cumsum(self, *args, **kwargs)

    def gather(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.gather(self, *args, **kwargs)

    def tril(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.tril(self, *args, **kwargs)

    def triu(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.triu(self, *args, **kwargs)

    def multinomial(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.multinomial(self, *args, **kwargs)

    def allclose(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.allclose(self, *args, **kwargs)

    def sin(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.sin(self, *args, **kwargs)

    def cos(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.cos(self, *args, **kwargs)

    def square(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.square(self, *args, **kwargs)

    def rsqrt(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.rsqrt(self, *args, **kwargs)

    def isnan(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.isnan(self, *args, **kwargs)

    def isinf(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.isinf(self, *args, **kwargs)

    def isfinite(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.isfinite(self, *args, **kwargs)

    def any(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.any(self, *args, **kwargs)

    def all(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.all(self, *args, **kwargs)

    def logsumexp(self, *args: Any, **kwargs: Any) -> Any:
        return ops.api.logsumexp(self, *args, **kwargs)


class _CopyInto(autograd.Function):
    """The value of copy_: src broadcast and cast to the destination; the gradient flows to src only."""

    @staticmethod
    def forward(ctx: Any, dst: np.ndarray, src: Any) -> np.ndarray:
        out = np.empty_like(dst)
        np.copyto(out, src, casting="unsafe")
        return out

    @staticmethod
    def backward(ctx: Any, g: np.ndarray) -> tuple:
        return None, g


class _SetItem(autograd.Function):
    """The value of `t[index] = v`: gradients flow to v at index and to t everywhere else."""

    @staticmethod
    def forward(ctx: Any, a: np.ndarray, value: Any, index: Any = None) -> np.ndarray:
        out = a.copy()
        out[index] = value
        ctx.index = index
        return out

    @staticmethod
    def backward(ctx: Any, g: np.ndarray) -> tuple:
        ga = g.copy()
        ga[ctx.index] = 0
        return ga, g[ctx.index]


class _Clone(autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: np.ndarray) -> np.ndarray:
        return a.copy()

    @staticmethod
    def backward(ctx: Any, g: np.ndarray) -> np.ndarray:
        return g


def _data(x: Any) -> Any:
    """The numpy array of a Tensor; anything else unchanged."""
    return x.data if isinstance(x, Tensor) else x


def _index(index: Any) -> Any:
    """An index with Tensors replaced by their arrays."""
    if isinstance(index, tuple):
        return tuple(_data(i) for i in index)
    return _data(index)


def split(tensor: Tensor, split_size_or_sections: Any, dim: int = 0) -> list[Tensor]:
    """Split into chunks of a given size (the last may be smaller) or of the listed sizes, as PyTorch."""
    n = tensor.shape[dim]
    if isinstance(split_size_or_sections, int):
        if split_size_or_sections <= 0:
            raise ValueError(f"split: chunk size must be positive, got {split_size_or_sections}")
        sizes = [min(split_size_or_sections, n - s) for s in range(0, n, split_size_or_sections)]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sections {sizes} do not add up to {n} (axis {dim} of shape {tensor.shape})")
    lead = (slice(None),) * (dim % tensor.ndim)
    chunks, start = [], 0
    for size in sizes:
        chunks.append(tensor[(*lead, slice(start, start + size))])
        start += size
    return chunks


autograd.Tensor = Tensor
from . import ops  # noqa: E402  (ops needs Tensor defined first)
