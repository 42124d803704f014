"""microtensor: a reverse-mode autograd tensor library with C kernels, PyTorch-style."""

from . import backend, nn, optim, utils
from .autograd import (
    AutogradError,
    Function,
    enable_grad,
    inference_mode,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from .backend import get_num_threads, set_num_threads
from .combine import cat, stack, where
from .creation import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from .device import cuda, device
from .dtypes import (
    bool,
    double,
    float,
    float16,
    float32,
    float64,
    half,
    int,
    int8,
    int16,
    int32,
    int64,
    long,
    short,
    uint8,
)
from .gradcheck import GradcheckError, gradcheck
from .ops.api import *  # noqa: F403  (torch.max, torch.topk, torch.exp, ...: the functional API)
from .ops.api import __all__ as _functional_api
from .random import Generator, manual_seed
from .serialization import load, save
from .tensor import Tensor, split

__version__ = "0.1.0"

__all__ = [
    "AutogradError", "Function", "GradcheckError", "Tensor", "arange", "backend", "cat", "cuda", "device",
    "enable_grad",
    "full", "gradcheck", "is_grad_enabled", "load", "manual_seed", "nn", "no_grad", "ones", "ones_like",
    "optim", "rand", "rand_like", "randn", "randn_like", "save", "split", "stack", "tensor", "where",
    "zeros", "zeros_like",
    "Generator", "as_tensor", "empty", "empty_like", "eye", "from_numpy", "full_like", "linspace", "randint",
    "randperm",
    *_functional_api,
    "inference_mode", "set_grad_enabled", "bool", "double", "float", "float16", "float32", "float64", "half",
    "int", "int8", "int16", "int32", "int64", "long", "short", "uint8",
    "get_num_threads", "set_num_threads",
    "utils",
]


_UNSUPPORTED = {  # PyTorch names a user may reach for, and what to do instead
    "compile": "microtensor runs eagerly; call the model itself",
    "jit": "microtensor runs eagerly; call the model itself",
    "backends": "microtensor runs on the CPU only; nothing to configure",
    "amp": "microtensor computes in float32 (or float64); drop autocast/GradScaler",
    "autocast": "microtensor computes in float32 (or float64); drop autocast",
    "bfloat16": "use mt.float32",
    "sparse": "use dense tensors",
    "distributed": "not supported; train in one process",
}


def __getattr__(name: str):
    """Import microtensor.viz on first use (it needs graphviz); say what to use for PyTorch-only names."""
    if name == "viz":
        import importlib

        return importlib.import_module(".viz", __name__)
    hint = f": {_UNSUPPORTED[name]}" if name in _UNSUPPORTED else ""
    raise AttributeError(f"module 'microtensor' has no attribute {name!r}{hint}")
