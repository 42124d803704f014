"""The design document's comparisons as one runner: `python -m transformer.study NAME`.

    python -m transformer.study ablations --seeds 2          # full model vs each component removed
    python -m transformer.study datasize --epochs 20         # 1k, 5k, 10k, 50k training examples
    python -m transformer.study optimizers                   # Adam vs SGD with and without momentum
    python -m transformer.study schedules                    # constant, warmup+cosine, step; clipping

Every (configuration, seed) is one `python -m transformer.train` subprocess
with `--threads` kernel threads (default 1). `--executor local` (default) runs
`--jobs` of them at a time on this machine (default 2, one per core);
`--executor ray` makes each run a Ray task reserving its thread count as CPUs,
on a local Ray instance or the cluster at `--address` (docs/SCALING.md); the
same seeds and threads give the same numbers on either executor.
Nothing is ever deleted: running the same study again skips the runs already
finished with the same settings and resumes interrupted ones from their
checkpoint; a run folder holding a run with other settings is refused (exit
code 2, naming the folder and the settings that differ). Results go to
runs/study-NAME/: results.md (markdown table), results.json, index.html
(overlaid validation curves). Ctrl-C stops the children cleanly (each saves a
checkpoint; Ray tasks are cancelled) and still writes the table of what finished.
"""

from __future__ import annotations

import argparse
import base64
import html
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import CKPT_LAST, holds_run
from .data import OPS
from .files import make_folder

STAMP = "study_command.json"  # the train command that started a run folder: its settings


@dataclass
class Config:
    """One configuration of a study: a name, the train arguments that define it, and a line of explanation."""

    name: str
    args: list[str]
    note: str = ""


