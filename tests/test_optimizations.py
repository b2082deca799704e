"""Each optimization technique changes what it claims, and keeps a trained model's predictions.

The model is the tiny trained MLP of models.py (with calibration and training batches); every
test checks the effect itself (dtypes, quantized layers, sparsity, parameter counts, layer shapes,
shared values, student size) and an agreement floor with the fp32 reference.
"""

import warnings

import pytest

torch = pytest.importorskip("torch")

from models import QUICK, trainable_mlp_spec  # noqa: E402
from pytest_modelopt import Evaluator, ModelSpec  # noqa: E402
from pytest_modelopt.errors import (  # noqa: E402
    BuildError,
    HardwareMissing,
    ParameterError,
    SpecError,
)
from pytest_modelopt.hardware import CPU, Hardware  # noqa: E402
from pytest_modelopt.profiling import torch_operators  # noqa: E402
from pytest_modelopt.registry import get_technique  # noqa: E402
from pytest_modelopt.variants.int8_inspection import int8_kernels  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory) -> Evaluator:
    return Evaluator(
        trainable_mlp_spec(),
        settings=QUICK,
        workdir=tmp_path_factory.mktemp("mlp"),
        cache_dir=tmp_path_factory.mktemp("cache"),
    )


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.endswith("weight")}


