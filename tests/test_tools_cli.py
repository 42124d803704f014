"""predict, report, graph and study: bounded memory, exit code 2 with one line for every bad file, folder or
input, nothing on disk changed by a refusal, and a study that never deletes a run."""

from __future__ import annotations

import hashlib
import io
import json
import os
import select
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import microtensor as mt
from transformer import files, graph, predict, report, study, train
from transformer.checkpoint import CKPT_BEST, read_checkpoint, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
TINY = ["--epochs", "1", "--train-size", "64", "--batch-size", "32", "--d-model", "16", "--n-heads", "2",
        "--d-ff", "32", "--eval-size", "20", "--quiet", "--no-diagnostics", "--threads", "1"]


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the SHA-256 of its bytes (folders too): what 'nothing changed' compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tools") / "run"
    assert train.main(["--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def ckpt(run) -> Path:
    return run / CKPT_BEST


# ---- predict --------------------------------------------------------------------------------------


def _stdin(monkeypatch, data: bytes) -> io.BytesIO:
    raw = io.BytesIO(data)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))
    return raw


def test_predict_memory_stays_flat_over_many_lines(ckpt, monkeypatch):
    """1,500 lines in batches of 256 peak near 1.1 MB of Python/numpy allocations; one batch of all: 5.9 MB."""
    lines = [f"{op}({a},{b},{c})" for op in ("Max", "Min", "First", "Last", "Second")
             for a in range(3) for b in range(10) for c in range(10)]
    _stdin(monkeypatch, ("\n".join(lines) + "\n").encode())
    with open(os.devnull, "w") as sink:
        monkeypatch.setattr(sys, "stdout", sink)
        tracemalloc.start()
        try:
            assert predict.main(["--ckpt", str(ckpt), "--json"]) == 0
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert len(lines) == 1500 and peak < 2.5e6, f"peak {peak / 1e6:.1f} MB"