def study_configs(name: str, epochs: int) -> list[Config]:
    """The configurations of a study; the first is the baseline the others are compared with."""
    step = max(1, round(epochs * 0.4))
    warmup = max(1, epochs // 10)
    studies = {
        "ablations": [
            Config("full", [], "the seed model: 2 blocks, attention, FFN, LayerNorm, residuals, positions"),
            Config("no_attention", ["--ablate", "no_attention"], "attention replaced by mean pooling"),
            Config("no_ffn", ["--ablate", "no_ffn"], "no feed-forward sublayer"),
            Config("no_layernorm", ["--ablate", "no_layernorm"], "no LayerNorm"),
            Config("no_residual", ["--ablate", "no_residual"], "no residual connections"),
            Config("one_block", ["--n-blocks", "1"], "one block instead of two"),
            Config("no_posenc", ["--ablate", "no_posenc"], "no positional encoding"),
        ],
        "datasize": [
            Config(f"train_{n // 1000}k", ["--train-size", str(n)], f"{n:,} training examples")
            for n in (10_000, 1_000, 5_000, 50_000)
        ],
        "optimizers": [
            Config("adam_lr1e-3", ["--optimizer", "adam", "--lr", "1e-3"],
                   "Adam, lr 1e-3, betas (0.9, 0.999)"),
            Config("sgd_lr0.1", ["--optimizer", "sgd", "--lr", "0.1", "--momentum", "0"],
                   "plain SGD, lr 0.1, no momentum"),
            Config("sgd_momentum0.9_lr0.01", ["--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.9"],
                   "SGD with momentum 0.9, lr 0.01 (the same effective step lr/(1-m) = 0.1)"),
        ],
        "schedules": [
            Config("constant", ["--schedule", "constant"], "constant lr 1e-3"),
            Config("warmup_cosine", ["--schedule", "cosine", "--warmup-epochs", str(warmup)],
                   f"linear warmup over {warmup} epochs, then cosine decay to 0"),
            Config("step", ["--schedule", "step", "--step-size", str(step), "--gamma", "0.1"],
                   f"lr x 0.1 every {step} epochs"),
            Config("constant_clip1", ["--schedule", "constant", "--grad-clip", "1.0"],
                   "constant lr, gradient norm clipped to 1.0"),
            Config("warmup_cosine_clip1", ["--schedule", "cosine", "--warmup-epochs", str(warmup),
                                           "--grad-clip", "1.0"], "warmup + cosine, clipped to 1.0"),
        ],
    }
    if name not in studies:
        raise ValueError(f"study: unknown study {name!r}; choose one of {', '.join(studies)}")
    return studies[name]


STUDIES = ("ablations", "datasize", "optimizers", "schedules")


@dataclass
class RunResult:
    """The outcome of one (configuration, seed) run, read back from its metrics.jsonl."""

    config: str
    seed: int
    run_dir: Path
    status: str = "pending"
    final: dict[str, Any] = field(default_factory=dict)
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    wall_s: float | None = None


def read_run(config: str, seed: int, run_dir: Path) -> RunResult:
    """Parse a run folder: the test line (status ok), epochs only (incomplete), or nothing."""
    result = RunResult(config, seed, run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return result
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "test/acc" in row:
            result.final = row
        elif "val/acc" in row:
            loss = float(row.get("val/loss", math.nan))
            result.curve.append((int(row["epoch"]), float(row["val/acc"]), loss))
    result.status = "ok" if result.final else "incomplete"
    timing = run_dir / "study_wall_s.txt"
    if timing.exists():
        result.wall_s = float(timing.read_text())
    return result


def train_command(config: Config, seed: int, run_dir: Path, epochs: int, base_args: Sequence[str],
                  resume: bool, threads: int = 1) -> list[str]:
    """The trainer invocation of one run; the configuration's own arguments come last and win."""
    cmd = [sys.executable, "-m", "transformer.train", "--out", str(run_dir), "--quiet", "--no-diagnostics",
           "--threads", str(threads)]
    if resume:
        return [*cmd, "--resume"]
    return [*cmd, "--epochs", str(epochs), "--seed", str(seed), *base_args, *config.args]


def child_env(threads: int = 1) -> dict[str, str]:
    """`threads` threads per run (our kernels and numpy's BLAS) so runs share the cores; package importable."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    for var in ("MICROTENSOR_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


@dataclass
class _Job:
    config: Config
    seed: int
    run_dir: Path
    fresh: list[str]  # the train command that starts this run afresh: its settings, kept in STAMP
    command: list[str]  # what runs now: `fresh`, `fresh --overwrite` (no checkpoint yet) or `--resume`
    threads: int = 1
    proc: subprocess.Popen | None = None
    started: float = 0.0
    log: Any = None


def plan_jobs(
    configs: Sequence[Config], seeds: Sequence[int], out: Path, epochs: int, base_args: Sequence[str],
    threads: int = 1,
) -> tuple[list[_Job], list[RunResult]]:
    """Jobs still to run, and the results already finished in `out` with the same settings (kept).

    Nothing is deleted: a folder holding a run with other settings raises ValueError naming it.
    """
    jobs, done, conflicts = [], [], []
    for config in configs:
        for seed in seeds:
            run_dir = out / config.name / f"seed{seed}"
            fresh = train_command(config, seed, run_dir, epochs, base_args, resume=False, threads=threads)
            found = holds_run(run_dir)
            if found:
                conflict = _conflict(run_dir, found, fresh[1:])
                if conflict:
                    conflicts.append(conflict)
                    continue
            previous = read_run(config.name, seed, run_dir)
            if previous.status == "ok":
                done.append(previous)
                continue
            if (run_dir / CKPT_LAST).exists():
                command = train_command(config, seed, run_dir, epochs, base_args, resume=True, threads=threads)
            else:
                command = [*fresh, "--overwrite"] if found else fresh
            jobs.append(_Job(config, seed, run_dir, fresh, command, threads))
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ValueError(f"{conflicts[0]}{more}; nothing was changed: choose another --out, or move the "
                         "folder away to train it again")
    return jobs, done


def _settings(command: Sequence[str]) -> dict[str, str]:
    """{flag: value} of a train command ('' for a switch, the last value of a repeated flag), --out left out."""
    settings: dict[str, str] = {}
    flag = None
    for word in command:
        if word.startswith("--"):
            flag = word
            settings[flag] = ""
        elif flag is not None:
            settings[flag] = word
            flag = None
    settings.pop("--out", None)
    return settings


def _conflict(run_dir: Path, found: Sequence[str], command: Sequence[str]) -> str | None:
    """Why the run in `run_dir` is not this study's run with these settings; None when it is."""
    try:
        stored = json.loads((run_dir / STAMP).read_text())
    except FileNotFoundError:
        return f"{run_dir} holds a run ({', '.join(found)}) that no study started (no {STAMP})"
    except (OSError, ValueError):
        return f"{run_dir / STAMP} is unreadable, so the run in {run_dir} may have other settings"
    if not isinstance(stored, list) or not all(isinstance(w, str) for w in stored):
        return f"{run_dir / STAMP} is not a train command, so the run in {run_dir} may have other settings"
    old, new = _settings(stored), _settings(command)
    differ = [f"{flag} {old.get(flag, 'not given')} there, {new.get(flag, 'not given')} now"
              for flag in sorted(old.keys() | new.keys()) if old.get(flag) != new.get(flag)]
    return f"{run_dir} holds a run with other settings ({'; '.join(differ)})" if differ else None


def _prepare(job: _Job) -> None:
    """The run folder, and its settings stamp when the run starts afresh."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    if "--resume" not in job.command:
        (job.run_dir / STAMP).write_text(json.dumps(job.fresh[1:]))


def _open_log(log_path: Path | str, command: Sequence[str]) -> Any:
    """The run's train.log, opened for appending, headed by the command about to run."""
    log = open(log_path, "a")
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    return log


def _start(job: _Job) -> None:
    _prepare(job)
    job.log = _open_log(job.run_dir / "train.log", job.command)
    job.started = time.perf_counter()
    job.proc = subprocess.Popen(job.command, stdout=job.log, stderr=subprocess.STDOUT, env=child_env(job.threads),
                                stdin=subprocess.DEVNULL)


def _finish(job: _Job, code: int | str, elapsed: float) -> RunResult:
    """Keep the job's wall time (added to earlier attempts' when it resumed), read its result."""
    previous = job.run_dir / "study_wall_s.txt"
    resumed = "--resume" in job.command and previous.exists()
    previous.write_text(f"{elapsed + (float(previous.read_text()) if resumed else 0.0):.3f}")
    result = read_run(job.config.name, job.seed, job.run_dir)
    if result.status != "ok":
        log = job.run_dir / "train.log"
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()] if log.exists() else []
        last = lines[-1].strip()[:200] if lines else "no output"
        how = f"exit {code}" if isinstance(code, int) else code
        result.status = f"failed ({how}: {last}; log {log})"
    return result


def _describe(result: RunResult) -> str:
    if result.status != "ok":
        return result.status
    f = result.final
    return f"test acc {100 * f['test/acc']:.2f}%, trained in {f.get('time/train_s', 0):.1f}s"


class _Progress:
    """A bar across the study's runs (stderr) and one line per finished run (stdout)."""

    def __init__(self, total: int, done: int) -> None:
        from tqdm import tqdm

        self.total, self.finished = total, done
        self.bar = tqdm(total=total, initial=done, unit="run", desc="study", file=sys.stderr, dynamic_ncols=True,
                        leave=False)

    def done(self, result: RunResult, state: str) -> None:
        self.finished += 1
        self.bar.write(f"[{self.finished}/{self.total}] {result.config} seed {result.seed}: {_describe(result)} "
                       f"({state})", file=sys.stdout)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _interrupt(procs: Sequence[subprocess.Popen]) -> None:
    """Ask children to stop (SIGINT: each checkpoints between steps), then kill what is left after 20 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 20
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_jobs(jobs: list[_Job], n_jobs: int, progress: _Progress) -> tuple[list[RunResult], bool]:
    """Run the jobs as local subprocesses, `n_jobs` at a time; (results, interrupted)."""
    queue, running, results = list(jobs), [], []
    try:
        while queue or running:
            while queue and len(running) < n_jobs:
                job = queue.pop(0)
                _start(job)
                running.append(job)
            time.sleep(0.2)
            for job in list(running):
                code = job.proc.poll()
                if code is None:
                    continue
                running.remove(job)
                job.log.close()
                results.append(_finish(job, code, time.perf_counter() - job.started))
                progress.done(results[-1], f"{len(running)} running, {len(queue)} queued")
    except KeyboardInterrupt:
        print(f"\ninterrupted: stopping {len(running)} running job(s)...", flush=True)
        _interrupt([job.proc for job in running])
        for job in running:
            job.log.close()
        return results, True
    return results, False


# ---- the Ray executor -------------------------------------------------------------------------------

RAY_MISSING = 'study: --executor ray needs Ray, which is not installed: pip install -e ".[cluster]"'


def _unblock_sigint() -> None:
    """In the child before exec: Ray workers block SIGINT, and the child would inherit the mask."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def run_command(command: Sequence[str], log_path: str, threads: int) -> tuple[int, float]:
    """One run to its end, output appended to its log; (exit code, seconds). Runs on whichever node Ray picks.

    This node's Python runs it. Ctrl-C or ray.cancel (KeyboardInterrupt here) stops the child at a checkpoint.
    """
    command = [sys.executable, *command[1:]]
    started = time.perf_counter()
    with _open_log(log_path, command) as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env(threads),
                                stdin=subprocess.DEVNULL, preexec_fn=_unblock_sigint)
        try:
            while proc.poll() is None:  # not wait(): ray.cancel's KeyboardInterrupt arrives between bytecodes
                time.sleep(0.2)
        except KeyboardInterrupt:
            _interrupt([proc])
            raise
    return proc.returncode, time.perf_counter() - started


