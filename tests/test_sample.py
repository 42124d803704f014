"""Sampling from text runs: the key/value cache against full recomputation, the draw rule, the command line."""

from __future__ import annotations

import numpy as np
import pytest

from transformer.checkpoint import load_text_model
from transformer.config import ModelConfig
from transformer.gpt import GPT
from transformer.sample import main, make_pick, sample

VOCAB = " .abcdefghijklmnopqrstuvwxyz"


def sharp_gpt(pre_ln: bool = True, max_len: int = 16, seed: int = 0) -> GPT:
    """A random GPT whose weights (std 0.4, not 0.02) give peaked, varied predictions, in eval mode."""
    config = ModelConfig(vocab_size=len(VOCAB), d_model=32, n_heads=4, d_ff=64, n_blocks=2, max_len=max_len,
                         dropout=0.1, pre_ln=pre_ln)
    model = GPT(config, np.random.default_rng(seed))
    for name, p in model.named_parameters():
        if "ln" not in name:
            p.data[...] = np.random.default_rng(len(name)).normal(0, 0.4, p.shape)
    return model.eval()


def greedy(logits: np.ndarray) -> np.ndarray:
    return logits.argmax(axis=-1)


@pytest.mark.parametrize("pre_ln", [True, False])
def test_cache_gives_the_tokens_of_full_recomputation(pre_ln, backend):
    """Temperature 0, two prompts, 45 tokens past a block size of 16 (three restarts of the context)."""
    model = sharp_gpt(pre_ln)
    prompts = np.random.default_rng(1).integers(0, len(VOCAB), (2, 5))
    cached = np.stack(list(model.generate(prompts, 45, greedy)), axis=1)
    full = np.stack(list(model.generate(prompts, 45, greedy, cache=False)), axis=1)
    np.testing.assert_array_equal(cached, full)
    assert cached.shape == (2, 45) and min(len(set(row)) for row in cached) >= 4  # not one repeated token


def test_decode_logits_match_the_forward_pass(backend):
    """Chunks fed into the cache (a prefix of 5, one of 3, then single tokens) give the forward pass's logits."""
    model = sharp_gpt()
    ids = np.random.default_rng(2).integers(0, len(VOCAB), (3, 16))
    full = model(ids).numpy()
    cache = model.new_cache(3)
    for start, end in [(0, 5), (5, 8), *((t, t + 1) for t in range(8, 16))]:
        logits = model.decode(ids[:, start:end], cache, start)
        np.testing.assert_allclose(logits, full[:, end - 1], rtol=1e-5, atol=1e-5)


def test_decode_refuses_positions_past_the_block_size():
    model = sharp_gpt()
    with pytest.raises(ValueError, match="outside the block size 16"):
        model.decode(np.zeros((1, 2), np.int64), model.new_cache(1), 15)


def test_decode_refuses_a_layer_norm_of_another_width():
    """decode calls the LayerNorm kernel itself: a parameter replaced by one of another width is refused, not read
    past its end."""
    model = sharp_gpt()
    model.blocks[1].ln2.weight.data = np.ones(5, np.float32)
    with pytest.raises(ValueError, match=r"LayerNorm weight \(5,\) and bias \(32,\)"):
        model.decode(np.zeros((1, 1), np.int64), model.new_cache(1), 0)


def test_a_prompt_longer_than_the_block_size_keeps_its_end():
    model = sharp_gpt()
    ids = np.random.default_rng(3).integers(0, len(VOCAB), (1, 40))
    first = next(model.generate(ids, 1, greedy))
    np.testing.assert_array_equal(first, model(ids[:, -16:]).numpy()[:, -1].argmax(axis=-1))


def test_draws_follow_the_tempered_softmax():
    """200,000 draws from one row of logits: frequencies within 0.005 of softmax(logits / T)."""
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0])
    rows = np.tile(logits, (200_000, 1))
    for temperature in (0.5, 1.0, 2.0):
        drawn = make_pick(temperature, None, np.random.default_rng(0))(rows)
        expected = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
        np.testing.assert_allclose(np.bincount(drawn, minlength=5) / len(rows), expected, atol=0.005)


