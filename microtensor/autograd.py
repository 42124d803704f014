"""Function (one node of the graph per op call), grad mode, and the backward engine."""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

Tensor: Any = None  # bound to microtensor.tensor.Tensor when that module loads (it imports this one)


class AutogradError(RuntimeError, ValueError):
    """A misuse of backward (graph already freed, non-scalar root, tensor changed in place)."""


class _GradMode:
    """Whether ops record the graph; a module-level switch read on every op."""

    enabled = True


def is_grad_enabled() -> bool:
    """True when ops record the graph for backward."""
    return _GradMode.enabled


class no_grad:
    """Context manager (and decorator) under which ops build no graph."""

    mode: bool | None = False  # grad mode inside the block (None: unchanged)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """`@no_grad` without parentheses decorates too, as in PyTorch 2."""
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return cls()(args[0])
        return super().__new__(cls)

    def __enter__(self) -> None:
        self._prev = _GradMode.enabled
        if self.mode is not None:
            _GradMode.enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        _GradMode.enabled = self._prev

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with copy.copy(self):
                return fn(*args, **kwargs)

        return wrapper


class enable_grad(no_grad):
    """Context manager that turns graph recording back on inside a no_grad block."""

    mode = True


class inference_mode(no_grad):
    """PyTorch's inference_mode: no graph inside (here the same as no_grad); mode=False changes nothing."""

    def __init__(self, mode: bool = True) -> None:
        self.mode = False if mode else None


class set_grad_enabled(no_grad):
    """Turn graph recording on or off now; as a context manager, the previous mode comes back at exit."""

    def __init__(self, mode: bool) -> None:
        self._prev, self.mode = _GradMode.enabled, bool(mode)
        _GradMode.enabled = self.mode

    def __enter__(self) -> None:
        pass


class Function:
    """An op with a forward and a backward on numpy arrays; the instance is its own ctx.

    Subclass it and write two static methods, as in PyTorch:

        class Square(Function):
            @staticmethod
            def forward(ctx, x):           # numpy arrays in, one numpy array out
                ctx.save_for_backward(x)
                return x * x
            @staticmethod
            def backward(ctx, grad):       # one gradient per forward input (None if not needed)
                (x,) = ctx.saved_tensors
                return 2 * x * grad

        y = Square.apply(t)                 # Tensors in, a Tensor out

    Gradients returned for broadcast inputs may have the broadcast shape: the
    engine sums them back to each input's shape.
    """

    # Per forward input: the node that made it (a Function), the tensor itself when it is a leaf or does not
    # require grad, None for a non-tensor. Nodes, not their output tensors: an intermediate result that no op
    # saved is freed as soon as the program drops it, as in PyTorch.
    parents: tuple
    _shape: tuple = ()  # the shape of the node's output (what its gradient must have)
    _dtype: Any = None  # the dtype of the node's output
    needs_input_grad: Any = ()  # one bool per forward argument when the graph is recorded (set before forward)
    saved_tensors: tuple = ()
    _saved_versions: list | tuple = ()
    _retain: Any = None  # the non-leaf tensor whose .grad keeps this node's output gradient (retain_grad)
    is_view = False  # True for ops whose output may share the first input's memory (then it shares its version)
    # Ops whose backward can add an input's gradient into an array the engine offers (set True to opt in): before
    # backward, grad_into holds per input the engine's running sum of that input's gradient, or None; an op that
    # adds into it returns that very array as the input's gradient.
    sums_into = False
    grad_into: Any = ()
    # True during backward when the output gradient is an array nothing else references (not a view, not held by
    # another node, a saved tensor or the program): backward may then write its input's gradient into it.
    grad_owned = False

    @staticmethod
    def forward(ctx: Function, *args: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Function, grad: np.ndarray) -> Any:
        raise NotImplementedError

    def save_for_backward(self, *arrays: Any) -> None:
        """Keep arrays for backward; in-place changes to their tensors are detected later."""
        self.saved_tensors = arrays

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        """Run forward on the arrays of the arguments and record the node when a gradient is needed."""
        return cls.apply_with_ctx(*args, **kwargs)[0]

    @classmethod
    def apply_with_ctx(cls, *args: Any, **kwargs: Any) -> tuple[Tensor, Function]:
        """`apply`, also returning the ctx (for ops that keep side results, like attention weights)."""
        ctx = cls()
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        record = False
        if _GradMode.enabled:
            needs = [isinstance(a, Tensor) and a.requires_grad for a in args]
            if True in needs:
                record = True
                ctx.needs_input_grad = needs  # set before forward, so that it saves only what backward needs
        out = Tensor._wrap(cls.forward(ctx, *arrays, **kwargs))
        if cls.is_view:
            _share_version(out, args[0])
        if record:
            ctx.parents = tuple([_edge(a) for a in args])
            ctx._shape, ctx._dtype = out.data.shape, out.data.dtype
            if ctx.saved_tensors:
                ctx._saved_versions = _versions_of_saved(ctx.saved_tensors, args, out)
            out.requires_grad = True
            out._ctx = ctx
        return out, ctx

    def _check_versions(self) -> None:
        """Raise when a tensor saved for backward was changed in place after the forward pass."""
        for counter, seen in self._saved_versions:
            if counter.value != seen:
                raise AutogradError(
                    f"backward of {type(self).__name__}: a tensor it saved was modified in place "
                    f"(version {counter.value}, expected {seen}); use an out-of-place op instead"
                )


