"""Built variants kept on disk: reused when nothing they depend on changed, rebuilt otherwise."""

import dataclasses
import json
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import FAST_INI
from models import QUICK, ConvNet
from pytest_modelopt import ModelSpec
from pytest_modelopt.buildcache import BuildCache, build_key, spec_digest
from pytest_modelopt.evaluation import Evaluator
from pytest_modelopt.metrics import to_numpy
from pytest_modelopt.registry import get_technique, register_technique
from pytest_modelopt.variants.base import BuildContext, Variant
from pytest_modelopt.variants.torch_eager import saved_variant


def calibrated_conv_spec(seed: int = 0) -> ModelSpec:
    generator = torch.Generator().manual_seed(5)

    def factory() -> torch.nn.Module:
        torch.manual_seed(seed)
        return ConvNet().eval()

    return ModelSpec.from_torch(
        "convnet",
        factory,
        example_input=torch.randn(2, 3, 16, 16, generator=generator),
        calibration_data=[torch.randn(4, 3, 16, 16, generator=generator) for _ in range(2)],
        train_data=[
            (torch.randn(8, 3, 16, 16, generator=generator), torch.arange(8) % 10) for _ in range(2)
        ],
    )


def evaluator(
    tmp_path: Path, cache: Path, spec: ModelSpec | None = None, settings=QUICK, **kwargs
) -> Evaluator:
    """A new Evaluator (as a new session makes one) over the same cache directory."""
    lines: list[str] = []
    made = Evaluator(
        spec or calibrated_conv_spec(),
        settings=settings,
        workdir=Path(tmp_path / f"session-{len(list(tmp_path.iterdir()))}"),
        cache_dir=cache,
        log=lines.append,
        **kwargs,
    )
    made.lines = lines  # type: ignore[attr-defined]
    return made


def output(variant: Variant, spec: ModelSpec) -> np.ndarray:
    return to_numpy(variant.run(spec.example_input))


@pytest.mark.parametrize(
    "technique",
    [
        "onnxruntime",
        "onnxruntime_static_int8",
        "openvino_fp32",
        "export",
        "pruned_structured",
        "dynamic_int8",
    ],
)
def test_a_second_session_reuses_the_build_and_runs_the_same_model(tmp_path, technique) -> None:
    cache = tmp_path / "cache"
    first = evaluator(tmp_path, cache).build(technique)
    assert first.build_cache == "kept"
    second_session = evaluator(tmp_path, cache)
    second = second_session.build(technique)
    assert second.build_cache.startswith("reused: built in")
    assert any("reused from the build cache" in line for line in second_session.lines)
    assert second.technique == technique
    assert (second.runtime, second.precision) == (first.runtime, first.precision)
    assert second.details == json.loads(json.dumps(first.details))
    assert [p.name for p in second.files] == [p.name for p in first.files]
    assert second.size_bytes() == first.size_bytes()
    assert all(Path(path).is_relative_to(second_session.workdir) for path in second.files)
    spec = second_session.spec
    np.testing.assert_array_equal(output(second, spec), output(first, spec))
    if first.loader is not None:  # a worker process loads the restored files
        assert second.loader is not None
        in_worker = second.loader.load()(spec.example_input)
        np.testing.assert_array_equal(to_numpy(in_worker), output(first, spec))


@pytest.mark.parametrize("technique", ["static_int8", "qat_int8"])
def test_an_fx_graph_of_quantized_modules_is_kept_and_restored(tmp_path, technique) -> None:
    # torch 2.14's own pickling of quantized modules loads them without nn.Module's state
    cache = tmp_path / "cache"
    params = {"path": "fx"} if technique == "static_int8" else None
    spec = calibrated_conv_spec()
    first = evaluator(tmp_path, cache, spec).build(technique, params)
    assert first.build_cache == "kept"
    second_session = evaluator(tmp_path, cache, calibrated_conv_spec())
    second = second_session.build(technique, params)
    assert second.build_cache.startswith("reused")
    assert second.precision == first.precision
    np.testing.assert_array_equal(output(second, spec), output(first, spec))


class OneLinear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class Reloaded(OneLinear):
    """Pickles, but unpickles into something else: the check that an entry loads back."""

    def __reduce__(self):
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("this module cannot be rebuilt")


@register_technique("_test_reloaded", backend="torch", description="does not load back")
def _build_reloaded(ctx: BuildContext) -> Variant:
    module = Reloaded()
    return saved_variant(ctx, module, module.state_dict(), precision="fp32")


