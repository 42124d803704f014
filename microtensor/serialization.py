"""save/load of nested checkpoints (dicts, lists, tuples of tensors, arrays, numbers, strings) without pickle.

A file is a zip archive (.npz layout): one `.npy` entry per array, named by position so that any key
round-trips, and one JSON entry describing the tree. Files from before the tree entry (one `<key>.npy`
per name of a flat mapping) still load, as a dict of arrays.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .device import _check_device
from .tensor import Tensor

STRUCTURE = "structure.json"
FORMAT = "microtensor-tree-1"
MAX_DEFLATE_RATIO = 1032  # deflate cannot compress better: an entry that claims more is forged
_SUPPORTED = "tensors, numpy arrays, numbers, strings, bools, None, and dicts/lists/tuples of them"


def save(obj: Any, f: str | os.PathLike) -> None:
    """Write `obj` to the path `f`, atomically: a temporary file in the same folder, fsync, then rename."""
    path = os.fspath(f)
    arrays: list[np.ndarray] = []
    tree = _encode(obj, arrays, {}, set(), "obj")
    structure = json.dumps({"format": FORMAT, "tree": tree}).encode()
    _remove_stale_temps(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for i, array in enumerate(arrays):
                    with zf.open(f"{i}.npy", "w", force_zip64=True) as entry:
                        np.lib.format.write_array(entry, array, allow_pickle=False)
                zf.writestr(STRUCTURE, structure)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path)


def _encode(obj: Any, arrays: list, memo: dict, path: set, where: str) -> Any:
    """The JSON node of `obj`; arrays go to `arrays` (once each, by identity) and are named by index."""
    if isinstance(obj, np.generic):  # before float: np.float64 is a float
        return {"scalar": _add(np.asarray(obj), arrays, memo, where)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Tensor):
        return {"tensor": _add(obj.data, arrays, memo, where)}
    if isinstance(obj, np.ndarray):
        return {"array": _add(obj, arrays, memo, where)}
    if not isinstance(obj, (Mapping, list, tuple)):
        hint = "; save its state_dict() instead" if hasattr(obj, "state_dict") else ""
        raise TypeError(f"save: cannot store a {type(obj).__name__} at {where}; save stores {_SUPPORTED}{hint}")
    if id(obj) in path:
        raise ValueError(f"save: {where} contains itself")
    path.add(id(obj))
    if isinstance(obj, Mapping):
        node = {"dict": [[_key(k, where), _encode(v, arrays, memo, path, f"{where}[{k!r}]")] for k, v in obj.items()]}
    else:
        items = [_encode(v, arrays, memo, path, f"{where}[{i}]") for i, v in enumerate(obj)]
        node = {"tuple" if isinstance(obj, tuple) else "list": items}
    path.discard(id(obj))
    return node


def _key(key: Any, where: str) -> Any:
    if key is None or isinstance(key, (bool, int, float, str)):
        return key
    raise TypeError(f"save: dict keys must be strings, numbers, bools or None, got {key!r} in {where}")


def _add(array: np.ndarray, arrays: list, memo: dict, where: str) -> int:
    if array.dtype.hasobject:
        raise TypeError(f"save: the array at {where} holds Python objects (dtype object); only numbers are stored")
    if id(array) not in memo:
        memo[id(array)] = len(arrays)
        arrays.append(array)
    return memo[id(array)]


def _remove_stale_temps(path: str) -> None:
    """Delete temporary files of earlier saves to `path` whose process is gone (killed mid-write)."""
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f"{name}.tmp"
    for entry in os.listdir(folder):
        pid = entry[len(prefix) :]
        if entry.startswith(prefix) and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, entry))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _fsync_folder(path: str) -> None:
    """Make the rename itself durable (POSIX); some file systems refuse, which is harmless."""
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load(f: str | os.PathLike, map_location: Any = None, weights_only: Any = None) -> Any:
    """Read what `save` wrote: tensors come back as Tensors, arrays as arrays, numbers as numbers.

    `map_location` may name the CPU (the only device); `weights_only` is accepted for PyTorch
    programs and changes nothing, since nothing is ever unpickled.
    """
    path = os.fspath(f)
    if not callable(map_location) and not isinstance(map_location, Mapping):
        _check_device(map_location, "load")
    with open(path, "rb") as fh:
        _check_magic(path, fh.read(6))
        fh.seek(0)
        try:
            with zipfile.ZipFile(fh) as zf:
                return _read(path, zf, os.fstat(fh.fileno()).st_size)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error) as e:
            raise ValueError(f"load: {path} is truncated or corrupt ({e}); expected a file written by save") from e


def _check_magic(path: str, head: bytes) -> None:
    expected = "expected a file written by microtensor.save (a zip archive of .npy entries)"
    if not head:
        raise ValueError(f"load: {path} is empty; {expected}")
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"load: {path} is a single .npy array (numpy.save); {expected}, or read it with numpy.load")
    if not head.startswith(b"PK"):
        raise ValueError(f"load: {path} is not a zip archive; {expected}")


def _read(path: str, zf: zipfile.ZipFile, size: int) -> Any:
    infos = {info.filename: info for info in zf.infolist()}
    if any(name.endswith("data.pkl") for name in infos):
        raise ValueError(f"load: {path} was written by torch.save (a pickle), which microtensor never loads; "
                         "load it with torch, turn its tensors into numpy arrays (t.numpy()) and save that")
    if STRUCTURE not in infos:
        return {_legacy_key(path, name): _read_array(path, zf, info, size) for name, info in infos.items()}
    _check_entry(path, infos[STRUCTURE], size)
    try:
        meta = json.loads(zf.read(STRUCTURE))
        if meta.get("format") != FORMAT:
            raise ValueError(f"load: {path} is in the format {meta.get('format')!r}; this version reads {FORMAT!r}")
        cache: dict[int, np.ndarray] = {}

        def array(i: int) -> np.ndarray:
            if i not in cache:
                cache[i] = _read_array(path, zf, infos[f"{i}.npy"], size)
            return cache[i]

        return _decode(meta["tree"], array)
    except (KeyError, IndexError, TypeError, AttributeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"load: {path} has a malformed {STRUCTURE} entry ({type(e).__name__}: {e})") from e


def _legacy_key(path: str, name: str) -> str:
    if not name.endswith(".npy"):
        raise ValueError(f"load: {path} holds the entry {name!r}, not an array; expected a file written by save")
    return name[: -len(".npy")]


def _decode(node: Any, array: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if len(node) != 1:
        raise KeyError(f"a node with the keys {sorted(node)}")
    ((kind, value),) = node.items()
    if kind == "dict":
        if any(not isinstance(item, list) or len(item) != 2 for item in value):
            raise TypeError("the items of a dict node must be [key, value] pairs")
        return {key: _decode(v, array) for key, v in value}
    if kind in ("list", "tuple"):
        items = [_decode(v, array) for v in value]
        return items if kind == "list" else tuple(items)
    if kind == "tensor":
        return Tensor(array(value))
    if kind == "scalar":
        return array(value)[()]
    if kind == "array":
        return array(value)
    raise KeyError(f"unknown node {kind!r}")


def _check_entry(path: str, info: zipfile.ZipInfo, size: int) -> None:
    """Refuse entries whose declared size the file cannot hold, before anything is inflated."""
    stored = info.compress_type == zipfile.ZIP_STORED
    if not stored and info.compress_type != zipfile.ZIP_DEFLATED:
        raise ValueError(f"load: {path} entry {info.filename!r} uses compression method {info.compress_type}; "
                         "expected stored or deflated entries")
    limit = info.compress_size if stored else info.compress_size * MAX_DEFLATE_RATIO + 1024
    if info.compress_size > size or info.file_size > limit:
        raise ValueError(f"load: {path} entry {info.filename!r} declares {info.file_size} bytes but the file holds "
                         f"{min(info.compress_size, size)}; the file is corrupt or forged")


def _read_array(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> np.ndarray:
    """One .npy entry, its header checked against the entry's size before the data is read."""
    _check_entry(path, info, size)
    where = f"load: {path} entry {info.filename!r}"
    with zf.open(info) as entry:
        try:
            version = np.lib.format.read_magic(entry)
            header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in header:
                raise ValueError(f".npy format version {version} is not supported")
            shape, _, dtype = header[version](entry)
        except ValueError as e:
            raise ValueError(f"{where} is not a valid .npy array ({e})") from e
        if dtype.hasobject:
            raise ValueError(f"{where} holds Python objects (a pickle); refused")
        declared = math.prod(shape) * dtype.itemsize
        if declared != info.file_size - entry.tell():
            raise ValueError(f"{where} declares shape {shape} of {dtype} ({declared} bytes) but holds "
                             f"{info.file_size - entry.tell()} bytes")
        entry.seek(0)
        try:
            return np.lib.format.read_array(entry, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{where} is truncated ({e})") from e
