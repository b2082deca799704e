"""ONNX export and ONNX Runtime variants: fp32, fp16, dynamic int8, static (QDQ) int8, TensorRT."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_modelopt.errors import BuildError, PackageMissing
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant, WarningsToNotes
from pytest_modelopt.variants.ort_sessions import (
    CUDA,
    TENSORRT,
    bound_runner,
    plain_runner,
    require_provider,
    session_for,
)


def export_onnx(ctx: BuildContext) -> tuple[Path, dict[str, Any], list[str]]:
    """Export ctx.model to ONNX with a dynamic batch axis; returns path, details and notes.

    The dynamo exporter first (it writes weights to an external ``.data`` file, counted in the
    size); the TorchScript exporter if it fails, with the reason recorded.
    """
    import onnx
    import torch

    shared = ctx.workdir.parent / "_onnx_export"
    if (shared / "done.json").is_file():  # the ONNX techniques of one spec share one export
        cached = json.loads((shared / "done.json").read_text())
        return shared / "model.onnx", cached["details"], cached["notes"]
    shared.mkdir(parents=True, exist_ok=True)
    path = shared / "model.onnx"
    example = ctx.spec.example_input
    args = example if isinstance(example, tuple) else (example,)
    notes: list[str] = []
    model = ctx.model.eval()
    with WarningsToNotes() as recorded:
        try:
            batch = torch.export.Dim("batch", min=1, max=1024)
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=True,
                dynamic_shapes=tuple({0: batch} for _ in args),
                external_data=True,
                report=False,
                verbose=False,
            )
            exporter = "dynamo"
        except Exception as error:  # any exporter failure falls back, with its reason
            notes.append(
                f"dynamo exporter failed ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:200]}); used the TorchScript exporter"
            )
            for stale in shared.glob("model.onnx*"):
                stale.unlink()
            names = [f"input_{i}" for i in range(len(args))]
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=False,
                input_names=names,
                dynamic_axes={name: {0: "batch"} for name in names},
                opset_version=17,
            )
            exporter = "torchscript"
    onnx.checker.check_model(str(path))
    details, notes = {"exporter": exporter}, notes + _export_notes(recorded.notes)
    (shared / "done.json").write_text(json.dumps({"details": details, "notes": notes}))
    return path, details, notes


def onnx_files(path: Path) -> tuple[Path, ...]:
    """Return the model file and every external-data file beside it: what ships."""
    return tuple(sorted(p for p in path.parent.iterdir() if p.name.startswith(path.name)))


def ort_variant(
    path: Path,
    ctx: BuildContext,
    providers: list[str] | None = None,
    **extra: Any,
) -> Variant:
    """Build the variant that runs the ONNX model at ``path`` in an ONNX Runtime session.

    ``extra`` goes into the details, except ``notes`` and ``precision``. A CPU session can be
    rebuilt and profiled in a worker; a GPU one uses IO binding and is timed here.
    """
    import onnxruntime

    from pytest_modelopt.variants.base import Restore
    from pytest_modelopt.worker import Loader

    session = session_for(path, ctx, providers)
    notes: list[str] = extra.pop("notes", [])
    active = session.get_providers()
    on_gpu = active[0] != "CPUExecutionProvider"
    run = bound_runner(session) if on_gpu else plain_runner(session)
    # A CPU session can be rebuilt from its file in a worker process, to run or to profile it; a
    # GPU one is timed here, where its device buffers live.
    where = {"path": str(path), "threads": ctx.threads}
    runner = "pytest_modelopt.variants.ort_sessions:ort_runner"
    profiler = "pytest_modelopt.variants.ort_sessions:ort_profiler"
    return Variant(
        run,
        onnx_files(path),
        runtime=f"onnxruntime {onnxruntime.__version__}",
        precision=extra.pop("precision", "fp32"),
        device="cuda" if on_gpu else "cpu",
        details={
            "providers": active,
            "intra_op_num_threads": session.get_session_options().intra_op_num_threads,
            "inter_op_num_threads": session.get_session_options().inter_op_num_threads,
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "io_binding": on_gpu,
            **extra,
        },
        notes=notes,
        loader=None if on_gpu else Loader(runner, where, numpy_inputs=True),
        profiler=None if on_gpu else Loader(profiler, where),
        restore=Restore(
            "pytest_modelopt.variants.onnx_runtime:restore_ort",
            {"path": os.path.relpath(path, ctx.workdir), "providers": providers},
        ),
    )


def restore_ort(ctx: BuildContext, *, path: str, providers: list[str] | None) -> Variant:
    """Open the ONNX model a build left again (its Restore).

    ``path`` is relative to ``ctx.workdir``; the plain export, shared, lies beside it.
    """
    return ort_variant(ctx.workdir / path, ctx, providers)


@register_technique(
    "onnxruntime",
    backend="onnxruntime",
    description="ONNX export, run by ONNX Runtime with all graph optimizations",
)
def build_onnxruntime(ctx: BuildContext) -> Variant:
    """Export to ONNX and run it in ONNX Runtime with all graph optimizations."""
    path, details, notes = export_onnx(ctx)
    return ort_variant(path, ctx, notes=notes, **details)


@register_technique(
    "onnxruntime_dynamic_int8",
    backend="onnxruntime",
    description="ONNX Runtime dynamic quantization: int8 weights, activations at run time",
)
def build_onnxruntime_dynamic_int8(ctx: BuildContext) -> Variant:
    """Quantize the ONNX export dynamically: int8 weights, activations quantized at run time.

    Without VNNI the weights use a reduced range, as ORT advises, against saturation.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, details, notes = export_onnx(ctx)
    path = _quantized_dir(ctx) / "model.onnx"
    # Without VNNI, int8 dot products can saturate: ORT's guidance is reduce_range there.
    reduce_range = not ctx.hardware.has_isa("avx512_vnni")
    with WarningsToNotes() as recorded:
        quantize_dynamic(
            str(source), str(path), weight_type=QuantType.QInt8, reduce_range=reduce_range
        )
    return ort_variant(
        path,
        ctx,
        precision="int8 weights, dynamic int8 activations",
        notes=notes + recorded.notes,
        reduce_range=reduce_range,
        **details,
    )