def test_a_module_that_does_not_load_back_is_not_kept(tmp_path) -> None:
    spec = ModelSpec.from_torch("tiny", lambda: torch.nn.Linear(2, 2), torch.randn(1, 2))
    variant = evaluator(tmp_path, tmp_path / "cache", spec).build("_test_reloaded")
    assert variant.build_cache.startswith("not kept: its module does not load back")
    assert "this module cannot be rebuilt" in variant.build_cache
    assert not list((tmp_path / "cache" / "builds").glob("*/*"))


def test_what_a_build_reads_is_in_its_key(tmp_path) -> None:
    cache = tmp_path / "cache"
    evaluator(tmp_path, cache).build("openvino_fp32")
    other_weights = evaluator(tmp_path, cache, calibrated_conv_spec(seed=1))
    assert other_weights.build("openvino_fp32").build_cache == "kept"
    other_params = evaluator(tmp_path, cache)
    assert other_params.build("openvino_fp32", {"source": "onnx"}).build_cache == "kept"
    other_threads = evaluator(tmp_path, cache, settings=dataclasses.replace(QUICK, threads=2))
    assert other_threads.build("openvino_fp32").build_cache == "kept"
    assert evaluator(tmp_path, cache).build("openvino_fp32").build_cache.startswith("reused")


def test_the_key_changes_with_data_machine_and_versions() -> None:
    spec = calibrated_conv_spec()
    digest = spec_digest(spec)
    assert spec_digest(calibrated_conv_spec()) == digest  # stable between sessions
    changed = calibrated_conv_spec()
    changed.calibration_data = [batch + 1 for batch in changed.calibration_data]
    assert spec_digest(changed) != digest
    technique = get_technique("openvino_fp32")
    key, keyed_on = build_key(digest, technique, {}, fingerprint="a", threads=1)
    assert build_key(digest, technique, {}, fingerprint="b", threads=1)[0] != key
    assert build_key(digest, technique, {}, fingerprint="a", threads=2)[0] != key
    assert keyed_on["packages"]["openvino"]
    assert keyed_on["packages"]["numpy"]
    assert "pytest_modelopt.variants.openvino" in keyed_on["code"]


def only_entry(cache: Path) -> Path:
    (manifest,) = (cache / "builds").glob("*/*/manifest.json")
    return manifest.parent


