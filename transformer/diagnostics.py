"""Snapshots of what the model has learned, taken during training for the report.

At a few chosen epochs `DiagnosticsRecorder` saves, in `run_dir/diagnostics/`:
the attention weights of every block and head on fixed probe inputs (and the
probes' predictions), the token-embedding matrix, and feed-forward activation
statistics (fraction of inputs on which each neuron fires, its mean, its mean
per operation). Gradient and update norms per layer are in metrics.jsonl,
written by the trainer every epoch. A snapshot is a few small forward passes
under `no_grad`, so it costs milliseconds.

A text run's `TextRecorder` saves, at about six evaluation periods, the
attention over a probe sentence of the held-out text and SAMPLE_CHARS
characters sampled after it with a fixed seed (a fraction of a second each).
"""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import microtensor as mt

from .data import OPS, VOCAB, encode_batch, format_input
from .files import read_json

DEFAULT_EPOCHS: tuple[int, ...] = (1, 5, 10, 20, 30, 50)
DEFAULT_PROBES: tuple[str, ...] = (
    "Max(5,3,9)", "First(5,3,9)", "Min(7,1,9)", "Second(2,8,4)", "Last(6,0,3)", "Max(9,9,5)", "Min(1,0,3)",
)
STATS_PER_OP = 40
PROBE_SEARCH, PROBE_CHARS = 400, 32  # text runs: the probe sentence is 32 characters of the held-out text's start
SAMPLE_CHARS, SAMPLE_TEMPERATURE = 200, 0.8  # and the sample continuing it at each snapshot


def diagnostics_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "diagnostics"


def probe_slug(probe: str) -> str:
    """A file-name-safe form of a probe: `Max(5,3,9)` -> `Max_5_3_9`."""
    return re.sub(r"[^A-Za-z0-9]+", "_", probe).strip("_")


def stats_inputs(arity: int = 3, per_op: int = STATS_PER_OP, seed: int = 1234) -> list[str]:
    """A fixed, seeded set of inputs (per_op of each operation) for the FFN activation statistics."""
    rng = np.random.default_rng(seed)
    return [format_input(op, rng.integers(0, 10, arity).tolist()) for op in OPS for _ in range(per_op)]


def _forward(model: Any, texts: Sequence[str], attention: bool) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """Logits (numpy) and optionally per-block attention for inputs of the same length."""
    batch = encode_batch(list(texts))
    if attention:
        logits, attn = model(batch.ids, mask=batch.mask, return_attention=True)
        return np.asarray(_data(logits)), [np.asarray(_data(a)) for a in attn]
    return np.asarray(_data(model(batch.ids, mask=batch.mask))), None


def _data(x: Any) -> Any:
    return x.data if isinstance(x, mt.Tensor) else x


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def find_embedding(model: Any) -> tuple[str, np.ndarray] | None:
    """(name, table) of the token-embedding parameter: the (vocab, d) matrix named like `*emb*.weight`."""
    candidates = [
        (name, p.data) for name, p in model.named_parameters()
        if p.data.ndim == 2 and p.data.shape[0] == len(VOCAB)
    ]
    named = [c for c in candidates if "emb" in c[0]]
    chosen = named or candidates
    return chosen[0] if chosen else None


