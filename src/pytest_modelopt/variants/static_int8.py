"""Calibrated post-training int8 of torch models (``static_int8``): PT2E or FX graph mode.

PT2E (torchao's ``X86InductorQuantizer``, lowered by inductor with freezing to oneDNN's int8
kernels) where torchao is installed on x86, FX (``prepare_fx``/``convert_fx``, the quantized
engine's kernels) otherwise or on request. Either proves its effect: quantized layers (FX), or
int8 kernels run by the compiled graph (PT2E).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pytest_modelopt.errors import NoEffectError, ParameterError, SpecError
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes
from pytest_modelopt.variants.int8_inspection import (
    count_quantized_modules,
    graph_coverage,
    graph_state,
    int8_coverage,
    int8_kernels,
    treat_equivalent_subclasses_as_base,
)
from pytest_modelopt.variants.quantization import (
    prepare_fx_int8,
    quantized_variant,
    use_quantized_engine,
)


@dataclass(frozen=True)
class StaticInt8Params:
    """Parameters of ``static_int8``."""

    path: Literal["auto", "pt2e", "fx"] = param(
        "auto",
        '`"pt2e"` (torchao `X86InductorQuantizer`, compiled with inductor), `"fx"` '
        '(`prepare_fx`/`convert_fx`, the engine\'s default qconfig mapping), `"auto"` = '
        "pt2e where torchao is installed on x86",
    )
    calibration_batches: int = param(16, "calibration batches taken from `spec.calibration_data`")


@register_technique(
    "static_int8",
    backend="torch",
    description="calibrated post-training int8: PT2E (torchao, compiled) or FX graph mode",
    params=StaticInt8Params,
)
def build_static_int8(ctx: BuildContext) -> Variant:
    """Quantize weights and activations to int8, calibrated on the spec's calibration data.

    ``path``: ``pt2e`` (torchao's X86InductorQuantizer, then inductor), ``fx``
    (prepare_fx/convert_fx with the engine's qconfig mapping), or ``auto``: pt2e where torchao is
    installed on an x86 CPU, else fx.
    """
    import importlib.util

    path = ctx.params["path"]
    if path not in ("auto", "pt2e", "fx"):
        raise ParameterError(f"static_int8: path must be 'auto', 'pt2e' or 'fx', got {path!r}")
    x86 = ctx.hardware.cpu.arch.lower() in {"x86_64", "amd64", "x86"}
    if path == "auto":
        path = "pt2e" if importlib.util.find_spec("torchao") and x86 else "fx"
    batches = calibration_batches(ctx)
    if path == "pt2e":
        return _static_int8_pt2e(ctx, batches)
    return _static_int8_fx(ctx, batches)


def calibration_batches(ctx: BuildContext) -> list[Any]:
    """Return the first ``calibration_batches`` of the spec's calibration data.

    A spec without calibration data is a SpecError: the technique calibrates activation ranges.
    """
    count = int(ctx.params["calibration_batches"])
    batches = list(ctx.spec.calibration_data)[:count]
    if not batches:
        raise SpecError(
            f"{ctx.technique} calibrates activation ranges, and the ModelSpec {ctx.spec.name!r} "
            "has no calibration_data: pass a few representative input batches"
        )
    return batches


def _static_int8_fx(ctx: BuildContext, batches: list[Any]) -> Variant:
    import torch
    from torch import nn

    from pytest_modelopt.torchtools import call_model

    engine = use_quantized_engine(ctx.hardware)
    model = ctx.model.eval()
    notes = treat_equivalent_subclasses_as_base(model, {nn.Linear, nn.Conv2d})
    with WarningsToNotes() as recorded, torch.no_grad():
        from torch.ao.quantization.quantize_fx import convert_fx

        prepared = prepare_fx_int8(ctx, model, engine)
        for batch in batches:
            call_model(prepared, batch)
        quantized = convert_fx(prepared)
    count = count_quantized_modules(quantized)
    if count == 0:
        raise NoEffectError(
            f"static_int8 (FX) quantized no layer of {ctx.spec.name}: no Conv or Linear matched "
            f"the {engine} qconfig mapping"
        )
    coverage, coverage_note = int8_coverage(ctx.technique, model, quantized)
    return quantized_variant(
        ctx,
        quantized,
        precision="int8 weights, static int8 activations",
        details={
            "path": "fx (torch.ao prepare_fx/convert_fx)",
            "engine": engine,
            "quantized_layers": count,
            "calibration_batches": len(batches),
            **coverage,
        },
        notes=[*notes, coverage_note, *recorded.notes],
    )


def _static_int8_pt2e(ctx: BuildContext, batches: list[Any]) -> Variant:
    import torch
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from pytest_modelopt.torchtools import call_model
    from pytest_modelopt.variants.compilation import compile_now, export_program
    from pytest_modelopt.variants.torch_eager import eager_runner

    with WarningsToNotes() as recorded, torch.no_grad():
        program = export_program(ctx.model, ctx.spec.example_input, ctx.technique, ctx.spec.name)
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(program.module(), quantizer)
        for batch in batches:
            call_model(prepared, batch)
        converted = convert_pt2e(prepared)
    quantize_ops = sum(
        1
        for node in converted.graph.nodes
        if node.op == "call_function" and "quantize_per_tensor" in str(node.target)
    )
    if quantize_ops == 0:
        raise NoEffectError(
            f"static_int8 (PT2E) quantized nothing in {ctx.spec.name}: X86InductorQuantizer "
            "annotated no operator"
        )
    compiled, compile_details, compile_notes, prepare = compile_now(
        converted, ctx.spec.example_input, ctx, freezing=True
    )
    kernels = int8_kernels(eager_runner(compiled), ctx.spec.example_input)
    if not kernels:
        raise NoEffectError(
            f"static_int8 (PT2E) on {ctx.spec.name}: the compiled graph runs no int8 kernel "
            "(inductor did not lower its quantize/dequantize pairs to oneDNN); use "
            'params={"path": "fx"}'
        )
    state = graph_state(converted)
    coverage, coverage_note = graph_coverage(state)
    variant = quantized_variant(
        ctx,
        converted,
        precision="int8 weights, static int8 activations",
        details={
            "path": "pt2e (torchao X86InductorQuantizer, inductor)",
            "quantize_ops": quantize_ops,
            "calibration_batches": len(batches),
            "int8_kernels": kernels,
            **coverage,
            **compile_details,
        },
        notes=[coverage_note, *recorded.notes, *compile_notes],
        run_model=compiled,
        state=state,
    )
    variant.runtime = f"torch.compile {torch.__version__}"
    variant.prepare = prepare
    # Not kept by the build cache: torch.export's module wrappers make the calibrated graph
    # unpicklable (torch 2.14). A rebuild still loads inductor's compiled kernels from its cache.
    variant.restore = None
    return variant
