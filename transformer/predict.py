"""Answer inputs with a trained checkpoint.

    python -m transformer.predict --ckpt runs/seed/ckpt_best.npz "Max(5,3,9)"

Inputs come from the arguments, or one per line from stdin, answered in
batches of BATCH as they arrive (memory stays flat however long stdin is).
Every input up to the first malformed one is answered; a malformed input, an
unreadable checkpoint or one holding NaN/Inf weights gets a one-line message
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

import microtensor as mt

from .checkpoint import CheckpointError, load_model
from .data import VOCAB, encode, encode_batch
from .model import Transformer

BATCH = 256
MAX_CHARS = 1000  # the longest input is 22 tokens; a longer line is a mistake, quoted truncated
PROG = "python -m transformer.predict"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Answer operations such as Max(5,3,9) with a trained checkpoint."
    )
    p.add_argument(
        "inputs", nargs="*", help="inputs such as 'Max(5,3,9)'; none: read one per line from stdin"
    )
    p.add_argument(
        "--ckpt", default="runs/seed/ckpt_best.npz", help="checkpoint (default runs/seed/ckpt_best.npz)"
    )
    p.add_argument(
        "--top", type=int, default=3, help="how many of the most likely tokens to show (default 3)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per input")
    return p


@mt.no_grad()
def predict(model: Transformer, texts: list[str], top: int = 3) -> list[dict[str, Any]]:
    """For each input: the answer token and the `top` (token, probability) pairs; ValueError on bad input."""
    data = encode_batch(texts)
    logits = model.eval()(data.ids, data.mask).numpy().astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if bad.size:
        raise ValueError(f"predict: the model's output for {_quote(texts[bad[0]])} is not finite (NaN or Inf)")
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    results = []
    for text, row in zip(texts, probs, strict=True):
        best = np.argsort(-row)[:top]
        results.append(
            {
                "input": text,
                "answer": VOCAB[best[0]],
                "top": [[VOCAB[i], round(float(row[i]), 4)] for i in best],
            }
        )
    return results


def _quote(text: str, limit: int = 60) -> str:
    """repr of text, cut to `limit` characters: a huge bad input is never echoed whole."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _inputs(args: argparse.Namespace) -> Iterator[str]:
    """The well-formed inputs: the arguments, or stdin's non-blank lines, each read at most MAX_CHARS+1 bytes at
    a time; ValueError at the first malformed one."""
    if args.inputs:
        yield from (_checked(f"input {i}", text.strip()) for i, text in enumerate(args.inputs, 1))
        return
    number = 0
    while raw := sys.stdin.buffer.readline(MAX_CHARS + 1):
        number += 1
        text = raw.decode("utf-8", errors="replace").strip()
        if len(raw) > MAX_CHARS and not raw.endswith(b"\n"):
            raise _too_long(f"line {number}", text)  # the rest of the line is never read
        if text:
            yield _checked(f"line {number}", text)


def _too_long(where: str, text: str) -> ValueError:
    return ValueError(f"{where} is longer than {MAX_CHARS} characters ({_quote(text)}); "
                      "expected something like 'Max(5,3,9)'")


def _checked(where: str, text: str) -> str:
    """text if it is a well-formed input, else ValueError naming where it came from, quoting it truncated."""
    if len(text) > MAX_CHARS:
        raise _too_long(where, text)
    try:
        encode(text)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return text


def _batches(texts: Iterable[str]) -> Iterator[list[str]]:
    """Lists of at most BATCH inputs; when `texts` raises ValueError, the inputs before it come first."""
    batch: list[str] = []
    try:
        for text in texts:
            batch.append(text)
            if len(batch) == BATCH:
                yield batch
                batch = []
    except ValueError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def _print(results: list[dict[str, Any]], as_json: bool) -> None:
    for result in results:
        if as_json:
            print(json.dumps(result, allow_nan=False))
        else:
            top = ", ".join(f"{tok} {p:.3f}" for tok, p in result["top"])
            print(f"{result['input']} -> {result['answer']}   (top {len(result['top'])}: {top})")
    sys.stdout.flush()


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """The command line; exit code 2 for malformed input, an unreadable or non-finite checkpoint."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")
    try:
        model = load_model(args.ckpt)
    except CheckpointError as err:  # unreadable, damaged, foreign, or NaN/Inf weights
        return _fail(f"--ckpt {err}")
    answered = 0
    try:
        for batch in _batches(_inputs(args)):
            _print(predict(model, batch, args.top), args.json)
            answered += len(batch)
    except ValueError as err:
        return _fail(str(err))
    except BrokenPipeError:  # the reader has gone (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141
    if not answered:
        parser.error("no input given; pass inputs such as 'Max(5,3,9)' or pipe one per line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
