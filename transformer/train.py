"""Train the seed transformer on the operations task: `python -m transformer.train --out runs/NAME`.

The loop is forward, loss, backward, (clip), optimizer step, (schedule),
with evaluation, early stopping, atomic checkpoints that resume to the same
numbers, metrics as JSON lines, and a progress bar.

Metrics, one JSON object per epoch in runs/NAME/metrics.jsonl:
`train/loss` and `train/acc` are averaged over the epoch's training batches
(dropout on); `val/*` come from a full pass in eval mode; `lr` is the rate of
the epoch's last step; `grad_norm/<param>` is the L2 norm of the gradient
before clipping, averaged over every GRAD_NORM_EVERY-th step of the epoch
(sampled, to keep the step lean); `update_ratio/<param>` is
||p_end - p_start|| / ||p_start|| over the epoch; `time/epoch_s` includes
evaluation. A last line holds `test/*` and `time/train_s`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

import microtensor as mt
import microtensor.nn.functional as F
from microtensor import optim

from .data import OPS, VOCAB, Dataset, Splits, decode, make_splits, parse_arity
from .model import ABLATIONS, ModelConfig, Transformer

GRAD_NORM_EVERY = 10
EVAL_BATCH = 1024
CKPT_LAST, CKPT_BEST = "ckpt_last.npz", "ckpt_best.npz"


@dataclass
class TrainConfig:
    """Everything about a run that is not the model: data, optimisation, schedule, bookkeeping."""

    epochs: int = 50
    lr: float = 1e-3
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.0
    weight_decay: float | None = None  # None: 0.01 for adamw, 0 otherwise
    batch_size: int = 32
    schedule: str = "constant"
    warmup_epochs: int = 0
    step_size: int = 20
    gamma: float = 0.1
    grad_clip: float | None = None
    patience: int | None = None
    arity: str = "3"
    test_arity: str | None = None
    train_size: int = 10_000
    eval_size: int = 2_000
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0
    backend: str | None = None
    threads: int | None = None
    diagnostics: bool = True
    diagnostics_epochs: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 30, 50])


# ---- configuration and command line ----------------------------------------------------------


def _positive(kind: type) -> Any:
    """An argparse type accepting only values > 0."""

    def convert(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    convert.__name__ = f"positive {kind.__name__}"
    return convert


def _non_negative(kind: type) -> Any:
    def convert(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    convert.__name__ = f"non-negative {kind.__name__}"
    return convert


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.replace("/", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three fractions like 0.6,0.2,0.2, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three fractions like 0.6,0.2,0.2, got {text!r}")
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def _arity(text: str) -> str:
    try:
        parse_arity(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _ablations(text: str) -> list[str]:
    names = [n.strip().replace("-", "_") for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ABLATIONS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown ablation {bad[0]!r}; choose from {', '.join(ABLATIONS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command line; flags left out keep the value of --config, the resumed run, or the default."""
    p = argparse.ArgumentParser(
        prog="python -m transformer.train",
        description="Train the seed transformer on the operations task (Max(5,3,9) -> 9).",
        argument_default=argparse.SUPPRESS,
    )
    t, m = TrainConfig(), ModelConfig()
    run = p.add_argument_group("run")
    run.add_argument("--out", default="runs/seed", help="run directory (default: runs/seed)")
    run.add_argument("--resume", action="store_true", default=False, help="continue from OUT/ckpt_last.npz")
    run.add_argument("--config", help="JSON file of settings ({'model': {...}, 'train': {...}} or flat)")
    run.add_argument(
        "--seed", type=int, help=f"seed of data split, init, dropout and order (default {t.seed})"
    )
    run.add_argument("--backend", choices=["c", "numpy"], help="kernel backend (default: C when built)")
    run.add_argument("--threads", type=_positive(int), help="kernel threads (MICROTENSOR_NUM_THREADS)")
    run.add_argument("--quiet", action="store_true", default=False, help="no progress bar")
    run.add_argument(
        "--no-diagnostics", dest="diagnostics", action="store_false", help="record no diagnostics"
    )
    run.add_argument(
        "--diagnostics-epochs",
        type=_int_list,
        help="epochs at which diagnostics are recorded (default 1,5,10,20,30,50)",
    )
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=_positive(int), help=f"default {t.epochs}")
    opt.add_argument("--lr", type=_positive(float), help=f"learning rate (default {t.lr})")
    opt.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], help="default adam, betas (0.9, 0.999)")
    opt.add_argument("--momentum", type=_non_negative(float), help="SGD momentum (default 0: plain SGD)")
    opt.add_argument("--weight-decay", type=_non_negative(float), help="default 0.01 for adamw, else 0")
    opt.add_argument("--batch-size", type=_positive(int), help=f"default {t.batch_size}")
    opt.add_argument(
        "--schedule",
        choices=["constant", "cosine", "step"],
        help="constant (default), cosine (linear warmup then cosine), step",
    )
    opt.add_argument(
        "--warmup-epochs", type=_non_negative(int), help="warmup of the cosine schedule (default 0)"
    )
    opt.add_argument(
        "--step-size", type=_positive(int), help=f"epochs between step decays (default {t.step_size})"
    )
    opt.add_argument("--gamma", type=_positive(float), help=f"step decay factor (default {t.gamma})")
    opt.add_argument(
        "--grad-clip", type=_positive(float), help="clip the gradient norm to this (default off)"
    )
    opt.add_argument(
        "--patience",
        type=_positive(int),
        help="stop after this many epochs without a better val loss, restore the best (default off)",
    )
    data = p.add_argument_group("data")
    data.add_argument("--arity", type=_arity, help="arguments per input: 3 (default), 2-5 or 2,4")
    data.add_argument("--test-arity", type=_arity, help="test on other arities (length generalisation)")
    data.add_argument("--train-size", type=_positive(int), help=f"training examples (default {t.train_size})")
    data.add_argument("--eval-size", type=_positive(int), help=f"max val/test inputs (default {t.eval_size})")
    data.add_argument("--split", type=_fractions, help="train/val/test fractions of the distinct inputs")
    model = p.add_argument_group("model")
    model.add_argument("--d-model", type=_positive(int), help=f"default {m.d_model}")
    model.add_argument("--n-heads", type=_positive(int), help=f"default {m.n_heads}")
    model.add_argument("--d-ff", type=_positive(int), help=f"default {m.d_ff}")
    model.add_argument("--n-blocks", type=_non_negative(int), help=f"default {m.n_blocks}")
    model.add_argument("--dropout", type=_non_negative(float), help=f"default {m.dropout}")
    model.add_argument("--max-len", type=_positive(int), help=f"default {m.max_len}")
    model.add_argument(
        "--pre-ln", action="store_true", help="LayerNorm before each sublayer (default: after)"
    )
    model.add_argument(
        "--ablate",
        type=_ablations,
        action="append",
        help=f"switch a component off (repeatable or comma list): {', '.join(ABLATIONS)}",
    )
    return p