def test_predict_answers_before_stdin_ends(ckpt):
    """A full batch is answered while stdin is still open: output streams, it does not wait for the end."""
    proc = subprocess.Popen([sys.executable, "-m", "transformer.predict", "--ckpt", str(ckpt), "--json"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        proc.stdin.write(b"Max(5,3,9)\n" * predict.BATCH)
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no answer while stdin was open"
        assert json.loads(proc.stdout.readline())["input"] == "Max(5,3,9)"
    finally:
        proc.stdin.close()
        out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.wait(60) == 0, err
    assert len(out.splitlines()) == predict.BATCH - 1


def test_predict_stops_quietly_when_its_reader_goes(ckpt):
    """`predict < inputs | head -1`: no BrokenPipeError traceback, exit 141 as a Unix tool killed by SIGPIPE."""
    proc = subprocess.Popen([sys.executable, "-m", "transformer.predict", "--ckpt", str(ckpt)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    proc.stdin.write(b"Max(5,3,9)\n" * 16 * predict.BATCH)  # 45 kB in; 240 kB out: more than a pipe holds
    proc.stdin.close()
    assert proc.stdout.readline().startswith(b"Max(5,3,9) -> ")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141 and err == ""


def test_predict_huge_line_is_refused_after_reading_its_start(ckpt, monkeypatch, capsys):
    raw = _stdin(monkeypatch, b"Max(1,2,3)\n" + b"M" * 10_000_000 + b"\nMin(1,2,3)\n")
    tracemalloc.start()
    try:
        assert predict.main(["--ckpt", str(ckpt)]) == 2
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    out, err = capsys.readouterr()
    assert out.startswith("Max(1,2,3) -> ") and len(out.splitlines()) == 1  # the lines before it are answered
    line = one_line(err)
    assert "line 2 is longer than 1000 characters" in line and len(line) < 250
    assert raw.tell() < 20_000 and peak < 1e6  # the 10 MB line was never read whole


@pytest.mark.parametrize("text, message", [
    ("Foo(1,2,3)", "line 2: encode: unknown operation 'Foo'"),
    ("Max(1,2", "line 2: encode: missing closing ')'"),
    ("\xff\xfe", "line 2: encode: unexpected character"),
])
def test_predict_bad_line_names_it_after_answering_the_lines_before(ckpt, monkeypatch, capsys, text, message):
    _stdin(monkeypatch, f"Max(1,2,3)\n{text}\nMin(1,2,3)\n".encode(errors="surrogateescape"))
    assert predict.main(["--ckpt", str(ckpt), "--json"]) == 2
    out, err = capsys.readouterr()
    assert [json.loads(r)["input"] for r in out.splitlines()] == ["Max(1,2,3)"]
    assert message in one_line(err)


def _corrupt(ckpt: Path, path: Path, value: float, key: str = "model/tok_emb") -> Path:
    """A checkpoint that verifies (its checksum rewritten) but holds `value` in one weight."""
    meta, arrays = read_checkpoint(ckpt)
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] = value
    meta = {k: v for k, v in meta.items() if k not in ("format", "sha256")}
    write_checkpoint(path, arrays, meta)
    return path


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_predict_refuses_a_checkpoint_with_nonfinite_weights(ckpt, tmp_path, capsys, value):
    bad = _corrupt(ckpt, tmp_path / "bad.npz", value)
    assert predict.main(["--ckpt", str(bad), "--json", "Max(1,2,3)"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "NaN or Inf" in one_line(err) and str(bad) in err


class _Overflowing:
    """A model whose logits are not finite for its second input (finite weights can still overflow)."""

    def eval(self) -> _Overflowing:
        return self

    def __call__(self, ids, mask):
        logits = np.zeros((len(ids), 20), np.float32)
        logits[1:, 3] = np.inf
        return mt.tensor(logits)


def test_predict_json_never_prints_nan_when_the_output_is_not_finite(monkeypatch, capsys):
    monkeypatch.setattr(predict, "load_model", lambda path: _Overflowing())
    assert predict.main(["--json", "Max(1,2,3)", "Max(9,9,9)"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "the model's output for 'Max(9,9,9)' is not finite" in one_line(err)


def _bad_checkpoints(ckpt: Path, folder: Path) -> dict[str, Path]:
    good = ckpt.read_bytes()
    meta, arrays = read_checkpoint(ckpt)
    made = {"empty": b"", "truncated": good[: len(good) // 2], "random": np.random.default_rng(0).bytes(2000)}
    paths = {name: folder / f"{name}.npz" for name in made}
    for name, data in made.items():
        paths[name].write_bytes(data)
    np.save(folder / "array.npy", np.zeros(3))
    paths["npy"] = folder / "array.npy"
    other = {**meta, "config": {**meta["config"], "model": {**meta["config"]["model"], "d_model": 32}}}
    write_checkpoint(folder / "other_model.npz", arrays, other)
    paths["meta of another model"] = folder / "other_model.npz"
    write_checkpoint(folder / "no_config.npz", arrays, {"epoch": 1})
    paths["meta without config"] = folder / "no_config.npz"
    np.savez(folder / "meta_not_json.npz", meta=np.frombuffer(b"{torn", np.uint8), **arrays)
    paths["meta not JSON"] = folder / "meta_not_json.npz"
    paths["missing"] = folder / "missing.npz"
    return paths


def test_predict_bad_checkpoints_exit_2_with_one_line_naming_the_file(ckpt, tmp_path, capsys):
    for name, path in _bad_checkpoints(ckpt, tmp_path).items():
        assert predict.main(["--ckpt", str(path), "Max(1,2,3)"]) == 2, name
        out, err = capsys.readouterr()
        assert out == "" and f"--ckpt {path}" in one_line(err), name


def test_predict_bad_checkpoint_from_the_command_line(ckpt, tmp_path):
    (tmp_path / "t.npz").write_bytes(ckpt.read_bytes()[:500])
    proc = subprocess.run([sys.executable, "-m", "transformer.predict", "--ckpt", str(tmp_path / "t.npz"),
                           "Max(1,2,3)"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and "truncated or damaged" in one_line(proc.stderr)


# ---- report ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content", [
    ("config.json", b'{"model": {"d_mod'),
    ("config.json", b"[1, 2]"),
    ("diagnostics/index.json", b'{"epochs": [0, 1'),
    ("diagnostics/epoch_001.json", b'{"probes": [{"probe"'),
    ("diagnostics/epoch_001.npz", b"PK\x03\x04torn"),
    ("diagnostics/epoch_002.npz", b"\x93NUMPY not an archive"),
])
def test_report_torn_file_exits_2_naming_it_and_writes_nothing(run, tmp_path, capsys, name, content):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    (folder / "diagnostics").mkdir()
    np.savez(folder / "diagnostics" / "epoch_001.npz", embedding=np.zeros((20, 16), np.float32))
    (folder / name).write_bytes(content)
    before = tree(folder)
    assert report.main([str(folder)]) == 2
    assert str(folder / name) in one_line(capsys.readouterr().err)
    assert tree(folder) == before


def test_report_missing_folder_exits_2(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope")]) == 2
    assert "is not a run folder; train first" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "nope").exists()


def test_report_keeps_a_torn_last_metrics_line(run, tmp_path, capsys):
    """A torn last line of metrics.jsonl (a killed write) is skipped: the report of the rest is drawn."""
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train/lo')
    loaded = report.load_run(folder)
    assert [r["epoch"] for r in loaded.epochs] == [1] and loaded.final["test/acc"] >= 0


def test_graph_bad_block_count_exits_2_with_one_line(tmp_path, capsys):
    assert graph.main(["--out", str(tmp_path / "g.svg"), "--n-blocks", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "graph: n_blocks must be >= 0, got -1"
    assert not (tmp_path / "g.svg").exists()


# ---- graph and study: unwritable --out --------------------------------------------------------------


@pytest.fixture
def unwritable(tmp_path, monkeypatch) -> dict[str, Path]:
    """--out values that cannot be written: under a file, under a file's child, in a folder without write
    permission (as root, which writes anyway, os.access is made to answer as it would for anyone else)."""
    afile = tmp_path / "a_file"
    afile.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(files.os, "access", lambda p, mode: Path(p) != locked and real(p, mode))
    yield {"under a file": afile / "g", "under a file's child": afile / "sub" / "g", "no permission": locked / "g"}
    locked.chmod(0o755)


def test_graph_unwritable_out_exits_2_and_writes_nothing(tmp_path, unwritable, capsys):
    before = tree(tmp_path)
    for case, out in unwritable.items():
        assert graph.main(["--out", str(out) + ".svg", "--collapse", "--no-grad-norms"]) == 2, case
        assert f"--out {out}.svg" in one_line(capsys.readouterr().err), case
    (tmp_path / "dir.svg").mkdir()
    assert graph.main(["--out", str(tmp_path / "dir.svg"), "--no-grad-norms"]) == 2
    assert "cannot write it" in one_line(capsys.readouterr().err)
    assert tree(tmp_path) == {**before, "dir.svg": "dir"}


def test_study_unwritable_out_exits_2_and_writes_nothing(tmp_path, unwritable, capsys):
    before = tree(tmp_path)
    for case, out in unwritable.items():
        assert study.main(["ablations", "--configs", "full", "--epochs", "1", "--out", str(out)]) == 2, case
        assert f"--out {out}" in one_line(capsys.readouterr().err), case
    assert study.main(["ablations", "--epochs", "1", "--out", str(tmp_path / "a_file")]) == 2
    assert "a_file is a file, not a folder" in one_line(capsys.readouterr().err)
    assert tree(tmp_path) == before


# ---- study: never delete, skip, refuse, resume ----------------------------------------------------------

STUDY = ["ablations", "--configs", "full,no_ffn", "--epochs", "1", "--train-size", "200"]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "s"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(study, "_curves_png", lambda *args: None)  # the page's figure is tested in test_study.py
        assert study.main([*STUDY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy(finished_study, tmp_path, monkeypatch) -> Path:
    """A copy of the finished study (in another folder: the run settings do not include --out)."""
    monkeypatch.setattr(study, "_curves_png", lambda *args: None)
    shutil.copytree(finished_study, tmp_path / "s")
    return tmp_path / "s"


def test_study_rerun_skips_finished_runs_and_changes_none(copy, capsys):
    runs = {name: tree(copy / name) for name in ("full", "no_ffn")}
    assert study.main([*STUDY, "--out", str(copy)]) == 0
    assert "(2 already done)" in capsys.readouterr().out
    assert {name: tree(copy / name) for name in runs} == runs
    assert {r["status"] for r in json.loads((copy / "results.json").read_text())["runs"]} == {"ok"}


def test_study_with_other_settings_is_refused_and_deletes_nothing(copy, capsys):
    before = tree(copy)
    assert study.main([*STUDY[:-1], "300", "--out", str(copy)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(copy / "full" / "seed0") in line and "--train-size 200 there, 300 now" in line
    assert "(and 1 more)" in line
    assert study.main(["ablations", "--configs", "full", "--epochs", "2", "--train-size", "200",
                       "--out", str(copy)]) == 2
    assert "--epochs 1 there, 2 now" in one_line(capsys.readouterr().err)
    assert tree(copy) == before


def test_study_refuses_a_run_folder_no_study_started(copy, run, capsys):
    folder = copy / "no_ffn" / "seed0"
    shutil.rmtree(folder)
    shutil.copytree(run, folder)
    before = tree(copy)
    assert study.main([*STUDY, "--out", str(copy)]) == 2
    assert f"{folder} holds a run" in one_line(capsys.readouterr().err)
    assert tree(copy) == before


def test_interrupted_study_resumes_without_rerunning_finished_runs(copy, capsys):
    """no_ffn killed after its last checkpoint, before its test line: it resumes; full is not trained again."""
    full = tree(copy / "full")
    metrics = copy / "no_ffn" / "seed0" / "metrics.jsonl"
    rows = metrics.read_text().splitlines()
    metrics.write_text(rows[0] + "\n")
    assert "test/acc" in rows[1]
    assert study.main([*STUDY, "--out", str(copy)]) == 0
    assert "(1 already done)" in capsys.readouterr().out
    assert tree(copy / "full") == full
    log = (copy / "no_ffn" / "seed0" / "train.log").read_text()
    assert log.count("$ ") == 2 and log.splitlines()[-1] and "--resume" in log.split("$ ")[-1]
    after = metrics.read_text().splitlines()
    assert after[0] == rows[0] and "test/acc" in json.loads(after[1])


def test_study_restarts_a_run_killed_before_its_first_checkpoint(copy, capsys):
    """Same settings, no checkpoint yet: started afresh (train --overwrite), the finished run untouched."""
    full = tree(copy / "full")
    folder = copy / "no_ffn" / "seed0"
    for name in ("ckpt_last.npz", "ckpt_best.npz", "test_predictions.jsonl"):
        (folder / name).unlink()
    (folder / "metrics.jsonl").write_text("")
    assert study.main([*STUDY, "--out", str(copy)]) == 0
    assert "(1 already done)" in capsys.readouterr().out
    assert tree(copy / "full") == full
    assert "--overwrite" in (folder / "train.log").read_text().split("$ ")[-1]
    assert study.read_run("no_ffn", 0, folder).status == "ok"
