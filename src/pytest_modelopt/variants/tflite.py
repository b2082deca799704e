"""Keras models: the Keras reference, and TFLite variants run by LiteRT.

Five conversions, as TensorFlow's post-training quantization guide lays them out: fp32, dynamic
range (int8 weights), float16 weights, full integer (int8 input and output, every op int8) and
integer with float fallback (float input and output, ops without an int8 kernel stay float). Each
is run by LiteRT's interpreter (``ai_edge_litert``; TensorFlow 2.21 announces the deletion of
``tf.lite.Interpreter``) with the harness's thread count.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pytest_modelopt.errors import BuildError
from pytest_modelopt.reference import register_reference
from pytest_modelopt.registry import register_technique
from pytest_modelopt.spec import load_tensorflow
from pytest_modelopt.variants.base import BuildContext, Restore, Variant, WarningsToNotes

TFLITE_BACKENDS = ("tensorflow", "litert")


@register_reference("keras", backend="tensorflow")
def keras_reference(ctx: BuildContext) -> Variant:
    """Build the Keras reference: the model as written, called eagerly, saved as ``.keras``.

    It is called with ``training=False``.
    """
    tf = load_tensorflow()
    threads = _set_tensorflow_threads(tf, ctx.threads)
    model = ctx.model
    path = ctx.workdir / "model.keras"
    notes = []
    shipped = model
    if getattr(model, "optimizer", None) is not None:
        # What ships has no optimizer state: a compiled model saves Adam's two moments too (3x
        # the weights). clone_model keeps the compilation; a model rebuilt from its config not.
        try:
            shipped = type(model).from_config(model.get_config())
            shipped.set_weights(model.get_weights())
        except Exception as error:  # subclassed models without a config
            shipped = model
            notes.append(
                f"saved with its optimizer state ({type(error).__name__} rebuilding it from "
                "its config): the reference size includes it"
            )
    shipped.save(path)

    def run(batch: Any) -> Any:
        return model(batch, training=False).numpy()

    if ctx.threads and threads != ctx.threads:
        notes.append(
            f"TensorFlow's runtime had already started with {threads or 'default'} intra-op "
            f"threads; the harness asked for {ctx.threads}"
        )
    return Variant(
        run,
        (path,),
        runtime=f"tensorflow {tf.__version__}",
        precision="fp32",
        details={"intra_op_threads": threads, "call": "model(x, training=False)"},
        notes=notes,
    )


def tflite_variant(
    ctx: BuildContext,
    precision: str,
    configure: Callable[[Any, Any], None] = lambda converter, tf: None,
) -> Variant:
    """Convert ``ctx.model`` with ``configure``-d converter, run it with LiteRT."""
    tf = load_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(ctx.model)
    configure(converter, tf)
    ctx.log(f"{ctx.spec.name}[{ctx.technique}]: converting to TFLite")
    # The converter exports a SavedModel first and Keras prints its signature: kept out of the
    # user's terminal.
    with WarningsToNotes() as recorded, contextlib.redirect_stdout(io.StringIO()):
        try:
            flatbuffer = converter.convert()
        except Exception as error:
            raise BuildError(
                f"{ctx.technique}: the TFLite converter failed on {ctx.spec.name}: "
                f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            ) from error
    path = ctx.workdir / "model.tflite"
    path.write_bytes(flatbuffer)
    variant = interpreted_variant(ctx, path, precision)
    converter_name = f"tf.lite.TFLiteConverter.from_keras_model (tensorflow {tf.__version__})"
    variant.details = {"converter": converter_name, **variant.details}
    variant.notes = [n for n in recorded.notes if "tf.lite.Interpreter" not in n][:3]
    return variant


def restore_tflite(ctx: BuildContext, *, filename: str, precision: str) -> Variant:
    """Open the flatbuffer a build saved in ``ctx.workdir`` again (the build cache's Restore)."""
    return interpreted_variant(ctx, ctx.workdir / filename, precision)


def interpreted_variant(ctx: BuildContext, path: Path, precision: str) -> Variant:
    """Make the variant that runs the TFLite flatbuffer at ``path`` in LiteRT's interpreter."""
    import ai_edge_litert
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=ctx.threads or -1)
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    sink = interpreter.get_output_details()[0]
    in_scale, in_zero = source["quantization"]
    out_scale, out_zero = sink["quantization"]
    in_type, out_type = source["dtype"], sink["dtype"]
    shape: list[tuple[int, ...]] = [tuple(source["shape"])]

    def run(batch: Any) -> Any:
        x = np.asarray(batch, dtype=np.float32)
        if x.shape != shape[0]:  # the batch axis is dynamic: resize once per new shape
            interpreter.resize_tensor_input(source["index"], x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        if in_type != np.float32:
            info = np.iinfo(in_type)
            x = np.clip(np.round(x / in_scale + in_zero), info.min, info.max).astype(in_type)
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(sink["index"])
        if out_type != np.float32:
            y = (y.astype(np.float32) - out_zero) * out_scale
        return y

    tensors = interpreter.get_tensor_details()
    tensor_types = Counter(np.dtype(t["dtype"]).name for t in tensors)
    return Variant(
        run,
        (path,),
        runtime=f"litert {getattr(ai_edge_litert, '__version__', '')}".strip(),
        precision=precision,
        details={
            "num_threads": ctx.threads,
            "input_type": np.dtype(in_type).name,
            "output_type": np.dtype(out_type).name,
            "tensor_types": dict(sorted(tensor_types.items())),
            "int8_scales": _scale_granularity(tensors),
        },
        restore=Restore(
            "pytest_modelopt.variants.tflite:restore_tflite",
            {"filename": path.name, "precision": precision},
        ),
    )


def _scale_granularity(tensors: list[dict[str, Any]]) -> dict[str, int]:
    """How many int8 tensors are quantized with one scale, and how many per channel."""
    import numpy as np

    counts: Counter[str] = Counter()
    for tensor in tensors:
        if tensor["dtype"] == np.int8:
            scales = len(tensor["quantization_parameters"]["scales"])
            counts["per_channel" if scales > 1 else "per_tensor"] += 1
    return dict(sorted(counts.items()))


def representative_dataset(ctx: BuildContext) -> Callable[[], Iterator[Any]]:
    """Return the spec's calibration batches, one sample at a time, as the converter expects."""
    import numpy as np

    if not ctx.spec.calibration_data:
        raise BuildError(
            f"{ctx.technique} needs calibration data: give ModelSpec {ctx.spec.name!r} "
            "calibration_data (a few representative batches)"
        )

    def samples() -> Iterator[Any]:
        for batch in ctx.spec.calibration_data:
            for sample in np.asarray(batch, dtype=np.float32):
                yield [sample[None]]

    return samples


@register_technique(
    "tflite",
    backend=TFLITE_BACKENDS,
    frameworks=("keras",),
    description="TFLite fp32, run by LiteRT",
)
def build_tflite(ctx: BuildContext) -> Variant:
    """Convert the Keras model to TFLite as it is (fp32), run by LiteRT."""
    return tflite_variant(ctx, "fp32")


@register_technique(
    "tflite_dynamic",
    backend=TFLITE_BACKENDS,
    frameworks=("keras",),
    description="TFLite dynamic range: int8 weights, float activations",
)
def build_tflite_dynamic(ctx: BuildContext) -> Variant:
    """Convert to TFLite with dynamic range quantization: int8 weights, float activations."""

    def configure(converter: Any, tf: Any) -> None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

    return tflite_variant(ctx, "int8 weights, fp32 activations (dynamic range)", configure)


@register_technique(
    "tflite_fp16",
    backend=TFLITE_BACKENDS,
    frameworks=("keras",),
    description="TFLite float16 weights (computed in fp32 on CPU, in fp16 on GPU delegates)",
)
def build_tflite_fp16(ctx: BuildContext) -> Variant:
    """Convert to TFLite with float16 weights (dequantized to fp32 for a CPU's kernels)."""

    def configure(converter: Any, tf: Any) -> None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]

    return tflite_variant(ctx, "fp16 weights, dequantized to fp32 on CPU", configure)


