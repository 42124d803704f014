"""Every built-in op as one Function: forward and backward on numpy arrays."""

from .attention import ScaledDotProductAttention, SelfAttention
from .cross_entropy import CrossEntropy
from .dropout import Dropout
from .elementwise import (
    Abs,
    Add,
    Cast,
    Clamp,
    Cos,
    Div,
    Exp,
    Log,
    Maximum,
    Minimum,
    Mul,
    Neg,
    Pow,
    Relu,
    Sigmoid,
    Sin,
    Sqrt,
    Sub,
    Tanh,
    Where,
)
from .embedding import Embedding
from .gelu import Gelu, GeluErf
from .layernorm import AddLayerNorm, LayerNorm
from .linear import Linear
from .masked_fill import MaskedFill
from .matmul import MatMul
from .reduce import CumSum, Max, Mean, Min, Norm, Sum, Var
from .shape import BroadcastTo, Cat, Gather, GetItem, Permute, Reshape, Stack
from .softmax import LogSoftmax, Softmax

__all__ = [
    "Abs", "Add", "AddLayerNorm", "BroadcastTo", "Cast", "Cat", "Clamp", "Cos", "CrossEntropy", "CumSum", "Div",
    "Dropout", "Embedding", "Exp", "Gather", "Gelu", "GeluErf", "GetItem", "LayerNorm", "Linear", "Log", "LogSoftmax",
    "MaskedFill", "MatMul", "Max", "Maximum", "Mean", "Min", "Minimum", "Mul", "Neg", "Norm", "Permute", "Pow",
    "Relu", "Reshape", "ScaledDotProductAttention", "SelfAttention", "Sigmoid", "Sin", "Softmax", "Sqrt", "Stack",
    "Sub", "Sum", "Tanh", "Var", "Where",
]

from . import api  # noqa: E402, F401  (PyTorch's functional API over the Functions above)
