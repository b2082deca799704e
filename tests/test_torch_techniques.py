"""The built-in torch techniques on tiny real models: each changes what it claims."""

import pytest

torch = pytest.importorskip("torch")

from models import QUICK, ConvOnly, mlp_spec  # noqa: E402
from pytest_modelopt import Evaluator, ModelSpec  # noqa: E402
from pytest_modelopt.errors import NoEffectError  # noqa: E402


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory) -> Evaluator:
    return Evaluator(mlp_spec(), settings=QUICK, workdir=tmp_path_factory.mktemp("mlp"))


def test_eager_is_the_reference_itself(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("eager")
    assert result.sizes["variant_bytes"] == result.sizes["reference_bytes"]
    assert result.accuracy["top1_agreement"] == 1.0
    assert result.accuracy["max_abs_error"] == 0.0


def test_torchscript_is_a_frozen_traced_module(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("torchscript")
    (path,) = result.variant.files
    loaded = torch.jit.load(str(path))
    assert isinstance(loaded, torch.jit.ScriptModule)
    assert result.variant.details["frozen"]
    assert result.variant.details["optimize_for_inference"]
    assert result.sizes["variant_bytes"] > 0.9 * result.sizes["reference_bytes"]  # weights saved
    assert result.accuracy["max_abs_error"] < 1e-5


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")
def test_dynamic_int8_quantizes_linear_weights(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("dynamic_int8")
    state = torch.load(result.variant.files[0], weights_only=False)
    packed = [key for key in state if key.endswith("_packed_params._packed_params")]
    assert len(packed) == 2  # both Linear layers now hold packed int8 weights
    assert result.variant.details["quantized_layers"] == 2
    assert result.sizes["variant_bytes"] < 0.7 * result.sizes["reference_bytes"]
    assert result.accuracy["top1_agreement"] >= 0.95  # a trained model keeps its predictions


def test_dynamic_int8_quantizes_timm_linear_subclass(tmp_path) -> None:
    timm_layers = pytest.importorskip("timm.layers")
    evaluator = Evaluator(mlp_spec(timm_layers.Linear), settings=QUICK, workdir=tmp_path)
    variant = evaluator.build("dynamic_int8")
    assert variant.details["quantized_layers"] == 2
    assert any("timm.layers.linear.Linear quantized as" in note for note in variant.notes)


def test_dynamic_int8_that_changes_nothing_fails_with_the_reason(tmp_path) -> None:
    spec = ModelSpec.from_torch("convnet", ConvOnly, example_input=torch.randn(1, 3, 8, 8))
    evaluator = Evaluator(spec, settings=QUICK, workdir=tmp_path)
    with pytest.raises(
        NoEffectError, match=r"dynamic_int8 changed nothing in convnet: it has no nn\.Linear"
    ):
        evaluator.build("dynamic_int8")


def test_expect_on_real_variant(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("dynamic_int8")
    checks = result.expect(size_ratio="<=0.7", top1_agreement=">=95%", max_abs_error="<=1")
    assert all(check.verdict.value == "PASS" for check in checks)
    assert result.to_dict()["verdict"] == "PASS"


def test_results_carry_memory_first_call_and_roofline(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("torchscript")
    variant = result.variant
    assert variant.first_call_seconds > 0
    assert variant.memory["build_peak_mb"] >= 0
    assert "peak_memory_mb" in result.metrics
    efficiency = result.efficiency
    assert efficiency["precision"] == "fp32"
    assert efficiency["flops_per_call"] == 2 * 4 * (16 * 64 + 64 * 10)
    assert 0 < efficiency["fraction_of_peak"] <= 1  # the peak is the best of every runtime
    assert efficiency["measurement_problem"] is None
    assert efficiency["peak_kernel"]  # names the kernel and runtime that set the peak
    assert efficiency["peak_gops"] > efficiency["achieved_gops"]


class DeadBranch(torch.nn.Module):
    """Computes a 2 GFLOP product and throws it away: the eager reference runs it, so the counted
    operations include it, and TorchScript's dead-code elimination drops it. Its TorchScript
    variant reads above any real peak, as one with Winograd convolutions can."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Linear(2048, 2048)
        self.head = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.unused(torch.ones(256, 2048))
        return self.head(x)


def test_a_variant_above_the_peak_is_flagged_as_a_measurement_problem(tmp_path) -> None:
    """A cached peak below what the variant achieves is measured again; a variant still above
    the new one is flagged in the record and the results table, and no fraction above 1 is
    written."""
    import json

    from pytest_modelopt.efficiency import (
        PEAK_METHOD,
        Ceiling,
        KernelTiming,
        Peak,
        peak_cache_file,
    )
    from pytest_modelopt.hardware import detect_hardware
    from pytest_modelopt.report import results_table

    kernel = "torch 2.14.1 torch.mm fp32 (MKL)"
    too_low = Peak(  # 1 kOP/s, as if cached at a busy moment: any model exceeds it
        precision="fp32",
        ops_per_s=1e3,
        kernel=kernel,
        threads=1,
        ceiling=Ceiling(None, 1, 32, None, "unknown", "1 cores x 32 ops/cycle/core"),
        kernels=(
            KernelTiming("torch", kernel, 2048, "2048x2048 @ 2048x2048", 1e3, 1e3, 8, 1.0, True),
        ),
    )
    hardware = detect_hardware(gpus=False, machine="peak-too-low")
    cache = peak_cache_file(tmp_path, fingerprint=hardware.fingerprint, threads=1)
    document = {"method": PEAK_METHOD, "versions": {}, "peaks": {"fp32": too_low.to_dict()}}
    cache.write_text(json.dumps(document))
    spec = ModelSpec.from_torch(
        "dead_branch", DeadBranch, example_input=torch.randn(8, 64, generator=torch.Generator())
    )
    messages: list[str] = []
    evaluator = Evaluator(
        spec,
        settings=QUICK,
        hardware=hardware,
        workdir=tmp_path,
        cache_dir=tmp_path,
        log=messages.append,
    )
    record = evaluator.evaluate("torchscript").to_dict()
    assert any("measuring the peak again" in message for message in messages), messages
    efficiency = json.loads(json.dumps(record))["efficiency"]
    assert efficiency["peak_gops"] > 1  # measured again, not the cached 1 kOP/s
    assert efficiency["fraction_of_peak"] is None
    assert efficiency["achieved_over_peak"] > 1
    assert "the peak was measured too low" in efficiency["measurement_problem"]
    (_, _), (row, _) = results_table([{**record, "test": "test_dead.py::test_dead[torchscript]"}])
    assert "BAD PEAK (" in row
