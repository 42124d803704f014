"""Data-parallel training over MPI: `mpirun -n K python -m transformer.train ... --data-parallel`.

Every rank holds the whole model and takes a contiguous shard of each global batch. Each
rank's loss is weighted by its share of the batch, so one Allreduce (sum) of the optimizer's
flat gradient buffer gives every rank the gradient of the whole batch, and every rank makes
the same update. A second, tiny Allreduce per step sums the loss and accuracy counts and
carries flags: a stop request (Ctrl-C, SIGUSR1) and a failure, on any rank, so that all ranks
stop together (an MPI rank that exits alone leaves the others waiting forever). Rank 0 writes
checkpoints, metrics and output; a checkpoint records K, and resuming needs the same K.

Equal to one process with the same global batch (within float32 rounding) when dropout is 0.
With dropout, every rank draws the same per-call seeds as one process would; rank 0's masks
are the single process's masks for its rows, while rank r > 0 reads the counter-based mask
generator 2**40 * r elements further on, so shards get independent masks (the run is then
statistically, not bitwise, the single-process run). docs/SCALING.md shows how to run it.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import numpy as np

from .checkpoint import RunError

INSTALL = (
    "--data-parallel needs MPI and mpi4py: apt-get install -y openmpi-bin libopenmpi-dev, then "
    "pip install -e '.[cluster]'; run it as `mpirun -n K python -m transformer.train ... --data-parallel`"
)
_MASK_SHIFT = (1 << 40) * 0x9E3779B97F4A7C15  # 2**40 elements along the dropout kernel's splitmix64 counter
_LOSS, _CORRECT, _INTERRUPT, _ROOT_FAILED, _OTHER_FAILED = range(5)


class PeerStopped(RunError):
    """Another rank stopped with an error, which it printed; this rank stops quietly."""


class _RankSeeds:
    """A dropout generator whose seeds are the wrapped generator's, moved along the mask counter for a rank."""

    def __init__(self, generator: np.random.Generator, rank: int) -> None:
        self.generator, self.shift = generator, rank * _MASK_SHIFT

    def integers(self, high: int, *args: Any, **kwargs: Any) -> Any:
        return (int(self.generator.integers(high, *args, **kwargs)) + self.shift) % (1 << 64)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.generator, name)


