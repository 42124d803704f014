"""How a kernel is reached: the C backend when its extension is built, numpy otherwise.

Op code calls `_backend.K.<kernel>(...)`; `K` is the active backend module
(`reference` or `c`), both with the signatures documented in `reference.py`.
`MICROTENSOR_BACKEND=numpy|c` forces one at import; `use()` switches later.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

from . import reference

K: ModuleType = reference


def _load_c() -> ModuleType | None:
    """The C backend module, or None (with the reason) when its extension is not built."""
    try:
        from . import c
    except ImportError as err:
        return err  # type: ignore[return-value]
    return c


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
    """Cap the C kernels' threads at n (>= 1); the numpy backend has no threads of its own to cap."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected an integer >= 1, got {n!r}")
    if hasattr(K, "set_num_threads"):
        K.set_num_threads(n)


def num_threads() -> int:
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
