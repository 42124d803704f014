"""The causal character GPT of the text task: learned positions, pre-LN blocks, a head tied to the embedding.

GPT-2-shaped (Radford et al. 2019, minGPT/nanoGPT), on microtensor's fused ops:
a token embedding (V, D) that is also the output head's weight, learned
position embeddings (max_len, D), `n_blocks` blocks of causal multi-head
self-attention and a GELU feed-forward net (LayerNorm before each, or after
with pre_ln off), a final LayerNorm, logits (B, T, V). Dropout falls on the
embeddings and on each sublayer's output (not on the attention weights).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import microtensor as mt
import microtensor.nn as nn
import microtensor.nn.functional as F
from microtensor import _backend, ops
from microtensor.ops.gelu import _gelu_forward
from microtensor.ops.layernorm import _add_layernorm_forward, _layernorm_forward

from .config import ModelConfig
from .model import FeedForward, LayerNorm, _normal, _zeros

__all__ = ["GPT"]

_EPS = 1e-5  # LayerNorm's (F.layer_norm's default)


class CausalSelfAttention(nn.Module):
    """Fused QKV projection, causal attention (each position sees itself and the past), output projection."""

    def __init__(self, config: ModelConfig, rng: np.random.Generator, dropout_rng: np.random.Generator) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads, self.p, self.dropout_rng = config.n_heads, config.dropout, dropout_rng
        self.qkv_weight, self.qkv_bias = _normal(rng, 3 * d, d), _zeros(3 * d)
        self.proj_weight, self.proj_bias = _normal(rng, d, d), _zeros(d)

    def forward(self, x: mt.Tensor, need_weights: bool = False) -> tuple[mt.Tensor, mt.Tensor | None]:
        """x (B, T, D) -> output (B, T, D) and, if needed, the attention weights (B, H, T, T), detached."""
        qkv = F.linear(x, self.qkv_weight, self.qkv_bias)
        out = F.self_attention(qkv, self.n_heads, is_causal=True, need_weights=need_weights)
        y, weights = out if need_weights else (out, None)
        y = F.linear(y, self.proj_weight, self.proj_bias)
        return F.dropout(y, self.p, self.training, self.dropout_rng), weights


class GPTBlock(nn.Module):
    """x + attn(ln1(x)), then x + ffn(ln2(x)) (pre-LN); with pre_ln off, LayerNorm after each residual add."""

    def __init__(self, config: ModelConfig, rng: np.random.Generator, dropout_rng: np.random.Generator) -> None:
        super().__init__()
        self.pre_ln = config.pre_ln
        self.ln1 = LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config, rng, dropout_rng)
        self.ln2 = LayerNorm(config.d_model)
        self.ffn = FeedForward(config, rng, dropout_rng)

    def forward(self, x: mt.Tensor, need_weights: bool = False) -> tuple[mt.Tensor, mt.Tensor | None]:
        """x (B, T, D) -> (x, attention weights (B, H, T, T) if needed)."""
        if self.pre_ln:
            y, weights = self.attn(self.ln1(x), need_weights)
            x = x + y
            return x + self.ffn(self.ln2(x)), weights
        y, weights = self.attn(x, need_weights)
        x = self.ln1(y, x)  # LayerNorm(x + y) in one fused op
        return self.ln2(self.ffn(x), x), weights


class GPT(nn.Module):
    """Next-character logits (B, T, vocab) of ids (B, T); config.max_len is the block size."""

    def __init__(self, config: ModelConfig, generator: np.random.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        rng = generator if generator is not None else np.random.default_rng(0)
        self.dropout_rng = np.random.default_rng(rng.integers(2**63))
        self.tok_emb = _normal(rng, config.vocab_size, config.d_model)
        self.pos_emb = _normal(rng, config.max_len, config.d_model)
        self.blocks = nn.ModuleList(GPTBlock(config, rng, self.dropout_rng) for _ in range(config.n_blocks))
        self.ln_f = LayerNorm(config.d_model)

    def check_ids(self, ids: Any) -> np.ndarray:
        """ids as an int64 array (B, T) with 1 <= T <= max_len and every id in the vocabulary; ValueError otherwise."""
        ids = np.asarray(ids.numpy() if isinstance(ids, mt.Tensor) else ids)
        if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
            raise ValueError(f"GPT: ids must be integers of shape (batch, length), got {ids.dtype} {ids.shape}")
        if ids.shape[1] > self.config.max_len:
            raise ValueError(f"GPT: length {ids.shape[1]} exceeds the block size {self.config.max_len}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(f"GPT: ids must be in [0, {self.config.vocab_size}), got {ids.min()}..{ids.max()}")
        return ids.astype(np.int64, copy=False)

    def forward(self, ids: Any, targets: Any = None, return_attention: bool = False) -> Any:
        """Logits (B, T, V); with targets (B, T), (logits, mean cross-entropy); with return_attention, + weights.

        The attention weights are one (B, H, T, T) numpy array per block.
        """
        ids = self.check_ids(ids)
        x = F.embedding(ids, self.tok_emb) + self.pos_emb[: ids.shape[1]]
        x = F.dropout(x, self.config.dropout, self.training, self.dropout_rng)
        attention = []
        for block in self.blocks:
            x, weights = block(x, return_attention)
            if return_attention:
                attention.append(weights.numpy())
        logits = F.linear(self.ln_f(x), self.tok_emb)
        out: tuple[Any, ...] = (logits,)
        if targets is not None:
            out += (self.loss(logits, targets),)
        if return_attention:
            out += (attention,)
        return out[0] if len(out) == 1 else out

    @staticmethod
    def loss(logits: mt.Tensor, targets: Any) -> mt.Tensor:
        """Mean cross-entropy (nats per character) of logits (B, T, V) against targets (B, T)."""
        targets = np.asarray(targets.numpy() if isinstance(targets, mt.Tensor) else targets, dtype=np.int64)
        if targets.shape != logits.shape[:2]:
            raise ValueError(f"GPT: targets of shape {targets.shape} for logits {logits.shape}; expected (B, T)")
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    # ---- generation (SAMPLE, issue 11 item 2): the key/value cache and incremental decoding go below ----

    def new_cache(self, batch: int) -> np.ndarray:
        """Room for the keys and values of `batch` sequences of max_len positions: (blocks, 2, B, H, max_len, D/H)."""
        c = self.config
        return np.zeros((c.n_blocks, 2, batch, c.n_heads, c.max_len, c.d_model // c.n_heads), dtype=np.float32)

    def decode(self, ids: np.ndarray, cache: np.ndarray, start: int) -> np.ndarray:
        """Logits (B, V) after ids (B, n) at positions start..start+n-1, given the cache of positions < start.

        The new positions' keys and values go into the cache and each new query attends to the cached
        ones, so a token costs O(start) instead of recomputing all start + 1 positions. The kernels run on
        the arrays themselves (no Tensors, no graph): a token's arithmetic is small enough that the Python
        around each op is most of its cost. Call in eval mode (no dropout).
        """
        end = start + ids.shape[1]
        if not 0 <= start < end <= self.config.max_len:
            raise ValueError(f"GPT.decode: positions {start}..{end - 1} outside the block size {self.config.max_len}")
        B, n = ids.shape
        x = (self.tok_emb.data[ids] + self.pos_emb.data[start:end]).reshape(B * n, -1)
        for block, kv in zip(self.blocks, cache, strict=True):
            if block.pre_ln:
                x = x + self._attend(block.attn, _norm(block.ln1, x), kv, start, B)
                x = x + _feed_forward(block.ffn, _norm(block.ln2, x))
            else:
                x = _norm(block.ln1, self._attend(block.attn, x, kv, start, B), x)
                x = _norm(block.ln2, _feed_forward(block.ffn, x), x)
        return _linear(_norm(self.ln_f, np.ascontiguousarray(x.reshape(B, n, -1)[:, -1])), self.tok_emb)

    @staticmethod
    def _attend(attn: CausalSelfAttention, x: np.ndarray, kv: np.ndarray, start: int, batch: int) -> np.ndarray:
        """CausalSelfAttention of the new positions' rows x (B * n, D), their keys and values stored in kv[:, :, :,
        start:]."""
        (rows, D), H = x.shape, attn.n_heads
        n = rows // batch
        end = start + n
        qkv = _linear(x, attn.qkv_weight, attn.qkv_bias).reshape(batch, n, 3, H, D // H)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)
        kv[0, :, :, start:end], kv[1, :, :, start:end] = k, v
        # A query sees itself and the past: all the cache for one new position, a causal square from position 0,
        # else a mask (n, end)
        mask = np.arange(end) <= np.arange(start, end)[:, None] if start and n > 1 else None
        sdpa = ops.ScaledDotProductAttention  # its forward on arrays: the checks of the user's cache, no graph
        y = sdpa.forward(sdpa(), q, kv[0, :, :, :end], kv[1, :, :, :end], mask, is_causal=not start and n > 1)
        return _linear(y.transpose(0, 2, 1, 3).reshape(rows, D), attn.proj_weight, attn.proj_bias)

    def generate(
        self, ids: Any, steps: int, pick: Callable[[np.ndarray], np.ndarray], cache: bool = True
    ) -> Iterator[np.ndarray]:
        """Yield `steps` next ids (B,) after the prompts ids (B, T), each chosen by `pick` from logits (B, V).

        The context holds at most max_len positions: when the next one would not fit, it restarts from its
        last max_len // 2 (positions are absolute, so a window sliding by one would have to recompute every
        position at every token). With the cache only the new positions are computed (O(T) a token, and an
        O(T^2) refill every max_len / 2 tokens); without it, the model recomputes the whole context every token
        (O(T^2), for checking). Both see the same contexts, so they give the same tokens. Call in eval mode.
        """
        size = self.config.max_len
        seq = self.check_ids(np.asarray(ids)[..., -size:])
        kv, start, done = (self.new_cache(len(seq)) if cache else None), 0, 0
        for _ in range(steps):
            if kv is None:
                with mt.no_grad():
                    logits = self(seq[:, start:]).numpy()[:, -1]
            else:
                logits, done = self.decode(seq[:, start + done :], kv, done), seq.shape[1] - start
            chosen = np.asarray(pick(logits), dtype=np.int64)
            yield chosen
            seq = np.concatenate([seq, chosen[:, None]], axis=1)
            if seq.shape[1] - start > size:
                start, done = seq.shape[1] - max(size // 2, 1), 0


def _linear(x: np.ndarray, weight: nn.Parameter, bias: nn.Parameter | None = None) -> np.ndarray:
    """x @ weight.T + bias of rows x (N, in) by the backend's linear (which checks the shapes)."""
    return _backend.K.linear(x, weight.data, None if bias is None else bias.data)


def _norm(ln: LayerNorm, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
    """ln(x), or ln(x + residual) in one pass, of contiguous rows (N, D) by the kernel's entry points (the op's
    checks cost more than normalising a row): the shapes are checked here, the dtypes there."""
    w, b = ln.weight.data, ln.bias.data
    if not w.shape == b.shape == x.shape[1:]:
        raise ValueError(f"GPT.decode: LayerNorm weight {w.shape} and bias {b.shape} for rows of shape {x.shape}")
    if residual is None:
        return _layernorm_forward(x, w, b, _EPS)[0]
    return _add_layernorm_forward(x, residual, w, b, _EPS)[1]


def _feed_forward(ffn: FeedForward, x: np.ndarray) -> np.ndarray:
    """The feed-forward net (without its dropout) of rows x (N, D)."""
    return _linear(_gelu_forward(_linear(x, ffn.fc_weight, ffn.fc_bias)), ffn.proj_weight, ffn.proj_bias)
