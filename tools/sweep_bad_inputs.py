"""Sweep of bad and unusual inputs across the library and the command lines, with PyTorch as the oracle.

    python tools/sweep_bad_inputs.py [--only lib|cli] [--show silent,traceback,...]

Every library case is one function of the module `T` that is called twice, with `T = torch` and with
`T = microtensor` (on each backend), so the oracle and the library run the same line. Outcomes:
  ok           microtensor gives PyTorch's result (NaN where PyTorch has NaN)
  clear        a ValueError/TypeError/IndexError/RuntimeError naming the op (or exit 2 with one line)
  traceback    any other exception, an error that does not name the op, or exit 1 with a traceback
  silent       a result where PyTorch raises, or a result that differs from PyTorch's
  documented   a difference from PyTorch listed in DOCUMENTED, where ours is the exactly rounded answer
  crash        the process died (signal)
  lost         a command changed or deleted files it should have left alone
Library cases run in child processes; a child that dies is restarted after the case that killed it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ["ok", "clear", "documented", "traceback", "silent", "crash", "lost"]
DOCUMENTED = {  # case -> why microtensor's result differs from PyTorch's (docs/RELIABILITY.md)
    "layer_norm[huge]": "values ~1e30: squares overflow float32; PyTorch returns NaN, we redo the row in float64",
    "matmul_self_T[huge]": "products ~1e60 overflow: ours are the exact sums rounded (+-inf), PyTorch's NaN",
    "gelu[inf]": "exact GELU of +inf is +inf (x Phi(x); PyTorch's too in float64), PyTorch's float32 AVX-512 loop NaN",
}
CLEAR_ERRORS = (ValueError, TypeError, IndexError, RuntimeError, KeyError, AttributeError)


# ---------------------------------------------------------------- library cases
def _arrays() -> dict[str, np.ndarray]:
    """Named inputs: special values, dtypes, shapes and layouts."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 5)).astype(np.float32)
    nan_row = base.copy()
    nan_row[1, 2] = np.nan
    inf_row = base.copy()
    inf_row[0, 1] = np.inf
    ninf_row = base.copy()
    ninf_row[2, :] = -np.inf
    big = np.full((2, 40), -np.inf, np.float32)
    big[0, :] = rng.standard_normal(40)
    return {
        "float": base,
        "nan": nan_row,
        "inf": inf_row,
        "-inf_row": ninf_row,
        "-inf_row_wide": big,
        "huge": base * 1e30,
        "tiny": base * 1e-30,
        "int64": rng.integers(-3, 4, (3, 5)).astype(np.int64),
        "int32": rng.integers(-3, 4, (3, 5)).astype(np.int32),
        "bool": rng.random((3, 5)) > 0.5,
        "complex": (base + 1j * base).astype(np.complex64),
        "float64": base.astype(np.float64),
        "empty": np.zeros((0, 5), np.float32),
        "empty_cols": np.zeros((3, 0), np.float32),
        "scalar": np.float32(1.5) * np.ones((), np.float32),
        "transposed": np.ascontiguousarray(rng.standard_normal((5, 3)).astype(np.float32)).T,
        "reversed": base[:, ::-1],
    }


def _tensor(T, x: np.ndarray):
    """x as a tensor of T; PyTorch gets a copy (it refuses negative strides, which microtensor must take)."""
    return T.tensor(x.copy() if T.__name__ == "torch" else x)


