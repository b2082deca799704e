"""A small CNN trained on scikit-learn's bundled digits (8x8 images), with real test accuracy.

Training takes a few seconds; the weights are cached in pytest's cache directory, keyed by a hash
of everything that shapes them, so later runs load them.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from pytest_modelopt import ModelSpec

SEED = 0
EPOCHS = 40


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test images (N, 1, 8, 8) scaled to [0, 1], and their labels."""
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, data.target, test_size=0.2, random_state=SEED, stratify=data.target
    )
    return (
        torch.from_numpy(x_train),
        torch.from_numpy(x_test),
        torch.from_numpy(y_train),
        torch.from_numpy(y_test),
    )


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = EPOCHS) -> nn.Module:
    torch.manual_seed(SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def trained_digits_cnn(cache_dir: Path) -> nn.Module:
    key = hashlib.sha256(
        (inspect.getsource(DigitsCNN) + inspect.getsource(train) + f"{SEED}-{EPOCHS}").encode()
        + torch.__version__.encode()
    ).hexdigest()[:12]
    path = cache_dir / f"digits-cnn-{key}.pt"
    torch.manual_seed(SEED)
    model = DigitsCNN()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    x_train, _, y_train, _ = digits_split()
    train(model, x_train, y_train)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model


def digits_spec(cache_dir: Path) -> ModelSpec:
    x_train, x_test, _, y_test = digits_split()
    return ModelSpec.from_torch(
        "digits_cnn",
        lambda: trained_digits_cnn(cache_dir),
        example_input=x_test[:1],
        calibration_data=list(x_train[:512].split(64)),
        eval_data=list(zip(x_test.split(120), y_test.split(120), strict=True)),
        description="CNN trained on scikit-learn digits (8x8), real test accuracy",
    )
