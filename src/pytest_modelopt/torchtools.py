"""Small torch helpers shared by specs and techniques. Importing this module imports torch."""

from __future__ import annotations

from collections.abc import Iterable
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
    """Total and non-zero parameter counts."""
    total = nonzero = 0
    for tensor in model.state_dict().values():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            total += tensor.numel()
            nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero
