"""The operations task: `Max(5,3,9) -> 9`, its 20-token vocabulary, and splits disjoint on distinct inputs.

Test accuracy must mean generalisation: with 3 arguments there are only
5,000 distinct inputs, so the distinct inputs are split first (60/20/20,
seeded) and the training examples are then drawn from the training inputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

VOCAB: list[str] = ["<pad>", "<unk>", *"0123456789", "First", "Second", "Last", "Max", "Min", "(", ",", ")"]
OPS: list[str] = ["First", "Second", "Last", "Max", "Min"]
TOKEN_ID: dict[str, int] = {tok: i for i, tok in enumerate(VOCAB)}
PAD, UNK = 0, 1
DIGIT0 = TOKEN_ID["0"]
MIN_ARITY, MAX_ARITY = 2, 10
_TOKEN_RE = re.compile(r"\s*(?:([A-Za-z]+)|(\d+)|([(),])|(\S))")
_UNIVERSE_CAP = 200_000  # distinct inputs per arity enumerated; larger spaces are sampled


def tokenize(text: str) -> list[str]:
    """Split `Max ( 5 , 3 , 9 )` or `Max(5,3,9)` into tokens, checking the grammar `Op(d, d, ...)`."""
    if not text or not text.strip():
        raise ValueError("encode: empty input; expected something like 'Max(5,3,9)'")
    tokens = []
    for m in _TOKEN_RE.finditer(text.rstrip()):
        word, number, punct, other = m.groups()
        if other is not None:
            raise ValueError(f"encode: unexpected character {other!r} in {text!r}")
        tokens.append(word or number or punct)
    _check_grammar(tokens, text)
    return tokens


def _check_grammar(tokens: list[str], text: str) -> None:
    """Raise ValueError naming what is wrong unless tokens read `Op ( digit (, digit)* )`."""
    if tokens[0] not in OPS:
        raise ValueError(
            f"encode: unknown operation {tokens[0]!r} in {text!r}; expected one of {', '.join(OPS)}"
        )
    if len(tokens) < 2 or tokens[1] != "(":
        raise ValueError(f"encode: expected '(' after {tokens[0]} in {text!r}")
    if tokens[-1] != ")":
        raise ValueError(f"encode: missing closing ')' in {text!r}")
    args = tokens[2:-1]
    digits, commas = args[0::2], args[1::2]
    if not args or any(c != "," for c in commas) or len(args) % 2 == 0:
        raise ValueError(f"encode: arguments must be digits separated by commas in {text!r}")
    for d in digits:
        if not (d.isdigit() and len(d) == 1):
            raise ValueError(f"encode: argument {d!r} in {text!r} is not a single digit 0-9")
    if not MIN_ARITY <= len(digits) <= MAX_ARITY:
        raise ValueError(f"encode: {len(digits)} arguments in {text!r}; expected {MIN_ARITY} to {MAX_ARITY}")


def encode(text: str) -> list[int]:
    """Token ids of a well-formed input such as `Max(5,3,9)`; malformed text raises ValueError."""
    return [TOKEN_ID[t] for t in tokenize(text)]


def decode(ids: Iterable[int]) -> str:
    """Text of token ids without padding and spaces: `Max(5,3,9)` (or a single digit for an answer)."""
    return "".join(VOCAB[int(i)] if 0 <= int(i) < len(VOCAB) else VOCAB[UNK] for i in ids if int(i) != PAD)


def parse(text: str) -> tuple[str, list[int]]:
    """(op, digit arguments) of a well-formed input."""
    tokens = tokenize(text)
    return tokens[0], [int(d) for d in tokens[2:-1:2]]


def answer(op: str, args: Sequence[int]) -> int:
    """The digit the operation returns: First(a,...) = a, Second = args[1], Last, Max, Min."""
    if op not in OPS:
        raise ValueError(f"answer: unknown operation {op!r}; expected one of {', '.join(OPS)}")
    if len(args) < (2 if op == "Second" else 1):
        raise ValueError(f"answer: {op} needs more arguments than {list(args)}")
    rule = {
        "First": lambda a: a[0],
        "Second": lambda a: a[1],
        "Last": lambda a: a[-1],
        "Max": max,
        "Min": min,
    }
    return int(rule[op](list(args)))


def format_input(op: str, args: Sequence[int]) -> str:
    """`Max(5,3,9)` from ('Max', [5, 3, 9])."""
    return f"{op}({','.join(str(int(a)) for a in args)})"


def parse_arity(spec: str | int | Sequence[int]) -> list[int]:
    """Arities from 3, '3', '2-5' or '2,4'; each must lie in [MIN_ARITY, MAX_ARITY]."""
    if isinstance(spec, (int, np.integer)):
        values = [int(spec)]
    elif isinstance(spec, str):
        values = []
        for part in spec.replace(" ", "").split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise ValueError(f"arity: cannot read {spec!r}; expected e.g. '3', '2-5' or '2,4'")
            values.extend(range(int(lo), int(hi or lo) + 1))
    else:
        values = [int(v) for v in spec]
    if not values:
        raise ValueError(f"arity: {spec!r} names no arity")
    bad = [v for v in values if not MIN_ARITY <= v <= MAX_ARITY]
    if bad:
        raise ValueError(
            f"arity: {bad[0]} is out of range; arguments per input must be {MIN_ARITY} to {MAX_ARITY}"
        )
    return sorted(set(values))


@dataclass
class Dataset:
    """Examples as arrays: ids (N, T) left-padded so position -1 is ')', mask (N, T) True on real tokens."""

    ids: np.ndarray
    mask: np.ndarray
    targets: np.ndarray  # token id of the answer digit
    ops: np.ndarray  # index into OPS

    def __len__(self) -> int:
        return len(self.targets)

    def texts(self, index: Iterable[int] | None = None) -> list[str]:
        """The inputs as text (`Max(5,3,9)`), all or at `index`."""
        rows = range(len(self)) if index is None else index
        return [decode(self.ids[i]) for i in rows]

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(self.ids[index], self.mask[index], self.targets[index], self.ops[index])


def make_dataset(inputs: Sequence[tuple[int, Sequence[int]]]) -> Dataset:
    """Encode (op index, args) pairs into a left-padded Dataset with answers."""
    lengths = [2 * len(args) + 2 for _, args in inputs]
    width = max(lengths, default=0)
    ids = np.full((len(inputs), width), PAD, dtype=np.int64)
    for row, ((op, args), n) in enumerate(zip(inputs, lengths, strict=False)):
        ids[row, width - n :] = encode(format_input(OPS[op], args))
    targets = np.array([DIGIT0 + answer(OPS[op], args) for op, args in inputs], dtype=np.int64)
    ops = np.array([op for op, _ in inputs], dtype=np.int64)
    return Dataset(ids, ids != PAD, targets, ops)


def encode_batch(texts: Sequence[str]) -> Dataset:
    """A Dataset of user inputs (answers computed), for prediction; malformed text raises ValueError."""
    return make_dataset([(OPS.index(op), args) for op, args in map(parse, texts)])


def _universe(arity: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct inputs of one arity as rows (op, d1..dn): all of them, or a random sample when too many."""
    total = len(OPS) * 10**arity
    if total <= _UNIVERSE_CAP:
        keys = np.arange(total, dtype=np.int64)
    else:
        keys = np.unique(rng.integers(0, total, size=int(_UNIVERSE_CAP * 1.1), dtype=np.int64))
        keys = rng.permutation(keys)[:_UNIVERSE_CAP]
    digits = (keys[:, None] // 10 ** np.arange(arity - 1, -1, -1, dtype=np.int64)) % 10
    return np.concatenate([(keys // 10**arity)[:, None], digits], axis=1)


def _split_rows(rows: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle rows and cut them into consecutive parts of the given fractions."""
    rows = rows[rng.permutation(len(rows))]
    cuts = np.round(np.cumsum(fractions)[:-1] * len(rows)).astype(int)
    return np.split(rows, cuts)


def _draw(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n rows drawn evenly: whole shuffled passes over `rows`, the last one cut short."""
    if n <= 0 or len(rows) == 0:
        return rows[:0]
    passes = [rng.permutation(len(rows)) for _ in range(-(-n // len(rows)))]
    return rows[np.concatenate(passes)[:n]]


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


def make_splits(
    arity: str | int | Sequence[int] = 3,
    train_size: int = 10_000,
    eval_size: int = 2_000,
    split: Sequence[float] = (0.6, 0.2, 0.2),
    test_arity: str | int | Sequence[int] | None = None,
    seed: int = 0,
) -> Splits:
    """Train/val/test sets whose distinct inputs never overlap.

    For each arity the distinct inputs are split by `split`; `train_size`
    examples are drawn (evenly, with repeats when needed) from the training
    inputs, and val/test hold up to `eval_size` distinct inputs each. Arities
    are weighted equally. `test_arity` (for length generalisation) takes the
    test inputs from other arities than the training ones.
    """
    if len(split) != 3 or min(split) < 0 or not np.isclose(sum(split), 1.0) or min(split) == 0:
        raise ValueError(
            f"make_splits: split must be three positive fractions summing to 1, got {list(split)}"
        )
    if train_size <= 0 or eval_size <= 0:
        raise ValueError(f"make_splits: train_size and eval_size must be > 0, got {train_size}, {eval_size}")
    train_arities = parse_arity(arity)
    test_arities = train_arities if test_arity is None else parse_arity(test_arity)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    train_counts = _shares(train_size, len(train_arities))
    val_counts, test_counts = _shares(eval_size, len(train_arities)), _shares(eval_size, len(test_arities))
    for a in sorted(set(train_arities) | set(test_arities)):
        rng = np.random.default_rng([seed, a])
        train, val, test = _split_rows(_universe(a, rng), split, rng)
        if a in train_arities:
            i = train_arities.index(a)
            parts["train"] += _inputs(_draw(train, train_counts[i], rng))
            parts["val"] += _inputs(val[: val_counts[i]])
        if a in test_arities:
            parts["test"] += _inputs(test[: test_counts[test_arities.index(a)]])
    rng = np.random.default_rng(seed)
    shuffled = {name: [rows[i] for i in rng.permutation(len(rows))] for name, rows in parts.items()}
    return Splits(**{name: make_dataset(rows) for name, rows in shuffled.items()})


def _shares(n: int, k: int) -> list[int]:
    """n split into k near-equal whole parts."""
    return [n // k + (i < n % k) for i in range(k)]


def _inputs(rows: np.ndarray) -> list[tuple[int, list[int]]]:
    """(op index, args) pairs from rows (op, d1..dn)."""
    return [(int(r[0]), r[1:].tolist()) for r in rows]
