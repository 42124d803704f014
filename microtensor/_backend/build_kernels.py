"""cffi builder (API, out-of-line mode) for the C kernels in csrc/.

setup.py names `ffibuilder` in `cffi_modules`, so `pip install -e .` compiles
`microtensor._backend._kernels`. No `-march=native` and no fast-math at link
time: the kernels pick their instruction set at run time, and a fast-math link
would make the loaded library flush subnormals for the whole Python process.
`MICROTENSOR_SANITIZE=1` builds with AddressSanitizer and UndefinedBehaviorSanitizer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"

COMPILE_ARGS = [
    "-std=gnu99",
    "-O3",
    "-fopenmp-simd",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fno-finite-math-only",
    "-Wall",
    "-Wextra",
]
SANITIZE_ARGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all", "-g"]


def header_declarations() -> str:
    """The kernel declarations of csrc/microtensor.h, without preprocessor lines, for ffi.cdef."""
    text = (CSRC / "microtensor.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def sanitizing() -> bool:
    """Whether MICROTENSOR_SANITIZE asks for an ASan+UBSan build."""
    return os.environ.get("MICROTENSOR_SANITIZE", "") not in ("", "0")


def make_builder() -> FFI:
    """An FFI object that compiles every csrc/*.c into microtensor._backend._kernels.

    Paths are relative to the repository root, where setup.py runs (setuptools refuses absolute ones).
    """
    builder = FFI()
    builder.cdef(header_declarations())
    compile_args = list(COMPILE_ARGS)
    link_args: list[str] = ["-pthread"]
    if sanitizing():
        compile_args += SANITIZE_ARGS
        link_args += SANITIZE_ARGS
    builder.set_source(
        "microtensor._backend._kernels",
        '#include "microtensor.h"',
        sources=[p.relative_to(ROOT).as_posix() for p in sorted(CSRC.glob("*.c"))],
        include_dirs=["csrc"],
        extra_compile_args=compile_args + ["-pthread"],
        extra_link_args=link_args,
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
