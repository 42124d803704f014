"""The resume and run-folder rules: a resumed run keeps its settings and split, metrics.jsonl never gets a
hole, an existing run is never overwritten by accident, and refusals change nothing on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import microtensor as mt
from transformer import train
from transformer.checkpoint import CKPT_BEST, CKPT_LAST, METRICS, read_checkpoint, write_checkpoint

TINY = ["--train-size", "32", "--batch-size", "16", "--d-model", "8", "--n-heads", "2", "--d-ff", "16",
        "--n-blocks", "1", "--eval-size", "10", "--quiet", "--no-diagnostics"]


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    return exc.value.code


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(folder: Path) -> list[dict]:
    """The metrics rows without their timings."""
    rows = [json.loads(line) for line in (folder / METRICS).read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A run stopped after epoch 1, and the same run extended to 3 epochs (read-only for the tests)."""
    root = tmp_path_factory.mktemp("runs")
    assert train.main(["--out", str(root / "one"), "--epochs", "1", *TINY]) == 0
    shutil.copytree(root / "one", root / "three")
    assert train.main(["--out", str(root / "three"), "--resume", "--epochs", "3", "--quiet"]) == 0
    return {"three": root / "three", "one": root / "one"}


@pytest.fixture
def one(runs, tmp_path) -> Path:
    """A private copy of the 1-epoch run."""
    return Path(shutil.copytree(runs["one"], tmp_path / "one"))


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--lr", "0.01"], "--lr"),
        (["--seed", "7"], "--seed"),
        (["--batch-size", "8"], "--batch-size"),
        (["--d-model", "16"], "--d-model"),
        (["--ablate", "no_ffn"], "--ablate no_ffn"),
        (["--split", "0.5,0.25,0.25"], "--split"),
    ],
)
def test_a_flag_that_differs_from_the_run_exits_2_naming_it(one, capsys, flags, named):
    before = _snapshot(one)
    assert _exit_code(["--out", str(one), "--resume", "--epochs", "2", *flags]) == 2
    assert capsys.readouterr().err.splitlines()[-1].split("error: ")[1].startswith(named)
    assert _snapshot(one) == before


def test_a_config_file_that_differs_exits_2_and_one_that_agrees_is_accepted(one, runs, tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"lr": 0.5}))
    assert _exit_code(["--out", str(one), "--resume", "--config", str(config)]) == 2
    assert "--lr" in capsys.readouterr().err
    config.write_text(json.dumps({"d_model": 8, "epochs": 3}))
    assert train.main(["--out", str(one), "--resume", "--config", str(config), "--quiet"]) == 0
    assert _rows(one) == _rows(runs["three"])


def test_flags_meant_to_change_may_change_and_extending_gives_the_uninterrupted_numbers(one, runs, monkeypatch):
    """--epochs extends, --threads/--backend/--quiet only change how it runs; the settings given again
    with the same values are accepted."""
    monkeypatch.setenv("MICROTENSOR_NUM_THREADS", "1")  # restored afterwards, as are backend and threads
    backend, threads = mt.backend.name(), mt.backend.get_num_threads()
    try:
        argv = ["--out", str(one), "--resume", "--epochs", "3", "--threads", "1", "--backend", "numpy", *TINY]
        assert train.main(argv) == 0
    finally:
        mt.backend.use(backend)
        mt.backend.set_num_threads(threads)
    assert json.loads((one / "config.json").read_text())["train"]["epochs"] == 3
    three, resumed = _rows(runs["three"]), _rows(one)
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 3]
    for a, b in zip(three, resumed, strict=True):  # another backend: the same run up to rounding
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-6) for k in a)


def test_epochs_cannot_shrink_below_the_checkpoint_or_move_a_cosine_schedule(runs, tmp_path, capsys):
    three = Path(shutil.copytree(runs["three"], tmp_path / "three"))
    assert _exit_code(["--out", str(three), "--resume", "--epochs", "2"]) == 2
    assert "already trained 3 epochs" in capsys.readouterr().err
    cosine = tmp_path / "cosine"
    assert train.main(["--out", str(cosine), "--epochs", "1", "--schedule", "cosine", *TINY]) == 0
    before = _snapshot(cosine)
    assert _exit_code(["--out", str(cosine), "--resume", "--epochs", "2"]) == 2
    assert "cosine" in capsys.readouterr().err and _snapshot(cosine) == before


def _rewrite_meta(path: Path, **changes) -> None:
    """Rewrite a checkpoint with some meta entries changed (a valid file from 'another run')."""
    meta, arrays = read_checkpoint(path)
    write_checkpoint(path, arrays, {**meta, **changes})


