"""Answer inputs with a trained checkpoint.

    python -m transformer.predict --ckpt runs/seed/ckpt_best.npz "Max(5,3,9)"

Several inputs (arguments, or one per line on stdin) are answered in one batch.
Malformed input gets a message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

import microtensor as mt

from .data import VOCAB, encode_batch
from .model import Transformer
from .train import load_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m transformer.predict",
        description="Answer operations such as Max(5,3,9) with a trained checkpoint.",
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


def _read_inputs(args: argparse.Namespace) -> list[str]:
    if args.inputs:
        return list(args.inputs)
    return [line.strip() for line in sys.stdin if line.strip()]


def main(argv: list[str] | None = None) -> int:
    """The command line; exit code 2 for malformed input or an unreadable checkpoint."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")
    texts = _read_inputs(args)
    if not texts:
        parser.error("no input given; pass inputs such as 'Max(5,3,9)' or pipe one per line")
    try:
        encode_batch(texts)
    except ValueError as err:
        parser.error(str(err))
    try:
        model = load_model(args.ckpt)
    except (OSError, ValueError, KeyError) as err:
        parser.error(f"cannot load checkpoint {args.ckpt}: {err}")
    for result in predict(model, texts, args.top):
        if args.json:
            print(json.dumps(result))
        else:
            top = ", ".join(f"{tok} {p:.3f}" for tok, p in result["top"])
            print(f"{result['input']} -> {result['answer']}   (top {len(result['top'])}: {top})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
