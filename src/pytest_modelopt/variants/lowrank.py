"""Low-rank factorization of large Linear and 1x1 Conv layers.

Each large Linear (and 1x1 Conv) is replaced by two thinner layers from its truncated SVD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_modelopt.errors import NoEffectError, ParameterError
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class LowrankParams:
    """Parameters of ``lowrank``."""

    rank_ratio: float = param(0.25, "kept rank as a fraction of the full rank")
    energy: float | None = param(
        None,
        "when set, the fewest singular values keeping this fraction of the squared "
        "sum (overrides `rank_ratio`)",
    )
    min_features: int = param(32, "layers narrower than this stay whole")
    steps: int = param(0, "fine-tuning steps after factorization")
    lr: float = param(1e-4, "learning rate of that fine-tuning")


@register_technique(
    "lowrank",
    backend="torch",
    description="truncated SVD of Linear and 1x1 Conv weights: each becomes two smaller layers",
    params=LowrankParams,
)
def build_lowrank(ctx: BuildContext) -> Variant:
    """Factorize each large layer into two thinner ones from its truncated SVD.

    ``rank_ratio`` keeps that fraction of each layer's full rank; ``energy`` (when given)
    instead keeps the fewest singular values whose squares sum to that fraction of the total.
    Layers narrower than ``min_features``, or that factorizing would not shrink, stay whole.
    """
    from pytest_modelopt.torchtools import parameter_count
    from pytest_modelopt.variants.pruning import maybe_fine_tune, torch_variant

    ratio, energy = float(ctx.params["rank_ratio"]), ctx.params["energy"]
    if not 0 < ratio <= 1 or (energy is not None and not 0 < float(energy) <= 1):
        raise ParameterError(
            f"lowrank: rank_ratio and energy must be in (0, 1], got {ratio} and {energy}"
        )
    model = ctx.model.eval()
    before = parameter_count(model)
    replaced = factorize(model, ratio, energy, int(ctx.params["min_features"]))
    after = parameter_count(model)
    if not replaced or after >= before:
        raise NoEffectError(
            f"lowrank factorized no layer of {ctx.spec.name}: no Linear or 1x1 Conv with at "
            f"least {ctx.params['min_features']} features shrinks at rank ratio {ratio}"
            + (f" / energy {energy}" if energy is not None else "")
        )
    steps = maybe_fine_tune(ctx, model)
    return torch_variant(
        ctx,
        model,
        whole_module=True,
        details={
            "factorized_layers": len(replaced),
            "ranks": dict(list(replaced.items())[:6]),
            "parameters_before": before,
            "parameters_after": after,
            "fine_tune_steps": steps,
        },
    )


def factorize(
    model: nn.Module, ratio: float, energy: float | None, min_features: int
) -> dict[str, str]:
    """Replace layers in place; returns ``{layer: "rank r of n"}`` for each replaced one."""
    import torch
    from torch import nn

    replaced: dict[str, str] = {}
    for name, module in list(model.named_modules()):
        if not name:
            continue  # the model itself cannot be replaced in place
        if isinstance(module, nn.Linear):
            weight = module.weight.detach()
        elif (
            isinstance(module, nn.Conv2d)
            and module.kernel_size == (1, 1)
            and module.groups == 1
            and module.padding in ((0, 0), "valid")
        ):
            weight = module.weight.detach()[:, :, 0, 0]
        else:
            continue
        out_features, in_features = weight.shape
        if min(out_features, in_features) < min_features:
            continue
        u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
        rank = _rank(s, ratio, energy)
        if rank * (in_features + out_features) >= in_features * out_features:
            continue
        root = s[:rank].sqrt()
        first_weight = (root[:, None] * vh[:rank]).to(weight.dtype)  # rank x in
        second_weight = (u[:, :rank] * root).to(weight.dtype)  # out x rank
        _set_module(model, name, _two_layers(module, first_weight, second_weight))
        replaced[name] = f"rank {rank} of {min(in_features, out_features)}"
    return replaced


def _rank(singular: torch.Tensor, ratio: float, energy: float | None) -> int:
    if energy is None:
        return max(1, round(ratio * len(singular)))
    cumulative = (singular**2).cumsum(0) / (singular**2).sum()
    return int((cumulative < energy).sum()) + 1


def _two_layers(layer: Any, first_weight: torch.Tensor, second_weight: torch.Tensor) -> nn.Module:
    import torch
    from torch import nn

    rank, in_features = first_weight.shape
    out_features = second_weight.shape[0]
    bias = layer.bias is not None
    first: nn.Linear | nn.Conv2d
    second: nn.Linear | nn.Conv2d
    if isinstance(layer, nn.Linear):
        first = nn.Linear(in_features, rank, bias=False)
        second = nn.Linear(rank, out_features, bias=bias)
    else:
        first = nn.Conv2d(in_features, rank, 1, stride=layer.stride, bias=False)
        second = nn.Conv2d(rank, out_features, 1, bias=bias)
    with torch.no_grad():
        first.weight.copy_(first_weight.reshape(first.weight.shape))
        second.weight.copy_(second_weight.reshape(second.weight.shape))
        if bias and second.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def _set_module(model: nn.Module, name: str, replacement: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)