def _unary_cases() -> list[tuple[str, Callable]]:
    """Elementwise and row-wise ops on every named input."""
    ops: dict[str, Callable] = {
        "exp": lambda T, x: T.exp(x),
        "log": lambda T, x: T.log(x),
        "sqrt": lambda T, x: T.sqrt(x),
        "tanh": lambda T, x: T.tanh(x),
        "sigmoid": lambda T, x: T.sigmoid(x),
        "relu": lambda T, x: T.relu(x),
        "abs": lambda T, x: T.abs(x),
        "pow3": lambda T, x: x**3,
        "pow0.5": lambda T, x: x**0.5,
        "neg": lambda T, x: -x,
        "add1": lambda T, x: x + 1,
        "mul2.5": lambda T, x: x * 2.5,
        "div2": lambda T, x: x / 2,
        "sum": lambda T, x: x.sum(),
        "sum_dim": lambda T, x: x.sum(dim=-1),
        "mean": lambda T, x: x.mean(),
        "mean_dim": lambda T, x: x.mean(dim=-1),
        "var": lambda T, x: x.var(dim=-1),
        "max": lambda T, x: x.max(),
        "max_dim_values": lambda T, x: x.max(dim=-1)[0],
        "max_dim_indices": lambda T, x: x.max(dim=-1)[1],
        "argmax": lambda T, x: x.argmax(dim=-1),
        "softmax": lambda T, x: T.nn.functional.softmax(x, dim=-1),
        "log_softmax": lambda T, x: T.nn.functional.log_softmax(x, dim=-1),
        "gelu_tanh": lambda T, x: T.nn.functional.gelu(x, approximate="tanh"),
        "gelu": lambda T, x: T.nn.functional.gelu(x),
        "layer_norm": lambda T, x: T.nn.functional.layer_norm(x, x.shape[-1:]),
        "reshape": lambda T, x: x.reshape(-1),
        "transpose": lambda T, x: x.transpose(0, 1) if x.ndim == 2 else x.t(),
        "matmul_self_T": lambda T, x: x @ x.T,
        "linear": lambda T, x: T.nn.functional.linear(x, T.ones(4, x.shape[-1] if x.ndim else 1)),
    }
    cases = []
    for op, fn in ops.items():
        for name in _arrays():
            cases.append((f"{op}[{name}]", lambda T, fn=fn, name=name: fn(T, _tensor(T, _arrays()[name]))))
    return cases


def _cross_entropy_cases() -> list[tuple[str, Callable]]:
    """Targets, ignore_index, dtypes and shapes for cross-entropy."""
    logits = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    nan_ignored = logits.copy()
    nan_ignored[2] = np.nan
    target = np.array([0, 2, 1, 1])
    ce = "T.nn.functional.cross_entropy"
    specs = {
        "plain": (logits, target, {}),
        "ignore_nan_row": (nan_ignored, np.array([0, 2, -100, 1]), {}),
        "ignore_index_1.5": (logits, target, {"ignore_index": 1.5}),
        "ignore_index_huge": (logits, target, {"ignore_index": 2**70}),
        "all_ignored": (logits, np.full(4, -100), {}),
        "target_out_of_range": (logits, np.array([0, 3, 1, 1]), {}),
        "target_negative": (logits, np.array([0, -2, 1, 1]), {}),
        "target_float": (logits, target.astype(np.float32), {}),
        "target_bool": (logits, target > 0, {}),
        "logits_int": (np.array([[1, 2, 3]] * 4), target, {}),
        "logits_0d": (np.float32(1.0) * np.ones((), np.float32), np.array(0), {}),
        "target_wrong_len": (logits, np.array([0, 1]), {}),
        "empty_batch": (np.zeros((0, 3), np.float32), np.zeros(0, np.int64), {}),
        "reduction_bad": (logits, target, {"reduction": "avg"}),
        "label_smoothing": (logits, target, {"label_smoothing": 0.1}),
        "label_smoothing_bad": (logits, target, {"label_smoothing": 1.5}),
        "inf_logit": (np.where(logits > 1, np.inf, logits).astype(np.float32), target, {}),
    }
    cases = []
    for name, (x, t, kw) in specs.items():
        def run(T, x=x, t=t, kw=kw):
            return eval(ce, {"T": T})(T.tensor(x), T.tensor(t), **kw)

        cases.append((f"cross_entropy[{name}]", run))
    return cases


