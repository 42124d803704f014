"""Layers and containers, PyTorch-style."""

from . import functional
from .layers import GELU, Dropout, Embedding, LayerNorm, Linear, ReLU
from .module import Module, ModuleList, Parameter, Sequential

__all__ = [
    "GELU", "Dropout", "Embedding", "LayerNorm", "Linear", "Module", "ModuleList", "Parameter", "ReLU",
    "Sequential", "functional",
]