def test_an_entry_whose_file_changed_is_rebuilt_never_loaded(tmp_path) -> None:
    cache = tmp_path / "cache"
    evaluator(tmp_path, cache).build("openvino_fp32")
    entry = only_entry(cache)
    recorded = json.loads((entry / "manifest.json").read_text())["files"]["model.bin"]
    weights = entry / "files" / recorded["stored_as"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    again = evaluator(tmp_path, cache)
    assert again.build("openvino_fp32").build_cache == "kept"
    assert any(
        "cannot be used" in line and "sha256" in line and "building again" in line
        for line in again.lines
    )
    assert evaluator(tmp_path, cache).build("openvino_fp32").build_cache.startswith("reused")


def test_a_cut_short_manifest_is_rebuilt(tmp_path) -> None:
    cache = tmp_path / "cache"
    evaluator(tmp_path, cache).build("pruned_structured")
    manifest = only_entry(cache) / "manifest.json"
    manifest.write_text(manifest.read_text()[:100])
    again = evaluator(tmp_path, cache)
    assert again.build("pruned_structured").build_cache == "kept"
    assert any("JSONDecodeError" in line for line in again.lines)


def test_a_chain_starts_from_the_step_its_technique_kept_and_is_kept_whole(tmp_path) -> None:
    cache = tmp_path / "cache"
    evaluator(tmp_path, cache).build("pruned_structured")
    chain = "pruned_structured+openvino_fp32"
    second_session = evaluator(tmp_path, cache)
    built = second_session.build(chain)
    assert "convnet[pruned_structured]: reused from the build cache" in "\n".join(
        second_session.lines
    )
    assert built.build_cache == "kept"
    third_session = evaluator(tmp_path, cache)
    again = third_session.build(chain)
    assert again.build_cache.startswith("reused")
    assert again.technique == chain
    spec = third_session.spec
    np.testing.assert_array_equal(output(again, spec), output(built, spec))


def test_a_later_chain_step_is_keyed_on_the_step_before(tmp_path) -> None:
    cache = tmp_path / "cache"
    chain = "pruned_structured+clustered+openvino_fp32"
    assert evaluator(tmp_path, cache).build(chain).build_cache == "kept"
    same = evaluator(tmp_path, cache)
    same.build(chain, {"openvino_fp32": {"source": "onnx"}})
    assert "convnet[clustered]: reused" in "\n".join(same.lines)
    other = evaluator(tmp_path, cache)
    other.build(chain, {"pruned_structured": {"ratio": 0.5}})
    assert "convnet[clustered]: reused" not in "\n".join(other.lines)  # another pruned model


class Planted:
    """Unpickling this writes a file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_a_pickle_the_plugin_did_not_write_is_not_loaded(tmp_path) -> None:
    cache = tmp_path / "cache"
    evaluator(tmp_path, cache).build("pruned_structured")
    marker = tmp_path / "unpickled"
    with (only_entry(cache) / "objects.pt").open("wb") as handle:
        torch.save({"run_module": Planted(marker)}, handle, pickle_module=pickle)
    again = evaluator(tmp_path, cache)
    assert again.build("pruned_structured").build_cache == "kept"
    assert not marker.exists()


def test_no_partial_entry_is_left_and_a_racing_writer_keeps_the_first(tmp_path) -> None:
    cache = tmp_path / "cache"
    first = evaluator(tmp_path, cache)
    variant = first.build("onnxruntime")
    key, keyed_on = first.builder._cache_key(get_technique("onnxruntime"), {})
    entry = only_entry(cache)
    before = (entry / "manifest.json").read_text()
    workdir = first.workdir / "onnxruntime"
    kept_again = BuildCache(cache / "builds").keep(key, keyed_on, variant, workdir, first.workdir)
    assert kept_again == "kept (by another process)"
    assert (entry / "manifest.json").read_text() == before
    assert not [p for p in (cache / "builds").iterdir() if p.name.startswith(".")]


class Unpicklable(OneLinear):
    def __init__(self) -> None:
        super().__init__()
        self.hook = lambda: None  # a lambda cannot be pickled


@register_technique("_test_unpicklable", backend="torch", description="a module with a lambda")
def _build_unpicklable(ctx: BuildContext) -> Variant:
    module = Unpicklable()
    return saved_variant(ctx, module, module.state_dict(), precision="fp32")


def test_a_variant_that_cannot_be_saved_is_built_and_says_why(tmp_path) -> None:
    spec = ModelSpec.from_torch("tiny", lambda: torch.nn.Linear(2, 2), torch.randn(1, 2))
    first = evaluator(tmp_path, tmp_path / "cache", spec)
    variant = first.build("_test_unpicklable")
    assert variant.build_cache.startswith("not kept: its module cannot be saved")
    assert variant.describe()["build_cache"] == variant.build_cache
    assert not list((tmp_path / "cache" / "builds").glob("*/*"))


class Doubler:
    def __call__(self, x):
        return x * 2


def test_a_plain_python_model_is_built_each_time_and_the_log_says_why(tmp_path) -> None:
    spec = ModelSpec("double", Doubler, np.ones(3))
    session = evaluator(tmp_path, tmp_path / "cache", spec)
    session.build("eager")
    assert session.builder._cache_key(get_technique("openvino_fp32"), {}) is None
    assert any("builds are not cached" in line for line in session.lines)


def test_reuse_builds_off_builds_again(tmp_path) -> None:
    cache = tmp_path / "cache"
    evaluator(tmp_path, cache).build("pruned_structured")
    again = evaluator(tmp_path, cache, reuse_builds=False)
    assert again.build("pruned_structured").build_cache == ""
    assert again.builder.cache is None


@pytest.mark.parametrize("off", [False, True])
def test_the_plugin_reuses_builds_between_sessions_unless_told_not_to(pytester, off) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.modelopt(techniques=["pruned_structured"])
            def test_pruned(modelopt_variant):
                modelopt_variant.expect(size_ratio="<=1.0")
            """
        )
    )
    pytester.makeconftest(
        textwrap.dedent(
            """
            import pytest
            import torch
            from pytest_modelopt import ModelSpec

            @pytest.fixture(scope="module")
            def modelopt_spec():
                def factory():
                    torch.manual_seed(0)
                    return torch.nn.Sequential(
                        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                        torch.nn.Linear(8 * 14 * 14, 10),
                    ).eval()

                example = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
                return ModelSpec.from_torch("convnet", factory, example_input=example)
            """
        )
    )
    pytester.makeini(FAST_INI)
    args = ["--modelopt-threads=1", "--modelopt-inconclusive=report"]
    if off:
        args.append("--modelopt-build-cache=off")
    first = pytester.runpytest(*args)
    first.assert_outcomes(passed=1)
    assert "pruned_structured]: built in" in first.stdout.str()
    second = pytester.runpytest(*args)
    second.assert_outcomes(passed=1)
    reused = "convnet[pruned_structured]: reused from the build cache" in second.stdout.str()
    assert reused is not off
    summary = "build cache: 0 reused (restored in 0.0 s), 1 built and kept"
    assert (summary in first.stdout.str()) is not off
    assert ("build cache: 1 reused" in second.stdout.str()) is not off