def _attention_cases() -> list[tuple[str, Callable]]:
    """Scaled dot-product attention with NaN, masks, dtypes and shapes."""
    rng = np.random.default_rng(2)
    q = rng.standard_normal((2, 2, 4, 8)).astype(np.float32)
    nan_q = q.copy()
    nan_q[0, 1, 2, 3] = np.nan
    none_mask = np.ones((4, 4), bool)
    none_mask[1] = False
    specs = {
        "plain": (q, {}),
        "causal": (q, {"is_causal": True}),
        "nan_query": (nan_q, {}),
        "int": (q.astype(np.int64), {}),
        "bool_mask": (q, {"attn_mask": np.tril(np.ones((4, 4), bool))}),
        "fully_masked_row": (q, {"attn_mask": none_mask}),
        "float_mask": (q, {"attn_mask": np.triu(np.full((4, 4), -1e9, np.float32), 1)}),
        "mask_and_causal": (q, {"attn_mask": none_mask, "is_causal": True}),
        "scale": (q, {"scale": 0.5}),
        "mismatched": (q, {"k": q[:, :, :, :4]}),
    }
    cases = []
    for name, (x, kw) in specs.items():
        def run(T, x=x, options=kw):
            kw = dict(options)
            k = T.tensor(kw.pop("k")) if "k" in kw else T.tensor(x)
            if "attn_mask" in kw:
                kw["attn_mask"] = T.tensor(kw["attn_mask"])
            return T.nn.functional.scaled_dot_product_attention(T.tensor(x), k, T.tensor(x), **kw)

        cases.append((f"sdpa[{name}]", run))
    return cases


def _inplace_cases() -> list[tuple[str, Callable]]:
    """In-place changes after the forward pass: backward must raise (PyTorch) or give PyTorch's grads."""

    def after_linear(T):
        x = T.ones(2, 3)
        w = T.ones(4, 3, requires_grad=True)
        y = T.nn.functional.linear(x, w).sum()
        x += 10
        y.backward()
        return w.grad

    def after_layer_norm(T):
        x = T.tensor(np.arange(6.0, dtype=np.float32).reshape(2, 3), requires_grad=True)
        h = x * 1
        y = T.nn.functional.layer_norm(h, (3,))
        h += 1
        (y * y).sum().backward()
        return x.grad

    def through_view(T):
        a = T.ones(4, requires_grad=True)
        b = a * 2
        c = b.exp()
        b.view(2, 2)[0] += 1
        c.sum().backward()
        return a.grad

    def base_of_view(T):
        a = T.ones(4, requires_grad=True)
        b = a * 2
        v = b.view(2, 2)
        c = v.exp()
        b.mul_(3)
        c.sum().backward()
        return a.grad

    def step_between(T):
        w = T.nn.Parameter(T.ones(3))
        opt = T.optim.SGD([w], lr=0.1)
        loss = (w * w).sum()
        w.grad = T.ones(3)
        opt.step()
        loss.backward()
        return w.grad

    def nonleaf_add(T):
        a = T.ones(3, requires_grad=True)
        c = a * 2
        c += a
        c.sum().backward()
        return a.grad

    def leaf_inplace(T):
        a = T.ones(3, requires_grad=True)
        a += 1
        return a

    return [(f"inplace[{f.__name__}]", f) for f in
            (after_linear, after_layer_norm, through_view, base_of_view, step_between, nonleaf_add, leaf_inplace)]