def test_the_data_split_is_stored_with_the_run_and_checked(one, capsys):
    assert len(read_checkpoint(one / CKPT_LAST)[0]["split_sha256"]) == 64
    _rewrite_meta(one / CKPT_LAST, split_sha256="0" * 64)
    before = _snapshot(one)
    assert _exit_code(["--out", str(one), "--resume", "--epochs", "2"]) == 2
    assert "data split" in capsys.readouterr().err and _snapshot(one) == before


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(one, runs, capsys):
    with open(one / METRICS, "a") as f:
        f.write('{"epoch": 2, "train/lo')
    assert train.main(["--out", str(one), "--resume", "--epochs", "3", "--quiet"]) == 0
    assert "torn last line" in capsys.readouterr().err
    assert _rows(one) == _rows(runs["three"])


def test_a_kill_between_checkpoint_and_metrics_line_is_mended_from_the_checkpoint(one, runs, capsys):
    rows = (one / METRICS).read_text().splitlines()
    (one / METRICS).write_text("")  # the epoch-1 checkpoint was written, its metrics line was not
    assert train.main(["--out", str(one), "--resume", "--epochs", "3", "--quiet"]) == 0
    assert "restored the metrics of epoch 1" in capsys.readouterr().err
    assert (one / METRICS).read_text().splitlines()[0] == rows[0]
    assert _rows(one) == _rows(runs["three"])


def test_rows_past_an_earlier_checkpoint_are_recomputed_to_the_same_numbers(runs, tmp_path):
    three = Path(shutil.copytree(runs["three"], tmp_path / "three"))
    shutil.copy(runs["one"] / CKPT_LAST, three / CKPT_LAST)  # back to epoch 1 of the same run
    assert train.main(["--out", str(three), "--resume", "--epochs", "3", "--quiet"]) == 0
    assert _rows(three) == _rows(runs["three"])


def test_a_checkpoint_from_another_run_or_a_hole_in_the_metrics_is_refused(runs, tmp_path, capsys):
    other = tmp_path / "other"
    assert train.main(["--out", str(other), "--epochs", "1", "--seed", "3", *TINY]) == 0
    three = Path(shutil.copytree(runs["three"], tmp_path / "three"))
    shutil.copy(other / CKPT_LAST, three / CKPT_LAST)
    before = _snapshot(three)
    assert _exit_code(["--out", str(three), "--resume"]) == 2
    assert "another run" in capsys.readouterr().err and _snapshot(three) == before
    hole = Path(shutil.copytree(runs["three"], tmp_path / "hole"))
    lines = (hole / METRICS).read_text().splitlines()
    (hole / METRICS).write_text(lines[0] + "\n")  # epochs 2 and 3 lost, the checkpoint is at 3
    before = _snapshot(hole)
    assert _exit_code(["--out", str(hole), "--resume"]) == 2
    assert "leave a hole" in capsys.readouterr().err and _snapshot(hole) == before


def test_a_folder_holding_a_run_is_kept_unless_overwrite(one, capsys):
    before = _snapshot(one)
    assert _exit_code(["--out", str(one), "--epochs", "1", *TINY]) == 2
    assert "--resume" in capsys.readouterr().err and _snapshot(one) == before
    assert _exit_code(["--out", str(one), "--overwrite", "--lr", "-1", *TINY]) == 2  # refused: nothing deleted
    assert _snapshot(one) == before
    (one / "diagnostics").mkdir()
    (one / "diagnostics" / "epoch_001.json").write_text("{}")
    assert train.main(["--out", str(one), "--overwrite", "--epochs", "2", "--seed", "5", *TINY]) == 0
    assert [r["epoch"] for r in _rows(one)] == [1, 2, 2] and not (one / "diagnostics").exists()
    assert read_checkpoint(one / CKPT_BEST)[0]["config"]["train"]["seed"] == 5


def test_resume_refusals_name_the_folder(tmp_path, capsys):
    assert _exit_code(["--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_a_nan_stop_in_the_first_epoch_names_no_checkpoint(tmp_path, capsys):
    cfg = train.TrainConfig(epochs=1, train_size=32, batch_size=16, eval_size=10, diagnostics=False)
    trainer = train.Trainer(train.ModelConfig(d_model=8, n_heads=2, d_ff=16, n_blocks=1), cfg, tmp_path, True)
    trainer.model.head_bias.data[...] = float("nan")

    class Never:
        requested = False

    assert trainer.run(Never()) == 1
    out = capsys.readouterr().out
    assert "loss became nan at epoch 1, step 1" in out and "no checkpoint was saved" in out
    assert not (tmp_path / CKPT_LAST).exists()