def _probe(address: str | None) -> None:
    """ValueError unless something listens at HOST:PORT (ray.init retries a dead address for minutes)."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in host:
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise ValueError(f"--address {address}: nothing answers there ({err.strerror or err}); start the head "
                         "with `ray start --head` and give its address (docs/SCALING.md)") from None


def connect_ray(address: str | None, threads: int) -> bool:
    """Join the Ray cluster at `address` (None: start a local instance), unless connected; True if joined now.

    ValueError when no cluster answers or no node has `threads` CPUs. Dashboard and usage statistics stay off.
    """
    import ray

    if ray.is_initialized():
        return False
    _probe(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise ValueError(f"--address {address}: no Ray cluster answered ({first}); start one with "
                         "`ray start --head` (docs/SCALING.md)") from None
    largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=0)
    if largest < threads:
        ray.shutdown()
        raise ValueError(f"--threads {threads}: the largest Ray node has {largest:g} CPUs, so no run could start")
    return True


def run_jobs_ray(jobs: list[_Job], limit: int | None, progress: _Progress) -> tuple[list[RunResult], bool]:
    """Run each job as a Ray task reserving `threads` CPUs, at most `limit` in flight; (results, interrupted)."""
    import ray

    task = ray.remote(max_retries=0)(run_command)
    queue, running, results = list(jobs), {}, []
    try:
        while queue or running:
            while queue and (limit is None or len(running) < limit):
                job = queue.pop(0)
                _prepare(job)
                log = str(job.run_dir / "train.log")
                running[task.options(num_cpus=job.threads).remote(job.command, log, job.threads)] = job
            ready, _ = ray.wait(list(running), num_returns=1)
            job = running.pop(ready[0])
            try:
                code, elapsed = ray.get(ready[0])
            except ray.exceptions.RayError as err:
                code, elapsed = f"Ray task failed: {type(err).__name__}", 0.0
            results.append(_finish(job, code, elapsed))
            progress.done(results[-1], f"{len(running)} Ray task(s) in flight, {len(queue)} queued")
    except KeyboardInterrupt:
        print(f"\ninterrupted: cancelling {len(running)} Ray task(s)...", flush=True)
        for ref in running:
            ray.cancel(ref)
        ray.wait(list(running), num_returns=len(running), timeout=30)
        for ref, job in running.items():  # the runs that finished before their cancel arrived
            try:
                code, elapsed = ray.get(ref, timeout=0)
            except ray.exceptions.RayError:
                continue
            results.append(_finish(job, code, elapsed))
        return results, True
    return results, False


# ---- tables and pages -------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def summarize(configs: Sequence[Config], results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Per configuration: test accuracy mean/std over seeds, per-op means, change vs the first, times."""
    rows = []
    base_acc = None
    for k, config in enumerate(configs):
        runs = [r for r in results if r.config == config.name]
        ok = [r for r in runs if r.status == "ok"]
        row: dict[str, Any] = {"config": config.name, "note": config.note, "args": " ".join(config.args),
                               "seeds": sorted(r.seed for r in ok), "failed": sorted(r.seed for r in runs
                                                                                     if r.status != "ok")}
        if ok:
            row["acc_mean"], row["acc_std"] = _mean_std([r.final["test/acc"] for r in ok])
            row["loss_mean"], _ = _mean_std([r.final["test/loss"] for r in ok])
            row["per_op"] = {op: float(np.mean([r.final.get(f"test/acc/{op}", math.nan) for r in ok]))
                             for op in OPS}
            row["train_s"] = _mean_std([r.final.get("time/train_s", math.nan) for r in ok])[0]
            walls = [r.wall_s for r in ok if r.wall_s is not None]
            row["wall_s"] = _mean_std(walls)[0] if walls else None
            row["epochs"] = int(max(r.final.get("epoch", 0) for r in ok))
        if k == 0:
            base_acc = row.get("acc_mean")
        if base_acc is not None and "acc_mean" in row:
            row["delta"] = row["acc_mean"] - base_acc
        rows.append(row)
    return rows


