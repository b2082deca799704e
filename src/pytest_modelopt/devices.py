"""NVIDIA GPUs through NVML, and each installed backend's own view of the devices.

NVML (nvidia-ml-py's ``pynvml``) is read at detection and beside GPU measurements; the backends
(torch, ONNX Runtime, OpenVINO, TensorFlow) only on request
(:func:`pytest_modelopt.backends.backend_devices`), since that imports them.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GPU:
    """An NVIDIA GPU as NVML reports it."""

    index: int
    name: str
    memory_mb: int
    driver: str
    compute_capability: str


def detect_nvidia_gpus() -> tuple[tuple[GPU, ...], tuple[str, ...]]:
    """NVIDIA GPUs through NVML. No driver or no nvidia-ml-py means no GPU, never an error."""
    if importlib.util.find_spec("pynvml") is None:
        return (), ("nvidia-ml-py is not installed: NVIDIA GPUs were not looked for",)
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return (), (f"no NVIDIA driver ({error})",)
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                GPU(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_mb=pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
                    driver=driver,
                    compute_capability=f"{major}.{minor}",
                )
            )
        return tuple(gpus), ()
    finally:
        pynvml.nvmlShutdown()


def gpu_state(index: int = 0) -> dict[str, Any]:
    """Clocks and temperature of one GPU right now, to record beside a GPU measurement."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return {
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "memory_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
        }
    finally:
        pynvml.nvmlShutdown()


def torch_devices() -> dict[str, Any]:
    """Return torch's version, CUDA devices, threads and quantized engines."""
    import torch

    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "version": torch.__version__,
        "cuda": cuda,
        "threads": torch.get_num_threads(),
        "quantized_engines": list(torch.backends.quantized.supported_engines),
    }


def onnxruntime_devices() -> dict[str, Any]:
    """Return ONNX Runtime's version and execution providers."""
    import onnxruntime

    return {
        "version": onnxruntime.__version__,
        "providers": onnxruntime.get_available_providers(),
    }


def openvino_devices() -> dict[str, Any]:
    """Return OpenVINO's version and devices, each by its full name."""
    import openvino

    core = openvino.Core()
    return {
        "version": openvino.get_version(),
        "devices": {
            device: core.get_property(device, "FULL_DEVICE_NAME")
            for device in core.available_devices
        },
    }


_TF_PROBE = """
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
print(json.dumps({"version": tf.__version__,
                  "devices": [d.name for d in tf.config.list_physical_devices()]}))
"""


def tensorflow_devices() -> dict[str, Any]:
    """Return TensorFlow's version and devices, asked in a child process.

    Importing TensorFlow into a process that later imports torchvision crashes it (seen with
    tensorflow-cpu 2.21 and torchvision 0.29), and TensorFlow takes seconds to import.
    """
    import subprocess
    import sys

    probe = subprocess.run(
        [sys.executable, "-c", _TF_PROBE], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        raise RuntimeError(probe.stderr.strip().splitlines()[-1] if probe.stderr else "failed")
    result: dict[str, Any] = json.loads(probe.stdout.strip().splitlines()[-1])
    return result


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
