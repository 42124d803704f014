"""tools/kernel_ab.py: two builds of the kernels in one process, their time ratios and their results compared."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import kernel_ab  # noqa: E402


def test_ratios_are_per_round_quartiles_against_the_base():
    times = {"base": [1.0, 2.0, 4.0, 1.0, 2.0], "new": [0.9, 1.8, 3.2, 1.0, 1.9]}
    assert kernel_ab.ratios(times)["base"] == (1.0, 1.0, 1.0)
    lo, mid, hi = kernel_ab.ratios(times)["new"]
    assert (lo, mid, hi) == pytest.approx((0.9, 0.9, 0.95))


def test_flops_count_two_per_multiply_add_and_both_products_of_bwd():
    assert kernel_ab.flops("fwd", (2, 3, 4)) == 48
    assert kernel_ab.flops("bwd", (2, 3, 4)) == 96


def _git_head() -> bool:
    return shutil.which("cc") is not None and subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "HEAD"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """HEAD's kernels built once (HEAD against itself: one build, loaded as base, new and base copy)."""
    if not _git_head():
        pytest.skip("needs a C compiler and a git checkout")
    return kernel_ab.libraries("HEAD", "HEAD", tmp_path_factory.mktemp("ab"))


def _expected(product: str, a: dict) -> list[np.ndarray]:
    """numpy's results of one product on kernel_ab.operands' arrays."""
    if product == "nn":
        return [a["A"] @ a["B"]]
    out = {"fwd": a["x"] @ a["w"].T + a["b"], "dx": a["g"] @ a["w"], "dw": a["g"].T @ a["x"], "db": a["g"].sum(0)}
    return [out[k] for k in {"fwd": ("fwd",), "dx": ("dx",), "dw": ("dw",), "bwd": ("dx", "dw", "db")}[product]]


@pytest.mark.parametrize("product", kernel_ab.PRODUCTS)
def test_every_product_runs_on_every_build_as_numpy_computes_it(built, product):
    dims = (37, 24, 50)
    for lib in built.values():
        arrays = kernel_ab.operands(product, dims)
        run, results = kernel_ab.call_of(lib, product, dims, arrays)
        run()
        for got, want in zip(results, _expected(product, arrays), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_the_report_names_each_build_its_ratio_and_no_difference_between_identical_builds(built, monkeypatch,
                                                                                           capsys):
    monkeypatch.setattr(kernel_ab, "libraries", lambda *args: built)
    assert kernel_ab.main(["bwd", "50", "24", "40", "--rounds", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "bwd 50 x 24 x 40, 1 thread(s), 3 rounds (base HEAD, new working tree):"
    assert [line.split("  ")[1].strip() for line in lines[1:]] == ["base", "new", "base copy"]
    for line in lines[1:]:
        assert float(re.search(r"time / base ([0-9.]+)", line).group(1)) > 0
        assert line.endswith("largest difference from base 0")


@pytest.mark.skipif(not _git_head(), reason="needs a C compiler and a git checkout")
def test_an_unknown_revision_is_refused_in_one_line():
    with pytest.raises(SystemExit, match="kernel_ab: no csrc/ at revision 'no-such-rev'"):
        kernel_ab.main(["fwd", "4", "4", "4", "--base", "no-such-rev", "--rounds", "2"])


BAD = [["fwd", "0", "4", "4"], ["fwd", "4", "4", "4", "--rounds", "1"], ["mm", "1", "1", "1"], ["nn", "4", "4"]]


@pytest.mark.parametrize("args", BAD)
def test_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        kernel_ab.main(args)
    assert exit_info.value.code == 2
    assert "kernel_ab" in capsys.readouterr().err


def test_every_timed_call_follows_the_eviction_and_rounds_rotate_the_order():
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    evictions = []
    times = kernel_ab.timed_rounds(calls, 2, lambda: evictions.append(len(order)))
    assert {name: len(t) for name, t in times.items()} == {"a": 2, "b": 2, "c": 2}
    assert order == ["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["b"] * 3 + ["c"] * 3 + ["a"] * 3
    assert evictions == list(range(18))
    kernel_ab.evict_caches()()  # writes its buffer without error


def test_a_build_that_does_not_compile_is_refused_with_the_compiler_message(tmp_path):
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler")
    src = tmp_path / "csrc"
    src.mkdir()
    (src / "broken.c").write_text("int f(void) { return undeclared_name; }\n")
    with pytest.raises(SystemExit, match=r"(?s)kernel_ab: broken.c does not compile:\n.*undeclared_name"):
        kernel_ab.build(src, tmp_path / "broken.so")
