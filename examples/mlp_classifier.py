"""Train a small MLP on two interleaved spirals with Adam and report held-out accuracy.

    python examples/mlp_classifier.py [--steps 300] [--seed 0]

Runs in a few seconds on a laptop CPU; prints the loss as it trains and the
final train and test accuracy.
"""

from __future__ import annotations

import argparse

import numpy as np

import microtensor as mt
import microtensor.nn as nn
import microtensor.nn.functional as F
from microtensor import optim


def spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n points on two interleaved noisy spirals, labelled 0 and 1: not linearly separable."""
    label = rng.integers(0, 2, n)
    t = rng.uniform(0.25, 1.0, n) * 3 * np.pi
    angle = t + np.pi * label
    radius = t / (3 * np.pi)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    x += rng.normal(0.0, 0.02, x.shape)
    return x.astype(np.float32), label


class MLP(nn.Module):
    """Two hidden GELU layers and a linear head producing class logits."""

    def __init__(self, hidden: int, classes: int, generator: np.random.Generator) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, hidden, generator=generator),
            nn.GELU(),
            nn.Linear(hidden, hidden, generator=generator),
            nn.GELU(),
            nn.Linear(hidden, classes, generator=generator),
        )

    def forward(self, x: mt.Tensor) -> mt.Tensor:
        return self.net(x)


@mt.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of points whose highest logit is the true class."""
    return float((model(mt.tensor(x)).argmax(dim=-1).data == y).mean())


def main(steps: int = 300, seed: int = 0, verbose: bool = True) -> dict[str, float]:
    """Train and return {'train_accuracy', 'test_accuracy', 'loss'}."""
    rng = np.random.default_rng(seed)
    x_train, y_train = spirals(400, rng)
    x_test, y_test = spirals(400, rng)
    model = MLP(hidden=32, classes=2, generator=rng)
    opt = optim.Adam(model.parameters(), lr=0.01)
    schedule = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-3)
    inputs = mt.tensor(x_train)
    for step in range(1, steps + 1):
        loss = F.cross_entropy(model(inputs), y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if verbose and step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}  lr {schedule.get_last_lr()[0]:.5f}")
    result = {
        "loss": loss.item(),
        "train_accuracy": accuracy(model, x_train, y_train),
        "test_accuracy": accuracy(model, x_test, y_test),
    }
    if verbose:
        print(f"train accuracy: {result['train_accuracy']:.3f}")
        print(f"test accuracy: {result['test_accuracy']:.3f}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.steps, args.seed)
