import pytest

from pytest_modelopt.errors import HardwareMissing, PackageMissing, UnknownTechniqueError
from pytest_modelopt.hardware import CPU, Hardware
from pytest_modelopt.registry import (
    Requirements,
    _install_hint,
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
    assert _install_hint(["openvino"]) == " (pip install 'pytest-modelopt[openvino]')"
    assert _install_hint(["onnx", "onnxruntime"]) == " (pip install 'pytest-modelopt[onnx]')"


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
