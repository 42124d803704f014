"""Optimizers against PyTorch's update rules written out, clipping, schedules, state, an MLP that learns."""

from __future__ import annotations

import math

import numpy as np
import pytest

import microtensor as mt
import microtensor.nn as nn
import microtensor.nn.functional as F
from microtensor import optim
from microtensor.optim import lr_scheduler


def params_with_grads(rng: np.random.Generator, steps: int) -> tuple[list, list]:
    """Two float64 parameters and a list of per-step gradients for each."""
    params = [mt.tensor(rng.standard_normal(shape), requires_grad=True) for shape in ((3, 2), (4,))]
    grads = [[rng.standard_normal(p.shape) for p in params] for _ in range(steps)]
    return params, grads


def run(opt, params: list, grads: list) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.copy()
        opt.step()


def sgd_reference(x, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """PyTorch's SGD rule, written out for one array."""
    x, buf = x.copy(), None
    for g in grads:
        g = g + weight_decay * x
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        x = x - lr * g
    return x


def adam_reference(x, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    """PyTorch's Adam/AdamW rule, written out for one array."""
    x, m, v = x.copy(), np.zeros_like(x), np.zeros_like(x)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            x = x * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * x
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        x = x - lr * m_hat / (np.sqrt(v_hat) + eps)
    return x


SGD_SETTINGS = {
    "plain": {"lr": 0.1},
    "momentum": {"lr": 0.05, "momentum": 0.9},
    "momentum_dampening": {"lr": 0.05, "momentum": 0.8, "dampening": 0.3},
    "nesterov": {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    "weight_decay": {"lr": 0.1, "weight_decay": 0.01},
    "all": {"lr": 0.02, "momentum": 0.5, "weight_decay": 0.1, "nesterov": True},
}


@pytest.mark.parametrize("setting", sorted(SGD_SETTINGS))
def test_sgd_matches_pytorch_rule(setting: str, rng: np.random.Generator) -> None:
    kwargs = SGD_SETTINGS[setting]
    params, grads = params_with_grads(rng, steps=4)
    start = [p.data.copy() for p in params]
    run(optim.SGD(params, **kwargs), params, grads)
    for i, p in enumerate(params):
        expected = sgd_reference(start[i], [g[i] for g in grads], **kwargs)
        np.testing.assert_allclose(p.data, expected, rtol=1e-12)


ADAM_SETTINGS = {
    "adam": (optim.Adam, {"lr": 0.01}),
    "adam_betas_eps": (optim.Adam, {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6}),
    "adam_l2": (optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    "adamw_default_decay": (optim.AdamW, {"lr": 0.01}),
    "adamw_decay": (optim.AdamW, {"lr": 0.02, "weight_decay": 0.3}),
}


@pytest.mark.parametrize("setting", sorted(ADAM_SETTINGS))
def test_adam_and_adamw_match_pytorch_rule(setting: str, rng: np.random.Generator) -> None:
    cls, kwargs = ADAM_SETTINGS[setting]
    params, grads = params_with_grads(rng, steps=5)
    start = [p.data.copy() for p in params]
    opt = cls(params, **kwargs)
    run(opt, params, grads)
    ref = dict(kwargs)
    ref.setdefault("weight_decay", 0.01 if cls is optim.AdamW else 0.0)
    for i, p in enumerate(params):
        expected = adam_reference(start[i], [g[i] for g in grads], decoupled=cls is optim.AdamW, **ref)
        np.testing.assert_allclose(p.data, expected, rtol=1e-10)


def test_pytorch_defaults() -> None:
    p = [mt.zeros(2, requires_grad=True)]
    assert optim.Adam(p).defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    assert optim.AdamW(p).defaults["weight_decay"] == 0.01
    assert optim.SGD(p).defaults["momentum"] == 0.0


def test_adam_skips_parameters_without_grad_and_counts_their_steps_apart(rng: np.random.Generator) -> None:
    params, grads = params_with_grads(rng, steps=3)
    start = [p.data.copy() for p in params]
    opt = optim.Adam(params, lr=0.01)
    params[0].grad = grads[0][0].copy()
    opt.step()  # only the first parameter moves
    np.testing.assert_array_equal(params[1].data, start[1])
    run(opt, params, grads[1:])
    first = adam_reference(start[0], [g[0] for g in grads], 0.01)
    second = adam_reference(start[1], [g[1] for g in grads[1:]], 0.01)  # its step count starts later
    np.testing.assert_allclose(params[0].data, first, rtol=1e-10)
    np.testing.assert_allclose(params[1].data, second, rtol=1e-10)


def test_adam_updates_module_parameters_in_place() -> None:
    model = nn.Linear(3, 2)
    opt = optim.Adam(model.parameters(), lr=0.1)
    before = model.weight.data.copy()
    model(mt.ones(4, 3)).sum().backward()
    opt.step()
    assert not np.allclose(model.weight.data, before)
    model.load_state_dict({"weight": np.zeros((2, 3)), "bias": np.zeros(2)})
    assert np.all(model.weight.data == 0)
    model(mt.ones(4, 3)).sum().backward()
    opt.step()  # the optimizer sees the loaded values: a step from zero moves by about lr
    np.testing.assert_allclose(np.abs(model.weight.data), 0.1, rtol=0.2)


def test_zero_grad_set_to_none_or_zero() -> None:
    p = mt.tensor(np.ones(3), requires_grad=True)
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.ones(3)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, np.zeros(3))
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # no gradient: nothing changes, no error
    np.testing.assert_array_equal(p.data, np.ones(3))


def test_adam_in_place_zero_grad_gives_the_same_steps_as_set_to_none() -> None:
    """zero_grad(set_to_none=False) makes gradients views of Adam's flat buffer; the numbers must not change."""
    def run(set_to_none: bool) -> list[np.ndarray]:
        model = nn.Sequential(nn.Linear(3, 4, generator=np.random.default_rng(0)), nn.ReLU(), nn.Linear(4, 2))
        model[2].load_state_dict({"weight": np.full((2, 4), 0.3), "bias": np.zeros(2)})
        opt = optim.Adam(model.parameters(), lr=0.05)
        x = mt.tensor(np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32))
        for _ in range(4):
            opt.zero_grad(set_to_none=set_to_none)
            (model(x) ** 2).mean().backward()
            opt.step()
        return [p.data.copy() for p in model.parameters()]

    for in_place, fresh in zip(run(False), run(True)):
        np.testing.assert_array_equal(in_place, fresh)


def test_param_groups_have_their_own_hyperparameters() -> None:
    a, b = mt.tensor(np.ones(2), requires_grad=True), mt.tensor(np.ones(2), requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, [0.9, 0.9])
    np.testing.assert_allclose(b.data, [0.0, 0.0])


def test_clip_grad_norm_returns_total_norm_and_scales() -> None:
    a, b = mt.tensor(np.zeros(2), requires_grad=True), mt.tensor(np.zeros(1), requires_grad=True)
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    total = optim.clip_grad_norm_([a, b], max_norm=1.0)
    assert total == pytest.approx(5.0)
    np.testing.assert_allclose(np.sqrt(float((a.grad**2).sum() + (b.grad**2).sum())), 1.0, rtol=1e-5)
    np.testing.assert_allclose(a.grad / b.grad[0], [0.75, 0.0])
    a.grad = np.array([0.3, 0.4])
    assert optim.clip_grad_norm_([a], max_norm=1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(a.grad, [0.3, 0.4])  # below the limit: untouched
    a.grad = np.array([-3.0, 2.0])
    assert optim.clip_grad_norm_([a], max_norm=1.0, norm_type=math.inf) == pytest.approx(3.0)
    np.testing.assert_allclose(a.grad, [-1.0, 2.0 / 3.0], rtol=1e-5)
    assert optim.clip_grad_norm_([mt.zeros(1, requires_grad=True)], 1.0) == 0.0


def lrs(scheduler, optimizer, steps: int) -> list[float]:
    """The lr before each of `steps` optimizer steps, as a training loop sees it."""
    seen = []
    for _ in range(steps):
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return seen


def new_opt(lr: float = 1.0):
    return optim.SGD([mt.zeros(1, requires_grad=True)], lr=lr)


def test_step_lr() -> None:
    opt = new_opt(1.0)
    np.testing.assert_allclose(lrs(lr_scheduler.StepLR(opt, step_size=2, gamma=0.5), opt, 6),
                               [1.0, 1.0, 0.5, 0.5, 0.25, 0.25])


def test_cosine_annealing_lr() -> None:
    opt = new_opt(1.0)
    seen = lrs(lr_scheduler.CosineAnnealingLR(opt, T_max=4, eta_min=0.1), opt, 5)
    expected = [0.1 + 0.9 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)]
    np.testing.assert_allclose(seen, expected)
    assert seen[-1] == pytest.approx(0.1)


def test_linear_warmup_then_cosine_with_sequential_lr() -> None:
    opt = new_opt(0.1)
    warm = lr_scheduler.LinearLR(opt, start_factor=0.25, end_factor=1.0, total_iters=3)
    cos = lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    sched = lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[3])
    seen = lrs(sched, opt, 8)
    expected = [0.025, 0.05, 0.075] + [0.1 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)]
    np.testing.assert_allclose(seen, expected, atol=1e-12)
    assert opt.param_groups[0]["lr"] == sched.get_last_lr()[0]


