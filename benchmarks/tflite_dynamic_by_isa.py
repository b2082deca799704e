"""Why the TFLite dynamic-range test moved between CPUs: the reference is trained here.

Trains the test suite's tiny Keras regressor, converts it with dynamic-range quantization (per
channel, as the converter does, and per tensor), runs it with LiteRT's default XNNPACK kernels,
its built-in kernels and its reference kernels, and prints the relative MSE increase next to the
increase over the targets' variance. Run it under an ISA cap to see the training move:

    .venv/bin/python benchmarks/tflite_dynamic_by_isa.py
    ONEDNN_MAX_CPU_ISA=SSE41 .venv/bin/python benchmarks/tflite_dynamic_by_isa.py
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

RESOLVERS = ("AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "BUILTIN_REF")


def convert(tf, model, per_channel_dense: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_disable_per_channel_quantization_for_dense_layers = (
        not per_channel_dense
    )
    return converter.convert()


def predict(flatbuffer: bytes, resolver: str, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=flatbuffer,
        num_threads=1,
        experimental_op_resolver_type=getattr(OpResolverType, resolver),
    )
    (source,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(source["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[:, 0]


def main() -> None:
    from pytest_modelopt.spec import load_tensorflow

    tf = load_tensorflow()
    from test_keras_techniques import rule, tiny_regressor

    model = tiny_regressor()
    x, y = rule(np.random.default_rng(1), 256)
    reference_mse = float(np.mean((model(x, training=False).numpy()[:, 0] - y) ** 2))
    variance = float(np.var(y))
    print(f"reference MSE {reference_mse:.3g}, targets' variance {variance:.3g}")
    for per_channel in (True, False):
        flatbuffer = convert(tf, model, per_channel)
        for resolver in RESOLVERS:
            mse = float(np.mean((predict(flatbuffer, resolver, x) - y) ** 2))
            increase = mse - reference_mse
            print(
                f"{'per-channel' if per_channel else 'per-tensor '} {resolver:34s} "
                f"relative MSE increase {increase / reference_mse:.3f}  "
                f"increase / variance {increase / variance:.2e}"
            )


if __name__ == "__main__":
    main()
