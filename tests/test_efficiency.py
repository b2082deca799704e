import pytest

torch = pytest.importorskip("torch")

from pytest_modelopt.efficiency import (  # noqa: E402
    count_flops,
    peak_ops_per_second,
    precision_class,
    roofline,
)


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


def test_peak_is_measured_once_and_cached(tmp_path) -> None:
    first = peak_ops_per_second("fp32", threads=1, fingerprint="test", cache_dir=tmp_path)
    assert first is not None
    assert first > 1e9  # any CPU of this decade does more than 1 GFLOP/s on one thread
    assert len(list(tmp_path.glob("peak-test-t1-*.json"))) == 1
    again = peak_ops_per_second("fp32", threads=1, fingerprint="test", cache_dir=tmp_path)
    assert again == first


def test_int8_peak_runs_the_quantized_engines_kernel(tmp_path) -> None:
    # torch._int_mm, timed before, runs at well under 1 GOPS on CPUs and put int8 variants above
    # 100% of their peak; fbgemm and qnnpack do tens of GOPS per core
    peak = peak_ops_per_second("int8", threads=1, fingerprint="test", cache_dir=tmp_path)
    assert peak is not None
    assert peak > 2e9


def test_roofline_fraction() -> None:
    figures = roofline(flops=2_000_000_000, latency_s=0.01, peak=400e9)
    assert figures["achieved_gops"] == pytest.approx(200)
    assert figures["fraction_of_peak"] == pytest.approx(0.5)
    assert roofline(None, 0.01, 400e9)["fraction_of_peak"] is None
