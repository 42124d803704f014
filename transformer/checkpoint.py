"""Checkpoints and run folders: the format, its atomic write and verification, loading, and the resume rules.

A checkpoint is an .npz archive of arrays (`model/*`, `optim/*`, `epoch_start/*`)
and a JSON `meta` entry (config, progress, RNG, scheduler, early stopping, the
metrics row of its last epoch, a digest of the data split) holding a SHA-256 of
the arrays and the meta, so a damaged file is refused rather than loaded. docs/RELIABILITY.md
states the promises and names the tests that check them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import microtensor as mt

from .config import MAY_CHANGE_ON_RESUME, ModelConfig, SettingError, differences, flag_of
from .data import Splits
from .gpt import GPT
from .model import Transformer

CKPT_LAST, CKPT_BEST = "ckpt_last.npz", "ckpt_best.npz"
METRICS, LOCK = "metrics.jsonl", ".lock"
FORMAT = 2
# What a run (and its report) writes into its folder: present means the folder holds a run; --overwrite
# removes them, so no stale figure describes a run that is gone.
RUN_FILES = ("config.json", METRICS, "test_predictions.jsonl", CKPT_LAST, CKPT_BEST, "diagnostics",
             "figures", "report.html")


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this trainer; the message is one line naming it."""


class RunError(ValueError):
    """A run folder that cannot be trained into as asked; the message names the folder or flag and the fix."""


# ---- format -------------------------------------------------------------------------------------