def _optim_cases() -> list[tuple[str, Callable]]:
    """Optimizer options and gradients that must be refused."""

    def adam(**kw):
        def run(T):
            w = T.nn.Parameter(T.ones(3, 4))
            opt = T.optim.Adam([w], **kw)
            w.grad = T.ones(3, 4)
            opt.step()
            return w
        return run

    def bad_grad_shape(T):
        w = T.nn.Parameter(T.ones(3, 4))
        opt = T.optim.Adam([w], lr=0.1)
        w.grad = T.ones(4, 3)
        opt.step()
        return w

    def load_fast(T):
        w = T.nn.Parameter(T.ones(3))
        opt = T.optim.Adam([w], lr=0.1)
        sd = opt.state_dict()
        sd["param_groups"][0]["lr"] = "fast"
        opt.load_state_dict(sd)
        w.grad = T.ones(3)
        opt.step()
        return w

    specs = {"lr_nan": {"lr": math.nan}, "lr_neg": {"lr": -1.0}, "eps_nan": {"eps": math.nan},
             "eps_neg": {"eps": -1.0}, "beta_1": {"betas": (1.5, 0.9)}, "wd_neg": {"weight_decay": -1.0}}
    cases = [(f"adam[{k}]", adam(**v)) for k, v in specs.items()]
    return cases + [("adam[grad_shape]", bad_grad_shape), ("adam[load_lr_fast]", load_fast)]


def _serialization_cases(tmp: str) -> list[tuple[str, Callable]]:
    """save/load round trips of awkward keys and loads of files that are not checkpoints."""

    def round_trip(key):
        def run(T):
            path = os.path.join(tmp, f"k{abs(hash(key))}.pt")
            T.save({key: T.ones(2)}, path)
            return T.load(path)[key]
        return run

    def nested(T):
        path = os.path.join(tmp, "nested.pt")
        T.save({"model": {"w": T.ones(2)}, "iter_num": 3, "config": {"n": 1, "s": "x"}, "l": [T.zeros(1)]}, path)
        got = T.load(path)
        return T.tensor([float(got["iter_num"]), float(got["model"]["w"].sum()), float(got["config"]["n"])])

    def load_bytes(data: bytes, suffix: str = ".pt"):
        def run(T):
            path = os.path.join(tmp, f"bad{abs(hash(data))}{suffix}")
            Path(path).write_bytes(data)
            return T.load(path)
        return run

    npy = os.path.join(tmp, "a.npy")
    np.save(npy, np.ones(3))
    return [
        *[(f"save[key={k}]", round_trip(k)) for k in ("allow_pickle", "file", "a/b", "", "ünï", "x.npy")],
        ("save[nested]", nested),
        ("load[empty]", load_bytes(b"")),
        ("load[random]", load_bytes(os.urandom(300))),
        ("load[npy]", load_bytes(Path(npy).read_bytes(), ".npy")),
        ("load[truncated_zip]", load_bytes(b"PK\x03\x04" + os.urandom(64))),
    ]


def _library_cases(tmp: str) -> list[tuple[str, Callable]]:
    return (_unary_cases() + _cross_entropy_cases() + _attention_cases() + _inplace_cases()
            + _optim_cases() + _serialization_cases(tmp))


