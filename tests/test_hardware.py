import importlib.util
import json
import sys

import pytest

from pytest_modelopt.hardware import (
    CPU,
    GPU,
    Hardware,
    backend_devices,
    detect_hardware,
    normalize_flags,
)


def test_detects_this_machine() -> None:
    hardware = detect_hardware()
    assert hardware.cpu.logical_cores >= hardware.cpu.physical_cores >= 1
    assert hardware.cpu.brand
    assert set(hardware.cpu.flags) <= {
        "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
        "amx_tile", "amx_int8", "amx_bf16", "neon", "sve", "sve2",
    }  # fmt: skip
    json.dumps(hardware.to_dict())  # serializable as is


def test_no_gpu_without_nvidia_driver() -> None:
    if importlib.util.find_spec("pynvml") is None:
        pytest.skip("nvidia-ml-py is not installed: covered by the test without pynvml")
    hardware = detect_hardware()
    if hardware.gpus:
        pytest.skip("this machine has an NVIDIA GPU")
    assert hardware.notes
    assert "no NVIDIA driver" in hardware.notes[0]


def test_without_pynvml_there_is_no_gpu_and_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes the module unimportable
    hardware = detect_hardware()
    assert hardware.gpus == ()
    assert "nvidia-ml-py is not installed" in hardware.notes[0]


def test_fingerprint_is_stable_and_cached(tmp_path) -> None:
    first = detect_hardware(cache_dir=tmp_path)
    assert list(tmp_path.glob("cpu-*.json")), "py-cpuinfo's answer should be cached"
    second = detect_hardware(cache_dir=tmp_path)
    assert first.fingerprint == second.fingerprint == detect_hardware().fingerprint
    assert first.cpu == second.cpu


def test_damaged_cache_is_rebuilt(tmp_path) -> None:
    detect_hardware(cache_dir=tmp_path)
    (cache,) = tmp_path.glob("cpu-*.json")
    cache.write_text("{not json")
    assert detect_hardware(cache_dir=tmp_path).fingerprint == detect_hardware().fingerprint
    json.loads(cache.read_text())


def _cpu(**changes) -> CPU:
    base = dict(
        brand="Intel(R) Xeon(R) Platinum 8480+",
        arch="x86_64",
        vendor="GenuineIntel",
        family=6,
        model=143,
        physical_cores=56,
        logical_cores=112,
        flags=("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"),
    )
    return CPU(**{**base, **changes})


def test_fingerprint_reads_well_and_ignores_drifting_fields() -> None:
    gpu = GPU(0, "NVIDIA H100 80GB HBM3", 81559, "580.1", "9.0")
    hardware = Hardware(cpu=_cpu(), gpus=(gpu,), notes=("anything",))
    assert hardware.fingerprint == "intel-xeon-platinum-8480-f6m143-amx-56c-1xnvidia-h100-80gb-hbm3"
    other_driver = Hardware(cpu=_cpu(), gpus=(GPU(0, gpu.name, 81559, "999", "9.0"),))
    assert other_driver.fingerprint == hardware.fingerprint


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        (("avx2",), "avx2"),
        (("avx2", "avx512f"), "avx512"),
        (("avx2", "avx512f", "avx512_vnni"), "avx512vnni"),
        ((), "baseline"),
    ],
)
def test_isa_level(flags, level) -> None:
    assert _cpu(flags=flags).isa_level == level


def test_flag_spellings_are_normalized() -> None:
    assert normalize_flags(["AVX512VNNI", "avx2", "sse2"], "x86_64") == ("avx2", "avx512_vnni")
    assert normalize_flags(["asimd", "sve"], "aarch64") == ("neon", "sve")


def test_backend_devices_report_installed_runtimes() -> None:
    devices = backend_devices()
    assert devices["torch"]["cuda"] == [] or isinstance(devices["torch"]["cuda"], list)
    if importlib.util.find_spec("onnxruntime"):
        assert "CPUExecutionProvider" in devices["onnxruntime"]["providers"]
    if importlib.util.find_spec("openvino"):
        assert "CPU" in devices["openvino"]["devices"]