@register_technique(
    "tflite_int8",
    backend=TFLITE_BACKENDS,
    frameworks=("keras",),
    description="TFLite full integer: int8 ops, int8 input and output, calibrated",
)
def build_tflite_int8(ctx: BuildContext) -> Variant:
    """Convert to full-integer TFLite, calibrated: int8 ops, int8 input and output."""
    dataset = representative_dataset(ctx)

    def configure(converter: Any, tf: Any) -> None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8

    variant = tflite_variant(ctx, "int8 (full integer, int8 input and output)", configure)
    variant.details["calibration_batches"] = len(ctx.spec.calibration_data)
    return variant


@register_technique(
    "tflite_int8_fallback",
    backend=TFLITE_BACKENDS,
    frameworks=("keras",),
    description="TFLite integer with float fallback: float input and output, calibrated",
)
def build_tflite_int8_fallback(ctx: BuildContext) -> Variant:
    """Convert to integer TFLite, calibrated, with float ops where no int8 kernel exists.

    Input and output stay float.
    """
    dataset = representative_dataset(ctx)

    def configure(converter: Any, tf: Any) -> None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset

    variant = tflite_variant(ctx, "int8 ops with float fallback, fp32 input and output", configure)
    variant.details["calibration_batches"] = len(ctx.spec.calibration_data)
    return variant


def _set_tensorflow_threads(tf: Any, threads: int | None) -> int:
    """Set TensorFlow's intra-op threads; return the thread count in force, which is recorded.

    Once TensorFlow's runtime has started its threads can no longer change.
    """
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass
    return int(tf.config.threading.get_intra_op_parallelism_threads())
