"""ModelSpec: what to optimize, with the data to time, calibrate and evaluate it on."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_modelopt.errors import SpecError

Batch = Any  # a tensor, an array, or a tuple of them (passed as positional arguments)


@dataclass(eq=False)
class ModelSpec:
    """A model and its data.

    ``factory`` returns the fp32 reference model; it is called once, and each technique works on a
    private copy. ``example_input`` is the batch that latency is measured on;
    ``calibration_data`` feeds static quantization and BatchNorm recalibration; ``eval_data``
    holds ``(inputs, labels)`` pairs (labels may be None) for accuracy. Without labels, accuracy
    means agreement with the reference. ``train_data`` holds ``(inputs, labels)`` batches for the
    techniques that fine-tune or train (qat_int8, pruning with fine-tuning, distilled); labels may
    be None where only the teacher's outputs are learned from. ``student`` returns the model that
    ``distilled`` trains, where the default (a narrower copy of the model) is not wanted.
    """

    name: str
    factory: Callable[[], Any]
    example_input: Batch
    calibration_data: Sequence[Batch] = ()
    eval_data: Sequence[tuple[Batch, Any]] = ()
    train_data: Sequence[tuple[Batch, Any]] = ()
    student: Callable[[], Any] | None = None
    batch_size: int = 1
    description: str = ""
    _model: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise SpecError(f"ModelSpec needs a non-empty name, got {self.name!r}")
        if not callable(self.factory):
            raise SpecError(
                f"ModelSpec {self.name!r}: factory must be a callable that returns the model, "
                f"got {type(self.factory).__name__}"
            )
        if self.example_input is None:
            raise SpecError(f"ModelSpec {self.name!r}: example_input is required for timing")
        if self.batch_size < 1:
            raise SpecError(f"ModelSpec {self.name!r}: batch_size must be >= 1")

    def load(self) -> Any:
        """Return the reference model, built by the factory on first use and kept."""
        if self._model is None:
            try:
                model = self.factory()
            except Exception as error:
                raise SpecError(
                    f"ModelSpec {self.name!r}: its factory raised {type(error).__name__}: {error}"
                ) from error
            if model is None or not callable(model):
                raise SpecError(
                    f"ModelSpec {self.name!r}: factory returned {type(model).__name__}, "
                    "not a callable model"
                )
            self._model = model
        return self._model

    @property
    def framework(self) -> str:
        """``torch`` for torch modules, ``keras`` for Keras models, ``python`` for any callable."""
        model = self.load()
        # A model of a framework cannot exist unless that framework is imported.
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(model, torch.nn.Module):
            return "torch"
        keras = sys.modules.get("keras")
        if keras is not None and isinstance(model, keras.Model):
            return "keras"
        return "python"

    def accuracy_batches(self) -> list[tuple[Batch, Any]]:
        """Return what accuracy is computed on: eval data, else calibration, else the example."""
        if self.eval_data:
            return list(self.eval_data)
        if self.calibration_data:
            return [(batch, None) for batch in self.calibration_data]
        return [(self.example_input, None)]

    @classmethod
    def from_torch(
        cls,
        name: str,
        factory: Callable[[], Any],
        example_input: Batch,
        **kwargs: Any,
    ) -> ModelSpec:
        """Make a spec for any ``torch.nn.Module`` factory."""
        return cls(name=name, factory=factory, example_input=example_input, **kwargs)

    @classmethod
    def from_keras(
        cls,
        name: str,
        factory: Callable[[], Any],
        example_input: Batch,
        **kwargs: Any,
    ) -> ModelSpec:
        """Make a spec for a Keras model factory; batches are numpy arrays.

        TensorFlow is imported (safely, see :func:`load_tensorflow`) before the factory runs:
        import ``keras`` or ``tensorflow`` inside the factory, not at the top of a test module
        that shares its process with torch.
        """

        def keras_factory() -> Any:
            load_tensorflow()
            return factory()

        return cls(name=name, factory=keras_factory, example_input=example_input, **kwargs)

    @classmethod
    def from_timm(
        cls,
        model_name: str,
        *,
        pretrained: bool = False,
        batch_size: int = 1,
        calibration_batches: int = 8,
        eval_batches: int = 4,
        eval_batch_size: int = 8,
        recalibrate_batchnorm: bool | None = None,
        eval_data: Sequence[tuple[Batch, Any]] = (),
        input_size: tuple[int, int, int] | None = None,
        seed: int = 0,
        name: str | None = None,
        **model_kwargs: Any,
    ) -> ModelSpec:
        """Make a timm model's spec: seeded random images as example, calibration and eval inputs.

        With ``pretrained=False`` (no weights can be downloaded), the weights are random and
        BatchNorm statistics are recomputed on the calibration data, so that activations have a
        trained model's scale and quantization sees realistic ranges. Accuracy on random weights
        means nothing: such specs are for speed and size contracts. Pass ``pretrained=True`` (and
        real ``eval_data``) where weights are available.
        """
        import timm
        import torch

        from pytest_modelopt.torchtools import recalibrate_batchnorm as recalibrate

        if model_name not in timm.list_models() and not pretrained:
            raise SpecError(f"timm has no model named {model_name!r} (see timm.list_models())")
        shape = input_size or _timm_input_size(model_name, model_kwargs.get("in_chans"))
        generator = torch.Generator().manual_seed(seed)

        def images(count: int, size: int = batch_size) -> list[Any]:
            return [torch.randn(size, *shape, generator=generator) for _ in range(count)]

        example = images(1)[0]
        calibration = images(calibration_batches)
        recal = (not pretrained) if recalibrate_batchnorm is None else recalibrate_batchnorm

        def factory() -> Any:
            torch.manual_seed(seed)
            model = timm.create_model(model_name, pretrained=pretrained, **model_kwargs)
            if recal:
                recalibrate(model, calibration)
            return model.eval()

        return cls(
            name=name or model_name,
            factory=factory,
            example_input=example,
            calibration_data=calibration,
            eval_data=eval_data or [(b, None) for b in images(eval_batches, eval_batch_size)],
            batch_size=batch_size,
            description=f"timm {model_name} ({'pretrained' if pretrained else 'random init'})",
        )


def _timm_input_size(model_name: str, in_chans: int | None) -> tuple[int, ...]:
    """Return the model's default input (C, H, W) from its pretrained config, channels overridden.

    (3, 224, 224) when timm has no pretrained config for it.
    """
    import timm

    config = timm.get_pretrained_cfg(model_name)
    shape = tuple(config.input_size) if config is not None else (3, 224, 224)
    return (in_chans, *shape[1:]) if in_chans else shape


def load_tensorflow() -> Any:
    """Import TensorFlow so that torch can still be used in the same process.

    TensorFlow 2.21 and Triton (which ``torch._dynamo``, and so ``torch.compile``, the dynamo
    ONNX exporter and torchvision, import) each bundle LLVM: loading Triton's native library
    after TensorFlow crashes the process with a segmentation fault, loading it first does not
    (measured: torchvision, the dynamo exporter, ONNX Runtime, OpenVINO and ``torch.compile``
    all ran after TensorFlow once Triton was loaded first). TensorFlow's C++ start-up banner is
    silenced unless the user chose a log level.
    """
    import importlib
    import importlib.util
    import os

    if "tensorflow" not in sys.modules and importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton._C.libtriton")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow

    return tensorflow
