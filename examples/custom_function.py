"""A user-written op: Swish (x * sigmoid(beta * x)) as an `mt.Function` with its own backward.

    python examples/custom_function.py

The Function is gradchecked in float64 against finite differences, then used
as the activation of a small network fitted to sin(x); prints both results.
"""

from __future__ import annotations

import numpy as np

import microtensor as mt
import microtensor.nn as nn
import microtensor.nn.functional as F
from microtensor import optim


class Swish(mt.Function):
    """swish(x) = x * sigmoid(beta * x); the gradient reuses the saved sigmoid instead of recomputing it."""

    @staticmethod
    def forward(ctx, x: np.ndarray, beta: float = 1.0) -> np.ndarray:
        s = 0.5 * (np.tanh(0.5 * beta * x) + 1.0)  # sigmoid without overflow
        ctx.save_for_backward(x, s)
        ctx.beta = beta
        return x * s

    @staticmethod
    def backward(ctx, grad: np.ndarray) -> np.ndarray:
        x, s = ctx.saved_tensors
        return grad * (s + ctx.beta * x * s * (1.0 - s))


class SwishLayer(nn.Module):
    """The custom Function wrapped as a layer, so it drops into nn.Sequential."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: mt.Tensor) -> mt.Tensor:
        return Swish.apply(x, beta=self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


def check_gradient(seed: int = 0) -> bool:
    """Finite-difference check of Swish's backward in float64, for two values of beta."""
    rng = np.random.default_rng(seed)
    x = mt.tensor(rng.standard_normal((4, 5)), requires_grad=True)
    return all(mt.gradcheck(lambda t, b=beta: Swish.apply(t, beta=b), [x]) for beta in (1.0, 1.7))


def fit_sine(steps: int = 400, seed: int = 0) -> tuple[float, float]:
    """Fit sin(x) on [-pi, pi] with a Swish MLP; return (initial loss, final loss)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-np.pi, np.pi, 128, dtype=np.float32)[:, None]
    y = np.sin(x)
    model = nn.Sequential(
        nn.Linear(1, 32, generator=rng),
        SwishLayer(),
        nn.Linear(32, 32, generator=rng),
        SwishLayer(beta=1.5),
        nn.Linear(32, 1, generator=rng),
    )
    opt = optim.Adam(model.parameters(), lr=0.01)
    inputs, targets = mt.tensor(x), mt.tensor(y)
    first = None
    for _ in range(steps):
        loss = F.mse_loss(model(inputs), targets)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with mt.no_grad():
        final = F.mse_loss(model(inputs), targets).item()
    return first, final


def main() -> dict[str, float]:
    ok = check_gradient()
    print(f"gradcheck: {ok}")
    first, final = fit_sine()
    print(f"mse: {first:.4f} -> {final:.5f}")
    return {"gradcheck": ok, "initial_mse": first, "final_mse": final}


if __name__ == "__main__":
    main()