def test_scheduler_state_round_trip() -> None:
    opt = new_opt(1.0)
    sched = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    lrs(sched, opt, 3)
    opt2 = new_opt(1.0)
    sched2 = lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr() == [0.125]


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW, optim.SGD])
def test_optimizer_state_dict_round_trip(cls, rng: np.random.Generator, tmp_path) -> None:
    kwargs = {"lr": 0.05, "momentum": 0.9} if cls is optim.SGD else {"lr": 0.05}
    params, grads = params_with_grads(rng, steps=6)
    twin = [mt.tensor(p.data.copy(), requires_grad=True) for p in params]
    opt = cls(params, **kwargs)
    run(opt, params, grads[:3])
    for p, q in zip(params, twin, strict=True):
        q.data[...] = p.data
    mt.save(opt.state_dict(), tmp_path / "opt.npz")
    resumed = cls(twin, lr=123.0)  # hyperparameters come back from the state too
    resumed.load_state_dict(mt.load(tmp_path / "opt.npz"))
    assert resumed.param_groups[0]["lr"] == 0.05
    run(opt, params, grads[3:])
    run(resumed, twin, grads[3:])
    for p, q in zip(params, twin, strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_optimizer_load_state_dict_missing_entry() -> None:
    opt = optim.Adam([mt.zeros(2, requires_grad=True)])
    opt.param_groups[0]["params"][0].grad = np.ones(2)
    opt.step()
    state = opt.state_dict()
    del state["state"][0]["exp_avg"]
    with pytest.raises(ValueError, match=r"state\[0\] must be a dict with the entries \['step', 'exp_avg'"):
        optim.Adam([mt.zeros(2, requires_grad=True)]).load_state_dict(state)
    with pytest.raises(ValueError, match="expected a dict with 'state' and 'param_groups'"):
        opt.load_state_dict({"group0.lr": 0.1})


def make_blobs(rng: np.random.Generator, n: int = 600, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Points on noisy concentric rings, one ring per class: not linearly separable."""
    y = rng.integers(0, classes, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = 1.0 + y + rng.normal(0, 0.1, n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1) / classes
    return x.astype(np.float32), y


def test_mlp_with_adam_reaches_95_percent_in_under_300_steps() -> None:
    """Acceptance 3: a small MLP learns a synthetic 4-class task to > 95% accuracy within 300 Adam steps."""
    rng = np.random.default_rng(0)
    x, y = make_blobs(rng)
    g = np.random.default_rng(1)
    model = nn.Sequential(nn.Linear(2, 32, generator=g), nn.ReLU(), nn.Linear(32, 32, generator=g), nn.ReLU(),
                          nn.Linear(32, 4, generator=g))
    opt = optim.Adam(model.parameters(), lr=0.02)
    inputs = mt.tensor(x)
    accuracy, steps = 0.0, 0
    for steps in range(1, 300):
        loss = F.cross_entropy(model(inputs), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if steps % 10 == 0:
            with mt.no_grad():
                accuracy = float((model(inputs).argmax(-1).data == y).mean())
            if accuracy > 0.95:
                break
    assert accuracy > 0.95, f"accuracy {accuracy:.3f} after {steps} steps"
    assert steps < 300
    held_x, held_y = make_blobs(np.random.default_rng(2), n=300)
    with mt.no_grad():
        held = float((model(mt.tensor(held_x)).argmax(-1).data == held_y).mean())
    assert held > 0.9


# ---- PyTorch parity: parameter groups, state_dict, clipping ---------------------------------------


def twin_models(torch, seed: int = 0):
    """A small MLP in microtensor and in PyTorch with the same float32 weights, and named parameter lists."""
    g = np.random.default_rng(seed)
    ours = nn.Sequential(nn.Linear(4, 8, generator=g), nn.ReLU(), nn.Linear(8, 3, generator=g))
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            q.copy_(torch.from_numpy(p.data.copy()))
    return ours, theirs


def groups_of(params: list, lr_bias: float = 0.02) -> list[dict]:
    """Two groups as nanoGPT makes them: matrices decay, vectors do not (with their own lr)."""
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": lr_bias}]


def train_steps(model, opt, x, y, steps: int, loss_fn, on_step=None) -> list[float]:
    losses = []
    for i in range(steps):
        if on_step:
            on_step(i)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return losses


def batch(torch, seed: int = 1):
    g = np.random.default_rng(seed)
    x, y = g.standard_normal((16, 4)).astype(np.float32), g.integers(0, 3, 16)
    return (mt.tensor(x), y), (torch.from_numpy(x), torch.from_numpy(y))


def test_adamw_param_groups_and_lr_changes_match_pytorch(torch) -> None:
    ours, theirs = twin_models(torch)
    opt = optim.AdamW(groups_of(list(ours.parameters())), lr=0.01, betas=(0.9, 0.95))
    topt = torch.optim.AdamW(groups_of(list(theirs.parameters())), lr=0.01, betas=(0.9, 0.95))
    assert [g["weight_decay"] for g in opt.param_groups] == [g["weight_decay"] for g in topt.param_groups]

    def decay(o):
        return lambda i: [g.__setitem__("lr", g["lr"] * 0.8) for g in o.param_groups]

    (x, y), (tx, ty) = batch(torch)
    mine = train_steps(ours, opt, x, y, 5, F.cross_entropy, decay(opt))
    ref = train_steps(theirs, topt, tx, ty, 5, torch.nn.functional.cross_entropy, decay(topt))
    np.testing.assert_allclose(mine, ref, rtol=1e-5)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_optimizer_state_dict_matches_pytorch_and_resumes_identically(torch, tmp_path) -> None:
    ours, theirs = twin_models(torch)
    opt = optim.AdamW(groups_of(list(ours.parameters())), lr=0.01)
    topt = torch.optim.AdamW(groups_of(list(theirs.parameters())), lr=0.01)
    (x, y), (tx, ty) = batch(torch)
    train_steps(ours, opt, x, y, 3, F.cross_entropy)
    train_steps(theirs, topt, tx, ty, 3, torch.nn.functional.cross_entropy)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert list(sd) == list(tsd) == ["state", "param_groups"]
    assert list(sd["state"]) == list(tsd["state"])
    assert [g["params"] for g in sd["param_groups"]] == [g["params"] for g in tsd["param_groups"]]
    for i, state in sd["state"].items():
        assert list(state) == list(tsd["state"][i])
        assert float(state["step"]) == float(tsd["state"][i]["step"]) == 3.0
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(state[key], tsd["state"][i][key].numpy(), rtol=1e-4, atol=1e-9)
    mt.save({"model": ours.state_dict(), "optimizer": sd}, tmp_path / "ckpt.pt")
    ckpt = mt.load(tmp_path / "ckpt.pt")
    resumed, _ = twin_models(torch, seed=5)
    resumed.load_state_dict(ckpt["model"])
    opt2 = optim.AdamW(groups_of(list(resumed.parameters())), lr=123.0)
    opt2.load_state_dict(ckpt["optimizer"])
    assert [g["lr"] for g in opt2.param_groups] == [0.01, 0.02]
    np.testing.assert_array_equal(train_steps(resumed, opt2, x, y, 3, F.cross_entropy),
                                  train_steps(ours, opt, x, y, 3, F.cross_entropy))


def test_clip_grad_norm_matches_pytorch_and_returns_a_tensor(torch) -> None:
    ours, theirs = twin_models(torch)
    (x, y), (tx, ty) = batch(torch)
    F.cross_entropy(ours(x), y).backward()
    torch.nn.functional.cross_entropy(theirs(tx), ty).backward()
    for norm_type in (2.0, 1.0, math.inf):
        total = nn.utils.clip_grad_norm_(ours.parameters(), 0.05, norm_type=norm_type)
        ttotal = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.05, norm_type=norm_type)
        assert isinstance(total, mt.Tensor) and total.shape == () and total.dtype == np.float32
        np.testing.assert_allclose(float(total), float(ttotal), rtol=1e-5)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-5, atol=1e-8)
    nn.utils.clip_grad_value_(ours.parameters(), 1e-3)
    torch.nn.utils.clip_grad_value_(theirs.parameters(), 1e-3)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-5, atol=1e-8)
    assert float(nn.utils.clip_grad_norm_(mt.zeros(2, requires_grad=True), 1.0)) == 0.0


def test_sgd_state_dict_has_pytorch_layout(torch) -> None:
    ours, theirs = twin_models(torch)
    opt = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    (x, y), (tx, ty) = batch(torch)
    mine = train_steps(ours, opt, x, y, 3, F.cross_entropy)
    ref = train_steps(theirs, topt, tx, ty, 3, torch.nn.functional.cross_entropy)
    np.testing.assert_allclose(mine, ref, rtol=1e-5)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert list(sd["state"]) == list(tsd["state"]) and list(sd["state"][0]) == list(tsd["state"][0])
    np.testing.assert_allclose(sd["state"][1]["momentum_buffer"], tsd["state"][1]["momentum_buffer"], rtol=1e-5)


# ---- errors: options, gradients, state -------------------------------------------------------------


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"lr": math.nan}, ValueError, r"lr must be >= 0, got nan"),
    ({"lr": -1.0}, ValueError, r"lr must be >= 0, got -1.0"),
    ({"lr": "fast"}, TypeError, r"lr must be a real number, got 'fast'"),
    ({"eps": math.nan}, ValueError, r"eps must be > 0, got nan"),
    ({"eps": 0.0}, ValueError, r"eps must be > 0, got 0.0"),
    ({"betas": (1.5, 0.9)}, ValueError, r"beta1 must be in \[0, 1\), got 1.5"),
    ({"betas": (0.9, 1.0)}, ValueError, r"beta2 must be in \[0, 1\), got 1.0"),
    ({"betas": 0.9}, TypeError, r"betas must be a pair of numbers, got 0.9"),
    ({"weight_decay": -1.0}, ValueError, r"weight_decay must be >= 0, got -1.0"),
    ({"weight_decay": math.nan}, ValueError, r"weight_decay must be >= 0, got nan"),
])
def test_adam_options_are_checked(cls, kwargs, error, message) -> None:
    with pytest.raises(error, match=f"{cls.__name__}: {message}"):
        cls([mt.ones(3, requires_grad=True)], **kwargs)
    with pytest.raises(error, match=message):  # the same rule for a group's own options
        cls([{"params": [mt.ones(3, requires_grad=True)], **kwargs}])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lr": math.nan}, "lr must be >= 0"), ({"momentum": -0.5}, "momentum must be >= 0"),
    ({"weight_decay": math.nan}, "weight_decay must be >= 0"), ({"nesterov": True}, "nesterov needs momentum"),
])
def test_sgd_options_are_checked(kwargs, message) -> None:
    with pytest.raises(ValueError, match=f"SGD: {message}"):
        optim.SGD([mt.ones(3, requires_grad=True)], **kwargs)


def test_parameter_lists_are_checked() -> None:
    w = mt.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match=r"appears in more than one place"):
        optim.AdamW([{"params": [w]}, {"params": [w]}])
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([w * 2], lr=0.1)
    with pytest.raises(TypeError, match="parameters must be Tensors, got ndarray"):
        optim.Adam([np.ones(3)])
    with pytest.raises(TypeError, match="not a set"):
        optim.Adam([{"params": {w}}])


@pytest.mark.parametrize("cls", [optim.AdamW, optim.SGD])
def test_add_param_group_and_closure(cls) -> None:
    a, b = mt.zeros(2, requires_grad=True), mt.zeros(3, requires_grad=True)
    opt = cls([a], lr=0.1)
    opt.add_param_group({"params": b, "lr": 0.5})
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5] and opt.param_groups[1]["params"] == [b]

    def closure():
        opt.zero_grad()
        loss = a.sum() + b.sum()
        loss.backward()
        return loss

    assert float(opt.step(closure)) == 0.0
    assert a.data[0] < 0 and b.data[0] < a.data[0]  # both groups moved, the second further
    assert list(opt.state_dict()["state"]) == ([0, 1] if cls is optim.AdamW else [])


@pytest.mark.parametrize("cls", [optim.Adam, optim.SGD])
def test_gradient_of_another_shape_is_refused_at_step(cls) -> None:
    w = mt.ones(3, 4, requires_grad=True)
    opt = cls([w], lr=0.1)
    w.grad = np.ones((3, 4))
    w.grad.data = np.ones((4, 3))  # past the setter's check: step() still refuses it
    with pytest.raises(ValueError, match=r"parameter of shape \(3, 4\) has a gradient of shape \(4, 3\)"):
        opt.step()
    np.testing.assert_array_equal(w.data, np.ones((3, 4)))


def test_load_state_dict_checks_values_and_shapes_before_changing_anything() -> None:
    w = mt.ones(3, requires_grad=True)
    opt = optim.Adam([w], lr=0.1)
    w.grad = np.ones(3)
    opt.step()
    good = opt.state_dict()
    bad_lr = {"state": good["state"], "param_groups": [{**good["param_groups"][0], "lr": "fast"}]}
    with pytest.raises(TypeError, match=r"Adam.load_state_dict: param_groups\[0\]: lr must be a real number"):
        opt.load_state_dict(bad_lr)
    bad_shape = {"state": {0: {**good["state"][0], "exp_avg": np.zeros(4)}}, "param_groups": good["param_groups"]}
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] has shape \(4,\), the parameter \(3,\)"):
        opt.load_state_dict(bad_shape)
    with pytest.raises(ValueError, match=r"state key 7 is not the index of one of the 1 parameters"):
        opt.load_state_dict({"state": {7: good["state"][0]}, "param_groups": good["param_groups"]})
    with pytest.raises(ValueError, match=r"the state has 2 parameter groups, the optimizer 1"):
        opt.load_state_dict({"state": {}, "param_groups": good["param_groups"] * 2})
    assert opt.param_groups[0]["lr"] == 0.1


def test_step_bumps_parameter_versions_so_a_stale_graph_cannot_backward() -> None:
    for cls in (optim.Adam, optim.SGD):
        w = mt.ones(3, requires_grad=True)
        opt = cls([w], lr=0.1)
        loss = (w * w).sum()
        loss.backward(retain_graph=True)
        before = w._version.value
        opt.step()
        assert w._version.value == before + 1
        with pytest.raises(mt.AutogradError):
            loss.backward()


def test_in_place_zero_grad_keeps_gradients_in_the_flat_buffer() -> None:
    """The trainer's path: after zero_grad(set_to_none=False), backward writes into the optimizer's buffer."""
    model = nn.Linear(3, 2)
    opt = optim.AdamW(model.parameters(), lr=0.1)
    opt.zero_grad(set_to_none=False)
    grads = [p.grad for p in model.parameters()]
    model(mt.ones(4, 3)).sum().backward()
    flat = opt._flat[0]
    assert all(np.shares_memory(g.data, flat.grad) for g in grads)
    np.testing.assert_allclose(flat.grad[:6], np.full(6, 4.0))
    opt.zero_grad(set_to_none=False)
    assert [p.grad for p in model.parameters()] == grads and not flat.grad.any()
    frozen = nn.Linear(3, 2)
    frozen.bias.requires_grad_(False)
    bias = frozen.bias.data.copy()
    opt = optim.AdamW(frozen.parameters(), lr=0.1)
    opt.zero_grad(set_to_none=False)  # a frozen parameter gets no gradient, so AdamW's decay leaves it alone
    frozen(mt.ones(4, 3)).sum().backward()
    opt.step()
    assert frozen.bias.grad is None and frozen.weight.grad is not None
    np.testing.assert_array_equal(frozen.bias.data, bias)


def test_rebound_parameter_data_is_taken_back_by_the_optimizer() -> None:
    w = mt.zeros(2, requires_grad=True)
    opt = optim.SGD([w], lr=1.0)
    adam = optim.Adam([w], lr=0.1)  # a second optimizer over the same parameter
    w.data = np.array([5.0, 5.0], np.float32)
    w.grad = np.ones(2)
    adam.step()
    np.testing.assert_allclose(w.data, [4.9, 4.9])
    opt.step()
    np.testing.assert_allclose(w.data, [3.9, 3.9])
    model = nn.Linear(2, 2)
    adam = optim.Adam(model.parameters())
    model.double()
    model.weight.grad, model.bias.grad = np.ones((2, 2)), np.ones(2)
    with pytest.raises(ValueError, match="dtype float32 was given data of shape .2, 2. and dtype float64; make the"):
        adam.step()


def test_schedulers_follow_each_groups_lr_like_pytorch(torch) -> None:
    def lrs(lib, sched_of) -> list[list[float]]:
        a, b = lib.zeros(1, requires_grad=True), lib.zeros(1, requires_grad=True)
        opt = lib.optim.AdamW([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
        sched = sched_of(lib.optim.lr_scheduler, opt)
        seen = []
        for _ in range(6):
            seen.append([g["lr"] for g in opt.param_groups])
            opt.step()
            sched.step()
        return seen

    for sched_of in (lambda s, o: s.CosineAnnealingLR(o, T_max=5), lambda s, o: s.StepLR(o, 2, gamma=0.5),
                     lambda s, o: s.LinearLR(o, start_factor=0.2, total_iters=3)):
        np.testing.assert_allclose(lrs(mt, sched_of), lrs(torch, sched_of), rtol=1e-12)


def test_gradient_buffers_hold_whole_groups_and_name_the_rest():
    """What data-parallel training reduces: Adam's flat buffer per complete group, the other parameters loose."""
    a, b, c = (mt.tensor(np.full(n, float(n)), requires_grad=True) for n in (2, 3, 4))
    (a.sum() * 2 + b.sum() * 3).backward()  # c gets no gradient
    adam = mt.optim.Adam([{"params": [a, b]}, {"params": [c]}])
    buffers, loose = adam.gradient_buffers("test")
    assert len(buffers) == 1 and loose == [c]
    np.testing.assert_array_equal(buffers[0], [2, 2, 3, 3, 3])
    buffers[0] *= 10  # the buffer is the gradients' storage: a reduction in place reaches p.grad
    np.testing.assert_array_equal(b.grad.numpy(), [30, 30, 30])
    assert mt.optim.SGD([a, b], lr=0.1).gradient_buffers("test") == ([], [a, b])
