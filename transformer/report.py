"""The training report of one run: figures under runs/NAME/figures/ and one self-contained report.html.

    python -m transformer.report runs/NAME

Reads what training wrote (config.json, metrics.jsonl, test_predictions.jsonl,
diagnostics/) and draws what the design document asks a reader to watch: the
curves against chance, accuracy per operation, confusion at the end, attention
sharpening, embeddings clustering, gradients shrinking. For a text run (--task
text): bits per character, attention over a probe sentence and samples across
training, gradients and updates, against steps. Missing pieces are reported as
notes in the page, not as tracebacks.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import OPS_ONLY
from .data import OPS, VOCAB, answer, parse
from .diagnostics import load_epochs, probe_slug
from .files import read_json

CHANCE_LOSS = math.log(len(VOCAB))
CHANCE_ACC = 0.1
ROLE_COLORS = {"digit": "#1f77b4", "operation": "#d62728", "syntax": "#2ca02c", "special": "#7f7f7f"}
THRESHOLDS = (0.5, 0.9, 0.99)


def token_role(token: str) -> str:
    """digit, operation, syntax or special: the colour of a token in the embedding plots."""
    if token.isdigit():
        return "digit"
    if token in OPS:
        return "operation"
    if token in "(),":
        return "syntax"
    return "special"


@dataclass
class RunData:
    """Everything a report is drawn from; fields stay empty when the run did not write them."""

    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[int, tuple[dict[str, np.ndarray], dict[str, Any]]] = field(default_factory=dict)
    diag_index: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> bool:
        """A text run (a causal GPT, counted in steps) rather than one of the operations task."""
        return "text" in self.config

    @property
    def x_key(self) -> str:
        """What the curves are drawn against: steps for a text run, epochs otherwise."""
        return "step" if self.text else "epoch"

    def x_of(self, epoch: int) -> int:
        """The step (text run) or epoch at the end of `epoch`, the trainer's period of a snapshot."""
        if not self.text:
            return epoch
        text = self.config["text"]
        return min(epoch * text["eval_every"], text["steps"])


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file, skipping a torn last line (a run killed mid-write)."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read a run folder; what is absent becomes a note, a torn file a ValueError naming it."""
    run = RunData(Path(run_dir))
    d = run.run_dir
    if not d.is_dir():
        raise ValueError(f"{d} is not a run folder; train first (python -m transformer.train --out {d})")
    if (d / "config.json").exists():
        run.config = read_json(d / "config.json")
    else:
        run.notes.append("config.json is missing.")
    if (d / "metrics.jsonl").exists():
        for row in _read_jsonl(d / "metrics.jsonl"):
            if any(k.startswith("test/") for k in row) or "time/train_s" in row:
                run.final.update(row)
            if "epoch" in row and any(k.startswith(("train/", "val/")) for k in row):
                run.epochs.append(row)
    else:
        run.notes.append("metrics.jsonl is missing: no curves.")
    if (d / "test_predictions.jsonl").exists():
        run.predictions = _read_jsonl(d / "test_predictions.jsonl")
    elif not run.text:
        run.notes.append("test_predictions.jsonl is missing: no confusion matrices or hardest inputs.")
    run.snapshots = load_epochs(d)
    if not run.snapshots:
        missing = "attention heatmaps or samples" if run.text else "attention, embedding or FFN figures"
        run.notes.append(f"No diagnostics were recorded (trained with --no-diagnostics?): no {missing}.")
    index = d / "diagnostics" / "index.json"
    if index.exists():
        run.diag_index = read_json(index)
    return run


