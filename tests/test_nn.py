"""microtensor.nn: Module registration, modes, state_dict, repr, save/load, containers and layers."""

from __future__ import annotations

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn as nn


class MLP(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = np.random.default_rng(seed)
        self.net = nn.Sequential(nn.Linear(2, 3, generator=g), nn.ReLU())
        self.head = nn.Linear(3, 1, bias=False, generator=g)
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
        self.note = "not registered"

    def forward(self, x):
        return self.head(self.net(x)) * self.scale


def test_parameters_and_submodules_are_registered_in_order() -> None:
    model = MLP()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["scale", "net.0.weight", "net.0.bias", "head.weight"]
    assert [p.shape for p in model.parameters()] == [(1,), (3, 2), (3,), (1, 3)]
    assert all(p.requires_grad and isinstance(p, nn.Parameter) for p in model.parameters())
    assert [name for name, _ in model.named_modules()] == ["", "net", "net.0", "net.1", "head"]
    assert list(model.children()) == [model.net, model.head]
    assert model.num_parameters() == 1 + 6 + 3 + 3


def test_reassigning_an_attribute_unregisters_it_and_shared_parameters_count_once() -> None:
    model = MLP()
    model.scale = None
    assert "scale" not in dict(model.named_parameters())
    model.tied = model.head
    assert len(list(model.parameters())) == 3
    model.head = nn.ReLU()
    assert "head.weight" not in dict(model.named_parameters())
    assert "tied.weight" in dict(model.named_parameters())


def test_assigning_before_super_init_is_a_clear_error() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Broken()


def test_train_eval_propagate_and_switch_dropout() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5, generator=np.random.default_rng(0)))
    assert model.training and model[1].training
    x = mt.ones(8, 4)
    assert model.eval() is model
    assert not model.training and not model[0].training and not model[1].training
    np.testing.assert_array_equal(model(x).data, model[0](x).data)
    model.train()
    assert model[1].training
    assert (model(x).data == 0).any()


def test_backward_reaches_every_parameter_and_module_zero_grad_clears() -> None:
    model = MLP()
    model(mt.tensor(np.ones((5, 2), dtype=np.float32))).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_shares_memory_and_load_state_dict_writes_in_place() -> None:
    a, b = MLP(seed=1), MLP(seed=2)
    state = a.state_dict()
    assert set(state) == {"scale", "net.0.weight", "net.0.bias", "head.weight"}
    state["scale"].data[0] = 5.0  # as PyTorch: state_dict() tensors share the parameters' memory
    assert a.scale.data[0] == 5.0
    arrays_before = [p.data for p in b.parameters()]
    b.load_state_dict(a.state_dict())
    for p, q, arr in zip(a.parameters(), b.parameters(), arrays_before, strict=True):
        np.testing.assert_array_equal(p.data, q.data)
        assert q.data is arr  # copied into, never rebound (optimizers may hold views)


def test_load_state_dict_missing_unexpected_and_shape_errors() -> None:
    model = MLP()
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "head.weight"}
    with pytest.raises(ValueError, match=r"missing keys \['head.weight'\]"):
        model.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        model.load_state_dict({**state, "extra": np.zeros(1)})
    shape_error = r"net.0.weight has shape \(2, 3\) in the state but \(3, 2\) in the model"
    with pytest.raises(ValueError, match=shape_error):
        model.load_state_dict({**state, "net.0.weight": np.zeros((2, 3))})
    model.load_state_dict(missing, strict=False)
    model.load_state_dict({**state, "extra": np.zeros(1)}, strict=False)


def test_buffers_are_saved_and_loaded() -> None:
    class WithBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("running", np.zeros(3, dtype=np.float32))
            self.register_buffer("scratch", np.zeros(2), persistent=False)

    m = WithBuffer()
    assert set(m.state_dict()) == {"running"}
    m.load_state_dict({"running": np.arange(3.0)})
    np.testing.assert_array_equal(m.running, [0.0, 1.0, 2.0])


