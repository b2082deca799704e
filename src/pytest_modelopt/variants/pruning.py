"""Pruning, unstructured and structured.

Unstructured: global L1 magnitude, zeros in dense tensors. Structured: channels removed and
layers rebuilt smaller, with torch-pruning's dependency graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pytest_modelopt.errors import BuildError, NoEffectError, ParameterError
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes

if TYPE_CHECKING:
    from torch import nn


def torch_variant(
    ctx: BuildContext,
    model: nn.Module,
    *,
    whole_module: bool,
    details: dict[str, Any],
    notes: list[str] | None = None,
) -> Variant:
    """Build an eager fp32 variant of a transformed module.

    It is saved as its state dict or (when its layers were rebuilt, so the original class cannot
    load it) as the whole module.
    """
    from pytest_modelopt.variants.torch_eager import saved_variant

    model = model.eval()
    return saved_variant(
        ctx,
        model,
        model if whole_module else model.state_dict(),
        precision="fp32",
        details=details,
        notes=notes or [],
        model=model,
    )


def maybe_fine_tune(ctx: BuildContext, model: nn.Module) -> int:
    """Fine-tune for ``params['steps']`` steps on the spec's train_data (none by default)."""
    from pytest_modelopt.torchtools import fine_tune, training_batches

    steps = int(ctx.params["steps"])
    if steps <= 0:
        return 0
    batches = training_batches(ctx.spec, ctx.technique)
    ctx.log(f"{ctx.spec.name}[{ctx.technique}]: fine-tuning {steps} steps")
    return fine_tune(model, batches, steps=steps, lr=float(ctx.params["lr"]))


@dataclass(frozen=True)
class PrunedUnstructuredParams:
    """Parameters of ``pruned_unstructured``."""

    sparsity: float = param(0.5, "fraction of all Linear/Conv weights zeroed (global L1 magnitude)")
    steps: int = param(
        0, "fine-tuning steps with the masks applied, before they are made permanent"
    )
    lr: float = param(1e-4, "learning rate of that fine-tuning")


@register_technique(
    "pruned_unstructured",
    backend="torch",
    description="global L1 magnitude pruning of Linear/Conv weights, made permanent",
    params=PrunedUnstructuredParams,
)
def build_pruned_unstructured(ctx: BuildContext) -> Variant:
    """Zero the ``sparsity`` share of Linear and Conv weights of least magnitude, globally.

    Fine-tuned for ``steps`` steps (none by default) with the masks applied, then made permanent.
    The zeros stay in dense tensors: they shrink the gzip size, not the file size or the latency.
    """
    from torch import nn
    from torch.nn.utils import prune

    sparsity = float(ctx.params["sparsity"])
    if not 0 < sparsity < 1:
        raise ParameterError(f"pruned_unstructured: sparsity must be in (0, 1), got {sparsity}")
    model = ctx.model.eval()
    layers = [
        (module, "weight")
        for module in model.modules()
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
    ]
    if not layers:
        raise NoEffectError(f"pruned_unstructured: {ctx.spec.name} has no Linear or Conv layer")
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=sparsity)
    steps = maybe_fine_tune(ctx, model)  # masks stay applied meanwhile
    for module, name in layers:
        prune.remove(module, name)
    pruned = sum(int((module.weight == 0).sum()) for module, _ in layers)
    total = sum(module.weight.numel() for module, _ in layers)
    achieved = pruned / total
    if achieved < sparsity - 0.01:
        raise NoEffectError(
            f"pruned_unstructured: {ctx.spec.name} is {achieved:.1%} sparse, asked {sparsity:.0%}"
        )
    from pytest_modelopt.torchtools import parameter_counts

    params, nonzero = parameter_counts(model)
    return torch_variant(
        ctx,
        model,
        whole_module=False,
        details={
            "sparsity": round(achieved, 4),
            "pruned_layers": len(layers),
            "parameters": params,
            "nonzero_parameters": nonzero,
            "fine_tune_steps": steps,
        },
        notes=[
            "unstructured sparsity keeps dense tensors: it shrinks the gzip size, not the file "
            "size or the latency"
        ],
    )


@dataclass(frozen=True)
class PrunedStructuredParams:
    """Parameters of ``pruned_structured``."""

    ratio: float = param(
        0.3, "fraction of channels removed per prunable group (the output layer is kept)"
    )
    importance: Literal["l1", "l2"] = param("l1", 'group magnitude norm: `"l1"` or `"l2"`')
    round_to: int | None = param(
        None, "keep channel counts multiples of this (e.g. 8 for SIMD-friendly widths)"
    )
    steps: int = param(0, "fine-tuning steps after pruning")
    lr: float = param(1e-4, "learning rate of that fine-tuning")


