import importlib.util
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pytest_modelopt.efficiency import (  # noqa: E402
    KERNELS,
    PEAK_METHOD,
    Ceiling,
    KernelTiming,
    Peak,
    count_flops,
    measured_peak,
    peak_cache_file,
    precision_class,
    roofline,
    theoretical_ceiling,
    time_kernel,
)
from pytest_modelopt.efficiency import peak as efficiency  # noqa: E402  (keeps the memo)
from pytest_modelopt.efficiency.timing import (  # noqa: E402
    CONVOLUTION,
    MATRIX_PRODUCT,
    convolution_shape,
)
from pytest_modelopt.hardware import CPU, Hardware, detect_hardware  # noqa: E402
from pytest_modelopt.report import results_table  # noqa: E402

RUNTIMES = [name for name in ("torch", "onnxruntime", "openvino") if importlib.util.find_spec(name)]


@pytest.fixture(scope="module")
def hardware() -> Hardware:
    return detect_hardware(gpus=False)


@pytest.fixture(scope="module")
def fp32_peak(hardware: Hardware, tmp_path_factory) -> Iterator[tuple[Peak, list[str], Path]]:
    """The fp32 peak measured afresh into its own cache: the in-memory memo is emptied first, as
    a test module that ran before (CI's ISA-capped run orders them differently) may have filled
    it, and restored after."""
    memo = dict(efficiency._MEMO)
    efficiency._MEMO.clear()
    messages: list[str] = []
    cache_dir = tmp_path_factory.mktemp("peak")
    peak = measured_peak(
        "fp32", threads=1, hardware=hardware, cache_dir=cache_dir, log=messages.append
    )
    assert peak is not None
    yield peak, messages, cache_dir
    efficiency._MEMO.clear()
    efficiency._MEMO.update(memo)


def test_counts_a_linear_layer_as_two_ops_per_multiply_add() -> None:
    assert count_flops(torch.nn.Linear(16, 64), torch.randn(4, 16)) == 2 * 4 * 16 * 64


@pytest.mark.parametrize(
    ("precision", "expected"),
    [
        ("fp32", "fp32"),
        ("f32", "fp32"),
        ("bf16", "bf16"),
        ("int8 weights, dynamic int8 activations", "int8"),
        ("int8 (QDQ, uint8 activations, per-channel int8 weights)", "int8"),
        ("fp16", "fp16"),
    ],
)
def test_precision_class(precision: str, expected: str) -> None:
    assert precision_class(precision) == expected


def test_peak_is_the_best_kernel_of_every_installed_runtime(fp32_peak) -> None:
    peak, messages, _ = fp32_peak
    best = max(peak.kernels, key=lambda timing: timing.ops_per_s)
    assert peak.ops_per_s == best.ops_per_s
    assert peak.kernel == best.kernel  # the record names the kernel that set the peak
    assert peak.kernel.startswith(f"{best.runtime} ")  # with its runtime and version
    assert {timing.runtime for timing in peak.kernels} == set(RUNTIMES)
    assert peak.ops_per_s > 1e9  # any CPU of this decade does more than 1 GFLOP/s on one thread
    assert messages[0].startswith("measuring this machine's fp32 peak: ")
    assert messages[-1].startswith(f"fp32 peak: {peak.ops_per_s / 1e9:.1f} GOP/s by {peak.kernel}")


def test_peak_times_each_runtimes_convolution(fp32_peak) -> None:
    """A convolution can beat its runtime's own GEMM (OpenVINO's bf16 resnet18 at batch 8 did):
    each installed runtime's 3x3 convolution is among the kernels the peak is the best of."""
    peak, _, _ = fp32_peak
    convolutions = [timing for timing in peak.kernels if "3x3" in timing.shape]
    assert {timing.runtime for timing in convolutions} == set(RUNTIMES), peak.skipped
    for timing in convolutions:
        assert timing.shape == CONVOLUTION.shape(timing.size)
        assert timing.ops_per_s > 1e9


