"""OpenVINO variants: the runtime's default execution precision, and forced fp32."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes


def openvino_variant(ctx: BuildContext, technique: str, precision_hint: str | None) -> Variant:
    """Convert from torch, compile for the best device with the LATENCY hint, save the IR.

    The execution precision is read back from the compiled model: on CPUs with AMX or AVX512-BF16
    OpenVINO runs bf16 by default, which changes both speed and accuracy, so it is always stated.
    """
    import openvino as ov

    example = ctx.spec.example_input
    with WarningsToNotes() as recorded:
        model = ov.convert_model(ctx.model.eval(), example_input=example)
    device = "GPU" if ctx.hardware.gpus and "GPU" in ov.Core().available_devices else "CPU"
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if ctx.threads and device == "CPU":
        config["INFERENCE_NUM_THREADS"] = ctx.threads
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    core = ov.Core()
    compiled = core.compile_model(model, device, config)
    execution_precision = _type_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    xml = ctx.workdir / "model.xml"
    # Weights kept in fp32 on disk: the size is then comparable with the reference's; OpenVINO's
    # default fp16 compression of the IR is a separate choice, not this variant's.
    ov.save_model(model, str(xml), compress_to_fp16=False)
    from pytest_modelopt.worker import Loader

    return Variant(
        technique,
        _runner(compiled),
        (xml, xml.with_suffix(".bin")),
        runtime=f"openvino {ov.get_version()}",
        precision=execution_precision,
        device=device.lower(),
        details={
            "device": device,
            "performance_hint": "LATENCY",
            "inference_num_threads": compiled.get_property("INFERENCE_NUM_THREADS"),
            "execution_precision": execution_precision,
            "converted_from": "torch",
        },
        notes=recorded.notes[:3],
        loader=Loader(
            "pytest_modelopt.variants.openvino:openvino_runner",
            {"xml": str(xml), "device": device, "config": config},
            numpy_inputs=True,
        ),
    )


def openvino_runner(xml: str, device: str, config: dict[str, Any]) -> Callable[[Any], Any]:
    """``run(batch)`` of the saved IR compiled with ``config`` (a worker process's loader)."""
    import openvino as ov

    return _runner(ov.Core().compile_model(xml, device, config))


def _runner(compiled: Any) -> Callable[[Any], Any]:
    request = compiled.create_infer_request()

    def run(batch: Any) -> Any:
        items = batch if isinstance(batch, tuple) else (batch,)
        inputs = [item.numpy() if hasattr(item, "numpy") else item for item in items]
        return request.infer(inputs)[0]

    return run


@register_technique(
    "openvino",
    backend="openvino",
    description="OpenVINO, LATENCY hint, the device's default execution precision (stated)",
)
def build_openvino(ctx: BuildContext) -> Variant:
    return openvino_variant(ctx, "openvino", precision_hint=None)


@register_technique(
    "openvino_fp32",
    backend="openvino",
    description="OpenVINO, LATENCY hint, execution forced to fp32",
)
def build_openvino_fp32(ctx: BuildContext) -> Variant:
    return openvino_variant(ctx, "openvino_fp32", precision_hint="f32")


def _type_name(element_type: Any) -> str:
    """OpenVINO's element type as its short name (``f32``, ``bf16``, ``f16``)."""
    to_string = getattr(element_type, "to_string", None)
    return str(to_string() if to_string else element_type)
