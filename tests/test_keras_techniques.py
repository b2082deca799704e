"""Keras models: the Keras reference and the TFLite variants run by LiteRT, on a tiny regressor
trained here. Each variant is checked for the precision it claims (tensor types in the flatbuffer,
input and output types) and for agreement with the Keras model.

TensorFlow is imported inside fixtures, through ``load_tensorflow``, never at collection: this
process also runs torch tests (see test_tensorflow_and_torch_share_a_process).
"""

import subprocess
import sys

import numpy as np
import pytest

from pytest_modelopt import Evaluator, MeasureSettings, ModelSpec
from pytest_modelopt.errors import BuildError, NotApplicable

pytestmark = pytest.mark.modelopt_requires(backend=["tensorflow", "litert"])
QUICK = MeasureSettings(threads=1, warmup_s=0.02, warmup_calls=3, max_time=0.2)


def tiny_regressor() -> object:
    """A conv regressor of a real rule: the left half's mean brightness minus the right half's."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    x, y = rule(np.random.default_rng(0), 2048)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    model.fit(x, y, batch_size=64, epochs=15, verbose=0)
    return model


def rule(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(0, 1, (count, 8, 8, 1)).astype(np.float32)
    y = x[:, :, :4].mean(axis=(1, 2, 3)) - x[:, :, 4:].mean(axis=(1, 2, 3))
    return x, 10 * y


@pytest.fixture(scope="module")
def keras_spec() -> ModelSpec:
    rng = np.random.default_rng(1)
    x_eval, y_eval = rule(rng, 256)
    return ModelSpec.from_keras(
        "tiny_regressor",
        tiny_regressor,
        example_input=rule(rng, 4)[0],
        calibration_data=[rule(rng, 32)[0] for _ in range(4)],
        eval_data=[(x_eval, y_eval)],
    )


@pytest.fixture(scope="module")
def evaluator(keras_spec: ModelSpec, tmp_path_factory) -> Evaluator:
    return Evaluator(keras_spec, settings=QUICK, workdir=tmp_path_factory.mktemp("keras"))


def test_the_reference_is_the_keras_model(evaluator: Evaluator) -> None:
    assert evaluator.spec.framework == "keras"
    reference = evaluator.build("eager")
    assert reference.technique == "eager"  # keras_reference leaves its name to the registry
    assert reference.runtime.startswith("tensorflow ")
    assert [path.suffix for path in reference.files] == [".keras"]
    # Saved without the optimizer's state: about the size of the fp32 weights.
    weights = sum(w.size for w in evaluator.spec.load().get_weights()) * 4
    assert reference.size_bytes() < 1.5 * weights + 30_000
    result = evaluator.evaluate("eager")
    assert result.accuracy["mse"] == result.accuracy["reference_mse"]
    assert result.accuracy["mse"] < 0.1 * float(np.var(evaluator.spec.eval_data[0][1]))


def test_tflite_fp32_agrees_with_keras(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("tflite")
    details = result.variant.details
    assert result.variant.runtime.startswith("litert")
    assert details["num_threads"] == QUICK.threads
    assert (details["input_type"], details["output_type"]) == ("float32", "float32")
    assert set(details["tensor_types"]) <= {"float32", "int32"}
    assert result.accuracy["max_abs_error"] < 1e-4
    weights = sum(w.size for w in evaluator.spec.load().get_weights()) * 4
    assert weights < result.sizes["variant_bytes"] < 1.1 * weights + 8_000


def test_tflite_dynamic_stores_int8_weights(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("tflite_dynamic")
    details = result.variant.details
    # TFLite quantizes weights of more than 1024 elements: here the 1152x32 dense kernel, with a
    # scale per output channel.
    assert details["tensor_types"]["int8"] == 1
    assert details["int8_scales"] == {"per_channel": 1}
    assert (details["input_type"], details["output_type"]) == ("float32", "float32")
    assert result.sizes["variant_bytes"] < 0.5 * evaluator.build("tflite").size_bytes()
    # Judged against the targets' variance, not the reference's MSE: the regressor is trained
    # here, its weights depend on the CPU's kernels, and its MSE is ~3e-4 of the variance, so the
    # relative increase swings with the CPU (0.07 on AVX2, 0.20 with oneDNN capped to SSE4.1 or
    # on an AVX-512 EPYC) while the increase stays under 1e-4 of the variance.
    variance = float(np.var(evaluator.spec.eval_data[0][1]))
    assert result.accuracy["mse_increase"] < 1e-3 * variance
    assert result.accuracy["max_abs_error"] < 0.1


def test_tflite_fp16_stores_float16_weights(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("tflite_fp16")
    assert result.variant.details["tensor_types"]["float16"] >= 2
    fp32 = evaluator.build("tflite").size_bytes()
    assert 0.4 * fp32 < result.sizes["variant_bytes"] < 0.7 * fp32
    assert result.accuracy["max_abs_error"] < 0.05


def test_tflite_int8_is_integer_end_to_end(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("tflite_int8")
    details = result.variant.details
    assert (details["input_type"], details["output_type"]) == ("int8", "int8")
    assert set(details["tensor_types"]) <= {"int8", "int32"}  # no float tensor anywhere
    assert details["calibration_batches"] == 4
    # int8 input and output are quantized and dequantized by the variant: it answers in floats.
    assert_still_a_good_regressor(result, evaluator.spec)


def test_tflite_int8_fallback_keeps_float_io(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("tflite_int8_fallback")
    details = result.variant.details
    assert (details["input_type"], details["output_type"]) == ("float32", "float32")
    assert details["tensor_types"]["int8"] >= 4
    assert_still_a_good_regressor(result, evaluator.spec)


def assert_still_a_good_regressor(result, spec: ModelSpec) -> None:
    """The reference is nearly exact (MSE ~1e-4 of a 0.5 variance), so a relative change says
    little: int8 must lose under 0.5% of the variance explained."""
    variance = float(np.var(spec.eval_data[0][1]))
    assert result.accuracy["mse_increase"] < 0.005 * variance
    assert result.accuracy["max_abs_error"] < 0.5


def test_tflite_int8_without_calibration_data_says_what_to_give(keras_spec, tmp_path) -> None:
    spec = ModelSpec(
        name="uncalibrated",
        factory=keras_spec.load,
        example_input=keras_spec.example_input,
    )
    with pytest.raises(BuildError, match="tflite_int8 needs calibration data"):
        Evaluator(spec, settings=QUICK, workdir=tmp_path).build("tflite_int8")


def test_torch_techniques_skip_a_keras_model(evaluator: Evaluator) -> None:
    with pytest.raises(
        NotApplicable,
        match="torchscript: applies to torch models; tiny_regressor is a keras model",
    ):
        evaluator.build("torchscript")


def test_tflite_techniques_skip_a_torch_model(tmp_path) -> None:
    from models import mlp_spec

    with pytest.raises(NotApplicable, match="tflite: applies to keras models; mlp is a torch"):
        Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path).build("tflite")


@pytest.mark.parametrize("after", ["import torchvision", "import torch._dynamo", "import triton"])
def test_tensorflow_and_torch_share_a_process(after: str) -> None:
    """Loaded through load_tensorflow, TensorFlow leaves torch usable in the same process
    (imported plainly, TensorFlow makes a later import of Triton crash with a segfault)."""
    pytest.importorskip("triton")
    code = f"from pytest_modelopt.spec import load_tensorflow; load_tensorflow(); {after}"
    # generous: a cold import of TensorFlow and torch took over 120 s on a loaded 2-core machine
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


@pytest.mark.parametrize("technique", ["tflite", "tflite_int8"])
def test_a_kept_tflite_build_is_reopened_in_a_later_session(
    keras_spec: ModelSpec, tmp_path, technique: str
) -> None:
    import json

    def session(name: str) -> Evaluator:
        return Evaluator(keras_spec, settings=QUICK, workdir=tmp_path / name, cache_dir=tmp_path)

    first = session("first").build(technique)
    assert first.build_cache == "kept"
    second = session("second").build(technique)
    assert second.build_cache.startswith("reused: built in")
    assert (second.runtime, second.precision) == (first.runtime, first.precision)
    assert second.details == json.loads(json.dumps(first.details))
    assert second.size_bytes() == first.size_bytes()
    batch = keras_spec.example_input
    np.testing.assert_array_equal(second.run(batch), first.run(batch))


def test_the_build_key_of_a_keras_model_ignores_the_names_keras_generated() -> None:
    import keras

    from pytest_modelopt.buildcache.keys import spec_digest

    def spec(width: int) -> ModelSpec:
        def factory() -> object:
            keras.utils.set_random_seed(0)
            return keras.Sequential(
                [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(width)]
            )

        return ModelSpec.from_keras(
            "unnamed", factory, example_input=rule(np.random.default_rng(0), 2)[0]
        )

    first, second = spec(4), spec(4)
    first.load()
    keras.layers.Dense(1)  # as a session that made other layers first: the next names differ
    assert [layer.name for layer in first.load().layers] != [
        layer.name for layer in second.load().layers
    ]
    assert spec_digest(first) == spec_digest(second)
    assert spec_digest(spec(5)) != spec_digest(first)