@register_technique(
    "pruned_structured",
    backend="torch",
    packages="torch_pruning",
    description="channel pruning (torch-pruning): removes channels, rebuilds smaller layers",
    params=PrunedStructuredParams,
)
def build_pruned_structured(ctx: BuildContext) -> Variant:
    """Remove ``ratio`` of the channels and rebuild the layers smaller (torch-pruning).

    Fine-tuned for ``steps`` steps (none by default); a model of which no channel could be
    removed is a NoEffectError.
    """
    from pytest_modelopt.torchtools import parameter_count

    ratio = float(ctx.params["ratio"])
    if not 0 < ratio < 1:
        raise ParameterError(f"pruned_structured: ratio must be in (0, 1), got {ratio}")
    model = ctx.model.eval()
    before = parameter_count(model)
    shapes_before = _layer_shapes(model)
    with WarningsToNotes() as recorded:
        prune_channels(
            model,
            ctx.spec.example_input,
            ratio,
            importance=ctx.params["importance"],
            round_to=ctx.params["round_to"],
            model_name=ctx.spec.name,
        )
    after = parameter_count(model)
    changed = {
        name: f"{shapes_before[name]} -> {shape}"
        for name, shape in _layer_shapes(model).items()
        if shapes_before.get(name) != shape
    }
    if after >= before or not changed:
        raise NoEffectError(
            f"pruned_structured removed no channel of {ctx.spec.name} ({before} parameters "
            "before and after): every prunable layer is ignored or coupled to the output"
        )
    steps = maybe_fine_tune(ctx, model)
    return torch_variant(
        ctx,
        model,
        whole_module=True,
        details={
            "ratio": ratio,
            "parameters_before": before,
            "parameters_after": after,
            "layers_changed": len(changed),
            "example_shapes": dict(list(changed.items())[:4]),
            "fine_tune_steps": steps,
        },
        notes=recorded.notes,
    )


def prune_channels(
    model: nn.Module,
    example: Any,
    ratio: float,
    *,
    importance: str = "l1",
    round_to: int | None = None,
    model_name: str = "model",
) -> None:
    """Remove ``ratio`` of the channels of every prunable layer group, in place.

    The output layer is left whole; attention layers keep their head count (head dimensions
    shrink), and timm's Attention gets its head and attention dimensions updated to match.
    """
    import torch_pruning as tp

    from pytest_modelopt.torchtools import classifier_layer

    norms = {"l1": 1, "l2": 2}
    if importance not in norms:
        raise ParameterError(f"importance must be one of {sorted(norms)}, got {importance!r}")
    classifier = classifier_layer(model, example)
    heads = {
        module.qkv: module.num_heads
        for module in model.modules()
        if hasattr(module, "qkv") and hasattr(module, "num_heads")
    }
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=norms[importance]),
            pruning_ratio=ratio,
            ignored_layers=[classifier] if classifier is not None else [],
            round_to=round_to,
            num_heads=heads,
            prune_head_dims=True,
            prune_num_heads=False,
        )
        pruner.step()
    except Exception as error:
        raise BuildError(
            f"pruned_structured: torch-pruning could not prune {model_name}: "
            f"{type(error).__name__}: {error}"
        ) from error
    for attention in model.modules():
        if all(hasattr(attention, name) for name in ("qkv", "num_heads", "head_dim")):
            _resize_attention(attention)


def _resize_attention(attention: Any) -> None:
    """Make timm's Attention agree with its pruned qkv projection.

    Forward reshapes with ``head_dim`` and, in recent timm, ``attn_dim``. The scale follows the
    new head dimension, as the fused scaled_dot_product_attention path computes it, so both paths
    stay the same model.
    """
    attention.head_dim = attention.qkv.out_features // 3 // attention.num_heads
    if hasattr(attention, "attn_dim"):
        attention.attn_dim = attention.num_heads * attention.head_dim
    if hasattr(attention, "scale"):
        attention.scale = attention.head_dim**-0.5


def _layer_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {
        name: tuple(module.weight.shape)
        for name, module in model.named_modules()
        if hasattr(module, "weight") and getattr(module.weight, "shape", None) is not None
    }
