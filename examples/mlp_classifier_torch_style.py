"""An MLP classifier on two interleaved spirals, written as a PyTorch user writes one.

    python examples/mlp_classifier_torch_style.py [--epochs 40]           # microtensor
    EXAMPLES_BACKEND=torch python examples/mlp_classifier_torch_style.py   # the same program on PyTorch

Only the import lines below differ between the two: nn.Sequential, CrossEntropyLoss,
a DataLoader over a TensorDataset, Adam, and accuracy through argmax.
"""

import argparse
import os

import numpy as np

BACKEND = os.environ.get("EXAMPLES_BACKEND", "microtensor")
if BACKEND == "torch":
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset
else:
    import microtensor as torch
    import microtensor.nn as nn
    from microtensor.utils.data import DataLoader, TensorDataset


def spirals(n, seed=0):
    """n points on two noisy interleaved spirals (float32 features, int64 labels)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    t = rng.uniform(0.25, 1.0, n) * 3 * np.pi
    angle = t + np.pi * label
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) / (3 * np.pi)
    x += rng.normal(0.0, 0.02, x.shape)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(label.astype(np.int64))


def make_model(hidden=32, classes=2):
    return nn.Sequential(
        nn.Linear(2, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def train_epoch(model, loader, criterion, optimizer):
    """One pass over the loader; returns the loss of every batch."""
    model.train()
    losses = []
    for xb, yb in loader:
        loss = criterion(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item()


def main(epochs=40, seed=0):
    torch.manual_seed(seed)
    x_train, y_train = spirals(512, seed)
    x_test, y_test = spirals(512, seed + 1)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=32, shuffle=True)
    model = make_model()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(1, epochs + 1):
        losses = train_epoch(model, loader, criterion, optimizer)
        if epoch % 10 == 0:
            print(f"epoch {epoch:3d}  loss {sum(losses) / len(losses):.4f}")
    train_acc, test_acc = accuracy(model, x_train, y_train), accuracy(model, x_test, y_test)
    print(f"train accuracy: {train_acc:.3f}")
    print(f"test accuracy: {test_acc:.3f}")
    return train_acc, test_acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    main(args.epochs)
