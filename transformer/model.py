"""The seed transformer: embeddings + sinusoidal positions, N attention/FFN blocks, answer at the end.

minGPT-shaped, written on microtensor's public API with its fused ops
(linear, scaled-dot-product attention, layer_norm, gelu, dropout,
embedding). Every component can be switched off for ablations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import microtensor as mt
import microtensor.nn as nn
import microtensor.nn.functional as F

from .config import ABLATIONS, ModelConfig

__all__ = ["ABLATIONS", "ModelConfig", "Transformer", "sinusoidal_table"]


def sinusoidal_table(max_len: int, d_model: int) -> np.ndarray:
    """The fixed positional encodings of Vaswani et al.: sin on even, cos on odd dimensions."""
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    freq = np.exp(-math.log(10000.0) * np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    table = np.zeros((max_len, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq[: d_model // 2])
    return table.astype(np.float32)


def _normal(rng: np.random.Generator, *shape: int, std: float = 0.02) -> nn.Parameter:
    return nn.Parameter(rng.normal(0.0, std, shape).astype(np.float32))


def _zeros(*shape: int) -> nn.Parameter:
    return nn.Parameter(np.zeros(shape, dtype=np.float32))


class LayerNorm(nn.Module):
    """LayerNorm with learned scale and shift (an identity when the ablation turns normalisation off)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(np.ones(dim, dtype=np.float32))
        self.bias = _zeros(dim)

    def forward(self, x: mt.Tensor, residual: mt.Tensor | None = None) -> mt.Tensor:
        """layer_norm(x), or layer_norm(x + residual) in one fused op."""
        if residual is None:
            return F.layer_norm(x, self.weight.shape[0], self.weight, self.bias)
        return F.add_layer_norm(x, residual, self.weight.shape[0], self.weight, self.bias)


class SelfAttention(nn.Module):
    """Multi-head self-attention: fused QKV projection, fused masked attention, output projection."""

    def __init__(
        self, config: ModelConfig, rng: np.random.Generator, dropout_rng: np.random.Generator
    ) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads, self.p, self.dropout_rng = config.n_heads, config.dropout, dropout_rng
        self.qkv_weight, self.qkv_bias = _normal(rng, 3 * d, d), _zeros(3 * d)
        self.proj_weight, self.proj_bias = _normal(rng, d, d), _zeros(d)

    def forward(
        self, x: mt.Tensor, mask: np.ndarray, last_only: bool = False
    ) -> tuple[mt.Tensor, np.ndarray]:
        """x (B, T, D) and key mask (B, 1, 1, T) -> output (B, T, D) and weights (B, H, T, T).

        With last_only only the last position queries (output (B, 1, D), weights (B, H, 1, T)): all the
        head needs, and the attention of the other T - 1 queries is never computed.
        """
        qkv = F.linear(x, self.qkv_weight, self.qkv_bias)
        y, weights = F.self_attention(qkv, self.n_heads, mask=mask, need_weights=True, last_only=last_only)
        y = F.linear(y, self.proj_weight, self.proj_bias)
        return F.dropout(y, self.p, self.training, self.dropout_rng), weights.numpy()


class MeanPool(nn.Module):
    """The no_attention ablation: every position receives the mean of the non-pad positions."""

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads

    def forward(
        self, x: mt.Tensor, mask: np.ndarray, last_only: bool = False
    ) -> tuple[mt.Tensor, np.ndarray]:
        keys = mask[:, 0, 0, :].astype(np.float32)  # (B, T)
        share = keys / keys.sum(axis=1, keepdims=True)
        pooled = (x * mt.tensor(share[:, :, None])).sum(axis=1, keepdims=True)
        B, T = keys.shape
        weights = np.broadcast_to(share[:, None, None, :], (B, self.n_heads, T, T))
        return (pooled if last_only else pooled.expand(*x.shape)), np.ascontiguousarray(weights)


class FeedForward(nn.Module):
    """Linear (d -> d_ff), GELU, linear (d_ff -> d), dropout."""

    def __init__(
        self, config: ModelConfig, rng: np.random.Generator, dropout_rng: np.random.Generator
    ) -> None:
        super().__init__()
        d, h = config.d_model, config.d_ff
        self.p, self.dropout_rng = config.dropout, dropout_rng
        self.fc_weight, self.fc_bias = _normal(rng, h, d), _zeros(h)
        self.proj_weight, self.proj_bias = _normal(rng, d, h), _zeros(d)

    def forward(self, x: mt.Tensor, record: list | None = None) -> mt.Tensor:
        hidden = F.gelu(F.linear(x, self.fc_weight, self.fc_bias), approximate="tanh")
        if record is not None:
            record.append(hidden.numpy().copy())
        y = F.linear(hidden, self.proj_weight, self.proj_bias)
        return F.dropout(y, self.p, self.training, self.dropout_rng)


