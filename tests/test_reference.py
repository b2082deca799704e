"""The reference (``eager``): one build function per framework, each registered in its module."""

import importlib.util
from types import SimpleNamespace

import pytest

from pytest_modelopt import Evaluator, MeasureSettings, ModelSpec, Variant
from pytest_modelopt.errors import NotApplicable, PackageMissing
from pytest_modelopt.hardware import CPU, Hardware
from pytest_modelopt.reference import _REFERENCES, REFERENCE, reference_for, register_reference
from pytest_modelopt.registry import _REGISTRY, get_technique
from pytest_modelopt.variants.base import BuildContext

QUICK = MeasureSettings(threads=1, warmup_s=0.02, warmup_calls=3, max_time=0.2)
HARDWARE = Hardware(cpu=CPU("Test CPU", "x86_64", "GenuineIntel", 6, 1, 1, 1, ("avx2",)))


class Doubler:
    """A plain Python model, picklable: doubles its input."""

    def __call__(self, x: float) -> list[list[float]]:
        return [[2.0 * x]]


@pytest.fixture
def isolated_references(monkeypatch: pytest.MonkeyPatch) -> None:
    """References and the ``eager`` technique as they were, whatever a test registers."""
    get_technique(REFERENCE)  # the built-in references first
    monkeypatch.setattr("pytest_modelopt.reference._REFERENCES", dict(_REFERENCES))
    monkeypatch.setitem(_REGISTRY, REFERENCE, _REGISTRY[REFERENCE])


@pytest.mark.parametrize(
    ("framework", "module"),
    [("torch", "torch_eager"), ("keras", "tflite"), ("python", "python_eager")],
)
def test_each_framework_registers_its_reference_in_its_own_module(
    framework: str, module: str
) -> None:
    reference = reference_for(framework)
    assert reference.build.__module__ == f"pytest_modelopt.variants.{module}"
    assert reference.frameworks == (framework,)


def test_eager_applies_to_the_frameworks_with_a_reference() -> None:
    eager = get_technique(REFERENCE)
    assert eager.frameworks == ("keras", "python", "torch")
    assert eager.description.startswith("the fp32 model as written, run eagerly")


def test_what_the_counting_worker_imports_for_each_reference() -> None:
    assert reference_for("torch").requires.packages == ("torch",)
    assert reference_for("keras").requires.packages == ("tensorflow",)
    assert reference_for("python").requires.packages == ()


def test_a_framework_without_a_reference_is_not_applicable() -> None:
    with pytest.raises(NotApplicable, match=r"^eager: no reference is registered for jax models"):
        reference_for("jax")


def test_a_python_model_is_pickled(tmp_path) -> None:
    spec = ModelSpec(name="doubler", factory=Doubler, example_input=3.0)
    variant = Evaluator(spec, settings=QUICK, hardware=HARDWARE, workdir=tmp_path).build("eager")
    assert variant.technique == "eager"
    assert (variant.runtime, variant.precision) == ("python", "fp32")
    assert [path.name for path in variant.files] == ["model.pkl"]
    assert variant.loader is not None
    assert variant.loader.function == "pytest_modelopt.variants.python_eager:pickled_runner"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_a_torch_model_runs_as_the_module(tmp_path) -> None:
    import torch

    spec = ModelSpec.from_torch("linear", lambda: torch.nn.Linear(4, 2), torch.ones(2, 4))
    variant = Evaluator(spec, settings=QUICK, hardware=HARDWARE, workdir=tmp_path).build("eager")
    assert variant.technique == "eager"
    assert variant.runtime == f"torch {torch.__version__}"
    assert [path.name for path in variant.files] == ["model.pt"]
    assert variant.loader is not None
    assert variant.loader.function == "pytest_modelopt.variants.torch_eager:eager_runner"


def test_a_new_framework_is_one_registration(isolated_references, tmp_path) -> None:
    @register_reference("toyframework")
    def build(ctx):
        """Build the toy framework's reference."""
        return Variant(ctx.model, (), runtime="toy", precision="fp32")

    assert "toyframework" in get_technique(REFERENCE).frameworks
    variant = get_technique(REFERENCE).build_variant(_context("toyframework", tmp_path))
    assert (variant.technique, variant.runtime) == ("eager", "toy")


def test_a_reference_needs_what_it_declares(isolated_references, tmp_path) -> None:
    @register_reference("toyframework", packages="no_such_pkg_zz")
    def build(ctx):
        raise AssertionError("not built: its package is missing")

    with pytest.raises(PackageMissing, match=r"^eager: package no_such_pkg_zz not installed"):
        get_technique(REFERENCE).build_variant(_context("toyframework", tmp_path))


def test_a_reference_replaced_from_elsewhere_warns(isolated_references) -> None:
    with pytest.warns(UserWarning, match=r"the reference of python models from .* is replaced"):

        @register_reference("python")
        def build(ctx):
            raise AssertionError


def _context(framework: str, workdir) -> BuildContext:
    spec = SimpleNamespace(name="toy", framework=framework)
    return BuildContext(spec=spec, model=Doubler(), workdir=workdir, hardware=HARDWARE)
