"""Data-parallel step time: 2 MPI ranks x 1 thread against 1 process x 2 threads, same global batch.

The step is the trainer's own (transformer/train.py `train_step`: forward, loss,
backward, the Allreduce of the flat gradient buffer, Adam). For 2 ranks this
process is rank 0 and spawns rank 1 (MPI_Comm_spawn), so pytest-benchmark times
rank 0's step, which waits for rank 1 in both reductions. Each config is one
benchmark group, so the ratio of the two medians is read from one run:

    python -m pytest benchmarks/test_data_parallel.py --benchmark-only \
        --benchmark-columns=median,iqr,rounds --benchmark-group-by=group

Skips without mpi4py/Open MPI (pip install -e ".[cluster]"; docs/SCALING.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import microtensor as mt
from transformer.config import ModelConfig, TrainConfig, read_config_file, text_from_layers
from transformer.distributed import SOLO, Group, PeerStopped
from transformer.text import TextError, demo_text, load_corpus
from transformer.train import TextTrainer, Trainer

# name: benchmark rounds. "seed": the seed run (batch 32); "text": `make lm`'s GPT (examples/lm_demo.json:
# d_model 128, 2 blocks, 16 windows of 128 characters) on the demo corpus.
CONFIGS = {"seed": 100, "text": 15}
DEMO = Path(__file__).resolve().parents[1] / "examples" / "lm_demo.json"
LAYOUTS = ["1x2", "2x1"]  # processes x threads
# Rank 1: the same trainer on the merged communicator, stepping until rank 0 stops it.
WORKER = """
import sys
sys.path.insert(0, {here!r})
from mpi4py import MPI
from test_data_parallel import follow
parent = MPI.Comm.Get_parent()
follow({name!r}, {corpus!r}, parent.Merge(high=True))
parent.Disconnect()
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """The demo corpus as a file (the text config's data)."""
    try:
        text = demo_text()
    except TextError as err:
        pytest.skip(str(err))
    path = tmp_path_factory.mktemp("dp") / "licenses.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def make_trainer(name: str, corpus: str, run_dir: Path, group: Group = SOLO) -> Trainer:
    """The trainer of config `name` on `group`, its run folder never written (only steps are taken)."""
    if name == "seed":
        trainer = Trainer(ModelConfig(), TrainConfig(diagnostics=False), run_dir, quiet=True)
    else:
        settings = text_from_layers([read_config_file(DEMO)], {"data": corpus, "diagnostics": False})
        trainer = TextTrainer(*settings, load_corpus(corpus, settings[2].block_size), run_dir, quiet=True)
    group.attach(trainer)
    return trainer


def stepper(trainer: Trainer):
    """A closure taking the next step of the first epoch (from its start again when it ends)."""
    order, bs = trainer.order(1), trainer.examples_per_step

    def step() -> float:
        trainer.step_in_epoch = (trainer.step_in_epoch + 1) % (len(order) // bs)
        return trainer.train_step(order[trainer.step_in_epoch * bs : (trainer.step_in_epoch + 1) * bs])

    return step


def follow(name: str, corpus: str, comm) -> None:
    """Rank 1's loop: step at 1 thread until rank 0 stops the group."""
    mt.backend.set_num_threads(1)
    step = stepper(make_trainer(name, corpus, Path(os.devnull), Group(comm)))
    try:
        while True:
            step()
    except PeerStopped:
        comm.Free()


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_data_parallel_step(benchmark, corpus, tmp_path, name, layout):
    rounds = CONFIGS[name]
    benchmark.group = f"{name} data-parallel step"
    benchmark.extra_info.update(layout=layout, backend=mt.backend.name())
    if layout == "1x2":
        mt.backend.set_num_threads(2)
        benchmark.pedantic(stepper(make_trainer(name, corpus, tmp_path)), rounds=rounds, warmup_rounds=3)
        return
    for key in ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "OMPI_MCA_rmaps_base_oversubscribe"):
        os.environ.setdefault(key, "1")  # root in containers; a second spawn on 2 cores needs oversubscription
    MPI = pytest.importorskip("mpi4py.MPI", reason="needs mpi4py and Open MPI (pip install -e '.[cluster]')")
    mt.backend.set_num_threads(1)
    code = WORKER.format(here=str(Path(__file__).parent), name=name, corpus=corpus)
    spawned = MPI.COMM_SELF.Spawn(sys.executable, args=["-c", code], maxprocs=1)
    comm = spawned.Merge(high=False)
    try:
        benchmark.pedantic(stepper(make_trainer(name, corpus, tmp_path, Group(comm))), rounds=rounds, warmup_rounds=3)
    finally:
        Group(comm).fail()  # stops rank 1's loop at its next step
        comm.Free()
        spawned.Disconnect()
