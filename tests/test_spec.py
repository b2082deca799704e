import pytest

from pytest_modelopt import ModelSpec
from pytest_modelopt.errors import SpecError


def test_validation_names_the_spec() -> None:
    with pytest.raises(SpecError, match="needs a non-empty name"):
        ModelSpec(name="", factory=lambda: abs, example_input=1)
    with pytest.raises(SpecError, match="'m': factory must be a callable"):
        ModelSpec(name="m", factory=42, example_input=1)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="'m': example_input is required"):
        ModelSpec(name="m", factory=lambda: abs, example_input=None)


def test_factory_errors_are_wrapped() -> None:
    def broken():
        raise RuntimeError("weights not found")

    spec = ModelSpec(name="m", factory=broken, example_input=1)
    with pytest.raises(SpecError, match="'m': its factory raised RuntimeError: weights not found"):
        spec.load()


def test_python_callable_is_a_python_model() -> None:
    spec = ModelSpec(name="m", factory=lambda: abs, example_input=1)
    assert spec.framework == "python"
    assert spec.accuracy_batches() == [(1, None)]


def test_from_timm_builds_seeded_data_and_recalibrated_model() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    spec = ModelSpec.from_timm(
        "resnet10t", input_size=(3, 64, 64), calibration_batches=2, eval_batches=1
    )
    assert spec.example_input.shape == (1, 3, 64, 64)
    assert len(spec.calibration_data) == 2
    model = spec.load()
    assert spec.framework == "torch"
    assert not model.training
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    again = ModelSpec.from_timm(
        "resnet10t", input_size=(3, 64, 64), calibration_batches=2, eval_batches=1
    )
    assert torch.equal(again.example_input, spec.example_input)


def test_from_timm_unknown_model() -> None:
    pytest.importorskip("timm")
    with pytest.raises(SpecError, match="timm has no model named 'resnet_nope'"):
        ModelSpec.from_timm("resnet_nope")
