"""Data-parallel training on this machine: 2 MPI ranks x 1 thread against 1 process x 2 threads.

`test_data_parallel_step` runs the trainer's own step (transformer/train.py `train_step`:
forward, loss, backward, the Allreduce of the flat gradient buffer, AdamW/Adam) on the same
global batch as `mpirun -n 2` jobs at 1 thread and as one process at 2 threads, alternating
jobs (PAIRS of each) so that machine load hits both; rank 0 times every step, and
extra_info records both medians and their ratio (pytest-benchmark's own time is that of the
whole measurement). `test_rank_step` times one rank's step on a shard of the batch and
`test_allreduce` one Allreduce between 2 ranks: the inputs of docs/SCALING.md's projection.

    python -m pytest benchmarks/test_data_parallel.py --benchmark-only -s \
        --benchmark-columns=median,iqr,rounds --benchmark-group-by=group

MPI jobs run under mpirun, not MPI_Comm_spawn: spawned ranks talk over TCP, not shared
memory. Skips without mpi4py/mpirun (pip install -e ".[cluster]"; docs/SCALING.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_lm import corpus_path  # noqa: F401 (the demo corpus fixture)
from test_lm import make_trainer as text_trainer

import microtensor as mt
from transformer.config import ModelConfig, TrainConfig
from transformer.distributed import SOLO, Group
from transformer.train import Trainer

# name: steps timed per job. "seed": the seed run (batch 32); "text": `make lm`'s GPT (examples/lm_demo.json:
# d_model 128, 2 blocks, 16 windows of 128 characters) on the demo corpus.
CONFIGS = {"seed": 100, "text": 12}
PAIRS, WARMUP = 3, 3
# One job: argv = name, corpus, threads, steps, out, mode ("step" or "allreduce"); rank 0 writes its times.
JOB = """
import json, sys, time
import numpy as np
sys.path.insert(0, {here!r})
import microtensor as mt
from test_data_parallel import make_trainer, stepper, WARMUP
from transformer.distributed import join
name, corpus, threads, steps, out, mode = sys.argv[1:7]
mt.backend.set_num_threads(int(threads))
group = join("OMPI_COMM_WORLD_SIZE" in __import__("os").environ)
trainer = make_trainer(name, corpus, __import__("pathlib").Path(out + ".run"), group)
if mode == "step":
    work = stepper(trainer)
else:
    from mpi4py import MPI
    size = 5 if name == "flags" else sum(p.data.size for p in trainer.params)
    buffer = np.ones(size, np.float64 if name == "flags" else np.float32)
    def work():
        group.comm.Barrier()
        group.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
times = []
for _ in range(WARMUP + int(steps)):
    start = time.perf_counter()
    work()
    times.append(time.perf_counter() - start)
if group.root:
    json.dump(times[WARMUP:], open(out, "w"))
