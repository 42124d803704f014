"""The operations task, the seed transformer and its trainer, built on microtensor's public API."""

from .data import OPS, VOCAB, answer, decode, encode, make_splits
from .model import ModelConfig, Transformer

__all__ = ["OPS", "VOCAB", "ModelConfig", "Transformer", "answer", "decode", "encode", "make_splits"]
