"""Tiny real models for the technique tests: trained in a second, on a rule they can learn."""

import torch
from torch import nn

from pytest_modelopt import MeasureSettings, ModelSpec

QUICK = MeasureSettings(threads=1, warmup_s=0.02, warmup_calls=3, max_time=0.2)


class MLP(nn.Module):
    def __init__(self, linear: type[nn.Linear] = nn.Linear) -> None:
        super().__init__()
        self.body = nn.Sequential(linear(16, 64), nn.ReLU(), linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ConvOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


class ConvNet(nn.Module):
    """A convolution, then a linear layer: operators every runtime names (conv, matmul)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def conv_spec() -> ModelSpec:
    """An untrained ConvNet on 16x16 images: for what does not need a learned rule (profiles)."""
    generator = torch.Generator().manual_seed(5)

    def factory() -> nn.Module:
        torch.manual_seed(0)
        return ConvNet().eval()

    return ModelSpec.from_torch(
        "convnet",
        factory,
        example_input=torch.randn(2, 3, 16, 16, generator=generator),
        eval_data=[(torch.randn(8, 3, 16, 16, generator=generator), None)],
    )


def trained_mlp(linear: type[nn.Linear] = nn.Linear) -> nn.Module:
    """A tiny classifier of a real rule: which of the first 10 inputs is the largest."""
    torch.manual_seed(0)
    model = MLP(linear)
    x = torch.randn(2048, 16)
    y = x[:, :10].argmax(dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def mlp_spec(linear: type[nn.Linear] = nn.Linear) -> ModelSpec:
    generator = torch.Generator().manual_seed(1)
    return ModelSpec.from_torch(
        "mlp",
        lambda: trained_mlp(linear),
        example_input=torch.randn(4, 16, generator=generator),
        eval_data=[(torch.randn(256, 16, generator=generator), None)],
    )


def labelled_batches(
    count: int, seed: int, size: int = 64
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fresh batches of the MLP's rule, with labels: training data for the techniques that train."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count * size, 16, generator=generator)
    return list(zip(x.split(size), x[:, :10].argmax(dim=1).split(size), strict=True))


def trainable_mlp_spec() -> ModelSpec:
    """The trained MLP with calibration and training batches (and labelled eval data)."""
    spec = mlp_spec()
    test = labelled_batches(2, seed=2, size=256)
    return ModelSpec.from_torch(
        "mlp",
        spec.factory,
        example_input=spec.example_input,
        calibration_data=[x for x, _ in labelled_batches(8, seed=3)],
        train_data=labelled_batches(16, seed=4),
        eval_data=test,
    )


# Unit roundoff of each execution precision a runtime may state (OpenVINO's names and ours).
UNIT_ROUNDOFF = {"f32": 2**-24, "fp32": 2**-24, "bf16": 2**-8, "f16": 2**-11, "fp16": 2**-11}


def agreement_tolerance(precision: str, expected) -> float:
    """The largest output difference from an fp32 reference that a variant running in
    ``precision`` may show: 1e-4 in fp32 (different kernels sum in another order), else a few
    rounding steps of the precision at the scale of the largest output (bf16 keeps about 3
    significant digits, so a 10.0 logit may come back 0.1 off)."""
    import numpy as np

    if precision not in UNIT_ROUNDOFF:
        raise ValueError(f"no tolerance known for precision {precision!r}")
    scale = float(np.abs(np.asarray(expected)).max())
    return max(1e-4, 16 * UNIT_ROUNDOFF[precision] * scale)
