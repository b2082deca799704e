"""GPU timing: correct by construction, checked on an NVIDIA GPU where there is one."""

import pytest

from pytest_modelopt.measure import Interleaver, MeasureSettings

pytestmark = pytest.mark.modelopt_requires(gpu=True)


def test_cuda_work_is_timed_to_completion() -> None:
    """A host clock around an asynchronous launch would read microseconds; the engine reads the
    clock after synchronizing, so it sees the kernel's real duration (checked with CUDA events)."""
    torch = pytest.importorskip("torch")
    a = torch.randn(8192, 8192, device="cuda")

    def matmul() -> None:
        torch.mm(a, a)

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    matmul()
    torch.cuda.synchronize()
    start.record()
    matmul()
    end.record()
    torch.cuda.synchronize()
    kernel_s = start.elapsed_time(end) / 1e3
    settings = MeasureSettings(warmup_s=0.1, max_time=1.0)
    comparison = Interleaver(matmul, matmul, settings, device="cuda").run()
    assert comparison.variant.summary().p50 >= 0.8 * kernel_s
    assert comparison.isolation["variant"] == "in process (CUDA events)"


def test_gpu_state_is_recorded() -> None:
    from pytest_modelopt.devices import gpu_state

    state = gpu_state(0)
    assert state["sm_clock_mhz"] > 0
    assert state["driver"]