def _apply(target: Any, values: dict[str, Any], where: str, parser: argparse.ArgumentParser) -> None:
    """Set dataclass fields from a dict, rejecting unknown names."""
    names = {f.name for f in fields(target)}
    for key, value in values.items():
        if key not in names:
            parser.error(f"{where}: unknown setting {key!r}")
        setattr(target, key, tuple(value) if isinstance(getattr(target, key), tuple) else value)


def _load_config_file(path: str, parser: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:
    """{'model': ..., 'train': ...} from a JSON file; flat files are split by field name."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        parser.error(f"--config {path}: {err}")
    if not isinstance(raw, dict):
        parser.error(f"--config {path}: expected a JSON object")
    if set(raw) <= {"model", "train"}:
        return {"model": raw.get("model", {}), "train": raw.get("train", {})}
    model_names = {f.name for f in fields(ModelConfig)}
    return {
        "model": {k: v for k, v in raw.items() if k in model_names},
        "train": {k: v for k, v in raw.items() if k not in model_names},
    }


def resolve_config(
    args: argparse.Namespace, parser: argparse.ArgumentParser, stored: dict | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """Defaults, then --config, then the resumed run's config, then the flags given on the command line."""
    model_cfg, train_cfg = ModelConfig(), TrainConfig()
    layers = [_load_config_file(args.config, parser)] if "config" in args else []
    layers += [stored] if stored else []
    for layer in layers:
        _apply(model_cfg, layer.get("model", {}), "config", parser)
        _apply(train_cfg, layer.get("train", {}), "config", parser)
    flags = vars(args)
    model_names = {f.name for f in fields(ModelConfig)}
    for key, value in flags.items():
        if key in model_names:
            setattr(model_cfg, key, value)
        elif key in {f.name for f in fields(TrainConfig)}:
            setattr(train_cfg, key, value)
    for name in (n for group in flags.get("ablate", []) for n in group):
        setattr(model_cfg, name, True)
    try:
        _validate(model_cfg, train_cfg, parser)
    except TypeError as err:
        parser.error(f"a setting has the wrong type ({err})")
    return model_cfg, train_cfg


def _validate(model_cfg: ModelConfig, cfg: TrainConfig, parser: argparse.ArgumentParser) -> None:
    """Reject bad values (also those that came from a config file) with parser.error: exit code 2."""
    try:
        model_cfg.__post_init__()
        parse_arity(cfg.arity)
        if cfg.test_arity is not None:
            parse_arity(cfg.test_arity)
    except ValueError as err:
        parser.error(str(err))
    checks = [
        (cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}"),
        (cfg.lr > 0, f"lr must be > 0, got {cfg.lr}"),
        (cfg.batch_size >= 1, f"batch size must be >= 1, got {cfg.batch_size}"),
        (cfg.optimizer in ("adam", "adamw", "sgd"), f"unknown optimizer {cfg.optimizer!r}"),
        (cfg.schedule in ("constant", "cosine", "step"), f"unknown schedule {cfg.schedule!r}"),
        (cfg.warmup_epochs < cfg.epochs or cfg.warmup_epochs == 0, "warmup epochs must be fewer than epochs"),
        (cfg.grad_clip is None or cfg.grad_clip > 0, f"grad clip must be > 0, got {cfg.grad_clip}"),
        (cfg.patience is None or cfg.patience >= 1, f"patience must be >= 1, got {cfg.patience}"),
        (cfg.train_size >= 1 and cfg.eval_size >= 1, "train and eval sizes must be >= 1"),
        (cfg.momentum >= 0 and (cfg.weight_decay or 0) >= 0, "momentum and weight decay must be >= 0"),
        (cfg.backend in (None, "c", "numpy"), f"unknown backend {cfg.backend!r}"),
        (
            model_cfg.max_len
            >= 2 * max(parse_arity(cfg.test_arity or cfg.arity) + parse_arity(cfg.arity)) + 2,
            f"max_len {model_cfg.max_len} is too short for arity {cfg.arity} / {cfg.test_arity}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)


# ---- checkpoints -------------------------------------------------------------------------------


def _json_array(value: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)


def _from_json_array(array: np.ndarray) -> Any:
    return json.loads(np.asarray(array, dtype=np.uint8).tobytes().decode())


def save_checkpoint(
    path: Path,
    model: Transformer,
    optimizer: Any,
    meta: dict[str, Any],
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """Model, optimizer, and a JSON `meta` (config, progress, RNG, scheduler, early stopping), atomically."""
    state = {f"model/{k}": v for k, v in model.state_dict().items()}
    state.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    state.update(extra or {})
    state["meta"] = _json_array(meta)
    mt.save(state, path)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a checkpoint written by save_checkpoint."""
    arrays = mt.load(path)
    if "meta" not in arrays:
        raise ValueError(f"{path}: not a transformer checkpoint (no 'meta' entry)")
    return _from_json_array(arrays.pop("meta")), arrays


def _section(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_model(path: str | os.PathLike) -> Transformer:
    """Rebuild the model stored in a checkpoint (its config is in the checkpoint), in eval mode."""
    meta, arrays = read_checkpoint(path)
    model = Transformer(ModelConfig.from_dict(meta["config"]["model"]))
    model.load_state_dict(_section(arrays, "model/"))
    return model.eval()


# ---- the pieces of a run -------------------------------------------------------------------------


def make_optimizer(model: Transformer, cfg: TrainConfig) -> Any:
    params = list(model.parameters())
    if cfg.optimizer == "sgd":
        return optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay or 0.0)
    if cfg.optimizer == "adamw":
        decay = 0.01 if cfg.weight_decay is None else cfg.weight_decay
        return optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=decay)
    return optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay or 0.0)


def make_scheduler(optimizer: Any, cfg: TrainConfig, steps_per_epoch: int) -> Any:
    """A per-step schedule (None for constant): warmup + cosine to 0, or step decay every step_size epochs."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "step":
        return optim.lr_scheduler.StepLR(
            optimizer, step_size=cfg.step_size * steps_per_epoch, gamma=cfg.gamma
        )
    if cfg.schedule != "cosine":
        return None
    warmup = cfg.warmup_epochs * steps_per_epoch
    cosine = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1))
    if warmup == 0:
        return cosine
    ramp = optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup)
    return optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


@mt.no_grad()
def evaluate(model: Transformer, data: Dataset, details: bool = False) -> dict[str, Any]:
    """Loss and accuracy (overall, per op) in eval mode; with details, predictions and losses per input."""
    was_training = model.training
    model.eval()
    preds, losses = [], []
    for start in range(0, len(data), EVAL_BATCH):
        part = slice(start, start + EVAL_BATCH)
        logits = model(data.ids[part], data.mask[part])
        losses.append(F.cross_entropy(logits, data.targets[part], reduction="none").numpy())
        preds.append(logits.numpy().argmax(axis=1))
    model.train(was_training)
    pred, loss = np.concatenate(preds), np.concatenate(losses).astype(np.float64)
    correct = pred == data.targets
    out: dict[str, Any] = {"loss": float(loss.mean()), "acc": float(correct.mean())}
    for i, op in enumerate(OPS):
        rows = data.ops == i
        if rows.any():
            out[f"acc/{op}"] = float(correct[rows].mean())
    if details:
        out["pred"], out["losses"] = pred, loss
    return out


class _Interrupt:
    """Turns Ctrl-C into a flag checked between steps, so a checkpoint is never taken mid-update."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _Interrupt:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@dataclass
class _EpochStats:
    """Running sums of one epoch, plain floats so the step stays cheap; saved in mid-epoch checkpoints."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0
    norm_samples: int = 0
    grad_norms: list[float] = field(default_factory=list)
    seconds: float = 0.0


class Trainer:
    """One run: data, model, optimizer, schedule, and the bookkeeping that makes it resumable."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, run_dir: Path, quiet: bool = False) -> None:
        self.model_cfg, self.cfg, self.run_dir, self.quiet = model_cfg, cfg, run_dir, quiet
        mt.manual_seed(cfg.seed)
        self.data: Splits = make_splits(
            cfg.arity, cfg.train_size, cfg.eval_size, cfg.split, cfg.test_arity, cfg.seed
        )
        self.model = Transformer(model_cfg, np.random.default_rng(cfg.seed))
        self.names = [name for name, _ in self.model.named_parameters()]
        self.params = list(self.model.parameters())
        self.optimizer = make_optimizer(self.model, cfg)
        self.steps_per_epoch = -(-len(self.data.train) // cfg.batch_size)
        self.scheduler = make_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best = {"val_loss": math.inf, "epoch": 0, "bad_epochs": 0}
        self.stats = _EpochStats(grad_norms=[0.0] * len(self.params))
        self.epoch_start = [p.data.copy() for p in self.params]
        self.train_seconds = 0.0
        self.recorder = self._make_recorder()

    # ---- state ----
    def meta(self) -> dict[str, Any]:
        return {
            "config": {"model": self.model_cfg.__dict__.copy(), "train": asdict(self.cfg)},
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "dropout_rng": self.model.dropout_rng.bit_generator.state,
            "best": self.best,
            "stats": asdict(self.stats),
            "train_seconds": self.train_seconds,
        }

    def save(self, name: str) -> None:
        extra = {}
        if self.step_in_epoch:
            extra = {f"epoch_start/{i}": a for i, a in enumerate(self.epoch_start)}
        save_checkpoint(self.run_dir / name, self.model, self.optimizer, self.meta(), extra)

    def restore(self, path: Path) -> None:
        """Load a checkpoint of this run: weights, optimizer, schedule, RNG, progress, epoch sums."""
        meta, arrays = read_checkpoint(path)
        self.model.load_state_dict(_section(arrays, "model/"))
        self.optimizer.load_state_dict(_section(arrays, "optim/"))
        if self.scheduler is not None and meta["scheduler"] is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        self.model.dropout_rng.bit_generator.state = meta["dropout_rng"]
        self.epoch, self.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        self.global_step, self.best, self.train_seconds = (
            meta["global_step"],
            meta["best"],
            meta["train_seconds"],
        )
        self.stats = _EpochStats(**meta["stats"])
        starts = _section(arrays, "epoch_start/")
        self.epoch_start = (
            [starts[str(i)] for i in range(len(self.params))]
            if starts
            else [p.data.copy() for p in self.params]
        )

    def _make_recorder(self) -> Any:
        if not self.cfg.diagnostics:
            return None
        try:
            from .diagnostics import DiagnosticsRecorder
        except ImportError:
            return None
        return DiagnosticsRecorder(self.run_dir, epochs=self.cfg.diagnostics_epochs)

    # ---- the loop ----
    def order(self, epoch: int) -> np.ndarray:
        """The order of an epoch, a function of (seed, epoch) only: a resumed run sees the same batches."""
        return np.random.default_rng([self.cfg.seed, 1, epoch]).permutation(len(self.data.train))

    def train_step(self, index: np.ndarray) -> float:
        """One step on the examples at `index`; returns the loss (before the update)."""
        data = self.data.train
        logits = self.model(data.ids[index], data.mask[index])
        loss = F.cross_entropy(logits, data.targets[index])
        value = loss.item()
        if not math.isfinite(value):
            return value
        self.optimizer.zero_grad(set_to_none=False)  # Adam keeps gradients as views of one flat buffer
        loss.backward()
        sample = self.step_in_epoch % GRAD_NORM_EVERY == 0 or self.step_in_epoch == self.steps_per_epoch - 1
        if sample:
            self._record_grad_norms()
        if self.cfg.grad_clip is not None:
            optim.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        stats = self.stats
        stats.loss_sum += value * len(index)
        stats.correct += int((logits.numpy().argmax(axis=1) == data.targets[index]).sum())
        stats.count += len(index)
        return value

    def _record_grad_norms(self) -> None:
        norms = self.stats.grad_norms
        for i, p in enumerate(self.params):
            g = p.grad.data.ravel() if p.grad is not None else np.zeros(1, np.float32)
            norms[i] += math.sqrt(float(np.dot(g, g)))
        self.stats.norm_samples += 1

    def epoch_metrics(self, val: dict[str, Any], seconds: float) -> dict[str, Any]:
        s = self.stats
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.global_step,
            "train/loss": s.loss_sum / max(s.count, 1),
            "train/acc": s.correct / max(s.count, 1),
        }
        row.update({f"val/{k}": v for k, v in val.items()})
        row["lr"] = float(self.optimizer.param_groups[0]["lr"])
        for name, total in zip(self.names, s.grad_norms, strict=False):
            row[f"grad_norm/{name}"] = total / max(s.norm_samples, 1)
        for name, p, start in zip(self.names, self.params, self.epoch_start, strict=False):
            row[f"update_ratio/{name}"] = float(
                np.linalg.norm(p.data - start) / (np.linalg.norm(start) + 1e-12)
            )
        row["time/epoch_s"] = seconds
        return row

    def run(self, interrupt: _Interrupt) -> int:
        """Train to cfg.epochs (or early stop); 0 when done, 1 on a NaN loss, 130 when interrupted."""
        while self.epoch < self.cfg.epochs:
            status = self._train_epoch(interrupt)
            if status:
                return status
            stop = self._end_epoch()
            if interrupt.requested:
                self._say(
                    f"interrupted after epoch {self.epoch}; checkpoint saved: {self.run_dir / CKPT_LAST}"
                )
                return 130
            if stop:
                self._say(f"early stopping: val loss has not improved for {self.cfg.patience} epochs")
                break
        self._finish()
        return 0

    def _train_epoch(self, interrupt: _Interrupt) -> int:
        """The steps of the current epoch from `step_in_epoch` on; nonzero when the run must stop."""
        self.model.train()
        order, bs = self.order(self.epoch + 1), self.cfg.batch_size
        bar = self._bar()
        started = time.perf_counter()
        try:
            while self.step_in_epoch < self.steps_per_epoch:
                index = order[self.step_in_epoch * bs : (self.step_in_epoch + 1) * bs]
                loss = self.train_step(index)
                if not math.isfinite(loss):
                    self._say(
                        f"loss became {loss} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}; "
                        f"stopping (last good checkpoint: {self.run_dir / CKPT_LAST}, epoch {self.epoch})"
                    )
                    return 1
                self.step_in_epoch += 1
                self.global_step += 1
                self._update_bar(bar, loss)
                if interrupt.requested:
                    self.stats.seconds += time.perf_counter() - started
                    self.train_seconds += time.perf_counter() - started
                    self.save(CKPT_LAST)
                    self._say(
                        f"interrupted at epoch {self.epoch + 1}, step {self.step_in_epoch}; "
                        f"checkpoint saved: {self.run_dir / CKPT_LAST} (continue with --resume)"
                    )
                    return 130
        finally:
            if bar is not None:
                bar.close()
        self.stats.seconds += time.perf_counter() - started
        self.train_seconds += time.perf_counter() - started
        return 0

    def _end_epoch(self) -> bool:
        """Validate, log, checkpoint, record diagnostics; True when early stopping says stop."""
        started = time.perf_counter()
        self.epoch += 1
        val = evaluate(self.model, self.data.val)
        improved = val["loss"] < self.best["val_loss"]
        if improved:
            self.best = {"val_loss": val["loss"], "epoch": self.epoch, "bad_epochs": 0}
        else:
            self.best["bad_epochs"] += 1
        self.train_seconds += time.perf_counter() - started
        row = self.epoch_metrics(val, self.stats.seconds + time.perf_counter() - started)
        self._append_metrics(row)
        self._say(self._summary(row))
        self.step_in_epoch = 0
        self.stats = _EpochStats(grad_norms=[0.0] * len(self.params))
        self.epoch_start = [p.data.copy() for p in self.params]
        if improved:
            self.save(CKPT_BEST)
        self.save(CKPT_LAST)
        if self.recorder is not None:
            self.recorder.on_epoch_end(self.epoch, self.model)
        return self.cfg.patience is not None and self.best["bad_epochs"] >= self.cfg.patience

    def _finish(self) -> None:
        """Restore the best weights (early stopping), test, write the last metrics line and predictions."""
        if self.cfg.patience is not None and self.best["epoch"] != self.epoch:
            _, arrays = read_checkpoint(self.run_dir / CKPT_BEST)
            self.model.load_state_dict(_section(arrays, "model/"))
            self._say(f"restored the best weights (epoch {self.best['epoch']})")
        if self.recorder is not None and hasattr(self.recorder, "on_train_end"):
            self.recorder.on_train_end(self.epoch, self.model)
        test = evaluate(self.model, self.data.test, details=True)
        row = {
            "epoch": self.epoch,
            **{f"test/{k}": v for k, v in test.items() if k not in ("pred", "losses")},
        }
        row["time/train_s"] = self.train_seconds
        self._append_metrics(row)
        self._write_predictions(test)
        self._report_test(row, test)

    # ---- output ----
    def _bar(self) -> Any:
        if self.quiet:
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            leave=False,
            dynamic_ncols=True,
            desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
            file=sys.stderr,
            mininterval=0.2,
        )

    def _update_bar(self, bar: Any, loss: float) -> None:
        if bar is None:
            return
        bar.update(1)
        if self.step_in_epoch % 25 == 0:
            s = self.stats
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{s.correct / max(s.count, 1):.1%}", refresh=False)

    def _say(self, text: str) -> None:
        print(text, flush=True)

    def _summary(self, row: dict[str, Any]) -> str:
        return (
            f"epoch {row['epoch']:3d}/{self.cfg.epochs}  train loss {row['train/loss']:.4f} "
            f"acc {row['train/acc']:.1%}  val loss {row['val/loss']:.4f} acc {row['val/acc']:.1%}  "
            f"lr {row['lr']:.2e}  {row['time/epoch_s']:.1f}s"
        )

    def _append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def _write_predictions(self, test: dict[str, Any]) -> None:
        data = self.data.test
        lines = []
        for i, text in enumerate(data.texts()):
            lines.append(
                json.dumps(
                    {
                        "input": text,
                        "op": OPS[data.ops[i]],
                        "target": VOCAB[data.targets[i]],
                        "pred": VOCAB[test["pred"][i]],
                        "loss": float(test["losses"][i]),
                    }
                )
            )
        tmp = self.run_dir / "test_predictions.jsonl.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.run_dir / "test_predictions.jsonl")

    def _report_test(self, row: dict[str, Any], test: dict[str, Any]) -> None:
        per_op = "  ".join(f"{op} {row[f'test/acc/{op}']:.1%}" for op in OPS if f"test/acc/{op}" in row)
        self._say(
            f"test accuracy {row['test/acc']:.2%} on {len(self.data.test)} held-out inputs never seen "
            f"in training ({per_op}); loss {row['test/loss']:.4f}; trained in {self.train_seconds:.1f}s"
        )
        wrong = np.flatnonzero(test["pred"] != self.data.test.targets)
        for i in wrong[:5]:
            self._say(
                f"  {decode(self.data.test.ids[i])} -> predicted {VOCAB[test['pred'][i]]}, "
                f"expected {VOCAB[self.data.test.targets[i]]}"
            )
        if len(wrong) > 5:
            self._say(f"  ... {len(wrong) - 5} more mistakes in {self.run_dir / 'test_predictions.jsonl'}")


# ---- entry point -----------------------------------------------------------------------------------


def _select_backend(cfg: TrainConfig, parser: argparse.ArgumentParser) -> None:
    """Backend and thread count; the C kernels read MICROTENSOR_NUM_THREADS when their pool first starts."""
    if cfg.threads is not None:
        os.environ["MICROTENSOR_NUM_THREADS"] = str(cfg.threads)
        setter = getattr(mt.backend, "set_num_threads", None)
        if setter is not None:
            setter(cfg.threads)
    if cfg.backend is not None:
        try:
            mt.backend.use(cfg.backend)
        except ValueError as err:
            parser.error(str(err))


def _truncate_metrics(run_dir: Path, epoch: int) -> None:
    """Drop metrics lines past the checkpoint's epoch (and any test line) before resuming."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and "test/acc" not in line and json.loads(line).get("epoch", 0) <= epoch
    ]
    path.write_text("".join(line + "\n" for line in keep))


