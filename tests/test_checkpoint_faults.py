"""Checkpoints under faults: damaged files are refused with one line, kills and a full disk lose nothing."""

from __future__ import annotations

import io
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import microtensor as mt
from transformer import train
from transformer.checkpoint import (
    CKPT_LAST,
    LOCK,
    CheckpointError,
    load_model,
    locked,
    read_checkpoint,
    remove_stale_temps,
    write_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--train-size", "32", "--batch-size", "16", "--d-model", "8", "--n-heads", "2", "--d-ff", "16",
        "--n-blocks", "1", "--eval-size", "10", "--quiet", "--no-diagnostics"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished one-epoch run."""
    out = tmp_path_factory.mktemp("run")
    assert train.main(["--out", str(out), "--epochs", "1", *TINY]) == 0
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    return exc.value.code


def _damaged(good: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    npy = io.BytesIO()
    np.save(npy, np.zeros((4, 4), np.float32))
    return {
        "empty": b"",
        "truncated to half": good[: len(good) // 2],
        "truncated by one byte": good[:-1],
        "random bytes": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "random bytes after the zip magic": b"PK\x03\x04" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "a .npy array": npy.getvalue(),
    }


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_damaged_or_foreign_files_are_refused_with_one_line(run, tmp_path, rng):
    cases = {}
    for i, (name, data) in enumerate(_damaged((run / CKPT_LAST).read_bytes(), rng).items()):
        cases[name] = tmp_path / f"{i}.npz"
        cases[name].write_bytes(data)
    cases["foreign .npz (no meta)"] = _write_npz(tmp_path / "foreign.npz", weights=np.zeros(3))
    cases["meta that is not JSON"] = _write_npz(tmp_path / "meta.npz", meta=np.frombuffer(b"{nope", np.uint8))
    cases["meta without a config"] = _write_npz(tmp_path / "noconfig.npz", meta=np.frombuffer(b"[1, 2]", np.uint8))
    cases["a folder"] = tmp_path
    cases["a missing file"] = tmp_path / "missing.npz"
    for name, path in cases.items():
        with pytest.raises(CheckpointError) as err:
            load_model(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message, (name, message)


def test_a_checkpoint_with_nan_weights_is_refused(run, tmp_path):
    meta, arrays = read_checkpoint(run / CKPT_LAST)
    name = next(k for k in arrays if k.startswith("model/"))
    arrays[name] = np.full_like(arrays[name], np.nan)
    write_checkpoint(tmp_path / "nan.npz", arrays, meta)
    with pytest.raises(CheckpointError, match=f"weight {name[len('model/'):]} holds NaN or Inf"):
        load_model(tmp_path / "nan.npz")


def test_every_bit_flip_is_refused_or_harmless(run, rng):
    """A flipped bit anywhere in the file: refused, or (zip padding, timestamps) the same contents."""
    good = (run / CKPT_LAST).read_bytes()
    meta, arrays = read_checkpoint(run / CKPT_LAST)
    path = run.parent / "flipped.npz"
    refused = 0
    for position in rng.choice(len(good), size=100, replace=False):
        data = bytearray(good)
        data[position] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
        try:
            meta2, arrays2 = read_checkpoint(path)
        except CheckpointError as err:
            assert "\n" not in str(err)
            refused += 1
            continue
        assert meta2 == meta and arrays2.keys() == arrays.keys(), position
        for key in arrays:
            np.testing.assert_array_equal(arrays2[key], arrays[key])
    assert refused > 75  # nearly every byte matters; the rest must have changed nothing


def test_a_checksum_catches_a_change_the_zip_format_does_not(run, tmp_path):
    """Arrays rewritten into a valid archive with the old meta: only the checksum can tell."""
    meta, arrays = read_checkpoint(run / CKPT_LAST)
    name = next(k for k in arrays if k.startswith("model/"))
    arrays[name] = arrays[name] + np.float32(1e-3)
    write_checkpoint(tmp_path / "ok.npz", arrays, meta)  # written with a fresh checksum, it loads
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "ok.npz")[1][name], arrays[name])
    stored = mt.load(run / CKPT_LAST)
    stored[name] = arrays[name]
    _write_npz(tmp_path / "edited.npz", **stored)
    with pytest.raises(CheckpointError, match="checksum"):
        read_checkpoint(tmp_path / "edited.npz")


@pytest.mark.parametrize("damage", ["empty", "truncated to half", "random bytes", "a .npy array"])
def test_resume_from_a_damaged_checkpoint_exits_2_and_changes_nothing(run, tmp_path, rng, capsys, damage):
    out = tmp_path / "run"
    out.mkdir()
    for name, data in _snapshot(run).items():
        (out / name).write_bytes(data)
    (out / CKPT_LAST).write_bytes(_damaged((run / CKPT_LAST).read_bytes(), rng)[damage])
    before = _snapshot(out)
    assert _exit_code(["--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(out / CKPT_LAST) in err and "Traceback" not in err
    assert _snapshot(out) == before


def _writer(path: Path, ready: int) -> None:
    """Child: write checkpoints i = 0, 1, ... to `path` forever, each 1 MB of the value i."""
    i = 0
    while True:
        write_checkpoint(path, {"model/w": np.full(1 << 18, i, np.float32)}, {"config": {}, "i": i})
        os.write(ready, b"x")
        i += 1


def test_sigkill_during_checkpoint_writes_never_leaves_a_bad_checkpoint(tmp_path, rng):
    path = tmp_path / CKPT_LAST
    for _ in range(10):
        ready, done = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(ready)
            try:
                _writer(path, done)
            finally:
                os._exit(1)
        os.close(done)
        assert os.read(ready, 1) == b"x"  # the first write is done, more are under way
        time.sleep(float(rng.uniform(0, 0.05)))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        finished = 1 + len(os.read(ready, 1 << 16))
        os.close(ready)
        meta, arrays = read_checkpoint(path)  # the last finished write, or the one in flight
        assert meta["i"] in (finished - 1, finished)
        np.testing.assert_array_equal(arrays["model/w"], np.full(1 << 18, meta["i"], np.float32))
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CKPT_LAST]


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _cli(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "transformer.train", *argv], capture_output=True, text=True,
                          cwd=ROOT, **kwargs)


def test_a_full_disk_exits_2_keeps_the_last_checkpoint_and_leaves_no_temp_file(run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name, data in _snapshot(run).items():
        (out / name).write_bytes(data)
    last = (out / CKPT_LAST).read_bytes()
    proc = _cli(["--out", str(out), "--resume", "--epochs", "2", "--quiet"],
                preexec_fn=_limit_file_size(len(last) // 2))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and "--resume" in lines[-1]
    assert re.search(rf"cannot write {re.escape(str(out))}/ckpt_(best|last)\.npz: File too large", lines[-1])
    assert (out / CKPT_LAST).read_bytes() == last
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    assert train.main(["--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0


def test_a_second_process_on_the_same_folder_exits_2_naming_the_first(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    ready, done = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child holds the folder as a training run does
        with locked(out):
            os.write(done, b"x")
            time.sleep(60)
        os._exit(0)
    try:
        assert os.read(ready, 1) == b"x"
        assert _exit_code(["--out", str(out), "--epochs", "1", *TINY]) == 2
        assert f"in use by another training process (pid {pid})" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [LOCK]  # the second wrote nothing
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert (out / LOCK).exists()  # SIGKILL left the file, but the lock died with the process
    assert train.main(["--out", str(out), "--epochs", "1", *TINY]) == 0
    assert not (out / LOCK).exists()
