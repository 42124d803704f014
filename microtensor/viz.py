"""Draw the autograd graph behind a tensor with graphviz, optionally grouped by the module that made each op.

    loss = F.cross_entropy(model(x), y)
    mt.viz.draw_graph(loss, params=model).render("graph", format="svg")

    with mt.viz.trace_modules(model) as trace:     # remember which module made each op
        loss = F.cross_entropy(model(x), y)
    mt.viz.draw_graph(loss, params=model, trace=trace, collapse_modules=True, max_depth=2)

Tracing patches the `forward` of each module instance only inside the `with`
block, so training code pays nothing for it. `backward()` frees the graph:
draw before it, or call `backward(retain_graph=True)` (then
`show_grad_norms=True` shows each parameter's gradient norm).
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .autograd import Function
from .nn.module import Module
from .tensor import Tensor

__all__ = ["GraphSummary", "ModuleTrace", "draw_graph", "summarize_graph", "trace_modules"]

_OP_COLOR = "#dbe9f6"
_PARAM_COLOR = "#fdf1c7"
_CONST_COLOR = "#eeeeee"
_MODULE_COLOR = "#fbe0c8"


def _tensors_in(obj: Any) -> Iterator[Tensor]:
    """Every Tensor inside nested tuples, lists and dicts (a forward's arguments or results)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors_in(item)


def _is_within(tag: str, path: str) -> bool:
    """True when module `tag` is `path` itself or nested inside it ("" is the root, holding all)."""
    return path == "" or tag == path or tag.startswith(path + ".")


class ModuleTrace:
    """Remembers, for every op recorded while active, the dotted path of the innermost module that made it.

    When a module's forward returns, the ops reachable from its outputs that no
    inner module has claimed, stopping at the ops that made its inputs, are
    tagged with its path. Use it through `trace_modules(model)`.
    """

    def __init__(self, model: Module) -> None:
        self.model = model
        self.module_of: dict[int, str] = {}
        self.class_of: dict[str, str] = {name: type(m).__name__ for name, m in model.named_modules()}
        self._nodes: list[Function] = []
        self._patched: list[tuple[Module, Any]] = []

    def __enter__(self) -> ModuleTrace:
        for path, module in self.model.named_modules():
            previous = module.__dict__.get("forward")
            object.__setattr__(module, "forward", self._wrap(path, module.forward))
            self._patched.append((module, previous))
        return self

    def __exit__(self, *exc: object) -> None:
        for module, previous in reversed(self._patched):
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                object.__setattr__(module, "forward", previous)
        self._patched.clear()

    def module_path(self, node: Function) -> str | None:
        """The path of the module that made `node`, or None when no traced module did."""
        return self.module_of.get(id(node))

    def _wrap(self, path: str, forward: Any) -> Any:
        """A forward that tags the ops it created with `path` after running the original."""

        def traced_forward(*args: Any, **kwargs: Any) -> Any:
            out = forward(*args, **kwargs)
            stops = {id(t._ctx) for t in _tensors_in((args, kwargs)) if t._ctx is not None}
            self._claim(out, path, stops)
            return out

        return traced_forward

    def _claim(self, out: Any, path: str, stops: set[int]) -> None:
        """Tag the untagged ops behind `out` with `path`, walking through ops of inner modules."""
        stack = [t._ctx for t in _tensors_in(out) if t._ctx is not None]
        seen: set[int] = set()
        while stack:
            node = stack.pop()
            key = id(node)
            if key in seen or key in stops:
                continue
            seen.add(key)
            tag = self.module_of.get(key)
            if tag is None:
                self.module_of[key] = path
                self._nodes.append(node)
            elif not _is_within(tag, path):
                continue
            stack.extend(p for p in getattr(node, "parents", ()) if isinstance(p, Function))


def trace_modules(model: Module) -> ModuleTrace:
    """Context manager recording which module of `model` made each op (for clustered or collapsed graphs)."""
    return ModuleTrace(model)


@dataclass
class GraphSummary:
    """The graph behind a tensor: op nodes, leaf tensors, and data-flow edges between them."""

    ops: list[Function] = field(default_factory=list)
    leaves: list[Tensor] = field(default_factory=list)
    edges: list[tuple[int, int, tuple]] = field(default_factory=list)


def summarize_graph(tensor: Tensor) -> GraphSummary:
    """Walk `tensor._ctx` back to the leaves once (iteratively); every node and edge in data-flow order."""
    summary = GraphSummary()
    root = tensor._ctx
    if root is None:
        summary.leaves.append(tensor)
        return summary
    if not hasattr(root, "parents"):
        raise ValueError(
            "draw_graph: the graph behind this tensor was freed by backward(); draw it before calling "
            "backward, or call backward(retain_graph=True)"
        )
    seen: set[int] = {id(root)}
    leaf_ids: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        summary.ops.append(node)
        for parent in getattr(node, "parents", ()):  # a node, a leaf or constant tensor, or None
            if isinstance(parent, Function):
                summary.edges.append((id(parent), id(node), parent._shape))
                if id(parent) not in seen:
                    seen.add(id(parent))
                    stack.append(parent)
            elif isinstance(parent, Tensor):
                summary.edges.append((id(parent), id(node), parent.shape))
                if id(parent) not in leaf_ids:
                    leaf_ids.add(id(parent))
                    summary.leaves.append(parent)
    summary.edges.reverse()
    return summary


def _param_names(params: Module | Mapping[str, Tensor] | None) -> dict[int, str]:
    """id(parameter) -> dotted name, from a Module or a {name: tensor} mapping."""
    if params is None:
        return {}
    items = params.named_parameters() if isinstance(params, Module) else params.items()
    return {id(t): name for name, t in items}


def _truncate(path: str, depth: int | None) -> str:
    """Keep the first `depth` named components of a module path; list indices ride along for free."""
    if depth is None or not path:
        return path
    kept: list[str] = []
    named = 0
    for part in path.split("."):
        if part.isdigit():
            kept.append(part)
            continue
        if named == depth:
            break
        kept.append(part)
        named += 1
    return ".".join(kept)


def _shape_str(shape: tuple) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ")"


def _norm(grad: Tensor | None) -> str:
    return "no grad" if grad is None else f"|g| {float(np.linalg.norm(grad.data)):.3g}"


class _Builder:
    """Turns a GraphSummary into node and edge statements, and groups them into nested clusters."""

    def __init__(
        self,
        summary: GraphSummary,
        names: dict[int, str],
        trace: ModuleTrace | None,
        show_grad_norms: bool,
        max_depth: int | None,
    ) -> None:
        self.summary = summary
        self.names = names
        self.trace = trace
        self.show_grad_norms = show_grad_norms
        self.max_depth = max_depth
        self.node_id: dict[int, str] = {}
        self.members: dict[str, list[tuple[str, dict[str, str]]]] = {}

    def op_module(self, node: Function) -> str:
        """Module path of an op (truncated), "" when unknown or made at the top level."""
        if self.trace is None:
            return ""
        return _truncate(self.trace.module_path(node) or "", self.max_depth)

    def has_own_submodules(self, node: Function, path: str) -> bool:
        """True for an op made by a module's own code (a residual add) when that module has submodules.

        Such ops stay separate nodes when collapsing: folding them into their
        module would draw a cycle between the module and its children.
        """
        if self.trace is None or self.trace.module_path(node) != path:
            return False
        named = sum(1 for part in path.split(".") if not part.isdigit())
        if self.max_depth is not None and named >= self.max_depth:
            return False
        return any(p.startswith(path + ".") for p in self.trace.class_of)

    def leaf_module(self, leaf: Tensor) -> str:
        """Module path of a parameter (its name without the last part), "" for other leaves."""
        name = self.names.get(id(leaf))
        if name is None or "." not in name:
            return ""
        return _truncate(name.rsplit(".", 1)[0], self.max_depth)

    def op_label(self, node: Function) -> str:
        return f"{type(node).__name__}\n{_shape_str(node._shape)} {node._dtype}"

    def leaf_label(self, leaf: Tensor) -> str:
        name = self.names.get(id(leaf))
        kind = name or ("input" if leaf.requires_grad else "constant")
        lines = [kind, f"{_shape_str(leaf.shape)} {leaf.dtype}"]
        if self.show_grad_norms and leaf.requires_grad:
            lines.append(_norm(leaf.grad))
        return "\n".join(lines)

    def add(self, group: str, key: int, name: str, attrs: dict[str, str]) -> None:
        self.node_id[key] = name
        self.members.setdefault(group, []).append((name, attrs))

    def op_nodes(self, root: Function | None) -> None:
        """One box per op, the root drawn bold."""
        for i, node in enumerate(self.summary.ops):
            attrs = {"label": self.op_label(node), "fillcolor": _OP_COLOR}
            if node is root:
                attrs["penwidth"] = "2.5"
            self.add(self.op_module(node), id(node), f"op{i}", attrs)

    def leaf_nodes(self, skip: set[int]) -> None:
        """One box per leaf tensor: parameters by name, other inputs as constants."""
        for i, leaf in enumerate(self.summary.leaves):
            if id(leaf) in skip:
                continue
            color = _PARAM_COLOR if leaf.requires_grad else _CONST_COLOR
            attrs = {"label": self.leaf_label(leaf), "fillcolor": color, "style": "rounded,filled"}
            self.add(self.leaf_module(leaf), id(leaf), f"leaf{i}", attrs)


def _group_label(builder: _Builder, path: str, ops: list[Function], params: list[Tensor]) -> str:
    """What a collapsed module node says: its path, class, op and parameter counts, output and grad norm."""
    cls = builder.trace.class_of.get(path, "") if builder.trace is not None else ""
    n_params = sum(p.data.size for p in params)
    lines = [f"{path}  {cls}".strip(), f"{len(ops)} ops, {n_params:,} params"]
    if builder.show_grad_norms and params:
        grads = [p.grad.data for p in params if p.grad is not None]
        total = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads)))
        lines.append(f"|g| {total:.3g}" if grads else "no grad")
    return "\n".join(lines)


