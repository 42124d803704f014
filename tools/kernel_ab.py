"""A/B of two builds of the C kernels in one process: a product timed on each build in turn.

    python tools/kernel_ab.py fwd 2048 384 1536 [--base HEAD] [--new REV] [--threads 1] [--rounds 21]

Builds csrc/ at `--base` (a git revision) and at `--new` (default: the working tree) as shared libraries,
loads both and an identical copy of the base into this process, and runs one product on each in turn, every
round in a rotated order (best of three calls each). It prints each build's median GFLOP/s and the median of
the per-round time ratio to the base: the copy's ratio is the noise floor. On a shared machine whose speed
drifts by 10-50% within minutes, runs of separate processes cannot resolve a change of a few percent; the
rounds here share the drift. It also prints the largest difference of each build's result from the base's.
With --cold every call starts with the operands out of the caches, as a backward pass finds the activations
saved long before (the operands of a benchmark that calls one product again and again stay in L3).

Products (dimensions in the order given): fwd N IN OUT, linear's forward x (N, IN) @ w (OUT, IN)^T + b;
dx / dw / bwd N IN OUT, its backward's dx, dw or all three gradients; nn M K N, sgemm A (M, K) @ B (K, N).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import io
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from microtensor._backend.build_kernels import COMPILE_ARGS  # noqa: E402 - the package's own compile flags

PRODUCTS = ("fwd", "dx", "dw", "bwd", "nn")
_P = ctypes.POINTER(ctypes.c_float)


def sources(rev: str | None, into: Path) -> Path:
    """csrc/ at git revision `rev` (the working tree's for None), copied under `into`."""
    if rev is None:
        return Path(shutil.copytree(ROOT / "csrc", into / "csrc"))
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "csrc"], capture_output=True)
    if tar.returncode:
        raise SystemExit(f"kernel_ab: no csrc/ at revision {rev!r}: {tar.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into / "csrc"


def build(src: Path, out: Path) -> Path:
    """src/*.c compiled with the package's flags (one file per core at once) and linked into `out`."""
    def compile_one(c: Path) -> Path:
        obj = c.with_suffix(".o")
        run = subprocess.run(["cc", *COMPILE_ARGS, "-fPIC", "-pthread", f"-I{src}", "-c", str(c), "-o", str(obj)],
                             capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"kernel_ab: {c.name} does not compile:\n{run.stderr.strip()}")
        return obj

    with ThreadPoolExecutor() as pool:
        objects = list(pool.map(compile_one, sorted(src.glob("*.c"))))
    subprocess.run(["cc", "-shared", "-pthread", *map(str, objects), "-o", str(out), "-lm"], check=True)
    return out


def digest(src: Path) -> str:
    """SHA-256 of a csrc/ folder's files: two revisions with the same kernels share one build."""
    h = hashlib.sha256()
    for path in sorted(src.iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def libraries(base: str, new: str | None, work: Path) -> dict[str, ctypes.CDLL]:
    """The base build, the new one and a copy of the base (another file, so dlopen loads it again)."""
    built: dict[str, Path] = {}
    paths = {}
    for name, rev in (("base", base), ("new", new)):
        src = sources(rev, work / name)
        key = digest(src)
        if key not in built:
            print(f"kernel_ab: building {name} ({rev or 'working tree'})", file=sys.stderr)
            built[key] = build(src, work / f"{name}.so")
        paths[name] = built[key]
    paths["base copy"] = Path(shutil.copy(paths["base"], work / "base_copy.so"))
    if paths["new"] == paths["base"]:
        paths["new"] = Path(shutil.copy(paths["base"], work / "new.so"))
    return {name: ctypes.CDLL(str(path)) for name, path in paths.items()}


def operands(product: str, dims: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Random inputs and zeroed outputs for one product, float32."""
    rng = np.random.default_rng(0)
    a, b, c = dims

    def rand(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    if product == "nn":
        return {"A": rand(a, b), "B": rand(b, c), "C": np.zeros((a, c), np.float32)}
    n, i, o = dims
    return {"x": rand(n, i), "w": rand(o, i), "b": rand(o), "g": rand(n, o), "y": np.zeros((n, o), np.float32),
            "dx": np.zeros((n, i), np.float32), "dw": np.zeros((o, i), np.float32), "db": np.zeros(o, np.float32)}


def call_of(lib: ctypes.CDLL, product: str, dims: tuple[int, int, int], arrays: dict) -> tuple[Callable, list]:
    """A closure running the product on `lib`, and the arrays it writes."""
    p = {k: v.ctypes.data_as(_P) for k, v in arrays.items()}
    a, b, c = (ctypes.c_int64(d) for d in dims)
    if product == "nn":
        lib.mt_sgemm.argtypes = [ctypes.c_int, ctypes.c_int, *[ctypes.c_int64] * 3, ctypes.c_float, _P,
                                 ctypes.c_int64, _P, ctypes.c_int64, ctypes.c_float, _P, ctypes.c_int64]
        return (lambda: lib.mt_sgemm(0, 0, a, c, b, 1.0, p["A"], b, p["B"], c, 0.0, p["C"], c)), [arrays["C"]]
    if product == "fwd":
        return (lambda: lib.mt_linear_forward(p["x"], p["w"], p["b"], p["y"], a, b, c)), [arrays["y"]]
    wanted = {"dx": ("dx",), "dw": ("dw",), "bwd": ("dx", "dw", "db")}[product]
    out = [p[k] if k in wanted else None for k in ("dx", "dw", "db")]
    return (lambda: lib.mt_linear_backward(p["g"], p["x"], p["w"], *out, 0, a, b, c)), [arrays[k] for k in wanted]


def flops(product: str, dims: tuple[int, int, int]) -> float:
    """Floating-point operations of one product (two per multiply-add; bwd's dx and dw)."""
    return 2.0 * dims[0] * dims[1] * dims[2] * (2 if product == "bwd" else 1)


def evict_caches() -> Callable[[], None]:
    """A function that writes 4x the last-level cache (64 MB where sysfs does not say), pushing everything out."""
    size = 16 << 20
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        text = (index / "size").read_text().strip() if (index / "size").exists() else ""
        if text[:-1].isdigit() and text[-1] in "KM":
            size = max(size, int(text[:-1]) << (10 if text[-1] == "K" else 20))
    buffer = np.zeros(size, np.float32)  # 4 bytes a float: 4x the cache
    return lambda: buffer.fill(buffer[0] + 1)


def timed_rounds(calls: dict[str, Callable], rounds: int, before: Callable[[], None] = lambda: None,
                 ) -> dict[str, list[float]]:
    """Seconds of each call per round (best of three, each after `before`), the calls of a round rotated."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            best = float("inf")
            for _ in range(3):
                before()
                start = time.perf_counter()
                calls[name]()
                best = min(best, time.perf_counter() - start)
            times[name].append(best)
    return times


def ratios(times: dict[str, list[float]], base: str = "base") -> dict[str, tuple[float, float, float]]:
    """Quartiles (25%, median, 75%) of each build's per-round time over the base's in the same round."""
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles([t / b for t, b in zip(ts, times[base])], n=4, method="inclusive")
        out[name] = (q[0], q[1], q[2])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kernel_ab.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("product", choices=PRODUCTS)
    parser.add_argument("dims", type=int, nargs=3, metavar="D", help="three dimensions (see below)")
    parser.add_argument("--base", default="HEAD", help="git revision of the base build (default HEAD)")
    parser.add_argument("--new", default=None, help="git revision of the new build (default: the working tree)")
    parser.add_argument("--threads", type=int, default=1, help="threads of every build (default 1)")
    parser.add_argument("--rounds", type=int, default=21, help="rounds, at least 2 (default 21)")
    parser.add_argument("--cold", action="store_true", help="evict the caches before every call")
    args = parser.parse_args(argv)
    if min(args.dims) < 1 or args.threads < 1 or args.rounds < 2:
        parser.error("dimensions and threads must be >= 1 and rounds >= 2")
    dims = tuple(args.dims)
    with tempfile.TemporaryDirectory(prefix="kernel_ab_") as work:
        libs = libraries(args.base, args.new, Path(work))
        arrays = {name: operands(args.product, dims) for name in libs}
        calls, results = {}, {}
        for name, lib in libs.items():
            lib.mt_set_num_threads(args.threads)
            calls[name], results[name] = call_of(lib, args.product, dims, arrays[name])
        times = timed_rounds(calls, args.rounds, evict_caches() if args.cold else lambda: None)
    spread = ratios(times)
    print(f"{args.product} {' x '.join(map(str, dims))}, {args.threads} thread(s), {args.rounds} rounds"
          f"{', cold' if args.cold else ''} "
          f"(base {args.base}, new {args.new or 'working tree'}):")
    for name in libs:
        gflops = flops(args.product, dims) / statistics.median(times[name]) / 1e9
        diff = max(float(np.max(np.abs(r - b), initial=0.0)) for r, b in zip(results[name], results["base"]))
        lo, mid, hi = spread[name]
        print(f"  {name:9s} {gflops:8.1f} GFLOP/s  time / base {mid:.3f} (quartiles {lo:.3f}-{hi:.3f})  "
              f"largest difference from base {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
