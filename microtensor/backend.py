"""Which kernel backend is active and how many threads it uses: `name()`, `use()`, `set_num_threads()`."""

from ._backend import name, num_threads, set_num_threads, use

__all__ = ["name", "num_threads", "set_num_threads", "use"]
