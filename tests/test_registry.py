import dataclasses
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import pytest

import pytest_modelopt.variants
from pytest_modelopt import Evaluator, ModelSpec, Variant
from pytest_modelopt.backends import install_hint
from pytest_modelopt.errors import (
    HardwareMissing,
    PackageMissing,
    ParameterError,
    UnknownTechniqueError,
)
from pytest_modelopt.hardware import CPU, Hardware
from pytest_modelopt.registry import (
    _REGISTRY,
    Requirements,
    builtin_modules,
    get_technique,
    list_techniques,
    register_technique,
)


def test_builtin_techniques_are_registered() -> None:
    assert {"eager", "torchscript", "dynamic_int8"} <= set(list_techniques())
    assert list_techniques("dynamic_*") == ["dynamic_int8"]
    assert "eager" not in list_techniques(exclude=["eag*"])


def test_unknown_technique() -> None:
    with pytest.raises(
        UnknownTechniqueError, match=r"unknown technique .nope.; registered techniques: .*eager"
    ):
        get_technique("nope")


def test_requirements_report_exact_reasons() -> None:
    cpu = CPU("Test CPU", "x86_64", "GenuineIntel", 6, 1, 2, 4, ("avx2",))
    hardware = Hardware(cpu=cpu, notes=("no NVIDIA driver (NVML_ERROR_LIBRARY_NOT_FOUND)",))
    with pytest.raises(
        PackageMissing,
        match=r"^package no_such_pkg_zz not installed \(pip install no_such_pkg_zz\)$",
    ):
        Requirements(packages=("no_such_pkg_zz",)).check(hardware)
    with pytest.raises(
        HardwareMissing,
        match=r"needs the CPU extension avx512_bf16 or amx_bf16, which Test CPU \(x86_64\) lacks",
    ):
        Requirements(isa=("avx2", "avx512_bf16|amx_bf16")).check(hardware)
    with pytest.raises(
        HardwareMissing, match=r"needs an NVIDIA GPU, none found \(no NVIDIA driver"
    ):
        Requirements(gpu=True).check(hardware)
    Requirements(packages=("json",), isa=("avx2",)).check(hardware)  # all present: no error


def test_missing_backend_names_the_extra_to_install() -> None:
    assert install_hint(["openvino"]) == "pip install 'pytest-modelopt[openvino]'"
    assert install_hint(["onnx", "onnxruntime"]) == "pip install 'pytest-modelopt[onnx]'"
    assert install_hint(["no_such_pkg"]) == "pip install no_such_pkg"


def test_requirements_from_marker_keywords() -> None:
    requirements = Requirements.from_marker(backend="onnxruntime", isa="avx2", gpu=True)
    assert requirements.packages == ("onnx", "onnxruntime")
    assert requirements.isa == ("avx2",)
    assert requirements.gpu
    with pytest.raises(ValueError, match="unknown backend 'tensorrtx'"):
        Requirements.from_marker(backend="tensorrtx")


def test_replacing_a_technique_from_elsewhere_warns() -> None:
    @register_technique("test_registry_dup", frameworks=("python",))
    def first(ctx):
        raise AssertionError

    with pytest.warns(UserWarning, match="technique 'test_registry_dup' from .*first is replaced"):

        @register_technique("test_registry_dup", frameworks=("python",))
        def second(ctx):
            raise AssertionError

    assert get_technique("test_registry_dup").build is second


@dataclass(frozen=True)
class ToyParams:
    """The parameters of the toy technique below."""

    ratio: float = field(default=0.5, metadata={"help": "a fraction"})
    steps: int = field(default=0, metadata={"help": "a count"})
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "a choice"})
    limit: int | None = field(default=None, metadata={"help": "an optional count"})
    on: bool = field(default=False, metadata={"help": "a switch"})


@register_technique("test_registry_toy", frameworks=("python",), params=ToyParams)
def build_toy(ctx):
    raise AssertionError


def test_parameters_are_declared_by_a_dataclass() -> None:
    technique = get_technique("test_registry_toy")
    assert technique.parameters is ToyParams
    assert technique.defaults == {
        "ratio": 0.5,
        "steps": 0,
        "mode": "a",
        "limit": None,
        "on": False,
    }
    resolved = technique.resolve_params({"ratio": 1, "limit": 8, "mode": "b"})
    assert resolved == {"ratio": 1, "steps": 0, "mode": "b", "limit": 8, "on": False}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"size": 4}, "test_registry_toy takes no parameter 'size'; its parameters: limit, mode, "),
        ({"ratio": "0.5"}, "test_registry_toy: parameter 'ratio' expects float, got '0.5' (str)"),
        ({"steps": 2.0}, "test_registry_toy: parameter 'steps' expects int, got 2.0 (float)"),
        ({"steps": True}, "test_registry_toy: parameter 'steps' expects int, got True (bool)"),
        ({"mode": "c"}, "test_registry_toy: parameter 'mode' expects 'a' or 'b', got 'c' (str)"),
        ({"limit": "8"}, "test_registry_toy: parameter 'limit' expects int or None, got '8'"),
        ({"on": 1}, "test_registry_toy: parameter 'on' expects bool, got 1 (int)"),
    ],
)
def test_parameters_are_checked_by_name_and_type(params: dict, message: str) -> None:
    with pytest.raises(ParameterError) as raised:
        get_technique("test_registry_toy").resolve_params(params)
    assert str(raised.value).startswith(message)


def test_builtin_parameters_are_typed() -> None:
    with pytest.raises(ParameterError, match=r"'importance' expects 'l1' or 'l2', got 'l3'"):
        get_technique("pruned_structured").resolve_params({"importance": "l3"})
    with pytest.raises(ParameterError, match=r"^torchscript: parameter 'method' expects"):
        get_technique("torchscript+dynamic_int8").resolve_params({"torchscript": {"method": 1}})
    # an int where a float is declared, and None where it is optional, are fine
    assert get_technique("distilled").resolve_params({"max_seconds": 600})["max_seconds"] == 600
    assert get_technique("lowrank").resolve_params({"energy": None})["energy"] is None