def _pct(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a markdown table (accuracies in %, change in percentage points vs the first row)."""
    head = ["config", "test acc % (mean ± std)", *OPS, "Δ vs baseline (pp)", "seeds", "train s/run",
            "wall s/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for i, r in enumerate(rows):
        if "acc_mean" not in r:
            failed = "failed: " + ", ".join(f"seed {s}" for s in r["failed"])
            lines.append("| " + " | ".join([r["config"], failed, *["—"] * (len(head) - 2)]) + " |")
            continue
        delta = "baseline" if i == 0 else f"{100 * r['delta']:+.1f}"
        seeds = ",".join(map(str, r["seeds"])) + (f" (failed: {r['failed']})" if r["failed"] else "")
        cells = [r["config"], f"{100 * r['acc_mean']:.1f} ± {100 * r['acc_std']:.1f}",
                 *(_pct(r["per_op"][op]) for op in OPS), delta, seeds, f"{r['train_s']:.0f}",
                 "—" if r.get("wall_s") is None else f"{r['wall_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _curves_png(configs: Sequence[Config], results: Sequence[RunResult], path: Path) -> Path | None:
    """Validation accuracy and loss per epoch, mean over seeds with a min-max band, one colour per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    drawn = False
    for i, config in enumerate(configs):
        curves = [r.curve for r in results if r.config == config.name and r.curve]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        epochs = np.array([c[0] for c in curves[0][:n]])
        color = plt.get_cmap("tab10")(i % 10)
        for ax, col in ((axes[0], 1), (axes[1], 2)):
            values = np.array([[row[col] for row in c[:n]] for c in curves])
            ax.plot(epochs, values.mean(axis=0), color=color, label=config.name)
            if len(curves) > 1:
                ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=color, alpha=0.15)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    axes[0].axhline(0.1, color="grey", ls="--", lw=1, label="chance")
    axes[0].set(title="validation accuracy (mean over seeds, band = min..max)", xlabel="epoch",
                ylim=(0, 1.02))
    axes[1].axhline(math.log(20), color="grey", ls="--", lw=1, label="chance (ln 20)")
    axes[1].set(title="validation loss", xlabel="epoch", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_outputs(name: str, out: Path, configs: Sequence[Config], results: Sequence[RunResult],
                  command: str) -> Path:
    """results.md, results.json and index.html in `out`; returns the markdown path."""
    rows = summarize(configs, results)
    table = markdown_table(rows)
    notes = "\n".join(f"- `{c.name}`: {c.note}" + (f" (`{' '.join(c.args)}`)" if c.args else "")
                      for c in configs)
    md = (f"# Study: {name}\n\nCommand: `{command}`\n\n"
          "Test accuracy on held-out inputs at the end of training; "
          f"per-operation columns are means over seeds; Δ is in percentage points vs the first row.\n\n"
          f"{table}\n\nConfigurations:\n\n{notes}\n")
    (out / "results.md").write_text(md)
    raw = [{"config": r.config, "seed": r.seed, "status": r.status, "wall_s": r.wall_s, "final": r.final}
           for r in results]
    (out / "results.json").write_text(json.dumps({"study": name, "summary": rows, "runs": raw}, indent=1))
    png = _curves_png(configs, results, out / "val_curves.png")
    img = ""
    if png is not None:
        img = f'<img alt="validation curves" src="data:image/png;base64,' \
              f'{base64.b64encode(png.read_bytes()).decode("ascii")}">'
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Study: {html.escape(name)}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em}"
            "img{max-width:100%}</style></head><body>"
            f"<h1>Study: {html.escape(name)}</h1><p><code>{html.escape(command)}</code></p>{img}"
            f"{_html_table(table)}<ul>"
            + "".join(f"<li><b>{html.escape(c.name)}</b>: {html.escape(c.note)}</li>" for c in configs)
            + "</ul></body></html>")
    (out / "index.html").write_text(page)
    return out / "results.md"