def _to_numpy(value) -> np.ndarray:
    """A result as a float64 array (torch or microtensor tensors, numbers, named tuples of tensors)."""
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value, dtype=np.complex128 if np.iscomplexobj(value) else np.float64)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes, NaN in the same places, values within float32 tolerance."""
    if a.shape != b.shape:
        return False
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    return bool(np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-4, atol=1e-5))


def _names_op(message: str, case: str) -> bool:
    """An error is clear when it names the op (a word of the case's name appears in the message)."""
    words = re.findall(r"[a-z]{3,}", case.lower())
    text = message.lower()
    return len(message) < 2000 and any(w in text for w in words)


def _outcome(case: str, fn: Callable, torch, mt) -> tuple[str, str]:
    """Run one case under PyTorch and under microtensor; classify microtensor's behaviour."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with sdpa_kernel(SDPBackend.MATH):  # the reference semantics (the fused CPU kernels differ on NaN)
            expected, torch_error = _to_numpy(fn(torch)), None
    except Exception as e:  # noqa: BLE001 - the oracle's errors are data here
        expected, torch_error = None, e
    try:
        got = _to_numpy(fn(mt))
    except CLEAR_ERRORS as e:
        msg = f"{type(e).__name__}: {e}"
        named = _names_op(str(e), case) or (torch_error is not None and len(msg) < 2000)
        return ("clear" if named and not isinstance(e, AttributeError) else "traceback"), msg
    except Exception as e:  # noqa: BLE001
        return "traceback", f"{type(e).__name__}: {e}"
    if torch_error is not None:
        return "silent", f"PyTorch raises {type(torch_error).__name__}: {str(torch_error)[:120]}; we return"
    if _same(got, expected):
        return "ok", ""
    if case in DOCUMENTED:
        return "documented", DOCUMENTED[case]
    return "silent", f"expected {expected.ravel()[:6]}, got {got.ravel()[:6]}"


def child(backend: str, start: int) -> None:
    """Run library cases from `start`, one JSON line each, flushed (the parent survives our crash)."""
    import torch

    import microtensor as mt

    mt.backend.use(backend)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (case, fn) in enumerate(_library_cases(tmp)):
            if i < start:
                continue
            torch.manual_seed(0)
            outcome, detail = _outcome(case, fn, torch, mt)
            print(json.dumps({"i": i, "case": f"{backend}:{case}", "outcome": outcome, "detail": detail[:300]}),
                  flush=True)


def run_library(backend: str) -> list[dict]:
    """All library cases on one backend, restarting the child after a crash."""
    rows: list[dict] = []
    start = 0
    while True:
        proc = subprocess.run([sys.executable, __file__, "--child", backend, "--start", str(start)],
                              capture_output=True, text=True, cwd=ROOT, timeout=600)
        got = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        rows += got
        if proc.returncode == 0:
            return rows
        crashed = got[-1]["i"] + 1 if got else start
        rows.append({"i": crashed, "case": f"{backend}:#{crashed}", "outcome": "crash",
                     "detail": f"exit {proc.returncode}: {proc.stderr[-300:]}"})
        start = crashed + 1


# ---------------------------------------------------------------- command-line cases
def _tree_digest(folder: Path) -> dict[str, str]:
    """File -> sha256 of everything under folder (to see whether a command changed it)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def _cli(args: list[str], stdin: str | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `python -m args`; a command still running after `timeout` s counts as silent (it took bad input)."""
    env = {**os.environ, "MICROTENSOR_NUM_THREADS": "1"}
    try:
        return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, input=stdin,
                              cwd=ROOT, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 0, "", f"still running after {timeout} s")


def _classify_cli(case: str, proc: subprocess.CompletedProcess, before: dict, after: dict,
                  expect_ok: bool = False) -> dict:
    """exit 2 with a short message = clear; exit 1/traceback = traceback; a signal = crash; exit 0 = silent."""
    if before and any(before.get(k) != after.get(k) for k in before):
        outcome = "lost"
    elif proc.returncode < 0:
        outcome = "crash"
    elif "Traceback" in proc.stderr or proc.returncode not in (0, 2):
        outcome = "traceback"
    elif proc.returncode == 2:
        outcome = "clear"
    else:
        outcome = "ok" if expect_ok else "silent"
    return {"case": f"cli:{case}", "outcome": outcome, "detail": proc.stderr.strip()[-300:]}


def run_cli() -> list[dict]:
    """Bad flags, files and folders for train, predict, report, graph and study."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        run = tmp_path / "run"
        quick = ["--epochs", "1", "--train-size", "200", "--eval-size", "100", "--quiet", "--no-diagnostics"]
        first = _cli(["transformer.train", "--out", str(run), *quick])
        if first.returncode != 0:
            return [{"case": "cli:setup", "outcome": "traceback", "detail": first.stderr[-300:]}]
        ckpt = run / "ckpt_last.npz"
        good = ckpt.read_bytes()
        bad_files = {
            "empty": b"", "truncated": good[: len(good) // 2], "random": os.urandom(2000),
            "bitflip": good[:100] + bytes([good[100] ^ 0xFF]) + good[101:],
        }
        train_flags = {
            "seed_-1": ["--seed", "-1"], "split_000": ["--split", "0,0,0"], "split_100": ["--split", "1,0,0"],
            "split_nan": ["--split", "nan,1,1"], "epochs_0": ["--epochs", "0"], "lr_nan": ["--lr", "nan"],
            "lr_-1": ["--lr", "-1"], "threads_0": ["--threads", "0"], "n_heads_3": ["--n-heads", "3"],
            "batch_0": ["--batch-size", "0"], "unknown": ["--frobnicate"],
            "arity_1": ["--arity", "1"], "arity_11": ["--arity", "11"],
            "dropout_2": ["--dropout", "2"], "ablate_bad": ["--ablate", "nothing"],
        }
        for name, flags in train_flags.items():
            out = tmp_path / f"t_{name}"
            rows.append(_classify_cli(f"train {name}", _cli(["transformer.train", "--out", str(out), *quick, *flags]),
                                      {}, {}))
        before = _tree_digest(run)
        changed = {"seed": "7", "lr": "0.5", "batch-size": "7", "d-model": "32", "n-heads": "2", "d-ff": "64",
                   "n-blocks": "1", "dropout": "0.2", "optimizer": "sgd", "weight-decay": "0.1",
                   "schedule": "cosine", "grad-clip": "0.5", "patience": "3", "arity": "2", "train-size": "300",
                   "eval-size": "50", "split": "0.5,0.25,0.25", "max-len": "32", "ablate": "no_ffn"}
        attempts = {"no_resume_existing": [], "resume_and_overwrite": ["--resume", "--overwrite"],
                    **{f"resume_{flag}": ["--resume", f"--{flag}", value] for flag, value in changed.items()}}
        for name, extra in attempts.items():
            proc = _cli(["transformer.train", "--out", str(run), *quick, *extra])
            rows.append(_classify_cli(f"train {name}", proc, before, _tree_digest(run)))
        configs = {"epochs_1.5": '{"epochs": 1.5}', "lr_text": '{"lr": "fast"}', "d_model_list": '{"d_model": [64]}',
                   "unknown_key": '{"frobnicate": 1}', "not_json": "{epochs: 2", "a_list": "[1, 2]",
                   "nan": '{"lr": NaN}', "split_short": '{"split": [0.5, 0.5]}'}
        for name, text in configs.items():
            config = tmp_path / f"config_{name}.json"
            config.write_text(text)
            proc = _cli(["transformer.train", "--out", str(tmp_path / f"c_{name}"), *quick, "--config", str(config)])
            rows.append(_classify_cli(f"train config {name}", proc, {}, {}))
        for name, data in bad_files.items():
            bad = tmp_path / f"bad_{name}"
            bad.mkdir()
            (bad / "ckpt_last.npz").write_bytes(data)
            for f in run.iterdir():
                if f.is_file() and not f.name.startswith("ckpt"):
                    (bad / f.name).write_bytes(f.read_bytes())
            snap = _tree_digest(bad)
            proc = _cli(["transformer.train", "--out", str(bad), *quick, "--resume"])
            rows.append(_classify_cli(f"train resume {name}", proc, snap, _tree_digest(bad)))
            bad_ckpt = tmp_path / f"{name}.npz"
            bad_ckpt.write_bytes(data)
            rows.append(_classify_cli(f"predict ckpt {name}",
                                      _cli(["transformer.predict", "--ckpt", str(bad_ckpt), "Max(1,2,3)"]), {}, {}))
        afile = tmp_path / "a_file"
        afile.write_text("x")
        for name, out in {"out_is_file": afile, "out_under_file": afile / "sub"}.items():
            rows.append(_classify_cli(f"train {name}", _cli(["transformer.train", "--out", str(out), *quick]), {}, {}))
            graph = _cli(["transformer.graph", "--out", str(out / "g.svg")])
            rows.append(_classify_cli(f"graph {name}", graph, {}, {}))
        for name, text in {"garbage": "Max(1,2\n", "empty_line": "\n", "huge_line": "M" * 200_000 + "\n",
                           "bad_op": "Foo(1,2,3)\n", "binary": "\x00\xff\n"}.items():
            proc = _cli(["transformer.predict", "--ckpt", str(ckpt)], stdin=text)
            row = _classify_cli(f"predict stdin {name}", proc, {}, {})
            if len(proc.stderr) > 5000:
                row["outcome"], row["detail"] = "traceback", f"message of {len(proc.stderr)} characters"
            rows.append(row)
        rows.append(_classify_cli("predict ok", _cli(["transformer.predict", "--ckpt", str(ckpt), "Max(1,2,3)"]),
                                  {}, {}, expect_ok=True))
        torn = tmp_path / "torn"
        torn.mkdir()
        for f in run.iterdir():
            if f.is_file():
                (torn / f.name).write_bytes(f.read_bytes())
        (torn / "config.json").write_text('{"model": {"d_mod')
        rows.append(_classify_cli("report torn config", _cli(["transformer.report", str(torn)]), {}, {}))
        missing = _cli(["transformer.report", str(tmp_path / "nope")])
        rows.append(_classify_cli("report missing folder", missing, {}, {}))
        rows.append(_classify_cli("study out is file", _cli(["transformer.study", "ablations", "--out", str(afile),
                                                              "--epochs", "1", "--configs", "full"]), {}, {}))
        for name, flags in {"seeds_0": ["--seeds", "0"], "seeds_-1": ["--seeds", "-1"], "jobs_0": ["--jobs", "0"],
                            "epochs_0": ["--epochs", "0"], "configs_unknown": ["--configs", "nothing"],
                            "train_size_0": ["--train-size", "0"], "name_unknown": []}.items():
            study = ["transformer.study", "nosuchstudy" if name == "name_unknown" else "ablations"]
            proc = _cli([*study, "--out", str(tmp_path / f"s_{name}"), *flags])
            rows.append(_classify_cli(f"study {name}", proc, {}, {}))
        for name, flags in {"top_0": ["--top", "0"], "top_-1": ["--top", "-1"], "top_huge": ["--top", "999"]}.items():
            proc = _cli(["transformer.predict", "--ckpt", str(ckpt), *flags, "Max(1,2,3)"])
            rows.append(_classify_cli(f"predict {name}", proc, {}, {}, expect_ok=name == "top_huge"))
        graph_flags = {"n_blocks_-1": ["--n-blocks", "-1"], "format_bad": ["--out", str(tmp_path / "g.xyz")]}
        for name, flags in graph_flags.items():
            rows.append(_classify_cli(f"graph {name}", _cli(["transformer.graph", *flags]), {}, {}))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["lib", "cli"], help="run one half of the sweep")
    parser.add_argument("--show", default="silent,traceback,crash,lost", help="outcomes to list case by case")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.start)
        return 0
    rows: list[dict] = []
    if args.only != "cli":
        for backend in ("c", "numpy"):
            rows += run_library(backend)
    if args.only != "lib":
        rows += run_cli()
    show = set(args.show.split(","))
    for row in rows:
        if row["outcome"] in show:
            print(f"{row['outcome']:9s} {row['case']}: {row['detail'][:200]}")
    groups: dict[str, Counter] = {}
    for row in rows:
        group = row["case"].split(":")[0] if row["case"].startswith("cli") else row["case"].split("[")[0]
        groups.setdefault(group, Counter())[row["outcome"]] += 1
    total = sum(groups.values(), Counter())
    print("\n| group | attempts | " + " | ".join(OUTCOMES) + " |")
    print("|---|---:|" + "---:|" * len(OUTCOMES))
    for group, counts in [*sorted(groups.items()), ("**all**", total)]:
        print(f"| {group} | {sum(counts.values())} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |")
    return 1 if total["silent"] or total["lost"] or total["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