def _collapse(builder: _Builder, root: Function | None) -> None:
    """One node per module (ops and own parameters folded in); ops outside any module stay as they are."""
    summary = builder.summary
    groups: dict[str, list[Function]] = {}
    loose: list[tuple[int, Function]] = []
    for i, node in enumerate(summary.ops):
        path = builder.op_module(node)
        if path and not builder.has_own_submodules(node, path):
            groups.setdefault(path, []).append(node)
        else:
            loose.append((i, node))
    folded: dict[str, list[Tensor]] = {path: [] for path in groups}
    for leaf in summary.leaves:
        path = builder.leaf_module(leaf)
        if path in folded:
            folded[path].append(leaf)
    for j, (path, ops) in enumerate(groups.items()):
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        attrs = {"label": _group_label(builder, path, ops, folded[path]), "fillcolor": _MODULE_COLOR,
                 "shape": "box3d"}
        if root in ops:
            attrs["penwidth"] = "2.5"
        builder.add(parent, id(ops[0]), f"mod{j}", attrs)
        for node in ops[1:]:
            builder.node_id[id(node)] = f"mod{j}"
        for leaf in folded[path]:
            builder.node_id[id(leaf)] = f"mod{j}"
    for i, node in loose:
        attrs = {"label": builder.op_label(node), "fillcolor": _OP_COLOR}
        if node is root:
            attrs["penwidth"] = "2.5"
        builder.add(builder.op_module(node), id(node), f"op{i}", attrs)
    builder.leaf_nodes(skip={id(leaf) for leaves in folded.values() for leaf in leaves})


