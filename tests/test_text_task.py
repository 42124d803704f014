"""The text task: vocabulary and split, causal masking, resume equality, bad input, parity with PyTorch."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from transformer import text as text_module
from transformer.checkpoint import CKPT_BEST, CKPT_LAST, load_text_model
from transformer.config import ModelConfig, text_from_layers
from transformer.gpt import GPT
from transformer.text import Corpus, TextError, eval_starts, load_corpus, read_text, windows
from transformer.train import TextTrainer, main

TEXT = "It was the best of times, it was the worst of times; it was the age of wisdom, it was the age of folly.\n" * 4
TINY = ["--task", "text", "--steps", "6", "--eval-every", "3", "--warmup-steps", "2", "--block-size", "16",
        "--d-model", "16", "--n-heads", "2", "--d-ff", "32", "--n-blocks", "2", "--batch-size", "4",
        "--eval-tokens", "64", "--quiet"]


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _numbers(run: Path) -> list[dict]:
    """The metrics rows without their timings (which differ between any two runs)."""
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in _rows(run)]


# ---- vocabulary and split -------------------------------------------------------------------------


def test_vocabulary_is_the_sorted_characters_and_the_split_is_contiguous_90_10():
    text = "bca\u00e9\u4e2d" * 20  # 100 characters, two of them outside ASCII
    corpus = Corpus.from_text(text, block_size=4)
    assert corpus.vocab == "abc\u00e9\u4e2d"
    assert (len(corpus.train), len(corpus.val)) == (90, 10)
    assert corpus.decode(corpus.train) + corpus.decode(corpus.val) == text
    np.testing.assert_array_equal(np.concatenate([corpus.train, corpus.val]), corpus.encode(text))
    with pytest.raises(ValueError, match="not in the vocabulary: 'xz'"):
        corpus.encode("axz")


def test_windows_target_the_next_character_and_eval_windows_do_not_overlap():
    ids = np.arange(50)
    x, y = windows(ids, np.array([0, 7]), 5)
    np.testing.assert_array_equal(x, [[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    np.testing.assert_array_equal(y, x + 1)
    starts = eval_starts(50, 5, 1000)
    assert len(starts) == 9 and np.all(np.diff(starts) >= 5) and starts[-1] + 5 < 50
    assert len(eval_starts(50, 5, 12)) == 2


def test_the_vocabulary_is_stored_in_the_checkpoint(tmp_path, corpus_file):
    assert main([*TINY, "--data", str(corpus_file), "--out", str(tmp_path / "run")]) == 0
    model, vocab = load_text_model(tmp_path / "run" / CKPT_BEST)
    assert vocab == "".join(sorted(set(TEXT)))
    assert model.config.vocab_size == len(vocab) and model.config.max_len == 16 and not model.training
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [3, 6, 6]
    for key in ("train/loss", "train/bpc", "val/bpc", "val/loss", "lr", "grad_norm/tok_emb"):
        assert np.isfinite(rows[0][key]), key
    assert rows[0]["val/bpc"] == pytest.approx(rows[0]["val/loss"] / np.log(2))
    assert "time/train_s" in rows[-1]


def test_the_demo_corpus_is_the_machines_license_texts_each_once(tmp_path, monkeypatch, capsys):
    licenses = tmp_path / "licenses"
    licenses.mkdir()
    (licenses / "GPL-3").write_text("GNU GENERAL PUBLIC LICENSE\n")
    (licenses / "BSD").write_text("Redistribution and use\n")
    (licenses / "GPL").symlink_to(licenses / "GPL-3")
    monkeypatch.setattr(text_module, "LICENSES", licenses)
    assert text_module.main(["demo", str(tmp_path / "out" / "demo.txt")]) == 0
    assert (tmp_path / "out" / "demo.txt").read_text() == "Redistribution and use\n\n\nGNU GENERAL PUBLIC LICENSE\n"
    monkeypatch.setattr(text_module, "LICENSES", tmp_path / "nowhere")
    with pytest.raises(SystemExit) as exit_:
        text_module.main(["demo", str(tmp_path / "again.txt")])
    assert exit_.value.code == 2 and "no demo corpus" in capsys.readouterr().err
    assert not (tmp_path / "again.txt").exists()


# ---- causal masking --------------------------------------------------------------------------------


@pytest.mark.parametrize("pre_ln", [True, False])
def test_a_future_character_never_changes_an_earlier_prediction(backend, pre_ln):
    config = ModelConfig(vocab_size=11, d_model=16, n_heads=2, d_ff=32, n_blocks=2, dropout=0.0, max_len=12,
                         pre_ln=pre_ln)
    model = GPT(config, np.random.default_rng(0)).eval()
    ids = np.random.default_rng(1).integers(0, 11, (3, 12))
    before = model(ids).numpy()
    for t in (0, 5, 11):
        changed = ids.copy()
        changed[:, t] = (changed[:, t] + 1) % 11
        after = model(changed).numpy()
        np.testing.assert_array_equal(after[:, :t], before[:, :t])
        assert np.abs(after[:, t:] - before[:, t:]).max() > 1e-4  # the change is seen from t on


# ---- resume ----------------------------------------------------------------------------------------


def test_a_resumed_text_run_equals_an_uninterrupted_one(tmp_path, corpus_file):
    """Stopped after 3 steps (a period's end) and mid-period (step 4), resumed: the same rows and weights."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    flags = [*TINY, "--data", str(corpus_file), "--grad-accum", "2", "--dropout", "0.2"]
    assert main([*flags, "--out", str(straight)]) == 0
    settings = text_from_layers([], {"data": str(corpus_file), "grad_accum": 2, "dropout": 0.2, "steps": 6,
                                     "eval_every": 3, "warmup_steps": 2, "block_size": 16, "d_model": 16,
                                     "n_heads": 2, "d_ff": 32, "n_blocks": 2, "batch_size": 4, "eval_tokens": 64})
    assert json.loads((straight / "config.json").read_text())["text"]["grad_accum"] == 2
    resumed.mkdir()
    first = TextTrainer(*settings, load_corpus(corpus_file, 16), resumed, quiet=True)

    class StopAt4:
        requested = property(lambda self: first.global_step >= 4)

    assert first.run(StopAt4()) == 130
    assert main(["--out", str(resumed), "--resume", "--quiet"]) == 0
    assert _numbers(resumed) == _numbers(straight)
    a, b = (load_text_model(run / CKPT_LAST)[0] for run in (straight, resumed))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_a_nan_loss_stops_a_text_run_naming_the_step(tmp_path, corpus_file, capsys):
    settings = text_from_layers([], {"data": str(corpus_file), "steps": 4, "warmup_steps": 1, "block_size": 16,
                                     "d_model": 16, "n_heads": 2, "d_ff": 32, "n_blocks": 1, "batch_size": 4})
    trainer = TextTrainer(*settings, load_corpus(corpus_file, 16), tmp_path, quiet=True)
    trainer.model.ln_f.bias.data[...] = np.nan

    class Never:
        requested = False

    assert trainer.run(Never()) == 1
    assert "loss became nan at epoch 1, step 1; stopping (no checkpoint" in capsys.readouterr().out
    assert not (tmp_path / "metrics.jsonl").exists()


def test_resume_refuses_other_settings_or_another_text(tmp_path, corpus_file, capsys):
    run = tmp_path / "run"
    assert main([*TINY, "--data", str(corpus_file), "--out", str(run)]) == 0
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(run), "--resume", "--block-size", "8"])
    assert exit_.value.code == 2 and "--block-size: the run was trained with 16" in capsys.readouterr().err
    other = tmp_path / "other.txt"
    other.write_text(TEXT.replace("age", "era"), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(run), "--resume", "--data", str(other)])
    assert exit_.value.code == 2 and "differs from the data this run was trained on" in capsys.readouterr().err