@pytest.mark.parametrize("size", CONVOLUTION.sizes)
def test_convolution_operations_are_counted_as_a_models_are(size: int) -> None:
    """A kernel's operations per second compare with a model's only if both count alike."""
    convolution = torch.nn.Conv2d(size, size, 3, padding=1, bias=False)
    batch = torch.randn(convolution_shape(size))
    assert count_flops(convolution, batch) == CONVOLUTION.operations(size)


@pytest.mark.parametrize("size", MATRIX_PRODUCT.sizes)
def test_matrix_product_operations_are_counted_as_a_models_are(size: int) -> None:
    linear = torch.nn.Linear(size, size, bias=False)
    assert count_flops(linear, torch.randn(size, size)) == MATRIX_PRODUCT.operations(size)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_peak_is_at_least_each_runtimes_own_gemm(fp32_peak, hardware, runtime: str) -> None:
    """Timed again on its own, each runtime's fp32 GEMM stays within noise of the peak: the peak
    is not one runtime's product (torch.mm's, which variants of the others exceeded)."""
    peak, _, _ = fp32_peak
    kernel = next(
        k
        for k in KERNELS
        if k.runtime == runtime and "fp32" in k.precisions and k.workload == MATRIX_PRODUCT
    )
    own = time_kernel(kernel, "fp32", threads=1, hardware=hardware)
    assert own.runtime == runtime
    assert peak.ops_per_s >= 0.85 * own.ops_per_s, (own, peak.kernels)


def test_peak_is_cached_with_its_record(
    fp32_peak, hardware: Hardware, monkeypatch: pytest.MonkeyPatch
) -> None:
    peak, _, cache_dir = fp32_peak
    (cache,) = cache_dir.glob(f"peak-{hardware.fingerprint}-t1-{PEAK_METHOD}-*.json")
    assert cache == peak_cache_file(cache_dir, fingerprint=hardware.fingerprint, threads=1)
    document = json.loads(cache.read_text())
    assert document["method"] == PEAK_METHOD
    assert document["peaks"]["fp32"]["kernel"] == peak.kernel
    assert len(document["peaks"]["fp32"]["kernels"]) == len(peak.kernels)
    monkeypatch.setattr(efficiency, "_MEMO", {})  # a new session reads the file
    messages: list[str] = []
    again = measured_peak(
        "fp32", threads=1, hardware=hardware, cache_dir=cache_dir, log=messages.append
    )
    assert again == peak
    assert messages == []


