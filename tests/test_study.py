"""transformer.study: the results table from known numbers, and a tiny real study end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transformer import study
from transformer.data import OPS

ROOT = Path(__file__).resolve().parents[1]


def fake_result(config: str, seed: int, acc: float, tmp: Path, wall: float = 10.0) -> study.RunResult:
    final = {"epoch": 2, "test/acc": acc, "test/loss": 1 - acc, "time/train_s": 8.0,
             **{f"test/acc/{op}": acc for op in OPS}}
    return study.RunResult(config, seed, tmp, "ok", final, [(1, acc / 2, 2.0), (2, acc, 1.0)], wall)


def test_table_means_spread_and_change_vs_baseline(tmp_path):
    configs = study.study_configs("ablations", 50)[:3]
    results = [fake_result("full", 0, 0.98, tmp_path), fake_result("full", 1, 1.0, tmp_path),
               fake_result("no_attention", 0, 0.40, tmp_path), fake_result("no_attention", 1, 0.50, tmp_path),
               study.RunResult("no_ffn", 0, tmp_path, "failed (exit 1: loss nan)")]
    rows = study.summarize(configs, results)
    assert rows[0]["acc_mean"] == pytest.approx(0.99) and rows[0]["acc_std"] == pytest.approx(0.0141421, 1e-4)
    assert rows[1]["delta"] == pytest.approx(0.45 - 0.99)
    assert rows[2]["failed"] == [0] and "acc_mean" not in rows[2]
    table = study.markdown_table(rows).splitlines()
    assert table[0].startswith("| config | test acc % (mean ± std) | First |")
    assert "| full | 99.0 ± 1.4 |" in table[2] and "baseline" in table[2]
    assert "| no_attention | 45.0 ± 7.1 |" in table[3] and "-54.0" in table[3]
    assert "failed: seed 0" in table[4]


def test_study_configurations():
    assert [c.name for c in study.study_configs("ablations", 50)] == [
        "full", "no_attention", "no_ffn", "no_layernorm", "no_residual", "one_block", "no_posenc"]
    sizes = [c.args[-1] for c in study.study_configs("datasize", 50)]
    assert sorted(map(int, sizes)) == [1000, 5000, 10000, 50000]
    optimizers = {c.name: c.args for c in study.study_configs("optimizers", 50)}
    assert optimizers["sgd_momentum0.9_lr0.01"][-1] == "0.9"
    step = next(c for c in study.study_configs("schedules", 10) if c.name == "step")
    assert step.args[step.args.index("--step-size") + 1] == "4"
    with pytest.raises(ValueError, match="unknown study"):
        study.study_configs("nope", 5)


def test_tiny_study_end_to_end_and_rerun_keeps_finished_runs(tmp_path, capsys):
    args = ["ablations", "--configs", "full,no_ffn", "--epochs", "1", "--seeds", "1", "--train-size", "200",
            "--out", str(tmp_path)]
    assert study.main(args) == 0
    out = capsys.readouterr().out
    assert "[2/2]" in out and "results:" in out
    md = (tmp_path / "results.md").read_text()
    assert "| full |" in md and "| no_ffn |" in md and "baseline" in md
    page = (tmp_path / "index.html").read_text()
    assert 'src="data:image/png;base64,' in page and "http" not in page.split("<body>")[1]
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert {r["status"] for r in runs} == {"ok"} and all(r["wall_s"] > 0 for r in runs)
    cmd = json.loads((tmp_path / "full" / "seed0" / "study_command.json").read_text())
    assert cmd[cmd.index("--threads") + 1] == "1" and "--no-diagnostics" in cmd
    assert study.main(args) == 0
    assert "(2 already done)" in capsys.readouterr().out


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery differs on Windows")
def test_ctrl_c_stops_the_children_and_still_writes_the_table(tmp_path, sigint_default):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "transformer.study", "ablations", "--configs", "full,no_ffn", "--epochs", "50",
         "--train-size", "3000", "--out", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=sigint_default)
    logs = [tmp_path / "full" / "seed0" / "train.log", tmp_path / "no_ffn" / "seed0" / "train.log"]
    deadline = time.monotonic() + 60
    while not all(log.exists() and "model:" in log.read_text() for log in logs):
        assert time.monotonic() < deadline, "the training children did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted: stopping 2 running job(s)" in out
    assert (tmp_path / "results.md").exists()
    for log in logs:
        assert "interrupted" in log.read_text()


@pytest.mark.parametrize("flag,value", [("--seeds", "0"), ("--epochs", "0"), ("--jobs", "0"), ("--train-size", "0"),
                                        ("--train-size", "-5"), ("--threads", "0")])
def test_bad_counts_exit_2_before_any_run(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        study.main(["ablations", "--out", str(tmp_path / "s"), flag, value])
    assert exit_info.value.code == 2
    assert "--train-size must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_ray_executor_without_ray_exits_2_naming_the_extra(tmp_path, capsys, monkeypatch):
    real = study.importlib.util.find_spec
    monkeypatch.setattr(study.importlib.util, "find_spec", lambda name: None if name == "ray" else real(name))
    assert study.main(["ablations", "--executor", "ray", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[cluster]"' in err
    assert not (tmp_path / "s").exists()


def test_address_without_the_ray_executor_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        study.main(["ablations", "--address", "auto", "--out", str(tmp_path / "s")])
    assert exit_info.value.code == 2
    assert "--address joins a Ray cluster: give it with --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