# ---- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "the file is empty"),
        (b"  \n\t\n", "the file is empty"),
        (b"text\x00\x01\x02 binary", "a binary file (NUL byte at offset 4)"),
        ("caf\u00e9 ".encode("latin-1") * 50, "not UTF-8 (byte 0xe9 at offset 3)"),
        (b"short text", "--block-size 16 is longer than the held-out 10%"),
    ],
)
def test_bad_text_files_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_:
        main([*TINY, "--data", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--task", "text", "--out", "x"], "data is required with --task text"),
        (["--task", "text", "--data", "c.txt", "--epochs", "3"], "epochs does not apply to --task text"),
        (["--task", "text", "--data", "c.txt", "--ablate", "no_ffn"], "ablate does not apply to --task text"),
        (["--block-size", "8"], "block_size does not apply to --task ops"),
        (["--task", "text", "--data", "c.txt", "--warmup-steps", "10", "--steps", "10"], "warmup_steps must be"),
        (["--task", "text", "--data", "missing.txt"], "--data missing.txt: cannot read it"),
    ],
)
def test_settings_that_do_not_fit_the_task_exit_2(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.txt").write_text(TEXT)
    with pytest.raises(SystemExit) as exit_:
        main([*flags, "--quiet"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_read_text_names_the_file(tmp_path):
    with pytest.raises(TextError, match=r"--data .*nowhere.txt: cannot read it"):
        read_text(tmp_path / "nowhere.txt")


# ---- the same numbers as PyTorch -----------------------------------------------------------------


def _twin():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "lm_twin.py"
    spec = importlib.util.spec_from_file_location("lm_twin", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("pre_ln", [True, False])
def test_training_steps_match_the_pytorch_twin(torch, tmp_path, corpus_file, pre_ln):
    """Same init, windows, AdamW, clipping and warmup + cosine: losses and weights agree with PyTorch."""
    twin = _twin()
    settings = text_from_layers([], {"data": str(corpus_file), "steps": 6, "warmup_steps": 2, "block_size": 16,
                                     "d_model": 16, "n_heads": 2, "d_ff": 32, "n_blocks": 2, "dropout": 0.0,
                                     "batch_size": 4, "grad_accum": 2, "eval_tokens": 64, "pre_ln": pre_ln})
    trainer = TextTrainer(*settings, load_corpus(corpus_file, 16), tmp_path, quiet=True)
    model = twin.twin_of(trainer)
    opt, sched = twin.make_optimizer(model, trainer)
    order, per = trainer.order(1), trainer.examples_per_step
    for step in range(6):
        index = order[step * per : (step + 1) * per]
        ours = trainer.train_step(index)
        trainer.step_in_epoch += 1
        assert ours == pytest.approx(twin.train_step(model, opt, sched, trainer, index), rel=1e-5)
    for name, p in trainer.model.named_parameters():
        np.testing.assert_allclose(p.data, model.w(name).detach().numpy(), atol=2e-5, err_msg=name)
    assert trainer.validate()["bpc"] == pytest.approx(twin.score(model, trainer, trainer.corpus.val), rel=1e-5)
