"""Which kernel backend is active and how many threads it uses: `name()`, `use()`, `set_num_threads()`."""

from ._backend import available_cores, get_num_threads, name, set_num_threads, use

__all__ = ["available_cores", "get_num_threads", "name", "set_num_threads", "use"]