def _prepare_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Trainer:
    """Resolve the config (from the checkpoint when resuming), build the trainer, restore its state."""
    run_dir = Path(args.out)
    stored, ckpt = None, run_dir / CKPT_LAST
    if args.resume:
        if not ckpt.exists():
            parser.error(f"--resume: no checkpoint at {ckpt}")
        stored = read_checkpoint(ckpt)[0]["config"]
    model_cfg, cfg = resolve_config(args, parser, stored)
    _select_backend(cfg, parser)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        for name in ("metrics.jsonl", "test_predictions.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
    trainer = Trainer(model_cfg, cfg, run_dir, quiet=args.quiet)
    if args.resume:
        trainer.restore(ckpt)
        _truncate_metrics(run_dir, trainer.epoch)
    config = {"model": asdict(model_cfg), "train": asdict(cfg)}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return trainer


def main(argv: list[str] | None = None) -> int:
    """The `python -m transformer.train` / `microtensor-train` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    trainer = _prepare_run(args, parser)
    cfg, data = trainer.cfg, trainer.data
    print(
        f"model: {trainer.model.num_parameters():,} parameters | backend {mt.backend.name()} | "
        f"data: {len(data.train)} train examples, {len(data.val)} val and {len(data.test)} test inputs "
        f"(distinct inputs disjoint across splits) | {cfg.epochs} epochs x {trainer.steps_per_epoch} steps"
        + (f" | resuming at epoch {trainer.epoch + 1}, step {trainer.step_in_epoch}" if args.resume else ""),
        flush=True,
    )
    if trainer.recorder is not None and not args.resume and hasattr(trainer.recorder, "on_train_begin"):
        trainer.recorder.on_train_begin(trainer.model)
    try:
        with _Interrupt() as interrupt:
            return trainer.run(interrupt)
    except KeyboardInterrupt:
        print(f"interrupted; the last checkpoint is {trainer.run_dir / CKPT_LAST}", flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