def series(run: RunData, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of one metric over the epochs that logged it (steps, values for a text run)."""
    pts = [(r[run.x_key], r[key]) for r in run.epochs if r.get(key) is not None]
    if not pts:
        return np.array([]), np.array([])
    x, y = zip(*pts, strict=False)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def first_epoch_reaching(run: RunData, key: str, threshold: float) -> int | None:
    """The first epoch whose `key` is at least `threshold` (None if never)."""
    for r in run.epochs:
        if r.get(key) is not None and r[key] >= threshold:
            return int(r["epoch"])
    return None


# ---- figures ----------------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.dpi": 90})
    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _plt()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _curves(ax: Any, run: RunData, keys: Sequence[tuple[str, str]]) -> None:
    """Plot each (metric, label) that the run logged against its epochs (steps)."""
    for key, label in keys:
        x, y = series(run, key)
        if len(x):
            ax.plot(x, y, marker=".", label=label)


def fig_loss(run: RunData, out: Path) -> Path | None:
    """Train vs validation loss with the chance level ln 20."""
    if not run.epochs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    _curves(ax, run, (("train/loss", "train"), ("val/loss", "validation")))
    chance = f"chance (ln {len(VOCAB)} = {CHANCE_LOSS:.2f})"
    ax.axhline(CHANCE_LOSS, color="grey", ls="--", lw=1, label=chance)
    if "test/loss" in run.final:
        x, _ = series(run, "val/loss")
        ax.scatter([x[-1] if len(x) else 0], [run.final["test/loss"]], color="k", zorder=5,
                   label="test (final)")
    ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss", yscale="log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out / "loss.png")


def fig_accuracy(run: RunData, out: Path) -> Path | None:
    """Train vs validation accuracy with the chance level 1/10."""
    if not run.epochs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    _curves(ax, run, (("train/acc", "train"), ("val/acc", "validation")))
    ax.axhline(CHANCE_ACC, color="grey", ls="--", lw=1, label="chance (1/10)")
    if "test/acc" in run.final:
        x, _ = series(run, "val/acc")
        ax.scatter([x[-1] if len(x) else 0], [run.final["test/acc"]], color="k", zorder=5,
                   label="test (final)")
    ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out / "accuracy.png")


def fig_per_op(run: RunData, out: Path) -> Path | None:
    """Validation accuracy of each operation over epochs: which operations are learned first."""
    lines = [(op, *series(run, f"val/acc/{op}")) for op in OPS]
    lines = [ln for ln in lines if len(ln[1])]
    if not lines:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for op, x, y in lines:
        ax.plot(x, y, marker=".", label=op)
    ax.axhline(CHANCE_ACC, color="grey", ls="--", lw=1, label="chance")
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="Accuracy per operation", ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out / "accuracy_per_op.png")


def _digit(token: Any) -> int | None:
    """The digit a prediction or target names (token string, token id or int), None for non-digits."""
    if isinstance(token, str):
        return int(token) if token.isdigit() and len(token) == 1 else None
    if isinstance(token, (int, np.integer)):
        return int(token)
    return None


def op_confusion(predictions: Sequence[dict[str, Any]]) -> np.ndarray:
    """M[i, j]: the share of inputs of operation i whose prediction equals operation j's answer.

    The diagonal is accuracy per operation; a large M[Max, Min] means Max
    inputs are answered with the minimum (the document's confusion table).
    """
    hits = np.zeros((len(OPS), len(OPS)))
    counts = np.zeros(len(OPS))
    for p in predictions:
        try:
            op, args = parse(p["input"])
        except (KeyError, ValueError):
            continue
        pred = _digit(p.get("pred"))
        i = OPS.index(op)
        counts[i] += 1
        for j, other in enumerate(OPS):
            if pred is not None and len(args) >= 2:
                hits[i, j] += pred == answer(other, args)
    return hits / np.maximum(counts, 1)[:, None]


def digit_confusion(predictions: Sequence[dict[str, Any]], op: str | None = None) -> np.ndarray:
    """Counts (10, 11): true answer digit vs predicted digit; the last column counts non-digit predictions."""
    m = np.zeros((10, 11), dtype=int)
    for p in predictions:
        if op is not None and p.get("op") != op:
            continue
        t = _digit(p.get("target"))
        if t is None:
            continue
        pred = _digit(p.get("pred"))
        m[t, 10 if pred is None else pred] += 1
    return m


def fig_confusion_ops(run: RunData, out: Path) -> Path | None:
    if not run.predictions:
        return None
    plt = _plt()
    m = op_confusion(run.predictions)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    im = ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
    for i in range(len(OPS)):
        for j in range(len(OPS)):
            ax.text(j, i, f"{100 * m[i, j]:.0f}%", ha="center", va="center",
                    color="white" if m[i, j] > 0.6 else "black", fontsize=8)
    ax.set_xticks(range(len(OPS)), OPS)
    ax.set_yticks(range(len(OPS)), OPS)
    ax.set(xlabel="prediction equals the answer of", ylabel="operation asked",
           title="Test: which operation's answer the model gave\n"
                 "(answers can coincide, so rows need not sum to 1)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, out / "confusion_ops.png")


def fig_confusion_digits(run: RunData, out: Path) -> Path | None:
    """Answer digit vs predicted digit, overall and per operation (test set, end of training)."""
    if not run.predictions:
        return None
    plt = _plt()
    panels = [("all operations", None)] + [(op, op) for op in OPS]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
    for ax, (title, op) in zip(axes.flat, panels, strict=False):
        m = digit_confusion(run.predictions, op)
        rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(11), [*map(str, range(10)), "other"], fontsize=7)
        ax.set_yticks(range(10), [str(d) for d in range(10)], fontsize=7)
        acc = np.trace(m[:, :10]) / max(m.sum(), 1)
        ax.set(title=f"{title}: acc {100 * acc:.1f}% (n={m.sum()})", xlabel="predicted", ylabel="answer")
    fig.suptitle("Test confusion: answer vs predicted digit (rows normalised)")
    fig.tight_layout()
    return _save(fig, out / "confusion_digits.png")


def attention_heatmap_data(run: RunData) -> dict[tuple[str, int], dict[int, np.ndarray]]:
    """The arrays the heatmaps show: (probe, block) -> {epoch: weights (heads, T, T)} from the snapshots."""
    data: dict[tuple[str, int], dict[int, np.ndarray]] = {}
    for epoch, (arrays, meta) in run.snapshots.items():
        for i, p in enumerate(meta.get("probes", [])):
            attn = arrays.get(f"attention/{i}")
            if attn is None:
                continue
            for b in range(attn.shape[0]):
                data.setdefault((p["probe"], b), {})[epoch] = attn[b]
    return data


def _probe_tokens(run: RunData, probe: str) -> list[str]:
    for _, meta in run.snapshots.values():
        for p in meta.get("probes", []):
            if p["probe"] == probe:
                return p["tokens"]
    return []


def attention_mosaic(by_epoch: dict[int, np.ndarray]) -> tuple[np.ndarray, list[int], int]:
    """(canvas, epochs, T): heads as rows x saved epochs as columns of T x T maps, NaN gaps between."""
    epochs = sorted(by_epoch)
    heads, t = by_epoch[epochs[0]].shape[:2]
    canvas = np.full((heads * (t + 1) - 1, len(epochs) * (t + 1) - 1), np.nan)
    for c, e in enumerate(epochs):
        for h in range(heads):
            canvas[h * (t + 1): h * (t + 1) + t, c * (t + 1): c * (t + 1) + t] = by_epoch[e][h]
    return canvas, epochs, t


def fig_attention(run: RunData, out: Path, part: int = 0, parts: int = 1) -> list[Path]:
    """Per probe and block: heads as rows, saved epochs side by side, token labels on both axes.

    Drawn as one image per figure (a mosaic), which is ten times faster than a
    grid of small axes and keeps the report quick to build. `part` of `parts`
    draws every parts-th figure only, so that processes can share the work.
    """
    plt = _plt()
    import matplotlib
    from matplotlib.transforms import blended_transform_factory

    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    paths = []
    for (probe, block), by_epoch in list(attention_heatmap_data(run).items())[part::parts]:
        if run.text:  # four snapshots, first to last, keep a 32-character probe legible
            keep = sorted(by_epoch)
            by_epoch = {e: by_epoch[e] for e in (keep[round(i)] for i in np.linspace(0, len(keep) - 1, 4))}
        canvas, epochs, t = attention_mosaic(by_epoch)
        tokens = [_shown(tok) for tok in _probe_tokens(run, probe)] or [str(i) for i in range(t)]
        heads = (canvas.shape[0] + 1) // (t + 1)
        cell = min(0.19, 15 / canvas.shape[1])  # inches per token; a text run's long probe is drawn smaller
        fig, ax = plt.subplots(figsize=(cell * canvas.shape[1] + 1.6, cell * canvas.shape[0] + 1.4))
        # A text run's rows spread over up to 32 keys: a square-root colour scale shows the small weights
        norm = matplotlib.colors.PowerNorm(0.5, vmin=0, vmax=1) if run.text else matplotlib.colors.Normalize(0, 1)
        im = ax.imshow(canvas, norm=norm, cmap=cmap, interpolation="nearest")
        # Key labels under the first epoch only, query labels beside the first head only: every panel shares
        # them, and text is most of a figure's drawing time.
        size = min(6, 60 * cell)
        ax.set_xticks(range(t), tokens, rotation=90, fontsize=size)
        ax.set_yticks(range(t), tokens, fontsize=size)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        right = blended_transform_factory(ax.transAxes, ax.transData)
        for c, e in enumerate(epochs):
            ax.text(c * (t + 1) + (t - 1) / 2, -1.2, f"{run.x_key} {run.x_of(e)}", ha="center", va="bottom",
                    fontsize=8)
        for h in range(heads):
            ax.text(1.01, h * (t + 1) + (t - 1) / 2, f"head {h}", transform=right, va="center", fontsize=8,
                    rotation=-90)
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.04)
        ax.set_title(f"{probe!r}: block {block} attention (row = query, column = key)" if run.text else
                     f"{probe}: block {block} attention (row = query, column = key)", fontsize=10, pad=24)
        paths.append(_save(fig, out / f"attention_{probe_slug(probe)}_block{block}.png"))
    return paths


def _entropy(weights: np.ndarray) -> np.ndarray:
    """Row entropy in nats of attention weights (..., T)."""
    w = np.clip(weights.astype(np.float64), 1e-12, 1.0)
    return -(w * np.log(w)).sum(axis=-1)


def fig_attention_sharpness(run: RunData, out: Path) -> Path | None:
    """Mean attention entropy of the answer position per block and head over the saved epochs.

    The model reads its answer at the last position, so that row is where
    sharpening matters; 1.0 is uniform attention over the real tokens.
    """
    data = attention_heatmap_data(run)
    if not data:
        return None
    blocks = sorted({b for _, b in data})
    plt = _plt()
    fig, axes = plt.subplots(1, len(blocks), figsize=(4.5 * len(blocks), 3.4), squeeze=False)
    for ax, b in zip(axes[0], blocks, strict=False):
        per_epoch: dict[int, list[np.ndarray]] = {}
        for (_, block), by_epoch in data.items():
            if block != b:
                continue
            for e, w in by_epoch.items():
                per_epoch.setdefault(e, []).append(_entropy(w[:, -1, :]) / math.log(w.shape[-1]))
        epochs = sorted(per_epoch)
        values = np.array([np.mean(per_epoch[e], axis=0) for e in epochs])
        for h in range(values.shape[1]):
            ax.plot(epochs, values[:, h], marker="o", label=f"head {h}")
        ax.set(title=f"block {b}", xlabel="epoch", ylabel="entropy / log T (last position)", ylim=(0, 1.05))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Attention sharpening: entropy of the answer position's attention, mean over probes")
    fig.tight_layout()
    return _save(fig, out / "attention_sharpness.png")


def pca_2d(
    matrix: np.ndarray, reference: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coords (n, 2), components (2, d), explained-variance ratios) of a centred matrix, by numpy SVD.

    Signs are chosen to agree with `reference` components, so panels of
    successive epochs do not flip at random.
    """
    x = matrix.astype(np.float64) - matrix.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2].copy()
    for k in range(comps.shape[0]):
        ref = reference[k] if reference is not None else comps[k][np.argmax(np.abs(comps[k]))] * comps[k]
        if float(np.dot(comps[k], ref)) < 0:
            comps[k] = -comps[k]
    var = s**2
    return x @ comps.T, comps, var[:2] / max(var.sum(), 1e-12)


def fig_embeddings(run: RunData, out: Path) -> Path | None:
    """2-D PCA of the token embeddings at each saved epoch, tokens labelled and coloured by role."""
    epochs = [e for e, (a, _) in sorted(run.snapshots.items()) if "embedding" in a]
    if not epochs:
        return None
    plt = _plt()
    last = run.snapshots[epochs[-1]][0]["embedding"]
    _, ref, _ = pca_2d(last)
    cols = min(len(epochs), 4)
    rows = math.ceil(len(epochs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax, e in zip(axes.flat, epochs, strict=False):
        emb = run.snapshots[e][0]["embedding"]
        coords, _, ratio = pca_2d(emb, ref)
        for t, tok in enumerate(VOCAB[: len(coords)]):
            color = ROLE_COLORS[token_role(tok)]
            ax.scatter(coords[t, 0], coords[t, 1], color=color, s=18)
            ax.annotate(tok, coords[t], fontsize=7, color=color, xytext=(2, 2), textcoords="offset points")
        ax.set_title(f"epoch {e} (PC1 {100 * ratio[0]:.0f}%, PC2 {100 * ratio[1]:.0f}%)", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(epochs):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=r) for r, c in ROLE_COLORS.items()]
    fig.legend(handles=handles, loc="upper right", fontsize=8)
    fig.suptitle("Token embeddings, PCA to 2-D per epoch")
    fig.tight_layout()
    return _save(fig, out / "embeddings_pca.png")


def fig_ffn(run: RunData, out: Path) -> Path | None:
    """FFN neurons: how many fire over training, and which operations the most selective ones prefer."""
    epochs = sorted(e for e, (a, _) in run.snapshots.items() if any(k.startswith("ffn/") for k in a))
    if not epochs:
        return None
    arrays = run.snapshots[epochs[-1]][0]
    blocks = sorted({int(k.split("/")[1]) for k in arrays if k.startswith("ffn/")})
    blocks = [b for b in blocks if arrays[f"ffn/{b}/mean"].size]
    if not blocks:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, len(blocks), figsize=(5.5 * len(blocks), 6.5), squeeze=False)
    for c, b in enumerate(blocks):
        ax = axes[0, c]
        for e in epochs:
            frac = run.snapshots[e][0].get(f"ffn/{b}/frac_active")
            if frac is not None:
                ax.hist(frac, bins=20, range=(0, 1), histtype="step", label=f"epoch {e}")
        ax.set(title=f"block {b}: share of inputs on which each neuron is > 0", xlabel="fraction active",
               ylabel="neurons")
        ax.legend(fontsize=7)
        per_op = arrays[f"ffn/{b}/mean_per_op"]
        per_op = per_op - per_op.mean(axis=0, keepdims=True)
        spread = per_op.max(axis=0) - per_op.min(axis=0)
        top = np.argsort(spread)[::-1][:24]
        ax = axes[1, c]
        im = ax.imshow(per_op[:, top], aspect="auto", cmap="RdBu_r",
                       vmin=-np.abs(per_op[:, top]).max(), vmax=np.abs(per_op[:, top]).max())
        ax.set_yticks(range(len(OPS)), OPS)
        ax.set_xticks(range(len(top)), [str(n) for n in top], rotation=90, fontsize=6)
        ax.set(title=f"block {b}, epoch {epochs[-1]}: mean activation per operation minus the mean over\n"
                     "operations (the 24 neurons that differ most between operations)", xlabel="neuron")
        fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return _save(fig, out / "ffn_activations.png")


def _layer(param: str) -> str:
    """Group parameter names into layers: blocks.0.attn.qkv_weight -> blocks.0.attn."""
    if "." in param:
        return param.rsplit(".", 1)[0]
    for suffix in ("_weight", "_bias"):
        if param.endswith(suffix):
            return param[: -len(suffix)]
    return param


def _is_bias(param: str) -> bool:
    """Biases start at zero, so their update/weight ratio is meaningless (divides by ~0)."""
    return "bias" in param.rsplit(".", 1)[-1]


def layer_series(run: RunData, prefix: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per layer: epochs and `prefix/<param>` combined over the layer's parameters.

    Gradient norms combine as a root-sum-square (the layer's gradient norm);
    update ratios as the mean over the layer's non-bias parameters.
    """
    keys = sorted({k for r in run.epochs for k in r if k.startswith(prefix + "/")})
    ratio = prefix == "update_ratio"
    layers: dict[str, list[str]] = {}
    for k in keys:
        param = k[len(prefix) + 1:]
        if not (ratio and _is_bias(param)):
            layers.setdefault(_layer(param), []).append(k)
    out = {}
    for name, ks in layers.items():
        rows = [r for r in run.epochs if all(r.get(k) is not None for k in ks)]
        if not rows:
            continue
        values = np.array([[float(r[k]) for k in ks] for r in rows])
        combined = values.mean(axis=1) if ratio else np.sqrt((values**2).sum(axis=1))
        out[name] = (np.array([r[run.x_key] for r in rows]), combined)
    return out


def fig_gradients(run: RunData, out: Path) -> Path | None:
    """Gradient norm and update/weight ratio per layer over epochs (log scale): gradients shrink."""
    grads, ratios = layer_series(run, "grad_norm"), layer_series(run, "update_ratio")
    if not grads and not ratios:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, data, title in ((axes[0], grads, "gradient norm per layer (mean over sampled steps)"),
                            (axes[1], ratios, f"update / weight ratio per {_period(run)} (non-bias mean)")):
        cmap = plt.get_cmap("viridis")
        for i, (name, (x, y)) in enumerate(sorted(data.items())):
            ax.plot(x, np.maximum(y, 1e-12), label=name, color=cmap(i / max(len(data) - 1, 1)))
        ax.set(title=title, xlabel=run.x_key, yscale="log")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels() or axes[1].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "gradients.png")


def fig_lr(run: RunData, out: Path) -> Path | None:
    x, y = series(run, "lr")
    if not len(x):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.plot(x, y, marker=".")
    ax.set(title=f"Learning rate (value logged at each {_period(run)} end)", xlabel=run.x_key, ylabel="lr")
    ax.grid(alpha=0.3)
    return _save(fig, out / "lr_schedule.png")


def fig_probe_confidence(run: RunData, out: Path) -> Path | None:
    """Probability the model gives the right answer of each probe, at the saved epochs (calibration)."""
    rows: dict[str, list[tuple[int, float]]] = {}
    for e, (_, meta) in sorted(run.snapshots.items()):
        for p in meta.get("probes", []):
            rows.setdefault(p["probe"], []).append((e, p["p_target"]))
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for probe, pts in rows.items():
        x, y = zip(*pts, strict=False)
        ax.plot(x, y, marker="o", label=probe)
    ax.set(title="Probability of the correct answer for each probe", xlabel="epoch", ylabel="p(answer)",
           ylim=(0, 1.02))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out / "probe_confidence.png")


# ---- text runs -----------------------------------------------------------------------------------------


def _period(run: RunData) -> str:
    """What one row of metrics.jsonl covers: an epoch, or a text run's evaluation period."""
    return f"{run.config['text']['eval_every']}-step period" if run.text else "epoch"


def _shown(token: str) -> str:
    """A character as a readable axis label: space, newline and tab made visible."""
    return {" ": "␣", "\n": "\\n", "\t": "\\t"}.get(token, token)


def fig_bpc(run: RunData, out: Path) -> Path | None:
    """Bits per character of held-out and training text (eval mode) over steps, and the uniform guess."""
    if not run.epochs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    _curves(ax, run, (("train/bpc", "train (eval mode)"), ("val/bpc", "validation")))
    x, y = series(run, "train/loss")
    if len(x):
        ax.plot(x, y / math.log(2), ls=":", color="grey", label=f"train (mean over the {_period(run)}, dropout on)")
    vocab = run.config.get("model", {}).get("vocab_size")
    if vocab:
        ax.axhline(math.log2(vocab), color="grey", ls="--", lw=1, label=f"uniform guess (log2 {vocab})")
    ax.set(xlabel="step", ylabel="bits per character", title="Loss in bits per character")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out / "bpc.png")


def samples(run: RunData) -> list[tuple[int, str, str]]:
    """(step, prompt, sampled text) of each snapshot of a text run, in training order."""
    found = [(run.x_of(e), m["sample"]) for e, (_, m) in sorted(run.snapshots.items()) if "sample" in m]
    return [(step, s.get("prompt", ""), s.get("text", "")) for step, s in found]


def _samples_html(run: RunData) -> str:
    """Each snapshot's sample after the probe sentence (the prompt greyed)."""
    rows = samples(run)
    if not rows:
        return ""
    first = next(m["sample"] for _, m in run.snapshots.values() if "sample" in m)
    parts = [f"<h2>Samples over training</h2><p>{len(rows[0][2])} characters drawn after the probe sentence "
             f"(grey) at temperature {first.get('temperature')}, seed {first.get('seed')}: "
             "<code>python -m transformer.sample</code> draws the same way.</p>"]
    for step, prompt, text in rows:
        parts.append(f"<h3>step {step}</h3><pre class='sample'><span class='prompt'>{html.escape(prompt)}</span>"
                     f"{html.escape(text)}</pre>")
    return "".join(parts)


def text_summary_rows(run: RunData) -> list[tuple[str, str]]:
    """(label, value) lines of a text run's summary: data, final and best bits per character, timings."""
    rows: list[tuple[str, str]] = []
    text = run.config.get("text", {})
    vocab = run.config.get("model", {}).get("vocab_size")
    rows.append(("data", f"{text.get('data')} ({vocab} distinct characters; block size {text.get('block_size')})"))
    if run.epochs:
        last = run.epochs[-1]
        rows.append(("steps trained", f"{last['step']} of {text.get('steps')}"))
        rows.append(("final train / validation bits per character",
                     f"{last.get('train/bpc', float('nan')):.4f} / {last.get('val/bpc', float('nan')):.4f}"))
        best = min((r for r in run.epochs if r.get("val/bpc") is not None), key=lambda r: r["val/bpc"], default=None)
        if best is not None:
            rows.append(("best validation bits per character", f"{best['val/bpc']:.4f} (step {best['step']})"))
        if last.get("val/acc") is not None:
            rows.append(("final next-character accuracy (validation)", f"{100 * last['val/acc']:.1f}%"))
    if "time/train_s" in run.final:
        rows.append(("training wall time", f"{run.final['time/train_s']:.1f} s"))
    seconds = run.diag_index.get("seconds", {})
    if seconds:
        rows.append(("diagnostics snapshots", f"{len(seconds)} taking {sum(seconds.values()):.1f} s in all"))
    return rows


FIGURES: list[tuple[str, Callable[[RunData, Path], Any]]] = [
    ("Loss", fig_loss), ("Accuracy", fig_accuracy), ("Accuracy per operation", fig_per_op),
    ("Confusion between operations", fig_confusion_ops), ("Confusion of digits", fig_confusion_digits),
    ("Attention sharpening", fig_attention_sharpness), ("Attention heatmaps", fig_attention),
    ("Probe confidence", fig_probe_confidence), ("Embedding PCA", fig_embeddings),
    ("FFN activations", fig_ffn), ("Gradients and updates", fig_gradients),
    ("Learning-rate schedule", fig_lr),
]
TEXT_FIGURES: list[tuple[str, Callable[[RunData, Path], Any]]] = [
    ("Bits per character", fig_bpc), ("Attention heatmaps", fig_attention), ("Gradients and updates", fig_gradients),
    ("Learning-rate schedule", fig_lr),
]


# ---- text summary and HTML ---------------------------------------------------------------------------


def summary_rows(run: RunData) -> list[tuple[str, str]]:
    """(label, value) lines of the text summary: final accuracies, epochs to thresholds, timings."""
    rows: list[tuple[str, str]] = []
    f = run.final

    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * float(v):.2f}%"

    if f:
        rows.append(("test accuracy", pct(f.get("test/acc"))))
        rows.append(("test loss", f"{f['test/loss']:.4f}" if "test/loss" in f else "n/a"))
        rows.append(("test accuracy per operation", ", ".join(f"{op} {pct(f.get(f'test/acc/{op}'))}"
                                                              for op in OPS if f"test/acc/{op}" in f)))
    if run.epochs:
        last = run.epochs[-1]
        rows.append(("epochs trained", str(last["epoch"])))
        rows.append(("final train / validation accuracy",
                     f"{pct(last.get('train/acc'))} / {pct(last.get('val/acc'))}"))
        rows.append(("final train / validation loss", f"{last.get('train/loss', float('nan')):.4f} / "
                                                      f"{last.get('val/loss', float('nan')):.4f}"))
        for t in THRESHOLDS:
            e = first_epoch_reaching(run, "val/acc", t)
            rows.append((f"validation accuracy first >= {100 * t:g}%", _epoch_or_never(e)))
        for op in OPS:
            e = first_epoch_reaching(run, f"val/acc/{op}", 0.9)
            if any(f"val/acc/{op}" in r for r in run.epochs):
                rows.append((f"{op}: validation accuracy first >= 90%", _epoch_or_never(e)))
    if "time/train_s" in f:
        rows.append(("training wall time", f"{f['time/train_s']:.1f} s"))
    seconds = run.diag_index.get("seconds", {})
    if seconds:
        total = sum(seconds.values())
        share = f" ({100 * total / f['time/train_s']:.2f}% of training)" if f.get("time/train_s") else ""
        rows.append(("diagnostics snapshots", f"{len(seconds)} taking {1000 * total:.0f} ms in all{share}"))
    return rows


def _epoch_or_never(epoch: int | None) -> str:
    return "never" if epoch is None else f"epoch {epoch}"


def hardest_inputs(run: RunData, n: int = 12) -> list[dict[str, Any]]:
    """The test inputs with the highest loss (the model's worst mistakes or least confident answers)."""
    rows = [p for p in run.predictions if p.get("loss") is not None]
    return sorted(rows, key=lambda p: -float(p["loss"]))[:n]


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _probe_table(run: RunData) -> str:
    """Each probe's prediction and p(answer) at each saved epoch."""
    epochs = sorted(run.snapshots)
    probes: dict[str, dict[int, str]] = {}
    for e in epochs:
        for p in run.snapshots[e][1].get("probes", []):
            mark = "✓" if p["pred"] == p["target"] else "✗"
            probes.setdefault(p["probe"], {})[e] = f"{p['pred']} {mark} ({p['p_target']:.2f})"
    rows = [[probe, *(cells.get(e, "") for e in epochs)] for probe, cells in probes.items()]
    return _table(["probe", *(f"epoch {e}" for e in epochs)], rows)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left}th{background:#f4f4f4}img{max-width:100%;display:block;margin:.6em 0}
.note{background:#fff7e0;border-left:4px solid #f0b400;padding:.4em .8em}
code{background:#f4f4f4;padding:0 .2em}
pre.sample{white-space:pre-wrap;background:#f8f8f8;padding:.5em;border:1px solid #eee}.prompt{color:#999}
"""


def _settings(run: RunData) -> dict[str, Any]:
    """The run's config as shown: a text run's without the operations task's settings it does not use."""
    if not run.text:
        return run.config
    return {part: {k: v for k, v in values.items() if k not in OPS_ONLY} if isinstance(values, dict) else values
            for part, values in run.config.items()}


def render_html(run: RunData, figures: list[tuple[str, list[Path]]]) -> str:
    """The report page: summary, notes, every figure inline as base64 PNG, probe and hardest-input tables."""
    title = f"Training report: {run.run_dir.name}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<h2>Summary</h2>" + _table(["", ""], text_summary_rows(run) if run.text else summary_rows(run)))
    for note in run.notes:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    for name, paths in figures:
        if paths:
            parts.append(f"<h2>{html.escape(name)}</h2>" + "".join(_img_tag(p) for p in paths))
    parts.append(_samples_html(run))
    if run.snapshots and not run.text:
        parts.append("<h2>Probe predictions over training</h2><p>prediction, ✓/✗, and p(correct answer)</p>")
        parts.append(_probe_table(run))
    hard = hardest_inputs(run)
    if hard:
        parts.append("<h2>Hardest test inputs (highest loss)</h2>")
        parts.append(_table(["input", "operation", "answer", "predicted", "loss"],
                            [[p.get("input"), p.get("op"), p.get("target"), p.get("pred"),
                              f"{float(p['loss']):.3f}"] for p in hard]))
    if run.config:
        parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(_settings(run), indent=1)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _figures(run: RunData) -> list[tuple[str, Callable[[RunData, Path], Any]]]:
    """The figures of the run's task, in page order."""
    return TEXT_FIGURES if run.text else FIGURES


def _tasks(run: RunData) -> list[tuple[str, Callable[..., Any], dict[str, int]]]:
    """Figure tasks: each of the run's figures, with the attention heatmaps (the slowest) split in two."""
    return [(name, fn, {}) for name, fn in _figures(run) if fn is not fig_attention] + [
        ("Attention heatmaps", fig_attention, {"part": k, "parts": 2}) for k in range(2)
    ]


_JOB: tuple[RunData, Path] | None = None  # what a forked worker draws from


def _draw(index: int) -> tuple[str, list[Path], str | None]:
    """Draw task `index` of the run's tasks: (figure name, PNG paths, a note if it failed)."""
    run, out = _JOB
    name, fn, kwargs = _tasks(run)[index]
    try:
        result = fn(run, out, **kwargs)
    except Exception as exc:  # one broken figure must not lose the whole report
        return name, [], f"{name}: not drawn ({type(exc).__name__}: {exc})"
    return name, result if isinstance(result, list) else [result] if result is not None else [], None


def _draw_all(run: RunData, out: Path) -> list[tuple[str, list[Path], str | None]]:
    """Every figure task, on two forked processes where the platform forks (matplotlib is CPU-bound)."""
    global _JOB
    _JOB = (run, out)
    _plt()
    tasks = _tasks(run)
    order = sorted(range(len(tasks)), key=lambda i: tasks[i][1] is not fig_attention)  # slowest first
    try:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(2) as pool:
            drawn = dict(zip(order, pool.map(_draw, order, chunksize=1)))
    except (ValueError, OSError):  # no fork here (or no processes): draw in this one
        drawn = {i: _draw(i) for i in order}
    return [drawn[i] for i in range(len(tasks))]


def build_report(run_dir: str | os.PathLike) -> Path:
    """Draw every figure that the run's files allow and write report.html; returns its path."""
    run = load_run(run_dir)
    out = run.run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    by_name: dict[str, list[Path]] = {}
    for name, paths, note in _draw_all(run, out):
        by_name.setdefault(name, []).extend(paths)
        if note:
            run.notes.append(note)
    figures = [(name, by_name[name]) for name, _ in _figures(run) if name in by_name]
    path = run.run_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_html(run, figures), encoding="utf-8")
    os.replace(tmp, path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transformer.report", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a run folder written by transformer.train, e.g. runs/seed")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.run_dir)
    except ValueError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"report: cannot read or write {err.filename or args.run_dir}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