def _digest(arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order, and the meta's JSON."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.data)
    return h.hexdigest()


def split_digest(data: Splits) -> str:
    """A fingerprint of the train/val/test inputs, stored with the run and checked on resume."""
    return _digest({f"{name}/{k}": getattr(getattr(data, name), k)
                    for name in ("train", "val", "test") for k in ("ids", "targets")})


def remove_stale_temps(folder: Path) -> None:
    """Delete temp files left by a save that was killed (call with the run folder locked)."""
    for name in RUN_FILES:
        for tmp in folder.glob(f"{name}.tmp-*"):
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` by `text` all at once (temp file + rename); the temp file never outlives a failure."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_checkpoint(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write atomically: a temp file in the same folder, fsync, rename over `path`; on failure remove the temp."""
    meta = {**meta, "format": FORMAT}
    meta["sha256"] = _digest(arrays, meta)
    encoded = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, meta=encoded, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # e.g. a full disk: name the checkpoint, not the temp file that is gone
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a checkpoint, verified; CheckpointError naming the file when it is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read it ({err.strerror})") from None
    if not head:
        raise CheckpointError(f"{path}: the file is empty; not a checkpoint")
    if head != b"PK\x03\x04":
        kind = "a .npy array" if head == b"\x93NUM" else "not an .npz archive"
        raise CheckpointError(f"{path}: not a checkpoint ({kind})")
    try:
        arrays = mt.load(path)
    except Exception as err:  # an untrusted file: whatever numpy or zipfile raise, it is not a checkpoint
        raise CheckpointError(f"{path}: truncated or damaged ({type(err).__name__}: {err})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not a transformer checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(np.asarray(arrays.pop("meta"), dtype=np.uint8).tobytes().decode())
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: its meta entry is not JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: not a transformer checkpoint (meta holds no config)")
    if "format" in meta and meta.pop("sha256", None) != _digest(arrays, meta):
        raise CheckpointError(f"{path}: damaged (its contents do not match the checksum written with them)")
    return meta, arrays


def section(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays under `prefix`, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_weights(model: Transformer | GPT, arrays: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Load `model/*` arrays into `model`; CheckpointError when they do not fit it or are not finite."""
    weights = section(arrays, "model/")
    bad = [k for k, v in weights.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: weight {bad[0]} holds NaN or Inf; use an earlier checkpoint")
    try:
        model.load_state_dict(weights)
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: its weights do not fit its model config ({err})") from None


def model_config(meta: dict[str, Any], path: str | os.PathLike) -> ModelConfig:
    """The model config stored in a checkpoint's meta; CheckpointError when it is not a valid one."""
    try:
        return ModelConfig.from_dict(meta["config"]["model"])
    except (KeyError, TypeError, SettingError) as err:
        raise CheckpointError(f"{path}: its model config is not valid ({err})") from None


def load_model(path: str | os.PathLike) -> Transformer:
    """Rebuild the model stored in a checkpoint (its config is in the checkpoint), in eval mode."""
    meta, arrays = read_checkpoint(path)
    if "text" in meta["config"]:
        raise CheckpointError(f"{path}: a text run's checkpoint (a GPT), not one of the operations task")
    model = Transformer(model_config(meta, path))
    load_weights(model, arrays, path)
    return model.eval()


def load_text_model(path: str | os.PathLike) -> tuple[GPT, str]:
    """The GPT of a text run's checkpoint, in eval mode, and its vocabulary (character i is id i)."""
    meta, arrays = read_checkpoint(path)
    if "text" not in meta["config"] or not isinstance(meta.get("vocab"), str):
        raise CheckpointError(f"{path}: not a text run's checkpoint (train one with --task text)")
    model = GPT(model_config(meta, path))
    load_weights(model, arrays, path)
    return model.eval(), meta["vocab"]


# ---- run folders --------------------------------------------------------------------------------


def holds_run(run_dir: Path) -> list[str]:
    """The files of a run found in `run_dir` (empty when none)."""
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def clear_run(run_dir: Path) -> None:
    """Remove what an earlier run wrote (for --overwrite, once the new run starts writing)."""
    for name in RUN_FILES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder (flock on OUT/.lock); RunError naming the holder if taken."""
    path = run_dir / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunError(f"--out {run_dir}: cannot write there ({err.strerror}); choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunError(
                f"--out {run_dir} is in use by another training process (pid {holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file the previous holder removed after we opened it
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


# ---- resume -------------------------------------------------------------------------------------


def _row_text(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True)


def read_metrics(run_dir: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The rows of metrics.jsonl and a warning when a torn last line (a killed write) was dropped."""
    path = run_dir / METRICS
    if not path.exists():
        return [], None
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise RunError(f"{path}: cannot read it ({err}); move it aside to resume without it") from None
    rows, warning = [], None
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError:
            if number < len(lines):
                raise RunError(f"{path}: line {number} is not a JSON object; repair or move the file") from None
            warning = f"warning: dropped the torn last line of {path} (a write was cut off)"
            continue
        rows.append(row)
    return rows, warning


def reconcile_metrics(run_dir: Path, meta: dict[str, Any]) -> list[str]:
    """Make metrics.jsonl end at the checkpoint's epoch; returns the warnings to print.

    Rows past the checkpoint (and the test line) are dropped: the resumed run recomputes them, to the same
    numbers. The checkpoint holds its own epoch's row, which is restored if a kill came between the two
    writes. Rows missing before it, or a row that differs from the checkpoint's (a checkpoint from another
    run), are refused with RunError: resuming would leave a hole or mix two runs.
    """
    path, epoch, own = run_dir / METRICS, meta["epoch"], meta.get("metrics_row")
    rows, warning = read_metrics(run_dir)
    warnings = [warning] if warning else []
    epochs = [r for r in rows if "time/train_s" not in r]  # the last line of a finished run has it
    if any(r.get("epoch") != i for i, r in enumerate(epochs[:epoch], 1)):
        raise RunError(f"{path} does not list epochs 1, 2, ... in order; it does not belong to this checkpoint")
    kept = epochs[:epoch]
    if own is not None and len(kept) == epoch and _row_text(kept[-1]) != _row_text(own):
        raise RunError(
            f"{path}: epoch {epoch} differs from the checkpoint's record; the checkpoint comes from "
            "another run (move one of them aside)"
        )
    if own is not None and len(kept) == epoch - 1:
        kept.append(own)
        warnings.append(f"warning: restored the metrics of epoch {epoch} from the checkpoint")
    if len(kept) < epoch:
        raise RunError(
            f"{path} holds {len(kept)} epochs but the checkpoint has trained {epoch}: resuming would "
            "leave a hole; restore the file or start afresh with --overwrite"
        )
    dropped = len(rows) - len(kept)
    if epoch == 0 and epochs:
        raise RunError(
            f"{path} holds {len(epochs)} epochs but the checkpoint has trained none: it comes from another "
            "run (move one of them aside)"
        )
    if dropped or warnings:
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return warnings


def check_resume(meta: dict[str, Any], wanted: dict[str, dict[str, Any]], digest: str) -> None:
    """A resumed run keeps its checkpoint's settings (JSON form) and data; RunError naming the first difference.

    A text run's file is checked first: another text changes the vocabulary size too.
    """
    stored, text = meta["config"], "text" in wanted
    if text:
        _check_data(meta, wanted, digest)
    changed = [d for d in differences(stored, wanted) if d[1] not in MAY_CHANGE_ON_RESUME]
    if changed:
        part, name = changed[0]
        raise RunError(
            f"{flag_of(name)}: the run was trained with {stored[part].get(name)!r}; a resumed run keeps its "
            f"settings (only {', '.join(flag_of(n) for n in MAY_CHANGE_ON_RESUME)} may change): drop the flag, "
            "or start a new run in another --out"
        )
    cfg, trained, before = wanted["train"], meta["epoch"], stored["train"].get("epochs")
    if not text and cfg["epochs"] < trained:  # a text run counts --steps, which may not change
        raise RunError(f"--epochs {cfg['epochs']}: the checkpoint has already trained {trained} epochs")
    if cfg["epochs"] != before and cfg["schedule"] == "cosine":
        raise RunError(f"--epochs: the cosine schedule of this run is fixed to its {before} epochs; drop the flag")
    _check_data(meta, wanted, digest)


def _check_data(meta: dict[str, Any], wanted: dict[str, dict[str, Any]], digest: str) -> None:
    """RunError unless the data made now has the digest stored with the run."""
    if meta.get("split_sha256", digest) != digest:
        where = wanted["text"]["data"] if "text" in wanted else "the data split"
        raise RunError(
            f"{where}: the data made now differs from the data this run was trained on (another file, or "
            "transformer/data.py changed?); resume with the data and code that started the run"
        )
