"""Reading run files and preparing output folders, with one-line errors naming the file or flag.

The commands (report, graph, study) turn these ValueErrors into exit code 2;
a check that fails changes nothing on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; ValueError naming the file when it is torn or holds no object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path} is torn or not JSON ({err}); restore it or train the run again") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object; restore it or train again")
    return value


def make_folder(path: Path, flag: str, out: Path | None = None) -> None:
    """Create folder `path` and its parents for `flag` (value `out`, default `path`), or ValueError saying why not."""
    where = f"{flag} {out or path}"
    try:
        existing = next(p for p in (path, *path.parents) if p.exists())
    except PermissionError as err:
        raise ValueError(f"{where}: no permission to reach {err.filename}; choose another {flag}") from None
    if not existing.is_dir():
        raise ValueError(f"{where}: {existing} is a file, not a folder; choose another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{where}: no permission to write in {existing}; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{where}: cannot create {path} ({err.strerror}); choose another {flag}") from None