class Group:
    """The ranks training one model (one process without MPI): this rank's shard and the per-step reductions."""

    def __init__(self, comm: Any = None) -> None:
        self.comm = comm
        self.rank, self.size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
        self.root = self.rank == 0
        self.interrupt: Any = None  # the run's Ctrl-C flag (see watch), shared across ranks at every step
        self._sums = np.zeros(5)

    def attach(self, trainer: Any) -> None:
        """Make `trainer` train on these ranks (ranks > 0 quiet, with their own dropout masks); RunError when a
        step would leave a rank without examples."""
        if self.comm is None:
            return
        smallest = trainer.smallest_step()
        if smallest < self.size:
            raise RunError(
                f"--data-parallel on {self.size} ranks: every step (micro-batch) needs at least {self.size} "
                f"examples, but one takes {smallest}; use a larger --batch-size (or --train-size) or fewer ranks"
            )
        trainer.group, trainer.quiet = self, trainer.quiet or not self.root
        if not self.root:
            trainer.recorder = None
        if self.rank:
            for module in trainer.model.modules():
                if isinstance(getattr(module, "dropout_rng", None), np.random.Generator):
                    module.dropout_rng = _RankSeeds(module.dropout_rng, self.rank)

    def watch(self, interrupt: Any) -> None:
        """Share `interrupt` (Ctrl-C) across ranks; with MPI, SIGUSR1 sets it too (mpirun forwards SIGUSR1 to every
        rank, while Ctrl-C on mpirun kills the job at once)."""
        self.interrupt = interrupt
        if self.comm is not None:
            signal.signal(signal.SIGUSR1, lambda signum, frame: setattr(interrupt, "requested", True))

    def shard(self, index: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of a global batch (sizes differ by at most one)."""
        return index if self.size == 1 else np.array_split(index, self.size)[self.rank]

    def scale(self, loss: Any, part: int, whole: int) -> Any:
        """The loss to differentiate: this rank's mean loss weighted by its share of the global batch."""
        return loss if self.size == 1 else loss * (part / whole)

    def combine(self, loss: float, correct: int, part: int, whole: int) -> tuple[float, int]:
        """The global batch's mean loss and correct count; shares Ctrl-C and raises PeerStopped after a failure."""
        if self.size == 1:
            return loss, correct
        sums = self._sums
        sums[:] = 0.0
        sums[_LOSS], sums[_CORRECT] = loss * part, correct
        sums[_INTERRUPT] = bool(self.interrupt is not None and self.interrupt.requested)
        self._reduce(sums)
        if sums[_ROOT_FAILED] or sums[_OTHER_FAILED]:
            raise PeerStopped("another rank stopped the run")
        if sums[_INTERRUPT] and self.interrupt is not None:
            self.interrupt.requested = True
        return float(sums[_LOSS]) / whole, int(sums[_CORRECT])

    def allreduce_grads(self, optimizer: Any) -> None:
        """Sum the gradients of all ranks in place: one Allreduce per flat buffer (Adam keeps one per group)."""
        if self.size == 1:
            return
        from mpi4py import MPI

        buffers, loose = optimizer.gradient_buffers("data-parallel")
        for buffer in buffers:
            self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        self._allreduce_each(loose)  # SGD, or a group missing a gradient: packed into one buffer

    def _allreduce_each(self, params: list[Any]) -> None:
        from mpi4py import MPI

        grads = [p.grad.data for p in params if p.grad is not None]
        if not grads:
            return
        packed = np.concatenate([g.ravel() for g in grads])
        self.comm.Allreduce(MPI.IN_PLACE, packed, op=MPI.SUM)
        start = 0
        for g in grads:
            g[...] = packed[start : start + g.size].reshape(g.shape)
            start += g.size

    def finish(self, code: int) -> int:
        """The run's exit code once every rank has ended; PeerStopped if another rank failed at the end."""
        self.combine(0.0, 0, 0, 1)
        return code

    def fail(self) -> bool:
        """Tell the other ranks this one stopped with an error; True when this rank should print it."""
        if self.size == 1:
            return True
        sums = self._sums
        sums[:] = 0.0
        sums[_ROOT_FAILED if self.root else _OTHER_FAILED] = 1.0
        self._reduce(sums)
        return self.root or not sums[_ROOT_FAILED]

    def _reduce(self, sums: np.ndarray) -> None:
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)

    def refuse_resume(self, meta: dict[str, Any]) -> None:
        """RunError unless the checkpoint was trained on as many ranks as run now."""
        ranks = int(meta.get("ranks", 1))
        if ranks == self.size:
            return
        how = "without mpirun and --data-parallel" if ranks == 1 else f"with mpirun -n {ranks} ... --data-parallel"
        raise RunError(
            f"--resume: this run was trained on {ranks} rank(s), not {self.size}: resume it {how} (the "
            "data order, dropout masks and checkpoints assume the same ranks), or start a new run in another --out"
        )


SOLO = Group()


def join(enabled: bool) -> Group:
    """The MPI ranks this process trains with (--data-parallel), else SOLO; RunError when MPI is missing."""
    if not enabled:
        return SOLO
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise RunError(f"{INSTALL} ({err})") from None
    group = Group(MPI.COMM_WORLD)
    if group.size > 1:
        _abort_on_crash(MPI.COMM_WORLD)
    return group


def _abort_on_crash(comm: Any) -> None:
    """A traceback on one rank aborts the job instead of leaving the other ranks waiting in a reduction."""
    previous = sys.excepthook

    def hook(*exc: Any) -> None:
        previous(*exc)
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = hook
