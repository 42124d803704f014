"""The text task's GPT trained in PyTorch: the twin of a `--task text` run, for comparing val bpc and speed.

    python benchmarks/lm_twin.py runs/lm            # the settings of runs/lm/config.json, trained in PyTorch

Same model (transformer/gpt.py's GPT written with torch ops, same parameter
names), same initial weights (copied from the microtensor model built with the
run's seed), same windows at every step (the TextTrainer's own order), same
warmup + cosine schedule, optimizer, clipping and evaluation windows. Only the
dropout masks differ (torch's generator). Prints val bpc at each evaluation and
writes OUT/torch_twin.json. PyTorch is a peer for measuring, never a dependency.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformer.config import text_from_layers  # noqa: E402
from transformer.text import eval_starts, load_corpus, windows  # noqa: E402
from transformer.train import TextTrainer  # noqa: E402


class TorchGPT(nn.Module):
    """transformer/gpt.py's GPT in PyTorch (pre-LN or post-LN, tied head, GELU tanh, no attention dropout)."""

    def __init__(self, state: dict[str, np.ndarray], n_heads: int, dropout: float, pre_ln: bool) -> None:
        super().__init__()
        self.n_heads, self.p, self.pre_ln = n_heads, dropout, pre_ln
        self.names = list(state)
        for name, value in state.items():
            self.register_parameter(name.replace(".", "__"), nn.Parameter(torch.tensor(value)))
        self.n_blocks = len({n.split(".")[1] for n in state if n.startswith("blocks.")})

    def w(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace(".", "__"))

    def ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.w(f"{name}.weight"), self.w(f"{name}.bias"))

    def attn(self, x: torch.Tensor, b: str) -> torch.Tensor:
        B, T, D = x.shape
        qkv = F.linear(x, self.w(f"{b}.attn.qkv_weight"), self.w(f"{b}.attn.qkv_bias"))
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in qkv.split(D, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D)
        y = F.linear(y, self.w(f"{b}.attn.proj_weight"), self.w(f"{b}.attn.proj_bias"))
        return F.dropout(y, self.p, self.training)

    def ffn(self, x: torch.Tensor, b: str) -> torch.Tensor:
        h = F.gelu(F.linear(x, self.w(f"{b}.ffn.fc_weight"), self.w(f"{b}.ffn.fc_bias")), approximate="tanh")
        y = F.linear(h, self.w(f"{b}.ffn.proj_weight"), self.w(f"{b}.ffn.proj_bias"))
        return F.dropout(y, self.p, self.training)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = F.embedding(ids, self.w("tok_emb")) + self.w("pos_emb")[: ids.shape[1]]
        x = F.dropout(x, self.p, self.training)
        for i in range(self.n_blocks):
            b = f"blocks.{i}"
            if self.pre_ln:
                x = x + self.attn(self.ln(x, f"{b}.ln1"), b)
                x = x + self.ffn(self.ln(x, f"{b}.ln2"), b)
            else:
                x = self.ln(x + self.attn(x, b), f"{b}.ln1")
                x = self.ln(x + self.ffn(x, b), f"{b}.ln2")
        return F.linear(self.ln(x, "ln_f"), self.w("tok_emb"))

    def parameters_in_order(self) -> list[nn.Parameter]:
        """Parameters in the microtensor model's order (its optimizer's order)."""
        return [self.w(n) for n in self.names]


def twin_of(trainer: TextTrainer) -> TorchGPT:
    """The PyTorch GPT holding the trainer's current weights."""
    state = {name: p.data.copy() for name, p in trainer.model.named_parameters()}
    cfg = trainer.model_cfg
    return TorchGPT(state, cfg.n_heads, cfg.dropout, cfg.pre_ln)


def make_optimizer(model: TorchGPT, trainer: TextTrainer) -> tuple[torch.optim.Optimizer, object]:
    """The trainer's optimizer and warmup + cosine schedule, in PyTorch."""
    cfg, text = trainer.cfg, trainer.text
    params = model.parameters_in_order()
    if cfg.optimizer == "adamw":
        decay = 0.01 if cfg.weight_decay is None else cfg.weight_decay
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=decay)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay or 0.0)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay or 0.0)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(text.steps - text.warmup_steps, 1))
    if not text.warmup_steps:
        return opt, cosine
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / text.warmup_steps, total_iters=text.warmup_steps)
    return opt, torch.optim.lr_scheduler.SequentialLR(opt, [ramp, cosine], milestones=[text.warmup_steps])


def train_step(model: TorchGPT, opt: torch.optim.Optimizer, sched: object, trainer: TextTrainer,
               starts: np.ndarray) -> float:
    """One step on the windows at `starts` (grad_accum micro-batches), as TextTrainer.train_step."""
    accum, block = trainer.text.grad_accum, trainer.text.block_size
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for part in np.split(starts, accum):
        x, y = (torch.from_numpy(a) for a in windows(trainer.corpus.train, part, block))
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        (loss / accum).backward()
        total += loss.item() / accum
    if trainer.cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.cfg.grad_clip)
    opt.step()
    sched.step()
    return total


@torch.no_grad()
def score(model: TorchGPT, trainer: TextTrainer, ids: np.ndarray) -> float:
    """Bits per character on the trainer's evaluation windows of `ids`, eval mode."""
    model.eval()
    starts = eval_starts(len(ids), trainer.text.block_size, trainer.text.eval_tokens)
    total, count = 0.0, 0
    for part in np.array_split(starts, -(-len(starts) // trainer.cfg.batch_size)):
        x, y = (torch.from_numpy(a) for a in windows(ids, part, trainer.text.block_size))
        logits = model(x)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count / math.log(2)


def trainer_of(run_dir: Path) -> TextTrainer:
    """A fresh TextTrainer (initial weights, corpus, order) with the settings of a text run's config.json."""
    settings = text_from_layers([json.loads((run_dir / "config.json").read_text())], {})
    return TextTrainer(*settings, load_corpus(settings[2].data, settings[2].block_size), run_dir, quiet=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a text run's folder (its config.json is read)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the run's, else torch's)")
    args = parser.parse_args(argv)
    trainer = trainer_of(args.run)
    threads = args.threads or trainer.cfg.threads
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(trainer.cfg.seed)
    model = twin_of(trainer)
    opt, sched = make_optimizer(model, trainer)
    text, rows, started = trainer.text, [], time.perf_counter()
    for period in range(1, trainer.epochs + 1):
        trainer.epoch = period - 1
        order, per = trainer.order(period), trainer.examples_per_step
        for step in range(trainer.steps_in_epoch()):
            train_step(model, opt, sched, trainer, order[step * per : (step + 1) * per])
        rows.append({"step": min(period * text.eval_every, text.steps),
                     "val/bpc": score(model, trainer, trainer.corpus.val),
                     "train/bpc": score(model, trainer, trainer.corpus.train)})
        print(f"step {rows[-1]['step']:5d}/{text.steps}  train bpc {rows[-1]['train/bpc']:.3f}  "
              f"val bpc {rows[-1]['val/bpc']:.3f}", flush=True)
    result = {"rows": rows, "best_val_bpc": min(r["val/bpc"] for r in rows), "time_s": time.perf_counter() - started,
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    (args.run / "torch_twin.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"PyTorch twin: best val bpc {result['best_val_bpc']:.4f} in {result['time_s']:.1f}s "
          f"({result['threads']} threads); wrote {args.run / 'torch_twin.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