"""
ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_rmaps_base_oversubscribe": "1"}  # root in containers; ranks beyond the cores


@pytest.fixture
def corpus(corpus_path) -> str:  # noqa: F811
    return str(corpus_path)


def make_trainer(name: str, corpus: str, run_dir: Path, group: Group = SOLO) -> Trainer:
    """The trainer of config `name` ("flags": the seed's) on `group`; its run folder is never written."""
    if name == "text":
        trainer = text_trainer(Path(corpus), run_dir)
    else:
        trainer = Trainer(ModelConfig(), TrainConfig(diagnostics=False), run_dir, quiet=True)
    group.attach(trainer)
    return trainer


def stepper(trainer: Trainer):
    """A closure taking the next step of the first epoch (from its start again when it ends)."""
    order, bs = trainer.order(1), trainer.examples_per_step

    def step() -> float:
        trainer.step_in_epoch = (trainer.step_in_epoch + 1) % (len(order) // bs)
        return trainer.train_step(order[trainer.step_in_epoch * bs : (trainer.step_in_epoch + 1) * bs])

    return step


def job(tmp: Path, name: str, corpus: str, ranks: int, threads: int, steps: int, mode: str = "step") -> list[float]:
    """Rank 0's times of one job: one process (ranks 1) or `mpirun -n ranks` (--data-parallel's group)."""
    script, out = tmp / "job.py", tmp / f"times-{name}-{ranks}x{threads}.json"
    script.write_text(JOB.format(here=str(Path(__file__).parent)))
    command = [sys.executable, str(script), name, corpus, str(threads), str(steps), str(out), mode]
    if ranks > 1:
        command = ["mpirun", "-n", str(ranks), *command]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def needs_mpi() -> None:
    pytest.importorskip("mpi4py", reason="needs mpi4py and Open MPI (pip install -e '.[cluster]')")
    if shutil.which("mpirun") is None:
        pytest.skip("needs mpirun (apt-get install openmpi-bin)")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_data_parallel_step(benchmark, corpus, tmp_path, name):
    needs_mpi()
    times: dict[str, list[float]] = {"1x2": [], "2x1": []}

    def measure() -> None:
        for _ in range(PAIRS):
            times["1x2"] += job(tmp_path, name, corpus, 1, 2, CONFIGS[name])
            times["2x1"] += job(tmp_path, name, corpus, 2, 1, CONFIGS[name])

    benchmark.group = f"{name}: data-parallel step (see extra_info)"
    benchmark.pedantic(measure, rounds=1, iterations=1)
    medians = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    fastest = {k: float(np.min(v)) * 1e3 for k, v in times.items()}
    benchmark.extra_info.update({f"median_ms_{k}": round(v, 2) for k, v in medians.items()})
    benchmark.extra_info.update({f"min_ms_{k}": round(v, 2) for k, v in fastest.items()})
    benchmark.extra_info["ratio_2x1_over_1x2"] = round(medians["2x1"] / medians["1x2"], 3)
    print(f"\n{name}: step median (fastest) 1 process x 2 threads {medians['1x2']:.2f} ({fastest['1x2']:.2f}) ms, "
          f"2 ranks x 1 thread {medians['2x1']:.2f} ({fastest['2x1']:.2f}) ms; ratio of medians "
          f"{medians['2x1'] / medians['1x2']:.2f}, {len(times['2x1'])} steps each")


@pytest.mark.parametrize("what", ["flags", "seed", "text"])
def test_allreduce(benchmark, corpus, tmp_path, what):
    """One in-place Allreduce between 2 ranks under mpirun (shared memory): a step's 5 numbers, or its gradients."""
    needs_mpi()
    times: list[float] = []
    benchmark.group = "Allreduce, 2 ranks (see extra_info)"
    benchmark.pedantic(lambda: times.extend(job(tmp_path, what, corpus, 2, 1, 300, "allreduce")), rounds=1)
    size = 40 if what == "flags" else 4 * sum(p.data.size for p in make_trainer(what, corpus, tmp_path).params)
    benchmark.extra_info.update(bytes=size, median_us=round(float(np.median(times)) * 1e6, 1))
    print(f"\nAllreduce of {size} bytes, 2 ranks: median {np.median(times) * 1e6:.1f} us (with a barrier before each)")


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("batch", [32, 16, 8, 4, 2, 1])
def test_rank_step(benchmark, corpus, tmp_path, name, batch):
    """One rank's step at 1 thread on `batch` examples: its compute when the global batch is split K ways."""
    trainer = make_trainer(name, corpus, tmp_path)
    if batch > trainer.cfg.batch_size:
        pytest.skip(f"the {name} config's batch is {trainer.cfg.batch_size}")
    trainer.examples_per_step = batch
    mt.backend.set_num_threads(1)
    benchmark.group = f"{name}: step of one rank, 1 thread"
    benchmark.extra_info.update(batch=batch, gradient_bytes=sum(p.data.nbytes for p in trainer.params))
    benchmark.pedantic(stepper(trainer), rounds=CONFIGS[name], warmup_rounds=WARMUP)
