"""Every setting of a run, declared once: default, kind, help text and check.

The dataclasses below hold the declarations; the command line (`build_parser`),
`--config` JSON files and the config stored in a checkpoint are all read and
validated from them, so a value is held to the same rule wherever it comes from.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .data import VOCAB, parse_arity


class SettingError(ValueError):
    """A setting with a value of the wrong kind or out of range; `name` is the setting."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message if message.startswith("unknown setting") else f"{name} {message}")
        self.name = name


# ---- kinds: how a value is read from a flag's text and from JSON -------------------------------


@dataclass(frozen=True)
class Kind:
    """A value's type: `parse` reads command-line text, `accept` checks (and normalises) a JSON value."""

    name: str
    parse: Callable[[str], Any]
    accept: Callable[[Any], Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _accept_int(value: Any) -> int:
    if not _is_int(value):
        raise ValueError(f"must be an integer, got {value!r}")
    return int(value)


def _finite(value: float, shown: Any) -> float:
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {shown!r}")
    return value


def _accept_float(value: Any) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    return _finite(float(value), value)


def _accept_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def _accept_arity(value: Any) -> str:
    """An arity spec as text: '3', '2-5', '2,4' (a JSON integer is taken as one arity)."""
    return str(value) if _is_int(value) else _accept_text(value)


def _accept_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _numbers(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace("/", ",").replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None


def _accept_split(value: Any) -> tuple[float, float, float]:
    """Three finite fractions > 0, scaled to sum to 1 (kept as given when they already do)."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"must be three fractions like 0.6,0.2,0.2, got {value!r}")
    parts = [_accept_float(v) for v in value]
    if min(parts) <= 0:
        raise ValueError(f"must be three fractions > 0 (train, val and test each need inputs), got {value!r}")
    total = sum(parts)
    return tuple(parts if math.isclose(total, 1.0, rel_tol=1e-9) else [v / total for v in parts])  # type: ignore[return-value]


def _accept_int_list(value: Any) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list of integers, got {value!r}")
    return [_accept_int(v) for v in value]


def _accept_betas(value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"must be two numbers like [0.9, 0.999], got {value!r}")
    return tuple(_accept_float(v) for v in value)  # type: ignore[return-value]


def _parse_int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


INT = Kind("integer", int, _accept_int)
FLOAT = Kind("number", lambda text: _finite(float(text), text), _accept_float)
TEXT = Kind("string", str, _accept_text)
ARITY = Kind("arity", str, _accept_arity)
BOOL = Kind("boolean", bool, _accept_bool)
SPLIT = Kind("fractions", lambda text: _accept_split(_numbers(text)), _accept_split)
INT_LIST = Kind("integers", _parse_int_list, _accept_int_list)
BETAS = Kind("pair", lambda text: _accept_betas(_numbers(text)), _accept_betas)


def optional(kind: Kind) -> Kind:
    """The kind, or None (JSON null) for 'off' / 'the default rule'."""
    return Kind(kind.name, kind.parse, lambda v: None if v is None else kind.accept(v))


# ---- checks: a rule on a read value; return the complaint, or None ----------------------------


def positive(value: Any) -> str | None:
    return None if value is None or value > 0 else f"must be > 0, got {value}"


def non_negative(value: Any) -> str | None:
    return None if value is None or value >= 0 else f"must be >= 0, got {value}"


def one_of(*options: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value is None or value in options else f"must be one of {', '.join(options)}, got {value!r}"

    return check


def fraction(value: float) -> str | None:
    return None if 0.0 <= value < 1.0 else f"must be in [0, 1), got {value}"


def an_arity(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_arity(value)
    except ValueError as err:
        return str(err).removeprefix("arity: ")
    return None


def all_positive(values: list[int]) -> str | None:
    return None if all(v > 0 for v in values) else f"must all be > 0, got {values}"


def two_betas(values: tuple[float, float]) -> str | None:
    return None if all(0.0 <= b < 1.0 for b in values) else f"must each be in [0, 1), got {list(values)}"


# ---- declarations ------------------------------------------------------------------------------

FLAG = "flag"  # a `--name` flag taking a value


def setting(
    default: Any,
    kind: Kind,
    help: str,
    check: Callable[[Any], str | None] | None = None,
    group: str = "optimisation",
    flag: str | None = FLAG,
) -> Any:
    """One setting: its default, kind, help and check; `flag` FLAG, 'store_true', or None (set elsewhere)."""
    meta = {"kind": kind, "help": help, "check": check, "group": group, "flag": flag}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _default(f: Any) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def _complaint(f: Any, value: Any) -> str | None:
    """What setting `f`'s check says of a value already read, or None."""
    return f.metadata["check"](value) if f.metadata["check"] else None


def check_value(f: Any, value: Any) -> Any:
    """`value` read as setting `f` declares (JSON form), then checked; SettingError naming it otherwise."""
    try:
        value = f.metadata["kind"].accept(value)
    except ValueError as err:
        raise SettingError(f.name, str(err)) from None
    complaint = _complaint(f, value)
    if complaint:
        raise SettingError(f.name, complaint)
    return value


def _check_warmup(name: str, warmup: int, total_name: str, total: int) -> None:
    """SettingError unless a warmup (0: none) is shorter than the run."""
    if warmup and warmup >= total:
        raise SettingError(name, f"must be fewer than {total_name} ({total}), got {warmup}")


def _check_fields(config: Any) -> None:
    for f in fields(config):
        setattr(config, f.name, check_value(f, getattr(config, f.name)))


@dataclass
class ModelConfig:
    """The design document's defaults (d_model 64, 4 heads, FFN 256, 2 blocks, ~102K parameters)."""

    vocab_size: int = setting(len(VOCAB), INT, "token ids", positive, "model", None)
    d_model: int = setting(64, INT, "width of the residual stream", positive, "model")
    n_heads: int = setting(4, INT, "attention heads", positive, "model")
    d_ff: int = setting(256, INT, "width of the feed-forward layer", positive, "model")
    n_blocks: int = setting(2, INT, "transformer blocks", non_negative, "model")
    dropout: float = setting(0.1, FLOAT, "dropout probability", fraction, "model")
    max_len: int = setting(50, INT, "longest input in tokens", positive, "model")
    pre_ln: bool = setting(
        False, BOOL, "LayerNorm before each sublayer (default: after)", group="model", flag="store_true"
    )
    no_attention: bool = setting(False, BOOL, "ablation: mean pooling instead of attention", flag=None)
    no_ffn: bool = setting(False, BOOL, "ablation: no feed-forward layers", flag=None)
    no_layernorm: bool = setting(False, BOOL, "ablation: no LayerNorm", flag=None)
    no_residual: bool = setting(False, BOOL, "ablation: no residual connections", flag=None)
    no_posenc: bool = setting(False, BOOL, "ablation: no positional encoding", flag=None)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Each field by its declaration, then the rules between fields; SettingError on the first fault."""
        _check_fields(self)
        if self.d_model % self.n_heads:
            raise SettingError("d_model", f"{self.d_model} is not divisible by n_heads {self.n_heads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """A config from a dict, ignoring keys that are not fields (e.g. from a newer version)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


ABLATIONS = ("no_attention", "no_ffn", "no_layernorm", "no_residual", "no_posenc")


@dataclass
class TrainConfig:
    """Everything about a run that is not the model: data, optimisation, schedule, bookkeeping."""

    epochs: int = setting(50, INT, "epochs to train", positive)
    lr: float = setting(1e-3, FLOAT, "learning rate", positive)
    optimizer: str = setting("adam", TEXT, "adam, adamw or sgd", one_of("adam", "adamw", "sgd"))
    betas: tuple[float, float] = setting((0.9, 0.999), BETAS, "Adam's betas", two_betas, flag=None)
    momentum: float = setting(0.0, FLOAT, "SGD momentum (0: plain SGD)", non_negative)
    weight_decay: float | None = setting(
        None, optional(FLOAT), "weight decay (default 0.01 for adamw, else 0)", non_negative
    )
    batch_size: int = setting(32, INT, "examples per step", positive)
    schedule: str = setting(
        "constant",
        TEXT,
        "constant, cosine (linear warmup then cosine) or step",
        one_of("constant", "cosine", "step"),
    )
    warmup_epochs: int = setting(0, INT, "warmup epochs of the cosine schedule", non_negative)
    step_size: int = setting(20, INT, "epochs between step decays", positive)
    gamma: float = setting(0.1, FLOAT, "step decay factor", positive)
    grad_clip: float | None = setting(
        None, optional(FLOAT), "clip the gradient norm to this (default off)", positive
    )
    patience: int | None = setting(
        None,
        optional(INT),
        "stop after this many epochs without a better val loss, restore the best (default off)",
        positive,
    )
    arity: str = setting("3", ARITY, "arguments per input: 3, 2-5 or 2,4", an_arity, "data")
    test_arity: str | None = setting(
        None, optional(ARITY), "test on other arities (length generalisation; default: the arity)", an_arity, "data"
    )
    train_size: int = setting(10_000, INT, "training examples", positive, "data")
    eval_size: int = setting(2_000, INT, "max val/test inputs", positive, "data")
    split: tuple[float, float, float] = setting(
        (0.6, 0.2, 0.2), SPLIT, "train/val/test fractions of the distinct inputs", group="data"
    )
    seed: int = setting(0, INT, "seed of data split, init, dropout and order", non_negative, "run")
    backend: str | None = setting(
        None, optional(TEXT), "kernel backend: c or numpy (default: C when built)", one_of("c", "numpy"), "run"
    )
    threads: int | None = setting(
        None, optional(INT), "kernel threads (default: MICROTENSOR_NUM_THREADS or the cores)", positive, "run"
    )
    diagnostics: bool = setting(True, BOOL, "record diagnostics", group="run", flag=None)
    diagnostics_epochs: list[int] = setting(
        [1, 5, 10, 20, 30, 50], INT_LIST, "epochs at which diagnostics are recorded", all_positive, "run"
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Each field by its declaration, then the rules between fields; SettingError on the first fault."""
        _check_fields(self)
        _check_warmup("warmup_epochs", self.warmup_epochs, "epochs", self.epochs)


@dataclass
class TextConfig:
    """The text task's settings (--task text): corpus, length of the run, context; a text run's 'text' section."""

    data: str | None = setting(None, optional(TEXT), "UTF-8 text file to train on (required)", group="text")
    steps: int = setting(2000, INT, "optimizer steps", positive, "text")
    block_size: int = setting(128, INT, "context length in characters", positive, "text")
    grad_accum: int = setting(1, INT, "micro-batches of --batch-size windows per step", positive, "text")
    warmup_steps: int = setting(100, INT, "steps of linear warmup before the cosine decay", non_negative, "text")
    eval_every: int = setting(250, INT, "steps between evaluations (and checkpoints)", positive, "text")
    eval_tokens: int = setting(16384, INT, "characters of each split scored for train/bpc, val/bpc", positive, "text")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Each field by its declaration, then the rules between fields; SettingError on the first fault."""
        _check_fields(self)
        _check_warmup("warmup_steps", self.warmup_steps, "steps", self.steps)


TASKS = ("ops", "text")
# What --task text starts from instead of the declared defaults (a --config file or a flag overrides them).
TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"pre_ln": True},
    "train": {"optimizer": "adamw", "lr": 2e-3, "grad_clip": 1.0},
}
# Settings of the operations task that a text run has no use for (it counts steps, reads its own file).
# Its schedule is always linear warmup (--warmup-steps) then cosine.
OPS_ONLY = ("epochs", "schedule", "warmup_epochs", "step_size", "gamma", "arity", "test_arity", "train_size",
            "eval_size", "split", "diagnostics_epochs", *ABLATIONS)


def validate(model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    """Both configs, and the rules that tie them together."""
    model_cfg.validate()
    cfg.validate()
    if model_cfg.vocab_size != len(VOCAB):
        raise SettingError("vocab_size", f"must be {len(VOCAB)} (the task's tokens), got {model_cfg.vocab_size}")
    longest = 2 * max(parse_arity(cfg.test_arity or cfg.arity) + parse_arity(cfg.arity)) + 2
    if model_cfg.max_len < longest:
        raise SettingError("max_len", f"{model_cfg.max_len} is too short for arity {cfg.arity} / {cfg.test_arity}")


# ---- the command line ---------------------------------------------------------------------------


def flag_of(name: str) -> str:
    """The command-line spelling of a setting."""
    if name in ABLATIONS:
        return f"--ablate {name}"
    return "--no-diagnostics" if name == "diagnostics" else f"--{name.replace('_', '-')}"


def _flag_type(f: Any) -> Callable[[str], Any]:
    """argparse `type` of a setting: the kind's reader, then the setting's check."""

    def convert(text: str) -> Any:
        try:
            value = f.metadata["kind"].parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        complaint = _complaint(f, value)
        if complaint:
            raise argparse.ArgumentTypeError(complaint)
        return value

    convert.__name__ = f.metadata["kind"].name
    return convert


def _ablations(text: str) -> list[str]:
    names = [n.strip().replace("-", "_") for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ABLATIONS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown ablation {bad[0]!r}; choose from {', '.join(ABLATIONS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command line; flags left out keep the value of --config, the resumed run, or the default."""
    p = argparse.ArgumentParser(
        prog="python -m transformer.train",
        description="Train the seed transformer on the operations task (Max(5,3,9) -> 9), or with --task text "
        "a causal character GPT on a UTF-8 file.",
        epilog="--task text starts from other defaults: "
        + "; ".join(f"{flag_of(k)} {v}" for part in TEXT_DEFAULTS.values() for k, v in part.items())
        + "; --max-len is its --block-size, the vocabulary the file's characters. It does not take "
        + ", ".join(flag_of(n) for n in OPS_ONLY if n not in ABLATIONS) + " or --ablate.",
        argument_default=argparse.SUPPRESS,
    )
    groups = {name: p.add_argument_group(name) for name in ("run", "optimisation", "data", "model", "text")}
    run = groups["run"]
    run.add_argument("--task", choices=TASKS, help="ops (default) or text (default: the resumed run's)")
    run.add_argument("--out", default="runs/seed", help="run directory (default: runs/seed)")
    fresh_or_not = run.add_mutually_exclusive_group()
    fresh_or_not.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="continue from OUT/ckpt_last.npz with the run's own settings (may change: "
        + ", ".join(flag_of(n) for n in MAY_CHANGE_ON_RESUME)
        + ")",
    )
    fresh_or_not.add_argument(
        "--overwrite", action="store_true", default=False, help="start afresh in an OUT that holds a run"
    )
    run.add_argument("--config", help="JSON file of settings ({'model': {...}, 'train': {...}} or flat)")
    run.add_argument("--quiet", action="store_true", default=False, help="no progress bar")
    run.add_argument(
        "--data-parallel",
        action="store_true",
        default=False,
        help="under `mpirun -n K`: each rank trains on 1/K of every batch (needs the cluster extra; docs/SCALING.md)",
    )
    run.add_argument("--no-diagnostics", dest="diagnostics", action="store_false", help="record no diagnostics")
    for f in (*fields(TrainConfig), *fields(ModelConfig), *fields(TextConfig)):
        meta, group = f.metadata, groups[f.metadata["group"]]
        if meta["flag"] == "store_true":
            group.add_argument(flag_of(f.name), action="store_true", help=meta["help"])
        elif meta["flag"] == FLAG:
            default = _default(f)
            text = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            shown = "" if default is None else f" (default {text})"
            group.add_argument(flag_of(f.name), type=_flag_type(f), help=meta["help"] + shown)
    groups["model"].add_argument(
        "--ablate",
        type=_ablations,
        action="append",
        help=f"switch a component off (repeatable or comma list): {', '.join(ABLATIONS)}",
    )
    return p


# ---- resolving a run's settings -----------------------------------------------------------------

# Settings a resumed run may change: they decide how long and how it runs, not what it computes.
MAY_CHANGE_ON_RESUME = ("epochs", "threads", "backend", "data")  # data: its text is checked by digest


def _apply(target: Any, values: dict[str, Any], where: str) -> None:
    """Set dataclass fields from a JSON dict, each read and checked as declared; SettingError otherwise."""
    if not isinstance(values, dict):
        raise SettingError(where, f"must be a JSON object of settings, got {type(values).__name__}")
    declared = {f.name: f for f in fields(target)}
    for key, value in values.items():
        if key not in declared:
            raise SettingError(key, f"unknown setting {key!r} in {where}")
        setattr(target, key, check_value(declared[key], value))


SECTIONS = {"model": ModelConfig, "train": TrainConfig, "text": TextConfig}


def read_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """{'model': ..., 'train': ...[, 'text': ...]} from a JSON file; flat files are split by field name.

    ValueError if unreadable.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read it ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    if raw and set(raw) <= set(SECTIONS):
        return {name: raw[name] for name in SECTIONS if name in raw}
    owner = {f.name: name for name, kind in SECTIONS.items() for f in fields(kind)}
    layer: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        layer.setdefault(owner.get(key, "train"), {})[key] = value
    return layer


def _layered(layers: list[dict[str, dict[str, Any]]], flags: dict[str, Any], text: bool) -> list[Any]:
    """[model, train(, text)] configs: defaults, then each layer in turn, then the flags; not yet validated."""
    names = ("model", "train", "text") if text else ("model", "train")
    configs = {name: SECTIONS[name]() for name in names}
    wrong = OPS_ONLY if text else [f.name for f in fields(TextConfig)]
    for layer in ([TEXT_DEFAULTS] if text else []) + layers:
        if not text and layer.get("text"):
            raise SettingError("text", "settings apply to --task text only")
        for name, config in configs.items():
            _apply(config, layer.get(name, {}), name)
    for key, value in flags.items():
        if key in wrong or (key == "ablate" and text):
            raise SettingError(key, f"does not apply to --task {'text' if text else 'ops'} ({flag_of(key)})")
        for config in configs.values():
            if key in {f.name for f in fields(config)}:
                setattr(config, key, value)
    for name in (n for group in flags.get("ablate", []) for n in group):
        setattr(configs["model"], name, True)
    return list(configs.values())


def from_layers(layers: list[dict[str, dict[str, Any]]], flags: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """The operations task's settings: defaults, each layer ({'model': ..., 'train': ...}) in turn, the flags."""
    model_cfg, cfg = _layered(layers, flags, text=False)
    validate(model_cfg, cfg)
    return model_cfg, cfg


def text_from_layers(
    layers: list[dict[str, dict[str, Any]]], flags: dict[str, Any]
) -> tuple[ModelConfig, TrainConfig, TextConfig]:
    """The text task's settings: TEXT_DEFAULTS, then as from_layers; the model's max_len is the block size."""
    model_cfg, cfg, text = _layered(layers, flags, text=True)
    model_cfg.max_len = text.block_size
    model_cfg.validate()
    cfg.validate()
    text.validate()
    if any(getattr(model_cfg, name) for name in ABLATIONS):
        raise SettingError("ablate", "does not apply to --task text (its GPT has every component)")
    if text.data is None:
        raise SettingError("data", "is required with --task text: --data FILE.txt")
    return model_cfg, cfg, text


def as_dict(model_cfg: ModelConfig, cfg: TrainConfig, text: TextConfig | None = None) -> dict[str, dict[str, Any]]:
    """The JSON form stored in config.json and in checkpoints (a 'text' section for text runs)."""
    return {"model": asdict(model_cfg), "train": asdict(cfg), **({"text": asdict(text)} if text else {})}


def differences(stored: dict[str, dict[str, Any]], wanted: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(section, name) of the settings whose value in `wanted` differs from `stored` (JSON forms)."""
    return [
        (section, name)
        for section in ("text", "train", "model")  # text first: --block-size rather than the max_len it sets
        for name, value in wanted.get(section, {}).items()
        if json.dumps(stored.get(section, {}).get(name)) != json.dumps(value)
    ]
