"""The trainer: metrics and files of a run, resume gives the same numbers, NaN stops cleanly, schedules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transformer.model import ModelConfig
from transformer.train import CKPT_BEST, CKPT_LAST, TrainConfig, Trainer, load_model, main, read_checkpoint

TINY = [
    "--train-size",
    "96",
    "--batch-size",
    "16",
    "--d-model",
    "16",
    "--n-heads",
    "2",
    "--d-ff",
    "32",
    "--eval-size",
    "50",
    "--quiet",
    "--no-diagnostics",
]


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _epoch_losses(run_dir) -> list[tuple]:
    return [(m["train/loss"], m["val/loss"], m["train/acc"]) for m in _metrics(run_dir) if "train/loss" in m]


def test_a_run_writes_config_metrics_predictions_and_checkpoints(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--epochs", "2", *TINY]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["d_model"] == 16 and config["train"]["epochs"] == 2
    rows = _metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 2]
    epoch = rows[0]
    for key in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc/Max",
        "lr",
        "time/epoch_s",
        "grad_norm/tok_emb",
        "update_ratio/blocks.1.ffn.fc_weight",
    ):
        assert key in epoch, key
    assert all(np.isfinite(v) for k, v in epoch.items() if k.startswith(("grad_norm/", "update_ratio/")))
    final = rows[-1]
    assert {"test/loss", "test/acc", "test/acc/First", "time/train_s"} <= set(final)
    predictions = [
        json.loads(line) for line in (tmp_path / "test_predictions.jsonl").read_text().splitlines()
    ]
    assert len(predictions) == 50
    assert set(predictions[0]) == {"input", "op", "target", "pred", "loss"}
    assert (tmp_path / CKPT_LAST).exists() and (tmp_path / CKPT_BEST).exists()
    out = capsys.readouterr().out
    assert "parameters" in out and "test accuracy" in out
    model = load_model(tmp_path / CKPT_LAST)
    assert model.config.d_model == 16 and not model.training


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["--out", str(straight), "--epochs", "2", *TINY]) == 0
    assert main(["--out", str(resumed), "--epochs", "1", *TINY]) == 0
    assert main(["--out", str(resumed), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert _epoch_losses(straight) == _epoch_losses(resumed)
    assert _metrics(straight)[-1]["test/loss"] == _metrics(resumed)[-1]["test/loss"]


class _StopAfter:
    """Stands in for the Ctrl-C flag: 'pressed' once the trainer has taken `steps` steps."""

    def __init__(self, trainer: Trainer, steps: int) -> None:
        self.trainer, self.steps = trainer, steps

    @property
    def requested(self) -> bool:
        return self.trainer.global_step >= self.steps


def test_resume_from_the_middle_of_an_epoch(tmp_path):
    """A Ctrl-C checkpoint mid-epoch (dropout on) resumes to the very same numbers."""
    model_cfg = ModelConfig(d_model=16, n_heads=2, d_ff=32)
    cfg = TrainConfig(epochs=2, train_size=96, batch_size=16, eval_size=50, diagnostics=False)
    straight = Trainer(model_cfg, cfg, tmp_path / "a", quiet=True)
    (tmp_path / "a").mkdir()
    assert straight.run(_StopAfter(straight, 10**9)) == 0
    (tmp_path / "b").mkdir()
    first = Trainer(model_cfg, cfg, tmp_path / "b", quiet=True)
    assert first.run(_StopAfter(first, 9)) == 130
    second = Trainer(model_cfg, cfg, tmp_path / "b", quiet=True)
    second.restore(tmp_path / "b" / CKPT_LAST)
    assert (second.epoch, second.step_in_epoch) == (1, 3)
    assert second.run(_StopAfter(second, 10**9)) == 0
    assert _epoch_losses(tmp_path / "a") == _epoch_losses(tmp_path / "b")
    for p, q in zip(straight.model.parameters(), second.model.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_a_nan_loss_stops_with_a_message_naming_epoch_and_step(tmp_path, capsys):
    cfg = TrainConfig(epochs=1, train_size=32, batch_size=16, eval_size=20, diagnostics=False)
    trainer = Trainer(ModelConfig(d_model=16, n_heads=2, d_ff=32), cfg, tmp_path, quiet=True)
    trainer.model.head_bias.data[...] = np.nan
    assert trainer.run(_StopAfter(trainer, 10**9)) == 1
    assert "loss became nan at epoch 1, step 1" in capsys.readouterr().out
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "flags, expected",
    [
        (
            ["--schedule", "cosine", "--warmup-epochs", "1"],
            lambda lrs: lrs[0] == pytest.approx(1e-3) and lrs[-1] < 1e-5,
        ),
        (
            ["--schedule", "step", "--step-size", "1", "--gamma", "0.5"],
            lambda lrs: lrs == pytest.approx([5e-4, 2.5e-4]),
        ),
        (["--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9"], lambda lrs: lrs == [0.1, 0.1]),
        (["--optimizer", "adamw", "--grad-clip", "1.0", "--patience", "1"], lambda lrs: len(lrs) >= 1),
    ],
)
def test_optimizers_and_schedules(tmp_path, flags, expected):
    assert main(["--out", str(tmp_path), "--epochs", "2", *TINY, *flags]) == 0
    lrs = [m["lr"] for m in _metrics(tmp_path) if "lr" in m]
    assert expected(lrs), lrs


def test_checkpoint_holds_what_is_needed_to_rebuild(tmp_path):
    assert main(["--out", str(tmp_path), "--epochs", "1", *TINY, "--pre-ln", "--ablate", "no_ffn"]) == 0
    meta, arrays = read_checkpoint(tmp_path / CKPT_BEST)
    assert meta["config"]["model"]["pre_ln"] and meta["config"]["model"]["no_ffn"]
    assert meta["epoch"] == 1 and meta["step_in_epoch"] == 0
    assert any(k.startswith("optim/") for k in arrays)
    assert load_model(tmp_path / CKPT_BEST).blocks[0].ffn is None
