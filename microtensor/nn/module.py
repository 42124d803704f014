"""Module: a tree of submodules owning Parameters and buffers, with state_dict, to() and train/eval, as in PyTorch."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..device import _check_device
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that a Module registers as trainable (requires_grad=True by default)."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict` returns: the keys the state lacked and the keys the model lacks."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _array(value: Any) -> np.ndarray:
    return value.data if isinstance(value, Tensor) else value


class Module:
    """Base class of layers: assigning a Parameter or a Module as an attribute registers it.

    Parameters are updated in place (`p.data[...] = ...`), so optimizers may
    keep them as views into one flat buffer.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if isinstance(value, (Parameter, Module)):
            self._unregister(name)
            (self._parameters if isinstance(value, Parameter) else self._modules)[name] = value
        elif name in self._buffers:
            self._check_buffer(name, value)
            self._buffers[name] = value
        else:
            for kind, registry in (("a Parameter", self._parameters), ("a Module", self._modules)):
                if name in registry:
                    if value is not None:
                        raise TypeError(f"{type(self).__name__}: cannot assign a {type(value).__name__} to "
                                        f"{name!r}, which holds {kind} (assign {kind} or None)")
                    registry[name] = None
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._unregister(name)
        object.__delattr__(self, name)

    def _unregister(self, name: str) -> None:
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        self._non_persistent_buffers.discard(name)

    def _check_new_name(self, name: Any, kind: str) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{type(self).__name__}: a {kind} name must be a non-empty string without '.', got {name!r}")
        if hasattr(self, name) and name not in getattr(self, f"_{kind}s"):
            raise KeyError(f"{type(self).__name__}: attribute {name!r} already exists")

    def _check_buffer(self, name: str, value: Any) -> None:
        if value is not None and not isinstance(value, (Tensor, np.ndarray)):
            kind = type(value).__name__
            raise TypeError(f"{type(self).__name__}: buffer {name!r} must be a Tensor or None, got {kind}")

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A tensor that belongs to the module but is not trained (saved in state_dict when persistent)."""
        self._check_new_name(name, "buffer")
        self._check_buffer(name, tensor)
        self._unregister(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)
        object.__setattr__(self, name, tensor)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self._register(name, param, Parameter, "parameter", self._parameters)

    def add_module(self, name: str, module: Module | None) -> None:
        self._register(name, module, Module, "module", self._modules)

    def _register(self, name: str, value: Any, kind: type, what: str, store: dict) -> None:
        """Put a Parameter or Module (or None) into its store under name, also as an attribute."""
        self._check_new_name(name, what)
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{type(self).__name__}: {name!r} must be a {kind.__name__} or None, "
                            f"got {type(value).__name__}")
        self._unregister(name)
        store[name] = value
        object.__setattr__(self, name, value)

    register_module = add_module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ---- traversal ------------------------------------------------------------------
    def named_modules(
        self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """This module and every submodule, depth first, with dotted names (a shared one once)."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if self in memo:
                return
            memo.add(self)
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen: set = set()
        for name, child in self._modules.items():
            if child is not None and child not in seen:
                seen.add(child)
                yield name, child

    def children(self) -> Iterator[Module]:
        return (m for _, m in self.named_children())

    def _named_members(self, kind: str, prefix: str, recurse: bool, remove_duplicate: bool) -> Iterator:
        seen: set[int] = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, kind).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name; a shared (tied) one once, under its first name."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        """Every buffer (persistent or not) with its dotted name."""
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        return (b for _, b in self.named_buffers(recurse=recurse))

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call fn on every submodule, then on this module (PyTorch's order, e.g. for `_init_weights`)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---- modes, devices, dtypes and gradients ---------------------------------------------
    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, bool):
            raise ValueError(f"{type(self).__name__}.train: mode must be a bool, got {mode!r}")
        object.__setattr__(self, "training", mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            p.zero_grad(set_to_none)

    def to(self, *args: Any, dtype: Any = None, device: Any = None, non_blocking: bool = False) -> Module:
        """`to(device)` (the CPU only), `to(dtype)` casting floating parameters and buffers in place, `to(tensor)`."""
        for arg in args:
            if isinstance(arg, Tensor):
                dtype = arg.dtype
            elif isinstance(arg, (np.dtype, type)) or (isinstance(arg, str) and arg in np.sctypeDict):
                dtype = arg
            else:
                device = arg
        _check_device(device, "Module.to")
        if dtype is None:
            return self
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"Module.to: only floating-point dtypes are accepted, got {dtype}")
        for module in self.modules():
            for p in module._parameters.values():
                if p is not None and p.dtype.kind == "f" and p.dtype != dtype:
                    p.data = p.data.astype(dtype)
                    if p.grad is not None:
                        p.grad = p.grad.data.astype(dtype)
            for name, b in module._buffers.items():
                if b is not None and _array(b).dtype.kind == "f" and _array(b).dtype != dtype:
                    if isinstance(b, Tensor):
                        b.data = b.data.astype(dtype)
                    else:
                        setattr(module, name, b.astype(dtype))
        return self

    def cpu(self) -> Module:
        return self

    def cuda(self, device: Any = None) -> Module:
        _check_device("cuda", "Module.cuda")
        return self

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    def num_parameters(self) -> int:
        return sum(p.data.size for p in self.parameters())

    # ---- state ------------------------------------------------------------------------
    def state_dict(self, destination: dict | None = None, prefix: str = "", keep_vars: bool = False) -> dict:
        """Every parameter and persistent buffer by dotted name (tied ones under each name), sharing memory."""
        state = {} if destination is None else destination
        for name, p in self._parameters.items():
            if p is not None:
                state[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers:
                state[prefix + name] = b.detach() if isinstance(b, Tensor) and not keep_vars else b
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(state, f"{prefix}{name}.", keep_vars)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy values into the parameters and buffers in place; every key and shape is checked first."""
        op = f"{type(self).__name__}.load_state_dict"
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: {type(self).__name__} got missing keys {missing} "
                             f"and unexpected keys {unexpected}")
        copies = []
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = np.asarray(_array(state_dict[name]))
            dest = _array(target)
            if value.shape != dest.shape:
                raise ValueError(f"{op}: {name} has shape {value.shape} in the state but {dest.shape} in the model")
            if not np.can_cast(value.dtype, dest.dtype, "same_kind"):
                raise TypeError(f"{op}: {name} has dtype {value.dtype} in the state, which cannot be copied into "
                                f"the model's {dest.dtype}")
            copies.append((target, dest, value))
        for target, dest, value in copies:
            np.copyto(dest, value, casting="same_kind")
            if isinstance(target, Tensor):
                target._version.value += 1
        return IncompatibleKeys(missing, unexpected)

    # ---- repr -------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class _ModuleSequence(Module):
    """The list protocol shared by Sequential and ModuleList: modules under the keys '0', '1', ..."""

    def _index(self, index: int) -> int:
        n = len(self._modules)
        if not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index!r} is out of range for {n} modules")
        return int(index) % n

    def _renumber(self, modules: list[Module]) -> None:
        for key in list(self._modules):
            delattr(self, key)
        for i, module in enumerate(modules):
            self.add_module(str(i), module)

    def __setitem__(self, index: int, module: Module) -> None:
        setattr(self, list(self._modules)[self._index(index)], module)

    def __delitem__(self, index: int | slice) -> None:
        modules = list(self._modules.values())
        if isinstance(index, slice):
            del modules[index]
        else:
            del modules[self._index(index)]
        self._renumber(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> _ModuleSequence:
        self.add_module(str(len(self._modules)), module)
        return self


class Sequential(_ModuleSequence):
    """Modules applied one after another; built from modules or from a dict of named modules."""

    def __init__(self, *modules: Module | Mapping[str, Module]) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], Mapping):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, index: int | slice) -> Module:
        if isinstance(index, slice):
            return Sequential(dict(list(self._modules.items())[index]))
        return list(self._modules.values())[self._index(index)]


class ModuleList(_ModuleSequence):
    """A list of modules whose parameters are registered."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        self.extend(modules or ())

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return list(self._modules.values())[self._index(index)]

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    def __add__(self, other: Iterable[Module]) -> ModuleList:
        return ModuleList([*self, *other])


class ModuleDict(Module):
    """A dict of modules whose parameters are registered, in insertion order."""

    def __init__(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        if key not in self._modules:
            raise KeyError(f"ModuleDict has no module {key!r}; it has {list(self._modules)}")
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        self[key]
        delattr(self, key)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def keys(self) -> Iterable[str]:
        return self._modules.keys()

    def items(self) -> Iterable[tuple[str, Module]]:
        return self._modules.items()

    def values(self) -> Iterable[Module]:
        return self._modules.values()

    def pop(self, key: str) -> Module:
        module = self[key]
        del self[key]
        return module

    def clear(self) -> None:
        for key in list(self._modules):
            del self[key]

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        for key, module in modules.items() if isinstance(modules, Mapping) else modules:
            self[key] = module
