"""Integer quantization of torch models: dynamic int8, quantization-aware int8, shared steps.

Calibrated post-training int8 is :mod:`pytest_modelopt.variants.static_int8`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pytest_modelopt.errors import BuildError, NoEffectError, ParameterError
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes
from pytest_modelopt.variants.int8_inspection import (
    count_quantized_modules,
    fx_trace_error,
    int8_coverage,
    treat_equivalent_subclasses_as_base,
    unquantizable_subclasses,
)

if TYPE_CHECKING:
    from torch import nn

    from pytest_modelopt.hardware import Hardware


def use_quantized_engine(hardware: Hardware) -> str:
    """Select the quantized kernel library for this CPU, and return it.

    x86 (fbgemm/onednn), or qnnpack on ARM.
    """
    import torch

    supported = torch.backends.quantized.supported_engines
    preferred = (
        ["qnnpack"] if hardware.cpu.arch.lower() in {"aarch64", "arm64"} else ["x86", "fbgemm"]
    )
    for engine in preferred:
        if engine in supported:
            torch.backends.quantized.engine = engine
            return engine
    raise BuildError(f"no quantized engine for {hardware.cpu.arch}; torch offers {supported}")


def prepare_fx_int8(ctx: BuildContext, model: nn.Module, engine: str, *, qat: bool = False) -> Any:
    """Prepare ``model`` for FX graph mode int8, with the engine's default qconfig mapping.

    For calibration, or for fine-tuning with fake quantization when ``qat``. A model FX cannot
    trace is the BuildError of ``fx_trace_error``, which says what to do.
    """
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    example = positional_args(ctx.spec.example_input)
    try:
        if qat:
            return prepare_qat_fx(model, get_default_qat_qconfig_mapping(engine), example)
        return prepare_fx(model, get_default_qconfig_mapping(engine), example)
    except Exception as error:
        raise fx_trace_error(model, ctx.spec.name, ctx.technique, error) from error


@dataclass(frozen=True)
class DynamicInt8Params:
    """Parameters of ``dynamic_int8``."""

    path: Literal["auto", "torch.ao", "torchao"] = param(
        "auto",
        '`"torch.ao"` (`quantize_dynamic`, fbgemm/x86 or qnnpack), `"torchao"` '
        '(`quantize_`, Linear only), `"auto"` = torch.ao: torchao\'s int8 tensors run '
        "eagerly were 23x slower than fp32 here",
    )


@register_technique(
    "dynamic_int8",
    backend="torch",
    description="int8 weights, activations quantized at run time (Linear, LSTM, GRU)",
    params=DynamicInt8Params,
)
def build_dynamic_int8(ctx: BuildContext) -> Variant:
    """``path``: ``torch.ao`` (quantize_dynamic), ``torchao`` (quantize_), or ``auto``.

    ``auto`` takes torch.ao: torchao's int8 tensor subclass is meant to be compiled, and run
    eagerly it was 23x slower than fp32 on a 256x512 MLP here, where torch.ao's fbgemm kernels run
    at fp32 speed; torchao also does not cover LSTM and GRU.
    """
    path = ctx.params["path"]
    if path not in ("auto", "torch.ao", "torchao"):
        raise ParameterError(
            f"dynamic_int8: path must be 'auto', 'torch.ao' or 'torchao', got {path!r}"
        )
    if path == "torchao":
        return _dynamic_int8_torchao(ctx)
    return _dynamic_int8_torch_ao(ctx)


def _dynamic_int8_torch_ao(ctx: BuildContext) -> Variant:
    import torch
    from torch import nn

    engine = use_quantized_engine(ctx.hardware)
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
        skipped = unquantizable_subclasses(quantized, targets)
        hint = f"; subclasses left alone: {', '.join(skipped)}" if skipped else ""
        raise NoEffectError(
            f"dynamic_int8 changed nothing in {ctx.spec.name}: it has no nn.Linear, nn.LSTM or "
            f"nn.GRU layer that quantize_dynamic can replace{hint}. Use a technique that "
            "quantizes convolutions (static_int8) for this model."
        )
    coverage, coverage_note = int8_coverage(ctx.technique, model, quantized)
    return quantized_variant(
        ctx,
        quantized,
        precision="int8 weights, dynamic int8 activations",
        details={
            "path": "torch.ao.quantization.quantize_dynamic",
            "engine": engine,
            "quantized_layers": len(changed),
            **coverage,
        },
        notes=[*notes, coverage_note, *recorded.notes],
    )


def _dynamic_int8_torchao(ctx: BuildContext) -> Variant:
    from pytest_modelopt.registry import Requirements

    Requirements(packages=("torchao",)).check(ctx.hardware)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = ctx.model.eval()
    with WarningsToNotes() as recorded:
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
    changed = [
        name
        for name, module in model.named_modules()
        if type(getattr(module, "weight", None)).__module__.startswith("torchao")
    ]
    if not changed:
        raise NoEffectError(
            f"dynamic_int8 (torchao) changed nothing in {ctx.spec.name}: torchao quantizes "
            "Linear layers only, and it has none"
        )
    return quantized_variant(
        ctx,
        model,
        precision="int8 weights, dynamic int8 activations",
        details={"path": "torchao.quantization.quantize_", "quantized_layers": len(changed)},
        notes=[*recorded.notes, "torchao's int8 tensors run eagerly here; compile to speed up"],
    )


def quantized_variant(
    ctx: BuildContext,
    model: Any,
    *,
    precision: str,
    details: dict[str, Any],
    notes: list[str],
    run_model: Any = None,
    state: dict[str, Any] | None = None,
) -> Variant:
    """Save ``state`` and wrap ``run_model`` as the variant.

    ``state`` defaults to the model's state dict, ``run_model`` to the model.
    """
    from pytest_modelopt.variants.torch_eager import saved_variant

    return saved_variant(
        ctx,
        run_model if run_model is not None else model,
        model.state_dict() if state is None else state,
        precision=precision,
        details=details,
        notes=notes,
    )


@dataclass(frozen=True)
class QatInt8Params:
    """Parameters of ``qat_int8``."""

    steps: int = param(30, "fine-tuning steps with fake quantization")
    lr: float = param(1e-4, "Adam learning rate")


@register_technique(
    "qat_int8",
    backend="torch",
    description="quantization-aware fine-tuning on the spec's train_data, then int8 (FX)",
    params=QatInt8Params,
)
def build_qat_int8(ctx: BuildContext) -> Variant:
    """Fine-tune with fake quantization on the spec's train_data, then convert to int8 (FX).

    No fine-tuning step, or no layer quantized, is a NoEffectError.
    """
    from torch import nn

    from pytest_modelopt.torchtools import fine_tune, training_batches

    batches = training_batches(ctx.spec, ctx.technique)
    engine = use_quantized_engine(ctx.hardware)
    model = ctx.model.train()
    notes = treat_equivalent_subclasses_as_base(model, {nn.Linear, nn.Conv2d})
    with WarningsToNotes() as recorded:
        from torch.ao.quantization.quantize_fx import convert_fx

        prepared = prepare_fx_int8(ctx, model, engine, qat=True)
        ctx.log(f"{ctx.spec.name}: quantization-aware fine-tuning, {ctx.params['steps']} steps")
        steps = fine_tune(prepared, batches, steps=int(ctx.params["steps"]), lr=ctx.params["lr"])
        quantized = convert_fx(prepared.eval())
    count = count_quantized_modules(quantized)
    if count == 0 or steps == 0:
        raise NoEffectError(
            f"qat_int8 on {ctx.spec.name}: {steps} fine-tuning steps, {count} quantized layers"
        )
    coverage, coverage_note = int8_coverage(ctx.technique, model, quantized)
    return quantized_variant(
        ctx,
        quantized,
        precision="int8 weights, static int8 activations",
        details={
            "path": "fx (torch.ao prepare_qat_fx/convert_fx)",
            "engine": engine,
            "quantized_layers": count,
            "fine_tune_steps": steps,
            **coverage,
        },
        notes=[*notes, coverage_note, *recorded.notes],
    )


def positional_args(example: Any) -> tuple[Any, ...]:
    """Return a model's example input as the tuple of positional arguments tracing wants."""
    return example if isinstance(example, tuple) else (example,)
