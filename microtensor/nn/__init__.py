"""Layers and containers, PyTorch-style."""

from . import functional, init, utils
from .layers import (
    GELU,
    CrossEntropyLoss,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    LayerNorm,
    Linear,
    MSELoss,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential

__all__ = [
    "GELU", "Dropout", "Embedding", "LayerNorm", "Linear", "Module", "ModuleDict", "ModuleList", "Parameter", "ReLU",
    "Sequential", "functional", "utils",
    "CrossEntropyLoss", "Flatten", "Identity", "MSELoss", "SiLU", "Sigmoid", "Softmax", "Tanh", "init",
]