def _edge(arg: Any) -> Any:
    """What a node keeps of one forward input: the node that made it now (later in-place rebases of the
    tensor do not change it), else the tensor (a leaf or a constant), None for a non-tensor."""
    if not isinstance(arg, Tensor):
        return None
    return arg if arg._ctx is None else arg._ctx


def _share_version(out: Tensor, base: Tensor) -> None:
    """A view op's output that shares its input's memory shares its version counter too, as in PyTorch."""
    if type(base) is not Tensor:
        return
    view, data = out.data.base, base.data
    if view is not None and (view is data or view is data.base):
        out._version = base._version
        base._version.views = True


def _versions_of_saved(saved: tuple, args: tuple, out: Tensor) -> list:
    """(version counter, current value) of every input or output tensor whose memory a saved array uses.

    Saved arrays are matched by memory, not only identity, so that a reshaped
    view of an input (as linear and layer_norm save) is watched like the input.
    """
    pairs = []
    for t in (*args, out):
        if isinstance(t, Tensor):
            data = t.data
            for s in saved:
                if s is data or (type(s) is np.ndarray and s.base is not None and _uses_memory_of(s, data)):
                    pairs.append((t._version, t._version.value))
                    break
    return pairs


def _uses_memory_of(view: np.ndarray, data: np.ndarray) -> bool:
    """True when `view` (a numpy view) overlaps the memory of `data`."""
    return view.base is (data if data.base is None else data.base) and np.may_share_memory(view, data)


def sum_to_shape(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast gradient back to `shape` (the reverse of numpy broadcasting)."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1
    )
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


def _topological_order(root: Function) -> list:
    """Nodes reachable from root, each after every node that consumes it (iterative, no recursion)."""
    order: list = []
    visited: set = set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in visited:
            continue
        visited.add(node)
        stack.append((node, True))
        for parent in getattr(node, "parents", ()):
            if isinstance(parent, Function) and parent not in visited:
                stack.append((parent, False))
    order.reverse()
    return order


