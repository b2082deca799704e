"""Small torch helpers shared by specs and techniques. Importing this module imports torch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Any]) -> None:
    """Recompute every BatchNorm's running statistics as the plain average over ``batches``.

    Random-init models have unit running statistics that do not match their activations; after
    this, activations have the scale a trained model's would, which is what quantization
    calibrates on.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch counts equally
    model.train()
    with torch.no_grad():
        for batch in batches:
            call_model(model, batch)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


def call_model(model: Any, batch: Any) -> Any:
    """Call ``model`` on a batch; a tuple batch is spread over positional arguments."""
    return model(*batch) if isinstance(batch, tuple) else model(batch)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """Return the total and non-zero counts of the model's parameters (buffers left out)."""
    total = nonzero = 0
    for tensor in model.parameters():
        total += tensor.numel()
        nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


def output_tensor(output: Any) -> torch.Tensor:
    """Return the prediction of a model output: the output itself, or the first of a tuple."""
    prediction: torch.Tensor = output[0] if isinstance(output, (tuple, list)) else output
    return prediction


def parameter_count(model: nn.Module) -> int:
    """Return the number of parameters of ``model`` (buffers not counted)."""
    return sum(p.numel() for p in model.parameters())


def classifier_layer(model: nn.Module, example: Any) -> nn.Module | None:
    """Return the last Linear or Conv2d whose output width is the model's: pruning spares it."""
    with torch.no_grad():
        width = output_tensor(call_model(model.eval(), example)).shape[-1]
    candidates = [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == width)
        or (isinstance(m, nn.Conv2d) and m.out_channels == width)
    ]
    return candidates[-1] if candidates else None


def fine_tune(
    model: nn.Module,
    batches: Sequence[tuple[Any, Any]],
    *,
    steps: int,
    lr: float,
    loss: Callable[[Any, Any, Any], torch.Tensor] | None = None,
    max_seconds: float | None = None,
) -> int:
    """Train ``model`` for up to ``steps`` steps (cycling over ``batches``); the steps taken.

    ``loss(outputs, labels, inputs)`` defaults to cross-entropy against the labels.
    """
    if steps <= 0:
        return 0
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss = loss or (lambda out, labels, _: nn.functional.cross_entropy(out, labels))
    start = time.perf_counter()
    model.train()
    taken = 0
    with torch.enable_grad():
        while taken < steps:
            for inputs, labels in batches:
                optimizer.zero_grad()
                loss(output_tensor(call_model(model, inputs)), labels, inputs).backward()
                optimizer.step()
                taken += 1
                out_of_time = max_seconds is not None and time.perf_counter() - start > max_seconds
                if taken >= steps or out_of_time:
                    model.eval()
                    return taken
    model.eval()
    return taken


def save_module(model: nn.Module, path: Path) -> Path:
    """Save a whole module (architecture and weights): for models whose layers were rebuilt."""
    torch.save(model, path)
    return path


def training_batches(spec: Any, technique: str) -> list[tuple[Any, Any]]:
    """Return the spec's ``train_data``, or raise TrainingDataMissing naming ``technique``."""
    from pytest_modelopt.errors import TrainingDataMissing

    if not spec.train_data:
        raise TrainingDataMissing(
            f"{technique} trains {spec.name}, whose ModelSpec has no train_data: pass "
            "train_data=[(inputs, labels), ...] batches (labels may be None for distilled)"
        )
    return list(spec.train_data)