def test_top_k_draws_only_the_k_most_likely():
    logits = np.array([[0.1, 3.0, -2.0, 2.9, 0.0, 2.8]] * 20_000)
    drawn = make_pick(5.0, 2, np.random.default_rng(0))(logits)
    assert set(np.unique(drawn)) == {1, 3}
    np.testing.assert_array_equal(make_pick(0.8, 1, np.random.default_rng(0))(logits), np.ones(20_000))
    np.testing.assert_array_equal(make_pick(0.0, None, np.random.default_rng(0))(logits), np.ones(20_000))


@pytest.mark.parametrize("temperature, top_k", [(-0.1, None), (float("nan"), None), (float("inf"), 3), (1.0, 0)])
def test_bad_temperature_or_top_k_is_refused(temperature, top_k):
    with pytest.raises(ValueError, match="temperature|top_k"):
        make_pick(temperature, top_k, np.random.default_rng(0))


def test_the_same_seed_draws_the_same_text():
    model = sharp_gpt()
    text = "".join(sample(model, VOCAB, "the ", 60, temperature=1.0, top_k=10, seed=1))
    assert text == "".join(sample(model, VOCAB, "the ", 60, temperature=1.0, top_k=10, seed=1))
    assert text != "".join(sample(model, VOCAB, "the ", 60, temperature=1.0, top_k=10, seed=2))
    assert len(text) == 60 and set(text) <= set(VOCAB)


def test_a_prompt_outside_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match=r"not in the vocabulary: 'QZ'"):
        next(sample(sharp_gpt(), VOCAB, "a QZ b", 5))
    with pytest.raises(ValueError, match="prompt is empty"):
        next(sample(sharp_gpt(), VOCAB, "", 5))


# ---- the command line, on checkpoints written by the trainer ------------------------------------------


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory):
    """The best checkpoint of a 2-step text run on a small file."""
    from transformer.train import main as train

    folder = tmp_path_factory.mktemp("text")
    data = folder / "tiny.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    out = folder / "run"
    assert train(["--task", "text", "--data", str(data), "--out", str(out), "--steps", "2", "--eval-every", "1",
                  "--block-size", "16", "--d-model", "32", "--n-heads", "2", "--d-ff", "64", "--batch-size", "4",
                  "--warmup-steps", "0", "--eval-tokens", "64", "--quiet", "--threads", "1"]) == 0
    return out / "ckpt_best.npz"


def test_cli_prints_prompt_and_tokens_the_same_with_and_without_cache(text_ckpt, capsys):
    args = ["--ckpt", str(text_ckpt), "--prompt", "the ", "--tokens", "40", "--temperature", "0", "--quiet"]
    assert main(args) == 0
    cached = capsys.readouterr().out
    assert main([*args, "--no-cache"]) == 0
    assert capsys.readouterr().out == cached
    assert cached.startswith("the ") and len(cached) == len("the ") + 40 + 1
    model, vocab = load_text_model(text_ckpt)
    assert cached[4:-1] == "".join(sample(model, vocab, "the ", 40, temperature=0))


def _refused(capsys, argv) -> str:
    """The one-line message of a refused command (exit 2)."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_cli_refuses_bad_input_with_exit_2(text_ckpt, tmp_path, capsys):
    ckpt = ["--ckpt", str(text_ckpt)]
    assert "not in the vocabulary: 'QX'" in _refused(capsys, [*ckpt, "--prompt", "the QX"])
    assert "--temperature" in _refused(capsys, [*ckpt, "--temperature", "-1"])
    assert "--temperature" in _refused(capsys, [*ckpt, "--temperature", "nan"])
    assert "--top-k" in _refused(capsys, [*ckpt, "--top-k", "0"])
    assert "--tokens" in _refused(capsys, [*ckpt, "--tokens", "-5"])
    assert "cannot read it" in _refused(capsys, ["--ckpt", str(tmp_path / "missing.npz")])
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(text_ckpt.read_bytes()[:2000])
    assert "truncated or damaged" in _refused(capsys, ["--ckpt", str(damaged)])


def test_cli_refuses_a_checkpoint_of_the_operations_task(tmp_path, capsys):
    from transformer.train import main as train

    assert train(["--out", str(tmp_path / "ops"), "--epochs", "1", "--train-size", "64", "--eval-size", "32",
                  "--quiet", "--no-diagnostics", "--threads", "1"]) == 0
    capsys.readouterr()
    assert "not a text run's checkpoint" in _refused(capsys, ["--ckpt", str(tmp_path / "ops" / "ckpt_last.npz")])
