"""Integer quantization of torch models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_modelopt.errors import BuildError, NoEffectError
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes

if TYPE_CHECKING:
    from torch import nn

    from pytest_modelopt.hardware import Hardware

# Subclasses of torch layers whose forward computes exactly what the base class's does, so they can
# be quantized as the base class. torch's quantization matches exact types and silently skips
# subclasses: timm's Linear (a subclass that only adds a dtype cast for TorchScript) is the common
# case, and left alone it makes quantize_dynamic a no-op on every timm classifier head.
EQUIVALENT_SUBCLASSES = {"timm.layers.linear.Linear"}


def quantized_engine(hardware: Hardware) -> str:
    """The quantized kernel library for this CPU: x86 (fbgemm/onednn) or qnnpack on ARM."""
    import torch

    supported = torch.backends.quantized.supported_engines
    preferred = (
        ["qnnpack"] if hardware.cpu.arch.lower() in {"aarch64", "arm64"} else ["x86", "fbgemm"]
    )
    for engine in preferred:
        if engine in supported:
            return engine
    raise BuildError(f"no quantized engine for {hardware.cpu.arch}; torch offers {supported}")


@register_technique(
    "dynamic_int8",
    backend="torch",
    description="int8 weights, activations quantized at run time (Linear, LSTM, GRU)",
)
def build_dynamic_int8(ctx: BuildContext) -> Variant:
    import torch
    from torch import nn

    from pytest_modelopt.torchtools import call_model

    engine = quantized_engine(ctx.hardware)
    torch.backends.quantized.engine = engine
    model = ctx.model.eval()
    targets: set[type[nn.Module]] = {nn.Linear, nn.LSTM, nn.GRU}
    notes = treat_equivalent_subclasses_as_base(model, targets)
    with WarningsToNotes() as recorded:
        quantized = torch.ao.quantization.quantize_dynamic(model, targets, dtype=torch.qint8)
    changed = [
        name
        for name, module in quantized.named_modules()
        if type(module).__module__.startswith("torch.ao.nn.quantized.dynamic")
    ]
    if not changed:
        skipped = _unquantizable_subclasses(quantized, targets)
        hint = f"; subclasses left alone: {', '.join(skipped)}" if skipped else ""
        raise NoEffectError(
            f"dynamic_int8 changed nothing in {ctx.spec.name}: it has no nn.Linear, nn.LSTM or "
            f"nn.GRU layer that quantize_dynamic can replace{hint}. Use a technique that "
            "quantizes convolutions (static_int8) for this model."
        )
    path = ctx.workdir / "model.pt"
    torch.save(quantized.state_dict(), path)

    def run(batch: object) -> object:
        with torch.inference_mode():
            return call_model(quantized, batch)

    return Variant(
        "dynamic_int8",
        run,
        (path,),
        runtime=f"torch {torch.__version__}",
        precision="int8 weights, dynamic int8 activations",
        details={
            "path": "torch.ao.quantization.quantize_dynamic",
            "engine": engine,
            "quantized_layers": len(changed),
        },
        notes=notes + recorded.notes,
    )


def treat_equivalent_subclasses_as_base(model: nn.Module, bases: set[type[nn.Module]]) -> list[str]:
    """Give known-equivalent subclass instances their base class, for exact-type matching."""
    notes = []
    for name, module in model.named_modules():
        cls = type(module)
        base = next((b for b in bases if issubclass(cls, b) and cls is not b), None)
        if base is not None and _qualname(cls) in EQUIVALENT_SUBCLASSES:
            module.__class__ = base  # same attributes and parameters, base forward
            notes.append(f"{name}: {_qualname(cls)} quantized as {_qualname(base)}")
    return _summarize(notes)


def _unquantizable_subclasses(model: nn.Module, bases: set[type[nn.Module]]) -> list[str]:
    return sorted(
        {
            _qualname(type(m))
            for m in model.modules()
            if any(isinstance(m, b) and type(m) is not b for b in bases)
        }
    )


def _summarize(notes: list[str]) -> list[str]:
    if len(notes) <= 3:
        return notes
    return [*notes[:2], f"... and {len(notes) - 2} more layers treated the same way"]


def _qualname(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
