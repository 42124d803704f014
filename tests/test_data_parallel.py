"""Data-parallel training over MPI (transformer/distributed.py): `mpirun -n 2 ... --data-parallel` against one process.

The MPI runs skip without mpi4py or mpirun; .ci/run installs both.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from transformer.checkpoint import RunError
from transformer.distributed import Group, _RankSeeds, join

# Small models, dropout 0 (the condition for equality with one process), 1 thread per rank.
ARGS = ["--dropout", "0", "--d-model", "32", "--d-ff", "64", "--threads", "1", "--quiet", "--no-diagnostics"]
OPS = ["--train-size", "512", "--eval-size", "128", "--batch-size", "64", "--n-blocks", "1"]
# A small text run: 2 micro-batches of 8 windows per step, so each rank splits its 8 windows in two.
TEXT = ["--task", "text", "--steps", "12", "--eval-every", "6", "--warmup-steps", "2", "--block-size", "32",
        "--n-heads", "2", "--batch-size", "8", "--grad-accum", "2", "--eval-tokens", "256"]
# Runs the trainer's CLI, writing the loss of every step to LOSSES.<rank> (argv: LOSSES, then the CLI's).
RECORDER = """
import json, os, sys
from transformer import train
losses = []
def recording(step):
    def record(self, index):
        losses.append(step(self, index))
        return losses[-1]
    return record
for trainer in (train.Trainer, train.TextTrainer):
    trainer.train_step = recording(trainer.train_step)
code = train.main(sys.argv[2:])
rank = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
with open(sys.argv[1] + "." + rank, "w") as f:
    json.dump(losses, f)
sys.exit(code)
"""
# Open MPI refuses root (CI containers) and more ranks than cores unless told.
ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def _mpi_ready() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return shutil.which("mpirun") is not None


needs_mpi = pytest.mark.skipif(not _mpi_ready(), reason="needs mpi4py and mpirun (pip install -e '.[cluster]')")


def _run(tmp: Path, name: str, ranks: int, *extra: str) -> subprocess.CompletedProcess:
    """The recorder under `mpirun -n ranks` (--data-parallel) or one plain process (ranks 0)."""
    script = tmp / "record.py"
    script.write_text(RECORDER)
    command = [sys.executable, str(script), str(tmp / f"{name}.losses"), "--out", str(tmp / name), *ARGS, *extra]
    if ranks:
        command = ["mpirun", "-n", str(ranks), *command, "--data-parallel"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=ENV, cwd=Path(__file__).parents[1])


def _losses(tmp: Path, name: str, rank: int = 0) -> np.ndarray:
    return np.array(json.loads((tmp / f"{name}.losses.{rank}").read_text()))


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three epochs on one process, two on 2 ranks (resumed for a third below), the same global batches."""
    tmp = tmp_path_factory.mktemp("dp")
    for name, ranks, epochs in (("one", 0, "3"), ("two", 2, "2")):
        done = _run(tmp, name, ranks, *OPS, "--epochs", epochs)
        assert done.returncode == 0, done.stderr[-2000:]
    return tmp


@needs_mpi
def test_two_ranks_match_one_process_at_every_step(runs: Path) -> None:
    one, two = _losses(runs, "one")[:16], _losses(runs, "two")
    assert len(two) == 16  # 2 epochs x 512 / 64 steps
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(_losses(runs, "two", 1), two)  # every rank sees the global batch's loss
    for a, b in zip(_rows(runs / "one")[:2], _rows(runs / "two")[:2]):  # epochs 1 and 2
        for key in ("train/loss", "val/loss", "train/acc", "val/acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    assert {p.name for p in (runs / "two").iterdir()} == {p.name for p in (runs / "one").iterdir()}


@needs_mpi
def test_two_ranks_match_one_process_on_the_text_task(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("It was the best of times, it was the worst of times; it was the age of wisdom.\n" * 40)
    for name, ranks in (("one", 0), ("two", 2)):
        done = _run(tmp_path, name, ranks, *TEXT, "--data", str(corpus))
        assert done.returncode == 0, done.stderr[-2000:]
    one, two = _losses(tmp_path, "one"), _losses(tmp_path, "two")
    assert len(one) == 12
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=0)
    for a, b in zip(_rows(tmp_path / "one"), _rows(tmp_path / "two")):
        for key in ("train/loss", "val/bpc"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), key


@needs_mpi
def test_resume_needs_the_same_ranks(runs: Path) -> None:
    refused = _run(runs, "two", 0, "--resume", "--epochs", "3")
    assert refused.returncode == 2
    assert "trained on 2 rank(s), not 1: resume it with mpirun -n 2" in refused.stderr
    resumed = _run(runs, "two", 2, "--resume", "--epochs", "3")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    np.testing.assert_allclose(_losses(runs, "two"), _losses(runs, "one")[16:], rtol=1e-5, atol=0)  # epoch 3
    for a, b in zip(_rows(runs / "one")[2:], _rows(runs / "two")[2:], strict=True):  # epoch 3, then the test line
        for key in ("train/loss", "val/loss", "test/loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), key


@needs_mpi
def test_a_failure_on_rank_0_stops_every_rank_with_one_message(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "metrics.jsonl").write_text("")
    done = _run(tmp_path, "taken", 2, *OPS, "--epochs", "1")  # rank 0 refuses the folder; rank 1 must not wait forever
    assert done.returncode == 2
    assert done.stderr.count("holds a run") == 1


def test_without_mpi4py_data_parallel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_mpi(name: str, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise ImportError("No module named 'mpi4py'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpi)
    with pytest.raises(RunError, match=r"apt-get install -y openmpi-bin libopenmpi-dev.*\[cluster\]"):
        join(True)
    assert join(False).size == 1


def test_shards_cover_the_batch_in_order() -> None:
    index = np.arange(10)
    parts = []
    for rank in range(3):
        group = Group()
        group.rank, group.size = rank, 3
        parts.append(group.shard(index))
    assert [len(p) for p in parts] == [4, 3, 3]
    np.testing.assert_array_equal(np.concatenate(parts), index)


def test_rank_dropout_masks_differ_while_generator_states_stay_equal() -> None:
    import microtensor as mt
    import microtensor.nn.functional as F

    x = mt.tensor(np.ones((4, 8, 16), np.float32))
    gens = [np.random.default_rng(7), np.random.default_rng(7)]
    solo = np.random.default_rng(7)
    masks = [F.dropout(x, 0.5, True, g if r == 0 else _RankSeeds(g, r)).numpy() for r, g in enumerate(gens)]
    np.testing.assert_array_equal(masks[0], F.dropout(x, 0.5, True, solo).numpy())  # rank 0: one process's mask
    assert (masks[0] != masks[1]).mean() > 0.3  # rank 1: other masks (about half the elements differ)
    assert gens[0].bit_generator.state == gens[1].bit_generator.state == solo.bit_generator.state