class DiagnosticsRecorder:
    """Called by the trainer at each epoch end; records a snapshot at the chosen epochs.

    `final_epoch` (when the trainer knows it) is recorded too; so is epoch 0 if
    the trainer calls `on_train_begin(model)` before the first step.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        epochs: Iterable[int] = DEFAULT_EPOCHS,
        probes: Sequence[str] = DEFAULT_PROBES,
        final_epoch: int | None = None,
        arity: int = 3,
    ) -> None:
        self.dir = diagnostics_dir(run_dir)
        self.epochs = {int(e) for e in epochs}
        if final_epoch is not None:
            self.epochs.add(int(final_epoch))
        self.probes = list(probes)
        encode_batch(self.probes)  # malformed probes fail now, not at epoch 1
        self.stats_texts = stats_inputs(arity)
        self.recorded: dict[int, float] = self._previous_seconds()

    def _previous_seconds(self) -> dict[int, float]:
        """Snapshots already in the folder (a resumed run keeps them in the index)."""
        index = self.dir / "index.json"
        if not index.exists():
            return {}
        try:
            return {int(e): float(s) for e, s in json.loads(index.read_text()).get("seconds", {}).items()}
        except (ValueError, AttributeError):
            return {}

    def on_train_begin(self, model: Any) -> None:
        """Snapshot the untrained model as epoch 0 (the uniform-attention, random-embedding baseline)."""
        self.record(0, model)

    def on_epoch_end(self, epoch: int, model: Any) -> None:
        """Snapshot when `epoch` is one of the chosen epochs."""
        if epoch in self.epochs and epoch not in self.recorded:
            self.record(epoch, model)

    def on_train_end(self, epoch: int, model: Any) -> None:
        """Snapshot the last epoch trained (after early stopping, say) unless already recorded."""
        if epoch not in self.recorded:
            self.record(epoch, model)

    def record(self, epoch: int, model: Any) -> Path:
        """Write diagnostics/epoch_NNN.npz and .json; the model is left in the mode it was in."""
        start = time.perf_counter()
        was_training = bool(getattr(model, "training", False))
        model.eval()
        try:
            with mt.no_grad():
                arrays, meta = self._snapshot(model)
        finally:
            model.train(was_training)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"epoch_{epoch:03d}.npz"
        _atomic_savez(path, arrays)
        elapsed = time.perf_counter() - start
        meta.update(epoch=epoch, seconds=elapsed)
        _atomic_write_text(self.dir / f"epoch_{epoch:03d}.json", json.dumps(meta, indent=1))
        self.recorded[epoch] = elapsed
        self._write_index()
        return path

    def _snapshot(self, model: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays (attention, embedding, FFN statistics) and JSON metadata (tokens, probe predictions)."""
        arrays: dict[str, np.ndarray] = {}
        probes_meta = []
        for i, probe in enumerate(self.probes):
            logits, attn = _forward(model, [probe], attention=True)
            arrays[f"attention/{i}"] = np.stack([a[0] for a in attn]).astype(np.float32)
            probs = _softmax(logits[0].astype(np.float64))
            target = int(encode_batch([probe]).targets[0])
            pred = int(np.argmax(probs))
            probes_meta.append({
                "probe": probe, "tokens": [VOCAB[t] for t in encode_batch([probe]).ids[0]],
                "target": VOCAB[target], "pred": VOCAB[pred], "p_target": float(probs[target]),
                "p_pred": float(probs[pred]),
            })
        emb = find_embedding(model)
        if emb is not None:
            arrays["embedding"] = np.array(emb[1], dtype=np.float32)
        arrays.update(self._ffn_stats(model))
        meta = {"probes": probes_meta, "vocab": VOCAB, "ops": OPS,
                "embedding_param": emb[0] if emb is not None else None}
        return arrays, meta

    def _ffn_stats(self, model: Any) -> dict[str, np.ndarray]:
        """Per block: share of real (input, position) pairs where each FFN neuron is > 0, its mean, per op."""
        if not hasattr(model, "ffn_activations"):
            return {}
        batch = encode_batch(self.stats_texts)
        acts = model.ffn_activations(batch.ids, mask=batch.mask) if _takes_mask(model) else \
            model.ffn_activations(batch.ids)
        out: dict[str, np.ndarray] = {}
        real = batch.mask[:, :, None]
        n_real = real.sum(axis=(0, 1))
        for b, a in enumerate(acts):
            if a is None:
                continue
            a = np.asarray(_data(a), dtype=np.float32)
            out[f"ffn/{b}/frac_active"] = ((a > 0) & real).sum(axis=(0, 1)) / n_real
            out[f"ffn/{b}/mean"] = (a * real).sum(axis=(0, 1)) / n_real
            per_op = [
                (a[batch.ops == k] * real[batch.ops == k]).sum(axis=(0, 1)) / real[batch.ops == k].sum()
                for k in range(len(OPS))
            ]
            out[f"ffn/{b}/mean_per_op"] = np.stack(per_op).astype(np.float32)
        return out

    def _write_index(self) -> None:
        """diagnostics/index.json: which epochs exist, the probes, and the seconds each snapshot took."""
        index = {
            "epochs": sorted(self.recorded), "probes": self.probes,
            "seconds": {str(e): round(s, 5) for e, s in sorted(self.recorded.items())},
        }
        _atomic_write_text(self.dir / "index.json", json.dumps(index, indent=1))


