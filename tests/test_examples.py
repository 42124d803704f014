"""Run each example as a user would (a subprocess) and check what it prints."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import microtensor as mt

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    """stdout of `python examples/<name> args...`, failing the test on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=EXAMPLES.parent,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mlp_classifier_example_learns_the_spirals() -> None:
    out = run_example("mlp_classifier.py")
    train = float(re.search(r"train accuracy: ([0-9.]+)", out).group(1))
    test = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    assert train > 0.97 and test > 0.95, out


def test_custom_function_example_gradchecks_and_trains() -> None:
    out = run_example("custom_function.py")
    assert "gradcheck: True" in out
    first, final = (float(v) for v in re.search(r"mse: ([0-9.]+) -> ([0-9.]+)", out).groups())
    assert final < 0.01 * first and final < 1e-3, out


def test_custom_swish_equals_the_composed_ops() -> None:
    swish = load_example("custom_function.py").Swish
    x = np.random.default_rng(0).standard_normal((3, 4))
    a, b = mt.tensor(x, requires_grad=True), mt.tensor(x, requires_grad=True)
    y1, y2 = swish.apply(a, beta=1.3), b * (b * 1.3).sigmoid()
    np.testing.assert_allclose(y1.data, y2.data, rtol=1e-12)
    y1.sum().backward()
    y2.sum().backward()
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-12)
