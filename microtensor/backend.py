"""Which kernel backend is active: `name()` says, `use('c' | 'numpy')` switches."""

from ._backend import name, use

__all__ = ["name", "use"]