def test_repr_matches_pytorch_layout() -> None:
    model = MLP()
    assert repr(model) == (
        "MLP(\n"
        "  (net): Sequential(\n"
        "    (0): Linear(in_features=2, out_features=3, bias=True)\n"
        "    (1): ReLU()\n"
        "  )\n"
        "  (head): Linear(in_features=3, out_features=1, bias=False)\n"
        ")"
    )
    assert repr(nn.LayerNorm(4)) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)"
    no_bias = "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=False)"
    assert repr(nn.LayerNorm(4, bias=False)) == no_bias
    assert repr(nn.Embedding(10, 3)) == "Embedding(10, 3)"
    assert repr(nn.Dropout(0.1)) == "Dropout(p=0.1)"
    assert repr(nn.Parameter(np.zeros(1, dtype=np.float32))).startswith("Parameter containing:\ntensor([0.]")


def test_save_load_npz_round_trip(tmp_path) -> None:
    a, b = MLP(seed=3), MLP(seed=4)
    path = tmp_path / "model.npz"
    mt.save(a.state_dict(), path)
    loaded = mt.load(path)
    assert set(loaded) == set(a.state_dict())
    b.load_state_dict(loaded)
    x = mt.randn(4, 2, generator=np.random.default_rng(0))
    np.testing.assert_array_equal(a(x).data, b(x).data)
    mt.save({"w": mt.tensor([1.0, 2.0]), "step": 7}, tmp_path / "misc.npz")
    misc = mt.load(tmp_path / "misc.npz")
    assert misc["step"] == 7 and misc["w"].dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["misc.npz", "model.npz"]  # no temp files left


def test_save_refuses_objects_and_load_refuses_pickles(tmp_path) -> None:
    with pytest.raises(TypeError, match="cannot store a object"):
        mt.save({"bad": object()}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="keys must be"):
        mt.save({(1,): np.zeros(1)}, tmp_path / "x.npz")
    np.savez(tmp_path / "pickled.npz", obj=np.array([{"code": 1}], dtype=object))
    with pytest.raises(ValueError):
        mt.load(tmp_path / "pickled.npz")


def test_sequential_and_module_list() -> None:
    seq = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
    assert len(seq) == 3 and isinstance(seq[1], nn.GELU) and isinstance(seq[-1], nn.Linear)
    assert [type(m).__name__ for m in seq] == ["Linear", "GELU", "Linear"]
    assert seq(mt.ones(5, 3)).shape == (5, 2)
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    layers.append(nn.LayerNorm(2))
    assert len(layers) == 4 and isinstance(layers[3], nn.LayerNorm)
    assert len(list(layers.parameters())) == 8
    assert [name for name, _ in layers.named_parameters()][-2:] == ["3.weight", "3.bias"]


def test_linear_layer_matches_numpy_and_pytorch_init_bounds() -> None:
    layer = nn.Linear(16, 4, generator=np.random.default_rng(0))
    assert layer.weight.shape == (4, 16) and layer.bias.shape == (4,)
    assert layer.weight.dtype == np.float32
    assert np.abs(layer.weight.data).max() <= 0.25
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(layer(mt.tensor(x)).data, x @ layer.weight.data.T + layer.bias.data, rtol=1e-6)


def test_embedding_layernorm_layers() -> None:
    emb = nn.Embedding(5, 3, generator=np.random.default_rng(0))
    ids = mt.tensor(np.array([[4, 0], [0, 2]]))
    np.testing.assert_array_equal(emb(ids).data, emb.weight.data[ids.data])
    ln = nn.LayerNorm(3)
    y = ln(emb(ids)).data
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-3)
    ln_plain = nn.LayerNorm(3, elementwise_affine=False)
    assert list(ln_plain.parameters()) == []


def test_layers_in_a_training_step() -> None:
    model = nn.Sequential(nn.Embedding(6, 4), nn.LayerNorm(4), nn.Linear(4, 6), nn.Dropout(0.1))
    logits = model(mt.tensor(np.array([1, 2, 3])))
    loss = nn.functional.cross_entropy(logits, np.array([2, 3, 4]))
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert np.count_nonzero(grads["0.weight"].numpy().any(axis=1)) == 3  # only the looked-up rows
