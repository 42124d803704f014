"""The text task's data: a UTF-8 file as characters, its vocabulary, a contiguous 90/10 split, windows.

The vocabulary is every distinct character of the file, sorted, so train and
validation text share it; the split is contiguous (the first 90% trains, the
last 10% is held out), so no window of validation text overlaps a training one.
The demo corpus is the machine's license texts (/usr/share/common-licenses,
from Debian's essential base-files package): about 250K characters of English
prose present on every Debian or Ubuntu machine, with no network needed.

    python -m transformer.text demo runs/licenses.txt   # write the demo corpus
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VAL_FRACTION = 0.1
LICENSES = Path("/usr/share/common-licenses")


class TextError(ValueError):
    """A file that cannot be trained on; the message is one line naming it and the fix."""


def read_text(path: str | Path) -> str:
    """The file's text; TextError when it is missing, empty, binary (NUL bytes) or not UTF-8."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise TextError(f"--data {path}: cannot read it ({err.strerror})") from None
    if not raw.strip():
        raise TextError(f"--data {path}: the file is empty; give a UTF-8 text file")
    if b"\0" in raw:
        raise TextError(f"--data {path}: a binary file (NUL byte at offset {raw.index(0)}); give a UTF-8 text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TextError(
            f"--data {path}: not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); convert it, "
            "e.g. iconv -f latin1 -t utf-8"
        ) from None


@dataclass
class Corpus:
    """A text as ids over its sorted characters, split into contiguous train and val parts."""

    vocab: str
    train: np.ndarray
    val: np.ndarray

    @classmethod
    def from_text(cls, text: str, block_size: int, name: str = "the text") -> Corpus:
        """Vocabulary and 90/10 split; TextError when the held-out part is shorter than a window."""
        vocab = "".join(sorted(set(text)))
        ids = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32), ids).astype(np.int64)
        cut = len(ids) - int(len(ids) * VAL_FRACTION)
        corpus = cls(vocab, ids[:cut], ids[cut:])
        if len(corpus.val) <= block_size:
            raise TextError(
                f"--block-size {block_size} is longer than the held-out 10% of {name} ({len(corpus.val)} of its "
                f"{len(ids)} characters); use a block size below {len(corpus.val)} or a longer text"
            )
        return corpus

    def encode(self, text: str) -> np.ndarray:
        """ids of `text`; ValueError naming the characters the vocabulary lacks."""
        index = {ch: i for i, ch in enumerate(self.vocab)}
        missing = sorted(set(text) - set(index))
        if missing:
            raise ValueError(f"encode: characters not in the vocabulary: {''.join(missing)!r}")
        return np.array([index[ch] for ch in text], dtype=np.int64)

    def decode(self, ids: np.ndarray) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def digest(self) -> str:
        """SHA-256 of the vocabulary and both splits, stored with the run and checked on resume."""
        h = hashlib.sha256(self.vocab.encode())
        for part in (self.train, self.val):
            h.update(np.ascontiguousarray(part).data)
        return h.hexdigest()


def load_corpus(path: str | Path, block_size: int) -> Corpus:
    """The corpus of a text file; TextError naming the file when it cannot be one."""
    return Corpus.from_text(read_text(path), block_size, str(path))


def windows(ids: np.ndarray, starts: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (B, block_size) at `starts` and their targets, the same windows one character later."""
    index = np.asarray(starts)[:, None] + np.arange(block_size + 1)
    chunk = ids[index]
    return chunk[:, :-1], chunk[:, 1:]


def random_starts(n: int, block_size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` window starts drawn uniformly from a text of n characters."""
    return rng.integers(0, n - block_size, size=count)


def eval_starts(n: int, block_size: int, max_chars: int) -> np.ndarray:
    """Non-overlapping window starts spread evenly over a text of n characters, scoring about max_chars."""
    count = max(1, min((n - 1) // block_size, max_chars // block_size))
    return np.linspace(0, n - 1 - block_size, count).astype(np.int64)


def demo_text() -> str:
    """The machine's license texts, one after another (each file once; links skipped)."""
    files = sorted(p for p in LICENSES.glob("*") if p.is_file() and not p.is_symlink()) if LICENSES.is_dir() else []
    if not files:
        raise TextError(f"no demo corpus: {LICENSES} holds no license texts (Debian's base-files package)")
    try:
        return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    except OSError as err:
        raise TextError(f"no demo corpus: cannot read {err.filename} ({err.strerror})") from None


def main(argv: list[str] | None = None) -> int:
    """`python -m transformer.text demo FILE`: write the demo corpus; exit 2 when it cannot."""
    parser = argparse.ArgumentParser(prog="python -m transformer.text", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["demo"], help="demo: the machine's license texts")
    parser.add_argument("out", help="file to write (its folder is created)")
    args = parser.parse_args(argv)
    try:
        text = demo_text()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    except TextError as err:
        parser.error(str(err))
    except OSError as err:
        parser.error(f"cannot write {args.out}: {err.strerror}")
    print(f"wrote {args.out}: {len(text):,} characters, {len(set(text))} distinct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