class TextRecorder(DiagnosticsRecorder):
    """The recorder of a text run: at a few evaluation periods ("epochs" of the trainer), the attention over a
    probe sentence of the held-out text and a sample continuing it (fixed seed), for the report."""

    def __init__(self, run_dir: str | os.PathLike, corpus: Any, periods: int, block_size: int) -> None:
        self.dir = diagnostics_dir(run_dir)
        self.vocab, self.epochs = corpus.vocab, text_periods(periods)
        self.probes = [probe_sentence(corpus.decode(corpus.val[:PROBE_SEARCH]), min(PROBE_CHARS, block_size))]
        self.recorded = self._previous_seconds()

    def _snapshot(self, model: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Attention (blocks, heads, T, T) over the probe; SAMPLE_CHARS characters drawn after it."""
        from .sample import sample

        probe = self.probes[0]
        _, attention = model(np.array([[self.vocab.index(ch) for ch in probe]]), return_attention=True)
        text = "".join(sample(model, self.vocab, probe, SAMPLE_CHARS, SAMPLE_TEMPERATURE, seed=0))
        meta = {"probes": [{"probe": probe, "tokens": list(probe)}], "vocab": self.vocab,
                "sample": {"prompt": probe, "text": text, "temperature": SAMPLE_TEMPERATURE, "seed": 0}}
        return {"attention/0": np.stack([a[0] for a in attention]).astype(np.float32)}, meta


def text_periods(periods: int, count: int = 6) -> set[int]:
    """About `count` evaluation periods spaced geometrically (a model changes fastest early), the last among them."""
    return {int(p) for p in np.round(np.geomspace(1, max(periods, 1), count))} | {periods}


def probe_sentence(text: str, length: int = PROBE_CHARS) -> str:
    """`length` characters of `text` from the start of its second line or sentence (else from its start)."""
    starts = [i + len(mark) for mark in ("\n", ". ") if 0 <= (i := text.find(mark)) < len(text) - length]
    return text[min(starts, default=0):].lstrip()[:length]


def _takes_mask(model: Any) -> bool:
    """Whether model.ffn_activations accepts a padding mask (older signatures take only ids)."""
    import inspect

    try:
        return "mask" in inspect.signature(model.ffn_activations).parameters
    except (TypeError, ValueError):
        return False


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_epochs(run_dir: str | os.PathLike) -> dict[int, tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Every recorded snapshot: epoch -> (arrays, metadata), in epoch order; {} when none were recorded."""
    out = {}
    for npz in sorted(diagnostics_dir(run_dir).glob("epoch_[0-9][0-9][0-9].npz")):
        epoch = int(npz.stem.split("_")[1])
        meta_path = npz.with_suffix(".json")
        meta = read_json(meta_path) if meta_path.exists() else {}
        out[epoch] = (_read_snapshot(npz), meta)
    return out


def _read_snapshot(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one snapshot; ValueError naming the file when it is torn or not an .npz archive."""
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, TypeError, AttributeError, zipfile.BadZipFile):
        raise ValueError(f"{path} is torn or not a diagnostics snapshot; "
                         "restore it or delete it to report without it") from None


def export_bertviz(run_dir: str | os.PathLike, epoch: int, probe: str, write: bool = True) -> dict[str, Any]:
    """One probe's attention at one epoch in bertviz's layout: per block a (1, heads, T, T) list, and tokens.

    With `write`, also saves diagnostics/bertviz_epoch_NNN_<probe>.json. In
    bertviz: `head_view([torch.tensor(a) for a in d["attention"]], d["tokens"])`.
    """
    snapshots = load_epochs(run_dir)
    if epoch not in snapshots:
        raise ValueError(f"export_bertviz: no snapshot of epoch {epoch}; recorded: {sorted(snapshots)}")
    arrays, meta = snapshots[epoch]
    probes = [p["probe"] for p in meta.get("probes", [])]
    if probe not in probes:
        raise ValueError(f"export_bertviz: probe {probe!r} was not recorded; recorded probes: {probes}")
    i = probes.index(probe)
    attn = arrays[f"attention/{i}"]
    result = {"tokens": meta["probes"][i]["tokens"], "attention": [a[None].tolist() for a in attn],
              "epoch": epoch, "probe": probe}
    if write:
        path = diagnostics_dir(run_dir) / f"bertviz_epoch_{epoch:03d}_{probe_slug(probe)}.json"
        _atomic_write_text(path, json.dumps(result))
    return result
