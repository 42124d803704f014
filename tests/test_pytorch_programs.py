"""The PyTorch-idiom programs of examples/ under PyTorch and under microtensor, switching only their imports.

Each example selects `import torch ...` or `import microtensor as torch ...` from
EXAMPLES_BACKEND; the rest of the program is the same text. The models start from
PyTorch's initial weights (copied through state_dict/load_state_dict), see the same
batches, and must give the same 20 losses within 1e-4 relative.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import microtensor as mt

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STEPS = 20


def load(name: str, backend: str):
    """examples/<name>.py imported afresh with its imports switched to `backend`."""
    old = os.environ.get("EXAMPLES_BACKEND")
    os.environ["EXAMPLES_BACKEND"] = backend
    try:
        spec = importlib.util.spec_from_file_location(f"{name}__{backend}", EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    finally:
        if old is None:
            del os.environ["EXAMPLES_BACKEND"]
        else:
            os.environ["EXAMPLES_BACKEND"] = old
    return module


def run_example(name: str, *args: str, backend: str = "microtensor") -> str:
    """stdout of `python examples/<name> args...` as a user runs it, failing the test on a non-zero exit."""
    env = {**os.environ, "EXAMPLES_BACKEND": backend}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def char_gpt_run(mod, state=None):
    """(initial state_dict, 20 losses, greedy sample) of a tiny char GPT trained on unshuffled batches."""
    mod.torch.manual_seed(0)
    config = mod.GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=32)
    dataset = mod.CharDataset(mod.TEXT, config.block_size)
    config.vocab_size = len(dataset.chars)
    model = mod.GPT(config)
    if state is not None:
        model.load_state_dict({k: mod.torch.tensor(v) for k, v in state.items()})
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    optimizer = mod.configure_optimizer(model, lr=3e-3, weight_decay=0.1)
    losses = mod.train(model, optimizer, mod.DataLoader(dataset, batch_size=8, shuffle=False), STEPS)
    model.eval()
    start = mod.torch.tensor([[1, 2]], dtype=mod.torch.long)
    return initial, losses, model.generate(start, 12, top_k=1)[0].tolist()  # top-1: greedy, the same draw


def mlp_run(mod, state=None):
    """(initial state_dict, 20 losses, accuracy) of the MLP classifier trained on unshuffled batches."""
    x, y = mod.spirals(256, seed=0)
    loader = mod.DataLoader(mod.TensorDataset(x, y), batch_size=32, shuffle=False)
    model = mod.make_model()
    if state is not None:
        model.load_state_dict({k: mod.torch.tensor(v) for k, v in state.items()})
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    optimizer = mod.torch.optim.Adam(model.parameters(), lr=1e-2)
    criterion = mod.nn.CrossEntropyLoss()
    losses = [loss for _ in range(2) for loss in mod.train_epoch(model, loader, criterion, optimizer)]
    return initial, losses[:STEPS], mod.accuracy(model, x, y)


@pytest.fixture(scope="module")
def pytorch_runs():
    """The PyTorch runs of both examples, once per module (skipped without PyTorch)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return {"char_gpt": char_gpt_run(load("char_gpt", "torch")),
            "mlp": mlp_run(load("mlp_classifier_torch_style", "torch"))}


def test_char_gpt_losses_match_pytorch(pytorch_runs, backend) -> None:
    state, expected, sample = pytorch_runs["char_gpt"]
    _, losses, ours = char_gpt_run(load("char_gpt", "microtensor"), state)
    np.testing.assert_allclose(losses, expected, rtol=1e-4)
    assert expected[-1] < expected[0] - 0.5
    assert ours == sample


def test_char_gpt_samples_with_multinomial_and_top_k() -> None:
    mp = load("char_gpt", "microtensor")
    mp.torch.manual_seed(0)
    dataset = mp.CharDataset(mp.TEXT, 16)
    model = mp.GPT(mp.GPTConfig(vocab_size=len(dataset.chars), block_size=16, n_layer=1, n_head=2, n_embd=16))
    ids = model.generate(mp.torch.zeros((3, 1), dtype=mp.torch.long), 20, top_k=3)
    assert tuple(ids.shape) == (3, 21)
    assert ids.dtype == mp.torch.long
    assert 0 <= int(ids.min()) and int(ids.max()) < len(dataset.chars)


def test_mlp_classifier_losses_match_pytorch(pytorch_runs, backend) -> None:
    state, expected, accuracy = pytorch_runs["mlp"]
    _, losses, ours = mlp_run(load("mlp_classifier_torch_style", "microtensor"), state)
    np.testing.assert_allclose(losses, expected, rtol=1e-4)
    assert ours == pytest.approx(accuracy, abs=1 / 256)


def _micrograd_tests() -> list[str]:
    source = (EXAMPLES / "micrograd_style_test.py").read_text()
    return re.findall(r"^def (test_\w+)\(", source, flags=re.M)


@pytest.mark.parametrize("backend", ["torch", "microtensor"])
@pytest.mark.parametrize("name", _micrograd_tests())
def test_micrograd_style_scalar_autograd(backend: str, name: str) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    getattr(load("micrograd_style_test", backend), name)()


def test_examples_run_as_programs() -> None:
    out = run_example("mlp_classifier_torch_style.py", "--epochs", "20")
    assert float(re.search(r"test accuracy: ([0-9.]+)", out).group(1)) > 0.95, out
    out = run_example("char_gpt.py", "--steps", "15", "--tokens", "20")
    first = float(re.search(r"step    0  loss ([0-9.]+)", out).group(1))
    final = float(re.search(r"final loss ([0-9.]+)", out).group(1))
    assert final < first - 0.5, out
    assert f"{len(_micrograd_tests())} tests passed on microtensor" in run_example("micrograd_style_test.py")


def test_cuda_seeding_is_a_no_op_without_a_gpu() -> None:
    """minGPT's set_seed calls torch.cuda.manual_seed_all: accepted, and the CPU stream is untouched."""
    mt.manual_seed(0)
    first = mt.randn(3)
    mt.manual_seed(0)
    mt.cuda.manual_seed_all(5)
    mt.cuda.manual_seed(5)
    np.testing.assert_array_equal(mt.randn(3), first)
    assert not mt.cuda.is_available()