def test_every_builtin_parameter_has_a_default_and_help() -> None:
    for name in list_techniques():
        technique = get_technique(name)
        if technique.parameters is None:
            continue
        assert technique.parameters.__dataclass_params__.frozen, name
        for item in dataclasses.fields(technique.parameters):
            assert item.metadata.get("help"), f"{name}.{item.name} has no help"


def test_the_older_untyped_defaults_still_register() -> None:
    @register_technique("test_registry_untyped", frameworks=("python",), defaults={"k": 3})
    def build(ctx):
        raise AssertionError

    technique = get_technique("test_registry_untyped")
    assert technique.resolve_params({"k": "anything"}) == {"k": "anything"}  # names only
    assert technique.resolve_params(None) == {"k": 3}
    with pytest.raises(ParameterError, match="takes no parameter 'j'; its parameters: k"):
        technique.resolve_params({"j": 1})


def test_a_parameters_class_must_be_a_frozen_dataclass_with_defaults() -> None:
    @dataclass
    class Mutable:
        k: int = 1

    @dataclass(frozen=True)
    class Required:
        k: int

    with pytest.raises(TypeError, match="declare Mutable frozen=True"):
        register_technique("test_registry_bad", params=Mutable)
    with pytest.raises(TypeError, match="parameter 'k' has no default"):
        register_technique("test_registry_bad", params=Required)
    with pytest.raises(TypeError, match="params must be a dataclass"):
        register_technique("test_registry_bad", params=dict)
    assert "test_registry_bad" not in list_techniques()


def test_builtin_modules_are_found_in_the_variants_package() -> None:
    found = {m.name for m in pkgutil.iter_modules(pytest_modelopt.variants.__path__)}
    assert builtin_modules() == sorted(f"pytest_modelopt.variants.{name}" for name in found)
    assert "pytest_modelopt.variants.openvino" in builtin_modules()


class Toy:
    """A plain Python model: doubles its input."""

    def __call__(self, x: float) -> list[list[float]]:
        return [[2.0 * x]]


@pytest.fixture
def toy_evaluator(tmp_path) -> Iterator[Evaluator]:
    """An Evaluator of a plain Python model; the techniques a test registers are removed after."""
    registered = set(_REGISTRY)
    cpu = CPU("Test CPU", "x86_64", "GenuineIntel", 6, 1, 1, 1, ("avx2",))
    spec = ModelSpec(name="toy", factory=Toy, example_input=3.0)
    yield Evaluator(spec, hardware=Hardware(cpu=cpu), workdir=tmp_path)
    for name in set(_REGISTRY) - registered:
        del _REGISTRY[name]


def _unnamed_variant(ctx, **fields) -> Variant:
    path = ctx.workdir / "model.bin"
    path.write_bytes(b"w")
    return Variant(ctx.model, (path,), runtime="python", precision="fp32", **fields)


def test_the_registry_names_the_variant_its_build_leaves_unnamed(toy_evaluator) -> None:
    seen = []

    @register_technique("test_registry_unnamed", frameworks=("python",))
    def build(ctx):
        seen.append(ctx.technique)
        return _unnamed_variant(ctx)

    variant = toy_evaluator.build("test_registry_unnamed")
    assert variant.technique == "test_registry_unnamed"
    assert seen == ["test_registry_unnamed"]  # the build reads its name from the context
    assert variant.notes == []


def test_a_build_that_names_its_variant_otherwise_is_overruled_with_a_note(toy_evaluator) -> None:
    @register_technique("test_registry_renamed", frameworks=("python",))
    def build(ctx):
        return _unnamed_variant(ctx, technique="old_name")

    variant = toy_evaluator.build("test_registry_renamed")
    assert variant.technique == "test_registry_renamed"
    assert variant.notes == [
        "its build named it 'old_name'; it is registered as 'test_registry_renamed', the name "
        "it keeps"
    ]


def test_a_build_that_repeats_its_own_name_gets_no_note(toy_evaluator) -> None:
    @register_technique("test_registry_repeats", frameworks=("python",))
    def build(ctx):
        return _unnamed_variant(ctx, technique="test_registry_repeats")

    assert toy_evaluator.build("test_registry_repeats").notes == []


def test_a_chain_names_its_variant_and_each_step_its_own(toy_evaluator) -> None:
    seen = []

    @register_technique("test_registry_first", frameworks=("python",))
    def first(ctx):
        seen.append(ctx.technique)
        return _unnamed_variant(ctx, model=ctx.model, technique="misnamed")

    @register_technique("test_registry_second", frameworks=("python",))
    def second(ctx):
        seen.append(ctx.technique)
        return _unnamed_variant(ctx, notes=["a note"])

    variant = toy_evaluator.build("test_registry_first+test_registry_second")
    assert variant.technique == "test_registry_first+test_registry_second"
    assert seen == ["test_registry_first", "test_registry_second"]
    assert variant.notes == [
        "test_registry_first: its build named it 'misnamed'; it is registered as "
        "'test_registry_first', the name it keeps",
        "test_registry_second: a note",
    ]


def test_a_variant_built_the_old_way_says_what_changed() -> None:
    """Builds used to pass their technique's name first: that now fails with what to do."""
    from pytest_modelopt.variants.base import Variant

    with pytest.raises(TypeError, match=r"run must be callable, got .mine.\. A build function"):
        Variant("mine", lambda batch: batch, (), "python", "fp32")  # type: ignore[arg-type]
