"""Train the seed transformer on the operations task: `python -m transformer.train --out runs/NAME`,
or a causal character GPT on a text file: `... --task text --data FILE.txt --out runs/NAME --steps N`.

The loop is forward, loss, backward, (clip), optimizer step, (schedule),
with evaluation, early stopping, atomic checkpoints that resume to the same
numbers, metrics as JSON lines, and a progress bar. Settings are declared in
transformer/config.py, checkpoints and the resume rules live in
transformer/checkpoint.py.

Metrics, one JSON object per epoch in runs/NAME/metrics.jsonl:
`train/loss` and `train/acc` are averaged over the epoch's training batches
(dropout on); `val/*` come from a full pass in eval mode; `lr` is the rate of
the epoch's last step; `grad_norm/<param>` is the L2 norm of the gradient
before clipping, averaged over every GRAD_NORM_EVERY-th step of the epoch
(sampled, to keep the step lean); `update_ratio/<param>` is
||p_end - p_start|| / ||p_start|| over the epoch; `time/epoch_s` includes
evaluation. A last line holds `test/*` and `time/train_s`.

A text run (TextTrainer) counts steps; an "epoch" is its evaluation period of
`eval_every` steps, whose row adds `train/bpc` and `val/bpc`: bits per character
over `eval_tokens` characters of each split in eval mode (`train/loss` stays the
running mean in nats with dropout on). Its last line holds `time/train_s`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import microtensor as mt
import microtensor.nn.functional as F
from microtensor import optim

from .checkpoint import (
    CKPT_BEST,
    CKPT_LAST,
    METRICS,
    CheckpointError,
    RunError,
    check_resume,
    clear_run,
    holds_run,
    load_model,
    load_weights,
    locked,
    read_checkpoint,
    reconcile_metrics,
    remove_stale_temps,
    section,
    split_digest,
    write_checkpoint,
    write_text_atomic,
)
from .config import (
    TASKS,
    ModelConfig,
    SettingError,
    TextConfig,
    TrainConfig,
    as_dict,
    build_parser,
    from_layers,
    read_config_file,
    text_from_layers,
)
from .data import OPS, VOCAB, Dataset, Splits, decode, make_splits
from .distributed import SOLO, Group, PeerStopped, join
from .gpt import GPT
from .model import Transformer
from .text import Corpus, TextError, eval_starts, load_corpus, random_starts, windows

__all__ = [
    "CKPT_BEST",
    "CKPT_LAST",
    "TrainConfig",
    "TextTrainer",
    "Trainer",
    "build_parser",
    "evaluate",
    "load_model",
    "main",
    "read_checkpoint",
    "resolve_config",
]

GRAD_NORM_EVERY = 10
EVAL_BATCH = 1024


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
    return warmup_cosine(optimizer, cfg.warmup_epochs * steps_per_epoch, total)


def warmup_cosine(optimizer: Any, warmup: int, total: int) -> Any:
    """Linear warmup over `warmup` steps, then cosine to 0 at step `total`."""
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

    group: Group = SOLO  # the MPI ranks of a --data-parallel run (transformer/distributed.py); rank 0 writes

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, run_dir: Path, quiet: bool = False) -> None:
        self.model_cfg, self.cfg, self.run_dir, self.quiet = model_cfg, cfg, run_dir, quiet
        mt.manual_seed(cfg.seed)
        self._prepare()
        self.names = [name for name, _ in self.model.named_parameters()]
        self.params = list(self.model.parameters())
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = self._make_scheduler()
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best = {"val_loss": math.inf, "epoch": 0, "bad_epochs": 0}
        self.stats = _EpochStats(grad_norms=[0.0] * len(self.params))
        self.epoch_start = [p.data.copy() for p in self.params]
        self.train_seconds = 0.0
        self.last_row: dict[str, Any] | None = None  # the metrics of the last finished epoch
        self.recorder = self._make_recorder()

    def _prepare(self) -> None:
        """Data, model, the shape of an epoch and the data's digest (what a text run does differently)."""
        cfg = self.cfg
        self.data: Splits = make_splits(
            cfg.arity, cfg.train_size, cfg.eval_size, cfg.split, cfg.test_arity, cfg.seed
        )
        self.model: Any = Transformer(self.model_cfg, np.random.default_rng(cfg.seed))
        self.epochs, self.examples_per_step = cfg.epochs, cfg.batch_size
        self.steps_per_epoch = -(-len(self.data.train) // cfg.batch_size)
        self.split_sha256 = split_digest(self.data)

    def _make_scheduler(self) -> Any:
        return make_scheduler(self.optimizer, self.cfg, self.steps_per_epoch)

    def steps_in_epoch(self) -> int:
        """Steps of the epoch under way."""
        return self.steps_per_epoch

    def smallest_step(self) -> int:
        """The fewest examples a step (or micro-batch) takes: the last step of an epoch may be short."""
        return len(self.data.train) % self.examples_per_step or self.examples_per_step

    def settings(self) -> dict[str, dict[str, Any]]:
        """The run's settings in their JSON form (config.json, checkpoints)."""
        return as_dict(self.model_cfg, self.cfg)

    # ---- state ----
    def meta(self) -> dict[str, Any]:
        return {
            "config": self.settings(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "dropout_rng": self.model.dropout_rng.bit_generator.state,
            "best": self.best,
            "stats": asdict(self.stats),
            "train_seconds": self.train_seconds,
            "metrics_row": self.last_row,
            "split_sha256": self.split_sha256,
            "ranks": self.group.size,
        }

    def save(self, name: str) -> None:
        """Model, optimizer and `meta()` (plus the epoch's start weights mid-epoch), written atomically."""
        if not self.group.root:
            return
        arrays = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        optimizer = self.optimizer.state_dict()  # PyTorch's layout: arrays by parameter index, groups as JSON
        arrays.update({f"optim/{i}/{k}": v for i, state in optimizer["state"].items() for k, v in state.items()})
        if self.step_in_epoch:
            arrays.update({f"epoch_start/{i}": a for i, a in enumerate(self.epoch_start)})
        write_checkpoint(self.run_dir / name, arrays, {**self.meta(), "optim_groups": optimizer["param_groups"]})

    def restore(self, path: Path) -> dict[str, Any]:
        """Load a checkpoint of this run: weights, optimizer, schedule, RNG, progress, epoch sums; its meta."""
        meta, arrays = read_checkpoint(path)
        load_weights(self.model, arrays, path)
        try:
            state: dict[int, dict[str, Any]] = {}
            for key, value in section(arrays, "optim/").items():
                index, _, name = key.partition("/")
                state.setdefault(int(index), {})[name] = value
            self.optimizer.load_state_dict({"state": state, "param_groups": meta["optim_groups"]})
            if self.scheduler is not None and meta["scheduler"] is not None:
                self.scheduler.load_state_dict(meta["scheduler"])
            self.model.dropout_rng.bit_generator.state = meta["dropout_rng"]
            self.epoch, self.step_in_epoch = int(meta["epoch"]), int(meta["step_in_epoch"])
            self.global_step, self.best, self.train_seconds = (
                meta["global_step"],
                meta["best"],
                meta["train_seconds"],
            )
            self.stats = _EpochStats(**meta["stats"])
            self.last_row = meta.get("metrics_row")
            starts = section(arrays, "epoch_start/")
            self.epoch_start = (
                [starts[str(i)] for i in range(len(self.params))]
                if starts
                else [p.data.copy() for p in self.params]
            )
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: cannot resume from it ({type(err).__name__}: {err})") from None
        return meta

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
        data, part = self.data.train, self.group.shard(index)  # one process: part is index
        logits = self.model(data.ids[part], data.mask[part])
        loss = F.cross_entropy(logits, data.targets[part])
        correct = int((logits.numpy().argmax(axis=1) == data.targets[part]).sum())
        value, correct = self.group.combine(loss.item(), correct, len(part), len(index))
        if not math.isfinite(value):
            return value
        self.optimizer.zero_grad(set_to_none=False)  # Adam keeps gradients as views of one flat buffer
        self.group.scale(loss, len(part), len(index)).backward()
        self._update()
        stats = self.stats
        stats.loss_sum += value * len(index)
        stats.correct += correct
        stats.count += len(index)
        return value

    def _update(self) -> None:
        """Clip, step and schedule, with the gradient norms sampled first every GRAD_NORM_EVERY-th step."""
        self.group.allreduce_grads(self.optimizer)  # data-parallel: the whole batch's gradient on every rank
        sample = self.step_in_epoch % GRAD_NORM_EVERY == 0 or self.step_in_epoch == self.steps_in_epoch() - 1
        if sample:
            self._record_grad_norms()
        if self.cfg.grad_clip is not None:
            optim.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

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
        while self.epoch < self.epochs:
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
        order, bs = self.order(self.epoch + 1), self.examples_per_step
        bar = self._bar()
        started = time.perf_counter()
        try:
            while self.step_in_epoch < self.steps_in_epoch():
                index = order[self.step_in_epoch * bs : (self.step_in_epoch + 1) * bs]
                loss = self.train_step(index)
                if not math.isfinite(loss):
                    ckpt = self.run_dir / CKPT_LAST
                    last = f"last good checkpoint: {ckpt}" if ckpt.exists() else "no checkpoint was saved before it"
                    self._say(
                        f"loss became {loss} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}; "
                        f"stopping ({last})"
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
        val = self.validate()
        improved = val["loss"] < self.best["val_loss"]
        if improved:
            self.best = {"val_loss": val["loss"], "epoch": self.epoch, "bad_epochs": 0}
        else:
            self.best["bad_epochs"] += 1
        self.train_seconds += time.perf_counter() - started
        row = self.epoch_metrics(val, self.stats.seconds + time.perf_counter() - started)
        self.last_row, self.step_in_epoch = row, 0
        self.stats = _EpochStats(grad_norms=[0.0] * len(self.params))
        self.epoch_start = [p.data.copy() for p in self.params]
        if improved:
            self.save(CKPT_BEST)
        self.save(CKPT_LAST)  # before the metrics line: a kill in between is mended from the checkpoint's copy
        self._append_metrics(row)
        self._say(self._summary(row))
        if self.recorder is not None:
            self.recorder.on_epoch_end(self.epoch, self.model)
        return self.cfg.patience is not None and self.best["bad_epochs"] >= self.cfg.patience

    def validate(self) -> dict[str, Any]:
        """The metrics of the held-out data (`val/*`); `loss` decides the best checkpoint."""
        return evaluate(self.model, self.data.val)

    def _restore_best(self) -> None:
        """After early stopping, the best weights back in the model."""
        if self.cfg.patience is not None and self.best["epoch"] != self.epoch:
            _, arrays = read_checkpoint(self.run_dir / CKPT_BEST)
            load_weights(self.model, arrays, self.run_dir / CKPT_BEST)
            self._say(f"restored the best weights (epoch {self.best['epoch']})")

    def _finish(self) -> None:
        """Restore the best weights (early stopping), test, write the last metrics line and predictions."""
        self._restore_best()
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
            total=self.steps_in_epoch(),
            initial=self.step_in_epoch,
            leave=False,
            dynamic_ncols=True,
            desc=self._bar_label(),
            file=sys.stderr,
            mininterval=0.2,
        )

    def _bar_label(self) -> str:
        return f"epoch {self.epoch + 1}/{self.epochs}"

    def describe(self) -> str:
        """The line printed before training: model, backend, data."""
        data = self.data
        return (
            f"model: {self.model.num_parameters():,} parameters | backend {mt.backend.name()} | "
            f"data: {len(data.train)} train examples, {len(data.val)} val and {len(data.test)} test inputs "
            f"(distinct inputs disjoint across splits) | {self.epochs} epochs x {self.steps_per_epoch} steps"
        )

    def _update_bar(self, bar: Any, loss: float) -> None:
        if bar is None:
            return
        bar.update(1)
        if self.step_in_epoch % 25 == 0:
            s = self.stats
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{s.correct / max(s.count, 1):.1%}", refresh=False)

    def _say(self, text: str) -> None:
        if self.group.root:
            print(text, flush=True)

    def _summary(self, row: dict[str, Any]) -> str:
        return (
            f"epoch {row['epoch']:3d}/{self.epochs}  train loss {row['train/loss']:.4f} "
            f"acc {row['train/acc']:.1%}  val loss {row['val/loss']:.4f} acc {row['val/acc']:.1%}  "
            f"lr {row['lr']:.2e}  {row['time/epoch_s']:.1f}s"
        )

    def _append_metrics(self, row: dict[str, Any]) -> None:
        if not self.group.root:
            return
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")

    def _write_predictions(self, test: dict[str, Any]) -> None:
        if not self.group.root:
            return
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
        write_text_atomic(self.run_dir / "test_predictions.jsonl", "\n".join(lines) + "\n")

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


class TextTrainer(Trainer):
    """A text run: random windows of a corpus, a causal GPT, `steps` steps in periods of `eval_every`.

    Each period is an "epoch" of the Trainer: evaluated, checkpointed and logged
    at its end, so resume, Ctrl-C, NaN stop and the metrics rules are the same.
    """

    def __init__(
        self, model_cfg: ModelConfig, cfg: TrainConfig, text: TextConfig, corpus: Corpus, run_dir: Path,
        quiet: bool = False,
    ) -> None:
        self.text, self.corpus = text, corpus
        super().__init__(replace(model_cfg, vocab_size=len(corpus.vocab)), cfg, run_dir, quiet)

    def _prepare(self) -> None:
        text = self.text
        self.data = self.corpus
        self.model = GPT(self.model_cfg, np.random.default_rng(self.cfg.seed))
        self.epochs, self.steps_per_epoch = -(-text.steps // text.eval_every), text.eval_every
        self.examples_per_step = self.cfg.batch_size * text.grad_accum
        self.split_sha256 = self.corpus.digest()

    def _make_scheduler(self) -> Any:
        return warmup_cosine(self.optimizer, self.text.warmup_steps, self.text.steps)

    def _make_recorder(self) -> Any:
        """Attention over a probe sentence and a sample at a few periods, for the report (diagnostics.py)."""
        if not self.cfg.diagnostics:
            return None
        from .diagnostics import TextRecorder

        return TextRecorder(self.run_dir, self.corpus, self.epochs, self.text.block_size)

    def steps_in_epoch(self) -> int:
        return min(self.text.eval_every, self.text.steps - self.epoch * self.text.eval_every)

    def smallest_step(self) -> int:
        return self.cfg.batch_size  # a micro-batch

    def settings(self) -> dict[str, dict[str, Any]]:
        return as_dict(self.model_cfg, self.cfg, self.text)

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "vocab": self.corpus.vocab}

    def order(self, epoch: int) -> np.ndarray:
        """The window starts of a period, a function of (seed, period) only: a resumed run sees the same ones."""
        rng = np.random.default_rng([self.cfg.seed, 1, epoch])
        count = self.steps_in_epoch() * self.examples_per_step
        return random_starts(len(self.corpus.train), self.text.block_size, count, rng)

    def train_step(self, index: np.ndarray) -> float:
        """One step on the windows at `index` (grad_accum micro-batches); the mean loss before the update."""
        accum, block = self.text.grad_accum, self.text.block_size
        self.optimizer.zero_grad(set_to_none=False)
        total, correct = 0.0, 0
        for starts in np.array_split(self.group.shard(index), accum):  # one process: the shard is index
            x, y = windows(self.corpus.train, starts, block)
            logits, loss = self.model(x, y)
            value, share = loss.item(), len(starts) / len(index)
            total += value * share
            if not math.isfinite(value):
                break
            (loss if share == 1 else loss * share).backward()
            correct += int((logits.numpy().argmax(axis=-1) == y).sum())
        total, correct = self.group.combine(total, correct, 1, 1)  # data-parallel: sums over the ranks
        if not math.isfinite(total):
            return total
        self._update()
        self.stats.loss_sum += total * index.size * block
        self.stats.correct += correct
        self.stats.count += index.size * block
        return total

    @mt.no_grad()
    def score(self, ids: np.ndarray) -> dict[str, float]:
        """Loss (nats), bits per character and next-character accuracy on `eval_tokens` characters, eval mode."""
        was_training = self.model.training
        self.model.eval()
        starts = eval_starts(len(ids), self.text.block_size, self.text.eval_tokens)
        loss_sum, correct, count = 0.0, 0, 0
        for part in np.array_split(starts, -(-len(starts) // self.cfg.batch_size)):
            x, y = windows(ids, part, self.text.block_size)
            logits = self.model(x)
            loss_sum += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                              reduction="sum").item())
            correct += int((logits.numpy().argmax(axis=-1) == y).sum())
            count += y.size
        self.model.train(was_training)
        loss = loss_sum / count
        return {"loss": loss, "bpc": loss / math.log(2), "acc": correct / count}

    def validate(self) -> dict[str, Any]:
        return self.score(self.corpus.val)

    def epoch_metrics(self, val: dict[str, Any], seconds: float) -> dict[str, Any]:
        return {**super().epoch_metrics(val, seconds), "train/bpc": self.score(self.corpus.train)["bpc"]}

    def _finish(self) -> None:
        """Restore the best weights (early stopping); the last metrics line."""
        self._restore_best()
        self._append_metrics({"epoch": self.epoch, "step": self.global_step, "time/train_s": self.train_seconds})
        best = self.best["epoch"] * self.text.eval_every
        self._say(
            f"trained {self.global_step} steps in {self.train_seconds:.1f}s; best val bpc "
            f"{self.best['val_loss'] / math.log(2):.4f} (step {min(best, self.text.steps)}), "
            f"checkpoint {self.run_dir / CKPT_BEST}"
        )

    def _bar_label(self) -> str:
        return f"steps {self.global_step - self.step_in_epoch + 1}-" \
               f"{self.global_step - self.step_in_epoch + self.steps_in_epoch()}/{self.text.steps}"

    def describe(self) -> str:
        corpus, text = self.corpus, self.text
        return (
            f"model: {self.model.num_parameters():,} parameters | backend {mt.backend.name()} | data: "
            f"{text.data}: {len(corpus.train):,} train and {len(corpus.val):,} val characters, vocabulary "
            f"{len(corpus.vocab)} | {text.steps} steps x {self.examples_per_step} windows of {text.block_size}"
        )

    def _summary(self, row: dict[str, Any]) -> str:
        return (
            f"step {row['step']:5d}/{self.text.steps}  train loss {row['train/loss']:.4f} "
            f"bpc {row['train/bpc']:.3f}  val bpc {row['val/bpc']:.3f} acc {row['val/acc']:.1%}  "
            f"lr {row['lr']:.2e}  {row['time/epoch_s']:.1f}s"
        )


# ---- entry point -----------------------------------------------------------------------------------


def resolve_config(
    args: argparse.Namespace, parser: argparse.ArgumentParser, stored: dict | None = None, text: bool = False
) -> Any:
    """The resumed run's config (or the defaults), then --config, then the flags given; exit 2 if invalid.

    (model, train) settings, or with `text` (model, train, text).
    """
    layers = [stored] if stored else []
    if "config" in args:
        try:
            layers.append(read_config_file(args.config))
        except ValueError as err:
            parser.error(f"--config {args.config}: {err}")
    try:
        return (text_from_layers if text else from_layers)(layers, vars(args))
    except SettingError as err:
        where = f"--config {args.config}: " if "config" in args else ""
        parser.error(where + str(err))


def _select_backend(cfg: TrainConfig, parser: argparse.ArgumentParser) -> None:
    """Backend and thread count; the C kernels read MICROTENSOR_NUM_THREADS when their pool first starts."""
    if cfg.threads is not None:
        os.environ["MICROTENSOR_NUM_THREADS"] = str(cfg.threads)
        mt.backend.set_num_threads(cfg.threads)
    if cfg.backend is not None:
        try:
            mt.backend.use(cfg.backend)
        except ValueError as err:
            parser.error(f"--backend {cfg.backend}: {err}")


def _make_trainer(settings: tuple, run_dir: Path, quiet: bool, corpus: Corpus | None = None) -> Trainer:
    """The Trainer of (model, train) settings, or the TextTrainer of (model, train, text) ones."""
    if len(settings) == 2:
        return Trainer(*settings, run_dir, quiet=quiet)
    text = settings[2]
    corpus = corpus or load_corpus(text.data, text.block_size)
    return TextTrainer(*settings, corpus, run_dir, quiet=quiet)


def _resume(args: argparse.Namespace, parser: argparse.ArgumentParser, run_dir: Path) -> Trainer:
    """The run continued from OUT/ckpt_last.npz, with its own settings; metrics.jsonl made to match it."""
    ckpt = run_dir / CKPT_LAST
    meta, _ = read_checkpoint(ckpt)
    args.group.refuse_resume(meta)
    text = "text" in meta["config"]
    if args.task not in (None, TASKS[text]):
        raise RunError(f"--task {args.task}: {run_dir} holds a {TASKS[text]} run; drop the flag")
    try:
        stored = as_dict(*(text_from_layers if text else from_layers)([meta["config"]], {}))
    except (SettingError, TypeError) as err:
        raise CheckpointError(f"{ckpt}: its config is not valid ({err})") from None
    settings = resolve_config(args, parser, stored, text)
    _select_backend(settings[1], parser)
    trainer = _make_trainer(settings, run_dir, args.quiet)
    check_resume(meta, trainer.settings(), trainer.split_sha256)
    trainer.restore(ckpt)
    for warning in reconcile_metrics(run_dir, meta) if args.group.root else []:
        print(warning, file=sys.stderr, flush=True)
    return trainer


def _start(
    args: argparse.Namespace, parser: argparse.ArgumentParser, run_dir: Path, settings: tuple, corpus: Corpus | None
) -> Trainer:
    """A new run; an earlier run in OUT is kept unless --overwrite, and then removed only now."""
    found = holds_run(run_dir) if args.group.root else []
    if found and not args.overwrite:
        raise RunError(
            f"--out {run_dir} holds a run ({', '.join(found)}): continue it with --resume, replace it with "
            "--overwrite, or choose another --out"
        )
    _select_backend(settings[1], parser)
    trainer = _make_trainer(settings, run_dir, args.quiet, corpus)
    if args.group.root:
        clear_run(run_dir)
    return trainer


def _run_folder(out: str, resume: bool) -> Path:
    """OUT as a folder that exists (created for a new run); RunError when it cannot be one."""
    run_dir = Path(out)
    if resume and not (run_dir / CKPT_LAST).is_file():
        raise RunError(f"--resume: no checkpoint at {run_dir / CKPT_LAST}; train without --resume first")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunError(f"--out {out} is a file, not a folder; choose another --out") from None
    except OSError as err:
        raise RunError(f"--out {out}: cannot create the folder ({err.strerror}); choose another --out") from None
    return run_dir


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Prepare the run under the folder's lock, then train; the exit code."""
    args.task = getattr(args, "task", None)
    settings = None if args.resume else resolve_config(args, parser, text=args.task == "text")
    # checked before OUT is created
    corpus = load_corpus(settings[2].data, settings[2].block_size) if settings and len(settings) == 3 else None
    run_dir, group = _run_folder(args.out, args.resume), args.group
    with locked(run_dir) if group.root else contextlib.nullcontext():  # with MPI, rank 0 alone writes
        if group.root:
            remove_stale_temps(run_dir)
        if settings is None:
            trainer = _resume(args, parser, run_dir)
        else:
            trainer = _start(args, parser, run_dir, settings, corpus)
        group.attach(trainer)
        if group.root:
            write_text_atomic(run_dir / "config.json", json.dumps(trainer.settings(), indent=2) + "\n")
        with _Interrupt() as interrupt:  # from the first line printed on, Ctrl-C stops at a checkpoint
            trainer._say(
                trainer.describe()
                + (f" | resuming at epoch {trainer.epoch + 1}, step {trainer.step_in_epoch}" if args.resume else "")
                + (f" | data-parallel on {group.size} ranks" if group.comm is not None else "")
            )
            if trainer.recorder is not None and not args.resume and hasattr(trainer.recorder, "on_train_begin"):
                trainer.recorder.on_train_begin(trainer.model)
            group.watch(interrupt)
            return group.finish(trainer.run(interrupt))


def _refuse(parser: argparse.ArgumentParser, args: argparse.Namespace, message: str) -> None:
    """Exit 2 with the message; with MPI, every rank stops and one prints it."""
    if getattr(args, "group", SOLO).fail():
        parser.error(message)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    """The `python -m transformer.train` / `microtensor-train` command; returns the exit code (2: refused)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.group = join(args.data_parallel)
        return _train(args, parser)
    except PeerStopped:
        return 2  # the rank that failed printed why
    except (CheckpointError, RunError, TextError) as err:
        _refuse(parser, args, str(err))
    except OSError as err:
        _refuse(
            parser,
            args,
            f"cannot write {err.filename or args.out}: {err.strerror}; the checkpoints already saved are intact "
            "and no temp file is left: free space (or fix the folder), then continue with --resume"
        )
    except KeyboardInterrupt:
        print(f"interrupted; the last checkpoint (if any) is {Path(args.out) / CKPT_LAST}", flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