def test_export_runs_the_saved_program(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("export")
    (path,) = result.variant.files
    assert path.suffix == ".pt2"
    program = torch.export.load(str(path))
    assert result.variant.details["graph_operators"] >= 3  # two linears and a relu
    x = evaluator.spec.eval_data[0][0]  # another batch size than the example: batch is dynamic
    torch.testing.assert_close(program.module()(x), evaluator.spec.load()(x))
    assert result.accuracy["max_abs_error"] < 1e-5


def test_export_of_a_single_item_example_keeps_the_batch_dynamic(tmp_path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    spec = ModelSpec.from_torch("one", lambda: model, example_input=torch.randn(1, 4))
    variant = Evaluator(spec, settings=QUICK, workdir=tmp_path).build("export")
    assert variant.run(torch.randn(5, 4)).shape == (5, 3)


def test_compile_records_compile_time_and_caches_kernels(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("compile")
    details = result.variant.details
    assert details["freezing"] is True
    assert details["graphs"] >= 1
    assert details["compile_seconds"] > 0
    assert details["other_shapes"] == 1  # the eval batches, compiled in the build, not later
    cache = evaluator.cache_dir / "inductor"
    assert details["cache_dir"] == str(cache)
    assert any(cache.rglob("*.so")) or any(cache.rglob("*.py"))  # kernels kept between runs
    assert result.variant.first_call_seconds < details["compile_seconds"]
    assert result.accuracy["max_abs_error"] < 1e-4


def test_static_int8_fx_quantizes_every_linear(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("static_int8", {"path": "fx"})
    details = result.variant.details
    assert details["path"].startswith("fx")
    assert details["quantized_layers"] >= 2
    state = torch.load(result.variant.files[0], weights_only=False)
    packed = [v for k, v in state.items() if k.endswith("_packed_params")]
    assert len(packed) == 2
    assert all(p[0].dtype == torch.qint8 for p in packed)
    assert result.accuracy["top1_agreement"] >= 0.95
    assert result.accuracy["accuracy_drop"] <= 0.03


def test_static_int8_pt2e_inserts_quantize_ops(evaluator: Evaluator) -> None:
    pytest.importorskip("torchao")
    result = evaluator.evaluate("static_int8", {"path": "pt2e"})
    details = result.variant.details
    assert details["path"].startswith("pt2e")
    assert details["quantize_ops"] >= 2
    assert details["compile_seconds"] > 0
    state = torch.load(result.variant.files[0], weights_only=False)
    assert sum(v.dtype == torch.int8 for v in state.values()) == 2  # the two int8 weights
    assert not any(v.dtype == torch.float32 and v.dim() == 2 for v in state.values())
    assert result.accuracy["top1_agreement"] >= 0.95


def test_static_int8_pt2e_runs_int8_kernels_after_the_evaluation(evaluator: Evaluator) -> None:
    """The graph timed is int8: the accuracy batches (inference tensors, another batch size)
    once recompiled the graph outside inductor's freezing, into fp32 linears around float
    quantize/dequantize arithmetic, 1.0x eager's speed where int8 runs 4x."""
    pytest.importorskip("torchao")
    result = evaluator.evaluate("static_int8", {"path": "pt2e"})
    assert result.variant.details["int8_kernels"] == {"onednn::qlinear_pointwise": 2}
    for batch, _ in evaluator.spec.accuracy_batches():
        assert int8_kernels(result.variant.run, batch) == {"onednn::qlinear_pointwise": 2}
        operators = torch_operators(result.variant.run, batch, calls=1)
        assert not {"aten::linear", "aten::addmm", "aten::mm"} & set(operators)


def test_a_compiled_variant_compiles_again_before_timing_after_a_dynamo_reset(
    evaluator: Evaluator,
) -> None:
    """Building an ONNX variant can reset every compiled graph of the process (the exporter's
    strict capture calls torch._dynamo.reset()): a search that then measured the static_int8
    variant built earlier recompiled it in its first timed call, where pytest's warnings filter
    turned an inductor warning into an error. The evaluation now compiles it again first."""
    pytest.importorskip("torchao")
    built = evaluator.build("static_int8", {"path": "pt2e"})
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluator.evaluate("static_int8", {"path": "pt2e"})
    assert result.variant is built
    assert any("compiled again before timing" in note for note in built.notes), built.notes
    assert int8_kernels(built.run, evaluator.spec.example_input) == {"onednn::qlinear_pointwise": 2}
    assert built.prepare is not None
    assert built.prepare() == []  # nothing lost since: nothing compiled again


def test_static_int8_names_the_module_fx_cannot_trace(tmp_path) -> None:
    class Gate(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x  # data-dependent control flow

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Gate(), torch.nn.Linear(4, 2))
    x = torch.randn(2, 4)
    spec = ModelSpec.from_torch("gated", lambda: model, example_input=x, calibration_data=[x])
    with pytest.raises(BuildError, match=r"torch\.fx cannot trace gated: module '1' \(.*Gate\)"):
        Evaluator(spec, settings=QUICK, workdir=tmp_path).build("static_int8", {"path": "fx"})


def test_qat_int8_fine_tunes_then_converts(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("qat_int8", {"steps": 20})
    details = result.variant.details
    assert details["fine_tune_steps"] == 20
    assert details["quantized_layers"] >= 2
    assert result.accuracy["top1_agreement"] >= 0.9


def test_parameter_counts_leave_buffers_out() -> None:
    from pytest_modelopt.torchtools import parameter_counts

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    with torch.no_grad():
        model[0].weight[0].zero_()
    # Linear 16 + 4, BatchNorm's affine 4 + 4 (its bias starts at zero); its running statistics
    # are buffers, not parameters
    assert parameter_counts(model) == (28, 28 - 4 - 4)


def test_pruned_unstructured_zeroes_weights_and_shrinks_gzip_only(evaluator: Evaluator) -> None:
    params = {"sparsity": 0.6, "steps": 150, "lr": 3e-3}
    result = evaluator.evaluate("pruned_unstructured", params)
    details = result.variant.details
    assert details["sparsity"] == pytest.approx(0.6, abs=1e-3)
    model = result.variant.model
    zeros = sum(int((w == 0).sum()) for w in weights(model).values())
    assert zeros == round(0.6 * (16 * 64 + 64 * 10))
    assert details["nonzero_parameters"] < details["parameters"]
    sizes = result.sizes
    assert sizes["variant_bytes"] == pytest.approx(sizes["reference_bytes"], rel=0.05)  # dense
    assert result.metrics["gzip_size_ratio"].value < 0.8
    assert result.accuracy["top1_agreement"] >= 0.8  # random predictions agree at 0.1


def test_pruned_structured_removes_channels(evaluator: Evaluator) -> None:
    pytest.importorskip("torch_pruning")
    result = evaluator.evaluate("pruned_structured", {"ratio": 0.25, "steps": 60, "lr": 1e-3})
    model = result.variant.model
    assert model.body[0].weight.shape == (48, 16)  # 64 hidden units, a quarter removed
    assert model.body[2].weight.shape == (10, 48)  # the output layer keeps its 10 classes
    details = result.variant.details
    assert details["parameters_after"] < details["parameters_before"]
    assert result.metrics["size_ratio"].value < 0.95
    assert result.accuracy["top1_agreement"] >= 0.85


def test_pruned_structured_keeps_timm_attention_consistent(tmp_path) -> None:
    pytest.importorskip("torch_pruning")
    pytest.importorskip("timm")
    spec = ModelSpec.from_timm(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        embed_dim=48,
        depth=2,
        num_heads=3,
        num_classes=10,
        input_size=(3, 32, 32),
    )
    evaluator = Evaluator(spec, settings=QUICK, workdir=tmp_path)
    result = evaluator.evaluate("pruned_structured", {"ratio": 0.25})
    attention = result.variant.model.blocks[0].attn
    assert attention.num_heads == 3
    assert attention.head_dim == 12  # 16 per head, a quarter removed
    assert attention.attn_dim == attention.qkv.out_features // 3 == attention.proj.in_features
    assert attention.scale == pytest.approx(12**-0.5)
    assert result.variant.details["parameters_after"] < result.variant.details["parameters_before"]
    assert result.metrics["size_ratio"].value < 0.8


def test_lowrank_replaces_layers_with_two_thinner_ones(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("lowrank", {"energy": 0.9, "min_features": 8, "steps": 40})
    model = result.variant.model
    first = model.body[0]
    assert isinstance(first, torch.nn.Sequential)
    assert len(first) == 2
    rank = first[0].out_features
    assert first[0].weight.shape == (rank, 16)
    assert first[1].weight.shape == (64, rank)
    assert rank < 16
    details = result.variant.details
    assert details["parameters_after"] < details["parameters_before"]
    assert result.accuracy["top1_agreement"] >= 0.8


def test_clustered_shares_weights_and_counts_codebook_and_indices(evaluator: Evaluator) -> None:
    result = evaluator.evaluate("clustered", {"clusters": 16, "min_params": 512})
    model = result.variant.model
    for weight in weights(model).values():
        assert torch.unique(weight).numel() <= 16
    state = torch.load(result.variant.files[0], weights_only=False)
    layer = state["clustered"]["body.0.weight"]
    assert layer["codebook"].numel() <= 16
    assert layer["indices"].dtype == torch.uint8
    assert layer["indices"].numel() == 16 * 64 // 2  # two 4-bit indices per byte
    assert result.variant.details["index_bits"] == 4
    assert result.metrics["size_ratio"].value < 0.6
    assert result.accuracy["top1_agreement"] >= 0.95


def test_distilled_student_is_smaller_and_learns_the_teacher(evaluator: Evaluator) -> None:
    pytest.importorskip("torch_pruning")
    params = {"width": 0.5, "max_steps": 150, "max_seconds": 30, "lr": 1e-2}
    result = evaluator.evaluate("distilled", params)
    details = result.variant.details
    assert details["student_parameters"] < 0.6 * details["teacher_parameters"]
    assert 0 < details["steps"] <= 150
    assert result.variant.model.body[0].out_features == 32
    assert result.accuracy["top1_agreement"] >= 0.8


def test_distilled_takes_a_given_student_and_time_box(evaluator: Evaluator) -> None:
    def tiny_student() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(16, 10))

    params = {"student": tiny_student, "max_steps": 10_000, "max_seconds": 0.5, "lr": 1e-2}
    result = evaluator.evaluate("distilled", params)
    details = result.variant.details
    assert details["student"] == "tiny_student"
    assert details["steps"] < 10_000
    assert details["train_seconds"] < 5
    assert details["student_parameters"] == 16 * 10 + 10


def test_chain_prunes_then_quantizes(evaluator: Evaluator) -> None:
    pytest.importorskip("torch_pruning")
    pruning = {"ratio": 0.25, "steps": 80, "lr": 1e-3}
    params = {"pruned_structured": pruning, "static_int8": {"path": "fx"}}
    result = evaluator.evaluate("pruned_structured+static_int8", params)
    details = result.variant.details
    assert details["pruned_structured"]["parameters_after"] < 1738
    assert details["static_int8"]["quantized_layers"] >= 2
    assert result.technique == "pruned_structured+static_int8"
    state = torch.load(result.variant.files[0], weights_only=False)
    weights = [v[0] for k, v in state.items() if k.endswith("_packed_params")]
    assert [w.dtype for w in weights] == [torch.qint8, torch.qint8]
    assert weights[0].shape == (48, 16)  # int8 weights of the pruned layer
    assert result.accuracy["top1_agreement"] >= 0.7


def test_chain_needs_a_module_from_each_step_but_the_last(evaluator: Evaluator) -> None:
    with pytest.raises(BuildError, match="static_int8 yields no torch module for lowrank"):
        evaluator.build("static_int8+lowrank", {"static_int8": {"path": "fx"}})


def test_fp16_on_cpu_only_on_request(evaluator: Evaluator) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: fp16 runs there")
    with pytest.raises(HardwareMissing, match=r"fp16: needs a CUDA GPU.*allow_cpu"):
        evaluator.build("fp16")
    result = evaluator.evaluate("fp16", {"allow_cpu": True})
    assert result.variant.precision == "fp16 (emulated on CPU)"
    assert {p.dtype for p in result.variant.model.parameters()} == {torch.float16}
    assert result.metrics["size_ratio"].value < 0.7
    assert result.accuracy["top1_agreement"] >= 0.97


def test_bf16_needs_the_isa() -> None:
    cpu = CPU("Test CPU", "x86_64", "AuthenticAMD", 25, 1, 2, 2, ("avx2",))
    missing = get_technique("bf16").unmet(Hardware(cpu=cpu))
    assert isinstance(missing, HardwareMissing)
    assert "avx512_bf16 or amx_bf16" in missing.reason


def test_bf16_casts_weights_where_the_cpu_has_it(evaluator: Evaluator) -> None:
    if get_technique("bf16").unmet(evaluator.hardware):
        pytest.skip("this CPU has neither avx512_bf16 nor amx_bf16")
    result = evaluator.evaluate("bf16")
    assert {p.dtype for p in result.variant.model.parameters()} == {torch.bfloat16}


def test_dynamic_int8_records_its_path(evaluator: Evaluator) -> None:
    assert evaluator.build("dynamic_int8").details["path"].startswith("torch.ao")
    pytest.importorskip("torchao")
    variant = evaluator.build("dynamic_int8", {"path": "torchao"})
    assert variant.details["path"] == "torchao.quantization.quantize_"
    assert variant.details["quantized_layers"] == 2


def test_unknown_parameters_are_named(evaluator: Evaluator) -> None:
    with pytest.raises(ParameterError, match=r"lowrank takes no parameter 'rank'; its parame"):
        evaluator.build("lowrank", {"rank": 4})
    with pytest.raises(ParameterError, match="given per component"):
        evaluator.build("lowrank+static_int8", {"rank_ratio": 0.5})


def test_training_techniques_need_train_data(tmp_path) -> None:
    x = torch.randn(4, 16)
    spec = ModelSpec.from_torch("mlp", lambda: torch.nn.Linear(16, 10), example_input=x)
    with pytest.raises(SpecError, match="qat_int8 trains mlp, whose ModelSpec has no train_data"):
        Evaluator(spec, settings=QUICK, workdir=tmp_path).build("qat_int8")


def test_torchscript_falls_back_from_script_to_trace(tmp_path) -> None:
    class Unscriptable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return sum(layer(x) for layer in [self.linear])  # generators do not script

    spec = ModelSpec.from_torch("unscriptable", Unscriptable, example_input=torch.randn(2, 4))
    variant = Evaluator(spec, settings=QUICK, workdir=tmp_path).build("torchscript")
    assert variant.details["path"] == "trace"
    assert any("torch.jit.script failed" in note for note in variant.notes)
