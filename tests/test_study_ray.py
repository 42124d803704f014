"""transformer.study --executor ray: the local executor's numbers exactly, resume, Ctrl-C (skipped without Ray)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transformer import study

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
STUDY = ["ablations", "--configs", "full,no_ffn", "--seeds", "2", "--epochs", "1", "--train-size", "200"]
RUNS = [f"{config}/seed{seed}" for config in ("full", "no_ffn") for seed in (0, 1)]


@pytest.fixture(scope="module")
def cluster() -> str:
    """One local Ray instance of 2 CPUs for the module; its address. Its processes start with Ctrl-C at its default
    (see the sigint_default fixture), which ray.cancel needs to interrupt a task."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    finally:
        signal.signal(signal.SIGINT, previous)
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def studies(cluster, tmp_path_factory) -> dict[str, Path]:
    """The same 2-config x 2-seed study run by each executor."""
    out = {name: tmp_path_factory.mktemp(name) / "s" for name in ("local", "ray")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(study, "_curves_png", lambda *args: None)  # the page's figure is tested in test_study.py
        for name, folder in out.items():
            assert study.main([*STUDY, "--executor", name, "--out", str(folder)]) == 0
    return out


def metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without its timings (the only numbers that may differ between two runs)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ray_study_equals_the_local_executor_exactly(studies):
    for run in RUNS:
        local, remote = metrics(studies["local"] / run), metrics(studies["ray"] / run)
        assert len(remote) == 2 and "test/acc" in remote[-1], run
        assert remote == local, run
        predictions = [(studies[name] / run / "test_predictions.jsonl").read_bytes() for name in ("local", "ray")]
        assert predictions[0] == predictions[1], run
    runs = json.loads((studies["ray"] / "results.json").read_text())["runs"]
    assert {r["status"] for r in runs} == {"ok"} and all(r["wall_s"] > 0 for r in runs)
    summaries = [json.loads((studies[name] / "results.json").read_text())["summary"] for name in ("local", "ray")]
    untimed = [[{k: v for k, v in row.items() if k not in ("train_s", "wall_s")} for row in s] for s in summaries]
    assert untimed[0] == untimed[1] and untimed[0][1]["seeds"] == [0, 1]


def test_interrupted_ray_study_resumes_without_rerunning_finished_runs(studies, tmp_path, monkeypatch, capsys):
    """no_ffn seed 1 killed after its checkpoint, before its test line: only it runs, to the same numbers."""
    monkeypatch.setattr(study, "_curves_png", lambda *args: None)
    copy = tmp_path / "s"
    shutil.copytree(studies["ray"], copy)
    resumed = copy / "no_ffn" / "seed1"
    rows = (resumed / "metrics.jsonl").read_text().splitlines()
    (resumed / "metrics.jsonl").write_text(rows[0] + "\n")
    finished = {run: tree(copy / run) for run in RUNS[:3]}
    capsys.readouterr()
    assert study.main([*STUDY, "--executor", "ray", "--out", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "(3 already done)" in out and "[4/4] no_ffn seed 1" in out
    assert {run: tree(copy / run) for run in RUNS[:3]} == finished
    assert "--resume" in (resumed / "train.log").read_text().split("$ ")[-1]
    assert metrics(resumed) == metrics(studies["ray"] / "no_ffn" / "seed1")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery differs on Windows")
def test_ctrl_c_cancels_the_tasks_and_each_run_checkpoints_for_resume(cluster, tmp_path, sigint_default):
    """A driver joining by --address is interrupted: each run saves a checkpoint the next study resumes from."""
    args = ["ablations", "--configs", "full,no_ffn", "--epochs", "50", "--train-size", "3000", "--executor", "ray",
            "--out", str(tmp_path), "--address", cluster]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "transformer.study", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=sigint_default)
    logs = [tmp_path / name / "seed0" / "train.log" for name in ("full", "no_ffn")]
    deadline = time.monotonic() + 90
    while not all(log.exists() and "model:" in log.read_text() for log in logs):
        assert time.monotonic() < deadline and proc.poll() is None, "the Ray tasks did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted: cancelling 2 Ray task(s)" in out and (tmp_path / "results.md").exists()
    for log in logs:
        assert "checkpoint saved" in log.read_text() and (log.parent / "ckpt_last.npz").exists()
    configs = [c for c in study.study_configs("ablations", 50) if c.name in ("full", "no_ffn")]
    jobs, done = study.plan_jobs(configs, [0], tmp_path, 50, ["--train-size", "3000"])
    assert done == [] and [job.command[-1] for job in jobs] == ["--resume", "--resume"]
