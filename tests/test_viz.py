"""microtensor.viz and transformer.graph: the drawn graph has exactly the ops the engine recorded."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn as nn
import microtensor.nn.functional as F

pytest.importorskip("graphviz")

from microtensor import viz  # noqa: E402


def engine_ops(t: mt.Tensor) -> set[int]:
    """The unique Function nodes behind t, found by walking `._ctx.parents` (independently of viz)."""
    seen: set[int] = set()
    stack = [t._ctx] if t._ctx is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(p for p in node.parents if isinstance(p, mt.autograd.Function))
    return seen


def op_node_count(graph) -> int:
    return sum(1 for line in graph.body if re.match(r"\s*op\d+ \[", line))


def leaf_labels(graph) -> list[str]:
    return [line for line in graph.body if re.match(r"\s*leaf\d+ \[", line)]


def small_graph() -> tuple[mt.Tensor, dict[str, mt.Tensor]]:
    x = mt.tensor(np.arange(6, dtype=np.float32).reshape(2, 3) / 6, requires_grad=True)
    w = mt.tensor(np.ones((3, 2), dtype=np.float32), requires_grad=True)
    h = (x @ w).relu()
    loss = ((h + 1).log() * h).mean() + (x * x).sum()  # h and x are each used twice
    return loss, {"x": x, "w": w}


def test_small_graph_has_one_node_per_recorded_op_and_leaf():
    loss, params = small_graph()
    graph = viz.draw_graph(loss, params=params)
    assert op_node_count(graph) == len(engine_ops(loss)) == 9
    labels = leaf_labels(graph)
    assert len(labels) == 2 and any('"x\n(2, 3) float32' in s for s in labels)
    assert any('"w\n(3, 2) float32' in s for s in labels)
    edges = [line for line in graph.body if "->" in line]
    assert len(edges) == sum(
        1 for node in viz.summarize_graph(loss).ops for p in node.parents if p is not None
    )


def test_grad_norms_after_backward_with_retain_graph():
    loss, params = small_graph()
    loss.backward(retain_graph=True)
    source = viz.draw_graph(loss, params=params, show_grad_norms=True).source
    norm = float(np.linalg.norm(params["w"].grad))
    assert f"|g| {norm:.3g}" in source


def test_freed_graph_is_an_error_not_a_single_node():
    loss, params = small_graph()
    loss.backward()
    with pytest.raises(ValueError, match="retain_graph"):
        viz.draw_graph(loss, params=params)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: mt.Tensor) -> mt.Tensor:
        return x + self.fc(self.ln(x)).relu()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Linear(4, 3)

    def forward(self, x: mt.Tensor) -> mt.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def test_trace_tags_ops_with_the_innermost_module_and_unpatches():
    net = _Net()
    x = mt.randn(5, 4)
    with viz.trace_modules(net) as trace:
        loss = F.cross_entropy(net(x), np.array([0, 1, 2, 0, 1]))
    assert all("forward" not in m.__dict__ for m in net.modules())
    tags = {type(n).__name__ + "@" + (trace.module_path(n) or "-") for n in viz.summarize_graph(loss).ops}
    assert {"LayerNorm@blocks.0.ln", "Linear@blocks.1.fc", "Relu@blocks.0", "Add@blocks.1", "Linear@head",
            "CrossEntropy@-"} <= tags


def test_clusters_and_collapsed_modules_account_for_every_op():
    net = _Net()
    with viz.trace_modules(net) as trace:
        loss = F.cross_entropy(net(mt.randn(5, 4)), np.array([0, 1, 2, 0, 1]))
    total = len(engine_ops(loss))
    clustered = viz.draw_graph(loss, trace=trace, cluster_by_module=True)
    assert op_node_count(clustered) == total
    assert "subgraph cluster_blocks_0_fc" in clustered.source
    collapsed = viz.draw_graph(loss, trace=trace, collapse_modules=True, max_depth=1)
    folded = sum(int(n) for n in re.findall(r"(\d+) ops, ", collapsed.source))
    assert folded + op_node_count(collapsed) == total
    assert folded == total - 1  # only the loss is outside every module
    assert "blocks.0  _Block" in collapsed.source


def test_cluster_without_trace_is_a_clear_error():
    loss, _ = small_graph()
    with pytest.raises(ValueError, match="trace_modules"):
        viz.draw_graph(loss, cluster_by_module=True)


def test_seed_transformer_loss_graph_matches_the_engine(tmp_path):
    from transformer.graph import loss_graph, write_graph

    graph, loss, _ = loss_graph(collapse=False, grad_norms=False)
    n_ops = len(engine_ops(loss))
    assert n_ops > 20
    assert op_node_count(graph) == n_ops
    assert "SelfAttention" in graph.source and "blocks.1.ffn" in graph.source
    collapsed, loss2, _ = loss_graph(collapse=True, grad_norms=False)
    folded = sum(int(n) for n in re.findall(r"(\d+) ops, ", collapsed.source))
    assert folded + op_node_count(collapsed) == len(engine_ops(loss2))
    path, rendered = write_graph(collapsed, tmp_path / "g.dot")
    assert rendered and path.read_text().startswith("digraph")
    if shutil.which("dot"):
        svg, rendered = write_graph(graph, tmp_path / "g.svg")
        assert rendered and b"<svg" in svg.read_bytes()[:2000]


def test_graph_cli_without_dot_writes_source_and_says_how_to_install(tmp_path, monkeypatch, capsys):
    from transformer import graph as graph_cli

    monkeypatch.setattr(graph_cli.shutil, "which", lambda name: None)
    assert graph_cli.main(["--out", str(tmp_path / "g.svg"), "--collapse", "--no-grad-norms"]) == 0
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    err = capsys.readouterr().err
    assert "apt-get install graphviz" in err and "brew install graphviz" in err
