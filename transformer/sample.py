"""Sample text from a text run's checkpoint, one character at a time, with a key/value cache.

    python -m transformer.sample --ckpt runs/NAME/ckpt_best.npz --prompt "The " --tokens 500 \\
        --temperature 0.8 --top-k 40 --seed 1

Prints the prompt, then the characters as they are drawn. Each character
costs O(T) with the cache (GPT.generate in transformer/gpt.py, which also
states how a context longer than the block size is handled); --no-cache
recomputes the whole context for each one. Temperature 0 always takes the
most likely character. A prompt character outside the checkpoint's
vocabulary, an unreadable or non-text checkpoint and a bad setting get a
one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, load_text_model
from .gpt import GPT
from .text import Corpus

PROG = "python -m transformer.sample"


def make_pick(temperature: float, top_k: int | None, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """The rule choosing next ids (B,) from logits (B, V): argmax at temperature 0, else a draw from
    softmax(logits / temperature) over the top_k most likely (ties with the k-th kept)."""
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"sample: temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"sample: top_k must be >= 1 (or None for all characters), got {top_k}")

    def pick(logits: np.ndarray) -> np.ndarray:
        if temperature == 0:
            return logits.argmax(axis=-1)
        z = logits.astype(np.float64) / temperature
        if top_k is not None and top_k < z.shape[-1]:
            kth = np.partition(z, -top_k, axis=-1)[:, -top_k, None]
            z = np.where(z < kth, -np.inf, z)
        p = np.exp(z - z.max(axis=-1, keepdims=True))
        cdf = np.cumsum(p, axis=-1)
        u = rng.random((len(z), 1)) * cdf[:, -1:]
        return np.minimum((cdf <= u).sum(axis=-1), z.shape[-1] - 1)

    return pick


def sample(
    model: GPT, vocab: str, prompt: str, tokens: int, temperature: float = 1.0, top_k: int | None = None,
    seed: int = 0, cache: bool = True,
) -> Iterator[str]:
    """The characters drawn after `prompt`, one at a time; ValueError naming prompt characters not in `vocab`."""
    if not prompt:
        raise ValueError("sample: the prompt is empty; give at least one character")
    try:
        ids = Corpus(vocab, np.empty(0, np.int64), np.empty(0, np.int64)).encode(prompt)
    except ValueError as err:
        known = f"{len(vocab)} characters: {vocab!r}" if len(vocab) <= 100 else f"{len(vocab)} characters"
        raise ValueError(f"sample: the prompt has {str(err).removeprefix('encode: ')} (it has {known})") from None
    pick = make_pick(temperature, top_k, np.random.default_rng(seed))
    for chosen in model.generate(ids[None], tokens, pick, cache=cache):
        yield vocab[int(chosen[0])]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0],
        epilog="The context holds at most the block size: a longer prompt keeps its end, and a full context "
        "restarts from its last half (the cache is refilled from it).",
    )
    p.add_argument("--ckpt", required=True, help="checkpoint of a --task text run, e.g. runs/NAME/ckpt_best.npz")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--tokens", type=_count, default=500, help="characters to generate (default 500)")
    p.add_argument("--temperature", type=_temperature, default=0.8, help="softmax temperature; 0: greedy (default 0.8)")
    p.add_argument("--top-k", type=_count, default=None, help="draw from the K most likely characters only")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="recompute the whole context for every character (slow; for checking the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bar when the output is not a terminal")
    return p


def _count(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _temperature(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _bar(args: argparse.Namespace) -> Any:
    """A progress bar on stderr when stdout is not a terminal (where the text itself shows the progress)."""
    if args.quiet or sys.stdout.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=args.tokens, initial=1, desc="sampling", unit="char", file=sys.stderr, leave=False,
                mininterval=0.2)


def main(argv: list[str] | None = None) -> int:
    """The `python -m transformer.sample` command; the exit code (2: refused, 130: interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    try:
        model, vocab = load_text_model(args.ckpt)
        chars = sample(model, vocab, args.prompt, args.tokens, args.temperature, args.top_k, args.seed, args.cache)
        text = args.prompt + next(chars)  # the prompt is checked before anything is printed
    except CheckpointError as err:  # missing, damaged, not a text run's, or NaN/Inf weights
        return _fail(f"--ckpt {err}")
    except ValueError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return 130
    bar, tty = _bar(args), sys.stdout.isatty()
    try:
        for ch in chars:
            sys.stdout.write(text)
            if tty:
                sys.stdout.flush()
            if bar is not None:
                bar.update(1)
            text = ch
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except KeyboardInterrupt:
        print(flush=True)
        return 130
    except BrokenPipeError:  # the reader has gone (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if bar is not None:
            bar.close()
    return 0


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
