"""How a kernel is reached: the C backend when its extension is built, numpy otherwise.

`K` is the active backend module (`reference` or `c`): matmul and linear are `K.matmul(...)` and
`K.linear(...)`; each fused op's home (microtensor/ops/<op>.py) runs its numpy reference unless
`native(...)` says the C kernels take its arrays, and then `K.call("<kernel>", ...)`.
`MICROTENSOR_BACKEND=numpy|c` forces one at import; `use()` switches later.
The C kernels' threads: `MICROTENSOR_NUM_THREADS` when they load, `set_num_threads()`
later; both capped at the cores this process may use, with a warning.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import ModuleType

import numpy as np

from . import reference

K: ModuleType = reference
ENV_THREADS = "MICROTENSOR_NUM_THREADS"
_F32 = np.dtype(np.float32)


def _load_c() -> ModuleType | None:
    """The C backend module, or None (with the reason) when its extension is not built."""
    first = __name__ + ".c" not in sys.modules
    try:
        from . import c
    except ImportError as err:
        return err  # type: ignore[return-value]
    if first:
        _threads_from_env(c)
    return c


def native(*arrays: np.ndarray | None) -> bool:
    """Whether the C kernels take these arrays now: the C backend is active and each is float32 (None skipped);
    otherwise the op runs its numpy reference."""
    if K is reference:
        return False
    for a in arrays:
        if a is not None and a.dtype is not _F32:
            return False
    return True


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def _capped(n: int, source: str) -> int:
    """n, or the available cores with a warning naming `source` when n is more: extra threads only slow kernels."""
    cores = available_cores()
    if n > cores:
        warnings.warn(f"{source}: {n} threads is more than the {cores} cores this process may use; using {cores}",
                      stacklevel=3)
        return cores
    return n


def _threads_from_env(c: ModuleType) -> None:
    """Apply MICROTENSOR_NUM_THREADS to the C kernels; a value that is not a positive integer warns and is ignored."""
    raw = os.environ.get(ENV_THREADS, "").strip()
    if not raw:
        return
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        warnings.warn(f"{ENV_THREADS}={raw!r} is not a positive integer; ignored, the C kernels use "
                      f"{c.num_threads()} threads (the cores available)", stacklevel=4)
        return
    c.set_num_threads(_capped(n, f"{ENV_THREADS}={raw}"))


def use(name: str) -> None:
    """Make `name` ('c' or 'numpy') the active backend; 'c' fails when the extension is missing."""
    global K
    if name == "numpy":
        K = reference
        return
    if name != "c":
        raise ValueError(f"backend: unknown backend {name!r}; expected 'c' or 'numpy'")
    loaded = _load_c()
    if isinstance(loaded, ImportError):
        raise ValueError(f"backend: the C extension is not available ({loaded}); build it with pip install -e .")
    K = loaded


def set_num_threads(n: int) -> None:
    """Let the C kernels use n threads (>= 1), at most the available cores (more warns and uses those)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise TypeError(f"set_num_threads: expected an integer >= 1, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"set_num_threads: expected an integer >= 1, got {n}")
    n = _capped(int(n), "set_num_threads")
    loaded = _load_c()
    if not isinstance(loaded, ImportError):
        loaded.set_num_threads(n)


def get_num_threads() -> int:
    """How many threads the active backend's kernels may use (1 for numpy)."""
    return K.num_threads() if hasattr(K, "num_threads") else 1


def name() -> str:
    """The name of the active backend: 'c' or 'numpy'."""
    return K.NAME


def _select_at_import() -> None:
    """Pick the backend from MICROTENSOR_BACKEND, else C when built, else numpy with a warning."""
    global K
    forced = os.environ.get("MICROTENSOR_BACKEND", "").strip().lower()
    if forced:
        use(forced)
        return
    loaded = _load_c()
    if isinstance(loaded, ImportError):
        warnings.warn(f"microtensor: C kernels not built ({loaded}); using the numpy backend", stacklevel=3)
        return
    K = loaded


_select_at_import()
