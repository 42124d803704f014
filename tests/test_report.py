"""A real 3-epoch run, then transformer.report: every figure, a self-contained page, true heatmaps."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from transformer import report  # noqa: E402
from transformer.data import encode_batch  # noqa: E402
from transformer.diagnostics import DEFAULT_PROBES, export_bertviz, probe_slug  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPOCHS = 3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A short real run: 3 epochs on 600 examples, diagnostics at epochs 1-3 (plus 0 at the start)."""
    from transformer.train import main

    out = tmp_path_factory.mktemp("runs") / "short"
    code = main(["--out", str(out), "--epochs", str(EPOCHS), "--train-size", "600", "--eval-size", "300",
                 "--quiet", "--diagnostics-epochs", "1,2,3", "--threads", "1"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def built(run_dir) -> Path:
    return report.build_report(run_dir)


def expected_figures(n_blocks: int = 2) -> list[str]:
    names = ["loss", "accuracy", "accuracy_per_op", "confusion_ops", "confusion_digits",
             "attention_sharpness", "probe_confidence", "embeddings_pca", "ffn_activations", "gradients",
             "lr_schedule"]
    names += [f"attention_{probe_slug(p)}_block{b}" for p in DEFAULT_PROBES for b in range(n_blocks)]
    return [n + ".png" for n in names]


def test_every_listed_figure_is_a_png(run_dir, built):
    figures = run_dir / "figures"
    for name in expected_figures():
        path = figures / name
        assert path.exists(), name
        assert path.read_bytes()[:8] == PNG_MAGIC, name


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "src" in attrs:
            self.srcs.append(attrs["src"])
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag in ("html", "body", "table", "h2"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in ("html", "body", "table", "h2"):
            assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
            self.open.pop()


def test_report_is_one_self_contained_html_file(run_dir, built):
    assert built == run_dir / "report.html"
    text = built.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    parser = _Collector()
    parser.feed(text)
    assert parser.open == []
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert len(parser.srcs) == len(list((run_dir / "figures").glob("*.png")))
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    assert "validation accuracy first &gt;= 50%" in text and "Hardest test inputs" in text


def test_heatmaps_show_the_models_attention_weights(run_dir, built):
    """The arrays behind the heatmaps are softmax rows and equal the saved model's attention on the probe."""
    from transformer.train import load_model

    data = report.attention_heatmap_data(report.load_run(run_dir))
    assert {e for by_epoch in data.values() for e in by_epoch} == {0, 1, 2, 3}
    for weights in (w for by_epoch in data.values() for w in by_epoch.values()):
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
        assert (weights >= 0).all()
    model = load_model(run_dir / "ckpt_last.npz")
    for probe in DEFAULT_PROBES[:3]:
        batch = encode_batch([probe])
        _, attention = model(batch.ids, mask=batch.mask, return_attention=True)
        for b, a in enumerate(attention):
            np.testing.assert_allclose(data[(probe, b)][EPOCHS], a[0], atol=1e-5)


def test_bertviz_export_layout(run_dir):
    out = export_bertviz(run_dir, EPOCHS, "Max(5,3,9)")
    assert out["tokens"] == ["Max", "(", "5", ",", "3", ",", "9", ")"]
    assert len(out["attention"]) == 2
    assert np.asarray(out["attention"][0]).shape == (1, 4, 8, 8)
    saved = json.loads((run_dir / "diagnostics" / "bertviz_epoch_003_Max_5_3_9.json").read_text())
    assert saved["tokens"] == out["tokens"]


def test_diagnostics_are_cheap_and_timed(run_dir):
    index = json.loads((run_dir / "diagnostics" / "index.json").read_text())
    assert index["epochs"] == [0, 1, 2, 3]
    assert all(s < 1.0 for s in index["seconds"].values())


def test_missing_pieces_become_notes_not_tracebacks(run_dir, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(run_dir / "metrics.jsonl", partial / "metrics.jsonl")
    assert report.main([str(partial)]) == 0
    text = (partial / "report.html").read_text()
    assert "No diagnostics were recorded" in text and "test_predictions.jsonl is missing" in text
    assert (partial / "figures" / "loss.png").exists()
    assert "report.html" in capsys.readouterr().out
    assert report.main([str(tmp_path / "nope")]) == 2


# ---- a text run (--task text) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    """A 6-step text run evaluated every 2 steps, with its diagnostics, then its report."""
    from transformer.train import main

    folder = tmp_path_factory.mktemp("text")
    data = folder / "tiny.txt"
    data.write_text("The first line.\nthe quick brown fox jumps over the lazy dog. " * 30)
    out = folder / "run"
    assert main(["--task", "text", "--data", str(data), "--out", str(out), "--steps", "6", "--eval-every", "2",
                 "--block-size", "40", "--d-model", "32", "--n-heads", "2", "--d-ff", "64", "--batch-size", "4",
                 "--warmup-steps", "1", "--eval-tokens", "160", "--quiet", "--threads", "1"]) == 0
    report.build_report(out)
    return out


def test_text_report_draws_bpc_attention_gradients_and_lr(text_run):
    names = {p.name for p in (text_run / "figures").glob("*.png")}
    probe = report.load_run(text_run).diag_index["probes"][0]
    assert names == {"bpc.png", "gradients.png", "lr_schedule.png",
                     *(f"attention_{probe_slug(probe)}_block{b}.png" for b in range(2))}
    text = (text_run / "report.html").read_text(encoding="utf-8")
    assert "bits per character" in text and "Samples over training" in text
    assert "test_predictions.jsonl is missing" not in text and "not drawn" not in text


def test_text_report_curves_are_the_logged_bits_per_character_against_steps(text_run):
    run = report.load_run(text_run)
    logged = [json.loads(line) for line in (text_run / "metrics.jsonl").read_text().splitlines()]
    steps, bpc = report.series(run, "val/bpc")
    np.testing.assert_array_equal(steps, [2, 4, 6])
    np.testing.assert_allclose(bpc, [r["val/bpc"] for r in logged if "val/bpc" in r])
    assert run.final["time/train_s"] == logged[-1]["time/train_s"]
    assert {name for name in report.layer_series(run, "grad_norm")} >= {"blocks.0.attn", "ln_f", "tok_emb"}


def test_text_snapshots_hold_the_models_attention_and_samples(text_run):
    """The last snapshot (step 6) is the final model's attention over the probe and its seeded sample."""
    from transformer.checkpoint import load_text_model
    from transformer.diagnostics import SAMPLE_CHARS, SAMPLE_TEMPERATURE
    from transformer.sample import sample

    run = report.load_run(text_run)
    assert sorted(run.snapshots) == [0, 1, 2, 3] and [run.x_of(e) for e in sorted(run.snapshots)] == [0, 2, 4, 6]
    model, vocab = load_text_model(text_run / "ckpt_last.npz")
    probe = run.diag_index["probes"][0]
    _, attention = model(np.array([[vocab.index(c) for c in probe]]), return_attention=True)
    data = report.attention_heatmap_data(run)
    for b, weights in enumerate(attention):
        np.testing.assert_allclose(data[(probe, b)][3], weights[0], atol=1e-5)
        np.testing.assert_allclose(np.triu(data[(probe, b)][3], 1), 0.0)  # causal: no weight on the future
    drawn = report.samples(run)
    assert [step for step, _, _ in drawn] == [0, 2, 4, 6] and all(p == probe for _, p, _ in drawn)
    assert drawn[-1][2] == "".join(sample(model, vocab, probe, SAMPLE_CHARS, SAMPLE_TEMPERATURE, seed=0))
