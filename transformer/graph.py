"""Render the seed transformer's loss graph: `python -m transformer.graph --out graph.svg [--collapse]`.

One forward and backward of the seed model on a small batch, traced by
module, drawn with `microtensor.viz.draw_graph`: every op, or with
`--collapse` one node per attention/FFN/LayerNorm module so the whole
training step fits on one page. The format follows the extension of --out
(svg, png, pdf, or dot for the DOT source). Without the `dot` program the
DOT source is still written, next to the requested path.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import microtensor as mt
import microtensor.nn.functional as F

from .data import encode_batch
from .files import make_folder
from .model import ModelConfig, Transformer

FORMATS = ("svg", "png", "pdf", "dot", "gv")
BATCH = ("Max(5,3,9)", "First(5,3,9)", "Min(7,1,9)", "Last(6,0,3)")
INSTALL_HINT = (
    "the graphviz `dot` program is not installed, so only the DOT source was written.\n"
    "  Install it with `make graphviz`, `sudo apt-get install graphviz` (Debian/Ubuntu) or "
    "`brew install graphviz` (macOS),\n  or paste the DOT source into an online viewer."
)


def loss_graph(
    collapse: bool = False, config: ModelConfig | None = None, grad_norms: bool = True, seed: int = 0
) -> tuple[Any, mt.Tensor, Transformer]:
    """(graphviz.Digraph, loss, model) of one training step of the seed model on a 4-example batch."""
    model = Transformer(config or ModelConfig(), np.random.default_rng(seed))
    model.train()
    batch = encode_batch(list(BATCH))
    with mt.viz.trace_modules(model) as trace:
        loss = F.cross_entropy(model(batch.ids, batch.mask), batch.targets)
    if grad_norms:
        loss.backward(retain_graph=True)
    title = (f"Seed transformer, loss of a {len(BATCH)}-example batch "
             f"({model.num_parameters():,} parameters){' - modules collapsed' if collapse else ''}")
    graph = mt.viz.draw_graph(
        loss, trace=trace, show_grad_norms=grad_norms, cluster_by_module=True, collapse_modules=collapse,
        max_depth=2 if collapse else None, title=title,
    )
    return graph, loss, model


def write_graph(graph: Any, out: Path) -> tuple[Path, bool]:
    """Write `graph` in the format of out's extension; (path written, rendered). DOT source without `dot`.

    ValueError naming --out when it cannot be written (under a file, no permission, a folder).
    """
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"--out {out}: unknown format {out.suffix!r}; use one of {', '.join(FORMATS)}")
    make_folder(out.parent, "--out", out)
    if fmt in ("dot", "gv"):
        path, data = out, graph.source.encode()
    elif shutil.which("dot") is None:
        path, data = out.with_suffix(".dot"), graph.source.encode()
    else:
        path, data = out, graph.pipe(format=fmt)
    try:
        path.write_bytes(data)
    except OSError as err:
        raise ValueError(f"--out {path}: cannot write it ({err.strerror}); choose another --out") from None
    return path, path == out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transformer.graph", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="graph.svg", help="output: .svg, .png, .pdf or .dot")
    parser.add_argument("--collapse", action="store_true", help="one node per module (readable on one page)")
    parser.add_argument("--n-blocks", type=int, default=None, help="blocks (default: the seed's 2)")
    parser.add_argument("--no-grad-norms", action="store_true", help="skip backward (no gradient norms)")
    args = parser.parse_args(argv)
    try:
        config = ModelConfig() if args.n_blocks is None else ModelConfig(n_blocks=args.n_blocks)
        graph, _, _ = loss_graph(args.collapse, config, grad_norms=not args.no_grad_norms)
        path, rendered = write_graph(graph, Path(args.out))
    except ValueError as exc:
        print(f"graph: {exc}", file=sys.stderr)
        return 2
    ops = sum(1 for line in graph.body if line.lstrip().startswith(("op", "mod")) and "->" not in line)
    print(f"graph: {path} ({ops} op/module nodes)")
    if not rendered:
        print(INSTALL_HINT, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
