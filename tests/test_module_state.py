"""Module state as PyTorch: traversal, buffers, tied weights, state_dict sharing memory, load_state_dict, to()."""

from __future__ import annotations

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn as nn


def tied_gpt(nn, torch_like):
    """nanoGPT's layout in miniature: a ModuleDict, a ModuleList of blocks with a causal buffer, tied head."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln = nn.LayerNorm(4)
            self.attn = nn.Linear(4, 4)
            self.register_buffer("bias", torch_like.tril(torch_like.ones(3, 3)))
            self.register_buffer("cache", torch_like.zeros(2), persistent=False)

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(5, 4), h=nn.ModuleList([Block() for _ in range(2)]), ln_f=nn.LayerNorm(4)))
            self.lm_head = nn.Linear(4, 5, bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT

    return GPT()


def names(pairs) -> list[str]:
    return [name for name, _ in pairs]


def test_names_of_a_tied_model_match_pytorch(torch) -> None:
    ours, theirs = tied_gpt(nn, mt), tied_gpt(torch.nn, torch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert "transformer.wte.weight" in ours.state_dict() and "lm_head.weight" in ours.state_dict()
    assert names(ours.named_parameters()) == names(theirs.named_parameters())
    every = names(ours.named_parameters(remove_duplicate=False))
    assert every == names(theirs.named_parameters(remove_duplicate=False))
    assert names(ours.named_modules()) == names(theirs.named_modules())
    assert names(ours.named_buffers()) == names(theirs.named_buffers())
    assert names(ours.named_children()) == names(theirs.named_children())
    assert names(ours.transformer.h[0].named_parameters(recurse=False)) == []
    assert len(list(ours.lm_head.parameters(recurse=False))) == len(list(theirs.lm_head.parameters(recurse=False))) == 1
    order, torch_order = [], []
    ours.apply(lambda m: order.append(type(m).__name__))
    theirs.apply(lambda m: torch_order.append(type(m).__name__))
    assert order == torch_order


def test_state_dict_shares_memory_so_copy_loads_weights() -> None:
    model = tied_gpt(nn, mt)
    sd = model.state_dict()
    assert all(isinstance(v, mt.Tensor) and not v.requires_grad for v in sd.values())
    sd["lm_head.weight"].copy_(mt.ones(5, 4))
    np.testing.assert_array_equal(model.transformer.wte.weight.data, np.ones((5, 4)))  # tied: both names
    np.testing.assert_array_equal(sd["transformer.wte.weight"], np.ones((5, 4)))
    assert np.shares_memory(sd["transformer.h.0.bias"].data, model.transformer.h[0].bias.data)


def test_load_state_dict_reports_keys_like_pytorch(torch) -> None:
    ours, theirs = tied_gpt(nn, mt), tied_gpt(torch.nn, torch)
    sd = {k: np.asarray(v.detach()) for k, v in theirs.state_dict().items()}
    assert tuple(ours.load_state_dict(sd)) == ([], [])
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(v, sd[k], err_msg=k)
    partial = {k: v for k, v in sd.items() if not k.startswith("transformer.h.1")}
    partial["extra.weight"] = np.zeros(2)
    result = ours.load_state_dict(partial, strict=False)
    expected = theirs.load_state_dict({k: torch.from_numpy(v) for k, v in partial.items()}, strict=False)
    assert result.missing_keys == expected.missing_keys and result.unexpected_keys == expected.unexpected_keys
    with pytest.raises(ValueError, match=r"missing keys \['transformer.h.1.bias', 'transformer.h.1.ln.weight'"):
        ours.load_state_dict(partial)


def test_load_state_dict_checks_every_shape_and_dtype_before_copying() -> None:
    model = tied_gpt(nn, mt)
    sd = {k: np.full(v.shape, 7.0, np.float32) for k, v in model.state_dict().items()}
    sd["transformer.ln_f.bias"] = np.zeros(5)
    before = model.transformer.wte.weight.data.copy()
    with pytest.raises(ValueError, match=r"ln_f.bias has shape \(5,\) in the state but \(4,\) in the model"):
        model.load_state_dict(sd)
    np.testing.assert_array_equal(model.transformer.wte.weight.data, before)  # nothing was copied
    sd["transformer.ln_f.bias"] = np.array(["a"] * 4)
    with pytest.raises(TypeError, match=r"transformer.ln_f.bias has dtype <U1 in the state"):
        model.load_state_dict(sd)
    version = model.lm_head.weight._version.value
    sd["transformer.ln_f.bias"] = np.zeros(4)
    model.load_state_dict(sd)
    assert model.lm_head.weight._version.value > version  # an in-place change, as copy_ under no_grad


def test_buffers_register_persist_follow_to_and_reassignment() -> None:
    model = tied_gpt(nn, mt)
    block = model.transformer.h[0]
    assert isinstance(block.bias, mt.Tensor) and "transformer.h.0.cache" not in model.state_dict()
    assert len(list(model.buffers())) == 4
    block.bias = block.bias[:2, :2]  # nanoGPT's crop_block_size reassigns a buffer: it stays registered
    assert model.state_dict()["transformer.h.0.bias"].shape == (2, 2)
    assert model.double() is model
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert all(b.dtype == np.float64 for b in model.buffers())
    model.float()
    assert block.cache.dtype == np.float32
    with pytest.raises(TypeError, match="buffer 'bias' must be a Tensor or None, got list"):
        block.bias = [1.0]
    with pytest.raises(KeyError, match="attribute 'ln' already exists"):
        block.register_buffer("ln", mt.zeros(1))
    with pytest.raises(KeyError, match="without '.'"):
        block.register_buffer("a.b", mt.zeros(1))
    with pytest.raises(TypeError, match="cannot assign a Tensor to 'weight', which holds a Parameter"):
        block.ln.weight = mt.zeros(4)
    del block.cache
    assert "cache" not in dict(block.named_buffers())


def test_to_cpu_and_dtypes() -> None:
    model = nn.Linear(3, 2)
    assert model.to("cpu") is model and model.to(mt.device("cpu")) is model and model.cpu() is model
    with pytest.raises(ValueError, match="Module.to: device 'cuda' is not available; microtensor runs on the CPU only"):
        model.to("cuda")
    with pytest.raises(ValueError, match="CPU only"):
        model.cuda()
    with pytest.raises(TypeError, match="only floating-point dtypes are accepted, got int64"):
        model.to(mt.long)
    model.to("cpu", mt.float64)
    assert model.weight.dtype == np.float64
    model.to(dtype="float32")
    assert model.weight.dtype == np.float32


def test_modes_requires_grad_and_zero_grad() -> None:
    model = tied_gpt(nn, mt)
    assert not model.eval().transformer.h[1].ln.training
    with pytest.raises(ValueError, match="mode must be a bool"):
        model.train("yes")
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())
    model.requires_grad_()
    w = model.lm_head.weight
    w.grad = np.ones(w.shape)
    model.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(w.grad, np.zeros(w.shape))
    model.zero_grad()
    assert w.grad is None


def test_containers() -> None:
    layers = nn.ModuleList([nn.Linear(2, 2), nn.ReLU()])
    layers.insert(1, nn.GELU())
    layers += [nn.Tanh()]
    assert [type(m).__name__ for m in layers] == ["Linear", "GELU", "ReLU", "Tanh"]
    assert isinstance(layers[-1], nn.Tanh) and [type(m).__name__ for m in layers[1:3]] == ["GELU", "ReLU"]
    del layers[0]
    assert names(layers.named_children()) == ["0", "1", "2"] and len(list(layers.parameters())) == 0
    layers[0] = nn.Linear(2, 3)
    assert names(layers.named_parameters()) == ["0.weight", "0.bias"]
    with pytest.raises(IndexError, match="index 5 is out of range for 3 modules"):
        layers[5]
    seq = nn.Sequential({"fc": nn.Linear(2, 3), "act": nn.ReLU()})
    assert names(seq.named_parameters()) == ["fc.weight", "fc.bias"] and isinstance(seq[-1], nn.ReLU)
    assert names(seq[:1].named_parameters()) == ["fc.weight", "fc.bias"]
    assert seq(mt.ones(4, 2)).shape == (4, 3)
    heads = nn.ModuleDict({"a": nn.Linear(2, 2)})
    heads["b"] = nn.Linear(2, 1)
    assert list(heads) == ["a", "b"] and "b" in heads and len(heads) == 2
    assert names(heads.named_parameters()) == ["a.weight", "a.bias", "b.weight", "b.bias"]
    assert isinstance(heads.pop("a"), nn.Linear) and list(heads.keys()) == ["b"]
    with pytest.raises(KeyError, match="ModuleDict has no module 'a'; it has \\['b'\\]"):
        heads["a"]
    with pytest.raises(KeyError, match="attribute 'update' already exists"):
        heads["update"] = nn.ReLU()
    heads.clear()
    assert len(heads) == 0 and list(heads.parameters()) == []
