"""OpenVINO variants: default execution precision, forced fp32, NNCF int8, and throughput.

Every variant converts the model (from torch by default; ``params={"source": "onnx"}`` converts
the ONNX export instead), compiles it for the best device with a performance hint, saves the IR
that was compiled, and reads back from the compiled model how it runs: device, hint, threads,
streams and execution precision.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Callable
from typing import Any

from pytest_modelopt.errors import BuildError
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes

SOURCES = ("torch", "onnx")
# Every OpenVINO technique converts from the torch model unless told to convert its ONNX export.
CONVERSION_DEFAULTS = {"source": "torch"}


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
    technique: str,
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

    from pytest_modelopt.worker import Loader

    model, details, notes = convert(ctx)
    if quantize:
        model = nncf_quantize(ctx, technique, model)
    core = ov.Core()
    device = "GPU" if ctx.hardware.gpus and "GPU" in core.available_devices else "CPU"
    config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
    if ctx.threads and device == "CPU":
        config["INFERENCE_NUM_THREADS"] = ctx.threads
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    try:
        compiled = core.compile_model(model, device, config)
    except Exception as error:  # OpenVINO raises plain RuntimeErrors and its own types
        raise BuildError(
            f"{technique}: OpenVINO could not compile {ctx.spec.name} for {device}: "
            f"{_first_line(error)}"
        ) from error
    execution_precision = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    xml = ctx.workdir / "model.xml"
    # Weights kept as they are on disk (fp32, or int8 after NNCF): the size is then comparable
    # with the reference's; OpenVINO's default fp16 compression of the IR is a separate choice.
    ov.save_model(model, str(xml), compress_to_fp16=False)
    streams = int(compiled.get_property("NUM_STREAMS"))
    run = runner(compiled)
    kernels = runtime_precisions(compiled)
    precision = execution_precision
    if quantize:
        precision = f"int8 ({kernels.get('i8', 0) + kernels.get('u8', 0)} int8 kernels), " + (
            f"{execution_precision} elsewhere"
        )
    return Variant(
        technique,
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
            "kernel_precisions": kernels,
            **details,
        },
        notes=notes,
        loader=Loader(
            "pytest_modelopt.variants.openvino:openvino_runner",
            {"xml": str(xml), "device": device, "config": config},
            numpy_inputs=True,
        ),
    )


def nncf_quantize(ctx: BuildContext, technique: str, model: Any) -> Any:
    """NNCF post-training quantization of an OpenVINO model on the spec's calibration data."""
    import nncf

    if not ctx.spec.calibration_data:
        raise BuildError(
            f"{technique} needs calibration data: give ModelSpec {ctx.spec.name!r} "
            "calibration_data (a few representative batches)"
        )

    def as_numpy(batch: Any) -> Any:
        items = batch if isinstance(batch, tuple) else (batch,)
        return [item.numpy() if hasattr(item, "numpy") else item for item in items]

    batches = list(ctx.spec.calibration_data)
    ctx.log(f"{ctx.spec.name}[{technique}]: NNCF quantization on {len(batches)} batches")
    # NNCF draws progress bars on stdout: the harness's log says what happens instead.
    with WarningsToNotes(), contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(
            model,
            nncf.Dataset(batches, as_numpy),
            subset_size=len(batches),
            preset=nncf.QuantizationPreset.PERFORMANCE,
        )


def runtime_precisions(compiled: Any) -> dict[str, int]:
    """How many of the compiled graph's executed nodes run in each precision (``f32``, ``i8``)."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info and op.get_type_name() not in {"Parameter", "Result"}:
            counts[str(info["runtimePrecision"].value).strip().lower()] += 1
    return dict(sorted(counts.items()))


def openvino_runner(xml: str, device: str, config: dict[str, Any]) -> Callable[[Any], Any]:
    """``run(batch)`` of the saved IR compiled with ``config``: a worker process's loader."""
    import openvino as ov

    return runner(ov.Core().compile_model(xml, device, config))


def runner(compiled: Any) -> Callable[[Any], Any]:
    """Run one batch: a single request (LATENCY), or split across streams (THROUGHPUT)."""
    if str(compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT"):
        return _throughput_runner(compiled, int(compiled.get_property("NUM_STREAMS")))
    return _latency_runner(compiled)


def _latency_runner(compiled: Any) -> Any:
    request = compiled.create_infer_request()

    def run(batch: Any) -> Any:
        return request.infer(_inputs(batch))[0]

    return run


def _throughput_runner(compiled: Any, streams: int) -> Any:
    """Split the batch across the compiled model's streams, run the parts in parallel."""
    import numpy as np
    import openvino as ov

    queue = ov.AsyncInferQueue(compiled, streams)
    results: dict[int, Any] = {}

    def done(request: Any, index: int) -> None:
        results[index] = request.get_output_tensor(0).data.copy()

    queue.set_callback(done)

    def run(batch: Any) -> Any:
        inputs = _inputs(batch)
        parts = min(streams, len(inputs[0]))
        pieces = [np.array_split(item, parts) for item in inputs]
        results.clear()
        for index in range(parts):
            queue.start_async([piece[index] for piece in pieces], index)
        queue.wait_all()
        return np.concatenate([results[index] for index in range(parts)])

    return run


def _inputs(batch: Any) -> list[Any]:
    items = batch if isinstance(batch, tuple) else (batch,)
    return [item.numpy() if hasattr(item, "numpy") else item for item in items]


@register_technique(
    "openvino",
    defaults=CONVERSION_DEFAULTS,
    backend="openvino",
    description="OpenVINO, LATENCY hint, the device's default execution precision (stated)",
)
def build_openvino(ctx: BuildContext) -> Variant:
    return openvino_variant(ctx, "openvino")


@register_technique(
    "openvino_fp32",
    defaults=CONVERSION_DEFAULTS,
    backend="openvino",
    description="OpenVINO, LATENCY hint, execution forced to fp32",
)
def build_openvino_fp32(ctx: BuildContext) -> Variant:
    return openvino_variant(ctx, "openvino_fp32", precision_hint="f32")


@register_technique(
    "openvino_int8",
    defaults=CONVERSION_DEFAULTS,
    backend=("openvino", "nncf"),
    description="OpenVINO with NNCF post-training int8 quantization on the calibration data",
)
def build_openvino_int8(ctx: BuildContext) -> Variant:
    return openvino_variant(ctx, "openvino_int8", quantize=True)


@register_technique(
    "openvino_throughput",
    defaults=CONVERSION_DEFAULTS,
    backend="openvino",
    description="OpenVINO, THROUGHPUT hint: the batch split across parallel streams",
)
def build_openvino_throughput(ctx: BuildContext) -> Variant:
    return openvino_variant(ctx, "openvino_throughput", hint="THROUGHPUT")


def _type_name(element_type: Any) -> str:
    """OpenVINO's element type as its short name (``f32``, ``bf16``, ``f16``)."""
    to_string = getattr(element_type, "to_string", None)
    return str(to_string() if to_string else element_type)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__
