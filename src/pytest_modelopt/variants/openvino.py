"""OpenVINO variants: default execution precision, forced fp32, NNCF int8, and throughput.

Every variant converts the model (from torch by default; ``params={"source": "onnx"}`` converts
the ONNX export instead), compiles it for the best device with a performance hint, saves the IR
that was compiled, and reads back from the compiled model how it runs: device, hint, threads,
streams and execution precision.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pytest_modelopt.errors import BuildError, HardwareMissing
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes
from pytest_modelopt.variants.openvino_runtime import (
    ShapeCompiled,
    batch_arrays,
    first_line,
    runner,
    runtime_precisions,
)

Source = Literal["torch", "onnx"]
SOURCES: tuple[str, ...] = get_args(Source)
# Execution precisions a technique may be pinned to; None keeps the device's default (bf16 on CPUs
# with AMX or AVX512-BF16, f32 elsewhere).
Precision = Literal["f32", "bf16", "f16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
# The CPU flags a reduced execution precision runs on. OpenVINO's CPU plugin takes its default
# precision from CPUID, not from ONEDNN_MAX_CPU_ISA: capped to AVX2 on an AVX512-BF16 EPYC it
# still chose bf16, ran oneDNN's reference kernels and returned an empty (0, 10) output (OpenVINO
# 2026.4). So where a cap forbids these flags, the device's default is replaced by f32.
PRECISION_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "f16": ("avx512_fp16", "amx_fp16")}


@dataclass(frozen=True)
class ConversionParams:
    """Parameters of ``openvino_fp32``, and of every OpenVINO technique: where to convert from."""

    # Every OpenVINO technique converts from the torch model unless told to convert its ONNX export.
    source: Source = param(
        "torch", 'convert from the torch module (`"torch"`) or from its ONNX export (`"onnx"`)'
    )


@dataclass(frozen=True)
class PrecisionParams(ConversionParams):
    """Parameters of ``openvino``, ``openvino_int8`` and ``openvino_throughput``."""

    inference_precision: Precision | None = param(
        None,
        'pin the execution precision (`"f32"`, `"bf16"`, `"f16"`); `None` keeps the '
        "device's default, bf16 on CPUs with AMX or AVX512-BF16. The variant states the "
        'precision it ran (`details["execution_precision"]`)',
    )


def convert(ctx: BuildContext) -> tuple[Any, dict[str, Any], list[str]]:
    """``ov.convert_model`` from the torch model or from its ONNX export (``source`` param)."""
    import openvino as ov

    source = ctx.params.get("source", "torch")
    if source not in SOURCES:
        raise BuildError(
            f"OpenVINO source {source!r} for {ctx.spec.name}: choose one of {', '.join(SOURCES)}"
        )
    details: dict[str, Any] = {"converted_from": source}
    notes: list[str] = []
    with WarningsToNotes() as recorded:
        if source == "onnx":
            from pytest_modelopt.variants.onnx_runtime import export_onnx

            path, export_details, notes = export_onnx(ctx)
            details["onnx_exporter"] = export_details["exporter"]
            model = ov.convert_model(str(path))
        else:
            model = ov.convert_model(ctx.model.eval(), example_input=ctx.spec.example_input)
    return model, details, notes + recorded.notes[:3]


def openvino_variant(
    ctx: BuildContext,
    *,
    precision_hint: str | None = None,
    hint: str = "LATENCY",
    quantize: bool = False,
) -> Variant:
    """Convert, optionally quantize with NNCF, compile with ``hint``, save the IR.

    The execution precision is read back from the compiled model: on CPUs with AMX or AVX512-BF16
    OpenVINO runs bf16 by default, which changes both speed and accuracy, so it is always stated.
    """
    import openvino as ov

    precision_hint = precision_hint or _pinned_precision(ctx)
    model, details, notes = convert(ctx)
    if quantize:
        model = nncf_quantize(ctx, model)
    variant = compiled_variant(ctx, model, precision_hint, hint, quantize, details, notes)
    # Weights kept as they are on disk (fp32, or int8 after NNCF): the size is then comparable
    # with the reference's; OpenVINO's default fp16 compression of the IR is a separate choice.
    ov.save_model(model, str(ctx.workdir / "model.xml"), compress_to_fp16=False)
    return variant


def restore_openvino(
    ctx: BuildContext, *, precision_hint: str | None, hint: str, quantize: bool
) -> Variant:
    """Compile the IR a build saved in ``ctx.workdir`` again (the build cache's Restore)."""
    import openvino as ov

    model = ov.Core().read_model(str(ctx.workdir / "model.xml"))
    return compiled_variant(ctx, model, precision_hint, hint, quantize, {}, [])


def compiled_variant(
    ctx: BuildContext,
    model: Any,
    precision_hint: str | None,
    hint: str,
    quantize: bool,
    details: dict[str, Any],
    notes: list[str],
) -> Variant:
    """Compile ``model`` for the best device with ``hint``: the variant that runs the IR.

    Its files are ``model.xml`` and its weights in ``ctx.workdir``, which the caller writes.
    """
    import openvino as ov

    from pytest_modelopt.variants.base import Restore
    from pytest_modelopt.worker import Loader

    core = ov.Core()
    device = "GPU" if ctx.hardware.gpus and "GPU" in core.available_devices else "CPU"
    config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
    if ctx.threads and device == "CPU":
        config["INFERENCE_NUM_THREADS"] = ctx.threads
    if device == "CPU":
        precision_hint = _precision_the_cap_allows(ctx, core, precision_hint, notes)
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    models = ShapeCompiled(core, model, device, config)
    example_shapes = tuple(tuple(item.shape) for item in batch_arrays(ctx.spec.example_input))
    try:
        compiled = models.compiled(None if hint == "THROUGHPUT" else example_shapes)
    except Exception as error:  # OpenVINO raises plain RuntimeErrors and its own types
        raise BuildError(
            f"{ctx.technique}: OpenVINO could not compile {ctx.spec.name} for {device}: "
            f"{first_line(error)}"
        ) from error
    execution_precision = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    xml = ctx.workdir / "model.xml"
    streams = int(compiled.get_property("NUM_STREAMS"))
    run = runner(models)
    kernels = runtime_precisions(compiled)
    precision = execution_precision
    if quantize:
        precision = f"int8 ({kernels.get('i8', 0) + kernels.get('u8', 0)} int8 kernels), " + (
            f"{execution_precision} elsewhere"
        )
    return Variant(
        run,
        (xml, xml.with_suffix(".bin")),
        runtime=f"openvino {ov.get_version()}",
        precision=precision,
        device=device.lower(),
        details={
            "device": device,
            "performance_hint": hint,
            "inference_num_threads": compiled.get_property("INFERENCE_NUM_THREADS"),
            "num_streams": streams,
            "execution_precision": execution_precision,
            "input_shapes": _shapes_used(models, hint),
            "kernel_precisions": kernels,
            **details,
        },
        notes=notes,
        loader=Loader(
            "pytest_modelopt.variants.openvino_runtime:openvino_runner",
            {"xml": str(xml), "device": device, "config": config},
            numpy_inputs=True,
        ),
        profiler=Loader(
            "pytest_modelopt.variants.openvino_runtime:openvino_profiler",
            {"xml": str(xml), "device": device, "config": config},
        ),
        restore=Restore(
            "pytest_modelopt.variants.openvino:restore_openvino",
            {"precision_hint": precision_hint, "hint": hint, "quantize": quantize},
        ),
    )


def nncf_quantize(ctx: BuildContext, model: Any) -> Any:
    """NNCF post-training quantization of an OpenVINO model on the spec's calibration data."""
    import nncf

    if not ctx.spec.calibration_data:
        raise BuildError(
            f"{ctx.technique} needs calibration data: give ModelSpec {ctx.spec.name!r} "
            "calibration_data (a few representative batches)"
        )

    def as_numpy(batch: Any) -> Any:
        items = batch if isinstance(batch, tuple) else (batch,)
        return [item.numpy() if hasattr(item, "numpy") else item for item in items]

    batches = list(ctx.spec.calibration_data)
    ctx.log(f"{ctx.spec.name}[{ctx.technique}]: NNCF quantization on {len(batches)} batches")
    # NNCF draws progress bars on stdout: the harness's log says what happens instead.
    with WarningsToNotes(), contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(
            model,
            nncf.Dataset(batches, as_numpy),
            subset_size=len(batches),
            preset=nncf.QuantizationPreset.PERFORMANCE,
        )


def _pinned_precision(ctx: BuildContext) -> str | None:
    """Return the ``inference_precision`` parameter, checked: None keeps the device's default."""
    pinned = ctx.params.get("inference_precision")
    if pinned is not None and pinned not in PRECISIONS:
        raise BuildError(
            f"{ctx.technique}: inference_precision {pinned!r} for {ctx.spec.name}: choose one of "
            f"{', '.join(PRECISIONS)}, or None for the device's default"
        )
    return str(pinned) if pinned else None


@register_technique(
    "openvino",
    params=PrecisionParams,
    backend="openvino",
    description="OpenVINO, LATENCY hint, the device's default execution precision (stated)",
)
def build_openvino(ctx: BuildContext) -> Variant:
    """Compile for OpenVINO (LATENCY hint) at the device's default execution precision, stated."""
    return openvino_variant(ctx)


@register_technique(
    "openvino_fp32",
    params=ConversionParams,
    backend="openvino",
    description="OpenVINO, LATENCY hint, execution forced to fp32",
)
def build_openvino_fp32(ctx: BuildContext) -> Variant:
    """Compile for OpenVINO (LATENCY hint) with execution forced to fp32."""
    return openvino_variant(ctx, precision_hint="f32")


@register_technique(
    "openvino_int8",
    params=PrecisionParams,
    backend=("openvino", "nncf"),
    description="OpenVINO with NNCF post-training int8 quantization on the calibration data",
)
def build_openvino_int8(ctx: BuildContext) -> Variant:
    """Quantize to int8 with NNCF on the calibration data, then compile for OpenVINO."""
    return openvino_variant(ctx, quantize=True)


@register_technique(
    "openvino_throughput",
    params=PrecisionParams,
    backend="openvino",
    description="OpenVINO, THROUGHPUT hint: the batch split across parallel streams",
)
def build_openvino_throughput(ctx: BuildContext) -> Variant:
    """Compile for OpenVINO with the THROUGHPUT hint: the batch split across parallel streams."""
    return openvino_variant(ctx, hint="THROUGHPUT")


def _shapes_used(models: ShapeCompiled, hint: str) -> str:
    if hint == "THROUGHPUT":
        return "dynamic (the batch is split into parts of varying size)"
    if models.static_failure:
        return f"dynamic (static shapes failed: {models.static_failure})"
    return f"static, compiled for each input shape (up to {models.MAX_STATIC_SHAPES}, then dynamic)"


def _precision_the_cap_allows(
    ctx: BuildContext, core: Any, pinned: str | None, notes: list[str]
) -> str | None:
    """Return the precision to pin on the CPU, as far as an ISA cap allows.

    ``pinned``, unless an ISA cap forbids the instructions it needs (a skip: the plugin would run
    it anyway, outside the cap), or f32 where the cap forbids the plugin's default (see
    PRECISION_FLAGS); None keeps the default.
    """
    cap = ctx.hardware.isa_cap
    if cap is None:
        return pinned
    precision = pinned or _type_name(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
    needs = PRECISION_FLAGS.get(precision, ())
    forbidden = [flag for flag in needs if flag in ctx.hardware.cpu.flags]
    if not forbidden or any(ctx.hardware.has_isa(flag) for flag in needs):
        return pinned  # allowed, or a CPU without it: the plugin then runs f32 and says so
    if pinned:
        raise HardwareMissing(
            f"{ctx.technique}: inference_precision {pinned!r} for {ctx.spec.name} needs "
            f"{' or '.join(forbidden)}, which the ISA cap ({cap.describe()}) forbids; OpenVINO "
            "would run it outside the cap. Pin f32, or lift the cap"
        )
    notes.append(
        f"{ctx.technique}: f32 execution pinned: the CPU plugin's default here is {precision}, "
        f"whose instructions the ISA cap ({cap.describe()}) forbids, and OpenVINO does not apply "
        "the cap to its choice of precision"
    )
    return "f32"


def _type_name(element_type: Any) -> str:
    """OpenVINO's element type as its short name (``f32``, ``bf16``, ``f16``)."""
    to_string = getattr(element_type, "to_string", None)
    return str(to_string() if to_string else element_type)
