import importlib.util
import json
import os
import subprocess
import sys

import pytest

from pytest_modelopt.backends import backend_devices
from pytest_modelopt.devices import GPU
from pytest_modelopt.hardware import CPU, Hardware, detect_hardware, normalize_flags
from pytest_modelopt.isa_cap import ISA_CAP_VARIABLES, IsaCap


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


AMX_CPU_FLAGS = (
    "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip


@pytest.mark.parametrize(
    ("environ", "level"),
    [
        ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "avx2"),
        ({"ONEDNN_MAX_CPU_ISA": "avx512_core_vnni"}, "avx512vnni"),
        ({"DNNL_MAX_CPU_ISA": "AVX512_CORE"}, "avx512"),
        ({"ATEN_CPU_CAPABILITY": "default"}, "sse4"),
        # the most restrictive variable decides
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "avx2"),
        ({"ONEDNN_MAX_CPU_ISA": "ALL", "ATEN_CPU_CAPABILITY": "avx512"}, None),
    ],
)
def test_isa_cap_is_read_from_the_runtimes_variables(environ, level) -> None:
    cap = IsaCap.from_environment(environ)
    assert cap is not None
    assert cap.level == level
    assert dict(cap.variables) == environ


def test_no_cap_without_variables() -> None:
    assert IsaCap.from_environment({"PATH": "/usr/bin"}) is None


def test_a_cap_hides_the_flags_it_forbids_and_shows_in_the_fingerprint() -> None:
    cpu = _cpu(flags=AMX_CPU_FLAGS)
    capped = Hardware(cpu=cpu, isa_cap=IsaCap.from_environment({"ONEDNN_MAX_CPU_ISA": "AVX2"}))
    assert capped.flags == ("avx2",)
    assert not capped.has_isa("avx512_bf16")
    assert not capped.has_isa("amx_int8")
    assert capped.fingerprint == "intel-xeon-platinum-8480-f6m143-amx-cap-avx2-56c"
    record = capped.to_dict()
    assert record["isa_cap"]["variables"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert record["isa_cap"]["flags_in_use"] == ["avx2"]
    assert "OpenVINO" in record["isa_cap"]["obeyed_by"]["ONEDNN_MAX_CPU_ISA"]
    assert "ISA capped by ONEDNN_MAX_CPU_ISA=AVX2" in capped.describe()
    json.dumps(record)


def test_a_cap_at_or_above_the_cpu_changes_nothing() -> None:
    """An AVX2 machine capped to AVX2 is an AVX2 machine: same fingerprint, same flags."""
    cpu = _cpu(flags=("avx2",))
    capped = Hardware(cpu=cpu, isa_cap=IsaCap.from_environment({"ONEDNN_MAX_CPU_ISA": "AVX2"}))
    assert capped.fingerprint == Hardware(cpu=cpu).fingerprint
    assert capped.flags == ("avx2",)


@pytest.fixture
def uncapped(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ISA cap variable set, whatever this run's environment (the capped tox run sets them)."""
    for name in (*ISA_CAP_VARIABLES, "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_an_unknown_cap_value_is_noted_and_not_applied(uncapped: pytest.MonkeyPatch) -> None:
    uncapped.setenv("ONEDNN_MAX_CPU_ISA", "AVX9000")
    hardware = detect_hardware(gpus=False)
    assert hardware.isa_cap is not None
    assert hardware.isa_cap.level is None
    assert hardware.flags == hardware.cpu.flags
    assert any("ONEDNN_MAX_CPU_ISA=AVX9000" in note for note in hardware.notes)


def test_detection_reads_the_cap_from_the_environment(uncapped: pytest.MonkeyPatch) -> None:
    uncapped.setenv("ATEN_CPU_CAPABILITY", "default")
    hardware = detect_hardware(gpus=False)
    assert hardware.isa_cap is not None
    assert "avx2" not in hardware.flags
    if "avx2" in hardware.cpu.flags:
        assert "-cap-sse4-" in hardware.fingerprint


def _run_capped(code: str, **environ: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **environ},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


needs_avx2 = pytest.mark.modelopt_requires(isa="avx2")


@needs_avx2
def test_torch_obeys_aten_cpu_capability() -> None:
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    assert _run_capped(code).strip() != "DEFAULT"
    assert _run_capped(code, ATEN_CPU_CAPABILITY="default").strip() == "DEFAULT"


# Large enough for torch to hand the convolution to oneDNN (a batch of 1 at 16 channels is not).
TORCH_CONV = """
import torch
with torch.no_grad():
    torch.nn.Conv2d(64, 64, 3).eval()(torch.randn(4, 64, 56, 56))
"""


@needs_avx2
def test_torch_onednn_obeys_onednn_max_cpu_isa() -> None:
    """oneDNN prints the implementation it ran: an AVX2 or better kernel uncapped, jit:sse41 under
    an SSE4.1 cap."""
    uncapped = _conv_lines(_run_capped(TORCH_CONV, ONEDNN_VERBOSE="1"))
    capped = _conv_lines(_run_capped(TORCH_CONV, ONEDNN_VERBOSE="1", ONEDNN_MAX_CPU_ISA="SSE41"))
    assert uncapped, "torch did not run the convolution through oneDNN"
    assert not any("sse41" in line for line in uncapped), uncapped
    assert capped, "torch did not run the convolution through oneDNN"
    assert all("sse41" in line for line in capped), capped


def _conv_lines(verbose: str) -> list[str]:
    return [line for line in verbose.splitlines() if ",exec," in line and ",convolution," in line]


OPENVINO_KERNELS = """
import numpy as np, openvino as ov, torch
net = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU()).eval()
x = torch.randn(1, 16, 32, 32)
compiled = ov.Core().compile_model(
    ov.convert_model(net, example_input=x),
    "CPU",
    # f32 pinned: the plugin's default precision ignores the cap (bf16 on a BF16 CPU, then
    # reference kernels), which the OpenVINO variants handle (test_runtime_techniques)
    {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"},
)
request = compiled.create_infer_request()
request.infer([x.numpy()])
print(" ".join(sorted({p.exec_type for p in request.profiling_info})))
"""


@needs_avx2
@pytest.mark.modelopt_requires(backend="openvino")
def test_openvino_cpu_plugin_obeys_onednn_max_cpu_isa() -> None:
    uncapped = _run_capped(OPENVINO_KERNELS).split()
    capped = _run_capped(OPENVINO_KERNELS, ONEDNN_MAX_CPU_ISA="SSE41").split()
    assert not any("sse42" in kernel for kernel in uncapped), uncapped
    assert any("sse42" in kernel for kernel in capped), capped
    assert not any("avx" in kernel for kernel in capped), capped
