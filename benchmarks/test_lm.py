"""Training throughput of the text task's GPT (`make lm`'s settings) in tokens/s, microtensor vs PyTorch.

One step is what `python -m transformer.train --task text` does per step (forward,
loss, backward, clipping, AdamW, warmup + cosine); PyTorch runs benchmarks/lm_twin.py's
copy of the same model from the same weights on the same windows. At 1 and 2 threads:

    python -m pytest benchmarks/test_lm.py --benchmark-only --benchmark-columns=median,iqr,ops
    python -m pytest benchmarks/test_lm.py --benchmark-only -k "vs_pytorch and 1thread" -s   # the ratio only

`test_lm_tokens_per_second_vs_pytorch` times the two steps interleaved (pairs in
one run, so machine load hits both) and records tokens/s of each and their ratio
in extra_info; the per-library tests give pytest-benchmark's own table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train_step import _set_microtensor_threads, interleaved

from transformer.config import read_config_file, text_from_layers
from transformer.text import TextError, demo_text, load_corpus
from transformer.train import TextTrainer

DEMO = Path(__file__).resolve().parents[1] / "examples" / "lm_demo.json"
THREADS = [1, 2]
PAIRS = 15


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory) -> Path:
    try:
        text = demo_text()
    except TextError as err:
        pytest.skip(str(err))
    path = tmp_path_factory.mktemp("lm") / "licenses.txt"
    path.write_text(text, encoding="utf-8")
    return path


def make_trainer(corpus_path: Path, tmp_path: Path) -> TextTrainer:
    """A TextTrainer with make lm's settings (examples/lm_demo.json) on the demo corpus."""
    settings = text_from_layers([read_config_file(DEMO)], {"data": str(corpus_path)})
    return TextTrainer(*settings, load_corpus(corpus_path, settings[2].block_size), tmp_path, quiet=True)


def microtensor_step(trainer: TextTrainer):
    """The run loop's step: train_step, then the step counter (gradient norms are sampled every tenth step)."""
    index = trainer.order(1)[: trainer.examples_per_step]

    def step() -> None:
        trainer.train_step(index)
        trainer.step_in_epoch = (trainer.step_in_epoch + 1) % trainer.steps_in_epoch()

    return step


def torch_step(trainer: TextTrainer):
    import lm_twin

    model = lm_twin.twin_of(trainer)
    opt, sched = lm_twin.make_optimizer(model, trainer)
    index = trainer.order(1)[: trainer.examples_per_step]
    return lambda: lm_twin.train_step(model, opt, sched, trainer, index)


def tokens_per_step(trainer: TextTrainer) -> int:
    return trainer.examples_per_step * trainer.text.block_size


@pytest.mark.parametrize("threads", THREADS, ids=[f"{n}thread" for n in THREADS])
@pytest.mark.parametrize("library", ["microtensor", "torch"])
def test_lm_step(benchmark, corpus_path, tmp_path, library, threads):
    if library == "torch":
        pytest.importorskip("torch").set_num_threads(threads)
    else:
        _set_microtensor_threads(threads)
    trainer = make_trainer(corpus_path, tmp_path)
    step = (torch_step if library == "torch" else microtensor_step)(trainer)
    benchmark.extra_info.update(threads=threads, tokens_per_step=tokens_per_step(trainer))
    benchmark.pedantic(step, rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("threads", THREADS, ids=[f"{n}thread" for n in THREADS])
def test_lm_tokens_per_second_vs_pytorch(benchmark, corpus_path, tmp_path, threads):
    """Interleaved pairs of steps; extra_info holds both medians in tokens/s and microtensor's speed-up.

    In wall time, and in the process's CPU time (the steps' own cost on a shared machine, whose load
    stretches wall time; at 2 threads it also counts the threads' waiting)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    _set_microtensor_threads(threads)
    ours, theirs = make_trainer(corpus_path, tmp_path / "a"), make_trainer(corpus_path, tmp_path / "b")
    medians = interleaved(benchmark, {"microtensor": microtensor_step(ours), "torch": torch_step(theirs)}, PAIRS)
    tokens = tokens_per_step(ours)
    rate = {clock: {name: tokens / seconds for name, seconds in by_name.items()} for clock, by_name in medians.items()}
    speedup = {clock: r["microtensor"] / r["torch"] for clock, r in rate.items()}
    benchmark.extra_info.update(threads=threads, tokens_per_step=tokens, tokens_per_s=rate["wall"],
                                speedup=speedup["wall"], cpu_tokens_per_s=rate["cpu"], cpu_speedup=speedup["cpu"])
    for clock, r in rate.items():
        print(f"\n{threads} thread(s), {clock} time: {json.dumps({k: round(v) for k, v in r.items()})} tokens/s, "
              f"microtensor / PyTorch = {speedup[clock]:.2f}x", end="")
