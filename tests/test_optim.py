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


def test_optimizer_load_state_dict_missing_key() -> None:
    opt = optim.Adam([mt.zeros(2, requires_grad=True)])
    state = opt.state_dict()
    del state["state0.m"]
    with pytest.raises(ValueError, match="missing key 'state0.m'"):
        optim.Adam([mt.zeros(2, requires_grad=True)]).load_state_dict(state)


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
