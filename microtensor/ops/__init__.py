"""Every built-in op as one Function: forward and backward on numpy arrays."""

from .elementwise import (
    Abs,
    Add,
    Cast,
    Clip,
    Div,
    Exp,
    Gelu,
    Log,
    MaskedFill,
    Mul,
    Neg,
    Pow,
    Relu,
    Sigmoid,
    Sqrt,
    Sub,
    Tanh,
    Where,
)
from .matmul import MatMul
from .nn import (
    CrossEntropy,
    Dropout,
    Embedding,
    GeluErf,
    LayerNorm,
    Linear,
    LogSoftmax,
    ScaledDotProductAttention,
    SelfAttention,
    Softmax,
)
from .reduce import Max, Mean, Min, Sum, Var
from .shape import BroadcastTo, Cat, GetItem, Permute, Reshape, Stack

__all__ = [
    "Abs", "Add", "BroadcastTo", "Cast", "Cat", "Clip", "CrossEntropy", "Div", "Dropout", "Embedding",
    "Exp", "Gelu", "GeluErf", "GetItem", "LayerNorm", "Linear", "Log", "LogSoftmax", "MaskedFill", "MatMul", "Max",
    "Mean", "Min", "Mul", "Neg", "Permute", "Pow", "Relu", "Reshape", "ScaledDotProductAttention", "SelfAttention",
    "Sigmoid", "Softmax", "Sqrt", "Stack", "Sub", "Sum", "Tanh", "Var", "Where",
]