def test_a_cached_peak_a_variant_beat_is_measured_again_once(
    fp32_peak, hardware: Hardware, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peak cached at a busy moment reads too low; a variant above it has it measured again
    (once per process), the better kept and cached."""
    quiet, _, _ = fp32_peak
    monkeypatch.setattr(efficiency, "_MEMO", {})
    monkeypatch.setattr(efficiency, "_REMEASURED", set())
    cache = peak_cache_file(tmp_path, fingerprint=hardware.fingerprint, threads=1)
    busy = replace(quiet, ops_per_s=1e9, kernel="a busy moment's kernel")
    document = {"method": PEAK_METHOD, "versions": efficiency.runtime_versions()}
    cache.write_text(json.dumps({**document, "peaks": {"fp32": busy.to_dict()}}))
    messages: list[str] = []

    def peak(reached: float | None) -> Peak | None:
        return measured_peak(
            "fp32",
            threads=1,
            hardware=hardware,
            cache_dir=tmp_path,
            log=messages.append,
            reached=reached,
        )

    assert peak(reached=None) == busy  # nothing beat it yet: the cache is believed
    assert peak(reached=0.5e9) == busy
    assert messages == []
    again = peak(reached=2e9)
    assert again is not None
    assert again.ops_per_s > 2e9
    assert messages[0] == (
        "a variant reached 2.0 GOP/s, above the fp32 peak of 1.0 GOP/s measured earlier "
        "(perhaps at a busy moment): measuring the peak again"
    )
    cached = json.loads(cache.read_text())["peaks"]["fp32"]
    assert cached["ops_per_s"] == again.ops_per_s
    count = len(messages)
    assert peak(reached=1e18) == again  # once per process: then a variant above it is flagged
    assert len(messages) == count


def test_a_peak_cached_by_an_older_method_is_measured_again(tmp_path) -> None:
    hardware = detect_hardware(gpus=False, machine="older-method")
    cache = peak_cache_file(tmp_path, fingerprint=hardware.fingerprint, threads=1)
    stale = {**PEAK.to_dict(), "precision": "fp64"}  # a precision no kernel has: quick
    cache.write_text(json.dumps({"method": "v2", "versions": {}, "peaks": {"fp64": stale}}))
    messages: list[str] = []
    peak = measured_peak(
        "fp64", threads=1, hardware=hardware, cache_dir=tmp_path, log=messages.append
    )
    assert peak is None  # measured, not read: no runtime has an fp64 kernel
    assert messages == ["no fp64 peak: no runtime has a fp64 kernel"]
    assert json.loads(cache.read_text()) == {
        "method": PEAK_METHOD,
        "versions": efficiency.runtime_versions(),
        "peaks": {"fp64": None},
    }


def test_int8_peak_runs_integer_kernels(hardware: Hardware, tmp_path) -> None:
    # torch._int_mm, timed before v2, runs at well under 1 GOPS on CPUs and put int8 variants
    # above 100% of their peak; fbgemm, MLAS and oneDNN do tens of GOPS per core
    peak = measured_peak("int8", threads=1, hardware=hardware, cache_dir=tmp_path)
    assert peak is not None
    assert peak.ops_per_s > 2e9
    assert "int8" in peak.kernel
    integer = {(t.runtime, "3x3" in t.shape) for t in peak.kernels}
    if "openvino" in RUNTIMES:  # OpenVINO's operations between FakeQuantize nodes run in integers
        assert {("openvino", False), ("openvino", True)} <= integer, peak.skipped
    # fbgemm (x86) and MLAS have integer convolutions too
    assert {(runtime, True) for runtime in RUNTIMES if runtime != "openvino"} <= integer


def _cpu(vendor: str, family: int, flags: tuple[str, ...], cores: int = 8) -> Hardware:
    return Hardware(CPU("cpu", "x86_64", vendor, family, 1, cores, cores, flags))


@pytest.mark.parametrize(
    ("hardware", "precision", "per_cycle"),
    [
        (_cpu("AuthenticAMD", 25, ("avx2", "avx512f", "avx512_bf16")), "fp32", 32),  # Zen 4
        (_cpu("AuthenticAMD", 25, ("avx2", "avx512f", "avx512_bf16")), "bf16", 64),
        (_cpu("AuthenticAMD", 25, ("avx2", "avx512f", "avx512_vnni")), "int8", 128),
        (_cpu("AuthenticAMD", 26, ("avx2", "avx512f")), "fp32", 64),  # Zen 5: 512-bit datapath
        (_cpu("AuthenticAMD", 25, ("avx2",)), "fp32", 32),  # Zen 3
        (_cpu("AuthenticAMD", 25, ("avx2",)), "bf16", 32),  # no bf16 arithmetic
        (_cpu("GenuineIntel", 6, ("avx2", "avx512f", "amx_tile", "amx_bf16")), "bf16", 1024),
        (_cpu("GenuineIntel", 6, ("avx2", "avx512f", "amx_int8")), "int8", 2048),
    ],
)
def test_theoretical_ceiling_from_the_hardware(
    hardware: Hardware, precision: str, per_cycle: int
) -> None:
    ceiling = theoretical_ceiling(hardware, precision, threads=2, clock=(3e9, "test clock"))
    assert ceiling.ops_per_cycle == per_cycle
    assert ceiling.cores == 2
    assert ceiling.ops_per_s == pytest.approx(2 * per_cycle * 3e9)
    assert "3 GHz (test clock)" in ceiling.describe()


def test_theoretical_ceiling_without_a_clock_says_it_is_unknown() -> None:
    hardware = _cpu("GenuineIntel", 6, ("avx2",), cores=4)
    ceiling = theoretical_ceiling(hardware, "fp32", threads=16, clock=(None, "no clock here"))
    assert ceiling.ops_per_s is None
    assert ceiling.cores == 4  # threads beyond the physical cores add no arithmetic units
    assert ceiling.describe().startswith("unknown (4 cores x 32 ops/cycle/core")
    assert "no clock here" in ceiling.describe()


def test_theoretical_ceiling_of_this_machine(hardware: Hardware) -> None:
    ceiling = theoretical_ceiling(hardware, "fp32", threads=1)
    assert ceiling.ops_per_cycle >= 8
    assert ceiling.clock_source
    if ceiling.ops_per_s is not None:
        assert 1e8 < ceiling.clock_hz < 7e9  # type: ignore[operator]


PEAK = Peak(
    precision="fp32",
    ops_per_s=400e9,
    kernel="openvino 2026.4.1 MatMul fp32 (brgemm_avx512_f32)",
    threads=2,
    ceiling=Ceiling(500e9, 2, 64, 3.9e9, "test clock", "2 cores x 64 ops/cycle/core"),
    kernels=(
        KernelTiming(
            runtime="openvino",
            kernel="openvino 2026.4.1 MatMul fp32",
            size=2048,
            shape="2048x2048 @ 2048x2048",
            ops_per_s=400e9,
            median_ops_per_s=390e9,
            calls=9,
            seconds=1,
            stable=True,
        ),
    ),
)


def test_roofline_fraction_with_the_peaks_kernel_and_ceiling() -> None:
    figures = roofline(flops=2_000_000_000, latency_s=0.01, peak=PEAK)
    assert figures["achieved_gops"] == pytest.approx(200)
    assert figures["fraction_of_peak"] == pytest.approx(0.5)
    assert figures["peak_kernel"] == PEAK.kernel
    assert figures["ceiling_gops"] == pytest.approx(500)
    assert figures["measurement_problem"] is None
    assert roofline(None, 0.01, PEAK)["fraction_of_peak"] is None


def test_a_too_low_peak_is_flagged_in_the_json_and_the_table() -> None:
    too_low = replace(PEAK, ops_per_s=100e9)
    figures = roofline(flops=2_000_000_000, latency_s=0.01, peak=too_low)
    assert figures["fraction_of_peak"] is None  # never a plain figure above 1
    assert figures["achieved_over_peak"] == pytest.approx(2.0)
    assert figures["measurement_problem"].startswith(
        "achieved 200.0 GOP/s is 2.00x the measured fp32 peak (100.0 GOP/s, openvino 2026.4.1"
    )
    assert "the peak was measured too low" in figures["measurement_problem"]
    assert json.loads(json.dumps(figures)) == figures
    row = _table_row({**figures, "precision": "fp32"})
    assert "BAD PEAK (2.00x peak)" in row
    assert "200%" not in row


def test_an_older_record_above_its_peak_is_flagged_in_the_table() -> None:
    # results files written before the flag existed carry a plain fraction above 1
    assert "BAD PEAK (1.62x peak)" in _table_row({"fraction_of_peak": 1.62})
    assert "  62%  " in _table_row({"fraction_of_peak": 0.62})


def _table_row(efficiency_record: dict) -> str:
    record = {
        "test": "test_model.py::test_resnet[onnxruntime]",
        "technique": "onnxruntime",
        "latency": {
            "speedup": 1.8,
            "speedup_interval": [1.6, 2.1],
            "variant": {"stats": {"p50": 0.01}},
            "reference": {"stats": {"p50": 0.018}},
        },
        "sizes": {
            "variant_bytes": 1,
            "reference_bytes": 1,
            "variant_gzip_bytes": 1,
            "reference_gzip_bytes": 1,
        },
        "accuracy": {"top1_agreement": 1.0},
        "efficiency": efficiency_record,
    }
    (_, _), (row, _) = results_table([record])
    return row