@register_technique(
    "onnxruntime_static_int8",
    backend="onnxruntime",
    description="ONNX Runtime static QDQ int8, per-channel, calibrated on the spec's data",
)
def build_onnxruntime_static_int8(ctx: BuildContext) -> Variant:
    """Quantize the ONNX export statically (QDQ), calibrated on the spec's calibration data.

    uint8 activations and per-channel int8 weights, ORT's default and best-supported path.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not ctx.spec.calibration_data:
        raise BuildError(
            f"onnxruntime_static_int8 needs calibration data: give ModelSpec {ctx.spec.name!r} "
            "calibration_data (a few representative batches)"
        )
    source, details, notes = export_onnx(ctx)
    quant_dir = _quantized_dir(ctx)
    prepared = quant_dir / "prepared.onnx"
    path = quant_dir / "model.onnx"
    session = session_for(source, ctx)
    names = [i.name for i in session.get_inputs()]
    del session

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no types
        def __init__(self) -> None:
            self._batches: Iterator[Any] = iter(ctx.spec.calibration_data)

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            items = batch if isinstance(batch, tuple) else (batch,)
            return {n: i.numpy() for n, i in zip(names, items, strict=True)}

    import onnx

    # One self-contained file: the pre-processor copies the model to a temporary folder and loses
    # the external .data file that the dynamo exporter writes beside it.
    embedded = quant_dir / "embedded.onnx"
    onnx.save_model(onnx.load(str(source)), str(embedded))
    # U8S8 (uint8 activations, int8 weights): on this project's x86 CPU with VNNI, S8S8 ran
    # resnet18 at 1.6x eager and U8S8 at 5.2x; U8S8 is ORT's default and best-supported path.
    with WarningsToNotes() as recorded:
        quant_pre_process(str(embedded), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    for leftover in (*quant_dir.glob("prepared.onnx*"), *quant_dir.glob("embedded.onnx*")):
        leftover.unlink()
    return ort_variant(
        path,
        ctx,
        precision="int8 (QDQ, uint8 activations, per-channel int8 weights)",
        notes=notes + recorded.notes,
        calibration_batches=len(ctx.spec.calibration_data),
        **details,
    )


@register_technique(
    "onnxruntime_fp16",
    backend="onnxruntime",
    gpu=True,
    description="ONNX model converted to fp16 (fp32 inputs and outputs), ORT CUDA provider",
)
def build_onnxruntime_fp16(ctx: BuildContext) -> Variant:
    """Convert the ONNX export to fp16 (fp32 inputs and outputs), run by ORT's CUDA provider."""
    source, details, notes = export_onnx(ctx)
    path = _quantized_dir(ctx) / "model.onnx"
    convert_to_fp16(source, path)
    providers = require_provider(CUDA, ctx.technique)
    return ort_variant(
        path,
        ctx,
        providers=providers,
        precision="fp16 (fp32 inputs and outputs)",
        notes=notes,
        **details,
    )


@dataclass(frozen=True)
class TensorrtParams:
    """Parameters of ``tensorrt``."""

    fp16: bool = param(True, "let TensorRT pick fp16 kernels")


@register_technique(
    "tensorrt",
    backend="onnxruntime",
    gpu=True,
    description="TensorRT through ORT's TensorRT provider: fp16, engine cache, batch profile",
    params=TensorrtParams,
)
def build_tensorrt(ctx: BuildContext) -> Variant:
    """Run the ONNX export through ORT's TensorRT provider, its engine cached.

    A session in which ORT dropped the TensorRT provider is a PackageMissing, not a CPU run.
    """
    source, details, notes = export_onnx(ctx)
    providers = require_provider(TENSORRT, ctx.technique)
    fp16 = bool(ctx.params["fp16"])
    variant = ort_variant(
        source,
        ctx,
        providers=providers,
        precision="fp16 where TensorRT picks it, fp32 elsewhere" if fp16 else "fp32",
        notes=[*notes, "the engine is built on the first call (first-call time) and cached"],
        **details,
    )
    if variant.details["providers"][0] != TENSORRT:
        raise PackageMissing(
            "tensorrt: ONNX Runtime dropped its TensorRT provider when creating the session "
            "(TensorRT libraries not found: pip install tensorrt, matching onnxruntime-gpu)"
        )
    return variant


def convert_to_fp16(source: Path, path: Path) -> None:
    """Write the ONNX model with fp16 weights and compute, keeping fp32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save_model(model, str(path))


def _quantized_dir(ctx: BuildContext) -> Path:
    directory = ctx.workdir / "quantized"
    directory.mkdir(exist_ok=True)
    return directory


def _export_notes(notes: list[str]) -> list[str]:
    """Keep the exporter's warnings that matter; drop its progress chatter."""
    return [note for note in notes if "Deprecat" in note or "fall" in note.lower()][:3]