def _html_table(markdown: str) -> str:
    """The markdown table as an HTML table (header row, then body rows)."""
    lines = [ln.strip().strip("|").split("|") for ln in markdown.splitlines()]
    head, body = lines[0], lines[2:]
    cells = "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{cells}</tr>{rows}</table>"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transformer.study", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=STUDIES)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per configuration: 0..N-1 (default 1)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs per run (default 50, the seed config)")
    parser.add_argument("--jobs", type=int, help="runs at a time (local default 2, one per core; ray default: "
                                                 "as many as the cluster's CPUs allow)")
    parser.add_argument("--threads", type=int, default=1, help="kernel threads per run, reserved as CPUs by a "
                                                               "Ray task (default 1)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local subprocesses (default), or Ray tasks (pip install -e \".[cluster]\")")
    parser.add_argument("--address", help="with --executor ray: the cluster to join, auto or HOST:PORT "
                                          "(default: start a local Ray instance)")
    parser.add_argument("--out", help="output folder (default runs/study-NAME)")
    parser.add_argument("--configs", help="only these configurations (comma-separated names)")
    parser.add_argument("--train-size", type=int, help="training examples for every run (the datasize study "
                                                      "sets its own)")
    args = parser.parse_args(argv)
    counts = (args.seeds, args.epochs, args.threads, 1 if args.jobs is None else args.jobs,
              1 if args.train_size is None else args.train_size)
    if min(counts) < 1:
        parser.error("--seeds, --epochs, --jobs, --threads and --train-size must be >= 1")
    if args.address is not None and args.executor != "ray":
        parser.error("--address joins a Ray cluster: give it with --executor ray")
    configs = study_configs(args.name, args.epochs)
    if args.configs:
        wanted = args.configs.split(",")
        unknown = sorted(set(wanted) - {c.name for c in configs})
        if unknown:
            parser.error(f"--configs: unknown {unknown}; {args.name} has {[c.name for c in configs]}")
        configs = [c for c in configs if c.name in wanted]
    out = Path(args.out or f"runs/study-{args.name}")
    base_args = ["--train-size", str(args.train_size)] if args.train_size is not None else []
    seeds = list(range(args.seeds))
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        print(RAY_MISSING, file=sys.stderr)
        return 2
    try:
        make_folder(out, "--out")
        jobs, done = plan_jobs(configs, seeds, out, args.epochs, base_args, args.threads)
        joined = args.executor == "ray" and connect_ray(args.address, args.threads)
    except ValueError as err:
        print(f"study: {err}", file=sys.stderr)
        return 2
    total = len(jobs) + len(done)
    where = (f"{args.jobs or 2} at a time" if args.executor == "local" else
             f"Ray tasks of {args.threads} CPU(s)" + (f", {args.jobs} at a time" if args.jobs else ""))
    print(f"study {args.name}: {len(configs)} configurations x {len(seeds)} seeds x {args.epochs} epochs = "
          f"{total} runs ({len(done)} already done), {where} -> {out}", flush=True)
    progress = _Progress(total, len(done))
    try:
        if args.executor == "local":
            new, interrupted = run_jobs(jobs, args.jobs or 2, progress)
        else:
            new, interrupted = run_jobs_ray(jobs, args.jobs, progress)
    finally:
        progress.close()
        if joined:
            import ray

            ray.shutdown()
    results = done + new
    command = "python -m transformer.study " + " ".join(argv if argv is not None else sys.argv[1:])
    path = write_outputs(args.name, out, configs, results, command)
    print(f"results: {path}\npage: {out / 'index.html'}", flush=True)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