def backward(root: Tensor, grad: np.ndarray | None = None, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf) into the `.grad` of every leaf that requires grad.

    Gradients add up across calls, as in PyTorch: zero them between steps. The
    graph is freed afterwards unless `retain_graph=True`.
    """
    if not root.requires_grad:
        raise AutogradError("backward: the tensor does not require grad and has no graph")
    if grad is None:
        if root.data.size != 1:
            raise AutogradError(
                f"backward: the output has shape {root.shape}; pass a gradient of that shape "
                "(backward without one works only on a single-element tensor)"
            )
        grad = np.ones_like(root.data)
    else:
        grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=root.dtype)
        if grad.shape != root.shape:
            raise AutogradError(f"backward: gradient of shape {grad.shape} for an output of shape {root.shape}")
    if root._ctx is None:
        _accumulate_leaf(root, grad)
        return
    grads = {root._ctx: grad}
    owned: dict = {}
    for node in _topological_order(root._ctx):
        g = grads.pop(node, None)
        if g is None:
            continue
        owned.pop(node, None)
        _run_node(node, g, grads, retain_graph, owned)


def _run_node(node: Function, g: np.ndarray, grads: dict, retain_graph: bool, owned: dict) -> None:
    """Call one node's backward and hand each input gradient to its parent.

    A node's gradients from several consumers are summed into one array the
    engine made (`owned[node]`), in place after the first sum: a per-head model
    hands one input twelve gradients, and a new array per sum costs more than
    the additions.
    """
    if not hasattr(node, "parents"):
        raise AutogradError(
            "backward: trying to go through the graph a second time; its saved arrays were freed. "
            "Pass retain_graph=True to the first backward call"
        )
    if node._saved_versions:
        node._check_versions()
    if node._retain is not None:
        _accumulate_leaf(node._retain, g)
    if node.sums_into:
        node.grad_into = [_running_sum(p, grads, owned) for p in node.parents]
    node.grad_owned = type(g) is np.ndarray and g.base is None and sys.getrefcount(g) <= _SOLE_REFS
    in_grads = type(node).backward(node, g)
    if not isinstance(in_grads, tuple):
        in_grads = (in_grads,)
    parents = node.parents
    if len(in_grads) < len(parents):
        raise AutogradError(
            f"backward of {type(node).__name__} returned {len(in_grads)} gradients for {len(parents)} inputs"
        )
    for parent, needed, gi in zip(parents, node.needs_input_grad, in_grads):
        if not needed or gi is None:
            continue
        if not isinstance(parent, Function):
            if parent._grad is not None and gi is parent._grad.data:
                continue  # the node added into the leaf's gradient
            if gi.shape != parent.data.shape:
                gi = sum_to_shape(gi, parent.data.shape)
            if parent._grad is None and _unshared(gi, _LOOP_REFS) and gi.dtype == parent.data.dtype:
                parent._grad = Tensor._wrap(gi)  # the leaf's first gradient, an array nothing else holds: no copy
            else:
                _accumulate_leaf(parent, gi)
            continue
        if gi.shape != parent._shape:
            gi = sum_to_shape(gi, parent._shape)
        if parent not in grads:
            grads[parent] = gi
            if _unshared(gi, _LOOP_REFS):
                owned[parent] = gi  # later gradients of parent add into it
        else:
            acc = grads[parent]
            if owned.get(parent) is acc:
                if gi is not acc:  # (gi is acc: the node added its gradient into the sum it was offered)
                    if acc.dtype == gi.dtype:
                        acc += gi
                    else:
                        _sum_into_new(grads, owned, parent, acc + gi)
            elif _unshared(gi, _LOOP_REFS) and gi.dtype == acc.dtype:
                gi += acc  # the sum goes into the new gradient's own array, which then takes later sums
                grads[parent] = owned[parent] = gi
            else:
                _sum_into_new(grads, owned, parent, acc + gi)
    if not retain_graph:
        node.__dict__.clear()  # frees saved arrays and parents; a second backward finds no `parents`


def _refs(x: Any) -> int:
    return sys.getrefcount(x)


def _unshared(g: Any, refs: int) -> bool:
    """True for a writeable array with at most `refs` references (as its caller's pattern counts them) whose memory
    no other array shares (g owns it, or is a reshape of an array only g refers to): nothing else (a saved tensor,
    another node, the program, another view) can see a write into it."""
    if type(g) is not np.ndarray or sys.getrefcount(g) > refs or not g.flags.writeable:
        return False
    base = g.base
    return base is None or (type(base) is np.ndarray and base.base is None and sys.getrefcount(base) <= 3)


def _running_sum(parent: Any, grads: dict, owned: dict) -> np.ndarray | None:
    """The sum so far of parent's gradient that a node may add into, or None: a leaf's .grad (added into in place
    anyway), an array the engine made, or one that only `grads` still holds (a backward gave one array to several
    inputs, as x + residual does, and the others have used it), which the engine then owns: no pass of its own."""
    if not isinstance(parent, Function):
        grad = getattr(parent, "_grad", None)
        usable = grad is not None and grad.data.shape == parent.data.shape and grad.data.flags.writeable
        return grad.data if usable else None
    acc = owned.get(parent)
    if acc is None and _unshared(grads.get(parent), _GRADS_REFS):
        acc = owned[parent] = grads[parent]
    return acc


def _sole_refs() -> int:
    """References to an array held only by backward's loop and _run_node's argument (as _run_node counts them)."""
    x = np.empty(1)
    return _refs(x)


def _loop_refs() -> int:
    """References to a fresh array a backward returned, as _unshared counts them in _run_node's loop over in_grads."""
    for _, _, gi in zip((None,), (True,), (np.empty(1),)):
        return _refs(gi)
    return 0


def _grads_refs() -> int:
    """References to an array held only by a dict, as _unshared counts them called on grads.get(parent)."""
    grads = {0: np.empty(1)}
    return _refs(grads.get(0))


_SOLE_REFS = _sole_refs()
_LOOP_REFS = _loop_refs()
_GRADS_REFS = _grads_refs()


def _sum_into_new(grads: dict, owned: dict, ctx: Function, total: Any) -> None:
    """Store a new gradient sum of node ctx; an array the engine made (not a numpy scalar) takes later sums in place."""
    grads[ctx] = total
    if type(total) is np.ndarray:
        owned[ctx] = total
    else:
        owned.pop(ctx, None)


def _accumulate_leaf(leaf: Tensor, g: np.ndarray) -> None:
    """Add g into leaf.grad (a Tensor); the first gradient is copied so that every leaf owns its array."""
    grad = leaf._grad
    if grad is None:
        leaf._grad = Tensor._wrap(np.array(g, dtype=leaf.data.dtype, copy=True))
    else:
        grad.data += g
