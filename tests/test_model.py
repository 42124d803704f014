"""The seed transformer: shapes, size, attention weights, ablations, determinism, PyTorch parity."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn.functional as F
from transformer.data import make_splits
from transformer.model import ABLATIONS, ModelConfig, Transformer

TINY = {"d_model": 16, "n_heads": 2, "d_ff": 32, "dropout": 0.0}


@pytest.fixture(scope="module")
def batch():
    data = make_splits(arity="2-4", train_size=64, eval_size=20, seed=0).train
    return data.ids[:16], data.mask[:16], data.targets[:16]


def test_seed_config_has_about_102k_parameters():
    model = Transformer(ModelConfig())
    assert 101_000 < model.num_parameters() < 103_000


def test_logits_attention_and_ffn_activations(batch):
    ids, mask, _ = batch
    model = Transformer(ModelConfig(**TINY), np.random.default_rng(0))
    logits, attention = model(ids, mask, return_attention=True)
    assert logits.shape == (16, 20)
    assert len(attention) == 2
    for weights in attention:
        assert weights.shape == (16, 2, ids.shape[1], ids.shape[1])
        np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
        assert np.all(
            weights[np.broadcast_to(~mask[:, None, None, :], weights.shape)] == 0
        )  # pads get nothing
    acts = model.ffn_activations(ids, mask)
    assert [a.shape for a in acts] == [(16, ids.shape[1], 32)] * 2
    assert model.training


def test_padding_does_not_change_the_answer():
    model = Transformer(ModelConfig(**TINY), np.random.default_rng(0)).eval()
    short = make_splits(arity=2, train_size=4, seed=0).train
    padded = np.concatenate([np.zeros((4, 4), np.int64), short.ids], axis=1)
    np.testing.assert_allclose(model(short.ids).numpy(), model(padded).numpy(), rtol=1e-4, atol=1e-5)


def test_same_seed_same_numbers(batch):
    ids, mask, _ = batch
    a = Transformer(ModelConfig(), np.random.default_rng(7))(ids, mask).numpy()
    b = Transformer(ModelConfig(), np.random.default_rng(7))(ids, mask).numpy()
    c = Transformer(ModelConfig(), np.random.default_rng(8))(ids, mask).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("switch", [*ABLATIONS, "pre_ln", "n_blocks=1", "n_blocks=0"])
def test_every_ablation_builds_and_trains_one_step(batch, switch):
    ids, mask, targets = batch
    name, _, value = switch.partition("=")
    config = ModelConfig(**{**TINY, "dropout": 0.1, name: int(value) if value else True})
    model = Transformer(config, np.random.default_rng(0))
    optimizer = mt.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.data.copy() for p in model.parameters()]
    logits, attention = model(ids, mask, return_attention=True)
    loss = F.cross_entropy(logits, targets)
    loss.backward()
    optimizer.step()
    assert np.isfinite(loss.item())
    assert len(attention) == config.n_blocks
    assert all(np.allclose(w.sum(-1), 1.0, rtol=1e-5) for w in attention)
    changed = [not np.array_equal(b, p.data) for b, p in zip(before, model.parameters(), strict=True)]
    assert all(changed)
    model.eval()
    full, _ = model(ids, mask, return_attention=True)
    np.testing.assert_allclose(model(ids, mask).numpy(), full.numpy(), rtol=1e-4, atol=1e-5)  # last-only path


def test_bad_configs_and_inputs_raise():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(dropout=1.0)
    model = Transformer(ModelConfig(**TINY, max_len=8))
    with pytest.raises(ValueError, match="max_len"):
        model(np.ones((1, 9), np.int64))


def _torch_model_factory():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "test_train_step.py"
    spec = importlib.util.spec_from_file_location("_train_step_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.torch_model


def test_forward_and_gradients_match_pytorch(torch, batch):
    """The whole model (eval mode, no dropout) against the same model written in PyTorch."""
    ids, mask, targets = batch
    config = ModelConfig()
    ours = Transformer(config, np.random.default_rng(0))
    theirs = _torch_model_factory()(config, {**ours.state_dict(), "pos_table": ours.pos_table}).eval()
    ours.eval()
    loss = F.cross_entropy(ours(ids, mask), targets)
    loss.backward()
    t_logits = theirs(torch.from_numpy(ids), torch.from_numpy(mask))
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(targets))
    t_loss.backward()
    np.testing.assert_allclose(loss.item(), t_loss.item(), rtol=1e-5)
    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, t_params[name].grad.numpy(), rtol=2e-3, atol=2e-5, err_msg=name)