def _emit(graph: Any, builder: _Builder, cluster: bool, trace: ModuleTrace | None) -> None:
    """Write node statements, nested into one cluster per module path when `cluster` is on."""
    import graphviz

    if not cluster:
        for members in builder.members.values():
            for name, attrs in members:
                graph.node(name, **attrs)
        return
    paths = {p for p in builder.members if p}
    for p in list(paths):
        parts = p.split(".")
        paths.update(".".join(parts[:k]) for k in range(1, len(parts)))

    def children(path: str) -> list[str]:
        depth = 0 if path == "" else path.count(".") + 1
        return sorted(p for p in paths if p.count(".") == depth and _is_within(p, path) and p != path)

    def fill(target: Any, path: str) -> None:
        for name, attrs in builder.members.get(path, []):
            target.node(name, **attrs)
        for child in children(path):
            sub = graphviz.Digraph(name="cluster_" + child.replace(".", "_"))
            cls = trace.class_of.get(child, "") if trace is not None else ""
            sub.attr(label=f"{child}  {cls}".strip(), style="rounded", color="#999999", fontsize="10")
            fill(sub, child)
            target.subgraph(sub)

    fill(graph, "")


def draw_graph(
    tensor: Tensor,
    *,
    params: Module | Mapping[str, Tensor] | None = None,
    trace: ModuleTrace | None = None,
    show_grad_norms: bool = False,
    cluster_by_module: bool = False,
    collapse_modules: bool = False,
    max_depth: int | None = None,
    rankdir: str = "TB",
    title: str | None = None,
) -> Any:
    """A graphviz.Digraph of the ops that produced `tensor`, inputs at the top, `tensor` at the bottom.

    One node per op (name, output shape, dtype) and per leaf tensor (parameter
    name when `params` names it, shape). `cluster_by_module` and
    `collapse_modules` need the `trace` of a `trace_modules(model)` block around
    the forward pass; `max_depth` cuts module paths to that many named parts
    (`blocks.0.attn.q` at depth 2 is `blocks.0.attn`).
    """
    try:
        import graphviz
    except ImportError as exc:
        raise ImportError("draw_graph needs the graphviz package: pip install graphviz") from exc
    if not isinstance(tensor, Tensor):
        raise TypeError(f"draw_graph: expected a Tensor, got {type(tensor).__name__}")
    if (cluster_by_module or collapse_modules) and trace is None:
        raise ValueError(
            "draw_graph: cluster_by_module/collapse_modules need trace=..., from "
            "`with mt.viz.trace_modules(model) as trace:` around the forward pass"
        )
    if trace is not None and params is None:
        params = trace.model
    summary = summarize_graph(tensor)
    builder = _Builder(summary, _param_names(params), trace, show_grad_norms, max_depth)
    root = tensor._ctx
    if collapse_modules:
        _collapse(builder, root)
    else:
        builder.op_nodes(root)
        builder.leaf_nodes(skip=set())
    graph = graphviz.Digraph("microtensor")
    graph.attr(rankdir=rankdir, fontname="Helvetica", newrank="true")
    if title:
        graph.attr(label=html.escape(title), labelloc="t", fontsize="14")
    graph.attr("node", shape="box", style="filled", fontname="Helvetica", fontsize="9", margin="0.08,0.03")
    graph.attr("edge", color="#555555", arrowsize="0.6", fontsize="8", fontname="Helvetica")
    _emit(graph, builder, cluster_by_module, trace)
    drawn: set[tuple[str, str]] = set()
    for src, dst, shape in summary.edges:
        a, b = builder.node_id.get(src), builder.node_id.get(dst)
        if a is None or b is None or a == b:
            continue
        if collapse_modules:
            if (a, b) in drawn:
                continue
            drawn.add((a, b))
            graph.edge(a, b, label=_shape_str(shape))
        else:
            graph.edge(a, b)
    return graph