class Block(nn.Module):
    """Attention then FFN, each with a residual add and LayerNorm (after the add, or before with pre_ln)."""

    def __init__(
        self, config: ModelConfig, rng: np.random.Generator, dropout_rng: np.random.Generator
    ) -> None:
        super().__init__()
        self.config = config
        self.attn = (
            MeanPool(config.n_heads) if config.no_attention else SelfAttention(config, rng, dropout_rng)
        )
        self.ffn = None if config.no_ffn else FeedForward(config, rng, dropout_rng)
        norm = not config.no_layernorm
        self.ln1 = LayerNorm(config.d_model) if norm else None
        self.ln2 = LayerNorm(config.d_model) if norm and self.ffn is not None else None

    def _sublayer(self, x: mt.Tensor, fn: Any, ln: LayerNorm | None, last_only: bool = False) -> Any:
        """x + fn(x) with the LayerNorm placed by pre_ln; returns (new x, whatever fn returned beside)."""
        h = ln(x) if ln is not None and self.config.pre_ln else x
        out = fn(h)
        y, extra = out if isinstance(out, tuple) else (out, None)
        residual = None if self.config.no_residual else x[:, -1:, :] if last_only else x
        if ln is not None and not self.config.pre_ln:
            return ln(y, residual), extra  # the residual add fused into the LayerNorm
        return (y if residual is None else residual + y), extra

    def forward(
        self, x: mt.Tensor, mask: np.ndarray, record: list | None = None, last_only: bool = False
    ) -> tuple[mt.Tensor, np.ndarray]:
        """x (B, T, D) -> (x, attention weights); FFN hidden values are appended to `record` when given.

        last_only computes the output of the last position only, (B, 1, D), for the final block.
        """
        x, weights = self._sublayer(x, lambda h: self.attn(h, mask, last_only), self.ln1, last_only)
        if self.ffn is not None:
            x, _ = self._sublayer(x, lambda h: self.ffn(h, record), self.ln2)
        elif record is not None:
            record.append(np.zeros((*x.shape[:2], 0), dtype=np.float32))
        return x, weights


class Transformer(nn.Module):
    """Embedding + positions, `n_blocks` blocks, a linear head on the last position: logits (B, vocab)."""

    def __init__(
        self, config: ModelConfig | None = None, generator: np.random.Generator | None = None
    ) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        rng = generator if generator is not None else np.random.default_rng(0)
        self.dropout_rng = np.random.default_rng(rng.integers(2**63))
        self.tok_emb = _normal(rng, config.vocab_size, config.d_model)
        self.register_buffer("pos_table", sinusoidal_table(config.max_len, config.d_model), persistent=False)
        self.blocks = nn.ModuleList(Block(config, rng, self.dropout_rng) for _ in range(config.n_blocks))
        self.ln_f = LayerNorm(config.d_model) if config.pre_ln and not config.no_layernorm else None
        self.head_weight, self.head_bias = (
            _normal(rng, config.vocab_size, config.d_model),
            _zeros(config.vocab_size),
        )

    def _prepare(self, ids: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
        """ids (B, T) int64 and the key mask (B, T) bool, checked against the config."""
        ids = np.asarray(ids.numpy() if isinstance(ids, mt.Tensor) else ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"Transformer: ids must have shape (batch, length), got {ids.shape}")
        if ids.shape[1] > self.config.max_len:
            raise ValueError(f"Transformer: length {ids.shape[1]} exceeds max_len {self.config.max_len}")
        mask = ids != 0 if mask is None else np.asarray(mask.numpy() if isinstance(mask, mt.Tensor) else mask)
        if mask.shape != ids.shape or not mask.any(axis=1).all():
            raise ValueError(
                f"Transformer: mask of shape {mask.shape} for ids {ids.shape}, each row needs a token"
            )
        return ids, mask.astype(bool, copy=False)

    def embed(self, ids: np.ndarray, mask: np.ndarray) -> mt.Tensor:
        """Token embeddings plus sinusoidal positions counted from each row's first real token."""
        x = F.embedding(ids, self.tok_emb)
        if self.config.no_posenc:
            return x
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        return x + mt.tensor(self.pos_table[positions])

    def forward(self, ids: Any, mask: Any = None, return_attention: bool = False) -> Any:
        """Logits (B, vocab) for the answer, read from the last position (the ')' after left padding)."""
        logits, attention = self._run(ids, mask, None, full=return_attention)
        return (logits, attention) if return_attention else logits

    def _run(
        self, ids: Any, mask: Any, record: list | None, full: bool = True
    ) -> tuple[mt.Tensor, list[np.ndarray]]:
        """Logits and attention weights; unless `full`, the last block works on the last position only."""
        ids, mask = self._prepare(ids, mask)
        x = self.embed(ids, mask)
        key_mask = mask[:, None, None, :]
        attention = []
        for i, block in enumerate(self.blocks):
            last_only = not full and record is None and i == len(self.blocks) - 1
            x, weights = block(x, key_mask, record, last_only)
            attention.append(weights)
        last = x[:, -1, :]
        if self.ln_f is not None:
            last = self.ln_f(last)
        return F.linear(last, self.head_weight, self.head_bias), attention

    def ffn_activations(self, ids: Any, mask: Any = None) -> list[np.ndarray]:
        """Post-GELU FFN hidden values (B, T, d_ff) per block (width 0 with no_ffn), in eval mode, no grad."""
        record: list[np.ndarray] = []
        was_training = self.training
        self.eval()
        try:
            with mt.no_grad():
                self._run(ids, mask, record)
        finally:
            self.train(was_training)
        return record
